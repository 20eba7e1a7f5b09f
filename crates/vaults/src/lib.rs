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
//! # Transfer
//!
//! Clone and pull are built from libgit2 primitives (it has no server side) as a
//! protocol between a serving store and a receiving store; the values are serde
//! types and the bytes go through plain `Read`s and sinks, so the agent carries
//! them over any stream and does the permission checks (on the serving side).
//!
//! 1. **Advert** (server): [`VaultStore::advertise`] → [`Advert`] { vault, name,
//!    head }.
//! 2. **Negotiation** (client): [`VaultStore::haves`] lists its head, the remote
//!    head of its last pull (`refs/remotes/origin/main`), then first-parent
//!    ancestors 1, 2, 4, 8… commits back and the root (at most [`MAX_HAVES`]), so
//!    a divergent pull resends about twice the history since the fork point, not
//!    all of it. [`want`] is the advertised head, or `None` when the client has
//!    it (stop: up to date).
//! 3. **Pack** (server): [`VaultStore::send_pack`] refuses a want that is not
//!    its head or in its history ([`NotServed`](VaultError::NotServed): a client
//!    never reads history it was not shown), walks from the want hiding the
//!    haves it knows, inserts each new commit, tree and blob (trees and blobs
//!    with their paths, which keeps packs as small as git's), and streams the
//!    pack in chunks of at most [`PACK_CHUNK`] bytes; an empty pack when there is
//!    nothing new. It takes no vault lock. A pack in which fewer than one object
//!    in four is another version of a path already in it (a clone of a vault
//!    with a short history, most pulls: libgit2 makes no thin packs, so there is
//!    little to delta against) is written by the store itself
//!    (`repo/pack_out.rs`): no delta search, and each object's zlib level chosen
//!    from a sample, so incompressible secrets are stored rather than deflated.
//!    A long history goes through libgit2's pack builder and its delta search.
//! 4. **Receive** (client): [`VaultStore::receive_pull`] (clones only: it is the
//!    one write a clone accepts; an own vault has no remote to follow, so it is
//!    [`NotAClone`](VaultError::NotAClone)) or [`VaultStore::receive_clone`]. The
//!    pack is parsed as it streams in (one object inflated at a time; deltas
//!    resolved against stored objects), every object sealed into the vault's
//!    encrypted object files; the parser checks what libgit2's indexer checks
//!    (zlib streams, sizes, delta bases, the trailing SHA-1, and that everything
//!    a tree or commit refers to is in the pack (clone) or in the pack or the
//!    vault (pull)). Then the advertised head must
//!    exist ([`MissingHead`](VaultError::MissingHead)), and a pull moves the
//!    branch with a compare-and-swap only if the new head descends from the
//!    current one ([`Diverged`](VaultError::Diverged) otherwise; a head that is
//!    an ancestor of the current one is [`PullOutcome::UpToDate`]). A clone is
//!    built aside and renamed into place, its metadata (new local id, the
//!    [`Remote`], the name or `name-1`, `name-2`…) written last in one
//!    transaction. A failed or interrupted transfer leaves the receiver as it
//!    was: no vault, directory or name for a clone; the same branch for a pull
//!    (objects of a refused pull stay, unreachable and harmless).
//!
//! [`VaultStore::fork`] copies any vault (hard-linking its immutable object
//! files) into a writable one with a new id, no remote and the same history,
//! named `<name>-fork` (then `-1`, `-2`…) unless named explicitly.
//! [`VaultStore::set_remote`] replaces a clone's remote (an explicit pull
//! source); note that giving an own vault a remote makes it read-only.
//!
//! **Memory** stays bounded whatever the vault size: every repository's config
//! caps libgit2's delta window ([`PACK_WINDOW_MEMORY`]) and delta cache
//! ([`PACK_DELTA_CACHE`], in libgit2 also the size above which objects skip the
//! delta search), the pack builder runs one thread, the indexer streams. What
//! remains is per object: libgit2 reads an object whole to pack it and, with
//! connectivity checks on, to index it, so the largest secret is held about
//! twice. Cloning 200 MiB of incompressible secrets grows the process's
//! anonymous memory (sender and receiver together) by under 10 MiB (test
//! `cloning_a_big_vault_keeps_memory_bounded`); libgit2's defaults (no window
//! limit, 512 MiB big-file threshold) grew it by 26 MiB and took 2.4× longer.
//! The store keeps repository handles open between operations (a few per
//! vault, `store/pool.rs`), and with them libgit2's object cache (commits and
//! trees; no blob). That cache is process-wide: the first repository the
//! store opens sets it to 1.5 MiB (`git2::opts::set_cache_max_size`; libgit2's
//! default is 256 MiB). An embedding application that wants another size
//! sets it after opening its store.
//!
//! **Housekeeping**: libgit2 has no gc; every pull adds a pack and every
//! commit loose objects, and each object lookup searches every pack. A clone
//! past [`MAX_PACKS`] packs has them rewritten into one by the next successful
//! pull (under the vault's writer lock, which pulls of one vault take in turn).
//! Planned, not built: a `repack(id)` for own vaults that also packs loose
//! objects (older than a grace period, since `write_blob` takes no lock) and
//! deletes them, geometric (merge the small packs only) rather than whole, and a
//! sweep of the indexer's temporary `pack_XXXXXX` files a crash can leave.
//!
//! With encrypted object files, the default, there are no libgit2 packs, so
//! `MAX_PACKS` and that consolidation only apply to the plain object database
//! kept for benchmarks. Locally written objects are one file each; a received
//! pack and a bulk import become one *bundle* each (a data file and an index
//! sorted by object id, sealed in blocks of 64 entries). A node keeps the
//! first id of each block in memory, 20 bytes per 64 objects, and the most
//! recently used 128 blocks across all vaults. Past [`MAX_BUNDLES`] bundles,
//! the pull or bulk import that made one more merges the smallest ones into
//! one, durably, before deleting them (skipped while a backup copies files;
//! it runs at a later call). So a clone that follows a busy vault for months
//! holds at most `MAX_BUNDLES` bundles, and its memory does not grow with
//! each pull.
//!
//! # Encryption at rest
//!
//! A stolen disk must not reveal a secret, a secret name or a vault name. The
//! metadata (names included) is in the node's LMDB environment, which
//! `keynode_core::store` encrypts page by page. The repositories hold the rest:
//! blob content, tree entries (secret names), commit messages (which list the
//! changed paths). libgit2 stores objects zlib-compressed in the clear, and
//! git2-rs cannot plug in a custom object database, so the private `repo`
//! module does, through libgit2's C backend interface (`repo/backend.rs`, the
//! crate's only `unsafe`): each repository opened by the store gets an object
//! database with one backend, the encrypted object files (`repo/objects.rs`).
//! We chose this over the alternatives:
//!
//! - *Encrypting blob content and names before git sees them* would keep the
//!   stock object database but make object ids depend on the node's key, so two
//!   nodes' histories of one vault would differ and clone/pull would need
//!   re-encryption and id mapping on every transfer.
//! - *Objects in LMDB* would put every blob write into the environment's one
//!   writer lock and its fsync, and large secrets into single LMDB values.
//! - *Object files* (chosen) keep git's model and ids (clone and pull between
//!   nodes work unchanged: packs are built from, and parsed into, plaintext
//!   objects in memory), write like libgit2's loose objects (temporary file,
//!   rename), and stream: a file is XChaCha20-Poly1305 in the STREAM
//!   construction over 64 KiB chunks, so secrets of any size are sealed and
//!   opened with bounded memory, and truncation or reordering is detected.
//!
//! Keys come from the node's data key ([`keynode_core::datakey`]): one for
//! sealing, one for naming (a file is named by a keyed BLAKE2b of the object id,
//! because a plain SHA-1 id would let whoever holds the disk confirm a guessed
//! secret). Visible on disk: vault ids, the number of objects and their
//! approximate sizes, and the commit ids in refs. libgit2 still re-hashes every
//! object it reads, so a file swapped for another is refused too. Abbreviated
//! commit ids are resolved by walking the history (object files cannot be
//! listed by prefix).
//!
//! All git2 calls live in one private module, `repo`.
//!
//! # Example
//!
//! ```no_run
//! # fn demo(env: keynode_vaults::Env, owner: keynode_core::NodeId) -> Result<(), Box<dyn std::error::Error>> {
//! use keynode_core::{SecretPath, VaultName};
//! use keynode_vaults::{Op, PutPolicy, VaultStore};
//!
//! // `env` is the node's LMDB environment (`keynode_core::store::open_env`), and
//! // the data key the one it was opened with (`keynode_core::datakey`).
//! let key = keynode_core::datakey::DataKey::generate();
//! let store = VaultStore::open("/var/lib/keynode/vaults".as_ref(), env, owner, &key)?;
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
mod transfer;

