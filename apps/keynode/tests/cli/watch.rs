//! Followed clones and `secrets env --watch` through the binary: a write on
//! the owner reaches the follower by itself, and the program running under
//! `--watch` on the follower is restarted (or signalled) with the new value.

use std::process::{Child, Stdio};

use crate::support::*;

/// B owns `prod` (DB_PASSWORD = v0) and shares it with A; A clones it
/// (following, the default).
fn owner_and_follower() -> (Agent, Agent) {
    let (a, b, a_id, b_id) = two_known();
    a.run(&["identities", "trust", &b_id]).success();
    b.run(&["identities", "trust", &a_id]).success();
    b.run(&["vaults", "create", "prod"]).success();
    b.run_stdin(&["secrets", "write", "prod:DB_PASSWORD"], b"v0")
        .success();
    b.run(&["vaults", "share", "prod", &a_id]).success();
    let clone = a.json(&["vaults", "clone", "prod", &b_id]);
    assert_eq!(clone["following"], true);
    (b, a)
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `keynode secrets env --watch prod [extra] -- sh -c script` on `agent`.
fn watch(agent: &Agent, extra: &[&str], script: &str) -> Child {
    agent
        .command()
        .args(["secrets", "env", "--watch", "prod"])
        .args(extra)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .spawn()
        .expect("keynode secrets env --watch")
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

fn exit_code(mut child: Child) -> i32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code().expect("an exit code");
        }
        assert!(std::time::Instant::now() < deadline, "did not exit");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_followed_change_restarts_the_watched_program_with_the_new_value() {
    let (b, a) = owner_and_follower();
    let list = a.json(&["vaults", "list"]);
    assert_eq!(list[0]["follow"]["state"], "following");
    let out = a.path("starts");
    let script = format!("echo \"$DB_PASSWORD\" >> {}; exec sleep 60", out.display());
    let child = watch(&a, &[], &script);
    wait_for(|| lines(&out) == ["v0"], "the first start with v0");

    // A write on the owner: A pulls by itself, the program starts again.
    b.run_stdin(&["secrets", "write", "prod:DB_PASSWORD"], b"v1")
        .success();
    wait_for(
        || lines(&out) == ["v0", "v1"],
        "a restart with the pulled value",
    );
    assert_eq!(
        a.run(&["secrets", "get", "prod:DB_PASSWORD"]).success(),
        "v1"
    );
    // A write that changes nothing in the program's variables restarts nothing.
    b.run_stdin(&["secrets", "write", "prod:DB_PASSWORD"], b"v1")
        .success();
    b.run(&["vaults", "create", "other"]).success();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(lines(&out), ["v0", "v1"]);

    // SIGTERM to keynode goes to the program; keynode exits with its status
    // (killed by signal 15: 128 + 15).
    signal(&child, "TERM");
    assert_eq!(exit_code(child), 143);
}

#[test]
fn watch_signals_instead_of_restarting_and_exits_with_the_programs_status() {
    let (b, a) = owner_and_follower();
    let out = a.path("events");
    let script = format!(
        "trap 'echo hup >> {0}' HUP; echo \"start $DB_PASSWORD\" >> {0}; \
         while [ ! -e {0}.stop ]; do sleep 0.05; done; exit 3",
        out.display()
    );
    let child = watch(&a, &["--signal", "HUP"], &script);
    wait_for(|| lines(&out) == ["start v0"], "the start");
    b.run_stdin(&["secrets", "write", "prod:DB_PASSWORD"], b"v1")
        .success();
    wait_for(
        || lines(&out) == ["start v0", "hup"],
        "SIGHUP on the change",
    );
    // The program ends on its own: keynode exits with its status.
    write_file(&out.with_extension("stop"), b"");
    assert_eq!(exit_code(child), 3);
    let _ = b;

    // --watch without a command, or a bad signal, is a usage error.
    a.run(&["secrets", "env", "--watch", "prod"]).fails(64, "");
    a.run(&[
        "secrets", "env", "--watch", "--signal", "NOPE", "prod", "--", "true",
    ])
    .fails(64, "signal");
}
