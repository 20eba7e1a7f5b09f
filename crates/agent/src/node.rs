//! Starting and stopping a node.

use crate::errors::Ask;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use keynode_acl::{AclManager, AclStore};
use keynode_core::{NodeId, SecretPath};
use keynode_gestalt::{Discovery, GestaltGraph, GestaltManager, OfflineProvider, Sigchain};
use keynode_net::{AddressBook, BoxTransport, NetConfig, Network, NetworkManager, PeerAddress};
use keynode_notify::{ManagerConfig, NotificationStore, NotificationsManager, StoreConfig};
use keynode_vaults::{VaultManager, VaultStore};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::AgentNetwork;
use crate::api::{AgentStatus, ApiError, Request, Response};
use crate::config::{NodeConfig, StartError, StartTimings, default_provider_dir};
use crate::ctx::Ctx;
use crate::disk::{
    KeyOrigin, check_layout, has_recovery_code, io_err, is_crypto_fail, load_or_create_data_key,
    load_or_create_key, open_env, private_dir,
};
use crate::gestalts::{Gestalts, OFFLINE_PROVIDER, REDISCOVER_INTERVAL};
use crate::notifications::NetDeliver;
use crate::paths::NodePaths;
use crate::peer::PeerService;
use crate::status::{self, AgentLock};

/// `agent status` and the log warn when the state's LMDB map is this full.
pub const STORAGE_WARN_PERCENT: u8 = 90;

