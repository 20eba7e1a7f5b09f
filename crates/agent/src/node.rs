//! Starting and stopping a node.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use keynode_acl::{AclManager, AclStore};
use keynode_core::datakey::{self, DataKey};
use keynode_core::keystore::{self, KdfParams, KeystoreError};
use keynode_core::{Keypair, NodeId};
use keynode_gestalt::{Discovery, GestaltGraph, GestaltManager, OfflineProvider, Sigchain};
use keynode_net::{
    AddressBook, BoxTransport, NetConfig, NetContext, Network, NetworkManager, PeerAddress,
};
use keynode_notify::{ManagerConfig, NotificationStore, NotificationsManager, StoreConfig};
use keynode_vaults::{VaultManager, VaultStore};

use crate::notifications::NetDeliver;

use crate::gestalts::{Gestalts, OFFLINE_PROVIDER, REDISCOVER_INTERVAL};
use crate::peer::PeerService;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zeroize::Zeroizing;

use crate::AgentNetwork;
use crate::api::{AgentStatus, ApiError, Request, Response};
use crate::paths::NodePaths;
use crate::server::{self, Ctx};
use crate::status::{self, AgentLock, LockError};

/// Largest the LMDB map may grow, in bytes (a sparse maximum, not an allocation).
pub const LMDB_MAP_SIZE: usize = 16 * 1024 * 1024 * 1024;
/// Named LMDB databases the environment may hold.
pub const LMDB_MAX_DBS: u32 = 64;
/// Longest a graceful stop waits for in-flight requests.
pub const STOP_GRACE: Duration = Duration::from_secs(30);
/// Longest a Unix socket path may be, in bytes (`sun_path` less the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// How to start a node.
#[derive(Clone)]
pub struct NodeConfig {
    /// The node path.
    pub paths: NodePaths,
    /// The password that seals the root key.
    pub password: Zeroizing<Vec<u8>>,
    /// Argon2id parameters for a new key file.
    pub kdf: KdfParams,
    /// Host to listen on for peers.
    pub agent_host: String,
    /// Port to listen on for peers (0 picks one).
    pub agent_port: u16,
    /// Nodes to know from the start.
    pub seed_nodes: Vec<SeedNode>,
    /// Where the offline identity provider keeps published claims (shared by
    /// the nodes of one machine). `None`: `$KEYNODE_OFFLINE_PROVIDER_DIR`, else
    /// `$XDG_DATA_HOME/keynode-offline-provider`, else
    /// `~/.local/share/keynode-offline-provider`.
    pub provider_dir: Option<PathBuf>,
    /// How the node reaches peers (TCP by default; a simulator's sockets in
    /// deterministic simulations).
    pub transport: BoxTransport,
    /// Clock and entropy of the network layer; the clock also times the
    /// notification outbox, dates notification and claim ids and vault
    /// creation and commit times (system ones by default).
    pub net_context: NetContext,
    /// Whether to serve clients on the Unix socket (default `true`). Without
    /// it, drive the node in process with [`Node::call`].
    pub client_socket: bool,
}

/// Where the offline identity provider keeps its claims when not configured.
pub fn default_provider_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("KEYNODE_OFFLINE_PROVIDER_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/share")
        });
    data.join("keynode-offline-provider")
}

/// A node given at start: its id and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedNode {
    /// The node.
    pub node: NodeId,
    /// Its host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Its port.
    pub port: u16,
}

/// A `--seed-nodes` list is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    /// An entry is not `ID@host:port`.
    #[error("expected ID@host:port, got {0:?}")]
    Format(String),
    /// The id part is not a node id.
    #[error("{0}")]
    Id(#[from] keynode_core::IdError),
}

/// Parses `ID@host:port;ID@host:port` (IPv6 hosts in brackets). Empty entries
/// are skipped.
pub fn parse_seed_nodes(s: &str) -> Result<Vec<SeedNode>, SeedError> {
    s.split(';')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let bad = || SeedError::Format(entry.to_owned());
            let (id, addr) = entry.split_once('@').ok_or_else(bad)?;
            let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            if host.is_empty() {
                return Err(bad());
            }
            Ok(SeedNode {
                node: id.parse()?,
                host: host.to_owned(),
                port: port.parse().map_err(|_| bad())?,
            })
        })
        .collect()
}

impl NodeConfig {
    /// A configuration with defaults for everything but the node path and password.
    pub fn new(node_path: impl Into<PathBuf>, password: impl AsRef<[u8]>) -> Self {
        Self {
            paths: NodePaths::new(node_path),
            password: Zeroizing::new(password.as_ref().to_vec()),
            kdf: KdfParams::DEFAULT,
            agent_host: "127.0.0.1".into(),
            agent_port: 0,
            seed_nodes: Vec::new(),
            provider_dir: None,
            transport: BoxTransport::default(),
            net_context: NetContext::default(),
            client_socket: true,
        }
    }
}

