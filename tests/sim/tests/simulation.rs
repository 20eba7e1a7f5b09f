//! Deterministic simulation: several real nodes (their actors, stores and the
//! real network stack: Noise, yamux, RPC) on turmoil's simulated network, with
//! a seeded workload and seeded faults, checking the chaos invariants of
//! `docs/HARNESS.md` in process.
//!
//! Gestalts span nodes: n0 and n1 are linked before the workload, and the
//! workload links, forgets links (a node's view splits) and discovers while
//! shares, clones and pulls run under partitions, held links and node
//! restarts (turmoil bounces a host: its software stops where it is and starts
//! again on the same disk). After healing, every node discovers every other and
//! each owner's grants are checked against the serving side: every node of a
//! granted gestalt can pull and converges, every other node is refused, no
//! grant exists that no share reached, and no standing share was lost.
//!
//! `cargo test -p keynode-sim` runs `SIM_SEEDS` seeds (default 20);
//! `SIM_SEED=K cargo test -p keynode-sim` replays seed K alone;
//! `SIM_LOG=debug` (an `EnvFilter`) adds the nodes' logs.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use keynode_agent::api::{Request, Response};
use keynode_agent::{Node, NodeConfig};
use keynode_core::keystore::{self, KdfParams};
use keynode_core::{Keypair, NodeId, VaultName};
use keynode_net::{BoxTransport, Listener, NetContext, SeededEntropy, Transport};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, oneshot};

/// Nodes per run.
const NODES: usize = 4;
/// Workload operations per run.
const OPS: usize = 40;
/// Port every node listens on (each host has its own simulated address).
const PORT: u16 = 4400;
/// Simulated time after healing: the outbox backoff caps at 60 s.
const SETTLE: Duration = Duration::from_secs(75);

// ---- the transport --------------------------------------------------------------

/// keynode-net's [`Transport`] over turmoil's simulated TCP.
#[derive(Clone, Copy, Debug)]
struct TurmoilTransport;

struct TurmoilListener(turmoil::net::TcpListener);

impl Transport for TurmoilTransport {
    type Stream = turmoil::net::TcpStream;
    type Listener = TurmoilListener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<TurmoilListener> {
        Ok(TurmoilListener(
            turmoil::net::TcpListener::bind(addr).await?,
        ))
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<turmoil::net::TcpStream> {
        turmoil::net::TcpStream::connect(addr).await
    }

    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(vec![SocketAddr::new(turmoil::lookup(host), port)])
    }
}

impl Listener for TurmoilListener {
    type Stream = turmoil::net::TcpStream;

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(turmoil::net::TcpStream, SocketAddr)> {
        self.0.accept().await
    }
}

/// Wall-clock time that follows the simulation (the outbox schedules retries
/// on it).
#[derive(Debug)]
struct SimClock;

impl keynode_core::Clock for SimClock {
    fn now_ms(&self) -> u64 {
        turmoil::since_epoch().map_or(0, |d| d.as_millis() as u64)
    }
}

// ---- driving nodes --------------------------------------------------------------

enum Cmd {
    Call(Request),
    Put(String, String, Vec<u8>),
    Get(String, String),
    /// Forget the link between two nodes in this node's graph.
    Unlink(NodeId, NodeId),
}

enum Reply {
    Resp(Response),
    Bytes(Vec<u8>),
}

type Outcome = Result<Reply, String>;
type Inbox = mpsc::UnboundedReceiver<(Cmd, oneshot::Sender<Outcome>)>;

/// The driver's handle on one node: commands run on the node's own host.
#[derive(Clone)]
struct NodeHandle {
    id: NodeId,
    name: String,
    tx: mpsc::UnboundedSender<(Cmd, oneshot::Sender<Outcome>)>,
}

impl NodeHandle {
    async fn run(&self, cmd: Cmd) -> Outcome {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((cmd, tx))
            .map_err(|_| "node is gone".to_string())?;
        rx.await
            .map_err(|_| "node dropped the request".to_string())?
    }

    async fn call(&self, req: Request) -> Result<Response, String> {
        match self.run(Cmd::Call(req)).await? {
            Reply::Resp(r) => Ok(r),
            Reply::Bytes(_) => Err("unexpected reply".into()),
        }
    }

