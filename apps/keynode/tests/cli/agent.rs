//! `keynode agent start|status|stop` and the lifecycle errors.

use crate::support::*;

#[test]
fn start_status_stop_restart() {
    let a = Agent::new();
    let first = a.start();
    let out = first.success();
    assert!(out.contains("created a new node identity"), "{out}");
    let status = a.json(&["agent", "status"]);
    assert_eq!(status["status"], "live");
    let node_id = status["node_id"].as_str().expect("node_id").to_owned();
    assert!(node_id.starts_with('v') && node_id.len() == 53, "{node_id}");
    assert!(status["pid"].as_u64().expect("pid") > 0);
    // A fresh node's state fills a sliver of its 16 GiB map.
    assert!(status["storage_used_percent"].as_u64().expect("storage") < 90);
    assert!(status.get("agent_host").is_some() && status.get("agent_port").is_some());
    assert!(out.contains(&node_id));

    // The socket and key are private.
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&a.node.join("agent.sock")), 0o600);
    assert_eq!(mode(&a.node.join("keys/root.key")), 0o600);
    assert_eq!(mode(&a.node.join("keys/data.key")), 0o600);
    assert_eq!(mode(&a.node), 0o700);

    a.run(&["agent", "stop"]).success();
    a.run(&["agent", "status"]).fails(69, "agent start");

    // A node path opened up meanwhile is made private again at start.
    std::fs::set_permissions(&a.node, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // Restart keeps the identity and says nothing about creating one.
    let again = a.start().success();
    assert_eq!(mode(&a.node), 0o700);
    assert_eq!(mode(&a.node.join("agent.sock")), 0o600);
    assert!(!again.contains("created a new node identity"));
    assert_eq!(a.json(&["agent", "status"])["node_id"], node_id.as_str());
}

#[test]
fn second_agent_on_the_same_node_path_is_refused() {
    let a = Agent::started();
    a.start().fails(75, "already running");
    // The first agent is unharmed.
    assert_eq!(a.json(&["agent", "status"])["status"], "live");
}

#[test]
fn wrong_password_is_refused_with_77() {
    let a = Agent::started();
    a.run(&["agent", "stop"]).success();
    std::fs::write(&a.password_file, "not the password").expect("write");
    a.start().fails(77, "wrong password");
    // Through the environment too.
    let out = a
        .command()
        .args(["agent", "start", "--background"])
        .env("KEYNODE_PASSWORD", "also wrong")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(77));
    // And the right one still works.
    let out = a
        .command()
        .args(["agent", "start", "--background"])
        .env("KEYNODE_PASSWORD", PASSWORD)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_node_path_of_an_earlier_version_is_refused_with_78() {
    // An earlier version left a root key and unencrypted state, no data key.
    let a = Agent::started();
    a.run(&["vaults", "create", "prod"]).success();
    a.run(&["agent", "stop"]).success();
    std::fs::remove_file(a.node.join("keys/data.key")).expect("remove data key");
    let state = std::fs::read(a.node.join("state/data.mdb")).expect("state");
    let err = a.start().fails(78, "earlier keynode version");
    assert!(err.contains("move it aside"), "{err}");
    assert!(err.contains(&a.node.display().to_string()), "{err}");
    // Nothing was created or rewritten.
    assert!(!a.node.join("keys/data.key").exists());
    assert_eq!(
        std::fs::read(a.node.join("state/data.mdb")).expect("state"),
        state
    );
}

#[test]
fn no_agent_running_gives_a_hint_and_69() {
    let a = Agent::new();
    for args in [
        &["vaults", "list"][..],
        &["secrets", "get", "v:x"],
        &["vaults", "create", "x"],
    ] {
        a.run(args).fails(69, "keynode agent start");
    }
    // Stopping an agent that is not running is not an error.
    a.run(&["agent", "stop"]).success();
}

#[test]
fn sigterm_stops_the_agent_gracefully() {
    let a = Agent::started();
    let pid = a.pid();
    // SAFETY-free: kill(1) is enough.
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "agent did not stop on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.node.join("status.json")).expect("status file"))
            .expect("json");
    assert_eq!(status["status"], "stopped");
    a.start().success();
}

#[test]
fn missing_password_file_is_a_clear_error() {
    let a = Agent::new();
    a.run(&[
        "agent",
        "start",
        "--background",
        "--password-file",
        "/nonexistent/pw",
    ])
    .fails(66, "password file");
}

#[test]
fn usage_errors_are_one_line_and_exit_64() {
    let a = Agent::new();
    a.run(&["vaults", "create"]).fails(64, "<NAME>");
    a.run(&["no-such-command"]).fails(64, "no-such-command");
    a.run(&["secrets", "get", "v:x", "--at"]).fails(64, "--at");
    assert!(a.run(&["--help"]).success().contains("vaults"));
}
