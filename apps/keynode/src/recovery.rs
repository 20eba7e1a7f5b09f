//! The recovery code on the command line: read from a file, shown once.
//!
//! The words never go to stdout: a person sees them on stderr, a script gets
//! them in the file it named (`--recovery-code-out-file`, written 0600, never
//! over an existing file), so `--format json` output and pipes never carry
//! them by accident.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use keynode_core::recovery::RecoveryCode;
use zeroize::Zeroizing;

use crate::Failure;

/// Reads the words in `file` (exit 66 if unreadable, 65 naming what is wrong).
pub fn read_code_file(file: &Path) -> Result<Zeroizing<String>, Failure> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        Failure::new(
            66,
            format!("cannot read the recovery code file {}: {e}", file.display()),
        )
    })?;
    let text = Zeroizing::new(text);
    RecoveryCode::parse(&text).map_err(|e| Failure::new(65, e.to_string()))?;
    Ok(text)
}

/// Checks, before anything is created, that `out` can take the code.
pub fn check_out_file(out: &Path) -> Result<(), Failure> {
    if out.exists() {
        return Err(Failure::new(
            73,
            format!(
                "{} exists: the recovery code is written to a new file only",
                out.display()
            ),
        ));
    }
    Ok(())
}

/// Shows a new node's code once: into `out` if given, else on stderr.
pub fn show(code: &RecoveryCode, out: Option<&Path>) -> Result<(), Failure> {
    let phrase = code.phrase();
    if let Some(out) = out {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(out)
            .map_err(|e| {
                Failure::new(
                    73,
                    format!("cannot write the recovery code to {}: {e}", out.display()),
                )
            })?;
        f.write_all(phrase.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        return Ok(());
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "\nRecovery code of this node, shown once. Write the 24 words down and keep them\n\
         apart from this machine: with them and `keynode agent start --recovery-code-file`\n\
         the node comes back on any machine, and `keynode agent password\n\
         --recovery-code-file` sets a new password when the old one is lost.\n"
    );
    for (i, chunk) in phrase.split(' ').collect::<Vec<_>>().chunks(6).enumerate() {
        let line: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(j, w)| format!("{:>2}. {w:<9}", i * 6 + j + 1))
            .collect();
        let _ = writeln!(err, "  {}", line.join(" "));
    }
    let _ = writeln!(err);
    Ok(())
}
