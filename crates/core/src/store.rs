//! The node's one LMDB environment, encrypted at rest.
//!
//! Every actor keeps its state in named databases of one environment per node.
//! The environment is LMDB's `mdb.master3` with page-level encryption (through
//! `heed3`): every page (keys, values, the B-tree structure, free lists) is
//! sealed with ChaCha20-Poly1305 under a key derived from the node's
//! [`DataKey`], using LMDB's unique per-page nonces, and
//! authenticated on read. So no database needs its own codec-level encryption
//! and no key (a vault name, an identity) leaks through the key space.
//!
//! One consequence of page decryption shows in the API: reads take the read
//! transaction by `&mut` and a value borrowed from one read must be dropped (or
//! copied) before the next read in the same transaction.
//!
//! **One transaction at a time.** LMDB's encryption (`mdb.master3`) is not safe
//! with concurrent transactions: in a stress test (four threads reading while
//! one writes) about one read in 100,000 failed authentication (`CryptoFail`) or
//! found nothing, because decrypted pages go through buffers shared by the
//! environment. So [`Env`] hands out transactions only under its own mutex:
//! read and write transactions of one environment never overlap, in any
//! thread, and the `concurrent_readers_and_a_writer_see_consistent_data` test
//! holds it to that. Our transactions are short (microseconds; nothing awaits
//! or does I/O while holding one), so the cost is small. Never open a second
//! transaction while holding one in the same thread: it waits forever.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use heed3::{CommitOrAbort, EncryptedDatabaseOpener, OnCommit, RoTxn, RwTxn, WithoutTls};

use chacha20poly1305::{ChaCha20Poly1305, Key};

use crate::datakey::DataKey;

pub use heed3;

/// The environment every store opens its databases in: LMDB, encrypted, with
/// transactions serialised (see the module docs). Cheap to clone: every store
/// of a node holds the same environment.
#[derive(Clone)]
pub struct Env {
    inner: Arc<heed3::EncryptedEnv<WithoutTls>>,
    lock: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("path", &self.inner.path())
            .finish_non_exhaustive()
    }
}

/// A read transaction; derefs to heed3's [`RoTxn`].
pub struct ReadTxn<'e> {
    // Declared first, so it ends before the lock is released.
    txn: RoTxn<'e, WithoutTls>,
    _lock: MutexGuard<'e, ()>,
}

/// A write transaction; derefs to heed3's [`RwTxn`]. Dropping it aborts.
pub struct WriteTxn<'e> {
    txn: RwTxn<'e>,
    _lock: MutexGuard<'e, ()>,
}

impl<'e> Deref for ReadTxn<'e> {
    type Target = RoTxn<'e, WithoutTls>;
    fn deref(&self) -> &Self::Target {
        &self.txn
    }
}

impl DerefMut for ReadTxn<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.txn
    }
}

impl<'e> Deref for WriteTxn<'e> {
    type Target = RwTxn<'e>;
    fn deref(&self) -> &Self::Target {
        &self.txn
    }
}

impl DerefMut for WriteTxn<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.txn
    }
}

impl WriteTxn<'_> {
    /// Commits the transaction.
    pub fn commit(self) -> Result<(), heed3::Error> {
        let WriteTxn { txn, _lock } = self;
        txn.commit()
    }

    /// Aborts the transaction.
    pub fn abort(self) {
        let WriteTxn { txn, _lock } = self;
        txn.abort();
    }
}

