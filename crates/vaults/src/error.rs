//! The one error type of vault storage.

use keynode_core::VaultName;
use keynode_core::codec::CodecError;

/// Why a vault or secret operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// No vault has this name or id.
    #[error("vault {0} does not exist")]
    VaultNotFound(String),
    /// Another vault already has this name.
    #[error("vault {0} already exists")]
    VaultExists(VaultName),
    /// No secret or directory at this path.
    #[error("no such secret or directory: {0}")]
    SecretNotFound(String),
    /// Something already exists at this path.
    #[error("{0} already exists")]
    SecretExists(String),
    /// The path is a directory where a secret was expected.
    #[error("{0} is a directory")]
    IsADirectory(String),
    /// The path (or one of its parents) is a secret where a directory was expected.
    #[error("{0} is not a directory")]
    NotADirectory(String),
    /// A directory with content was removed without `recursive`.
    #[error("directory {0} is not empty")]
    DirectoryNotEmpty(String),
    /// The parent directory of the path does not exist.
    #[error("parent directory of {0} does not exist")]
    ParentNotFound(String),
    /// The path uses the reserved directory marker name
    /// ([`DIR_MARKER`](crate::DIR_MARKER)).
    #[error("{0} uses the reserved name {marker}", marker = crate::DIR_MARKER)]
    Reserved(String),
    /// A directory cannot be moved inside itself.
    #[error("cannot move {0} inside itself")]
    MoveIntoItself(String),
    /// A commit referred to a blob that was never written to this vault.
    #[error("blob {0} does not exist in this vault")]
    BlobNotFound(String),
    /// The revision is malformed, unknown, ambiguous or not in this vault's history.
    #[error("bad revision {0}: expected a commit id of this vault, HEAD or HEAD~N")]
    BadRevision(String),
    /// The vault is a clone (it has a remote) and cannot be written.
    #[error("vault {0} is a clone and read-only; fork it with `keynode vaults fork {0}`")]
    ReadOnly(VaultName),
    /// A transfer asked for a commit that is neither the served vault's head nor
    /// in its history (nothing it was shown).
    #[error("{0} is not in the history of the served vault")]
    NotServed(String),
    /// A received pack is corrupt, truncated or incomplete; nothing was kept.
    #[error("received pack is invalid")]
    BadPack(#[source] git2::Error),
    /// A received history holds a tree this node refuses: an entry whose name
    /// is empty, `.`, `..`, `.git`, or holds `/`, NUL or a control character,
    /// or whose mode is not a file or a directory (symbolic links and
    /// submodules). Nothing was changed.
    #[error("received history holds a forbidden tree entry ({0})")]
    BadTree(&'static str),
    /// A received pack would make the vault larger than its size limit.
    #[error("the vault would exceed its size limit of {limit} bytes; nothing was received")]
    VaultTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// A received pack did not bring the advertised head commit.
    #[error("received pack lacks the advertised head {0}")]
    MissingHead(String),
    /// The remote's head does not descend from the vault's head: a pull only
    /// fast-forwards, so the vault was left unchanged.
    #[error(
        "history diverged: {ahead} local commits not in the remote, {behind} remote commits not here"
    )]
    Diverged {
        /// Commits of the vault's branch that the remote's head lacks.
        ahead: usize,
        /// Commits of the remote's head that the vault's branch lacks.
        behind: usize,
    },
    /// Only a clone (a vault with a remote) receives pulls.
    #[error("vault {0} is not a clone and has nothing to pull from")]
    NotAClone(VaultName),
    /// libgit2 failed.
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    /// LMDB failed.
    #[error("storage: {0}")]
    Storage(#[from] keynode_core::store::heed3::Error),
    /// A stored object failed authentication or is malformed: altered on disk,
    /// or not written under this node's data key.
    #[error("corrupt vault storage: {0}")]
    Corrupt(String),
    /// The file system (or a caller's reader or sink) failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A stored value could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
}
