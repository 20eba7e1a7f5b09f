//! keynode's shared vocabulary.
//!
//! Every other keynode crate speaks in these types: the ids a node, a vault or a
//! notification is known by ([`NodeId`], [`VaultId`], [`Tid`]), the vertices of the
//! gestalt graph ([`GestaltId`]: a node or a `provider:identity`), the node's Ed25519
//! [`Keypair`] and the encrypted [`keystore`] that keeps it at rest, the validated
//! names of vaults and secrets ([`VaultName`], [`SecretPath`]), and the one [`codec`]
//! that turns values into bytes for LMDB and the wire.
//!
//! Parsing is done once, at the edge: a `VaultName` or a `SecretPath` is the proof
//! that the string was checked, and every id parses from text without panicking.
//!
//! ```
//! use keynode_core::{Keypair, NodeId, SecretPath, VaultName};
//!
//! let key = Keypair::generate();
//! let id: NodeId = key.node_id();
//! assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
//!
//! let sig = key.sign(b"hello");
//! assert!(id.verify(b"hello", &sig).is_ok());
//!
//! assert!(VaultName::new("prod-db").is_ok());
//! assert!(SecretPath::new("../etc/passwd").is_err());
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod clock;
pub mod codec;
pub mod datakey;
pub mod encrypt;
pub mod exec;
pub mod filesig;
pub mod gestalt_id;
pub mod ids;
pub mod keys;
pub mod keystore;
mod macros;
pub mod names;
pub mod recovery;
pub mod sim;
#[cfg(feature = "store")]
pub mod store;

pub use clock::{Clock, SystemClock};
pub use gestalt_id::{GestaltId, GestaltIdError, IdentityId, ProviderId};
pub use ids::{IdError, NodeId, Tid, TidGenerator, VaultId};
pub use keys::{Keypair, Signature, SignatureError};
pub use names::{NameError, SecretPath, VaultName};
