//! The [`Network`] handle: listens, dials, keeps one multiplexed connection per
//! peer and runs a driver task per connection.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use keynode_core::{Clock, Keypair, NodeId, SystemClock};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::book::{AddressBook, BookError};
use crate::noise::{self, Entropy, HandshakeError, Identity, NoiseStream, OsEntropy, Role};
use crate::rpc::{
    PROTOCOL_VERSION, Pong, RpcError, RpcStream, StreamHeader, StreamKind, WireError, WireErrorKind,
};
use crate::transport::{Listener, TcpTransport, Transport};

/// Idle time after which a connection without open streams is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Interval between keep-alive pings on a connection.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Most inbound connections (handshaking or established) at once.
pub const MAX_INBOUND_CONNECTIONS: usize = 512;

/// Most concurrent streams on one connection, each direction counted.
pub const MAX_STREAMS_PER_PEER: usize = 256;

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

/// Pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// yamux frame header size, in bytes.
const YAMUX_HEADER: usize = 12;

/// A network could not start or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Noise identity could not be made.
    #[error("cannot create the noise identity")]
    Identity(#[source] HandshakeError),
    /// The address book has no address for the node.
    #[error("no address known for {0}")]
    NoAddress(NodeId),
    /// No address of the node could be connected to.
    #[error("cannot reach {node}")]
    Unreachable {
        /// The node dialed.
        node: NodeId,
        /// The last failure.
        #[source]
        source: std::io::Error,
    },
    /// The node at the address proved another identity.
    #[error("expected peer {expected}, got {got}")]
    UnexpectedPeer {
        /// The node dialed.
        expected: NodeId,
        /// The node that answered.
        got: NodeId,
    },
    /// The handshake failed.
    #[error("handshake with {node} failed")]
    Handshake {
        /// The node dialed.
        node: NodeId,
        /// Why.
        #[source]
        source: HandshakeError,
    },
    /// The connection closed before a stream could be opened.
    #[error("connection to {0} closed")]
    ConnectionClosed(NodeId),
    /// The request did not complete in time.
    #[error("request to {node} timed out after {after:?}")]
    Timeout {
        /// The peer.
        node: NodeId,
        /// The time bound.
        after: Duration,
    },
    /// The stream failed.
    #[error("request to {node} failed")]
    Rpc {
        /// The peer.
        node: NodeId,
        /// Why.
        #[source]
        source: RpcError,
    },
    /// The peer finished the stream without answering.
    #[error("{0} closed the stream without answering")]
    NoResponse(NodeId),
    /// The remote node answered with an error.
    #[error("remote node: {0}")]
    Remote(WireError),
    /// The address book failed.
    #[error(transparent)]
    Book(#[from] BookError),
    /// The network has been shut down.
    #[error("the network is shut down")]
    Shutdown,
}

impl NetError {
    fn rpc(node: NodeId, e: RpcError) -> Self {
        match e {
            RpcError::Remote(w) => NetError::Remote(w),
            other => NetError::Rpc {
                node,
                source: other,
            },
        }
    }
}

/// A node's network settings.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Where to listen; port 0 picks a free port (see [`Network::local_addr`]).
    pub listen: SocketAddr,
    /// Bound on connecting plus the whole Noise handshake, each.
    pub handshake_timeout: Duration,
    /// Bound on a unary request or a ping, dialing included; also on reading an
    /// inbound stream's header.
    pub request_timeout: Duration,
    /// A connection with no open stream for this long is closed.
    pub idle_timeout: Duration,
    /// Interval between keep-alive pings; a ping unanswered within
    /// `request_timeout` closes the connection.
    pub keepalive_interval: Duration,
    /// Most inbound connections; beyond it new sockets are closed at once.
    pub max_inbound_connections: usize,
    /// Most concurrent streams per connection (1..=4096).
    pub max_streams_per_peer: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            handshake_timeout: noise::HANDSHAKE_TIMEOUT,
            request_timeout: crate::rpc::REQUEST_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            keepalive_interval: KEEPALIVE_INTERVAL,
            max_inbound_connections: MAX_INBOUND_CONNECTIONS,
            max_streams_per_peer: MAX_STREAMS_PER_PEER,
        }
    }
}

