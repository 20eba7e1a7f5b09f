//! `keynode agent start|status|stop|password`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keynode_agent::api::{AgentStatus, Password, Request, Response};
use keynode_agent::parse_seed_nodes;
use keynode_agent::password::PasswordError;
use keynode_agent::status::{AgentLock, read_status};
use keynode_agent::{ClientError, Node, NodeConfig, StartError};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::cli::{AgentCmd, PasswordArgs, StartArgs};
use crate::output;
use crate::{Ctx, Failure, client_runtime};

/// Environment variable holding the password.
const PASSWORD_ENV: &str = "KEYNODE_PASSWORD";
/// Environment variable holding the new password for `agent password`.
const NEW_PASSWORD_ENV: &str = "KEYNODE_NEW_PASSWORD";

/// A password as read: zeroed on drop.
type Secret = Zeroizing<Vec<u8>>;
/// Longest `agent start --background` waits for the agent to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest `agent stop` waits for the agent to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// The one line a background agent prints when it is ready or failed.
#[derive(Serialize, Deserialize)]
struct ReadyLine {
    ok: bool,
    status: Option<AgentStatus>,
    created: bool,
    error: Option<String>,
    exit_code: u8,
}

pub fn run(ctx: &Ctx, cmd: AgentCmd) -> Result<(), Failure> {
    match cmd {
        AgentCmd::Start(args) if args.daemon_child => daemon_child(ctx, args),
        AgentCmd::Start(args) if args.background => start_background(ctx, args),
        AgentCmd::Start(args) => start_foreground(ctx, args),
        AgentCmd::Status => status(ctx),
        AgentCmd::Stop => stop(ctx),
        AgentCmd::Password(args) => password(ctx, args),
    }
}

fn start_error(e: &StartError) -> Failure {
    let code = match e {
        StartError::WrongPassword(_) => 77,
        StartError::Locked(_) => 75,
        StartError::PathTooLong(_) => 64,
        StartError::Key(_) | StartError::DataKey(..) | StartError::StateKey(_) => 65,
        StartError::RootKeyMissing(_) => 66,
        StartError::EarlierVersion(_) => 78,
        _ => 74,
    };
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    Failure::new(code, msg)
}

fn read_password(args: &StartArgs, paths_exist: bool) -> Result<Secret, Failure> {
    let source = PasswordSource {
        file: args.password_file.as_deref(),
        file_flag: "password file",
        env: PASSWORD_ENV,
        prompt: "Password: ",
        confirm: (!paths_exist).then_some("Confirm password: "),
    };
    source.read(|p| rpassword::prompt_password(p))
}

/// Where one password comes from: a file, else an environment variable, else
/// a prompt on the terminal (asked twice when `confirm` is set).
struct PasswordSource<'a> {
    file: Option<&'a Path>,
    file_flag: &'a str,
    env: &'a str,
    prompt: &'a str,
    confirm: Option<&'a str>,
}

impl PasswordSource<'_> {
    fn read(
        &self,
        mut prompt: impl FnMut(&str) -> std::io::Result<String>,
    ) -> Result<Secret, Failure> {
        if let Some(file) = self.file {
            let bytes = std::fs::read(file).map_err(|e| {
                Failure::new(
                    66,
                    format!("cannot read {} {}: {e}", self.file_flag, file.display()),
                )
            })?;
            let mut s = Zeroizing::new(bytes);
            while s.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                s.pop();
            }
            return Ok(s);
        }
        if let Ok(p) = std::env::var(self.env) {
            return Ok(Zeroizing::new(p.into_bytes()));
        }
        let p = Zeroizing::new(prompt(self.prompt).map_err(|e| {
            Failure::new(
                64,
                format!(
                    "no {} given and cannot prompt: {e}",
                    self.prompt.trim_end_matches([':', ' ']).to_lowercase()
                ),
            )
        })?);
        if let Some(confirm) = self.confirm {
            let again = Zeroizing::new(
                prompt(confirm).map_err(|e| Failure::new(64, format!("cannot prompt: {e}")))?,
            );
            if *again != *p {
                return Err(Failure::new(64, "passwords do not match"));
            }
        }
        Ok(Zeroizing::new(p.as_bytes().to_vec()))
    }
}

