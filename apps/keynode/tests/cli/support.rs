//! Running the real `keynode` binary against real agents.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

pub const PASSWORD: &str = "correct horse battery staple";

/// The offline identity provider's directory shared by this test run's agents.
pub fn provider_dir() -> PathBuf {
    std::env::temp_dir().join(format!("keynode-test-provider-{}", std::process::id()))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_keynode"))
}

/// One node path with (usually) a running background agent; stopped on drop.
pub struct Agent {
    pub dir: TempDir,
    pub node: PathBuf,
    pub password_file: PathBuf,
}

impl Agent {
    /// A node path with a password file, no agent yet.
    pub fn new() -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = dir.path().join("node");
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("password file");
        Agent {
            dir,
            node,
            password_file,
        }
    }

    /// A node path with a running agent.
    pub fn started() -> Agent {
        let a = Agent::new();
        a.start().success();
        a
    }

    /// Starts the agent with `RUST_LOG=trace`, so its log holds everything it
    /// would ever log, its dependencies' too (tests then check what must not
    /// be there).
    pub fn start_logging_everything(&self) {
        let out = self
            .command()
            .args(["agent", "start", "--background", "--password-file"])
            .arg(&self.password_file)
            .env("RUST_LOG", "trace")
            .output()
            .expect("start");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Adds `other` to this agent's address book.
    pub fn knows(&self, other: &Agent) {
        let (id, port) = other.id_and_port();
        self.run(&["nodes", "add", &id, "127.0.0.1", &port])
            .success();
    }

    /// The running agent's node id and port (text), from `agent status`.
    pub fn id_and_port(&self) -> (String, String) {
        let s = self.json(&["agent", "status"]);
        (
            s["node_id"].as_str().expect("id").to_owned(),
            s["agent_port"].to_string(),
        )
    }

    pub fn start(&self) -> Run {
        self.run(&[
            "agent",
            "start",
            "--background",
            "--password-file",
            self.password_file.to_str().expect("utf8"),
        ])
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("--node-path").arg(&self.node);
        c.env_remove("KEYNODE_PASSWORD")
            .env_remove("KEYNODE_NODE_PATH")
            .env("KEYNODE_OFFLINE_PROVIDER_DIR", provider_dir())
            // Tests never touch the public DHT.
            .env("KEYNODE_DHT", "off");
        c
    }

    /// `agent start --background` with `args` and the environment `env`,
    /// and no password flag (for tests of where settings come from).
    pub fn start_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = self.command();
        command.args(["agent", "start", "--background"]).args(args);
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.stdin(Stdio::null()).output().expect("run keynode");
        Run {
            args: format!("agent start --background {}", args.join(" ")),
            out,
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run keynode");
        Run {
            args: args.join(" "),
            out,
        }
    }

    pub fn run_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        use std::io::Write;
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keynode");
        let mut input = child.stdin.take().expect("stdin");
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let out = child.wait_with_output().expect("wait keynode");
        writer.join().expect("writer");
        Run {
            args: args.join(" "),
            out,
        }
    }

    /// `--format json` output of a successful command.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        let r = self.run(&all);
        let out = r.success();
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("`{}` printed no json ({e}): {out}", r.args))
    }

    /// The running agent's pid, from `agent status`.
    pub fn pid(&self) -> u32 {
        self.json(&["agent", "status"])["pid"]
            .as_u64()
            .expect("pid") as u32
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.command().args(["agent", "stop"]).output();
    }
}

/// A finished command.
pub struct Run {
    pub args: String,
    pub out: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    pub fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }
    /// Asserts success; returns stdout.
    pub fn success(&self) -> String {
        assert!(
            self.out.status.success(),
            "`keynode {}` failed ({}): {}",
            self.args,
            self.code(),
            self.stderr()
        );
        self.stdout()
    }
    /// Asserts exit `code` with a one-line error naming `needle`; returns stderr.
    pub fn fails(&self, code: i32, needle: &str) -> String {
        let err = self.stderr();
        assert_eq!(
            self.code(),
            code,
            "`keynode {}`: expected exit {code}, got {}; stderr: {err}; stdout: {}",
            self.args,
            self.code(),
            self.stdout()
        );
        assert!(
            err.to_lowercase().contains(&needle.to_lowercase()),
            "`keynode {}`: stderr {err:?} does not mention {needle:?}",
            self.args
        );
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "error is not one line: {err:?}"
        );
        err
    }
}

/// Anonymous resident memory of a process (heap and stacks, not mapped files),
/// in KiB. Panics where it cannot be measured (no `/proc`, the process gone):
/// a memory test that measures nothing fails.
pub fn rss_anon_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot measure the memory of process {pid}: {e}"));
    s.lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no RssAnon for process {pid}: memory cannot be measured"))
}

/// Samples a process's anonymous memory every 5 ms while `f` runs; returns
/// `f`'s result and the largest sample, in KiB.
pub fn peak_anon_during<T>(pid: u32, f: impl FnOnce() -> T) -> (T, u64) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let peak = std::sync::Arc::new(AtomicU64::new(rss_anon_kib(pid)));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(rss_anon_kib(pid), Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let out = f();
    done.store(true, Ordering::SeqCst);
    sampler.join().expect("sampler");
    (out, peak.load(Ordering::SeqCst))
}

pub fn write_file(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("write file");
}

/// Polls `f` every 50 ms until it holds; fails after 10 s naming `what`.
pub fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Two running agents, each in the other's address book, with their ids.
pub fn two_known() -> (Agent, Agent, String, String) {
    let (a, b) = (Agent::started(), Agent::started());
    a.knows(&b);
    b.knows(&a);
    let (a_id, b_id) = (a.id_and_port().0, b.id_and_port().0);
    (a, b, a_id, b_id)
}

/// A loopback port free at the moment of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}
