//! `keynode agent start|status|stop|password`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keynode_agent::parse_seed_nodes;
use keynode_agent::status::{AgentLock, read_status};
use keynode_agent::{Node, NodeConfig, StartError};
use keynode_client::ClientError;
use keynode_client::api::{AgentStatus, Request, Response};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::cli::{AgentCmd, StartArgs};
use crate::output;
use crate::password::{PASSWORD_ENV, PasswordSource, Secret};
use crate::{Ctx, Failure, client_runtime};

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
    /// A new node's recovery code, for the parent to show (the pipe between
    /// them is private; the child's stderr is the log, which never sees it).
    #[serde(default)]
    recovery_code: Option<String>,
}

/// What the parent hands a background agent on its stdin.
#[derive(Serialize, Deserialize)]
struct ChildInput {
    password: Vec<u8>,
    recovery_code: Option<String>,
}

impl Drop for ChildInput {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.password.zeroize();
        self.recovery_code.zeroize();
    }
}

pub fn run(ctx: &Ctx, cmd: AgentCmd) -> Result<(), Failure> {
    match cmd {
        AgentCmd::Start(args) if args.daemon_child => daemon_child(ctx, *args),
        AgentCmd::Start(args) if args.background => start_background(ctx, *args),
        AgentCmd::Start(args) => start_foreground(ctx, *args),
        AgentCmd::Status => status(ctx),
        AgentCmd::Stop => stop(ctx),
        AgentCmd::Password(args) => crate::password::run(ctx, args),
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
        StartError::RecoveryOnExistingNode(_) => 64,
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
    // A systemd credential comes after the flag and the variable.
    let credential = (args.password_file.is_none() && std::env::var_os(PASSWORD_ENV).is_none())
        .then(crate::config::credential)
        .flatten();
    let source = PasswordSource {
        file: args.password_file.as_deref().or(credential.as_deref()),
        file_flag: "password file",
        env: PASSWORD_ENV,
        prompt: "Password: ",
        confirm: (!paths_exist).then_some("Confirm password: "),
    };
    source.read(|p| rpassword::prompt_password(p))
}

fn config(
    ctx: &Ctx,
    args: &StartArgs,
    password: Zeroizing<Vec<u8>>,
    code: Option<&str>,
) -> Result<NodeConfig, Failure> {
    let mut cfg = NodeConfig::new(ctx.paths.root.clone(), b"");
    cfg.password = password;
    if let Some(code) = code {
        let code = keynode_core::recovery::RecoveryCode::parse(code)
            .map_err(|e| Failure::new(65, e.to_string()))?;
        cfg.recovery_code = Some(code);
    }
    cfg.agent_host = args.agent_host.clone();
    cfg.agent_port = args.agent_port;
    cfg.max_vault_bytes = args.max_vault_bytes;
    cfg.max_state_bytes = args.max_state_bytes;
    cfg.seed_nodes = parse_seed_nodes(&args.seed_nodes)
        .map_err(|e| Failure::new(64, format!("--seed-nodes: {e}")))?;
    cfg.dht = (args.dht == "on").then(|| match &args.dht_bootstrap {
        Some(list) => keynode_agent::DhtSettings::with_bootstrap(list),
        None => keynode_agent::DhtSettings::default(),
    });
    cfg.relays = parse_relays(&args.relays)?;
    cfg.relay_serve = args.relay_serve.then(keynode_agent::RelayLimits::default);
    cfg.no_listen = args.no_listen;
    if cfg.no_listen && cfg.relays.is_empty() {
        return Err(Failure::new(
            64,
            "--no-listen needs --relays: without a listener the node is reachable only through its relays",
        ));
    }
    Ok(cfg)
}

/// `--relays 'ID@host:port;…'`.
pub(crate) fn parse_relays(s: &str) -> Result<Vec<keynode_agent::RelayAddress>, Failure> {
    s.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse()
                .map_err(|e| Failure::new(64, format!("--relays: {e}")))
        })
        .collect()
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
/// With `--metrics ADDR`, installs the process's Prometheus recorder and
/// serves it at `ADDR` (before the node starts, so a taken port fails the
/// start). Runs inside the agent's runtime.
fn serve_metrics(addr: Option<std::net::SocketAddr>) -> Result<(), Failure> {
    let Some(addr) = addr else { return Ok(()) };
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| Failure::new(74, format!("--metrics {addr}: {e}")))
}