/// The current and the new password of `agent password`.
fn password_pair(
    args: &PasswordArgs,
    prompt: impl FnMut(&str) -> std::io::Result<String>,
) -> Result<(Secret, Secret), Failure> {
    let mut prompt = prompt;
    let current = PasswordSource {
        file: args.password_file.as_deref(),
        file_flag: "password file",
        env: PASSWORD_ENV,
        prompt: "Current password: ",
        confirm: None,
    }
    .read(&mut prompt)?;
    let new = PasswordSource {
        file: args.new_password_file.as_deref(),
        file_flag: "new password file",
        env: NEW_PASSWORD_ENV,
        prompt: "New password: ",
        confirm: Some("Confirm new password: "),
    }
    .read(&mut prompt)?;
    if new.is_empty() {
        return Err(Failure::new(64, "the new password is empty"));
    }
    Ok((current, new))
}

/// `agent password`: through the running agent, which checks the current
/// password and re-seals its key file; with none running, on the key file
/// directly under the agent lock (so no agent starts meanwhile).
fn password(ctx: &Ctx, args: PasswordArgs) -> Result<(), Failure> {
    let (current, new) = password_pair(&args, |p| rpassword::prompt_password(p))?;
    let rt = client_runtime()?;
    let through_agent = rt.block_on(async {
        let client = match ctx.client().await {
            Ok(c) => c,
            Err(f) if f.code == ClientError::NotRunning(Default::default()).exit_code() as u8 => {
                return Ok(None);
            }
            Err(f) => return Err(f),
        };
        let node_id = client.node_id();
        let request = Request::AgentPassword {
            current: Password::new(current.to_vec()),
            new: Password::new(new.to_vec()),
        };
        match client.call(request).await? {
            Response::Unit => Ok(Some(node_id)),
            other => Err(Failure::new(76, format!("unexpected answer {other:?}"))),
        }
    })?;
    let (node_id, agent_running) = match through_agent {
        Some(id) => (id, true),
        None => {
            let id = keynode_agent::password::change_password(&ctx.paths, &current, &new)
                .map_err(|e| password_error(ctx, &e))?;
            (id, false)
        }
    };
    let doc = serde_json::json!({
        "password_changed": true,
        "node_id": node_id,
        "agent_running": agent_running,
    });
    output::emit(ctx.format, &doc, || {
        say!("password changed for node {node_id}");
        if !agent_running {
            say!("(no agent was running: the key file was re-sealed directly)");
        }
    });
    Ok(())
}

fn password_error(ctx: &Ctx, e: &PasswordError) -> Failure {
    match e {
        PasswordError::Locked(lock) => {
            let pid = match lock {
                keynode_agent::status::LockError::Held { pid } => format!(" (pid {pid})"),
                _ => String::new(),
            };
            Failure::new(
                75,
                format!(
                    "another keynode process holds the node path {}{pid}: an agent starting or \
                     another password change; try again once it is done",
                    ctx.paths.root.display()
                ),
            )
        }
        e => {
            let api = e.to_api();
            Failure::new(api.kind.exit_code() as u8, api.message)
        }
    }
}

fn config(
    ctx: &Ctx,
    args: &StartArgs,
    password: Zeroizing<Vec<u8>>,
) -> Result<NodeConfig, Failure> {
    let mut cfg = NodeConfig::new(ctx.paths.root.clone(), b"");
    cfg.password = password;
    cfg.agent_host = args.agent_host.clone();
    cfg.agent_port = args.agent_port;
    cfg.max_vault_bytes = args.max_vault_bytes;
    cfg.max_state_bytes = args.max_state_bytes;
    cfg.seed_nodes = parse_seed_nodes(&args.seed_nodes)
        .map_err(|e| Failure::new(64, format!("--seed-nodes: {e}")))?;
    Ok(cfg)
}

fn actix_system() -> actix_rt::SystemRunner {
    actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot build the tokio runtime: {e}"))
    })
}

/// Runs the node until SIGINT, SIGTERM or `agent stop`, then stops gracefully.
async fn run_until_stopped(node: Node) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        _ = node.stop_requested() => {}
        _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
    }
    node.stop().await;
}

fn announce(ctx: &Ctx, status: &AgentStatus, created: bool) {
    output::emit(ctx.format, status, || {
        if created {
            say!("created a new node identity");
        }
        say!("node {} is live", status.node_id);
        say!("node path: {}", ctx.paths.root.display());
    });
}

