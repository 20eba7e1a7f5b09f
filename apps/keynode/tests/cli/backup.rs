//! `keynode backup`: create through a running agent or on a stopped node,
//! verify, restore on a new node path, and an agent killed mid-backup.

use std::path::Path;

use crate::support::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

#[test]
fn create_verify_restore_and_start_with_the_recovery_code() {
    let a = Agent::new();
    let code = a.path("code");
    a.run(&[
        "agent",
        "start",
        "--background",
        "--password-file",
        s(&a.password_file),
        "--recovery-code-out-file",
        s(&code),
    ])
    .success();
    let id = a.json(&["agent", "status"])["node_id"].clone();
    a.run(&["vaults", "create", "prod"]).success();
    a.run_stdin(&["secrets", "write", "prod:db/password"], b"hunter2")
        .success();
    let archive = a.path("node.backup");
    let doc = a.json(&["backup", "create", s(&archive)]);
    assert_eq!(doc["node_id"], id);
    assert!(doc["members"].as_u64().unwrap() > 3, "{doc}");
    // A relative path is the caller's, not the agent's.
    let out = a
        .command()
        .current_dir(a.dir.path())
        .args(["backup", "create", "relative.backup"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(a.path("relative.backup").is_file());
    // The file exists now: a second create is refused.
    a.run(&["backup", "create", s(&archive)])
        .fails(73, "exists");
    let verified = a.json(&["backup", "verify", s(&archive)]);
    assert_eq!(verified["node_id"], id);

    // Restored on a new node path, the password lost: the code sets a new one.
    let b = Agent::new();
    b.run(&["backup", "restore", s(&archive)]).success();
    b.run(&["backup", "restore", s(&archive)])
        .fails(73, "not empty");
    std::fs::write(&b.password_file, "a new password\n").unwrap();
    b.run(&[
        "agent",
        "password",
        "--recovery-code-file",
        s(&code),
        "--new-password-file",
        s(&b.password_file),
    ])
    .success();
    b.start().success();
    assert_eq!(b.json(&["agent", "status"])["node_id"], id);
    assert_eq!(
        b.run(&["secrets", "get", "prod:db/password"]).success(),
        "hunter2"
    );
}

#[test]
fn a_stopped_node_is_backed_up_from_its_node_path() {
    let a = Agent::started();
    a.run(&["vaults", "create", "v"]).success();
    a.run_stdin(&["secrets", "write", "v:k"], b"value")
        .success();
    a.run(&["agent", "stop"]).success();
    let archive = a.path("offline.backup");
    // The password signs it: a wrong one is refused, nothing written.
    let wrong = a.path("wrong");
    std::fs::write(&wrong, "nope\n").unwrap();
    a.run(&[
        "backup",
        "create",
        s(&archive),
        "--password-file",
        s(&wrong),
    ])
    .fails(77, "wrong password");
    assert!(!archive.exists());
    a.run(&[
        "backup",
        "create",
        s(&archive),
        "--password-file",
        s(&a.password_file),
    ])
    .success();
    let b = Agent::new();
    b.run(&["backup", "restore", s(&archive)]).success();
    b.start().success();
    assert_eq!(b.run(&["secrets", "get", "v:k"]).success(), "value");
}

#[test]
fn an_agent_killed_mid_backup_leaves_no_archive_that_passes_and_starts_again() {
    let a = Agent::started();
    a.run(&["vaults", "create", "big"]).success();
    let blob: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    a.run_stdin(&["secrets", "write", "big:blob"], &blob)
        .success();
    let archive = a.path("killed.backup");
    let pid = a.pid();
    let mut backup = a
        .command()
        .args(["backup", "create", s(&archive)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    unsafe_kill(pid);
    let _ = backup.wait();
    // Either the backup finished before the kill (then it is whole), or what
    // it left is refused; never a bad archive that passes.
    let partials: Vec<_> = std::fs::read_dir(a.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .contains(".partial-")
        })
        .collect();
    if archive.exists() {
        a.run(&["backup", "verify", s(&archive)]).success();
    }
    // A partial is refused unless the kill fell between the archive's sync
    // and its rename: then it is whole, and verify checks its signed manifest
    // over every file.
    for p in &partials {
        let verify = a.run(&["backup", "verify", s(p)]);
        if verify.code() == 0 {
            assert!(verify.stdout().contains("files"), "{}", verify.stdout());
        } else {
            verify.fails(65, "not a valid keynode backup");
        }
    }
    assert!(
        archive.exists() || !partials.is_empty(),
        "the backup left nothing"
    );
    // The agent and its state are unharmed.
    a.start().success();
    assert_eq!(
        a.run(&["secrets", "get", "big:blob"]).out.stdout.len(),
        blob.len()
    );
}

fn unsafe_kill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
