//! The messages [`VaultManager`] answers, one per [`VaultStore`] method, each
//! replying `Result<_, VaultError>` once the blocking call is done. Those that
//! stream through a pipe (a source or a sink) run outside the bound on short
//! jobs (see `keynode_core::exec`) unless their `waits` field says the pipe
//! is only memory.
//!
//! [`VaultStore`]: crate::VaultStore

use std::io::{self, Read};

use keynode_core::{SecretPath, VaultId, VaultName};

use crate::{
    Advert, BlobId, CommitInfo, CommitOutcome, Entry, Follow, Op, PackStats, PullOutcome, Remote,
    SecretStat, VaultError, VaultManager, VaultMeta,
};

/// Where [`ReadSecret`] sends the secret's chunks and [`SendPack`] the pack's.
pub type Sink = Box<dyn FnMut(&[u8]) -> io::Result<()> + Send>;

/// Where [`WriteBlob`] reads the blob from, and [`ReceivePull`] and
/// [`ReceiveClone`] the pack.
pub type Source = Box<dyn Read + Send>;

/// What a backup runs while vault mutations are paused (the copy of the
/// node's state).
pub type BackupDuring = Box<dyn FnOnce() -> io::Result<()> + Send>;

/// Where a backup sends each repository file.
pub type BackupSink =
    Box<dyn FnMut(&crate::BackupFile, &mut dyn Read, u64) -> io::Result<()> + Send>;

/// Declares a message and its `VaultManager` handler (see `keynode_core::store_message!`).
macro_rules! store_message {
    ($($t:tt)*) => {
        keynode_core::store_message!(VaultManager, VaultError; $($t)*);
    };
}

store_message! {
    /// Creates a vault ([`VaultStore::create`](crate::VaultStore::create)).
    #[derive(Debug, Clone)]
    pub struct CreateVault {
        /// Its name.
        pub name: VaultName,
    } -> VaultMeta;
    |store, msg| store.create(&msg.name)
}

store_message! {
    /// Lists all vaults, sorted by name.
    #[derive(Debug, Clone)]
    pub struct ListVaults {} -> Vec<VaultMeta>;
    |store, _msg| store.list()
}

store_message! {
    /// Finds a vault by name, then by id text.
    #[derive(Debug, Clone)]
    pub struct ResolveVault {
        /// A vault name or VaultId text.
        pub name_or_id: String,
    } -> VaultMeta;
    |store, msg| store.resolve(&msg.name_or_id)
}

store_message! {
    /// The metadata of one vault.
    #[derive(Debug, Clone)]
    pub struct GetVault {
        /// The vault.
        pub vault: VaultId,
    } -> VaultMeta;
    |store, msg| store.meta(msg.vault)
}

store_message! {
    /// Renames a vault.
    #[derive(Debug, Clone)]
    pub struct RenameVault {
        /// The vault.
        pub vault: VaultId,
        /// Its new name.
        pub name: VaultName,
    } -> ();
    |store, msg| store.rename(msg.vault, &msg.name)
}

store_message! {
    /// Deletes a vault and its repository.
    #[derive(Debug, Clone)]
    pub struct DeleteVault {
        /// The vault.
        pub vault: VaultId,
    } -> ();
    |store, msg| store.delete(msg.vault)
}

store_message! {
    /// Sets or clears a vault's remote (a vault with a remote is read-only).
    #[derive(Debug, Clone)]
    pub struct SetRemote {
        /// The vault.
        pub vault: VaultId,
        /// Where it was cloned from, or `None`.
        pub remote: Option<Remote>,
    } -> ();
    |store, msg| store.set_remote(msg.vault, msg.remote)
}

store_message! {
    /// A vault's history, newest first.
    #[derive(Debug, Clone)]
    pub struct Log {
        /// The vault.
        pub vault: VaultId,
        /// At most this many commits.
        pub depth: Option<usize>,
        /// Start at this revision instead of the head.
        pub from: Option<String>,
    } -> Vec<CommitInfo>;
    |store, msg| store.log(msg.vault, msg.depth, msg.from.as_deref())
}

