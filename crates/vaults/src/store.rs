//! [`VaultStore`]: the blocking vault storage every other part wraps.

mod backup;
mod chains;
mod follow;
mod metas;
mod pool;
mod transfer;

pub use backup::{BackupFile, backup_files};
pub use follow::{FOLLOW_DB, Follow, HEAD_EVENTS, HeadChange, HeadEvents};

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use keynode_core::codec::{decode, encode};
use keynode_core::datakey::DataKey;
use keynode_core::store::heed3::types::{Bytes, Str};
use keynode_core::store::heed3::{self, CommitOrAbort, EncryptedDatabase as Database};
use keynode_core::{Clock, NodeId, SecretPath, SystemClock, VaultId, VaultName};

use crate::repo::{Author, ObjectKeys, Objects, Repo};
use crate::{
    BlobId, CommitInfo, CommitOutcome, Entry, Op, Remote, SecretStat, VaultError, VaultMeta,
};

/// The LMDB environment the store keeps its metadata in: the node's encrypted
/// environment ([`keynode_core::store::open_env`]) with `max_dbs` of at least 16.
pub use keynode_core::store::Env;

/// LMDB database of vault metadata: [`VaultId`] bytes → encoded [`VaultMeta`].
pub const META_DB: &str = "vaults.meta";
/// LMDB database of the name index: vault name → [`VaultId`] bytes.
pub const NAMES_DB: &str = "vaults.names";
/// Suffix of a vault's repository directory, `<vault id text>.git`.
pub const REPO_SUFFIX: &str = ".git";
/// Prefix of a repository being created; swept by [`VaultStore::open`].
pub const TMP_PREFIX: &str = ".tmp-";
/// Prefix of a repository being deleted; swept by [`VaultStore::open`].
pub const TRASH_PREFIX: &str = ".trash-";

type MetaDb = Database<'static, Bytes, Bytes>;
type NameDb = Database<'static, Str, Bytes>;

/// The vaults of one node: a bare git repository per vault under one directory,
/// and their metadata in LMDB.
///
/// Every method blocks (git and LMDB I/O) and takes `&self`; share the store in an
/// `Arc` and call it from blocking threads. Readers never wait; writers to one
/// vault take turns (a per-vault lock held from reading the head to moving the
/// branch); writers to different vaults run in parallel. Blob uploads
/// ([`write_blob`](Self::write_blob)) take no lock at all.
pub struct VaultStore {
    dir: PathBuf,
    env: Env,
    metas: MetaDb,
    names: NameDb,
    follows: MetaDb,
    heads: tokio::sync::broadcast::Sender<HeadChange>,
    owner: NodeId,
    objects: Objects,
    clock: Arc<dyn Clock>,
    locks: Mutex<HashMap<VaultId, Arc<Mutex<()>>>>,
    max_vault_bytes: u64,
    /// Mutations hold it shared; a backup takes it alone while it copies the
    /// state and lists the files (see `store/backup.rs`).
    quiesce: std::sync::RwLock<()>,
    /// A backup reading files holds it shared; deleting a repository's files
    /// takes it alone.
    deletions: std::sync::RwLock<()>,
    /// Idle repository handles, lent to operations (see `store/pool.rs`).
    repos: pool::RepoPool,
    /// First-parent chains kept for haves (see `store/chains.rs`).
    chains: chains::Chains,
    /// Every vault's metadata between writes (see `store/metas.rs`).
    cache: metas::MetaCache,
}

/// Default [`VaultStore::with_max_vault_bytes`]: 4 GiB.
pub const DEFAULT_MAX_VAULT_BYTES: u64 = 4 << 30;

// The store is shared across blocking threads.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<VaultStore>();
};

impl std::fmt::Debug for VaultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultStore")
            .field("dir", &self.dir)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

