//! The values vault storage takes and returns.

use std::fmt;
use std::str::FromStr;

use keynode_core::{NodeId, SecretPath, VaultId, VaultName};
use serde::{Deserialize, Serialize};

/// What a node knows about one of its vaults (stored in LMDB).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultMeta {
    /// The vault's local id.
    pub id: VaultId,
    /// The vault's local name, unique on this node.
    pub name: VaultName,
    /// When the vault was created here, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Where this vault was cloned from; a vault with a remote is read-only.
    pub remote: Option<Remote>,
}

/// The origin of a cloned vault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remote {
    /// The node that owns the original.
    pub node: NodeId,
    /// The vault's id on that node.
    pub vault: VaultId,
}

/// A blob written with [`VaultStore::write_blob`](crate::VaultStore::write_blob),
/// ready to be placed in a tree by [`Op::Put`]. Displays as 40 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlobId(pub(crate) [u8; 20]);

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({self})")
    }
}

/// A blob id is not 40 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid blob id: expected 40 hex digits")]
pub struct BadBlobId;

impl FromStr for BlobId {
    type Err = BadBlobId;
    fn from_str(s: &str) -> Result<Self, BadBlobId> {
        let bytes = s.as_bytes();
        if bytes.len() != 40 {
            return Err(BadBlobId);
        }
        let mut out = [0u8; 20];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|_| BadBlobId)?;
            out[i] = u8::from_str_radix(text, 16).map_err(|_| BadBlobId)?;
        }
        Ok(BlobId(out))
    }
}

/// What to do when [`Op::Put`] finds a secret already at its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutPolicy {
    /// Fail with [`SecretExists`](crate::VaultError::SecretExists).
    CreateNew,
    /// Replace the secret's content.
    Overwrite,
}

/// One change inside a commit. A commit applies its ops in order, all or nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Places a written blob at `path`, creating missing parent directories.
    /// Fails with `IsADirectory` if `path` is a directory, `NotADirectory` if a
    /// parent is a secret, `SecretExists` under [`PutPolicy::CreateNew`].
    Put {
        /// Where the secret goes.
        path: SecretPath,
        /// Its content, from `write_blob`.
        blob: BlobId,
        /// Create only, or also overwrite.
        policy: PutPolicy,
    },
    /// Creates an empty directory. Without `parents`, the parent must exist
    /// (`ParentNotFound`) and the path must not (`SecretExists`); with `parents`,
    /// missing parents are created and an existing directory is left as it is
    /// (like `mkdir -p`).
    Mkdir {
        /// The new directory.
        path: SecretPath,
        /// Create missing parents; accept an existing directory.
        parents: bool,
    },
    /// Removes a secret or a directory (`SecretNotFound`); a directory with
    /// content needs `recursive` (`DirectoryNotEmpty`).
    Remove {
        /// What to remove.
        path: SecretPath,
        /// Remove a directory with everything in it.
        recursive: bool,
    },
    /// Moves a secret or directory. `from` must exist (`SecretNotFound`), `to`
    /// must not (`SecretExists`) and its parent must (`ParentNotFound`).
    Rename {
        /// The current path.
        from: SecretPath,
        /// The new path.
        to: SecretPath,
    },
}

/// One commit of a vault's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    /// The commit id, 40 hex digits.
    pub oid: String,
    /// The author's name: the NodeId text of the node that made the commit.
    pub author: String,
    /// Commit time in milliseconds since the Unix epoch (git keeps whole seconds).
    pub time_ms: u64,
    /// What changed, one line per op.
    pub message: String,
}

/// The result of a mutation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommitOutcome {
    /// A new commit is the vault's head.
    Committed(CommitInfo),
    /// Nothing changed, so no commit was made.
    Unchanged,
}

impl CommitOutcome {
    /// The new commit, if one was made.
    pub fn commit(&self) -> Option<&CommitInfo> {
        match self {
            CommitOutcome::Committed(info) => Some(info),
            CommitOutcome::Unchanged => None,
        }
    }
}

/// Whether a path names a secret or a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// A secret.
    File,
    /// A directory.
    Dir,
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The entry's name (one path segment).
    pub name: String,
    /// Secret or directory.
    pub kind: EntryKind,
    /// A secret's size in bytes; `None` for directories.
    pub size: Option<u64>,
}

/// Details of one secret or directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretStat {
    /// The path asked about.
    pub path: SecretPath,
    /// Secret or directory.
    pub kind: EntryKind,
    /// A secret's size in bytes; a directory's number of visible entries.
    pub size: u64,
    /// The git object id of the content (blob or tree), 40 hex digits.
    pub blob: String,
    /// The git file mode (`0o100644` for secrets, `0o040000` for directories).
    pub mode: u32,
    /// The newest commit (at or before the revision asked about) that changed this
    /// path, if found within [`STAT_HISTORY_LIMIT`](crate::STAT_HISTORY_LIMIT) commits.
    pub last_commit: Option<CommitInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_id_text_round_trips() {
        let id = BlobId([0xab; 20]);
        let text = id.to_string();
        assert_eq!(text, "ab".repeat(20));
        assert_eq!(text.parse::<BlobId>().unwrap(), id);
        assert_eq!("ab".parse::<BlobId>(), Err(BadBlobId));
        assert_eq!("zz".repeat(20).parse::<BlobId>(), Err(BadBlobId));
        assert_eq!("é".repeat(20).parse::<BlobId>(), Err(BadBlobId));
    }

    #[test]
    fn metadata_round_trips_through_the_codec() {
        let meta = VaultMeta {
            id: VaultId::generate(),
            name: VaultName::new("prod").unwrap(),
            created_ms: 42,
            remote: None,
        };
        let bytes = keynode_core::codec::encode(&meta).unwrap();
        assert_eq!(
            keynode_core::codec::decode::<VaultMeta>(&bytes).unwrap(),
            meta
        );
    }
}