/// A node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another agent runs on this node path.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// The password does not open the root key.
    #[error("wrong password for the node at {0}")]
    WrongPassword(PathBuf),
    /// The key file is unreadable.
    #[error("cannot open the root key")]
    Key(#[source] KeystoreError),
    /// The data key file is unreadable or does not open with the root key
    /// (altered, or from another node).
    #[error("cannot open the data key {0}")]
    DataKey(PathBuf, #[source] KeystoreError),
    /// The node path has a data key but no root key to open it.
    #[error(
        "node path {0} has a data key but no root key (keys/root.key); restore the root key file"
    )]
    RootKeyMissing(PathBuf),
    /// The node path holds state written by an earlier keynode version, which
    /// kept it unencrypted and has no data key. It is left untouched.
    #[error(
        "node path {0} holds unencrypted state from an earlier keynode version; it cannot be \
         opened by this version — move it aside and start a new node (or re-create its vaults)"
    )]
    EarlierVersion(PathBuf),
    /// The node path cannot hold a Unix socket path.
    #[error("node path {0} is too long for a unix socket; choose a shorter --node-path")]
    PathTooLong(PathBuf),
    /// The state database failed to open.
    #[error("cannot open the node state")]
    Storage(#[source] keynode_core::store::heed3::Error),
    /// The state fails authentication under the data key: the data key was
    /// replaced (by another that the root key opens) or the state altered.
    #[error(
        "the node state in {0} does not decrypt with this node's data key (the data key was \
         replaced, or the state altered)"
    )]
    StateKey(PathBuf),
    /// Vault storage failed to open.
    #[error("cannot open vault storage")]
    Vaults(#[source] keynode_vaults::VaultError),
    /// Gestalt or permission state failed to open.
    #[error("cannot open gestalt state: {0}")]
    Gestalt(String),
    /// Notification state failed to open.
    #[error("cannot open the notification store: {0}")]
    Notifications(String),
    /// The audit log failed to open.
    #[error("cannot open the audit log: {0}")]
    Audit(String),
    /// The address book failed to open.
    #[error("cannot open the address book")]
    Book(#[source] keynode_net::BookError),
    /// The network could not start (e.g. the port is taken).
    #[error("cannot start the network")]
    Network(#[source] keynode_net::NetError),
    /// `--agent-host` does not resolve.
    #[error("cannot resolve agent host {0:?}")]
    Host(String),
    /// File system trouble.
    #[error("i/o error in {1}")]
    Io(#[source] std::io::Error, String),
}

/// What a start measured.
#[derive(Debug, Clone, Copy)]
pub struct StartTimings {
    /// Time spent deriving the key from the password.
    pub key_derivation: Duration,
    /// Total time from `start` to ready.
    pub total: Duration,
    /// Whether this start created the node's identity.
    pub created: bool,
}

/// A running node. Dropping it does not stop it; call [`Node::stop`].
pub struct Node {
    node_id: NodeId,
    paths: NodePaths,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    status: Arc<Mutex<AgentStatus>>,
    timings: StartTimings,
    _lock: AgentLock,
    vaults: Addr<VaultManager>,
    net: AgentNetwork,
    network: Addr<NetworkManager<BoxTransport>>,
    ctx: Arc<Ctx>,
    gestalts: Arc<Gestalts>,
    notifications: Addr<NotificationsManager>,
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |e| StartError::Io(e, what.to_owned())
}

fn private_dir(path: &Path) -> Result<(), StartError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_err("creating the node path"))
}

/// Loads the root key, creating it (and the node's identity) on first start.
fn load_or_create_key(
    paths: &NodePaths,
    password: &[u8],
    kdf: KdfParams,
) -> Result<(Keypair, bool), StartError> {
    let path = paths.root_key();
    if path.exists() {
        return match keystore::read_key_file(&path, password) {
            Ok(k) => Ok((k, false)),
            Err(KeystoreError::WrongPassword) => Err(StartError::WrongPassword(paths.root.clone())),
            Err(e) => Err(StartError::Key(e)),
        };
    }
    private_dir(&paths.root.join("keys"))?;
    let key = Keypair::generate();
    keystore::write_key_file(&path, &key, password, kdf).map_err(StartError::Key)?;
    Ok((key, true))
}

/// Whether `dir` exists and holds anything.
fn non_empty(dir: &Path) -> Result<bool, StartError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StartError::Io(e, format!("reading {}", dir.display()))),
    }
}

