//! keynode's network layer.
//!
//! A node talks to other nodes over TCP. Every connection is encrypted and
//! mutually authenticated with Noise, and carries many concurrent request/response
//! streams multiplexed with yamux. Start from [`Network`]: [`Network::start`]
//! listens, [`Network::call`] sends a typed request to a node and returns its
//! answer, [`Network::open`] gives a [`RpcStream`] for streaming transfers. What
//! the node answers is not this crate's business: other crates plug their
//! protocols in through one [`Service`], which receives each inbound stream with
//! the caller's NodeId as the handshake proved it.
//!
//! The layers, bottom up (wire format in `docs/PROTOCOL.md`):
//!
//! 1. [`transport`]: a [`Transport`] binds, accepts and dials byte streams
//!    ([`TcpTransport`]; [`MemoryTransport`] for in-process tests). Timers are
//!    `tokio::time` and randomness comes from a [`NetContext`], so a
//!    deterministic simulator can drive the same code.
//! 2. [`noise`]: the `Noise_XX_25519_ChaChaPoly_BLAKE2s` handshake and the
//!    encrypted [`NoiseStream`] after it.
//! 3. yamux over the `NoiseStream`: one connection per peer, one stream per
//!    request, per-stream flow control, at most [`MAX_STREAMS_PER_PEER`]
//!    streams.
//! 4. [`rpc`]: length-delimited, size-limited typed frames on each stream; errors
//!    that cross the wire are a closed enum ([`WireError`]).
//!
//! # Why XX with a signed static key, not IK
//!
//! A NodeId is an Ed25519 key, and Noise needs an X25519 static key. Each node
//! makes a fresh X25519 static key per process and signs it with its Ed25519 key;
//! the NodeId and the signature travel in the (encrypted) handshake payload, as
//! libp2p does. XX costs 1.5 round trips where IK costs one, but:
//!
//! - the listener needs no prior knowledge of the dialer, and the dialer learns
//!   and checks the listener's identity *before* revealing its own (XX sends the
//!   initiator's static key last), so a dialer aborts an impostor with
//!   [`NetError::UnexpectedPeer`] having disclosed nothing;
//! - the Ed25519 key is used only for signing, never converted into a
//!   Diffie-Hellman key (IK would need the X25519 form of the NodeId, Radicle's
//!   way), keeping the two uses of key material apart;
//! - connections are long-lived and reused, so the extra half round trip is paid
//!   once per peer, not per request.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use keynode_core::Keypair;
//! use keynode_net::{AddressBook, NetConfig, Network, NoService, PeerAddress, TcpTransport};
//!
//! # async fn example(env: keynode_net::book::Env, peer: keynode_core::NodeId) -> Result<(), Box<dyn std::error::Error>> {
//! let book = AddressBook::open(env)?;
//! book.add(peer, PeerAddress::new("node2.example", 4400))?;
//! let net = Network::start(
//!     Arc::new(Keypair::generate()),
//!     NetConfig::default(),
//!     TcpTransport,
//!     book,
//!     Arc::new(NoService),
//! )
//! .await?;
//! let rtt = net.ping(peer).await?;
//! let answer: String = net.call(peer, &"hello").await?;
//! println!("{rtt:?} {answer}");
//! net.shutdown().await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod actor;
pub mod book;
pub mod dht;
pub mod discovery;
pub mod network;
pub mod noise;
pub mod rpc;
pub mod transport;

pub use actor::NetworkManager;
pub use book::{AddressBook, AddressInfo, AddressSource, BookError, PeerAddress};
pub use dht::{DhtDiscovery, DhtSettings};
pub use discovery::{
    Discovery, DiscoveryError, MemoryDirectory, NodeRecord, RelayAddress, RenewalPointer,
};
pub use network::{
    ConnectionInfo, Direction, Found, IDLE_TIMEOUT, KEEPALIVE_INTERVAL, Lookup,
    MAX_INBOUND_CONNECTIONS, MAX_INBOUND_STRANGERS, MAX_STREAMS_PER_PEER, MAX_STREAMS_PER_STRANGER,
    NetConfig, NetContext, NetError, Network, NoService, PeerClass, REPUBLISH_INTERVAL,
    RelayLimits, Service,
};
pub use noise::{
    Entropy, HANDSHAKE_TIMEOUT, HandshakeError, NoiseStream, OsEntropy, SeededEntropy,
};
pub use rpc::{
    DEFAULT_RECEIVE_BUDGET, MAX_MESSAGE, REQUEST_TIMEOUT, ReceiveBudget, RpcError, RpcStream,
    WireError, WireErrorKind,
};
pub use transport::{
    BoxListener, BoxStream, BoxTransport, Listener, MemoryTransport, TcpTransport, Transport,
};