/// What the network takes from outside besides sockets: wall-clock time for
/// reporting and randomness for keys. Timers use `tokio::time`, so paused or
/// simulated time drives them.
#[derive(Clone)]
pub struct NetContext {
    /// Wall-clock time (for [`ConnectionInfo::established_ms`]).
    pub clock: Arc<dyn Clock>,
    /// Randomness for Noise keys.
    pub entropy: Arc<dyn Entropy>,
}

impl Default for NetContext {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            entropy: Arc::new(OsEntropy),
        }
    }
}

impl std::fmt::Debug for NetContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetContext").finish_non_exhaustive()
    }
}

/// Serves the streams peers open for the node's own protocols.
///
/// keynode-net carries them without knowing them: each inbound service stream is
/// handed over in its own task, with the caller's NodeId as proved by the Noise
/// handshake.
pub trait Service: Send + Sync + 'static {
    /// Serves one stream from `peer` until done.
    fn serve(&self, peer: NodeId, stream: RpcStream) -> BoxFuture<'static, ()>;
}

/// A service that serves nothing: answers every stream with
/// [`WireErrorKind::Unsupported`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoService;

impl Service for NoService {
    fn serve(&self, _peer: NodeId, mut stream: RpcStream) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let err = WireError::new(WireErrorKind::Unsupported, "this node serves no requests");
            let _ = stream.send_error(&err).await;
            let _ = stream.finish().await;
        })
    }
}

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub enum Direction {
    /// The peer dialed us.
    Inbound,
    /// We dialed the peer.
    Outbound,
}

/// A live connection, as shown by `nodes connections`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ConnectionInfo {
    /// The authenticated peer.
    pub node_id: NodeId,
    /// The peer's socket address.
    pub remote_addr: SocketAddr,
    /// Who dialed.
    pub direction: Direction,
    /// When the handshake finished, in milliseconds since the Unix epoch.
    pub established_ms: u64,
    /// Streams open now (pings excluded).
    pub streams: usize,
}

type OpenReply = oneshot::Sender<Result<yamux::Stream, yamux::ConnectionError>>;

/// The shared state of one connection; its driver task owns the yamux side.
struct Conn {
    id: u64,
    peer: NodeId,
    dialer: NodeId,
    remote_addr: SocketAddr,
    direction: Direction,
    established_ms: u64,
    opener: mpsc::Sender<OpenReply>,
    streams: AtomicUsize,
    last_active: Mutex<Instant>,
    closed: CancellationToken,
}

impl Conn {
    fn touch(&self) {
        *self
            .last_active
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.streams.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(
            self.last_active
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .elapsed(),
        )
    }

    async fn open_raw(&self) -> Result<yamux::Stream, NetError> {
        let closed = || NetError::ConnectionClosed(self.peer);
        if self.closed.is_cancelled() {
            return Err(closed());
        }
        let (tx, rx) = oneshot::channel();
        self.opener.send(tx).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?.map_err(|e| {
            debug!(peer = %self.peer, error = %e, "cannot open a stream");
            closed()
        })
    }
}

/// Counts a stream as open on its connection while alive.
struct StreamGuard(Arc<Conn>);

impl StreamGuard {
    fn new(conn: Arc<Conn>) -> Self {
        conn.streams.fetch_add(1, Ordering::AcqRel);
        conn.touch();
        Self(conn)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

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
    next_id: AtomicU64,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    established: broadcast::Sender<NodeId>,
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
        let identity = Identity::new(&key, context.entropy.clone()).map_err(NetError::Identity)?;
        let bind_err = |source| NetError::Bind {
            addr: config.listen,
            source,
        };
        let listener = transport.bind(config.listen).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        let inner = Arc::new(Inner {
            node_id: key.node_id(),
            key,
            identity,
            inbound: Arc::new(Semaphore::new(config.max_inbound_connections)),
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
        });
        info!(node = %inner.node_id, addr = %local_addr, "network listening");
        inner.tasks.spawn(accept_loop(inner.clone(), listener));
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
            })
            .collect();
        out.sort_by_key(|c| (c.node_id, c.established_ms));
        out
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

async fn ping_stream(raw: yamux::Stream, peer: NodeId) -> Result<(), NetError> {
    let header = StreamHeader {
        version: PROTOCOL_VERSION,
        kind: StreamKind::Ping,
    };
    let mut stream = RpcStream::new(raw, peer)
        .with_header(&header)
        .map_err(|e| NetError::rpc(peer, e))?;
    match stream.recv::<Pong>().await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(NetError::NoResponse(peer)),
        Err(e) => Err(NetError::rpc(peer, e)),
    }
}