fn exists(path: &Path) -> Result<bool, StartError> {
    path.try_exists()
        .map_err(|e| StartError::Io(e, format!("reading {}", path.display())))
}

/// Refuses a node path this version must not open, reading only: state or
/// vaults without a data key were written by an earlier, unencrypted version
/// (this version writes the data key before any state), and a data key
/// without its root key cannot be opened.
fn check_layout(paths: &NodePaths) -> Result<(), StartError> {
    if exists(&paths.data_key())? {
        if !exists(&paths.root_key())? {
            return Err(StartError::RootKeyMissing(paths.root.clone()));
        }
        return Ok(());
    }
    if non_empty(&paths.state())? || non_empty(&paths.vaults())? {
        return Err(StartError::EarlierVersion(paths.root.clone()));
    }
    Ok(())
}

/// Loads the data key sealed by `root`, creating it on a node that holds no
/// state yet (a new node, or one whose first start stopped before writing it).
fn load_or_create_data_key(paths: &NodePaths, root: &Keypair) -> Result<DataKey, StartError> {
    let path = paths.data_key();
    if exists(&path)? {
        return datakey::read_file(&path, root).map_err(|e| StartError::DataKey(path, e));
    }
    check_layout(paths)?;
    let key = DataKey::generate();
    datakey::write_file(&path, &key, root).map_err(|e| StartError::DataKey(path, e))?;
    Ok(key)
}

