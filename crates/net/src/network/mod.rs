//! The [`Network`] handle: listens, dials, keeps one multiplexed connection per
//! peer and runs a driver task per connection.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use keynode_core::{Clock, Keypair, NodeId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::book::{AddressBook, AddressSource, PeerAddress};
use crate::discovery::{NodeRecord, RelayAddress};
use crate::noise::{self, HandshakeError, Identity, NoiseStream, Role};
use crate::rpc::{
    PROTOCOL_VERSION, Pong, ReceiveBudget, RpcError, RpcStream, StreamHeader, StreamKind,
    WireError, WireErrorKind,
};
use crate::transport::{Listener, TcpTransport, Transport};

/// Idle time after which a connection without open streams is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Interval between keep-alive pings on a connection.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// A connection with open streams that has received nothing for this long is
/// pinged at once; a ping unanswered within twice this closes it. A dead
/// connection (the peer gone without a word, a path that stopped carrying
/// packets) is found in seconds this way rather than at the next keep-alive.
pub const SILENCE_PROBE: Duration = Duration::from_secs(5);

/// Most inbound connections (handshaking or established) at once.
pub const MAX_INBOUND_CONNECTIONS: usize = 512;

/// Most concurrent streams on one connection, each direction counted.
pub const MAX_STREAMS_PER_PEER: usize = 256;

/// Default most inbound connections from strangers (the rest of
/// [`MAX_INBOUND_CONNECTIONS`] stays for known peers).
pub const MAX_INBOUND_STRANGERS: usize = 384;

/// Default most concurrent streams on a connection from a stranger.
pub const MAX_STREAMS_PER_STRANGER: usize = 4;

/// Receive window granted to each new stream, in bytes (yamux's default; yamux
/// grows it with the measured bandwidth-delay product, within the connection's
/// budget).
pub const STREAM_WINDOW: usize = 256 * 1024;

/// How long an unused duplicate connection to a peer is kept before closing it.
pub const DUPLICATE_GRACE: Duration = Duration::from_secs(1);

/// Longest a graceful close (yamux GoAway) may take before the socket is dropped.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest [`Network::shutdown`] waits for connections to close.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a node publishes its record again while nothing changes.
pub const REPUBLISH_INTERVAL: Duration = Duration::from_secs(30 * 60);

/// Pauses between failed publications: from the first to the last, doubling.
const PUBLISH_RETRY: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(600));

/// Least time between two lookups of one node that skip the cache: a node
/// that is away does not make every dial ask the directory again.
pub const FRESH_LOOKUP_INTERVAL: Duration = Duration::from_secs(1);

/// Pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// yamux frame header size, in bytes.
const YAMUX_HEADER: usize = 12;

type DialLock = Arc<tokio::sync::Mutex<()>>;

struct Inner<T: Transport> {
    key: Arc<Keypair>,
    node_id: NodeId,
    identity: Identity,
    config: NetConfig,
    context: NetContext,
    transport: T,
    book: AddressBook,
    service: Arc<dyn Service>,
    local_addr: SocketAddr,
    conns: Mutex<HashMap<NodeId, Vec<Arc<Conn>>>>,
    dialing: Mutex<HashMap<NodeId, DialLock>>,
    inbound: Arc<Semaphore>,
    budget: ReceiveBudget,
    strangers: Arc<Semaphore>,
    next_id: AtomicU64,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    established: broadcast::Sender<NodeId>,
    /// Set when this node relays for others.
    relay: Option<relay::RelayState>,
    /// The relays this node holds a reservation at now.
    reserved_at: Mutex<HashSet<NodeId>>,
    /// Relays other nodes said (in their records) they can be reached at.
    relay_hints: Mutex<HashMap<NodeId, Vec<RelayAddress>>>,
    /// When each node was last looked up past the cache.
    lookups: Mutex<HashMap<NodeId, Instant>>,
}

/// How many connection events a slow subscriber may fall behind before it
/// misses some (it then sees `RecvError::Lagged`).
pub const CONNECTION_EVENTS: usize = 256;

/// A running node's network: cheap to clone, shut down with [`Network::shutdown`].
pub struct Network<T: Transport = TcpTransport> {
    inner: Arc<Inner<T>>,
}

