//! The error of audit operations.

use keynode_core::codec::CodecError;

/// Why an audit operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log does not verify: `first_bad_seq` is the first entry that is
    /// altered, missing or out of place.
    #[error("audit log entry {first_bad_seq} is bad: {reason}")]
    Tampered {
        /// The first bad entry (for a missing entry: the seq that should be there).
        first_bad_seq: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// LMDB failed.
    #[error("storage: {0}")]
    Storage(#[from] keynode_core::store::heed3::Error),
    /// A value could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// The databases could not be created.
    #[error("corrupt audit store: {0}")]
    Corrupt(&'static str),
    /// The blocking task running the operation failed.
    #[error("audit task failed: {0}")]
    Task(String),
}