pub use error::VaultError;
pub use manager::VaultManager;
pub use messages::*;
pub use model::{
    BadBlobId, BlobId, CommitInfo, CommitOutcome, Entry, EntryKind, Op, PutPolicy, Remote,
    SecretStat, VaultMeta,
};
pub use revision::MIN_ABBREV;
pub use store::{
    BackupFile, DEFAULT_MAX_VAULT_BYTES, Env, FOLLOW_DB, Follow, HEAD_EVENTS, HeadChange,
    HeadEvents, META_DB, NAMES_DB, REPO_SUFFIX, TMP_PREFIX, TRASH_PREFIX, VaultStore, backup_files,
};
pub use transfer::{
    Advert, HAVES_WALK_LIMIT, MAX_BUNDLES, MAX_HAVES, MAX_PACKS, PACK_CHUNK, PACK_DELTA_CACHE,
    PACK_WINDOW_MEMORY, PackStats, PullOutcome, want,
};

/// Name of the hidden, empty file that keeps an otherwise empty directory in git.
/// Reserved: no secret path may contain it as a segment.
pub const DIR_MARKER: &str = ".keynode-keep";

/// Largest chunk [`VaultStore::read_secret`] hands to its sink, and the copy
/// buffer of [`VaultStore::write_blob`], in bytes (64 KiB).
pub const READ_CHUNK: usize = 64 * 1024;

/// Blobs up to this size that [`VaultStore::write_blobs`] writes together
/// share one file on disk; larger ones get a file each, as a streamed write.
pub const BUNDLED_BLOB: usize = 64 * 1024;

/// How many commits [`VaultStore::stat`] walks back to find the commit that last
/// changed a path, in commits; beyond it `last_commit` is `None`.
pub const STAT_HISTORY_LIMIT: usize = 1_000;