store_message! {
    /// Restores a revision's content as a new commit.
    #[derive(Debug, Clone)]
    pub struct Version {
        /// The vault.
        pub vault: VaultId,
        /// The revision to restore.
        pub rev: String,
    } -> CommitOutcome;
    |store, msg| store.version(msg.vault, &msg.rev)
}

store_message! {
    /// Streams a blob into a vault, for a later [`Commit`].
    pub struct WriteBlob {
        /// The vault.
        pub vault: VaultId,
        /// The content.
        pub source: Source,
        /// Whether the source may wait on the other end of a pipe (a peer, a
        /// client): `false` when it holds the whole content in memory, so the call
        /// runs as a short job (see `keynode_core::exec`).
        pub waits: bool,
    } -> BlobId;
    waits if waits |store, msg| store.write_blob(msg.vault, &mut msg.source)
}

store_message! {
    /// Writes many blobs at once ([`VaultStore::write_blobs`](crate::VaultStore::write_blobs)).
    /// No `Debug`: it holds secret contents.
    pub struct WriteBlobs {
        /// The vault.
        pub vault: VaultId,
        /// The contents, in order.
        pub blobs: Vec<Vec<u8>>,
    } -> Vec<BlobId>;
    |store, msg| store.write_blobs(msg.vault, &msg.blobs)
}

store_message! {
    /// Applies ops as one commit.
    #[derive(Debug, Clone)]
    pub struct Commit {
        /// The vault.
        pub vault: VaultId,
        /// The changes, in order.
        pub ops: Vec<Op>,
    } -> CommitOutcome;
    |store, msg| store.commit(msg.vault, msg.ops)
}

store_message! {
    /// Streams a secret to a sink; replies with its size.
    pub struct ReadSecret {
        /// The vault.
        pub vault: VaultId,
        /// The secret.
        pub path: SecretPath,
        /// Read this revision instead of the head.
        pub at: Option<String>,
        /// Receives the content in chunks.
        pub sink: Sink,
        /// Whether the sink may wait on the other end of a pipe (a peer, a
        /// client): `false` when it keeps what it is given in memory, so the call
        /// runs as a short job (see `keynode_core::exec`).
        pub waits: bool,
    } -> u64;
    waits if waits |store, msg| store.read_secret(msg.vault, &msg.path, msg.at.as_deref(), &mut msg.sink)
}

store_message! {
    /// One directory level, sorted by name.
    #[derive(Debug, Clone)]
    pub struct ListSecrets {
        /// The vault.
        pub vault: VaultId,
        /// The directory; the root if `None`.
        pub dir: Option<SecretPath>,
        /// List this revision instead of the head.
        pub at: Option<String>,
    } -> Vec<Entry>;
    |store, msg| store.list_secrets(msg.vault, msg.dir.as_ref(), msg.at.as_deref())
}

store_message! {
    /// Details of a secret or directory.
    #[derive(Debug, Clone)]
    pub struct Stat {
        /// The vault.
        pub vault: VaultId,
        /// The secret or directory.
        pub path: SecretPath,
        /// Look in this revision instead of the head.
        pub at: Option<String>,
    } -> SecretStat;
    |store, msg| store.stat(msg.vault, &msg.path, msg.at.as_deref())
}

store_message! {
    /// Serving side: a vault's id, name and head
    /// ([`VaultStore::advertise`](crate::VaultStore::advertise)).
    #[derive(Debug, Clone)]
    pub struct Advertise {
        /// The vault.
        pub vault: VaultId,
    } -> Advert;
    |store, msg| store.advertise(msg.vault)
}

store_message! {
    /// Receiving side: the commits a vault has, for a pull's negotiation
    /// ([`VaultStore::haves`](crate::VaultStore::haves)).
    #[derive(Debug, Clone)]
    pub struct Haves {
        /// The vault.
        pub vault: VaultId,
    } -> Vec<String>;
    |store, msg| store.haves(msg.vault)
}

