//! The keynode agent: one node, running.
//!
//! [`Node::start`] takes a node path and a password, takes the node's lock, opens
//! (or on first start creates) its root key and its LMDB state, starts its actors
//! and serves local clients on a Unix socket (mode 0600) with the typed, versioned
//! protocol of [`api`]. [`Client`] speaks that protocol; the `keynode` CLI is
//! built on it. Several nodes can run in one process (each on its own node path),
//! which is how multi-node tests run.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use keynode_agent::{Client, Node, NodeConfig, api::Request};
//! use keynode_core::VaultName;
//!
//! // Inside an actix System (e.g. #[actix_rt::main]):
//! let node = Node::start(NodeConfig::new("/tmp/node-a", "password")).await?;
//! let mut client = Client::connect(&node.socket_path()).await?;
//! client.call(Request::VaultsCreate { name: VaultName::new("prod")? }).await?;
//! node.stop().await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod backup;
pub mod config;
mod convert;
mod ctx;
pub mod disk;
mod errors;
pub mod follow;
pub mod gestalts;
pub mod growth;
mod handlers;
pub mod metrics;
pub mod node;
pub mod notifications;
pub mod password;
pub mod peer;
mod pipe;
pub mod protocol;
pub mod renewal;
mod socket;
pub mod status;
#[cfg(feature = "test-utils")]
pub mod testing;
pub mod transfer;

pub use config::{NodeConfig, SeedNode, StartError, StartTimings, parse_seed_nodes};
pub use handlers::{MAX_ENV_BYTES, SHARED_ACTIONS};
/// The client protocol and client live in `keynode-client` (no storage
/// dependencies); they are re-exported here under their old paths.
pub use keynode_client::{Client, ClientError, Watch, api, client, paths};
pub use node::Node;
pub use paths::NodePaths;
pub use socket::{FRAME_TIMEOUT, MAX_CLIENTS};

/// A node's network: any transport (TCP unless [`NodeConfig::transport`] says
/// otherwise).
pub type AgentNetwork = keynode_net::Network<keynode_net::BoxTransport>;

/// What `agent start` takes for finding and reaching nodes.
pub use keynode_net::{DhtSettings, RelayAddress, RelayLimits};
pub use keynode_vaults::DEFAULT_MAX_VAULT_BYTES;
/// Default [`NodeConfig::max_state_bytes`]: 16 GiB.
pub const DEFAULT_MAX_STATE_BYTES: usize = disk::LMDB_MAP_SIZE;
