//! A cluster of real agents: N `keynode-harness agent` processes on loopback,
//! each in its own node path, or agents that already run elsewhere
//! (`--attach`). The harness talks to each through its Unix socket.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use keynode_client::ClientError;
use keynode_client::api::{ApiError, ErrorKind, Request, Response};
use keynode_core::{NodeId, SecretPath, VaultName};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::agent::Ready;

/// Longest an agent may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a graceful stop may take before the agent is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Agents started at once.
const START_PARALLEL: usize = 8;
/// The password every harness agent's key is sealed under.
pub const PASSWORD: &str = "keynode-harness password";

/// One agent of the cluster.
pub struct Agent {
    /// Position in the cluster.
    pub index: usize,
    /// The node's id.
    pub node_id: NodeId,
    /// Host it listens on for peers.
    pub host: String,
    /// Port it listens on for peers.
    pub port: u16,
    /// Its client socket.
    pub socket: PathBuf,
    /// Its node path (spawned agents only).
    pub dir: Option<PathBuf>,
    child: Option<Child>,
    /// Its process id while it runs (spawned agents only).
    pub pid: Option<u32>,
}

impl Agent {
    /// Whether the harness started this agent and it runs now.
    pub fn is_up(&self) -> bool {
        self.child.is_some() || self.dir.is_none()
    }
}

/// The agents under test.
pub struct Cluster {
    _root: Option<tempfile::TempDir>,
    root: PathBuf,
    exe: PathBuf,
    /// DHT nodes the agents join through (`None`: no DHT).
    dht: Option<String>,
    /// Extra `agent` arguments of each agent, by index (a relay, a node
    /// without a listener).
    extra: Vec<Vec<String>>,
    /// The agents, by index.
    pub agents: Vec<Agent>,
}

impl Cluster {
    /// Starts `n` agents, each in its own node path under a fresh temporary
    /// directory (kept if `keep`).
    pub async fn start(n: usize, keep: bool) -> Result<Cluster, String> {
        Self::start_on(n, keep, None, 0).await
    }

