//! What the binary's benchmarks share: running `keynode` on a node path, and
//! agents started in the background for a benchmark's length.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const PASSWORD: &str = "bench-password";

/// `keynode --node-path NODE`, the password in the environment.
pub fn keynode(node: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keynode"));
    c.arg("--node-path")
        .arg(node)
        .env("KEYNODE_PASSWORD", PASSWORD);
    c
}

/// Runs `c`, which must succeed.
pub fn ok(c: &mut Command) {
    let out = c.stdout(Stdio::null()).output().expect("run");
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `c` with `--format json`; it must succeed.
pub fn json(c: &mut Command) -> serde_json::Value {
    let out = c.arg("--format").arg("json").output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// An agent started in the background, stopped on drop.
pub struct Agent {
    _dir: tempfile::TempDir,
    pub node: PathBuf,
}

impl Agent {
    pub fn start() -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = dir.path().join("n");
        ok(keynode(&node).args(["agent", "start", "--background"]));
        Agent { _dir: dir, node }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = keynode(&self.node).args(["agent", "stop"]).output();
    }
}

/// Two agents, each in the other's address book and trusting it, with their
/// node ids: `(a, b, a_id, b_id)`.
pub fn trusting_pair() -> (Agent, Agent, String, String) {
    let (a, b) = (Agent::start(), Agent::start());
    let status = |n: &Agent| json(keynode(&n.node).args(["agent", "status"]));
    let (sa, sb) = (status(&a), status(&b));
    let id = |s: &serde_json::Value| s["node_id"].as_str().expect("id").to_owned();
    let port = |s: &serde_json::Value| s["agent_port"].to_string();
    let (a_id, b_id) = (id(&sa), id(&sb));
    ok(keynode(&a.node).args(["nodes", "add", &b_id, "127.0.0.1", &port(&sb)]));
    ok(keynode(&b.node).args(["nodes", "add", &a_id, "127.0.0.1", &port(&sa)]));
    ok(keynode(&a.node).args(["identities", "trust", &b_id]));
    ok(keynode(&b.node).args(["identities", "trust", &a_id]));
    (a, b, a_id, b_id)
}