/// Whether LMDB failed to authenticate a page somewhere in `e`'s causes.
fn is_crypto_fail(e: &StartError) -> bool {
    use keynode_core::store::heed3::{Error, MdbError};
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(Error::Mdb(MdbError::CryptoFail)) = c.downcast_ref::<Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Opens the node's one environment, encrypted under `key`.
fn open_env(dir: &Path, key: &DataKey) -> Result<keynode_core::store::Env, StartError> {
    private_dir(dir)?;
    // The agent lock (held by the caller) guarantees one node per node path, and
    // each node opens its environment exactly once (see `open_env`'s safety note).
    keynode_core::store::open_env(dir, key, LMDB_MAP_SIZE, LMDB_MAX_DBS)
        .map_err(StartError::Storage)
}

impl Node {
    /// Starts a node: takes the lock, opens (or creates) its key and state, starts
    /// its actors and serves clients on its socket. Must run inside an actix
    /// `System`; several nodes may run in one process, each on its own node path.
    pub async fn start(config: NodeConfig) -> Result<Node, StartError> {
        let t0 = Instant::now();
        let paths = config.paths.clone();
        if paths.socket().as_os_str().len() > MAX_SOCKET_PATH {
            return Err(StartError::PathTooLong(paths.root.clone()));
        }
        // Before anything is written (the lock file included): a node path of
        // an earlier version is refused untouched.
        check_layout(&paths)?;
        private_dir(&paths.root)?;
        let lock = AgentLock::acquire(&paths.lock())?;

        let (key, data_key, created, kdf_time) = {
            let paths = paths.clone();
            let password = config.password.clone();
            let kdf = config.kdf;
            keynode_core::sim::blocking(move || {
                let t = Instant::now();
                let (key, created) = load_or_create_key(&paths, &password, kdf)?;
                let kdf_time = t.elapsed();
                let data_key = load_or_create_data_key(&paths, &key)?;
                Ok::<_, StartError>((key, data_key, created, kdf_time))
            })
            .await
            .map_err(|e| StartError::Io(std::io::Error::other(e), "loading the key".into()))??
        };
        let node_id = key.node_id();
        let key = Arc::new(key);

        let (store, book, acl, graph, sigchain, discovery, inbox, audit) = {
            let paths = paths.clone();
            let seeds = config.seed_nodes.clone();
            let (audit_key, audit_clock) = (key.clone(), config.net_context.clock.clone());
            let clock = config.net_context.clock.clone();
            let state = paths.state();
            keynode_core::sim::blocking(move || {
                let env = open_env(&paths.state(), &data_key)?;
                private_dir(&paths.vaults())?;
                let store = VaultStore::open(&paths.vaults(), env.clone(), node_id, &data_key)
                    .map_err(StartError::Vaults)?
                    .with_clock(clock);
                let book = AddressBook::open(env.clone()).map_err(StartError::Book)?;
                for seed in seeds {
                    book.add(seed.node, PeerAddress::new(seed.host, seed.port))
                        .map_err(StartError::Book)?;
                }
                let g = |e: &dyn std::fmt::Display| StartError::Gestalt(e.to_string());
                let acl = AclStore::open(env.clone()).map_err(|e| g(&e))?;
                let graph = GestaltGraph::open(env.clone()).map_err(|e| g(&e))?;
                let sigchain = Sigchain::open(env.clone(), node_id).map_err(|e| g(&e))?;
                let discovery = Discovery::open(env.clone()).map_err(|e| g(&e))?;
                let audit = keynode_audit::AuditStore::open(env.clone(), audit_key, audit_clock)
                    .map_err(|e| StartError::Audit(e.to_string()))?;
                let inbox = NotificationStore::open(env, StoreConfig::default())
                    .map_err(|e| StartError::Notifications(e.to_string()))?;
                Ok::<_, StartError>((store, book, acl, graph, sigchain, discovery, inbox, audit))
            })
            .await
            .map_err(|e| StartError::Io(std::io::Error::other(e), "opening state".into()))?
            .map_err(|e| {
                if is_crypto_fail(&e) {
                    StartError::StateKey(state)
                } else {
                    e
                }
            })?
        };
        let vaults = VaultManager::new(Arc::new(store)).start();
        let graph = Arc::new(graph);
        let provider_id = keynode_core::ProviderId::new(OFFLINE_PROVIDER)
            .map_err(|e| StartError::Gestalt(e.to_string()))?;
        let provider_dir = config
            .provider_dir
            .clone()
            .unwrap_or_else(default_provider_dir);
        let gestalts = Arc::new(
            Gestalts::new(
                key.clone(),
                graph.clone(),
                GestaltManager::new(graph).start(),
                AclManager::new(Arc::new(acl)).start(),
                Arc::new(sigchain),
                Arc::new(discovery),
                OfflineProvider::new(provider_id, provider_dir),
            )
            .with_clock(config.net_context.clock.clone()),
        );
        let audit = keynode_audit::AuditManager::new(Arc::new(audit)).start();
        gestalts.set_audit(audit.clone());
        gestalts
            .reconcile()
            .await
            .map_err(|e| StartError::Gestalt(e.message))?;

        let listen = tokio::net::lookup_host((config.agent_host.as_str(), config.agent_port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| StartError::Host(config.agent_host.clone()))?;
        let net_config = NetConfig {
            listen,
            ..NetConfig::default()
        };
        let deliver = NetDeliver::default();
        let notifications = NotificationsManager::new(
            Arc::new(inbox),
            key.clone(),
            config.net_context.clock.clone(),
            Arc::new(deliver.clone()),
            ManagerConfig::default(),
        )
        .start();
        let service = Arc::new(PeerService {
            gestalts: Arc::downgrade(&gestalts),
            notifications: notifications.downgrade(),
            vaults: vaults.downgrade(),
        });
        let net = Network::start_with(
            key.clone(),
            net_config,
            config.transport.clone(),
            book,
            service,
            config.net_context.clone(),
        )
        .await
        .map_err(StartError::Network)?;
        gestalts.set_network(net.clone());
        deliver.set_network(net.clone());
        let network = NetworkManager::new(net.clone()).start();

        let socket = paths.socket();
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StartError::Io(e, "removing a stale socket".into())),
        }
        let listener = if config.client_socket {
            let listener =
                UnixListener::bind(&socket).map_err(io_err("binding the client socket"))?;
            std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
                .map_err(io_err("securing the client socket"))?;
            Some(listener)
        } else {
            None
        };

        let status = Arc::new(Mutex::new(AgentStatus {
            status: "live".into(),
            node_id,
            agent_host: config.agent_host.clone(),
            agent_port: net.local_addr().port(),
            pid: std::process::id(),
        }));
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let ctx = Arc::new(Ctx {
            gestalts: gestalts.clone(),
            notifications: notifications.clone(),
            vaults: vaults.clone(),
            network: network.clone(),
            audit: audit.clone(),
            rekey: crate::password::Rekey::new(&paths, node_id),
            status: status.clone(),
            shutdown: shutdown.clone(),
        });
        if let Some(listener) = listener {
            tracker.spawn(server::serve(
                listener,
                ctx.clone(),
                tracker.clone(),
                shutdown.clone(),
            ));
        }
        {
            // A connection from or to a peer retries what is queued for it at once.
            let (mut events, notifications, shutdown) = (
                net.connection_events(),
                notifications.clone(),
                shutdown.clone(),
            );
            tracker.spawn(async move {
                loop {
                    let node = tokio::select! {
                        _ = shutdown.cancelled() => break,
                        e = events.recv() => match e {
                            Ok(node) => node,
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(_) => break,
                        },
                    };
                    notifications.do_send(keynode_notify::messages::PeerSeen { node });
                }
            });
        }
        {
            let (gestalts, shutdown) = (gestalts.clone(), shutdown.clone());
            tracker.spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = gestalts.rediscover_loop(REDISCOVER_INTERVAL) => {}
                }
            });
        }
        let snapshot = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        status::write_status(&paths.status(), &snapshot)
            .map_err(io_err("writing the status file"))?;
        let timings = StartTimings {
            key_derivation: kdf_time,
            total: t0.elapsed(),
            created,
        };
        tracing::info!(%node_id, ?timings, path = %paths.root.display(), "node is live");
        Ok(Node {
            node_id,
            paths,
            shutdown,
            tracker,
            status,
            timings,
            _lock: lock,
            vaults,
            net,
            network,
            ctx,
            gestalts,
            notifications,
        })
    }

    /// Serves one unary request in process, exactly as the client socket would
    /// (streaming requests are refused: use [`Node::put_secret`] and
    /// [`Node::get_secret`]).
    pub async fn call(&self, request: Request) -> Result<Response, ApiError> {
        server::call(&self.ctx, request).await
    }

    /// `secrets write` in process: puts `value` at `path` in `vault` (by name or
    /// id), overwriting, in one commit.
    pub async fn put_secret(
        &self,
        vault: &str,
        path: &str,
        value: Vec<u8>,
    ) -> Result<Response, ApiError> {
        server::put_secret(&self.ctx, vault, path, value).await
    }

    /// `secrets get` in process: the content of `path` at `vault`'s head.
    pub async fn get_secret(&self, vault: &str, path: &str) -> Result<Vec<u8>, ApiError> {
        server::get_secret(&self.ctx, vault, path).await
    }

    /// The node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The node's paths.
    pub fn paths(&self) -> &NodePaths {
        &self.paths
    }

    /// The client socket.
    pub fn socket_path(&self) -> PathBuf {
        self.paths.socket()
    }

    /// What the start measured.
    pub fn timings(&self) -> StartTimings {
        self.timings
    }

    /// The vault storage actor.
    pub fn vaults(&self) -> &Addr<VaultManager> {
        &self.vaults
    }

    /// The network handle (peers, connections, streams).
    pub fn network(&self) -> &AgentNetwork {
        &self.net
    }

    /// The network actor.
    pub fn network_actor(&self) -> &Addr<NetworkManager<BoxTransport>> {
        &self.network
    }

    /// Gestalts and permissions: the graph and ACL actors, claims, discovery.
    pub fn gestalts(&self) -> &Arc<Gestalts> {
        &self.gestalts
    }

    /// The notifications actor.
    pub fn notifications(&self) -> &Addr<NotificationsManager> {
        &self.notifications
    }

    /// Where the node listens for peers.
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        self.net.local_addr()
    }

    /// Resolves when a stop was requested (by `agent stop` or [`Node::request_stop`]).
    pub async fn stop_requested(&self) {
        self.shutdown.cancelled().await
    }

    /// Asks the node to stop; [`Node::stop`] does the stopping.
    pub fn request_stop(&self) {
        self.shutdown.cancel();
    }

    /// Stops gracefully: no new clients; in-flight requests finish (each mutation
    /// is atomic, so one cut short by the grace period leaves the old version);
    /// then the status file says `stopped` and the lock is released.
    pub async fn stop(self) {
        self.shutdown.cancel();
        {
            let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
            s.status = "stopping".into();
        }
        self.tracker.close();
        if tokio::time::timeout(STOP_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("in-flight requests did not finish within the grace period");
        }
        self.net.shutdown().await;
        let _ = std::fs::remove_file(self.paths.socket());
        let mut snapshot = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        snapshot.status = "stopped".into();
        if let Err(e) = status::write_status(&self.paths.status(), &snapshot) {
            tracing::warn!(error = %e, "cannot write the status file");
        }
        tracing::info!(node_id = %self.node_id, "node stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_nodes_parse() {
        let id = Keypair::generate().node_id();
        let list = format!("{id}@127.0.0.1:1314; {id}@[::1]:9 ;;{id}@example.org:80");
        let seeds = parse_seed_nodes(&list).unwrap();
        assert_eq!(seeds.len(), 3);
        assert_eq!(seeds[1].host, "::1");
        assert_eq!(seeds[2].port, 80);
        assert!(parse_seed_nodes("").unwrap().is_empty());
        for bad in [
            "x@h:1",
            &format!("{id}@h"),
            &format!("{id}h:1"),
            &format!("{id}@:1"),
            &format!("{id}@h:99999"),
        ] {
            assert!(parse_seed_nodes(bad).is_err(), "{bad}");
        }
    }
}
