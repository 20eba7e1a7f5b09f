//! keynode's audit log: an append-only, hash-chained log signed by the node.
//!
//! Every entry is an [`AuditEntry`] `{ seq, prev, time_ms, event, signature }`:
//!
//! - `seq` counts from 0 without gaps;
//! - `prev` is the [`entry_hash`] of the previous entry (zeros for the first):
//!   SHA-256 over [`HASH_DOMAIN`] ‖ the codec encoding of the whole signed entry;
//! - `signature` is the node's Ed25519 signature over [`SIGN_DOMAIN`] ‖ the codec
//!   encoding of the entry without its signature.
//!
//! [`AuditStore::verify`] walks the log from seq 0 and names the first bad entry:
//! an edited entry fails its signature (and breaks the next link), a deleted or
//! removed middle entry leaves a gap, reordered entries sit under the wrong key
//! or break the links.
//!
//! **Truncation at the end cannot be detected from the log alone**: a prefix of
//! a valid chain is a valid chain. The store therefore also keeps the head
//! (last seq and hash) in a second database ([`HEAD_DB`]) written in the same
//! transaction as each entry, so removing the last entries without also
//! rewriting the head is caught. Someone who can rewrite the node's state can
//! still cut the tail and rewrite the head consistently; only a copy of the head
//! kept elsewhere (e.g. the last `audit verify` output) detects that.
//!
//! [`AuditManager`] is the thin actix actor over the store; its
//! [`messages`] map one to one onto the store's methods.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod error;
mod manager;
pub mod messages;
mod model;
mod store;

pub use error::AuditError;
pub use manager::AuditManager;
pub use messages::*;
pub use model::{
    AuditEntry, AuditEvent, HASH_DOMAIN, SIGN_DOMAIN, TransferOp, entry_hash, signed_bytes,
};
pub use store::{AuditStore, DB_NAMES, Env, HEAD_DB, HEAD_KEY, LOG_DB, seq_key};