fn start_foreground(ctx: &Ctx, args: StartArgs) -> Result<(), Failure> {
    let password = read_password(&args, ctx.paths.root_key().exists())?;
    let cfg = config(ctx, &args, password)?;
    actix_system().block_on(async move {
        let node = Node::start(cfg).await.map_err(|e| start_error(&e))?;
        let status = current_status(&node);
        announce(ctx, &status, node.timings().created);
        let _ = std::io::stdout().flush();
        run_until_stopped(node).await;
        Ok(())
    })
}

fn current_status(node: &Node) -> AgentStatus {
    read_status(&node.paths().status()).unwrap_or(AgentStatus {
        status: "live".into(),
        node_id: node.node_id(),
        agent_host: String::new(),
        agent_port: 0,
        pid: std::process::id(),
        storage_used_percent: 0,
    })
}

/// The background agent: password on stdin, one [`ReadyLine`] on stdout, logs
/// on stderr (the parent points it at `agent.log`).
fn daemon_child(ctx: &Ctx, args: StartArgs) -> Result<(), Failure> {
    let mut password = Zeroizing::new(Vec::new());
    std::io::stdin().read_to_end(&mut password)?;
    let cfg = config(ctx, &args, password)?;
    actix_system().block_on(async move {
        let node = match Node::start(cfg).await {
            Ok(n) => n,
            Err(e) => {
                let f = start_error(&e);
                let line = ReadyLine {
                    ok: false,
                    status: None,
                    created: false,
                    error: Some(f.message.clone()),
                    exit_code: f.code,
                };
                say!("{}", serde_json::to_string(&line).unwrap_or_default());
                return Err(f);
            }
        };
        let line = ReadyLine {
            ok: true,
            status: Some(current_status(&node)),
            created: node.timings().created,
            error: None,
            exit_code: 0,
        };
        say!("{}", serde_json::to_string(&line).unwrap_or_default());
        let _ = std::io::stdout().flush();
        run_until_stopped(node).await;
        Ok(())
    })
}

fn start_background(ctx: &Ctx, args: StartArgs) -> Result<(), Failure> {
    let password = read_password(&args, ctx.paths.root_key().exists())?;
    // Check the arguments here, where the user sees the error.
    parse_seed_nodes(&args.seed_nodes)
        .map_err(|e| Failure::new(64, format!("--seed-nodes: {e}")))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&ctx.paths.root)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(ctx.paths.log())?;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("--node-path")
        .arg(&ctx.paths.root)
        .args(["agent", "start", "--daemon-child", "--agent-host"])
        .arg(&args.agent_host)
        .arg("--agent-port")
        .arg(args.agent_port.to_string())
        .arg("--seed-nodes")
        .arg(&args.seed_nodes)
        .arg("--max-vault-bytes")
        .arg(args.max_vault_bytes.to_string())
        .arg("--max-state-bytes")
        .arg(args.max_state_bytes.to_string())
        .env_remove(PASSWORD_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .process_group(0)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&password)?;
    }
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Failure::new(71, "cannot read from the agent"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(READY_TIMEOUT).map_err(|_| {
        Failure::new(
            75,
            format!(
                "the agent did not become ready; see {}",
                ctx.paths.log().display()
            ),
        )
    })?;
    let ready: ReadyLine = serde_json::from_str(line.trim()).map_err(|_| {
        let _ = child.try_wait();
        Failure::new(
            70,
            format!(
                "the agent exited before it was ready; see {}",
                ctx.paths.log().display()
            ),
        )
    })?;
    match (ready.ok, ready.status) {
        (true, Some(status)) => {
            announce(ctx, &status, ready.created);
            Ok(())
        }
        _ => {
            let _ = child.wait();
            Err(Failure::new(
                ready.exit_code,
                ready
                    .error
                    .unwrap_or_else(|| "the agent failed to start".into()),
            ))
        }
    }
}

