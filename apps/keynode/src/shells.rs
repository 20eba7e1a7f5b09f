//! `keynode completions SHELL` and `keynode man`: generated from the same
//! clap definitions as the parser, so they never drift from it.

use std::path::Path;

use clap::CommandFactory;

use crate::Failure;
use crate::cli::Cli;

/// Prints the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "keynode", &mut script);
    print(&script)
}

/// Writes `bytes` to stdout; a closed pipe (`| head`) is not an error.
fn print(bytes: &[u8]) -> Result<(), Failure> {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Prints the top-level man page, or writes one page per command (and
/// subcommand) into `dir`.
pub fn man(dir: Option<&Path>) -> Result<(), Failure> {
    let cmd = Cli::command();
    let Some(dir) = dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page)?;
        return print(&page);
    };
    std::fs::create_dir_all(dir)?;
    let mut written = 0;
    write_pages(cmd, "keynode", "keynode", dir, &mut written)?;
    say!("wrote {written} man pages into {}", dir.display());
    Ok(())
}

/// Writes the page of `cmd` as `<name>.1` (`keynode-vaults-clone`, invoked
/// as `bin`, `keynode vaults clone`), and those of its subcommands.
fn write_pages(
    cmd: clap::Command,
    name: &str,
    bin: &str,
    dir: &Path,
    written: &mut usize,
) -> Result<(), Failure> {
    let cmd = cmd.name(name.to_owned()).bin_name(bin.to_owned());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_pages(
            sub.clone(),
            &format!("{name}-{}", sub.get_name()),
            &format!("{bin} {}", sub.get_name()),
            dir,
            written,
        )?;
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut page)?;
    std::fs::write(dir.join(format!("{name}.1")), page)?;
    *written += 1;
    Ok(())
}
