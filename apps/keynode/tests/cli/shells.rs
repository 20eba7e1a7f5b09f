//! `keynode completions` and `keynode man`, generated from the parser.

use std::process::Command;

use crate::support::*;

fn keynode(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run keynode")
}

fn stdout(args: &[&str]) -> String {
    let out = keynode(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

#[test]
fn completions_cover_every_command_and_bash_parses_them() {
    let bash = stdout(&["completions", "bash"]);
    for word in [
        "_keynode",
        "vaults",
        "clone",
        "secrets",
        "--node-path",
        "--format",
    ] {
        assert!(bash.contains(word), "bash completion lacks {word}");
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let script = tmp.path().join("keynode.bash");
    std::fs::write(&script, &bash).expect("write");
    let parsed = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("bash");
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    assert!(stdout(&["completions", "zsh"]).starts_with("#compdef keynode"));
    assert!(stdout(&["completions", "fish"]).contains("complete -c keynode"));
    let out = keynode(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn man_pages_are_written_for_every_command() {
    let page = stdout(&["man"]);
    assert!(page.contains(".TH keynode 1"), "{page}");
    assert!(page.contains("vaults"));
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("man1");
    stdout(&["man", "--dir", dir.to_str().expect("utf8")]);
    let clone = std::fs::read_to_string(dir.join("keynode-vaults-clone.1")).expect("page");
    assert!(clone.contains(".TH keynode-vaults-clone 1"), "{clone}");
    assert!(clone.contains("keynode vaults clone"));
    assert!(clone.contains("no\\-follow"));
    let pages = std::fs::read_dir(&dir).expect("dir").count();
    assert!(pages > 40, "{pages} pages");
    assert!(!dir.join("keynode-help.1").exists());
}