fn status(ctx: &Ctx) -> Result<(), Failure> {
    let rt = client_runtime()?;
    let live = rt.block_on(async {
        let client = ctx.client().await?;
        match client.call(Request::AgentStatus).await? {
            Response::Status(s) => Ok(s),
            other => Err(Failure::new(76, format!("unexpected answer {other:?}"))),
        }
    });
    match live {
        Ok(s) => {
            output::emit(ctx.format, &s, || {
                say!("status: {}", s.status);
                say!("node_id: {}", s.node_id);
                say!("agent_host: {}", s.agent_host);
                say!("agent_port: {}", s.agent_port);
                say!("pid: {}", s.pid);
                say!("storage_used: {}%", s.storage_used_percent);
                if s.storage_used_percent >= keynode_agent::node::STORAGE_WARN_PERCENT {
                    say!("warning: the node's storage is nearly full; writes will fail when it is");
                }
            });
            Ok(())
        }
        Err(f) if f.code == 69 => {
            let last = read_status(&ctx.paths.status());
            let doc = serde_json::json!({
                "status": "stopped",
                "node_id": last.as_ref().map(|s| s.node_id.to_string()),
                "agent_host": serde_json::Value::Null,
                "agent_port": serde_json::Value::Null,
                "pid": serde_json::Value::Null,
            });
            output::emit(ctx.format, &doc, || say!("status: stopped"));
            Err(f)
        }
        Err(f) => Err(f),
    }
}

fn stop(ctx: &Ctx) -> Result<(), Failure> {
    let rt = client_runtime()?;
    let asked = rt.block_on(async {
        let client = ctx.client().await?;
        client.call(Request::AgentStop).await?;
        Ok::<_, Failure>(())
    });
    match asked {
        Ok(()) => {}
        Err(f) if f.code == ClientError::NotRunning(Default::default()).exit_code() as u8 => {
            output::emit(
                ctx.format,
                &serde_json::json!({"status": "stopped"}),
                || say!("no agent is running at {}", ctx.paths.root.display()),
            );
            return Ok(());
        }
        Err(f) => return Err(f),
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while AgentLock::is_held(&ctx.paths.lock()) {
        if Instant::now() > deadline {
            return Err(Failure::new(
                75,
                "the agent is still stopping; check `keynode agent status`",
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    output::emit(
        ctx.format,
        &serde_json::json!({"status": "stopped"}),
        || say!("agent stopped"),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(current: Option<&Path>, new: Option<&Path>) -> PasswordArgs {
        PasswordArgs {
            password_file: current.map(Path::to_path_buf),
            new_password_file: new.map(Path::to_path_buf),
        }
    }

    /// A prompt that answers from `answers`, in order.
    fn answering(answers: &[&str]) -> impl FnMut(&str) -> std::io::Result<String> {
        let mut answers: Vec<String> = answers.iter().rev().map(|s| s.to_string()).collect();
        move |_| answers.pop().ok_or_else(|| std::io::Error::other("no tty"))
    }

    #[test]
    fn the_new_password_comes_from_a_file_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let (cur, new) = (dir.path().join("cur"), dir.path().join("new"));
        std::fs::write(&cur, "old\n").unwrap();
        std::fs::write(&new, "new\r\n").unwrap();
        let (c, n) = password_pair(&args(Some(&cur), Some(&new)), answering(&[])).unwrap();
        assert_eq!((&c[..], &n[..]), (&b"old"[..], &b"new"[..]));

        std::fs::write(&new, "\n").unwrap();
        let e = password_pair(&args(Some(&cur), Some(&new)), answering(&[])).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (64, "the new password is empty")
        );

        let e = password_pair(
            &args(Some(&cur), Some(&dir.path().join("missing"))),
            answering(&[]),
        )
        .unwrap_err();
        assert_eq!(e.code, 66);
        assert!(e.message.contains("new password file"), "{}", e.message);
    }

    #[test]
    fn the_prompted_new_password_is_asked_twice() {
        if std::env::var_os(NEW_PASSWORD_ENV).is_some() {
            return; // the environment would answer instead of the prompt
        }
        let dir = tempfile::tempdir().unwrap();
        let cur = dir.path().join("cur");
        std::fs::write(&cur, "old").unwrap();
        let a = args(Some(&cur), None);
        let (_, n) = password_pair(&a, answering(&["new", "new"])).unwrap();
        assert_eq!(&n[..], b"new");
        let e = password_pair(&a, answering(&["new", "neW"])).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (64, "passwords do not match"));
        let e = password_pair(&a, answering(&["", ""])).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (64, "the new password is empty")
        );
        let e = password_pair(&a, answering(&[])).unwrap_err();
        assert_eq!(e.code, 64);
        assert!(e.message.contains("no new password given"), "{}", e.message);
    }
}
