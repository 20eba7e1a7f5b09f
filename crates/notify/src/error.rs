//! The errors of the store and of the manager's operations.

use keynode_core::NodeId;
use keynode_core::codec::CodecError;

use crate::{NotificationError, Rejection};

/// The store failed: nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// LMDB failed.
    #[error("storage: {0}")]
    Storage(#[from] keynode_core::store::heed3::Error),
    /// A stored value could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// A stored row is malformed.
    #[error("corrupt notification row in {0}")]
    Corrupt(&'static str),
    /// The blocking task running the operation failed.
    #[error("notification task failed: {0}")]
    Task(String),
}

/// A notification could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// It breaks a limit (message length, encoded size).
    #[error(transparent)]
    Invalid(#[from] NotificationError),
    /// The outbox could not store it.
    #[error("cannot queue notification")]
    Store(#[from] StoreError),
}

/// A received notification was not stored.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// Refused: final, and the only thing the sender may be told.
    #[error(transparent)]
    Refused(#[from] Rejection),
    /// Accepted but not stored (the sender should retry later; tell it no more
    /// than "unavailable").
    #[error("cannot store notification")]
    Store(#[from] StoreError),
}

/// A sender could not be blocked: nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The blocked set is at its cap
    /// ([`StoreConfig::blocked_cap`](crate::StoreConfig::blocked_cap)):
    /// unblock a sender first.
    #[error("cannot block {sender}: {cap} senders are blocked already")]
    Full {
        /// The sender that was to be blocked.
        sender: NodeId,
        /// The cap.
        cap: usize,
    },
    /// The store failed.
    #[error("cannot block sender")]
    Store(#[from] StoreError),
}
