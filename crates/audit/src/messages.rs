//! The messages [`AuditManager`] answers, one per [`AuditStore`] method, each
//! replying `Result<_, AuditError>` once the blocking call is done.
//!
//! [`AuditStore`]: crate::AuditStore

use keynode_core::NodeId;

use crate::{AuditEntry, AuditError, AuditEvent, AuditManager};

/// Declares a message and its `AuditManager` handler (see `keynode_core::store_message!`).
macro_rules! store_message {
    ($($t:tt)*) => {
        keynode_core::store_message!(AuditManager, AuditError; $($t)*);
    };
}

store_message! {
    /// Appends an event; replies with the signed entry.
    #[derive(Debug, Clone)]
    pub struct Append {
        /// What happened.
        pub event: AuditEvent,
    } -> AuditEntry;
    |store, msg| store.append(msg.event)
}

store_message! {
    /// Reads at most `limit` entries, newest or oldest first.
    #[derive(Debug, Clone)]
    pub struct Read {
        /// At most this many (all without).
        pub limit: Option<usize>,
        /// Newest first (else oldest first).
        pub newest_first: bool,
    } -> Vec<AuditEntry>;
    |store, msg| store.read(msg.limit, msg.newest_first)
}

store_message! {
    /// Verifies the whole log against `owner`; replies with the entry count.
    #[derive(Debug, Clone)]
    pub struct Verify {
        /// The node whose key signed the log.
        pub owner: NodeId,
    } -> u64;
    |store, msg| store.verify(&msg.owner)
}