fn remove_path(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl VaultStore {
    /// Opens the vaults kept in `dir` (created if missing) for the node `owner`,
    /// their objects encrypted under keys derived from `key` (the node's data
    /// key; see the crate docs).
    ///
    /// Creates the LMDB databases [`META_DB`] and [`NAMES_DB`] in one write
    /// transaction, then sweeps what a crash can leave behind: temporary and
    /// trashed repositories, and repositories without a metadata row.
    pub fn open(
        dir: &Path,
        env: Env,
        owner: NodeId,
        key: &DataKey,
    ) -> Result<VaultStore, VaultError> {
        Self::open_with(dir, env, owner, Objects::Encrypted(ObjectKeys::new(key)))
    }

    /// Opens the store with libgit2's own, unencrypted object database: only
    /// for measuring what encryption costs (the benchmarks). Never for data.
    #[doc(hidden)]
    pub fn open_unencrypted_for_benchmarks(
        dir: &Path,
        env: Env,
        owner: NodeId,
    ) -> Result<VaultStore, VaultError> {
        Self::open_with(dir, env, owner, Objects::Git)
    }

    fn open_with(
        dir: &Path,
        env: Env,
        owner: NodeId,
        objects: Objects,
    ) -> Result<VaultStore, VaultError> {
        fs::create_dir_all(dir)?;
        let wtxn = env.write_txn()?;
        let created = env.create_databases_and_commit(wtxn, |opener, wtxn| {
            let metas: Database<'_, Bytes, Bytes> = opener.create_database(wtxn, Some(META_DB))?;
            let names: Database<'_, Str, Bytes> = opener.create_database(wtxn, Some(NAMES_DB))?;
            let follows: Database<'_, Bytes, Bytes> =
                opener.create_database(wtxn, Some(FOLLOW_DB))?;
            Ok::<_, heed3::Error>(CommitOrAbort::<_, ()>::Commit((metas, names, follows)))
        })?;
        let CommitOrAbort::Commit((metas, names, follows)) = created else {
            return Err(std::io::Error::other("vault databases were not created").into());
        };
        let store = VaultStore {
            dir: dir.to_owned(),
            env,
            metas,
            names,
            follows,
            heads: tokio::sync::broadcast::channel(HEAD_EVENTS).0,
            owner,
            objects,
            clock: Arc::new(SystemClock),
            locks: Mutex::new(HashMap::new()),
            max_vault_bytes: DEFAULT_MAX_VAULT_BYTES,
            quiesce: std::sync::RwLock::new(()),
            deletions: std::sync::RwLock::new(()),
            repos: pool::RepoPool::default(),
            chains: chains::Chains::default(),
            cache: metas::MetaCache::default(),
        };
        store.sweep()?;
        Ok(store)
    }

    /// Uses `clock` for creation times and commit times instead of the system
    /// clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Refuses received packs that would make a vault larger than `bytes`
    /// (its object files on disk plus what the pack adds, inflated):
    /// [`VaultError::VaultTooLarge`], nothing received.
    pub fn with_max_vault_bytes(mut self, bytes: u64) -> Self {
        self.max_vault_bytes = bytes;
        self
    }

    /// The size limit of a vault (see [`with_max_vault_bytes`](Self::with_max_vault_bytes)).
    pub fn max_vault_bytes(&self) -> u64 {
        self.max_vault_bytes
    }

    /// Bytes of vault `id`'s repository on disk (its object files, refs and
    /// index), as the size limit counts them.
    pub fn vault_bytes(&self, id: VaultId) -> Result<u64, VaultError> {
        let mut total = 0u64;
        let mut stack = vec![self.repo_path(id)];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let meta = entry.metadata()?;
                if meta.is_dir() {
                    stack.push(entry.path());
                } else {
                    total += meta.len();
                }
            }
        }
        Ok(total)
    }

    /// The node that owns this store and authors its commits.
    pub fn owner(&self) -> NodeId {
        self.owner
    }

    /// A handle on the repository of vault `id`: an idle one, or a new one.
    fn repo(&self, id: VaultId) -> Result<pool::Lent<'_>, VaultError> {
        self.repos
            .lend(id, || Repo::open(&self.repo_path(id), &self.objects))
    }

    /// Where the repository of vault `id` lives.
    pub fn repo_path(&self, id: VaultId) -> PathBuf {
        self.dir.join(format!("{id}{REPO_SUFFIX}"))
    }

    fn sweep(&self) -> Result<(), VaultError> {
        let mut rtxn = self.env.read_txn()?;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            let leftover = if name.starts_with(TMP_PREFIX) || name.starts_with(TRASH_PREFIX) {
                true
            } else if let Some(id) = name.strip_suffix(REPO_SUFFIX) {
                match id.parse::<VaultId>() {
                    Ok(id) => self.metas.get(&mut rtxn, id.as_bytes())?.is_none(),
                    Err(_) => false,
                }
            } else {
                false
            };
            if leftover {
                tracing::info!(path = %entry.path().display(), "removing leftover of an interrupted vault operation");
                remove_path(&entry.path())?;
            }
        }
        for item in self.metas.iter(&mut rtxn)? {
            let (_, bytes) = item?;
            let meta: VaultMeta = decode(bytes)?;
            let path = self.repo_path(meta.id);
            if !path.is_dir() {
                tracing::warn!(vault = %meta.id, "vault repository is missing");
            } else if let Err(e) = crate::repo::sweep_objects(&path) {
                tracing::warn!(vault = %meta.id, error = %e, "could not sweep unfinished object writes");
            } else {
                match crate::repo::migrate_objects(&path, &self.objects) {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(vault = %meta.id, bundles = n, "bundles rewritten in format 2")
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    fn author(&self) -> Author {
        let owner = self.owner.to_string();
        Author {
            email: format!("{owner}@keynode"),
            name: owner,
            time_s: i64::try_from(self.clock.now_ms() / 1000).unwrap_or(i64::MAX),
        }
    }

    /// The writer lock of vault `id`.
    fn writer(&self, id: VaultId) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        locks.entry(id).or_default().clone()
    }

    /// Held by every mutation: a backup waits for those in progress and
    /// pauses new ones while it copies the state (`store/backup.rs`). Never
    /// taken twice by one thread (a waiting backup would deadlock it).
    pub(crate) fn mutating(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.quiesce.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The metadata of a vault that may be written.
    fn writable(&self, id: VaultId) -> Result<VaultMeta, VaultError> {
        let meta = self.meta(id)?;
        if meta.remote.is_some() {
            return Err(VaultError::ReadOnly(meta.name));
        }
        Ok(meta)
    }

    /// Creates an empty vault: a repository with one commit of the empty tree.
    /// Fails with `VaultExists` if the name is taken.
    pub fn create(&self, name: &VaultName) -> Result<VaultMeta, VaultError> {
        let _q = self.mutating();
        let mut rtxn = self.env.read_txn()?;
        let taken = self.names.get(&mut rtxn, name.as_str())?.is_some();
        drop(rtxn);
        if taken {
            return Err(VaultError::VaultExists(name.clone()));
        }
        let id = VaultId::generate();
        let tmp = self.dir.join(format!("{TMP_PREFIX}{id}"));
        let path = self.repo_path(id);
        let built = Repo::init(
            &tmp,
            &self.objects,
            &self.author(),
            &format!("create vault {name}"),
        )
        .and_then(|()| Ok(fs::rename(&tmp, &path)?));
        if let Err(e) = built {
            let _ = remove_path(&tmp);
            return Err(e);
        }
        let meta = VaultMeta {
            id,
            name: name.clone(),
            created_ms: self.clock.now_ms(),
            remote: None,
        };
        match self.insert(&meta) {
            Ok(()) => Ok(meta),
            Err(e) => {
                let _ = remove_path(&path);
                Err(e)
            }
        }
    }

    /// Adds the metadata and name index rows of a new vault in one transaction.
    fn insert(&self, meta: &VaultMeta) -> Result<(), VaultError> {
        self.write_metas(|wtxn| {
            if self.names.get(wtxn, meta.name.as_str())?.is_some() {
                return Err(VaultError::VaultExists(meta.name.clone()));
            }
            self.names
                .put(wtxn, meta.name.as_str(), meta.id.as_bytes())?;
            self.metas.put(wtxn, meta.id.as_bytes(), &encode(meta)?)?;
            Ok(())
        })
    }

    /// Runs `change` in one write transaction and commits it (nothing is
    /// committed if it fails). Every write of the metadata or name tables
    /// goes through here: the metadata kept in memory is dropped once the
    /// transaction has ended, whatever became of it (see `store/metas.rs`).
    fn write_metas<T>(
        &self,
        change: impl FnOnce(&mut heed3::RwTxn<'_>) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let done = (|| {
            let mut wtxn = self.env.write_txn()?;
            let out = change(&mut wtxn)?;
            wtxn.commit()?;
            Ok(out)
        })();
        self.cache.changed();
        done
    }

    /// Every vault's metadata, from memory unless a write changed it since
    /// it was last read (see `store/metas.rs`).
    fn metas(&self) -> Result<Arc<metas::Metas>, VaultError> {
        self.cache.get(|| {
            let mut rtxn = self.env.read_txn()?;
            let mut all = Vec::new();
            for item in self.metas.iter(&mut rtxn)? {
                let (_, bytes) = item?;
                all.push(decode::<VaultMeta>(bytes)?);
            }
            Ok(all)
        })
    }

    /// All vaults, sorted by name.
    pub fn list(&self) -> Result<Vec<VaultMeta>, VaultError> {
        let mut out: Vec<VaultMeta> = self.metas()?.all().cloned().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The vault called `name_or_id`, or else the vault with that id text.
    pub fn resolve(&self, name_or_id: &str) -> Result<VaultMeta, VaultError> {
        let metas = self.metas()?;
        if VaultName::new(name_or_id).is_ok()
            && let Some(meta) = metas.named(name_or_id)
        {
            return Ok(meta.clone());
        }
        if let Ok(id) = name_or_id.parse::<VaultId>()
            && let Some(meta) = metas.get(id)
        {
            return Ok(meta.clone());
        }
        Err(VaultError::VaultNotFound(name_or_id.to_owned()))
    }

    /// The metadata of vault `id`.
    pub fn meta(&self, id: VaultId) -> Result<VaultMeta, VaultError> {
        self.metas()?
            .get(id)
            .cloned()
            .ok_or_else(|| VaultError::VaultNotFound(id.to_string()))
    }

    /// Applies `change` to the metadata of `id` in one write transaction.
    fn update(
        &self,
        id: VaultId,
        change: impl FnOnce(&mut heed3::RwTxn<'_>, &mut VaultMeta) -> Result<(), VaultError>,
    ) -> Result<(), VaultError> {
        let _q = self.mutating();
        self.write_metas(|wtxn| {
            let mut meta: VaultMeta = match self.metas.get(wtxn, id.as_bytes())? {
                Some(bytes) => decode(bytes)?,
                None => return Err(VaultError::VaultNotFound(id.to_string())),
            };
            change(wtxn, &mut meta)?;
            self.metas.put(wtxn, id.as_bytes(), &encode(&meta)?)?;
            Ok(())
        })
    }

    /// Renames vault `id` (metadata only). Fails with `VaultExists` if another
    /// vault has the name.
    pub fn rename(&self, id: VaultId, new_name: &VaultName) -> Result<(), VaultError> {
        self.update(id, |wtxn, meta| {
            if meta.name == *new_name {
                return Ok(());
            }
            if self.names.get(wtxn, new_name.as_str())?.is_some() {
                return Err(VaultError::VaultExists(new_name.clone()));
            }
            self.names.delete(wtxn, meta.name.as_str())?;
            self.names.put(wtxn, new_name.as_str(), id.as_bytes())?;
            meta.name = new_name.clone();
            Ok(())
        })
    }

    /// Sets or clears where vault `id` was cloned from; a vault with a remote is
    /// read-only.
    pub fn set_remote(&self, id: VaultId, remote: Option<Remote>) -> Result<(), VaultError> {
        self.update(id, |_, meta| {
            meta.remote = remote;
            Ok(())
        })
    }

    /// Deletes vault `id`: its metadata in one transaction, then its repository.
    /// Waits for a commit in progress on the vault.
    pub fn delete(&self, id: VaultId) -> Result<(), VaultError> {
        let _q = self.mutating();
        let lock = self.writer(id);
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.write_metas(|wtxn| {
            let meta: VaultMeta = match self.metas.get(wtxn, id.as_bytes())? {
                Some(bytes) => decode(bytes)?,
                None => return Err(VaultError::VaultNotFound(id.to_string())),
            };
            self.metas.delete(wtxn, id.as_bytes())?;
            self.names.delete(wtxn, meta.name.as_str())?;
            self.follows.delete(wtxn, id.as_bytes())?;
            Ok(())
        })?;
        // The vault is gone; what is left on disk is swept at the next open if
        // removing it fails now.
        let _files = self
            .deletions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let trash = self.dir.join(format!("{TRASH_PREFIX}{id}"));
        let removed = fs::rename(self.repo_path(id), &trash).and_then(|()| remove_path(&trash));
        if let Err(e) = removed {
            tracing::warn!(vault = %id, error = %e, "could not remove the repository of a deleted vault");
        }
        self.repos.forget(id);
        self.chains.forget(id);
        if let Objects::Encrypted(keys) = &self.objects {
            keys.forget(&self.repo_path(id));
        }
        self.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        Ok(())
    }

    /// The history of vault `id`, newest first, starting at revision `from` (the
    /// head by default), at most `depth` commits.
    pub fn log(
        &self,
        id: VaultId,
        depth: Option<usize>,
        from: Option<&str>,
    ) -> Result<Vec<CommitInfo>, VaultError> {
        self.meta(id)?;
        self.repo(id)?.log(depth, from)
    }

    /// Restores the content of revision `rev` by appending a commit with its
    /// tree; `Unchanged` if the head already has that content.
    pub fn version(&self, id: VaultId, rev: &str) -> Result<CommitOutcome, VaultError> {
        let _q = self.mutating();
        self.writable(id)?;
        let repo = self.repo(id)?;
        let lock = self.writer(id);
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let outcome = repo.restore(rev, &self.author())?;
        self.announce(id, &outcome);
        Ok(outcome)
    }

    /// Tells head listeners about a commit that moved the branch.
    fn announce(&self, id: VaultId, outcome: &CommitOutcome) {
        if let CommitOutcome::Committed(info) = outcome {
            self.head_moved(id, info.oid.clone());
        }
    }

    /// Streams `data` into a new blob of vault `id`, with bounded memory whatever
    /// its size. The blob is part of no version until an [`Op::Put`] commits it.
    pub fn write_blob(&self, id: VaultId, data: &mut dyn Read) -> Result<BlobId, VaultError> {
        self.writable(id)?;
        self.repo(id)?.write_blob(data)
    }

    /// Writes many blobs at once, in order (the small ones share one bundle on
    /// disk instead of a file each): what a bulk import uses before its one
    /// commit. Nothing refers to them until a commit does.
    ///
    /// Each call adds a bundle: past [`MAX_BUNDLES`](crate::MAX_BUNDLES), the
    /// smallest ones are merged before this returns.
    pub fn write_blobs(&self, id: VaultId, blobs: &[Vec<u8>]) -> Result<Vec<BlobId>, VaultError> {
        let _q = self.mutating();
        self.writable(id)?;
        let repo = self.repo(id)?;
        let ids = repo.write_blobs(blobs)?;
        let lock = self.writer(id);
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.consolidate(id, &repo);
        Ok(ids)
    }

    /// Rewrites the packs or merges the bundles of vault `id` when they are
    /// past their limit (see [`receive_pull`](Self::receive_pull)). The caller
    /// holds the vault's writer lock (forks and other consolidations wait) and
    /// a mutation guard. Skipped while a backup copies files: it runs at a
    /// later call. The write that called it is done, and a failed clean-up
    /// only leaves more files, so a failure is reported, not returned.
    pub(crate) fn consolidate(&self, id: VaultId, repo: &crate::repo::Repo) {
        let Ok(_files) = self.deletions.try_write() else {
            return;
        };
        if let Err(e) = repo
            .needs_consolidation()
            .and_then(|needed| if needed { repo.consolidate() } else { Ok(()) })
        {
            tracing::warn!(vault = %id, error = %e, "could not consolidate the objects of a vault");
        }
    }

    /// Applies `ops` in order as one commit; `Unchanged` (and no commit) if the
    /// result equals the head. Any failing op fails the whole commit.
    pub fn commit(&self, id: VaultId, ops: Vec<Op>) -> Result<CommitOutcome, VaultError> {
        let _q = self.mutating();
        self.writable(id)?;
        let repo = self.repo(id)?;
        let lock = self.writer(id);
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let outcome = repo.commit_ops(ops, &self.author())?;
        self.announce(id, &outcome);
        self.consolidate(id, &repo);
        Ok(outcome)
    }

    /// Streams the secret at `path` (in revision `at`, default the head) to `sink`
    /// in chunks of at most [`READ_CHUNK`](crate::READ_CHUNK) bytes; returns its
    /// size.
    pub fn read_secret(
        &self,
        id: VaultId,
        path: &SecretPath,
        at: Option<&str>,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, VaultError> {
        self.meta(id)?;
        self.repo(id)?.read_secret(path, at, sink)
    }

    /// One level of directory `dir` (the vault root if `None`) in revision `at`,
    /// sorted by name.
    pub fn list_secrets(
        &self,
        id: VaultId,
        dir: Option<&SecretPath>,
        at: Option<&str>,
    ) -> Result<Vec<Entry>, VaultError> {
        self.meta(id)?;
        self.repo(id)?.list(dir, at)
    }

    /// Details of the secret or directory at `path` in revision `at`.
    pub fn stat(
        &self,
        id: VaultId,
        path: &SecretPath,
        at: Option<&str>,
    ) -> Result<SecretStat, VaultError> {
        self.meta(id)?;
        self.repo(id)?.stat(path, at)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use keynode_core::Keypair;

    /// A store in a fresh temporary directory, with its own LMDB env.
    pub(crate) fn store() -> (tempfile::TempDir, Env, VaultStore) {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("db");
        fs::create_dir(&db).unwrap();
        let key = DataKey::from_bytes([7; 32]);
        let env = keynode_core::store::open_env(&db, &key, 1 << 28, 16).unwrap();
        let owner = Keypair::generate().node_id();
        let store = VaultStore::open(&tmp.path().join("vaults"), env.clone(), owner, &key).unwrap();
        (tmp, env, store)
    }

    struct Fixed(u64);
    impl Clock for Fixed {
        fn now_ms(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn metadata_and_name_index_move_together() {
        let (_tmp, env, store) = store();
        let meta = store.create(&VaultName::new("a").unwrap()).unwrap();
        store
            .rename(meta.id, &VaultName::new("b").unwrap())
            .unwrap();
        let mut rtxn = env.read_txn().unwrap();
        assert_eq!(store.names.get(&mut rtxn, "a").unwrap(), None);
        assert_eq!(
            store.names.get(&mut rtxn, "b").unwrap(),
            Some(&meta.id.as_bytes()[..])
        );
        let stored: VaultMeta = decode(
            store
                .metas
                .get(&mut rtxn, meta.id.as_bytes())
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(stored.name.as_str(), "b");
        drop(rtxn);
        store.delete(meta.id).unwrap();
        let rtxn = env.read_txn().unwrap();
        assert_eq!(store.names.len(&rtxn).unwrap(), 0);
        assert_eq!(store.metas.len(&rtxn).unwrap(), 0);
        assert!(store.locks.lock().unwrap().is_empty());
    }

    #[test]
    fn a_lost_name_race_leaves_no_repository() {
        let (tmp, _env, store) = store();
        let name = VaultName::new("taken").unwrap();
        store.create(&name).unwrap();
        // Simulate the second of two concurrent creates reaching its transaction.
        let meta = VaultMeta {
            id: VaultId::generate(),
            name: name.clone(),
            created_ms: 1,
            remote: None,
        };
        assert!(matches!(
            store.insert(&meta),
            Err(VaultError::VaultExists(_))
        ));
        assert!(matches!(
            store.create(&name),
            Err(VaultError::VaultExists(_))
        ));
        assert_eq!(fs::read_dir(tmp.path().join("vaults")).unwrap().count(), 1);
    }

    #[test]
    fn the_injected_clock_dates_vaults_and_commits() {
        let (_tmp, _env, store) = store();
        let store = store.with_clock(Arc::new(Fixed(1_700_000_000_123)));
        let meta = store.create(&VaultName::new("a").unwrap()).unwrap();
        assert_eq!(meta.created_ms, 1_700_000_000_123);
        let log = store.log(meta.id, None, None).unwrap();
        assert_eq!(log[0].time_ms, 1_700_000_000_000, "git keeps whole seconds");
        assert!(
            store
                .repo_path(meta.id)
                .ends_with(format!("{}.git", meta.id))
        );
    }

    /// Rewrites the format 2 bundles of the repository at `path` in format 1,
    /// as an older keynode left them.
    fn downgrade_bundles(path: &Path, objects: &Objects) -> usize {
        let Objects::Encrypted(keys) = objects else {
            unreachable!()
        };
        crate::repo::downgrade_bundles_for_tests(path, keys)
    }

    #[test]
    fn an_older_nodes_bundles_are_rewritten_at_open() {
        let (_a_tmp, _a_env, a) = store();
        let v = a.create(&VaultName::new("v").unwrap()).unwrap().id;
        let blob = a.write_blob(v, &mut &b"kn7mark value"[..]).unwrap();
        let mut ops = vec![Op::Put {
            path: SecretPath::new("s").unwrap(),
            blob,
            policy: crate::PutPolicy::Overwrite,
        }];
        // Enough that the clone's pack gets a bundle rather than the journal.
        for i in 0..6u8 {
            let big = vec![i; 60 * 1024];
            ops.push(Op::Put {
                path: SecretPath::new(&format!("big{i}")).unwrap(),
                blob: a.write_blob(v, &mut &big[..]).unwrap(),
                policy: crate::PutPolicy::Overwrite,
            });
        }
        a.commit(v, ops).unwrap();
        let advert = a.advertise(v).unwrap();
        let mut pack = Vec::new();
        a.send_pack(v, &advert.head, &[], &mut |c| {
            pack.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        let (tmp, env, b) = store();
        let remote = Remote {
            node: a.owner(),
            vault: v,
        };
        let c = b
            .receive_clone(&advert.name, remote, &advert.head, &mut &pack[..])
            .unwrap()
            .id;
        let path = b.repo_path(c);
        assert!(downgrade_bundles(&path, &b.objects) > 0);
        let owner = b.owner();
        drop(b);
        let b = VaultStore::open(
            &tmp.path().join("vaults"),
            env,
            owner,
            &DataKey::from_bytes([7; 32]),
        )
        .unwrap();
        let bundle_names = |path: &Path| -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(path.join("objects").join("bundles"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.retain(|n| !n.ends_with(".knb2") && !n.ends_with(".kni3"));
            names
        };
        assert_eq!(
            bundle_names(&path),
            Vec::<String>::new(),
            "older files left"
        );
        let read = |b: &VaultStore| {
            let mut out = Vec::new();
            b.read_secret(c, &SecretPath::new("s").unwrap(), None, &mut |c| {
                out.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
            out
        };
        assert_eq!(read(&b), b"kn7mark value");
        // Format 2 indexes (one sealed run, loaded whole) become format 3.
        let Objects::Encrypted(keys) = &b.objects else {
            unreachable!()
        };
        assert!(crate::repo::downgrade_indexes_for_tests(&path, keys) > 0);
        let env = b.env.clone();
        drop(b);
        let b = VaultStore::open(
            &tmp.path().join("vaults"),
            env,
            owner,
            &DataKey::from_bytes([7; 32]),
        )
        .unwrap();
        assert_eq!(
            bundle_names(&path),
            Vec::<String>::new(),
            "older files left"
        );
        assert_eq!(read(&b), b"kn7mark value");
    }

    #[test]
    fn a_vault_repository_holds_only_what_a_vault_uses() {
        let (_tmp, _env, a) = store();
        let v = a.create(&VaultName::new("v").unwrap()).unwrap().id;
        let path = a.repo_path(v);
        let mut names: Vec<String> = fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        // No sample hooks, description or info/exclude from git's templates.
        assert_eq!(
            names,
            ["HEAD", "config", "hooks", "info", "objects", "refs"]
        );
        for empty in ["hooks", "info"] {
            assert_eq!(
                fs::read_dir(path.join(empty)).unwrap().count(),
                0,
                "{empty}"
            );
        }
    }

    #[test]
    fn a_ref_lock_left_by_a_killed_process_is_swept_at_open() {
        let (tmp, env, a) = store();
        let v = a.create(&VaultName::new("v").unwrap()).unwrap().id;
        let put = |store: &VaultStore, value: &[u8]| {
            let blob = store.write_blob(v, &mut &value[..]).unwrap();
            store.commit(
                v,
                vec![Op::Put {
                    path: SecretPath::new("s").unwrap(),
                    blob,
                    policy: crate::PutPolicy::Overwrite,
                }],
            )
        };
        put(&a, b"one").unwrap();
        let lock = a.repo_path(v).join("refs").join("heads").join("main.lock");
        fs::write(&lock, b"").unwrap();
        // The branch moves in place (`repo/branch.rs`), so a lock file that
        // libgit2 would refuse does not stop a commit; other refs still go
        // through libgit2, so the sweep stays.
        assert!(matches!(
            put(&a, b"two").unwrap(),
            CommitOutcome::Committed(_)
        ));
        let owner = a.owner();
        drop(a);
        let a = VaultStore::open(
            &tmp.path().join("vaults"),
            env,
            owner,
            &DataKey::from_bytes([7; 32]),
        )
        .unwrap();
        assert!(!lock.exists());
        assert!(matches!(
            put(&a, b"three").unwrap(),
            CommitOutcome::Committed(_)
        ));
    }

    #[test]
    fn a_backup_holds_the_refs_of_its_pause_not_of_later_writes() {
        let (_tmp, _env, store) = store();
        let v = store.create(&VaultName::new("v").unwrap()).unwrap().id;
        let put = |store: &VaultStore, path: &str| {
            let blob = store.write_blob(v, &mut &b"x"[..]).unwrap();
            store
                .commit(
                    v,
                    vec![Op::Put {
                        path: SecretPath::new(path).unwrap(),
                        blob,
                        policy: crate::PutPolicy::Overwrite,
                    }],
                )
                .unwrap();
        };
        put(&store, "a");
        let head_at_pause = store.advertise(v).unwrap().head;
        let mut got: Vec<(String, Vec<u8>)> = Vec::new();
        let mut wrote = false;
        store
            .backup(|| Ok(()), &mut |file, data, size| {
                if !wrote {
                    // A write lands while the files are being read.
                    put(&store, "b");
                    wrote = true;
                }
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(data, &mut bytes)?;
                assert_eq!(bytes.len() as u64, size);
                got.push((file.name.clone(), bytes));
                Ok(())
            })
            .unwrap();
        assert_ne!(store.advertise(v).unwrap().head, head_at_pause);
        let main = got
            .iter()
            .find(|(n, _)| n.ends_with("refs/heads/main"))
            .map(|(_, b)| String::from_utf8(b.clone()).unwrap())
            .expect("the branch ref");
        assert_eq!(main.trim(), head_at_pause);
    }

    #[test]
    fn a_handle_kept_idle_sees_what_another_handle_wrote() {
        let (_tmp, _env, store) = store();
        let v = store.create(&VaultName::new("v").unwrap()).unwrap().id;
        let put = |data: &[u8]| {
            // A bundled blob (`write_blobs`) and a loose one, each committed.
            let blobs = store.write_blobs(v, &[data.to_vec()]).unwrap();
            let loose = store.write_blob(v, &mut &data[..]).unwrap();
            let op = |path: &str, blob| Op::Put {
                path: SecretPath::new(path).unwrap(),
                blob,
                policy: crate::PutPolicy::Overwrite,
            };
            store
                .commit(v, vec![op("bundled", blobs[0]), op("loose", loose)])
                .unwrap();
        };
        let read = |repo: &Repo, path: &str| {
            let mut out = Vec::new();
            let path = SecretPath::new(path).unwrap();
            repo.read_secret(&path, None, &mut |c| {
                out.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
            out
        };
        put(b"kn7mark one");
        // A handle lent (its caches warm) while another commits and bundles.
        let old = store.repo(v).unwrap();
        assert_eq!(read(&old, "bundled"), b"kn7mark one");
        put(b"kn7mark two");
        assert_eq!(read(&old, "bundled"), b"kn7mark two");
        assert_eq!(read(&old, "loose"), b"kn7mark two");
        assert_eq!(old.log(None, None).unwrap().len(), 3);
        drop(old);
        // Both handles are idle now; whichever comes next reads the same.
        assert_eq!(store.repos.idle(v), 2);
        assert_eq!(read(&store.repo(v).unwrap(), "bundled"), b"kn7mark two");
    }
}