impl<T: Transport> Clone for Network<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Transport> std::fmt::Debug for Network<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("node_id", &self.inner.node_id)
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> Network<T> {
    /// Binds `config.listen` and starts accepting connections; inbound service
    /// streams go to `service`.
    pub async fn start(
        key: Arc<Keypair>,
        config: NetConfig,
        transport: T,
        book: AddressBook,
        service: Arc<dyn Service>,
    ) -> Result<Network<T>, NetError> {
        Self::start_with(key, config, transport, book, service, NetContext::default()).await
    }

    /// [`Network::start`] with an explicit clock and entropy source (for
    /// deterministic simulations).
    pub async fn start_with(
        key: Arc<Keypair>,
        mut config: NetConfig,
        transport: T,
        book: AddressBook,
        service: Arc<dyn Service>,
        context: NetContext,
    ) -> Result<Network<T>, NetError> {
        config.max_streams_per_peer = config.max_streams_per_peer.clamp(1, 4096);
        config.max_inbound_strangers = config
            .max_inbound_strangers
            .min(config.max_inbound_connections);
        config.max_streams_per_stranger = config
            .max_streams_per_stranger
            .clamp(1, config.max_streams_per_peer);
        let identity = Identity::new(&key, context.entropy.clone()).map_err(NetError::Identity)?;
        let bind_err = |source| NetError::Bind {
            addr: config.listen,
            source,
        };
        let listener = if config.no_listen {
            None
        } else {
            Some(transport.bind(config.listen).await.map_err(bind_err)?)
        };
        let local_addr = match &listener {
            Some(l) => l.local_addr().map_err(bind_err)?,
            None => SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let relay = config.relay_serve.map(relay::RelayState::new);
        let inner = Arc::new(Inner {
            relay,
            node_id: key.node_id(),
            key,
            identity,
            inbound: Arc::new(Semaphore::new(config.max_inbound_connections)),
            budget: ReceiveBudget::new(config.receive_budget),
            strangers: Arc::new(Semaphore::new(config.max_inbound_strangers)),
            config,
            context,
            transport,
            book,
            service,
            local_addr,
            conns: Mutex::new(HashMap::new()),
            dialing: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            established: broadcast::channel(CONNECTION_EVENTS).0,
            reserved_at: Mutex::new(HashSet::new()),
            relay_hints: Mutex::new(HashMap::new()),
            lookups: Mutex::new(HashMap::new()),
        });
        match listener {
            Some(listener) => {
                info!(node = %inner.node_id, addr = %local_addr, "network listening");
                inner.tasks.spawn(accept_loop(inner.clone(), listener));
            }
            None => info!(node = %inner.node_id, "network up without a listener"),
        }
        for r in inner.config.relays.clone() {
            inner.tasks.spawn(relay::keep_reservation(inner.clone(), r));
        }
        if inner.context.discovery.is_some() {
            inner.tasks.spawn(publish_loop(inner.clone()));
        }
        Ok(Network { inner })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The key this network authenticates with.
    pub fn key(&self) -> &Arc<Keypair> {
        &self.inner.key
    }

    /// The address actually listened on (with the real port).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The address book used for dialing.
    pub fn book(&self) -> &AddressBook {
        &self.inner.book
    }

    /// An authenticated round trip to `peer` (dialing first if needed; the time
    /// returned excludes dialing).
    pub async fn ping(&self, peer: NodeId) -> Result<Duration, NetError> {
        let after = self.inner.config.request_timeout;
        tokio::time::timeout(after, async {
            let conn = self.inner.connection(peer).await?;
            let start = Instant::now();
            let raw = conn.open_raw().await?;
            ping_stream(raw, peer).await?;
            Ok(start.elapsed())
        })
        .await
        .map_err(|_| NetError::Timeout { node: peer, after })?
    }

    /// Opens a service stream to `peer`, dialing (address from the book) or
    /// reusing the connection.
    pub async fn open(&self, peer: NodeId) -> Result<RpcStream, NetError> {
        self.inner.open(peer).await
    }

    /// Sends `req` on a new stream and returns the one response, within the
    /// request timeout. A [`WireError`] from the peer is [`NetError::Remote`].
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        peer: NodeId,
        req: &Req,
    ) -> Result<Resp, NetError> {
        let after = self.inner.config.request_timeout;
        tokio::time::timeout(after, async {
            let mut stream = self.inner.open(peer).await?;
            stream.send(req).await.map_err(|e| NetError::rpc(peer, e))?;
            match stream.recv::<Resp>().await {
                Ok(Some(resp)) => Ok(resp),
                Ok(None) => Err(NetError::NoResponse(peer)),
                Err(e) => Err(NetError::rpc(peer, e)),
            }
        })
        .await
        .map_err(|_| NetError::Timeout { node: peer, after })?
    }

    /// Whether a live connection to `peer` exists now.
    pub fn is_connected(&self, peer: NodeId) -> bool {
        self.inner
            .conns()
            .get(&peer)
            .is_some_and(|c| c.iter().any(|c| !c.closed.is_cancelled()))
    }

    /// The live connections.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let conns = self.inner.conns();
        let mut out: Vec<ConnectionInfo> = conns
            .values()
            .flatten()
            .filter(|c| !c.closed.is_cancelled())
            .map(|c| ConnectionInfo {
                node_id: c.peer,
                remote_addr: c.remote_addr,
                direction: c.direction,
                established_ms: c.established_ms,
                streams: c.streams.load(Ordering::Acquire),
                relay: c.relay,
            })
            .collect();
        out.sort_by_key(|c| (c.node_id, c.established_ms));
        out
    }

    /// Where `peer` may be found: the book's addresses with where each came
    /// from, and (looked up now, past any cache) its record in the
    /// directory, or why there is none.
    pub async fn find(&self, peer: NodeId) -> Result<Found, NetError> {
        let book = self.inner.book.info(peer)?;
        let directory = match &self.inner.context.discovery {
            None => Lookup::Off,
            Some(d) => match d.resolve(peer, true).await {
                Ok(Some(record)) => Lookup::Found(record),
                Ok(None) => Lookup::NotFound,
                Err(e) => Lookup::Failed(e.to_string()),
            },
        };
        Ok(Found { book, directory })
    }

    /// Publishes a record another key signed (a renewed key's pointer; see
    /// [`Discovery::publish_packet`](crate::Discovery::publish_packet)).
    /// Without a directory, nothing to do.
    pub async fn publish_packet(
        &self,
        node: NodeId,
        packet: Vec<u8>,
    ) -> Result<(), crate::DiscoveryError> {
        match &self.inner.context.discovery {
            Some(d) => d.publish_packet(node, packet).await,
            None => Ok(()),
        }
    }

    /// Whether this node publishes to and looks up in a directory.
    pub fn has_directory(&self) -> bool {
        self.inner.context.discovery.is_some()
    }

    /// This node's record as it publishes it now.
    pub fn own_record(&self) -> NodeRecord {
        self.inner.own_record()
    }

    /// The relays this node holds a reservation at now.
    pub fn reserved_relays(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .inner
            .reserved_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect();
        v.sort();
        v
    }

    /// The peers of connections established from now on, inbound or outbound
    /// (e.g. to retry queued notifications as soon as a peer is back).
    pub fn connection_events(&self) -> broadcast::Receiver<NodeId> {
        self.inner.established.subscribe()
    }

    /// Closes every connection to `peer` now; the next request dials again.
    pub fn disconnect(&self, peer: NodeId) {
        if let Some(conns) = self.inner.conns().remove(&peer) {
            for c in conns {
                c.closed.cancel();
            }
        }
    }

    /// Stops listening, closes every connection (gracefully, within
    /// [`SHUTDOWN_TIMEOUT`]) and refuses further requests.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, self.inner.tasks.wait())
            .await
            .is_err()
        {
            warn!(node = %self.inner.node_id, "network shutdown timed out");
        }
        self.inner.conns().clear();
    }
}