    async fn put(&self, vault: &str, path: &str, value: Vec<u8>) -> Result<Response, String> {
        match self.run(Cmd::Put(vault.into(), path.into(), value)).await? {
            Reply::Resp(r) => Ok(r),
            Reply::Bytes(_) => Err("unexpected reply".into()),
        }
    }

    async fn get(&self, vault: &str, path: &str) -> Result<Vec<u8>, String> {
        match self.run(Cmd::Get(vault.into(), path.into())).await? {
            Reply::Bytes(b) => Ok(b),
            Reply::Resp(_) => Err("unexpected reply".into()),
        }
    }

    async fn unlink(&self, a: NodeId, b: NodeId) -> Result<Response, String> {
        match self.run(Cmd::Unlink(a, b)).await? {
            Reply::Resp(r) => Ok(r),
            Reply::Bytes(_) => Err("unexpected reply".into()),
        }
    }

    /// Invites `other`, which then claims this node: one link, cross-signed.
    async fn link(
        &self,
        other: &NodeHandle,
    ) -> (Result<Response, String>, Result<Response, String>) {
        let invited = self
            .call(Request::IdentitiesInvite { node: other.id })
            .await;
        if invited.is_err() {
            return (invited, Err("Skipped: not invited".into()));
        }
        let claimed = other.call(Request::NodesClaim { node: self.id }).await;
        (invited, claimed)
    }

    async fn head(&self, vault: &str) -> Result<Option<String>, String> {
        match self
            .call(Request::VaultsLog {
                vault: vault.into(),
                depth: Some(1),
                commit: None,
            })
            .await?
        {
            Response::Log(l) => Ok(l.first().map(|c| c.oid.clone())),
            _ => Err("unexpected reply".into()),
        }
    }
}

async fn serve(node: Rc<Node>, cmd: Cmd) -> Outcome {
    let err = |e: keynode_agent::api::ApiError| format!("{:?}: {}", e.kind, e.message);
    match cmd {
        Cmd::Call(req) => node.call(req).await.map(Reply::Resp).map_err(err),
        Cmd::Put(v, p, value) => node
            .put_secret(&v, &p, value)
            .await
            .map(Reply::Resp)
            .map_err(err),
        Cmd::Get(v, p) => node.get_secret(&v, &p).await.map(Reply::Bytes).map_err(err),
        Cmd::Unlink(a, b) => node
            .gestalts()
            .unlink(&a.into(), &b.into())
            .await
            .map(|()| Reply::Resp(Response::Unit))
            .map_err(err),
    }
}

// ---- one seed -------------------------------------------------------------------

/// Which nodes were ever linked (a link attempted counts: under faults it may
/// have been made): a superset of every gestalt any node can have seen.
#[derive(Clone, Debug)]
struct EverLinked {
    parent: Vec<usize>,
}

impl EverLinked {
    fn new(n: usize) -> Self {
        EverLinked {
            parent: (0..n).collect(),
        }
    }

    fn root(&self, mut i: usize) -> usize {
        while self.parent[i] != i {
            i = self.parent[i];
        }
        i
    }

    fn link(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.root(a), self.root(b));
        self.parent[ra.max(rb)] = ra.min(rb);
    }

    /// Every node ever linked with `i`, `i` included.
    fn closure(&self, i: usize) -> Vec<usize> {
        let r = self.root(i);
        (0..self.parent.len())
            .filter(|&k| self.root(k) == r)
            .collect()
    }
}

/// Whether a vault is shared with a node, as far as acknowledged answers tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grant {
    No,
    Yes,
    /// A share or unshare failed: it may or may not have applied.
    Unknown,
}

/// What a run did and found.
#[derive(Debug, Default)]
struct Run {
    /// One line per operation: what it was and how it ended (error kinds only,
    /// the commit a write or pull left, the id a clone got).
    trace: Vec<String>,
    /// The ids a run made outside the workload: setup vaults and their first
    /// commits, then, at the end, a claim and every node's vaults, heads and
    /// notification ids.
    ids: Vec<String>,
    violations: Vec<String>,
    /// Nodes the nemesis restarted.
    restarts: usize,
}