    /// [`Cluster::start`], the agents joining the DHT through `dht`
    /// (`HOST:PORT,…`) when given.
    /// With `behind_relay` K > 0, agent 0 relays (`--relay-serve`) and agents
    /// 1..=K run with no listener, keeping a reservation at agent 0.
    pub async fn start_on(
        n: usize,
        keep: bool,
        dht: Option<String>,
        behind_relay: usize,
    ) -> Result<Cluster, String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find the harness binary: {e}"))?;
        let tmp = tempfile::Builder::new()
            .prefix("kh-")
            .tempdir()
            .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
        let root = tmp.path().to_path_buf();
        std::fs::write(root.join("password"), PASSWORD).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(root.join("provider")).map_err(|e| e.to_string())?;
        let mut cluster = Cluster {
            _root: if keep {
                let _ = tmp.keep();
                None
            } else {
                Some(tmp)
            },
            root,
            exe,
            dht,
            extra: vec![Vec::new(); n],
            agents: Vec::with_capacity(n),
        };
        let mut next = 0;
        if behind_relay > 0 {
            cluster.extra[0] = vec!["--relay-serve".into()];
        }
        while next < n {
            // A relay starts alone: the others need its address.
            let size = if behind_relay > 0 && next == 0 {
                1
            } else {
                START_PARALLEL
            };
            let batch: Vec<usize> = (next..n.min(next + size)).collect();
            next += batch.len();
            let spawned = futures_join(batch.iter().map(|&i| {
                let dir = cluster.root.join(format!("n{i}"));
                cluster.spawn(i, dir, 0)
            }))
            .await;
            for (i, r) in batch.into_iter().zip(spawned) {
                let (child, ready, dir) = r.map_err(|e| format!("agent {i}: {e}"))?;
                cluster.agents.push(Agent {
                    index: i,
                    node_id: ready
                        .node_id
                        .parse()
                        .map_err(|e| format!("agent {i}: bad node id: {e}"))?,
                    host: ready.host,
                    port: ready.port,
                    socket: keynode_client::NodePaths::new(&dir).socket(),
                    dir: Some(dir),
                    pid: Some(ready.pid),
                    child: Some(child),
                });
            }
            if behind_relay > 0 && cluster.agents.len() == 1 {
                // The relay is up: the hidden nodes reserve there.
                let relay = format!(
                    "{}@127.0.0.1:{}",
                    cluster.agents[0].node_id, cluster.agents[0].port
                );
                for i in 1..=behind_relay.min(n - 1) {
                    cluster.extra[i] = vec!["--no-listen".into(), "--relays".into(), relay.clone()];
                }
            }
        }
        Ok(cluster)
    }

    /// Whether agent `i` relays for others (it must keep its port).
    pub fn is_relay(&self, i: usize) -> bool {
        self.extra
            .get(i)
            .is_some_and(|e| e.iter().any(|a| a == "--relay-serve"))
    }

    /// Agents that already run elsewhere, one a line:
    /// `NODE_ID@host:port socket=/path/to/agent.sock` (`#` starts a comment).
    pub fn attach(file: &Path) -> Result<Cluster, String> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let mut agents = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |why: &str| format!("{}:{}: {why}: {line:?}", file.display(), n + 1);
            let mut parts = line.split_whitespace();
            let addr = parts.next().ok_or_else(|| bad("empty"))?;
            let seeds = keynode_agent::parse_seed_nodes(addr).map_err(|e| bad(&e.to_string()))?;
            let [seed] = seeds.as_slice() else {
                return Err(bad("expected one NODE_ID@host:port"));
            };
            let socket = parts
                .find_map(|p| p.strip_prefix("socket="))
                .ok_or_else(|| bad("missing socket=PATH"))?;
            agents.push(Agent {
                index: agents.len(),
                node_id: seed.node,
                host: seed.host.clone(),
                port: seed.port,
                socket: PathBuf::from(socket),
                dir: None,
                child: None,
                pid: None,
            });
        }
        if agents.len() < 2 {
            return Err(format!("{}: need at least two agents", file.display()));
        }
        Ok(Cluster {
            _root: None,
            root: PathBuf::new(),
            exe: PathBuf::new(),
            dht: None,
            extra: Vec::new(),
            agents,
        })
    }

    /// The directory holding the node paths (empty when attached).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the agents were started by the harness (and can be killed).
    pub fn spawned(&self) -> bool {
        self.agents.iter().all(|a| a.dir.is_some())
    }

    fn spawn(
        &self,
        i: usize,
        dir: PathBuf,
        port: u16,
    ) -> impl std::future::Future<Output = Result<(Child, Ready, PathBuf), String>> + use<> {
        let exe = self.exe.clone();
        let root = self.root.clone();
        let dht: Vec<String> = self
            .dht
            .iter()
            .flat_map(|b| ["--dht-bootstrap".to_owned(), b.clone()])
            .chain(self.extra.get(i).cloned().unwrap_or_default())
            .collect();
        async move {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("harness-agent.log"))
                .map_err(|e| e.to_string())?;
            let mut child = Command::new(&exe)
                .arg("agent")
                .arg("--node-path")
                .arg(&dir)
                .arg("--password-file")
                .arg(root.join("password"))
                .arg("--agent-port")
                .arg(port.to_string())
                .arg("--provider-dir")
                .arg(root.join("provider"))
                .arg("--stdin-lifeline")
                .args(&dht)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log))
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
            let stdout = child.stdout.take().ok_or("no stdout")?;
            let mut lines = BufReader::new(stdout).lines();
            let line = match tokio::time::timeout(READY_TIMEOUT, lines.next_line()).await {
                Ok(Ok(Some(l))) => l,
                Ok(_) => {
                    let _ = child.wait().await;
                    let log =
                        std::fs::read_to_string(dir.join("harness-agent.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(3).collect();
                    return Err(format!(
                        "agent exited before it was ready: {}",
                        tail.join(" | ")
                    ));
                }
                Err(_) => return Err("agent was not ready within 60 s".into()),
            };
            let ready: Ready =
                serde_json::from_str(&line).map_err(|e| format!("bad ready line {line:?}: {e}"))?;
            Ok((child, ready, dir))
        }
    }

    /// Kills agent `i` with SIGKILL and reaps it.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.agents[i].child.take() {
            let _ = child.kill().await;
        }
        self.agents[i].pid = None;
    }

    /// Restarts agent `i` on its node path on a free port, another than
    /// before (after [`Cluster::kill`]): a node that moved.
    pub async fn restart_elsewhere(&mut self, i: usize) -> Result<(), String> {
        if self.agents[i].child.is_some() {
            return Ok(());
        }
        let dir = self.agents[i]
            .dir
            .clone()
            .ok_or("an attached agent cannot be restarted")?;
        if self.is_relay(i) {
            // Its reservations name its address: a relay does not move.
            return self.restart(i).await;
        }
        let (child, ready, _) = self.spawn(i, dir, 0).await?;
        if ready.node_id != self.agents[i].node_id.to_string() {
            return Err(format!("agent {i} came back as {}", ready.node_id));
        }
        self.agents[i].port = ready.port;
        self.agents[i].pid = Some(ready.pid);
        self.agents[i].child = Some(child);
        Ok(())
    }

    /// Restarts agent `i` on its node path and port (after [`Cluster::kill`]).
    pub async fn restart(&mut self, i: usize) -> Result<(), String> {
        if self.agents[i].child.is_some() {
            return Ok(());
        }
        let dir = self.agents[i]
            .dir
            .clone()
            .ok_or("an attached agent cannot be restarted")?;
        let port = self.agents[i].port;
        let mut last = String::new();
        // The port was just released; a bind may need a moment.
        for _ in 0..20 {
            match self.spawn(i, dir.clone(), port).await {
                Ok((child, ready, _)) => {
                    if ready.node_id != self.agents[i].node_id.to_string() {
                        return Err(format!("agent {i} came back as {}", ready.node_id));
                    }
                    self.agents[i].pid = Some(ready.pid);
                    self.agents[i].child = Some(child);
                    return Ok(());
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(format!("agent {i} did not restart: {last}"))
    }

    /// Stops every spawned agent gracefully (killing any that hang).
    pub async fn stop(&mut self) {
        let socks: Vec<(usize, PathBuf)> = self
            .agents
            .iter()
            .filter(|a| a.child.is_some())
            .map(|a| (a.index, a.socket.clone()))
            .collect();
        futures_join(
            socks
                .into_iter()
                .map(|(_, s)| async move { call(&s, Request::AgentStop).await.map(drop) }),
        )
        .await;
        for a in &mut self.agents {
            if let Some(mut child) = a.child.take()
                && tokio::time::timeout(STOP_TIMEOUT, child.wait())
                    .await
                    .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }

    /// Resident memory of agent `i`, in KiB (Linux).
    pub fn rss_kib(&self, i: usize) -> Option<u64> {
        let pid = self.agents[i].pid?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

/// Runs futures concurrently and collects their outputs in order.
pub async fn futures_join<F, T>(futs: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(v) => out.push(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}

/// `name` as a request carries it; a bad name fails as the agent would refuse it
/// (BadData).
pub fn vault_name(name: &str) -> Result<VaultName, ClientError> {
    VaultName::new(name).map_err(|e| ApiError::new(ErrorKind::BadData, e.to_string()).into())
}

/// `path` as a request carries it; a bad path fails as the agent would refuse it
/// (BadData).
pub fn secret_path(path: &str) -> Result<SecretPath, ClientError> {
    SecretPath::new(path).map_err(|e| ApiError::new(ErrorKind::BadData, e.to_string()).into())
}

/// The client of the agent on `socket`, shared by every operation on it so
/// its connections are kept between them.
pub fn agent(socket: &Path) -> keynode_client::Agent {
    static AGENTS: OnceLock<Mutex<HashMap<PathBuf, keynode_client::Agent>>> = OnceLock::new();
    let mut agents = AGENTS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    agents
        .entry(socket.to_path_buf())
        .or_insert_with(|| keynode_client::Agent::at_socket(socket))
        .clone()
}

/// One request to the agent on `socket`.
pub async fn call(socket: &Path, req: Request) -> Result<Response, ClientError> {
    agent(socket).call(req).await
}

/// Writes a secret.
pub async fn write(
    socket: &Path,
    vault: &str,
    path: &str,
    value: &[u8],
) -> Result<Response, ClientError> {
    let mut data = value;
    let request = Request::SecretsWrite {
        vault: vault.into(),
        path: secret_path(path)?,
        create_new: false,
    };
    agent(socket).upload(request, &mut data).await
}

/// Reads a secret.
pub async fn get(socket: &Path, vault: &str, path: &str) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    let request = Request::SecretsGet {
        vault: vault.into(),
        path: secret_path(path)?,
        at: None,
    };
    agent(socket).download(request, &mut out).await?;
    Ok(out)
}

/// The head commit of a vault.
pub async fn head(socket: &Path, vault: &str) -> Result<Option<String>, ClientError> {
    match call(
        socket,
        Request::VaultsLog {
            vault: vault.into(),
            depth: Some(1),
            commit: None,
        },
    )
    .await?
    {
        Response::Log(l) => Ok(l.into_iter().next().map(|c| c.oid)),
        other => Err(ClientError::Protocol(format!("unexpected {other:?}"))),
    }
}

/// A short name for an error, for counting: the API kind, or the client-side
/// failure.
pub fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Api(a) => format!("{:?}", a.kind),
        ClientError::NotRunning(_) => "NotRunning".into(),
        ClientError::Protocol(_) => "Protocol".into(),
        ClientError::Io(_) => "Io".into(),
    }
}
