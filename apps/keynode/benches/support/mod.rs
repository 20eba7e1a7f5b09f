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