impl<T: Transport> Inner<T> {
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
                        .with_header(&header)
                        .map(|s| s.with_guard(guard))
                        .map_err(|e| NetError::rpc(peer, e));
                }
                Err(e) if attempt == 1 => return Err(e),
                Err(_) => {
                    conn.closed.cancel();
                    self.remove(&conn);
                }
            }
        }
        Err(NetError::ConnectionClosed(peer))
    }

    /// The primary connection to `peer`, dialing one if there is none. Concurrent
    /// callers wait for one dial.
    async fn connection(self: &Arc<Self>, peer: NodeId) -> Result<Arc<Conn>, NetError> {
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
                None => self.dial(peer).await,
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

    async fn dial(self: &Arc<Self>, peer: NodeId) -> Result<Arc<Conn>, NetError> {
        let addrs = self.book.get(peer)?;
        if addrs.is_empty() {
            return Err(NetError::NoAddress(peer));
        }
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
                        return Ok(self.install(stream, peer, sock, Direction::Outbound, None));
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

    /// Registers an authenticated connection and starts its driver.
    fn install(
        self: &Arc<Self>,
        stream: NoiseStream<T::Stream>,
        peer: NodeId,
        remote_addr: SocketAddr,
        direction: Direction,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Arc<Conn> {
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
        let connection = yamux::Connection::new(stream.compat(), cfg, mode);
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
            established_ms: self.context.clock.now_ms(),
            opener,
            streams: AtomicUsize::new(0),
            last_active: Mutex::new(Instant::now()),
            closed: CancellationToken::new(),
        });
        self.conns().entry(peer).or_default().push(conn.clone());
        debug!(%peer, %remote_addr, ?direction, "connection established");
        // Nobody listening is fine.
        let _ = self.established.send(peer);
        self.tasks
            .spawn(drive(self.clone(), conn.clone(), connection, opens, permit));
        conn
    }
}

