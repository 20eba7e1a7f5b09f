//! Recovery codes: shown once when a node is made, and enough on their own to
//! bring the node back (a new node path, a new password) or to set a new
//! password when the old one is lost.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

/// Starts `a` in the background, its new code written to `code`.
fn start_with_code_out(a: &Agent, code: &Path) -> Run {
    a.run(&[
        "--format",
        "json",
        "agent",
        "start",
        "--background",
        "--password-file",
        s(&a.password_file),
        "--recovery-code-out-file",
        s(code),
    ])
}

#[test]
fn a_new_node_shows_its_code_once_and_the_code_brings_it_back() {
    let a = Agent::new();
    let code = a.path("code");
    let run = start_with_code_out(&a, &code);
    let stdout = run.success();
    let words = std::fs::read_to_string(&code).expect("code file");
    assert_eq!(words.split_whitespace().count(), 24, "{words}");
    let mode = std::fs::metadata(&code).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!stdout.contains(words.trim()), "the code reached stdout");
    assert!(
        !run.stderr().contains(words.trim()),
        "the code reached stderr too"
    );
    let status = a.json(&["agent", "status"]);
    assert_eq!(status["recovery_code"], true);
    let id = status["node_id"].clone();
    a.run(&["vaults", "create", "v"]).success();
    a.run(&["agent", "stop"]).success();
    // Not in the node path, nor in its log.
    for entry in walk(&a.node) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes
                .windows(words.trim().len())
                .any(|w| w == words.trim().as_bytes()),
            "{} holds the code",
            entry.display()
        );
    }

    // The same node on an empty node path, with another password.
    let b = Agent::new();
    std::fs::write(&b.password_file, "another password\n").unwrap();
    let out = b.run(&[
        "agent",
        "start",
        "--background",
        "--password-file",
        s(&b.password_file),
        "--recovery-code-file",
        s(&code),
    ]);
    out.success();
    assert!(
        !out.stderr().contains("Recovery code"),
        "no new code is shown"
    );
    let again = b.json(&["agent", "status"]);
    assert_eq!(again["node_id"], id);
    assert_eq!(again["recovery_code"], true);
    b.run(&["agent", "stop"]).success();

    // A code on a node path that has a key is refused, and changes nothing.
    let before = std::fs::read(a.node.join("keys/root.key")).unwrap();
    a.run(&[
        "agent",
        "start",
        "--background",
        "--password-file",
        s(&a.password_file),
        "--recovery-code-file",
        s(&code),
    ])
    .fails(64, "has a key already");
    assert_eq!(std::fs::read(a.node.join("keys/root.key")).unwrap(), before);
}

#[test]
fn a_person_sees_the_code_on_stderr_never_on_stdout() {
    let a = Agent::new();
    let run = a.start();
    let stdout = run.success();
    let stderr = run.stderr();
    assert!(stderr.contains("Recovery code"), "{stderr}");
    assert!(stderr.contains("24.") && stderr.contains(" 1."), "{stderr}");
    assert!(!stdout.contains("Recovery code"), "{stdout}");
    // A second start shows nothing.
    a.run(&["agent", "stop"]).success();
    let again = a.start();
    again.success();
    assert!(!again.stderr().contains("Recovery code"));
}

#[test]
fn a_lost_password_is_replaced_with_the_code_and_wrong_codes_change_nothing() {
    let a = Agent::new();
    let code = a.path("code");
    start_with_code_out(&a, &code).success();
    let id = a.json(&["agent", "status"])["node_id"].clone();
    a.run_stdin(&["vaults", "create", "v"], b"").success();
    a.run_stdin(&["secrets", "write", "v:k"], b"value")
        .success();

    // Through the running agent.
    let new = a.path("new");
    std::fs::write(&new, "a new password\n").unwrap();
    let doc = a.json(&[
        "agent",
        "password",
        "--recovery-code-file",
        s(&code),
        "--new-password-file",
        s(&new),
    ]);
    assert_eq!(doc["agent_running"], true);
    assert_eq!(doc["node_id"], id);
    a.run(&["agent", "stop"]).success();
    a.run(&["agent", "start", "--background", "--password-file", s(&new)])
        .success();
    assert_eq!(a.run(&["secrets", "get", "v:k"]).success(), "value");
    a.run(&["agent", "stop"]).success();

    // With no agent, on the key file.
    let newer = a.path("newer");
    std::fs::write(&newer, "the newest password\n").unwrap();
    let doc = a.json(&[
        "agent",
        "password",
        "--recovery-code-file",
        s(&code),
        "--new-password-file",
        s(&newer),
    ]);
    assert_eq!(doc["agent_running"], false);
    let key = std::fs::read(a.node.join("keys/root.key")).unwrap();

    // Another node's code: refused, nothing changes.
    let other = Agent::new();
    let other_code = other.path("code");
    start_with_code_out(&other, &other_code).success();
    a.run(&[
        "agent",
        "password",
        "--recovery-code-file",
        s(&other_code),
        "--new-password-file",
        s(&new),
    ])
    .fails(77, "not the code of the node");
    // A mistyped word: named, nothing changes.
    let words = std::fs::read_to_string(&code).unwrap();
    let mut w: Vec<&str> = words.split_whitespace().collect();
    w[6] = "notaword";
    let typo = a.path("typo");
    std::fs::write(&typo, w.join(" ")).unwrap();
    a.run(&[
        "agent",
        "password",
        "--recovery-code-file",
        s(&typo),
        "--new-password-file",
        s(&new),
    ])
    .fails(65, "word 7");
    // Too few words.
    std::fs::write(&typo, w[..12].join(" ")).unwrap();
    a.run(&[
        "agent",
        "password",
        "--recovery-code-file",
        s(&typo),
        "--new-password-file",
        s(&new),
    ])
    .fails(65, "24 words");
    assert_eq!(std::fs::read(a.node.join("keys/root.key")).unwrap(), key);
    a.run(&[
        "agent",
        "start",
        "--background",
        "--password-file",
        s(&newer),
    ])
    .success();
    assert_eq!(a.run(&["secrets", "get", "v:k"]).success(), "value");
}

#[test]
fn an_out_file_that_exists_is_refused_before_anything_is_made() {
    let a = Agent::new();
    let code = a.path("code");
    std::fs::write(&code, "keep me").unwrap();
    start_with_code_out(&a, &code).fails(73, "exists");
    assert_eq!(std::fs::read_to_string(&code).unwrap(), "keep me");
    assert!(!a.node.join("keys/root.key").exists());
}

fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