impl Env {
    fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Begins a read transaction (waiting for any other transaction to end).
    pub fn read_txn(&self) -> Result<ReadTxn<'_>, heed3::Error> {
        let lock = self.lock();
        Ok(ReadTxn {
            txn: self.inner.read_txn()?,
            _lock: lock,
        })
    }

    /// Begins a write transaction (waiting for any other transaction to end).
    pub fn write_txn(&self) -> Result<WriteTxn<'_>, heed3::Error> {
        let lock = self.lock();
        Ok(WriteTxn {
            txn: self.inner.write_txn()?,
            _lock: lock,
        })
    }

    /// Creates (or opens) databases in `wtxn` and commits: see heed3's
    /// `EncryptedEnv::create_databases_and_commit`.
    pub fn create_databases_and_commit<'e, F, D, A, E>(
        &'e self,
        wtxn: WriteTxn<'e>,
        f: F,
    ) -> Result<CommitOrAbort<D::Committed, A>, E>
    where
        F: FnOnce(
            &EncryptedDatabaseOpener<'e, WithoutTls>,
            &mut RwTxn<'e>,
        ) -> Result<CommitOrAbort<D, A>, E>,
        D: OnCommit,
        E: From<heed3::Error>,
    {
        let WriteTxn { txn, _lock } = wtxn;
        self.inner.create_databases_and_commit(txn, f)
    }

    /// Opens existing databases in `rtxn`: see heed3's
    /// `EncryptedEnv::open_databases_and_commit`.
    pub fn open_databases_and_commit<'e, F, D, A, E>(
        &'e self,
        rtxn: ReadTxn<'e>,
        f: F,
    ) -> Result<CommitOrAbort<D::Committed, A>, E>
    where
        F: FnOnce(
            &EncryptedDatabaseOpener<'e, WithoutTls>,
            &RoTxn<'e, WithoutTls>,
        ) -> Result<CommitOrAbort<D, A>, E>,
        D: OnCommit,
        E: From<heed3::Error>,
    {
        let ReadTxn { txn, _lock } = rtxn;
        self.inner.open_databases_and_commit(txn, f)
    }

    /// Writes a consistent copy of the environment (every page as stored,
    /// still encrypted) to `file`: its data file, read whole while no
    /// transaction runs (every transaction takes the environment's lock, see
    /// the module), so the copy holds exactly the last committed state. LMDB's
    /// own `mdb_env_copy` fails on an encrypted environment (`EFAULT`). Other
    /// transactions wait meanwhile.
    pub fn copy_to_file(&self, file: &mut std::fs::File) -> Result<u64, heed3::Error> {
        let _lock = self.lock();
        let mut data = std::fs::File::open(self.inner.path().join("data.mdb"))?;
        Ok(std::io::copy(&mut data, file)?)
    }

    /// How many handles of this environment are alive (this one included).
    /// It closes when the last one goes.
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.lock)
    }

    /// The environment's directory.
    pub fn path(&self) -> &Path {
        self.inner.path()
    }

    /// How much of the map is in use: the high-water mark of pages written
    /// (LMDB reuses freed pages below it), against the map's size.
    pub fn usage(&self) -> Usage {
        let info = self.inner.info();
        let page = u64::from(self.inner.unnamed_database_stat().page_size);
        Usage {
            used: (info.last_page_number as u64 + 1) * page,
            map: info.map_size as u64,
        }
    }

    /// Closes the environment if this is its last handle: `None` while other
    /// clones are alive. See heed3's `prepare_for_closing`.
    pub fn prepare_for_closing(self) -> Option<heed3::EnvClosingEvent> {
        let Env { inner, lock } = self;
        drop(lock);
        Arc::try_unwrap(inner)
            .ok()
            .map(|env| env.prepare_for_closing())
    }
}

/// See [`Env::usage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of the map written so far (high-water mark).
    pub used: u64,
    /// The map's size: writes fail (`MDB_MAP_FULL`) when it is spent; reads
    /// keep working.
    pub map: u64,
}

impl Usage {
    /// `used` as a whole percentage of `map`.
    pub fn percent(&self) -> u8 {
        if self.map == 0 {
            return 100;
        }
        (self.used.saturating_mul(100) / self.map).min(100) as u8
    }
}

/// Default maximal map size (the file grows as needed, up to this).
pub const DEFAULT_MAP_SIZE: usize = 16 << 30;
/// Named databases an environment may hold.
pub const DEFAULT_MAX_DBS: u32 = 64;

/// Context for deriving the LMDB page key from the data key.
const PAGE_KEY_CONTEXT: &str = "keynode/1 lmdb pages";

