//! keynode's vault storage: git-backed vaults of secrets, their history and
//! metadata.
//!
//! A vault is a bare git repository with one linear branch, `refs/heads/main`,
//! kept at `<vaults dir>/<vault id>.git`; its metadata ([`VaultMeta`]: id, name,
//! creation time, remote) lives in LMDB, in the databases [`META_DB`] and
//! [`NAMES_DB`]. Start from [`VaultStore`], a blocking store that holds all the
//! logic and can be embedded alone, or from [`VaultManager`], a thin actix actor
//! that runs each store call on tokio's blocking pool (its [`messages`] map one to
//! one onto the store's methods).
//!
//! # Rules
//!
//! - **Every mutation is one commit built from trees**: blobs are written first
//!   ([`VaultStore::write_blob`], streamed, no lock held), then
//!   [`VaultStore::commit`] applies a list of [`Op`]s to the head tree, writes
//!   the commit, and moves the branch last with a compare-and-swap. There is no
//!   working tree, no index file and no dirty flag: a crash at any instant leaves
//!   the old version or the new one. A commit whose tree equals the head's makes
//!   no commit ([`CommitOutcome::Unchanged`]). Its message lists what changed,
//!   one line per op (`create secret db/password`, `update secret x`,
//!   `remove directory d`, `rename secret a -> b`, `create directory d`,
//!   `restore to 1a2b3c4`). Author and committer are the owner's NodeId
//!   (`<node id>@keynode`).
//! - **One writer per vault, many readers**: a per-vault lock is held from reading
//!   the head to moving the branch; readers open their own repository handle and
//!   never wait; different vaults are written in parallel.
//! - **History is append-only**: [`VaultStore::version`] restores an old tree as a
//!   new commit. Revisions are a full or abbreviated (at least
//!   [`MIN_ABBREV`] hex digits) commit id, `HEAD` or `HEAD~N`; anything else
//!   (ref names, `@{..}`, `a..b`, `rev:path`) is a
//!   [`BadRevision`](VaultError::BadRevision), as is a commit outside the
//!   branch's history.
//! - **Directories**: git has no empty directories, so [`Op::Mkdir`] writes an
//!   empty marker file named [`DIR_MARKER`] into the new directory. Listings and
//!   stats hide it, and no op may name it
//!   ([`Reserved`](VaultError::Reserved)). A directory whose last entry is
//!   removed disappears.
//! - **Clones are read-only**: a vault with a [`Remote`] refuses commits, restores
//!   and blob writes with [`ReadOnly`](VaultError::ReadOnly).
//! - **Crash leftovers** (a half-created or half-deleted repository, a repository
//!   without metadata) are swept by [`VaultStore::open`].
//!
//! All git2 calls live in one private module, the seam where encryption at rest
//! will slot in.
//!
//! # Example
//!
//! ```no_run
//! # fn demo(env: keynode_vaults::Env, owner: keynode_core::NodeId) -> Result<(), Box<dyn std::error::Error>> {
//! use keynode_core::{SecretPath, VaultName};
//! use keynode_vaults::{Op, PutPolicy, VaultStore};
//!
//! // `env` is the node's LMDB environment (opened with `read_txn_without_tls()`).
//! let store = VaultStore::open("/var/lib/keynode/vaults".as_ref(), env, owner)?;
//! let vault = store.create(&VaultName::new("prod")?)?;
//!
//! let blob = store.write_blob(vault.id, &mut &b"hunter2"[..])?;
//! let path = SecretPath::new("db/password")?;
//! store.commit(vault.id, vec![Op::Put { path: path.clone(), blob, policy: PutPolicy::CreateNew }])?;
//!
//! let mut out = Vec::new();
//! store.read_secret(vault.id, &path, None, &mut |chunk| {
//!     out.extend_from_slice(chunk);
//!     Ok(())
//! })?;
//! assert_eq!(out, b"hunter2");
//! assert_eq!(store.log(vault.id, Some(1), None)?[0].message, "create secret db/password");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod error;
mod manager;
pub mod messages;
mod model;
mod repo;
mod revision;
mod store;

pub use error::VaultError;
pub use manager::VaultManager;
pub use messages::*;
pub use model::{
    BadBlobId, BlobId, CommitInfo, CommitOutcome, Entry, EntryKind, Op, PutPolicy, Remote,
    SecretStat, VaultMeta,
};
pub use revision::MIN_ABBREV;
pub use store::{Env, META_DB, NAMES_DB, REPO_SUFFIX, TMP_PREFIX, TRASH_PREFIX, VaultStore};

/// Name of the hidden, empty file that keeps an otherwise empty directory in git.
/// Reserved: no secret path may contain it as a segment.
pub const DIR_MARKER: &str = ".keynode-keep";

/// Largest chunk [`VaultStore::read_secret`] hands to its sink, and the copy
/// buffer of [`VaultStore::write_blob`], in bytes (64 KiB).
pub const READ_CHUNK: usize = 64 * 1024;

/// How many commits [`VaultStore::stat`] walks back to find the commit that last
/// changed a path, in commits; beyond it `last_commit` is `None`.
pub const STAT_HISTORY_LIMIT: usize = 1_000;
