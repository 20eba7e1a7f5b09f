//! `keynode agent password`: through a running agent, and on the key file when
//! no agent runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::*;

const NEW_PASSWORD: &str = "tr0ub4dor & 3, the sequel";

/// A file holding `password` (with a newline, as editors leave it).
fn password_file(a: &Agent, name: &str, password: &str) -> PathBuf {
    let path = a.path(name);
    write_file(&path, format!("{password}\n").as_bytes());
    path
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

/// `keynode ARGS` with extra environment variables.
fn run_env(a: &Agent, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = a
        .command()
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run keynode");
    Run {
        args: args.join(" "),
        out,
    }
}

/// `keynode ARGS` in a new session without a controlling terminal, so a
/// prompt fails at once instead of waiting on the tester's terminal.
fn run_without_tty(a: &Agent, args: &[&str]) -> Run {
    let cmd = a.command();
    let mut c = Command::new("setsid");
    c.arg(cmd.get_program()).args(cmd.get_args()).args(args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let out = c.stdin(Stdio::null()).output().expect("run setsid keynode");
    Run {
        args: args.join(" "),
        out,
    }
}

/// Starts the agent with the password in `file`.
fn start_with(a: &Agent, file: &Path) -> Run {
    a.run(&["agent", "start", "--background", "--password-file", s(file)])
}

/// Every file under the node path but the key file and the lock, with its bytes.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.ends_with("keys/root.key") && !p.ends_with("agent.lock") {
                out.insert(p.clone(), std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

#[test]
fn change_on_a_running_agent_then_restart_with_the_new_password() {
    let a = Agent::new();
    // Debug logging in the agent: the request is logged, its passwords never.
    a.start_logging_everything();
    let node_id = a.json(&["agent", "status"])["node_id"].clone();
    a.run(&["vaults", "create", "v"]).success();
    a.run_stdin(&["secrets", "write", "v:db/password"], b"hunter2")
        .success();
    let binary: Vec<u8> = (0..=255u8).collect();
    a.run_stdin(&["secrets", "write", "v:tls/key"], &binary)
        .success();

    let new = password_file(&a, "new-password", NEW_PASSWORD);
    let doc = a.json(&[
        "agent",
        "password",
        "--password-file",
        s(&a.password_file),
        "--new-password-file",
        s(&new),
    ]);
    assert_eq!(doc["password_changed"], true);
    assert_eq!(doc["agent_running"], true);
    assert_eq!(doc["node_id"], node_id);

    // The agent keeps serving, and the audit log records the change, with no
    // secret in it.
    assert_eq!(
        a.run(&["secrets", "get", "v:db/password"]).success(),
        "hunter2"
    );
    let audit = a.json(&["audit", "read", "--limit", "1"]);
    assert_eq!(audit[0]["kind"], "password_changed");
    assert_eq!(audit[0]["peer"], serde_json::Value::Null);
    assert_eq!(audit[0]["fields"], serde_json::json!({}));
    let all = a.run(&["--format", "json", "audit", "read"]).success();
    assert!(!all.contains(PASSWORD) && !all.contains(NEW_PASSWORD));

    a.run(&["agent", "stop"]).success();
    let log = std::fs::read_to_string(a.node.join("agent.log")).expect("agent.log");
    assert!(log.contains("agent_password"), "request not logged: {log}");
    assert!(!log.contains(PASSWORD) && !log.contains(NEW_PASSWORD));

    // The old password no longer opens the node; the new one does.
    a.start().fails(77, "wrong password");
    start_with(&a, &new).success();
    let status = a.json(&["agent", "status"]);
    assert_eq!(status["node_id"], node_id);
    assert_eq!(
        a.run(&["secrets", "get", "v:db/password"]).success(),
        "hunter2"
    );
    assert_eq!(a.run(&["secrets", "get", "v:tls/key"]).out.stdout, binary);
    a.run(&["audit", "verify"]).success();
}

#[test]
fn wrong_current_password_is_77_and_the_old_password_still_works() {
    let a = Agent::started();
    a.run(&["vaults", "create", "v"]).success();
    let key = a.node.join("keys/root.key");
    let before = std::fs::read(&key).expect("key file");

    // Through the environment: KEYNODE_PASSWORD and KEYNODE_NEW_PASSWORD.
    run_env(
        &a,
        &["agent", "password"],
        &[
            ("KEYNODE_PASSWORD", "not the password"),
            ("KEYNODE_NEW_PASSWORD", NEW_PASSWORD),
        ],
    )
    .fails(77, "wrong password");
    assert_eq!(std::fs::read(&key).expect("key file"), before);
    // Nothing was recorded.
    let audit = a.json(&["audit", "read"]);
    assert!(
        audit
            .as_array()
            .expect("array")
            .iter()
            .all(|e| e["kind"] != "password_changed"),
        "{audit}"
    );

    a.run(&["agent", "stop"]).success();
    // Without an agent, the same answer.
    let wrong = password_file(&a, "wrong", "not the password");
    let new = password_file(&a, "new", NEW_PASSWORD);
    a.run(&[
        "agent",
        "password",
        "--password-file",
        s(&wrong),
        "--new-password-file",
        s(&new),
    ])
    .fails(77, "wrong password");
    assert_eq!(std::fs::read(&key).expect("key file"), before);
    a.start().success();
    a.run(&["vaults", "list"]).success();
}

#[test]
fn an_empty_or_mismatched_new_password_is_refused_with_64() {
    let a = Agent::started();
    let key = a.node.join("keys/root.key");
    let before = std::fs::read(&key).expect("key file");
    let pw = s(&a.password_file).to_owned();

    let empty = password_file(&a, "empty", "");
    a.run(&[
        "agent",
        "password",
        "--password-file",
        &pw,
        "--new-password-file",
        s(&empty),
    ])
    .fails(64, "new password is empty");
    run_env(
        &a,
        &["agent", "password", "--password-file", &pw],
        &[("KEYNODE_NEW_PASSWORD", "")],
    )
    .fails(64, "new password is empty");
    // No new password and no terminal to ask on.
    need_tool("setsid");
    run_without_tty(&a, &["agent", "password", "--password-file", &pw])
        .fails(64, "no new password given");
    a.run(&[
        "agent",
        "password",
        "--password-file",
        &pw,
        "--new-password-file",
        "/nonexistent/new",
    ])
    .fails(66, "new password file");

    need_tool("script");
    // Typed twice on a terminal, differently.
    let typed = typed_on_a_terminal(
        &a,
        &["agent", "password", "--password-file", &pw],
        &["first try", "second try"],
    );
    assert_eq!(typed.code(), 64, "{}", typed.stdout());
    assert!(
        typed.stdout().contains("passwords do not match"),
        "{}",
        typed.stdout()
    );
    // Typed twice, the same: changed.
    let typed = typed_on_a_terminal(
        &a,
        &["agent", "password", "--password-file", &pw],
        &[NEW_PASSWORD, NEW_PASSWORD],
    );
    assert_eq!(typed.code(), 0, "{}", typed.stdout());
    assert!(
        typed.stdout().contains("password changed for node"),
        "{}",
        typed.stdout()
    );
    assert_ne!(std::fs::read(&key).expect("key file"), before);
    a.run(&["agent", "stop"]).success();
    start_with(&a, &password_file(&a, "new", NEW_PASSWORD)).success();
}

/// Whether the util-linux tool `name` is installed.
/// Fails the test where a tool it needs (util-linux `script`, `setsid`) is
/// missing: `.ci/run` installs them.
fn need_tool(name: &str) {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "this test needs util-linux `{name}` (see .ci/run)");
}

/// Runs `keynode ARGS` on a pseudo-terminal (`script`) and types `lines` at
/// its prompts, one a second. Returns the terminal's transcript as stdout.
fn typed_on_a_terminal(a: &Agent, args: &[&str], lines: &[&str]) -> Run {
    use std::io::Write;
    let cmd = a.command();
    let mut line = vec![cmd.get_program().to_str().expect("utf8").to_owned()];
    line.extend(cmd.get_args().map(|s| s.to_str().expect("utf8").to_owned()));
    line.extend(args.iter().map(|s| s.to_string()));
    let quoted: Vec<String> = line
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
        .collect();
    let mut c = Command::new("script");
    // -e: script exits with the command's code; output to /dev/null, the
    // transcript comes on script's stdout.
    c.args(["-qec", &quoted.join(" "), "/dev/null"]);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn script");
    let mut input = child.stdin.take().expect("stdin");
    let lines: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    let typist = std::thread::spawn(move || {
        for l in lines {
            std::thread::sleep(std::time::Duration::from_millis(700));
            let _ = input.write_all(format!("{l}\r").as_bytes());
            let _ = input.flush();
        }
        // Keep the terminal open until the command is done with it.
        std::thread::sleep(std::time::Duration::from_secs(3));
    });
    let out = child.wait_with_output().expect("wait script");
    typist.join().expect("typist");
    Run {
        args: args.join(" "),
        out,
    }
}

#[test]
fn without_an_agent_the_key_file_is_resealed_and_nothing_else_changes() {
    let a = Agent::started();
    let node_id = a.json(&["agent", "status"])["node_id"].clone();
    a.run(&["vaults", "create", "v"]).success();
    a.run_stdin(&["secrets", "write", "v:db/password"], b"hunter2")
        .success();
    a.run(&["agent", "stop"]).success();

    let state = snapshot(&a.node);
    let new = password_file(&a, "new", NEW_PASSWORD);
    let doc = a.json(&[
        "agent",
        "password",
        "--password-file",
        s(&a.password_file),
        "--new-password-file",
        s(&new),
    ]);
    assert_eq!(doc["password_changed"], true);
    assert_eq!(doc["agent_running"], false);
    assert_eq!(doc["node_id"], node_id);
    // Not one byte of data was re-encrypted or rewritten.
    assert_eq!(snapshot(&a.node), state);
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(a.node.join("keys/root.key"))
            .expect("key file")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode, 0o600);

    a.start().fails(77, "wrong password");
    start_with(&a, &new).success();
    assert_eq!(
        a.run(&["secrets", "get", "v:db/password"]).success(),
        "hunter2"
    );
}

#[test]
fn without_a_node_there_is_nothing_to_change() {
    let a = Agent::new();
    let new = password_file(&a, "new", NEW_PASSWORD);
    a.run(&[
        "agent",
        "password",
        "--password-file",
        s(&a.password_file),
        "--new-password-file",
        s(&new),
    ])
    .fails(66, "agent start");
}
