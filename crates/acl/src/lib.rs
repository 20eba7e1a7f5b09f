//! keynode's access control: who may do what (SPEC §4).
//!
//! Permissions belong to a **gestalt**, not to one node: every member of a gestalt
//! (a node or an identity, a [`GestaltId`](keynode_core::GestaltId)) points at one
//! shared [`Permission`] record, so granting to one member grants to all. A record
//! holds [`GestaltAction`]s (`notify`, `scan`, `claim`) and per-vault
//! [`VaultAction`]s (`clone`, `pull`).
//!
//! Start from [`AclStore`], a blocking store in the node's encrypted LMDB
//! environment ([`Env`], see [`keynode_core::store`]), or [`AclManager`], a thin
//! actix actor whose [`messages`] map one to one onto the store's methods. The
//! decisions are plain functions in [`rules`]:
//!
//! - **merge**: when gestalts join, every member of every side holds the union
//!   of their records (beyond the reference, which updates one side only);
//! - **split**: both halves keep a copy of the record held before the split;
//! - a record nobody holds any more is deleted; granting to an unknown member adds
//!   it with a fresh record.
//!
//! The store keeps the graph's view of who belongs together only through these
//! calls: the agent feeds it the gestalt graph's events (`VertexAdded` →
//! [`AclStore::add_member`], `Linked` → [`AclStore::join`], `Unlinked` with a split
//! → [`AclStore::split`], `VertexRemoved` → [`AclStore::remove_member`]).
//!
//! The serving-side checks [`AclStore::may_vault`] and
//! [`AclStore::has_gestalt_action`] take the `NodeId` proven by the handshake and
//! cost one read transaction and two LMDB gets (vault actions are stored one row
//! per record and vault, so the check does not decode the record).
//!
//! ```no_run
//! # fn demo(env: keynode_acl::Env, a: keynode_core::NodeId, b: keynode_core::NodeId)
//! # -> Result<(), keynode_acl::AclError> {
//! use keynode_acl::{AclStore, GestaltAction, VaultAction};
//! use keynode_core::{GestaltId, VaultId};
//!
//! let acl = AclStore::open(env)?;
//! let vault = VaultId::generate();
//! acl.set_vault_action(&GestaltId::Node(a), vault, VaultAction::Pull)?;
//! acl.set_gestalt_action(&GestaltId::Node(b), GestaltAction::Scan)?;
//! // a and b join one gestalt: both hold the union.
//! acl.join(&[GestaltId::Node(a), GestaltId::Node(b)])?;
//! assert!(acl.may_vault(&b, vault, VaultAction::Pull)?);
//! assert!(acl.has_gestalt_action(&a, GestaltAction::Scan)?);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod error;
mod manager;
pub mod messages;
mod model;
pub mod rules;
mod store;

pub use error::AclError;
pub use manager::AclManager;
pub use messages::*;
pub use model::{ActionError, GestaltAction, PermId, Permission, VaultAction};
pub use store::{AclStore, DB_NAMES, Env, HOLDERS_DB, MEMBERS_DB, PERMS_DB, VAULTS_DB};