/// Refreshes the node's gauges every [`keynode_agent::metrics::SAMPLE_EVERY`]
/// when metrics are served; pending forever otherwise.
async fn sample_metrics(node: &Node, on: bool) {
    if !on {
        return std::future::pending().await;
    }
    let mut tick = tokio::time::interval(keynode_agent::metrics::SAMPLE_EVERY);
    loop {
        tick.tick().await;
        node.sample_metrics().await;
    }
}

async fn run_until_stopped(node: Node, metrics: bool) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        _ = node.stop_requested() => {}
        _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        _ = watchdog(&node) => {}
        _ = sample_metrics(&node, metrics) => {}
    }
    systemd(&[sd_notify::NotifyState::Stopping]);
    node.stop().await;
}

/// Tells the service manager, if one asked (`NOTIFY_SOCKET`); nothing
/// otherwise.
fn systemd(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(false, states)
    {
        tracing::warn!(error = %e, "could not notify the service manager");
    }
}

/// The watchdog interval the service manager asked of this process, as
/// libsystemd's `sd_watchdog_enabled` reads it: `WATCHDOG_USEC`, for us
/// unless `WATCHDOG_PID` names another process.
fn watchdog_usec() -> Option<u64> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let ours = match std::env::var("WATCHDOG_PID") {
        Ok(pid) => pid.parse::<u32>().ok() == Some(std::process::id()),
        Err(_) => true,
    };
    (ours && usec > 0).then_some(usec)
}

/// With `WatchdogSec=` in the unit, pings the service manager at half the
/// interval, each time only after the agent listed its vaults (through
/// the vault actor and a store job) in time: an agent that hangs is restarted. Never
/// returns; pending forever without a watchdog.
async fn watchdog(node: &Node) {
    let Some(usec) = watchdog_usec() else {
        return std::future::pending().await;
    };
    let every = Duration::from_micros(usec / 2);
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        // Listing the vaults goes through the vault actor and a store job
        // (an LMDB read): `AgentStatus` is answered from memory and would pass
        // with the actors stuck.
        let answered = tokio::time::timeout(every, node.call(Request::VaultsList)).await;
        if matches!(answered, Ok(Ok(_))) {
            systemd(&[sd_notify::NotifyState::Watchdog]);
        } else {
            tracing::warn!("the agent did not answer its watchdog check in time");
        }
    }
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

/// The recovery code to recreate a node from, if `--recovery-code-file` is
/// given; checks `--recovery-code-out-file` can be written, before anything
/// is created.
fn recovery_input(args: &StartArgs) -> Result<Option<Zeroizing<String>>, Failure> {
    if let Some(out) = &args.recovery_code_out_file {
        crate::recovery::check_out_file(out)?;
    }
    args.recovery_code_file
        .as_deref()
        .map(crate::recovery::read_code_file)
        .transpose()
}

fn start_foreground(ctx: &Ctx, args: StartArgs) -> Result<(), Failure> {
    let code = recovery_input(&args)?;
    let password = read_password(&args, ctx.paths.root_key().exists())?;
    let cfg = config(ctx, &args, password, code.as_deref().map(String::as_str))?;
    actix_system().block_on(async move {
        serve_metrics(args.metrics)?;
        let node = Node::start(cfg).await.map_err(|e| start_error(&e))?;
        if let Some(code) = node.take_recovery_code() {
            crate::recovery::show(&code, args.recovery_code_out_file.as_deref())?;
        }
        let status = current_status(&node);
        announce(ctx, &status, node.timings().created);
        let _ = std::io::stdout().flush();
        let line = format!("node {} is live", status.node_id);
        systemd(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&line),
        ]);
        run_until_stopped(node, args.metrics.is_some()).await;
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
        recovery_code: false,
    })
}