/// Opens (creating if needed) the encrypted environment in `dir`.
///
/// Opening an existing environment with another key fails (LMDB reports an
/// encryption mismatch / authentication failure on the first page).
#[allow(unsafe_code)]
pub fn open_env(
    dir: &Path,
    key: &DataKey,
    map_size: usize,
    max_dbs: u32,
) -> Result<Env, heed3::Error> {
    let page_key = key.derive(PAGE_KEY_CONTEXT);
    let key = Key::clone_from_slice(page_key.expose());
    // SAFETY: LMDB requires that an environment is opened at most once per process
    // (heed3 checks this and returns `EnvAlreadyOpened`) and that its files are not
    // modified by other means while open. Callers own their directory: the agent
    // holds a lock on its node path; tests and benchmarks use fresh directories.
    let env = unsafe {
        heed3::EnvOpenOptions::new()
            .read_txn_without_tls()
            .map_size(map_size)
            .max_dbs(max_dbs)
            .open_encrypted::<ChaCha20Poly1305, _>(key, dir)
    }?;
    Ok(Env {
        inner: Arc::new(env),
        lock: Arc::new(Mutex::new(())),
    })
}

/// Opens an environment whose page "cipher" leaves pages as they are: the same
/// code path as [`open_env`] without the cryptography, only for measuring what
/// encryption costs (the benchmarks). Never for data.
#[doc(hidden)]
#[allow(unsafe_code)]
pub fn open_env_unencrypted_for_benchmarks(
    dir: &Path,
    map_size: usize,
    max_dbs: u32,
) -> Result<Env, heed3::Error> {
    // SAFETY: as in `open_env`.
    let inner = unsafe {
        heed3::EnvOpenOptions::new()
            .read_txn_without_tls()
            .map_size(map_size)
            .max_dbs(max_dbs)
            .open_encrypted::<null::NullCipher, _>(Default::default(), dir)
    }?;
    Ok(Env {
        inner: Arc::new(inner),
        lock: Arc::new(Mutex::new(())),
    })
}

/// An AEAD that does nothing (zero tags, plaintext unchanged), for benchmarks.
mod null {
    use chacha20poly1305::aead::consts::{U0, U12, U16, U32};
    use chacha20poly1305::aead::{
        AeadCore, AeadInPlace, Error, Key, KeyInit, KeySizeUser, Nonce, Tag,
    };

    #[derive(Clone)]
    pub(super) struct NullCipher;

    impl KeySizeUser for NullCipher {
        type KeySize = U32;
    }

    impl KeyInit for NullCipher {
        fn new(_: &Key<Self>) -> Self {
            NullCipher
        }
    }

    impl AeadCore for NullCipher {
        type NonceSize = U12;
        type TagSize = U16;
        type CiphertextOverhead = U0;
    }

    impl AeadInPlace for NullCipher {
        fn encrypt_in_place_detached(
            &self,
            _: &Nonce<Self>,
            _: &[u8],
            _: &mut [u8],
        ) -> Result<Tag<Self>, Error> {
            Ok(Tag::<Self>::default())
        }

        fn decrypt_in_place_detached(
            &self,
            _: &Nonce<Self>,
            _: &[u8],
            _: &mut [u8],
            _: &Tag<Self>,
        ) -> Result<(), Error> {
            Ok(())
        }
    }
}