/// Longest a graceful stop waits for in-flight requests.
pub const STOP_GRACE: Duration = Duration::from_secs(30);
/// Longest a Unix socket path may be, in bytes (`sun_path` less the NUL).
const MAX_SOCKET_PATH: usize = 107;

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
    new_recovery_code: Mutex<Option<keynode_core::recovery::RecoveryCode>>,
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
        crate::renewal::finish_interrupted(&paths).map_err(io_err("finishing a key renewal"))?;

        let exec = config.executor.clone();
        let (key, data_key, origin, kdf_time) = {
            let paths = paths.clone();
            let password = config.password.clone();
            let kdf = config.kdf;
            let code = config.recovery_code.clone();
            keynode_core::exec::blocking(exec.as_ref(), move || {
                let t = Instant::now();
                let (key, created) = load_or_create_key(&paths, &password, kdf, code.as_ref())?;
                let kdf_time = t.elapsed();
                let data_key = load_or_create_data_key(&paths, &key)?;
                Ok::<_, StartError>((key, data_key, created, kdf_time))
            })
            .await
            .map_err(|e| StartError::Io(std::io::Error::other(e), "loading the key".into()))??
        };
        let node_id = key.node_id();
        let key = Arc::new(key);
        let (created, new_code) = match origin {
            KeyOrigin::Existing => (false, None),
            KeyOrigin::Created(code) => (true, code),
        };

        let (store, book, acl, graph, sigchain, discovery, inbox, audit, env) = {
            let paths = paths.clone();
            let seeds = config.seed_nodes.clone();
            let (audit_key, audit_clock) = (key.clone(), config.net_context.clock.clone());
            let clock = config.net_context.clock.clone();
            let max_vault_bytes = config.max_vault_bytes;
            let max_state_bytes = config.max_state_bytes;
            let state = paths.state();
            keynode_core::exec::blocking(exec.as_ref(), move || {
                let env = open_env(&paths.state(), &data_key, max_state_bytes)?;
                private_dir(&paths.vaults())?;
                let store = VaultStore::open(&paths.vaults(), env.clone(), node_id, &data_key)
                    .map_err(StartError::Vaults)?
                    .with_clock(clock)
                    .with_max_vault_bytes(max_vault_bytes);
                let book = AddressBook::open(env.clone()).map_err(StartError::Book)?;
                for seed in seeds {
                    book.add_from(
                        seed.node,
                        PeerAddress::new(seed.host, seed.port),
                        keynode_net::AddressSource::Seed,
                    )
                    .map_err(StartError::Book)?;
                }
                let g = |e: &dyn std::fmt::Display| StartError::Gestalt(e.to_string());
                let acl = AclStore::open(env.clone()).map_err(|e| g(&e))?;
                let graph = GestaltGraph::open(env.clone()).map_err(|e| g(&e))?;
                let sigchain = Sigchain::open(env.clone(), node_id).map_err(|e| g(&e))?;
                let discovery = Discovery::open(env.clone()).map_err(|e| g(&e))?;
                let audit = keynode_audit::AuditStore::open(env.clone(), audit_key, audit_clock)
                    .map_err(|e| StartError::Audit(e.to_string()))?;
                let inbox = NotificationStore::open(env.clone(), StoreConfig::default())
                    .map_err(|e| StartError::Notifications(e.to_string()))?;
                Ok::<_, StartError>((
                    store, book, acl, graph, sigchain, discovery, inbox, audit, env,
                ))
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
        let heads = store.head_events();
        let vaults = VaultManager::new(Arc::new(store))
            .with_executor(exec.clone())
            .start();
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
                GestaltManager::new(graph)
                    .with_executor(exec.clone())
                    .start(),
                AclManager::new(Arc::new(acl))
                    .with_executor(exec.clone())
                    .start(),
                Arc::new(sigchain),
                Arc::new(discovery),
                OfflineProvider::new(provider_id, provider_dir),
                exec.clone(),
            )
            .with_clock(config.net_context.clock.clone()),
        );
        let audit = keynode_audit::AuditManager::new(Arc::new(audit))
            .with_executor(exec.clone())
            .start();
        gestalts.set_audit(audit.clone());
        gestalts
            .recover()
            .await
            .map_err(|e| StartError::Gestalt(e.message))?;

        let listen = tokio::net::lookup_host((config.agent_host.as_str(), config.agent_port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| StartError::Host(config.agent_host.clone()))?;
        let net_config = NetConfig {
            listen,
            no_listen: config.no_listen,
            relays: config.relays.clone(),
            relay_serve: config.relay_serve,
            ..NetConfig::default()
        };
        let mut net_context = config.net_context.clone();
        if let Some(settings) = config.dht.clone() {
            net_context.discovery =
                Some(keynode_net::dht::join_in_background(key.clone(), settings));
        }
        let deliver = NetDeliver::default();
        let notifications = NotificationsManager::new(
            Arc::new(inbox),
            key.clone(),
            config.net_context.clock.clone(),
            Arc::new(deliver.clone()),
            ManagerConfig::default(),
        )
        .with_executor(exec.clone())
        .start();
        let shutdown = CancellationToken::new();
        let follow = Arc::new(crate::follow::Following::default());
        let service = Arc::new(PeerService {
            gestalts: Arc::downgrade(&gestalts),
            notifications: notifications.downgrade(),
            vaults: vaults.downgrade(),
            heads: heads.clone(),
            exec: exec.clone(),
            shutdown: shutdown.clone(),
            follow: follow.clone(),
        });
        let net = Network::start_with(
            key.clone(),
            net_config,
            config.transport.clone(),
            book,
            service,
            net_context,
        )
        .await
        .map_err(StartError::Network)?;
        gestalts.set_network(net.clone());
        deliver.set_network(net.clone());
        let network = NetworkManager::new(net.clone())
            .with_executor(exec.clone())
            .start();
        if let Some(claim) = crate::renewal::pending_rotation(&paths, node_id) {
            crate::renewal::apply_own(&gestalts, &vaults, &notifications, node_id, &claim)
                .await
                .map_err(|e| {
                    StartError::Io(
                        std::io::Error::other(e.message),
                        "applying the key renewal".into(),
                    )
                })?;
            crate::renewal::rotation_done(&paths);
        }

        let socket = paths.socket();
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StartError::Io(e, "removing a stale socket".into())),
        }
        let listener = if config.client_socket {
            // Bound under a temporary name, made 0600, then renamed into
            // place: the socket never exists at its name with wider
            // permissions (and the node path around it is 0700 already).
            let staging = socket.with_file_name(".agent.tmp"); // as long as the name
            let _ = std::fs::remove_file(&staging);
            let listener =
                UnixListener::bind(&staging).map_err(io_err("binding the client socket"))?;
            std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))
                .map_err(io_err("securing the client socket"))?;
            std::fs::rename(&staging, &socket).map_err(io_err("placing the client socket"))?;
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
            storage_used_percent: env.usage().percent(),
            recovery_code: has_recovery_code(&paths, node_id),
        }));
        let tracker = TaskTracker::new();
        // Tell the nodes we know where we listen now: a node that moved (a
        // new port, a new network) is found again by its peers, and what
        // they queued for it flows over the connection this opens.
        // After a renewal: the old key's record on the DHT names the new
        // NodeId, so a peer that missed the rotation and looks the old one
        // up learns where the node went.
        if let Some((old, packet)) = crate::renewal::pending_pointer(&paths)
            && net.has_directory()
        {
            let (net, shutdown, paths) = (net.clone(), shutdown.clone(), paths.clone());
            tracker.spawn(async move {
                let mut pause = Duration::from_secs(5);
                for _ in 0..12 {
                    match net.publish_packet(old, packet.clone()).await {
                        Ok(()) => {
                            tracing::info!(%old, "the old key's DHT record now names this node");
                            crate::renewal::pointer_done(&paths);
                            return;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "cannot publish the old key's record yet")
                        }
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(600));
                }
            });
        }
        if config.announce && !config.no_listen {
            let (net, shutdown) = (net.clone(), shutdown.clone());
            let port = net.local_addr().port();
            tracker.spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = crate::peer::announce_presence(&net, port) => {}
                }
            });
        }
        let ctx = Arc::new(Ctx {
            gestalts: gestalts.clone(),
            notifications: notifications.clone(),
            vaults: vaults.clone(),
            network: network.clone(),
            audit: audit.clone(),
            rekey: crate::password::Rekey::new(&paths, node_id, exec.clone()),
            status: status.clone(),
            shutdown: shutdown.clone(),
            exec: exec.clone(),
            env: env.clone(),
            key: key.clone(),
            paths: paths.clone(),
            follow,
            heads,
        });
        tracker.spawn(crate::follow::Following::run(ctx.clone()));
        if let Some(listener) = listener {
            tracker.spawn(crate::socket::serve(
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
        {
            // Refusal counts reach the audit log when their window closes, and
            // the storage's fill level is watched.
            let (gestalts, shutdown) = (gestalts.clone(), shutdown.clone());
            let (status, env) = (status.clone(), env.clone());
            tracker.spawn(async move {
                let mut ticker = tokio::time::interval(crate::gestalts::REFUSAL_WINDOW / 4);
                let mut warned = false;
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = ticker.tick() => {
                            gestalts.flush_refusals(false).await;
                            let used = env.usage();
                            let percent = used.percent();
                            status.lock().unwrap_or_else(|p| p.into_inner()).storage_used_percent = percent;
                            let nearly_full = percent >= STORAGE_WARN_PERCENT;
                            if nearly_full && !warned {
                                tracing::warn!(
                                    percent, used = used.used, map = used.map,
                                    "the node's storage is nearly full: writes will fail when it is, reads keep working"
                                );
                            }
                            warned = nearly_full;
                        }
                    }
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
            new_recovery_code: Mutex::new(new_code),
        })
    }

    /// Refreshes the gauges of [`metrics`](crate::metrics): connections open,
    /// outbox depth, inbox size, state size and limit, vaults. Cheap (three
    /// actor messages and two LMDB counts); a process that installed a
    /// recorder runs it every [`SAMPLE_EVERY`](crate::metrics::SAMPLE_EVERY).
    pub async fn sample_metrics(&self) {
        if let Ok(conns) = self.network.send(keynode_net::actor::Connections).await {
            metrics::gauge!("keynode_connections_open").set(conns.len() as f64);
        }
        let sizes = self
            .notifications
            .ask_raw(keynode_notify::messages::Sizes {})
            .await;
        if let Ok(Ok((inbox, outbox))) = sizes {
            metrics::gauge!("keynode_inbox_size").set(inbox as f64);
            metrics::gauge!("keynode_outbox_depth").set(outbox as f64);
        }
        if let Ok(Ok(vaults)) = self
            .vaults
            .ask_raw(keynode_vaults::messages::ListVaults {})
            .await
        {
            metrics::gauge!("keynode_vaults").set(vaults.len() as f64);
        }
        let usage = self.ctx.env.usage();
        metrics::gauge!("keynode_state_bytes").set(usage.used as f64);
        metrics::gauge!("keynode_state_limit_bytes").set(usage.map as f64);
    }

    /// Serves one unary request in process, exactly as the client socket would
    /// (streaming requests are refused: use [`Node::put_secret`] and
    /// [`Node::get_secret`]).
    pub async fn call(&self, request: Request) -> Result<Response, ApiError> {
        crate::handlers::unary(&self.ctx, request).await
    }

    /// `secrets write` in process: puts `value` at `path` in `vault` (by name or
    /// id), overwriting, in one commit.
    pub async fn put_secret(
        &self,
        vault: &str,
        path: &str,
        value: Vec<u8>,
    ) -> Result<Response, ApiError> {
        let path = secret_path(path)?;
        crate::handlers::put_secret(&self.ctx, vault, path, value).await
    }

    /// `secrets get` in process: the content of `path` at `vault`'s head.
    pub async fn get_secret(&self, vault: &str, path: &str) -> Result<Vec<u8>, ApiError> {
        let path = secret_path(path)?;
        let vault = crate::handlers::resolve(&self.ctx, vault).await?;
        crate::handlers::read_to_vec(&self.ctx, vault, path, usize::MAX).await
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

    /// The recovery code of a node this start created from nothing, once:
    /// show it to its owner and forget it (it is not kept anywhere else).
    pub fn take_recovery_code(&self) -> Option<keynode_core::recovery::RecoveryCode> {
        self.new_recovery_code
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// How long the start took, and whether it created the node.
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
        self.gestalts.flush_refusals(true).await;
        // The outbox's retry timer would keep its actor, and the state, open.
        let _ = self
            .notifications
            .send(keynode_notify::messages::Stop)
            .await;
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
        // The state closes when its last handle goes: the actors holding one
        // stop once their addresses are gone, a moment after this. Wait for
        // them (the agent lock held), so a stopped node's state can be
        // opened again at once, in this process too.
        let Node {
            node_id,
            _lock,
            ctx,
            gestalts,
            vaults,
            net,
            network,
            notifications,
            tracker,
            ..
        } = self;
        let env = ctx.env.clone();
        drop((ctx, gestalts, vaults, net, network, notifications, tracker));
        let deadline = Instant::now() + STOP_GRACE;
        while env.handles() > 1 && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if env.handles() > 1 {
            tracing::warn!("the node state is still held open after stopping");
        }
        drop(env);
        drop(_lock);
        tracing::info!(%node_id, "node stopped");
    }
}

fn secret_path(p: &str) -> Result<SecretPath, ApiError> {
    SecretPath::new(p).map_err(|e| ApiError::new(crate::api::ErrorKind::BadData, e.to_string()))
}