/// The background agent: password on stdin, one [`ReadyLine`] on stdout, logs
/// on stderr (the parent points it at `agent.log`).
fn daemon_child(ctx: &Ctx, args: StartArgs) -> Result<(), Failure> {
    let mut raw = Zeroizing::new(Vec::new());
    std::io::stdin().read_to_end(&mut raw)?;
    let input: ChildInput = serde_json::from_slice(&raw)
        .map_err(|_| Failure::new(64, "the background agent's input is malformed"))?;
    let password = Zeroizing::new(input.password.clone());
    let cfg = config(ctx, &args, password, input.recovery_code.as_deref())?;
    actix_system().block_on(async move {
        let started = match serve_metrics(args.metrics) {
            Ok(()) => Node::start(cfg).await.map_err(|e| start_error(&e)),
            Err(f) => Err(f),
        };
        let node = match started {
            Ok(n) => n,
            Err(f) => {
                let line = ReadyLine {
                    ok: false,
                    status: None,
                    created: false,
                    error: Some(f.message.clone()),
                    exit_code: f.code,
                    recovery_code: None,
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
            recovery_code: node.take_recovery_code().map(|c| c.phrase().to_string()),
        };
        let text = Zeroizing::new(serde_json::to_string(&line).unwrap_or_default());
        drop(line);
        // Not through `say!`: the words must reach the parent as they are.
        println!("{}", text.as_str());
        let _ = std::io::stdout().flush();
        run_until_stopped(node, args.metrics.is_some()).await;
        Ok(())
    })
}

fn start_background(ctx: &Ctx, args: StartArgs) -> Result<(), Failure> {
    let code = recovery_input(&args)?;
    let password = read_password(&args, ctx.paths.root_key().exists())?;
    // Check the arguments here, where the user sees the error.
    parse_seed_nodes(&args.seed_nodes)
        .map_err(|e| Failure::new(64, format!("--seed-nodes: {e}")))?;
    parse_relays(&args.relays)?;
    if args.no_listen && args.relays.trim().is_empty() {
        return Err(Failure::new(64, "--no-listen needs --relays"));
    }
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
        .arg("--dht")
        .arg(&args.dht)
        .args(
            args.dht_bootstrap
                .iter()
                .flat_map(|b| ["--dht-bootstrap".to_owned(), b.clone()]),
        )
        .arg("--relays")
        .arg(&args.relays)
        .args(args.relay_serve.then_some("--relay-serve"))
        .args(args.no_listen.then_some("--no-listen"))
        .args(
            args.log
                .iter()
                .flat_map(|l| ["--log".to_owned(), l.clone()]),
        )
        .args(
            args.metrics
                .iter()
                .flat_map(|m| ["--metrics".to_owned(), m.to_string()]),
        )
        .env_remove(PASSWORD_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .process_group(0)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        let input = ChildInput {
            password: password.to_vec(),
            recovery_code: code.as_deref().map(|c| c.to_string()),
        };
        let bytes = Zeroizing::new(serde_json::to_vec(&input).unwrap_or_default());
        stdin.write_all(&bytes)?;
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
    let line = Zeroizing::new(line);
    drop(line);
    if let Some(words) = ready.recovery_code.as_deref() {
        let code = keynode_core::recovery::RecoveryCode::parse(words)
            .map_err(|e| Failure::new(70, format!("the agent sent a bad recovery code: {e}")))?;
        crate::recovery::show(&code, args.recovery_code_out_file.as_deref())?;
    }
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
        let mut client = ctx.client().await?;
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
                if !s.recovery_code {
                    say!(
                        "recovery_code: none (this node was made before keynode had recovery codes)"
                    );
                }
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
        let mut client = ctx.client().await?;
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