store_message! {
    /// Serving side: streams the pack a client needs to a sink
    /// ([`VaultStore::send_pack`](crate::VaultStore::send_pack)).
    pub struct SendPack {
        /// The vault.
        pub vault: VaultId,
        /// The commit the client wants (the advertised head), 40 hex digits.
        pub want: String,
        /// The commits the client has, 40 hex digits each.
        pub haves: Vec<String>,
        /// Receives the pack in chunks.
        pub sink: Sink,
        /// Whether the sink may wait on the other end of a pipe (a peer, a
        /// client): `false` when it keeps what it is given in memory, so the call
        /// runs as a short job (see `keynode_core::exec`).
        pub waits: bool,
    } -> PackStats;
    waits if waits |store, msg| store.send_pack(msg.vault, &msg.want, &msg.haves, &mut msg.sink)
}

store_message! {
    /// Receiving side: stores a pack into a clone and fast-forwards it
    /// ([`VaultStore::receive_pull`](crate::VaultStore::receive_pull)).
    pub struct ReceivePull {
        /// The clone.
        pub vault: VaultId,
        /// The advertised head, 40 hex digits.
        pub head: String,
        /// The pack, as the serving side sent it.
        pub pack: Source,
        /// Whether the pack may wait on the other end of a pipe (a peer, a
        /// client): `false` when it holds the whole pack in memory, so the call
        /// runs as a short job (see `keynode_core::exec`).
        pub waits: bool,
    } -> PullOutcome;
    waits if waits |store, msg| store.receive_pull(msg.vault, &msg.head, &mut msg.pack)
}

store_message! {
    /// Receiving side: makes a new clone from a pack
    /// ([`VaultStore::receive_clone`](crate::VaultStore::receive_clone)).
    pub struct ReceiveClone {
        /// Its name (numbered if taken).
        pub name: VaultName,
        /// Where it comes from.
        pub remote: Remote,
        /// The advertised head, 40 hex digits.
        pub head: String,
        /// The pack, as the serving side sent it.
        pub pack: Source,
        /// Whether the pack may wait on the other end of a pipe (a peer, a
        /// client): `false` when it holds the whole pack in memory, so the call
        /// runs as a short job (see `keynode_core::exec`).
        pub waits: bool,
        /// Whether the clone follows its remote.
        pub follow: Follow,
    } -> VaultMeta;
    waits if waits |store, msg| store.receive_clone_with(&msg.name, msg.remote, &msg.head, &mut msg.pack, msg.follow)
}

store_message! {
    /// Whether a clone follows its remote (`None`: not a clone).
    #[derive(Debug, Clone)]
    pub struct GetFollow {
        /// The vault.
        pub vault: VaultId,
    } -> Option<Follow>;
    |store, msg| store.follow(msg.vault)
}

store_message! {
    /// Every clone and whether it follows.
    #[derive(Debug, Clone)]
    pub struct Follows {} -> Vec<(VaultMeta, Follow)>;
    |store, _msg| store.follows()
}

store_message! {
    /// Sets whether a clone follows its remote.
    #[derive(Debug, Clone)]
    pub struct SetFollow {
        /// The clone.
        pub vault: VaultId,
        /// Whether it follows.
        pub follow: Follow,
    } -> ();
    |store, msg| store.set_follow(msg.vault, msg.follow)
}

store_message! {
    /// Copies a vault into a new writable vault without a remote
    /// ([`VaultStore::fork`](crate::VaultStore::fork)).
    #[derive(Debug, Clone)]
    pub struct Fork {
        /// The vault to copy (an own vault or a clone).
        pub vault: VaultId,
        /// The fork's name; `<name>-fork` (numbered if taken) by default.
        pub name: Option<VaultName>,
    } -> VaultMeta;
    |store, msg| store.fork(msg.vault, msg.name.as_ref())
}

store_message! {
    /// A consistent copy of the store ([`VaultStore::backup`](crate::VaultStore::backup)):
    /// `during` runs with mutations paused, then every repository file goes
    /// to `sink`.
    pub struct Backup {
        /// Runs while mutations are paused.
        pub during: BackupDuring,
        /// Receives each file.
        pub sink: BackupSink,
    } -> ();
    waits |store, msg| store.backup(msg.during, &mut msg.sink)
}