fn kind(r: &Result<impl Sized, String>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e.split(':').next().unwrap_or("").to_string(),
    }
}

/// How a request ended, with the ids its answer carries (vault ids, commit
/// ids, claim ids).
fn outcome(r: &Result<Response, String>) -> String {
    match r {
        Ok(Response::Committed(Some(c))) => format!("ok {}", c.oid),
        Ok(Response::Vault(meta)) => format!("ok {}", meta.id),
        Ok(Response::Pulled { to, .. }) => format!("ok {to}"),
        Ok(Response::Claimed { claim_id, seq }) => format!("ok {claim_id} #{seq}"),
        other => kind(other),
    }
}

fn run_seed(seed: u64) -> Run {
    // Vault, permission and notification/claim ids from the seed too.
    keynode_core::sim::set_seed(Some(seed));
    let dir = tempfile::tempdir().expect("tempdir");
    let provider = dir.path().join("offline-provider");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    let min_latency = Duration::from_millis(rng.gen_range(0..5));
    let max_latency = min_latency + Duration::from_millis(rng.gen_range(1..50));
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(900))
        .tick_duration(Duration::from_millis(5))
        .min_message_latency(min_latency)
        .max_message_latency(max_latency)
        .epoch(std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .build();

    let mut handles = Vec::new();
    for i in 0..NODES {
        let name = format!("n{i}");
        let root = dir.path().join(&name);
        let key = Keypair::from_secret_bytes(rng.r#gen());
        let id = key.node_id();
        let cfg_paths = keynode_agent::NodePaths::new(&root);
        std::fs::create_dir_all(cfg_paths.root_key().parent().expect("keys dir")).expect("key dir");
        keystore::write_key_file(&cfg_paths.root_key(), &key, b"pw", KdfParams::DEFAULT)
            .expect("key file");
        let mut cfg = NodeConfig::new(&root, "pw");
        cfg.provider_dir = Some(provider.clone());
        cfg.agent_host = "0.0.0.0".into();
        cfg.agent_port = PORT;
        cfg.client_socket = false;
        // Not yet: with the start-up announcement on, two replays of a seed
        // diverge now and then (under investigation); the simulated network
        // never moves a node's address anyway.
        cfg.announce = false;
        cfg.transport = BoxTransport::new(TurmoilTransport);
        // Blocking work runs inline on the simulated host's thread, in order.
        cfg.executor = Arc::new(keynode_core::exec::Inline);
        let entropy_seed: u64 = rng.r#gen();
        let (tx, rx) = mpsc::unbounded_channel();
        // The inbox outlives the host's software: a restarted node takes up the
        // commands queued while it was down (those it was running are lost,
        // their callers see an error).
        let rx: Arc<tokio::sync::Mutex<Inbox>> = Arc::new(tokio::sync::Mutex::new(rx));
        let starts = Rc::new(std::cell::Cell::new(0u64));
        let host_name = name.clone();
        sim.host(name.as_str(), move || {
            let mut cfg = cfg.clone();
            // Each start draws other randomness, the same on every replay.
            cfg.net_context = NetContext {
                entropy: Arc::new(SeededEntropy::new(entropy_seed ^ starts.get())),
                clock: Arc::new(SimClock),
                discovery: None,
            };
            starts.set(starts.get() + 1);
            let rx = rx.clone();
            let span = tracing::info_span!("host", name = %host_name);
            tracing::Instrument::instrument(
                async move {
                    let mut rx = rx.lock_owned().await;
                    let node = Rc::new(Node::start(cfg).await?);
                    while let Some((cmd, reply)) = rx.recv().await {
                        let node = node.clone();
                        tokio::task::spawn_local(async move {
                            let _ = reply.send(serve(node, cmd).await);
                        });
                    }
                    Ok(())
                },
                span,
            )
        });
        handles.push(NodeHandle { id, name, tx });
    }

    // The workload and the fault schedule, all from the seed.
    let ops: Vec<(u32, usize, usize, u64)> = (0..OPS)
        .map(|_| {
            (
                rng.gen_range(0..100),
                rng.gen_range(0..NODES),
                rng.gen_range(1..NODES),
                rng.gen_range(0..400),
            )
        })
        .collect();
    let faults: Vec<(u64, u32, usize, usize, u64)> = (0..rng.gen_range(3..8))
        .map(|_| {
            (
                rng.gen_range(0..8_000),
                rng.gen_range(0..4),
                rng.gen_range(0..NODES),
                rng.gen_range(0..NODES),
                rng.gen_range(200..4_000),
            )
        })
        .collect();

    let result: Rc<std::cell::RefCell<Run>> = Rc::default();
    let out = result.clone();
    // Hosts the nemesis wants restarted; the loop below bounces them.
    let bounces: Rc<std::cell::RefCell<Vec<String>>> = Rc::default();
    let bounce = bounces.clone();
    let names: Vec<String> = handles.iter().map(|h| h.name.clone()).collect();
    sim.client("driver", async move {
        let n = &handles;
        let mut run = Run::default();
        // Setup: everyone knows and trusts everyone; each owns one vault.
        for a in n {
            for b in n {
                if a.id != b.id {
                    a.call(Request::NodesAdd {
                        node: b.id,
                        host: b.name.clone(),
                        port: PORT,
                    })
                    .await?;
                }
            }
        }
        for a in n {
            for b in n {
                if a.id != b.id {
                    a.call(Request::IdentitiesTrust {
                        gestalt: b.id.into(),
                    })
                    .await?;
                }
            }
        }
        // A two-node gestalt before the workload: n1 claims n0, and every
        // node discovers it.
        let mut ever = EverLinked::new(NODES);
        let mut links: Vec<(usize, usize)> = vec![(0, 1)];
        let (invited, claimed) = n[0].link(&n[1]).await;
        run.ids.push(format!(
            "link 0-1: invite {}, claim {}",
            kind(&invited),
            outcome(&claimed)
        ));
        invited?;
        claimed?;
        ever.link(0, 1);
        for a in &n[2..] {
            a.call(Request::IdentitiesDiscover {
                gestalt: n[0].id.into(),
            })
            .await?;
        }
        let mut writes: BTreeMap<(usize, String), Vec<u8>> = BTreeMap::new();
        for (i, a) in n.iter().enumerate() {
            let created = a
                .call(Request::VaultsCreate {
                    name: VaultName::new(format!("v{i}")).expect("vault name"),
                })
                .await;
            let written = a
                .put(&format!("v{i}"), "seed", format!("seed-{i}").into_bytes())
                .await;
            run.ids.push(format!(
                "create v{i}: {}, write: {}",
                outcome(&created),
                outcome(&written)
            ));
            created?;
            written?;
            writes.insert((i, "seed".into()), format!("seed-{i}").into_bytes());
        }

        // The nemesis: partitions and holds that heal on their own.
        let restarts = Rc::new(std::cell::Cell::new(0usize));
        let nemesis = tokio::task::spawn_local({
            let names = names.clone();
            let restarts = restarts.clone();
            async move {
                let mut faults = faults;
                faults.sort();
                let start = tokio::time::Instant::now();
                for (at, what, a, b, dur) in faults {
                    tokio::time::sleep_until(start + Duration::from_millis(at)).await;
                    let (a, b) = (&names[a], &names[b]);
                    if a == b {
                        // A minority: node a cut off from everyone.
                        for o in names.iter().filter(|o| *o != a) {
                            turmoil::partition(a.as_str(), o.as_str());
                        }
                        tokio::time::sleep(Duration::from_millis(dur)).await;
                        for o in names.iter().filter(|o| *o != a) {
                            turmoil::repair(a.as_str(), o.as_str());
                        }
                        continue;
                    }
                    match what {
                        3 => {
                            // A restart: the node's software stops where it
                            // is (no graceful stop) and starts again.
                            bounce.borrow_mut().push(a.clone());
                            let r = restarts.clone();
                            r.set(r.get() + 1);
                        }
                        0 => {
                            turmoil::partition(a.as_str(), b.as_str());
                            tokio::time::sleep(Duration::from_millis(dur)).await;
                            turmoil::repair(a.as_str(), b.as_str());
                        }
                        _ => {
                            turmoil::hold(a.as_str(), b.as_str());
                            tokio::time::sleep(Duration::from_millis(dur)).await;
                            turmoil::release(a.as_str(), b.as_str());
                        }
                    }
                }
            }
        });

        // The workload, one operation at a time.
        let mut grants = vec![vec![Grant::No; NODES]; NODES]; // [owner][to]
        let mut shared_to: Vec<Vec<usize>> = vec![Vec::new(); NODES]; // every share tried
        // Whom owner i may have granted: the gestalts of everyone it shared with.
        let reach = |ever: &EverLinked, targets: &[usize]| -> Vec<usize> {
            let mut out: Vec<usize> = targets.iter().flat_map(|&t| ever.closure(t)).collect();
            out.sort();
            out.dedup();
            out
        };
        let mut clones: BTreeMap<(usize, usize), String> = BTreeMap::new(); // (holder, owner)
        let mut notes: Vec<(usize, usize, String)> = Vec::new();
        let t0 = tokio::time::Instant::now();
        for (k, &(op, i, j, pause)) in ops.iter().enumerate() {
            // The other node: never i itself.
            let j = (i + j) % NODES;
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let vault = format!("v{i}");
            let line = match op {
                0..=24 => {
                    let path = format!("s{}", k % 5);
                    let value = format!("{seed}-{k}").into_bytes();
                    let r = n[i].put(&vault, &path, value.clone()).await;
                    if r.is_ok() {
                        writes.insert((i, path.clone()), value);
                    }
                    format!("write {i} {path}: {}", outcome(&r))
                }
                25..=39 if i != j => {
                    let r = n[i]
                        .call(Request::VaultsShare {
                            vault: vault.clone(),
                            to: n[j].id.into(),
                        })
                        .await;
                    shared_to[i].push(j);
                    grants[i][j] = if r.is_ok() {
                        Grant::Yes
                    } else {
                        Grant::Unknown
                    };
                    format!("share {i}->{j}: {}", kind(&r))
                }
                40..=47 if i != j => {
                    let r = n[i]
                        .call(Request::VaultsUnshare {
                            vault: vault.clone(),
                            to: n[j].id.into(),
                        })
                        .await;
                    // An unshare takes the grant from j's whole gestalt, as
                    // far as i knows it: whoever may be in it is in doubt.
                    for m in ever.closure(j) {
                        if grants[i][m] == Grant::Yes {
                            grants[i][m] = Grant::Unknown;
                        }
                    }
                    grants[i][j] = if r.is_ok() { Grant::No } else { Grant::Unknown };
                    format!("unshare {i}->{j}: {}", kind(&r))
                }
                48..=64 if i != j => {
                    // j clones (or pulls, once cloned) i's vault.
                    let (what, r) = match clones.get(&(j, i)) {
                        None => {
                            let r = n[j]
                                .call(Request::VaultsClone {
                                    vault: vault.clone(),
                                    node: n[i].id,
                                    follow: false,
                                })
                                .await;
                            if let Ok(Response::Vault(meta)) = &r {
                                clones.insert((j, i), meta.name.to_string());
                            }
                            ("clone", r)
                        }
                        Some(local) => (
                            "pull",
                            n[j].call(Request::VaultsPull {
                                vault: local.clone(),
                                node: None,
                                pull_vault: None,
                            })
                            .await,
                        ),
                    };
                    if r.is_ok() && !reach(&ever, &shared_to[i]).contains(&j) {
                        run.violations.push(format!(
                            "a-no-data-without-permission: op {k}: {what} of v{i} by n{j} \
                             succeeded, but n{i} never shared with n{j}'s gestalt"
                        ));
                    }
                    format!("{what} {j}<-{i}: {}", outcome(&r))
                }
                65..=79 if i != j => {
                    let message = format!("note-{seed}-{k}");
                    let r = n[i]
                        .call(Request::NotificationsSend {
                            node: n[j].id,
                            message: message.clone(),
                        })
                        .await;
                    if r.is_ok() {
                        notes.push((i, j, message));
                    }
                    format!("notify {i}->{j}: {}", kind(&r))
                }
                80..=87 if i != j => {
                    // A new link during the workload (under faults).
                    let (invited, claimed) = n[i].link(&n[j]).await;
                    if !links.contains(&(i, j)) && !links.contains(&(j, i)) {
                        links.push((i, j));
                    }
                    ever.link(i, j);
                    format!(
                        "link {i}-{j}: invite {}, claim {}",
                        kind(&invited),
                        outcome(&claimed)
                    )
                }
                88..=92 => {
                    // n_i forgets one link: its view of that gestalt splits.
                    let (a, b) = links[j % links.len()];
                    let r = n[i].unlink(n[a].id, n[b].id).await;
                    format!("unlink {a}-{b} at {i}: {}", kind(&r))
                }
                93..=99 if i != j => {
                    let r = n[i]
                        .call(Request::IdentitiesDiscover {
                            gestalt: n[j].id.into(),
                        })
                        .await;
                    format!("discover {i}->{j}: {}", kind(&r))
                }
                _ => format!("skip {i}"),
            };
            // Simulated time of completion: the same on every replay.
            run.trace
                .push(format!("{:>6} ms  {line}", t0.elapsed().as_millis()));
        }
        let _ = nemesis.await;
        run.restarts = restarts.get();
        // Heal everything, then let the outbox retry.
        for a in &names {
            for b in &names {
                if a != b {
                    turmoil::repair(a.as_str(), b.as_str());
                    turmoil::release(a.as_str(), b.as_str());
                }
            }
        }
        tokio::time::sleep(SETTLE).await;

        // b: every acknowledged write is present on its owner.
        for ((i, path), value) in &writes {
            let got = n[*i].get(&format!("v{i}"), path).await;
            if got.as_ref() != Ok(value) {
                run.violations.push(format!(
                    "b-acknowledged-write-present: v{i}/{path}: expected {:?}, got {got:?}",
                    String::from_utf8_lossy(value)
                ));
            }
        }
        // A clone whose answer a restart lost may still have been made: it
        // is in the holder's list under the owner's vault name.
        for (m, holder) in n.iter().enumerate() {
            if let Ok(Response::Vaults(vaults)) = holder.call(Request::VaultsList).await {
                for v in vaults {
                    for i in (0..NODES).filter(|&i| i != m) {
                        if v.name.as_str() == format!("v{i}") {
                            clones.entry((m, i)).or_insert_with(|| v.name.to_string());
                        }
                    }
                }
            }
        }
        // Views converge: every node discovers every other, so each owner
        // knows every link that was made.
        for (x, a) in n.iter().enumerate() {
            for (y, b) in n.iter().enumerate() {
                if x != y {
                    let r = a
                        .call(Request::IdentitiesDiscover {
                            gestalt: b.id.into(),
                        })
                        .await;
                    if let Err(e) = r {
                        run.ids
                            .push(format!("discover {x}->{y} after healing: {e}"));
                    }
                }
            }
        }
        // a, c, e, f: who holds a vault's grant is a union of whole gestalts,
        // came from shares, keeps every share that stands; every member can
        // pull it and converges, every other node is refused.
        for (i, owner) in n.iter().enumerate() {
            let vault = format!("v{i}");
            let permitted: Vec<usize> = match owner
                .call(Request::VaultsPermissions {
                    vault: vault.clone(),
                })
                .await
            {
                Ok(Response::VaultPermissions(list)) => {
                    let mut p: Vec<usize> = list
                        .iter()
                        .filter(|g| g.actions.iter().any(|a| a == "pull"))
                        .flat_map(|g| g.nodes.iter())
                        .filter_map(|id| n.iter().position(|h| h.id == *id))
                        .collect();
                    p.sort();
                    p.dedup();
                    p
                }
                other => {
                    run.violations.push(format!(
                        "vault-permissions: n{i} could not list v{i}'s: {:?}",
                        other.map(|_| ())
                    ));
                    continue;
                }
            };
            run.ids.push(format!("v{i} permitted: {permitted:?}"));
            for &m in &permitted {
                if let Ok(Response::Gestalt(g)) = owner
                    .call(Request::IdentitiesGet {
                        gestalt: n[m].id.into(),
                    })
                    .await
                {
                    for id in &g.nodes {
                        let k = n.iter().position(|h| h.id == *id);
                        if k.is_some_and(|k| !permitted.contains(&k)) {
                            run.violations.push(format!(
                                "e-grant-covers-the-gestalt: v{i} is granted to n{m} but not \
                                 to n{} of its gestalt",
                                k.unwrap_or(usize::MAX)
                            ));
                        }
                    }
                }
            }
            let allowed = reach(&ever, &shared_to[i]);
            for &m in permitted.iter().filter(|&&m| m != i) {
                if !allowed.contains(&m) {
                    run.violations.push(format!(
                        "a-no-data-without-permission: v{i} is granted to n{m}, which no \
                         share of n{i} reached"
                    ));
                }
            }
            for (j, grant) in grants[i].iter().enumerate() {
                if *grant == Grant::Yes && !permitted.contains(&j) {
                    run.violations.push(format!(
                        "f-share-kept: n{i} shared v{i} with n{j} and never took it back, \
                         yet n{j} holds no grant"
                    ));
                }
            }
            for m in (0..NODES).filter(|&m| m != i) {
                // Clone (or pull, once cloned), retried while the network
                // still settles.
                let mut attempt = 0;
                let r = loop {
                    let r = match clones.get(&(m, i)) {
                        None => {
                            let r = n[m]
                                .call(Request::VaultsClone {
                                    vault: vault.clone(),
                                    node: owner.id,
                                    follow: false,
                                })
                                .await;
                            if let Ok(Response::Vault(meta)) = &r {
                                clones.insert((m, i), meta.name.to_string());
                            }
                            r
                        }
                        Some(local) => {
                            n[m].call(Request::VaultsPull {
                                vault: local.clone(),
                                node: None,
                                pull_vault: None,
                            })
                            .await
                        }
                    };
                    let transient = r.as_ref().is_err_and(|e| {
                        ["Unreachable", "Temporary", "Unavailable"]
                            .iter()
                            .any(|k| e.starts_with(k))
                    });
                    let settled = if permitted.contains(&m) {
                        r.is_ok()
                    } else {
                        !transient
                    };
                    attempt += 1;
                    if settled || attempt == 10 {
                        break r;
                    }
                    tokio::time::sleep(Duration::from_secs(3)).await;
                };
                if permitted.contains(&m) {
                    let mine = match clones.get(&(m, i)) {
                        Some(local) => n[m].head(local).await,
                        None => Ok(None),
                    };
                    let theirs = owner.head(&vault).await;
                    if r.is_err() || mine != theirs {
                        run.violations.push(format!(
                            "c-permitted-clone-converges: n{m}'s clone of v{i}: {r:?}, \
                             head {mine:?} vs owner's {theirs:?}",
                            r = r.map(|_| ())
                        ));
                    }
                } else if r.is_ok() {
                    run.violations.push(format!(
                        "a-no-data-without-permission: after healing n{m} got v{i} without \
                         a grant"
                    ));
                }
            }
        }
        // d: no queued notification is lost.
        for (i, j, message) in &notes {
            let inbox = n[*j]
                .call(Request::NotificationsInboxRead {
                    unread: false,
                    limit: None,
                    newest_first: false,
                })
                .await;
            let found = matches!(&inbox, Ok(Response::Notifications(list))
                if list.iter().any(|v| v.from == n[*i].id && v.data.contains(message.as_str())));
            if !found {
                let outbox = match n[*i].call(Request::NotificationsOutboxRead).await {
                    Ok(Response::Notifications(list)) => list
                        .iter()
                        .filter(|v| v.data.contains(message.as_str()))
                        .map(|v| {
                            format!(
                                "queued, {:?} attempts, next {:?}",
                                v.attempts, v.next_attempt_ms
                            )
                        })
                        .collect::<Vec<_>>(),
                    other => vec![format!("{:?}", other.map(|_| ()))],
                };
                run.violations.push(format!(
                    "d-notification-delivered: {message} from n{i} not in n{j}'s inbox \
                     (sender's outbox: {outbox:?})"
                ));
            }
        }
        // Ids made at the end: every node's vaults, heads and notifications.
        for (i, a) in n.iter().enumerate() {
            if let Ok(Response::Vaults(vaults)) = a.call(Request::VaultsList).await {
                for v in vaults {
                    let head = a.head(v.name.as_str()).await;
                    run.ids
                        .push(format!("n{i} vault {} {}: {head:?}", v.name, v.id));
                }
            }
            let inbox = a
                .call(Request::NotificationsInboxRead {
                    unread: false,
                    limit: None,
                    newest_first: false,
                })
                .await;
            let outbox = a.call(Request::NotificationsOutboxRead).await;
            for (which, r) in [("inbox", inbox), ("outbox", outbox)] {
                if let Ok(Response::Notifications(list)) = r {
                    let ids: Vec<String> = list
                        .iter()
                        .map(|v| format!("{} {}@{}", v.id, v.kind, v.sent_ms))
                        .collect();
                    run.ids.push(format!("n{i} {which}: {}", ids.join(", ")));
                }
            }
        }
        *out.borrow_mut() = run;
        Ok(())
    });
    let ran = loop {
        match sim.step() {
            Ok(true) => break Ok(()),
            Ok(false) => {
                for host in bounces.borrow_mut().drain(..) {
                    sim.bounce(host.as_str());
                }
            }
            Err(e) => break Err(e),
        }
    };
    // The driver's closure holds the other handle on the result.
    drop(sim);
    if let Err(e) = ran {
        result
            .borrow_mut()
            .violations
            .push(format!("the simulation failed: {e}"));
    }
    keynode_core::sim::set_seed(None);
    Rc::try_unwrap(result)
        .map(|c| c.into_inner())
        .unwrap_or_default()
}

fn seeds() -> Vec<u64> {
    // `SIM_LOG=keynode_net=debug` (an EnvFilter) prints the nodes' logs, each
    // line under its simulated host's span.
    if let Ok(filter) = std::env::var("SIM_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    if let Some(s) = std::env::var("SIM_SEED").ok().filter(|s| !s.is_empty()) {
        return vec![s.parse().expect("SIM_SEED must be a number")];
    }
    let count = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    (1..=count).collect()
}

/// A seed replays exactly: the same operations end the same way at the same
/// simulated instants, making the same vault ids, commits, claim ids and
/// notification ids.
#[test]
fn a_seed_replays_exactly() {
    let seed = 7;
    let (a, b) = (run_seed(seed), run_seed(seed));
    assert_eq!(a.trace.len(), OPS);
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.ids, b.ids);
    assert_eq!(a.violations, b.violations);
    // The ids are really there: commits on writes, a claim, notifications.
    assert!(
        a.trace
            .iter()
            .any(|l| l.contains("write") && l.contains(": ok "))
    );
    assert!(
        a.ids
            .iter()
            .any(|l| l.contains("link 0-1: invite ok, claim ok ")),
        "{:#?}",
        a.ids
    );
    assert!(
        a.ids
            .iter()
            .any(|l| l.contains("inbox: ") && l.contains('@'))
    );
    // A different seed makes different ids.
    let c = run_seed(seed + 1);
    assert_ne!(a.ids[0], c.ids[0]);
}

#[test]
fn invariants_hold_across_seeds() {
    let mut failed = Vec::new();
    let mut restarts = 0;
    for seed in seeds() {
        let t = std::time::Instant::now();
        let run = run_seed(seed);
        let ops = run.trace.len();
        restarts += run.restarts;
        eprintln!(
            "seed {seed}: {ops} ops, {} violations, {:?}",
            run.violations.len(),
            t.elapsed()
        );
        let replaying = std::env::var_os("SIM_SEED").is_some();
        if !run.violations.is_empty() || ops != OPS || replaying {
            for v in &run.violations {
                eprintln!("  {v}");
            }
            for line in &run.trace {
                eprintln!("    {line}");
            }
            for line in &run.ids {
                eprintln!("    {line}");
            }
            if !run.violations.is_empty() || ops != OPS {
                eprintln!("seed {seed} FAILED; replay: SIM_SEED={seed} cargo test -p keynode-sim");
                failed.push(seed);
            }
        }
    }
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
    if seeds().len() > 1 {
        assert!(restarts > 0, "no seed restarted a node");
    }
}
