//! `keynode-harness agent`: one node in the foreground, as the harness runs it.
//!
//! Like `keynode agent start` in the foreground (an actix System on a
//! multi-thread tokio runtime), but with a machine-readable ready line: once the
//! node is live it prints one JSON line `{"node_id", "host", "port", "pid"}` on
//! stdout. It stops gracefully on SIGTERM, SIGINT, `agent stop`, or, with
//! `--stdin-lifeline`, when its stdin closes (so agents never outlive a harness
//! that was killed).

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use keynode_agent::parse_seed_nodes;
use keynode_agent::{Node, NodeConfig};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Options of the hidden `agent` subcommand.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The node path (created on first start).
    #[arg(long)]
    pub node_path: PathBuf,
    /// File holding the password (trailing newlines are ignored).
    #[arg(long)]
    pub password_file: PathBuf,
    /// Host to listen on for peers.
    #[arg(long, default_value = "127.0.0.1")]
    pub agent_host: String,
    /// Port to listen on for peers (0 picks one).
    #[arg(long, default_value_t = 0)]
    pub agent_port: u16,
    /// Nodes to know from the start: `ID@host:port;ID@host:port`.
    #[arg(long, default_value = "")]
    pub seed_nodes: String,
    /// Directory of the offline identity provider.
    #[arg(long)]
    pub provider_dir: Option<PathBuf>,
    /// Stop when stdin reaches end of file (the harness holds the other end).
    #[arg(long)]
    pub stdin_lifeline: bool,
    /// Join the DHT through these nodes (`HOST:PORT,…`); without it, no DHT.
    #[arg(long)]
    pub dht_bootstrap: Option<String>,
    /// Relay for others.
    #[arg(long)]
    pub relay_serve: bool,
    /// Keep a reservation at these relays: `ID@host:port;…`.
    #[arg(long, default_value = "")]
    pub relays: String,
    /// Listen for no peer (reachable only through --relays).
    #[arg(long)]
    pub no_listen: bool,
}

/// The line an agent prints on stdout once it is live.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ready {
    /// The node's id.
    pub node_id: String,
    /// Host it listens on for peers.
    pub host: String,
    /// Port it listens on for peers.
    pub port: u16,
    /// The agent's process id.
    pub pid: u32,
}

/// Runs the node until it is told to stop; returns an error message if it
/// could not start.
pub fn run(args: AgentArgs) -> Result<(), String> {
    let bytes = std::fs::read(&args.password_file)
        .map_err(|e| format!("cannot read {}: {e}", args.password_file.display()))?;
    let mut password = Zeroizing::new(bytes);
    while password.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        password.pop();
    }
    let mut cfg = NodeConfig::new(&args.node_path, b"");
    cfg.password = password;
    cfg.agent_host = args.agent_host.clone();
    cfg.agent_port = args.agent_port;
    cfg.seed_nodes =
        parse_seed_nodes(&args.seed_nodes).map_err(|e| format!("--seed-nodes: {e}"))?;
    cfg.provider_dir = args.provider_dir.clone();
    cfg.dht = args
        .dht_bootstrap
        .as_deref()
        .map(keynode_agent::DhtSettings::with_bootstrap);
    cfg.relay_serve = args.relay_serve.then(keynode_agent::RelayLimits::default);
    cfg.relays = args
        .relays
        .split(';')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| r.parse().map_err(|e| format!("--relays: {e}")))
        .collect::<Result<_, String>>()?;
    cfg.no_listen = args.no_listen;
    let system = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot build the runtime: {e}"))
    });
    system.block_on(async move {
        let node = Node::start(cfg).await.map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            msg
        })?;
        let ready = Ready {
            node_id: node.node_id().to_string(),
            host: args.agent_host.clone(),
            port: node.listen_addr().port(),
            pid: std::process::id(),
        };
        let line = serde_json::to_string(&ready).map_err(|e| e.to_string())?;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
        wait_for_stop(&node, args.stdin_lifeline).await;
        node.stop().await;
        Ok(())
    })
}

async fn wait_for_stop(node: &Node, lifeline: bool) {
    use tokio::io::AsyncReadExt;
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    let stdin_closed = async {
        if !lifeline {
            return std::future::pending().await;
        }
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = node.stop_requested() => {}
        _ = stdin_closed => {}
        _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
    }
}
