//! The error of ACL operations.

use keynode_core::codec::CodecError;

/// Why an ACL operation failed. Checks and grants never fail for a missing
/// member: unknown members hold nothing, and granting adds them.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// LMDB failed.
    #[error("storage: {0}")]
    Storage(#[from] keynode_core::store::heed3::Error),
    /// A stored value could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// A stored row is malformed.
    #[error("corrupt acl row in {0}")]
    Corrupt(&'static str),
    /// The blocking task running the operation failed.
    #[error("acl task failed: {0}")]
    Task(String),
}