async fn accept_loop<T: Transport>(inner: Arc<Inner<T>>, mut listener: T::Listener) {
    loop {
        let accepted = tokio::select! {
            _ = inner.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((io, addr)) => {
                let Ok(permit) = inner.inbound.clone().try_acquire_owned() else {
                    debug!(%addr, "inbound connection limit reached; closing socket");
                    drop(io);
                    continue;
                };
                let inner = inner.clone();
                // Each handshake runs apart, bounded by its own timeout, so a slow
                // peer delays nobody else.
                tokio::spawn(async move {
                    let timeout = inner.config.handshake_timeout;
                    let shaken = tokio::select! {
                        _ = inner.shutdown.cancelled() => return,
                        r = noise::handshake(io, &inner.identity, Role::Responder, timeout) => r,
                    };
                    match shaken {
                        Ok((stream, peer)) => {
                            inner.install(stream, peer, addr, Direction::Inbound, Some(permit));
                        }
                        Err(e) => info!(%addr, error = %e, "inbound handshake failed"),
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    debug!(node = %inner.node_id, "listener closed");
}

enum Step {
    Inbound(yamux::Stream),
    Failed(yamux::ConnectionError),
    Eof,
}

type Yamux<S> = yamux::Connection<Compat<NoiseStream<S>>>;

/// Makes progress on a connection: hands out requested outbound streams and
/// returns the next inbound stream or the end.
fn step<S: crate::transport::Io>(
    cx: &mut Context<'_>,
    connection: &mut Yamux<S>,
    opens: &mut mpsc::Receiver<OpenReply>,
    queue: &mut VecDeque<OpenReply>,
) -> Poll<Step> {
    while let Poll::Ready(Some(reply)) = opens.poll_recv(cx) {
        queue.push_back(reply);
    }
    while let Some(front) = queue.front() {
        if front.is_closed() {
            queue.pop_front();
            continue;
        }
        match connection.poll_new_outbound(cx) {
            Poll::Ready(Ok(stream)) => {
                if let Some(reply) = queue.pop_front() {
                    let _ = reply.send(Ok(stream));
                }
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Step::Failed(e)),
            Poll::Pending => break,
        }
    }
    match connection.poll_next_inbound(cx) {
        Poll::Ready(Some(Ok(stream))) => Poll::Ready(Step::Inbound(stream)),
        Poll::Ready(Some(Err(e))) => Poll::Ready(Step::Failed(e)),
        Poll::Ready(None) => Poll::Ready(Step::Eof),
        Poll::Pending => Poll::Pending,
    }
}

/// The task that owns one connection until it ends.
async fn drive<T: Transport>(
    inner: Arc<Inner<T>>,
    conn: Arc<Conn>,
    mut connection: Yamux<T::Stream>,
    mut opens: mpsc::Receiver<OpenReply>,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let cfg = &inner.config;
    let tick = cfg
        .keepalive_interval
        .min(cfg.idle_timeout)
        .min(DUPLICATE_GRACE)
        .max(Duration::from_millis(20))
        / 2;
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ping = Instant::now();
    let mut queue = VecDeque::new();
    let peer = conn.peer;
    let (graceful, reason) = loop {
        tokio::select! {
            biased;
            _ = inner.shutdown.cancelled() => break (true, "shutting down"),
            _ = conn.closed.cancelled() => break (true, "closed locally"),
            step = poll_fn(|cx| step(cx, &mut connection, &mut opens, &mut queue)) => match step {
                Step::Inbound(stream) => {
                    let inner = inner.clone();
                    let conn = conn.clone();
                    tokio::spawn(serve_stream(inner, conn, stream));
                }
                Step::Failed(e) => {
                    warn!(%peer, error = %e, source = ?std::error::Error::source(&e).map(ToString::to_string), "connection failed");
                    break (false, "failed");
                }
                Step::Eof => break (false, "closed by peer"),
            },
            _ = ticker.tick() => {
                if let Some(idle) = conn.idle_for() {
                    if idle >= cfg.idle_timeout {
                        break (true, "idle");
                    }
                    if idle >= DUPLICATE_GRACE
                        && inner.primary(peer).is_some_and(|p| p.id != conn.id)
                    {
                        break (true, "duplicate");
                    }
                }
                if last_ping.elapsed() >= cfg.keepalive_interval {
                    last_ping = Instant::now();
                    tokio::spawn(keepalive(conn.clone(), cfg.request_timeout));
                }
            }
        }
    };
    conn.closed.cancel();
    inner.remove(&conn);
    drop(queue);
    opens.close();
    if graceful {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, poll_fn(|cx| connection.poll_close(cx))).await;
    }
    debug!(%peer, reason, "connection closed");
}

async fn keepalive(conn: Arc<Conn>, timeout: Duration) {
    let peer = conn.peer;
    let alive = tokio::time::timeout(timeout, async {
        let raw = conn.open_raw().await?;
        ping_stream(raw, peer).await
    })
    .await;
    if !matches!(alive, Ok(Ok(()))) && !conn.closed.is_cancelled() {
        info!(%peer, "keep-alive ping unanswered; closing connection");
        conn.closed.cancel();
    }
}

/// Reads an inbound stream's header and answers a ping or hands the stream to
/// the service.
async fn serve_stream<T: Transport>(inner: Arc<Inner<T>>, conn: Arc<Conn>, raw: yamux::Stream) {
    let peer = conn.peer;
    let mut stream = RpcStream::new(raw, peer);
    let header =
        tokio::time::timeout(inner.config.request_timeout, stream.recv::<StreamHeader>()).await;
    let header = match header {
        Ok(Ok(Some(header))) => header,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            info!(%peer, error = %e, "bad stream header");
            let _ = stream
                .send_error(&WireError::new(
                    WireErrorKind::BadRequest,
                    "bad stream header",
                ))
                .await;
            return;
        }
        Err(_) => {
            debug!(%peer, "no stream header in time");
            return;
        }
    };
    if header.version != PROTOCOL_VERSION {
        let msg = format!("protocol version {} is not supported", header.version);
        let _ = stream
            .send_error(&WireError::new(WireErrorKind::Unsupported, msg))
            .await;
        let _ = stream.finish().await;
        return;
    }
    match header.kind {
        StreamKind::Ping => {
            let _ = stream
                .send(&Pong {
                    version: PROTOCOL_VERSION,
                })
                .await;
            let _ = stream.finish().await;
        }
        StreamKind::Service => {
            let stream = stream.with_guard(StreamGuard::new(conn));
            inner.service.serve(peer, stream).await;
        }
    }
}
