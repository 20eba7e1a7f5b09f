//! The network's public types: its errors, its configuration, what it takes
//! from outside, the service it runs for peers, and how it reports connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use keynode_core::{Clock, NodeId, SystemClock};
use serde::Serialize;

use crate::book::{BookError, PeerAddress};
use crate::discovery::{Discovery, RelayAddress};
use crate::noise::{self, Entropy, HandshakeError, OsEntropy};
use crate::rpc::{RpcError, RpcStream, WireError, WireErrorKind};

use super::{
    IDLE_TIMEOUT, KEEPALIVE_INTERVAL, MAX_INBOUND_CONNECTIONS, MAX_INBOUND_STRANGERS,
    MAX_STREAMS_PER_PEER, MAX_STREAMS_PER_STRANGER, REPUBLISH_INTERVAL, RelayLimits, SILENCE_PROBE,
};

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
    pub(crate) fn rpc(node: NodeId, e: RpcError) -> Self {
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
    /// Where to listen; port 0 picks a free port (see [`Network::local_addr`](crate::Network::local_addr)).
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
    /// A connection with open streams that has received nothing for this
    /// long is pinged; unanswered within twice this, it is closed (see
    /// [`SILENCE_PROBE`]).
    pub silence_probe: Duration,
    /// Most inbound connections; beyond it new sockets are closed at once.
    pub max_inbound_connections: usize,
    /// Most inbound connections from [`PeerClass::Stranger`]s (at most
    /// `max_inbound_connections`); beyond it a stranger is closed after its
    /// handshake, so known peers keep the rest.
    pub max_inbound_strangers: usize,
    /// Most concurrent streams per connection (1..=4096).
    pub max_streams_per_peer: usize,
    /// Most concurrent streams on a connection from a peer the service calls a
    /// [`PeerClass::Stranger`] (1..=`max_streams_per_peer`).
    pub max_streams_per_stranger: usize,
    /// Bytes that large frames being received may hold at once, over every
    /// stream (see [`ReceiveBudget`](crate::ReceiveBudget)).
    pub receive_budget: usize,
    /// Listen for nothing (as behind a NAT): the node dials out, and is
    /// reached only through its [`relays`](Self::relays).
    pub no_listen: bool,
    /// Addresses to publish for this node (default: the listening address,
    /// with a local IP in place of an unspecified one).
    pub advertise: Vec<PeerAddress>,
    /// Relays to keep a reservation at (and to publish).
    pub relays: Vec<RelayAddress>,
    /// Relay for others, within these limits (`None`: refuse to).
    pub relay_serve: Option<RelayLimits>,
    /// How often the node's record is published again while nothing
    /// changes.
    pub republish_interval: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            handshake_timeout: noise::HANDSHAKE_TIMEOUT,
            request_timeout: crate::rpc::REQUEST_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            keepalive_interval: KEEPALIVE_INTERVAL,
            silence_probe: SILENCE_PROBE,
            max_inbound_connections: MAX_INBOUND_CONNECTIONS,
            max_inbound_strangers: MAX_INBOUND_STRANGERS,
            max_streams_per_peer: MAX_STREAMS_PER_PEER,
            max_streams_per_stranger: MAX_STREAMS_PER_STRANGER,
            receive_budget: crate::rpc::DEFAULT_RECEIVE_BUDGET,
            no_listen: false,
            advertise: Vec::new(),
            relays: Vec::new(),
            relay_serve: None,
            republish_interval: REPUBLISH_INTERVAL,
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
    /// Where the node publishes its record and looks up others' when the
    /// address book has no working address (`None`: nowhere).
    pub discovery: Option<Arc<dyn Discovery>>,
}

impl Default for NetContext {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            entropy: Arc::new(OsEntropy),
            discovery: None,
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

    /// What `peer`, which has proved its id on a connection it opened to us,
    /// may hold open: asked when the connection arrives, and again with each
    /// stream while the answer is [`PeerClass::Stranger`] (a stranger becomes
    /// known when we trust it or share with it). Not asked for a peer whose
    /// address is in the book: that one is known. The default knows everyone.
    fn classify(&self, peer: NodeId) -> BoxFuture<'static, PeerClass> {
        let _ = peer;
        Box::pin(async { PeerClass::Known })
    }
}

/// How much an inbound connection may hold open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerClass {
    /// Up to [`NetConfig::max_streams_per_peer`] streams.
    Known,
    /// Anyone with a key: up to [`NetConfig::max_streams_per_stranger`]
    /// inbound streams served at once (more are reset, the connection stays),
    /// and one of [`NetConfig::max_inbound_strangers`] connections.
    Stranger,
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
    /// The relay it runs through (`None`: direct).
    #[serde(default)]
    pub relay: Option<NodeId>,
}

/// What [`Network::find`](super::Network::find) knows of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Found {
    /// The address book's addresses, each with where it came from.
    pub book: Vec<(PeerAddress, crate::book::AddressInfo)>,
    /// What the directory said.
    pub directory: Lookup,
}

/// The outcome of a directory lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Lookup {
    /// The node runs without a directory.
    Off,
    /// The node's record.
    Found(crate::discovery::NodeRecord),
    /// Nobody published a record for it.
    NotFound,
    /// The directory failed; why.
    Failed(String),
}