/// The publisher: the node's record goes out at start, again every
/// `republish_interval`, and after a failure with growing pauses (one
/// warning, then quiet: a node with no route to the directory works on).
async fn publish_loop<T: Transport>(inner: Arc<Inner<T>>) {
    let Some(discovery) = inner.context.discovery.clone() else {
        return;
    };
    let mut failures = 0u32;
    loop {
        let record = inner.own_record();
        let pause = match discovery.publish(record).await {
            Ok(()) => {
                if failures > 0 {
                    info!(node = %inner.node_id, "record published again");
                }
                failures = 0;
                debug!(node = %inner.node_id, "record published");
                inner.config.republish_interval
            }
            Err(e) => {
                if failures == 0 {
                    warn!(node = %inner.node_id, error = %e, "cannot publish this node's record; will retry");
                } else {
                    debug!(node = %inner.node_id, error = %e, "publishing failed again");
                }
                failures = failures.saturating_add(1);
                PUBLISH_RETRY
                    .0
                    .saturating_mul(1 << failures.min(10))
                    .min(PUBLISH_RETRY.1)
            }
        };
        tokio::select! {
            _ = inner.shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// An IP address of this host that routes outwards (no packet is sent).
fn routable_ip(v6: bool) -> Option<std::net::IpAddr> {
    let (bind, probe) = if v6 {
        ("[::]:0", "[2001:db8::1]:9")
    } else {
        ("0.0.0.0:0", "192.0.2.1:9")
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(probe).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

impl<T: Transport> Inner<T> {
    fn own_record(&self) -> NodeRecord {
        let addresses = if !self.config.advertise.is_empty() {
            self.config.advertise.clone()
        } else if self.config.no_listen {
            Vec::new()
        } else if self.local_addr.ip().is_unspecified() {
            routable_ip(self.local_addr.is_ipv6())
                .map(|ip| {
                    vec![PeerAddress::from(SocketAddr::new(
                        ip,
                        self.local_addr.port(),
                    ))]
                })
                .unwrap_or_default()
        } else {
            vec![PeerAddress::from(self.local_addr)]
        };
        NodeRecord {
            addresses,
            relays: self.config.relays.clone(),
            renewed_to: None,
        }
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<NodeId, Vec<Arc<Conn>>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection to use for new streams to `peer`: of the live ones, those
    /// dialed by the smaller NodeId win (both ends agree on it), then the newest.
    fn primary(&self, peer: NodeId) -> Option<Arc<Conn>> {
        let preferred_dialer = self.node_id.min(peer);
        self.conns()
            .get(&peer)?
            .iter()
            .filter(|c| !c.closed.is_cancelled())
            .max_by_key(|c| (c.dialer == preferred_dialer, c.id))
            .cloned()
    }

    fn remove(&self, conn: &Conn) {
        let mut conns = self.conns();
        if let Some(list) = conns.get_mut(&conn.peer) {
            list.retain(|c| c.id != conn.id);
            if list.is_empty() {
                conns.remove(&conn.peer);
            }
        }
    }

    async fn open(self: &Arc<Self>, peer: NodeId) -> Result<RpcStream, NetError> {
        let header = StreamHeader {
            version: PROTOCOL_VERSION,
            kind: StreamKind::Service,
        };
        // A reused connection may have died unnoticed: drop it and dial once more.
        for attempt in 0..2 {
            let conn = self.connection(peer).await?;
            match conn.open_raw().await {
                Ok(raw) => {
                    let guard = StreamGuard::new(conn);
                    return RpcStream::new(raw, peer)
                        .with_budget(self.budget.clone())
                        .with_header(&header)
                        .map(|s| s.with_guard(guard))
                        .map_err(|e| NetError::rpc(peer, e));
                }
                Err(e) if attempt == 1 => return Err(e),
                Err(_) => {
                    conn.abandon();
                    self.remove(&conn);
                }
            }
        }
        Err(NetError::ConnectionClosed(peer))
    }

    /// The primary connection to `peer`, dialing one if there is none. Concurrent
    /// callers wait for one dial.
    async fn connection(self: &Arc<Self>, peer: NodeId) -> Result<Arc<Conn>, NetError> {
        self.connection_with(peer, Vec::new(), true).await
    }

    /// [`Inner::connection`], trying `extra` addresses beside the book's,
    /// and relays only if `via_relay`.
    async fn connection_with(
        self: &Arc<Self>,
        peer: NodeId,
        extra: Vec<PeerAddress>,
        via_relay: bool,
    ) -> Result<Arc<Conn>, NetError> {
        if peer == self.node_id {
            return Err(NetError::NoAddress(peer));
        }
        if self.shutdown.is_cancelled() {
            return Err(NetError::Shutdown);
        }
        if let Some(conn) = self.primary(peer) {
            return Ok(conn);
        }
        let lock = self
            .dialing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(peer)
            .or_default()
            .clone();
        let result = {
            let _dialing = lock.lock().await;
            match self.primary(peer) {
                Some(conn) => Ok(conn),
                None => self.dial(peer, extra, via_relay).await,
            }
        };
        {
            let mut dialing = self.dialing.lock().unwrap_or_else(PoisonError::into_inner);
            if Arc::strong_count(&lock) == 2 {
                dialing.remove(&peer);
            }
        }
        result
    }

    /// Dials `peer`: the book's addresses (and `extra`), then, if those fail
    /// or there are none, what the directory says (its addresses, then its
    /// relays if `via_relay`).
    async fn dial(
        self: &Arc<Self>,
        peer: NodeId,
        extra: Vec<PeerAddress>,
        via_relay: bool,
    ) -> Result<Arc<Conn>, NetError> {
        let mut addrs = self.book.get(peer)?;
        for e in extra {
            if !addrs.contains(&e) {
                addrs.push(e);
            }
        }
        let mut last = None;
        if !addrs.is_empty() {
            match self.dial_addresses(peer, &addrs, None).await {
                Ok(conn) => return Ok(conn),
                Err(e) => last = Some(e),
            }
        }
        if let Some(record) = self.lookup(peer, !addrs.is_empty()).await {
            let found: Vec<PeerAddress> = record
                .addresses
                .iter()
                .filter(|a| !addrs.contains(a))
                .cloned()
                .collect();
            if !found.is_empty() {
                match self
                    .dial_addresses(peer, &found, Some(AddressSource::Dht))
                    .await
                {
                    Ok(conn) => return Ok(conn),
                    Err(e) => last = Some(e),
                }
            }
            // The record's say is the latest word: no relays in it, none kept.
            let mut hints = self
                .relay_hints
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if record.relays.is_empty() {
                hints.remove(&peer);
            } else {
                if hints.len() >= 4096 {
                    hints.clear();
                }
                hints.insert(peer, record.relays);
            }
        }
        if via_relay {
            let relays = self
                .relay_hints
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&peer)
                .cloned()
                .unwrap_or_default();
            for relay in relays
                .iter()
                .filter(|r| r.node != peer && r.node != self.node_id)
            {
                match self.dial_via(relay, peer).await {
                    Ok(conn) => return Ok(conn),
                    Err(e) => {
                        debug!(%peer, relay = %relay, error = %e, "cannot connect through a relay");
                        last = Some(e);
                    }
                }
            }
        }
        Err(last.unwrap_or(NetError::NoAddress(peer)))
    }

    /// What the directory says of `peer` (`None` without one, or when it
    /// has nothing or fails: a dial goes on without it). `fresh` skips the
    /// directory's cache, at most once per [`FRESH_LOOKUP_INTERVAL`].
    async fn lookup(&self, peer: NodeId, fresh: bool) -> Option<NodeRecord> {
        let discovery = self.context.discovery.as_ref()?;
        let fresh = fresh && {
            let mut lookups = self.lookups.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let due = lookups
                .get(&peer)
                .is_none_or(|t| now.duration_since(*t) >= FRESH_LOOKUP_INTERVAL);
            if due {
                if lookups.len() >= 4096 {
                    lookups.clear();
                }
                lookups.insert(peer, now);
            }
            due
        };
        match discovery.resolve(peer, fresh).await {
            Ok(found) => found,
            Err(e) => {
                debug!(%peer, error = %e, "directory lookup failed");
                None
            }
        }
    }

    /// Tries each of `addrs` in turn; an address that works and came from
    /// `found` (not the book) is recorded in the book as from there.
    async fn dial_addresses(
        self: &Arc<Self>,
        peer: NodeId,
        addrs: &[PeerAddress],
        found: Option<AddressSource>,
    ) -> Result<Arc<Conn>, NetError> {
        let timeout = self.config.handshake_timeout;
        let mut last = None;
        for addr in addrs {
            let resolved = match self.transport.resolve(&addr.host, addr.port).await {
                Ok(r) => r,
                Err(source) => {
                    debug!(%peer, %addr, error = %source, "cannot resolve");
                    last = Some(NetError::Unreachable { node: peer, source });
                    continue;
                }
            };
            for sock in resolved {
                let io = match tokio::time::timeout(timeout, self.transport.connect(sock)).await {
                    Ok(Ok(io)) => io,
                    Ok(Err(source)) => {
                        debug!(%peer, %sock, error = %source, "cannot connect");
                        last = Some(NetError::Unreachable { node: peer, source });
                        continue;
                    }
                    Err(_) => {
                        let source = std::io::ErrorKind::TimedOut.into();
                        last = Some(NetError::Unreachable { node: peer, source });
                        continue;
                    }
                };
                match noise::handshake(io, &self.identity, Role::Initiator(Some(peer)), timeout)
                    .await
                {
                    Ok((stream, _)) => {
                        self.note_working(peer, addr.clone(), found);
                        // We chose to dial it: it is known.
                        let class = PeerClass::Known;
                        return Ok(self.install(
                            stream,
                            peer,
                            sock,
                            Direction::Outbound,
                            Vec::new(),
                            class,
                            None,
                        ));
                    }
                    Err(HandshakeError::UnexpectedPeer { expected, got }) => {
                        warn!(%sock, %expected, %got, "address answered as another node");
                        last = Some(NetError::UnexpectedPeer { expected, got });
                    }
                    Err(source) => {
                        info!(%peer, %sock, error = %source, "outbound handshake failed");
                        last = Some(NetError::Handshake { node: peer, source });
                    }
                }
            }
        }
        Err(last.unwrap_or(NetError::NoAddress(peer)))
    }

    /// Records, off the dial's path, that `addr` of `peer` just worked: on
    /// the blocking pool under a multi-threaded runtime (an LMDB commit must
    /// not hold up the connection), inline under a single-threaded one (a
    /// simulation, where order matters more).
    fn note_working(&self, peer: NodeId, addr: PeerAddress, found: Option<AddressSource>) {
        let (book, at) = (self.book.clone(), self.context.clock.now_ms());
        let note = move || {
            if let Some(source) = found
                && let Err(e) = book.add_from(peer, addr.clone(), source)
            {
                debug!(%peer, error = %e, "cannot record a found address");
            }
            if let Err(e) = book.mark_ok(peer, &addr, at) {
                debug!(%peer, error = %e, "cannot note a working address");
            }
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                tokio::task::spawn_blocking(note);
            }
            _ => note(),
        }
    }

    /// What an inbound `peer` may hold open: known if its address was added to
    /// the book (we chose to know it, as we do a peer we dial), else as the
    /// service says.
    async fn classify(&self, peer: NodeId) -> PeerClass {
        if self.book.get(peer).is_ok_and(|addrs| !addrs.is_empty()) {
            return PeerClass::Known;
        }
        self.service.classify(peer).await
    }

    /// Registers an authenticated connection and starts its driver.
    #[allow(clippy::too_many_arguments)]
    fn install<S: crate::transport::Io>(
        self: &Arc<Self>,
        stream: NoiseStream<S>,
        peer: NodeId,
        remote_addr: SocketAddr,
        direction: Direction,
        permits: Vec<OwnedSemaphorePermit>,
        class: PeerClass,
        relay: Option<NodeId>,
    ) -> Arc<Conn> {
        let side = match direction {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        };
        metrics::counter!("keynode_connections_total", "direction" => side).increment(1);
        // yamux's stream limit counts both directions and is fixed for the
        // connection's life, so it is the same ceiling for everyone; a
        // stranger's inbound streams are limited as they are accepted
        // (`drive`), where the class can change.
        let streams = self.config.max_streams_per_peer;
        let mut cfg = yamux::Config::default();
        cfg.set_max_num_streams(streams);
        cfg.set_max_connection_receive_window(Some(streams * STREAM_WINDOW));
        // One yamux data frame fills one Noise frame exactly.
        cfg.set_split_send_size(noise::MAX_PLAINTEXT - YAMUX_HEADER);
        let mode = match direction {
            Direction::Outbound => yamux::Mode::Client,
            Direction::Inbound => yamux::Mode::Server,
        };
        let heard = Arc::new(AtomicU64::new(0));
        let born = Instant::now();
        let io = conn::Activity::new(stream.compat(), heard.clone(), born);
        let connection = yamux::Connection::new(io, cfg, mode);
        let (opener, opens) = mpsc::channel(streams);
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            peer,
            dialer: match direction {
                Direction::Outbound => self.node_id,
                Direction::Inbound => peer,
            },
            remote_addr,
            direction,
            relay,
            established_ms: self.context.clock.now_ms(),
            opener,
            streams: AtomicUsize::new(0),
            quiet: AtomicUsize::new(0),
            last_active: Mutex::new(Instant::now()),
            closed: CancellationToken::new(),
            dead: std::sync::atomic::AtomicBool::new(false),
            heard,
            born,
            known: std::sync::atomic::AtomicBool::new(class == PeerClass::Known),
            stranger_slots: Arc::new(Semaphore::new(self.config.max_streams_per_stranger)),
        });
        self.conns().entry(peer).or_default().push(conn.clone());
        debug!(%peer, %remote_addr, ?direction, "connection established");
        // Nobody listening is fine.
        let _ = self.established.send(peer);
        self.tasks.spawn(drive(
            self.clone(),
            conn.clone(),
            connection,
            opens,
            permits,
        ));
        conn
    }
}

mod conn;
mod relay;
mod types;

use conn::{Conn, StreamGuard, accept_loop, drive, ping_stream};
pub use relay::RelayLimits;
pub use types::*;