/// Opens an encrypted environment in `dir` with default limits.
pub fn open_default(dir: &Path, key: &DataKey) -> Result<Env, heed3::Error> {
    open_env(dir, key, DEFAULT_MAP_SIZE, DEFAULT_MAX_DBS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use heed3::types::Bytes;

    type Table<'e> = heed3::EncryptedDatabase<'e, Bytes, Bytes>;

    /// Creates (or opens) the test database `t`.
    fn table(env: &Env) -> Result<Table<'_>, heed3::Error> {
        let wtxn = env.write_txn()?;
        env.create_databases_and_commit(wtxn, |o, w| {
            o.create_database::<Bytes, Bytes>(w, Some("t"))
                .map(CommitOrAbort::<_, ()>::Commit)
        })
        .map(CommitOrAbort::unwrap_commit)
    }

    fn value(i: u32) -> Vec<u8> {
        format!("value {i} MARKER").repeat(10).into_bytes()
    }

    #[test]
    fn concurrent_readers_and_a_writer_see_consistent_data() {
        let tmp = tempfile::tempdir().unwrap();
        let env = open_env(tmp.path(), &DataKey::from_bytes([1; 32]), 1 << 28, 4).unwrap();
        let db = table(&env).unwrap();
        let mut wtxn = env.write_txn().unwrap();
        for i in 0..64u32 {
            db.put(&mut wtxn, &i.to_be_bytes(), &value(i)).unwrap();
        }
        wtxn.commit().unwrap();
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let env = &env;
                s.spawn(move || {
                    for n in 0..3_000u32 {
                        if t == 0 && n % 20 == 0 {
                            let mut w = env.write_txn().unwrap();
                            let i = 64 + n;
                            db.put(&mut w, &i.to_be_bytes(), &value(i)).unwrap();
                            w.commit().unwrap();
                        }
                        let mut r = env.read_txn().unwrap();
                        let i = (n * 7 + t) % 64;
                        let got = db.get(&mut r, &i.to_be_bytes()).unwrap();
                        assert_eq!(got, Some(&value(i)[..]), "thread {t} read {n}");
                    }
                });
            }
        });
        let bytes = std::fs::read(tmp.path().join("data.mdb")).unwrap();
        assert!(!bytes.windows(6).any(|w| w == b"MARKER"));
    }

    #[test]
    fn only_the_benchmark_baseline_stores_pages_in_the_clear() {
        for encrypted in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            let env = if encrypted {
                open_env(tmp.path(), &DataKey::from_bytes([1; 32]), 1 << 24, 4)
            } else {
                open_env_unencrypted_for_benchmarks(tmp.path(), 1 << 24, 4)
            }
            .unwrap();
            let db = table(&env).unwrap();
            let mut wtxn = env.write_txn().unwrap();
            db.put(&mut wtxn, b"k", &value(1)).unwrap();
            wtxn.commit().unwrap();
            let mut rtxn = env.read_txn().unwrap();
            assert_eq!(db.get(&mut rtxn, b"k").unwrap(), Some(&value(1)[..]));
            drop(rtxn);
            let bytes = std::fs::read(tmp.path().join("data.mdb")).unwrap();
            let visible = bytes.windows(6).any(|w| w == b"MARKER");
            assert_eq!(visible, !encrypted);
        }
    }

    #[test]
    fn a_full_map_refuses_writes_reports_its_usage_and_still_serves_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let env = open_env(tmp.path(), &DataKey::from_bytes([1; 32]), 1 << 20, 4).unwrap();
        let db = table(&env).unwrap();
        let start = env.usage();
        assert!(start.percent() < 50, "{start:?}");
        let mut written = 0u32;
        let full = loop {
            let mut w = env.write_txn().unwrap();
            let put = db.put(&mut w, &written.to_be_bytes(), &[7u8; 2000]);
            match put.and_then(|()| w.commit()) {
                Ok(()) => written += 1,
                Err(e) => break e,
            }
            assert!(written < 10_000, "a 1 MiB map never filled");
        };
        assert!(
            matches!(full, heed3::Error::Mdb(heed3::MdbError::MapFull)),
            "{full}"
        );
        assert!(env.usage().percent() >= 90, "{:?}", env.usage());
        // Everything written before is still there to read.
        let mut r = env.read_txn().unwrap();
        for i in [0, written / 2, written - 1] {
            assert_eq!(
                db.get(&mut r, &i.to_be_bytes()).unwrap(),
                Some(&[7u8; 2000][..])
            );
        }
    }

    #[test]
    fn another_key_does_not_open_the_environment() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let env = open_env(tmp.path(), &DataKey::from_bytes([1; 32]), 1 << 24, 4).unwrap();
            table(&env).unwrap();
            env.prepare_for_closing().expect("last handle").wait();
        }
        let other = open_env(tmp.path(), &DataKey::from_bytes([2; 32]), 1 << 24, 4);
        let failed = match other {
            Err(_) => true,
            Ok(env) => table(&env).is_err(),
        };
        assert!(failed, "a wrong key opened the environment");
    }
}
