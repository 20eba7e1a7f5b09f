//! Bundles: the objects of one received pack in one encrypted file.
//!
//! One file per object costs an inode each, and creating thousands of them is
//! what made a clone slow (the file system's inode allocator, not the cipher,
//! dominated the profile). So a received pack's objects up to
//! [`BUNDLED_OBJECT`] bytes are written into one *bundle*; larger ones still get
//! their own streamed file.
//!
//! ```text
//! bundles/<name>.knb2 = "KNB2" ‖ record*
//! record              = nonce (24) ‖ XChaCha20-Poly1305(kind ‖ content, aad = "KNB2" ‖ object id)
//! bundles/<name>.kni2 = nonce (24) ‖ XChaCha20-Poly1305(entry*, aad = "KNI2" ‖ name)
//! entry               = object id (20) ‖ offset (u64) ‖ record length (u32) ‖ kind (u8) ‖ size (u64)
//! ```
//!
//! The XChaCha20-Poly1305 key is the node's bundle key, used for nothing else.
//! Format 1 (`.knb`/`.kni`, magics `KNB1`/`KNI1`) sealed bundles under the key
//! that also derives each object file's key (a BLAKE2b key); [`v1`] reads such
//! bundles once, at open, and rewrites them in format 2.
//!
//! The index is written (to a temporary name, then renamed) after the bundle,
//! so a bundle without its index (a crash mid-receive, or a refused pack that
//! could not be removed) is never read; `VaultStore::open` sweeps such
//! leftovers. Each node path
//! keeps the loaded indexes of a repository in memory ([`BundleCache`]), so an
//! object lookup is a hash lookup and a read is one positioned read and one
//! decryption.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use git2::{ObjectType, Oid};
use lru::LruCache;
use rand::RngCore;

use crate::VaultError;

/// Received objects up to this size go into the pack's bundle.
pub(crate) const BUNDLED_OBJECT: usize = crate::BUNDLED_BLOB;
/// Directory of bundles under a repository's `objects`.
pub(crate) const BUNDLE_DIR: &str = "bundles";
const DATA_MAGIC: &[u8; 4] = b"KNB2";
const INDEX_MAGIC: &[u8; 4] = b"KNI2";
/// File name extensions of a bundle's data and index.
pub(crate) const DATA_EXT: &str = "knb2";
pub(crate) const INDEX_EXT: &str = "kni2";
const NONCE: usize = 24;
const ENTRY: usize = 20 + 8 + 4 + 1 + 8;

/// Where a bundled object is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Location {
    bundle: usize,
    offset: u64,
    len: u32,
    pub(crate) kind: ObjectType,
    pub(crate) size: u64,
}

/// The loaded indexes of one repository's bundles.
#[derive(Default)]
pub(crate) struct Bundles {
    files: Vec<PathBuf>,
    by_id: HashMap<Oid, Location>,
}

impl Bundles {
    pub(crate) fn get(&self, oid: Oid) -> Option<Location> {
        self.by_id.get(&oid).copied()
    }
}

/// Bundle files kept open, across the repositories of a node. Reading a
/// bundled object was an open, a read and a close: under load an agent
/// opened thousands of bundle files a second.
const OPEN_BUNDLES: usize = 128;

/// The loaded bundle indexes of every repository of a node, by `objects`
/// path, and the most recently read bundle files, open.
pub(crate) struct BundleCache {
    repos: Mutex<HashMap<PathBuf, Arc<RwLock<Bundles>>>>,
    files: Mutex<LruCache<PathBuf, Arc<fs::File>>>,
}

impl Default for BundleCache {
    fn default() -> Self {
        BundleCache {
            repos: Mutex::default(),
            files: Mutex::new(LruCache::new(
                NonZeroUsize::new(OPEN_BUNDLES).expect("OPEN_BUNDLES is not zero"),
            )),
        }
    }
}

impl BundleCache {
    /// The bundles of the repository whose objects are in `dir`, loading
    /// their indexes on first use.
    pub(crate) fn of(
        &self,
        dir: &Path,
        cipher: &XChaCha20Poly1305,
    ) -> Result<Arc<RwLock<Bundles>>, VaultError> {
        let mut repos = self.repos.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = repos.get(dir) {
            return Ok(b.clone());
        }
        let loaded = Arc::new(RwLock::new(load(dir, cipher)?));
        repos.insert(dir.to_owned(), loaded.clone());
        Ok(loaded)
    }

    /// Drops what is cached for `dir` (a deleted repository), closing its
    /// open bundle files.
    pub(crate) fn forget(&self, dir: &Path) {
        let mut repos = self.repos.lock().unwrap_or_else(PoisonError::into_inner);
        repos.retain(|path, _| !path.starts_with(dir));
        drop(repos);
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        let gone: Vec<PathBuf> = files
            .iter()
            .filter(|(path, _)| path.starts_with(dir))
            .map(|(path, _)| path.clone())
            .collect();
        for path in gone {
            files.pop(&path);
        }
    }

    /// The bundle file at `path`, open for reading.
    fn file(&self, path: &Path) -> io::Result<Arc<fs::File>> {
        let lock = || self.files.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = lock().get(path) {
            return Ok(file.clone());
        }
        // Opened without the lock: other readers go on meanwhile.
        let file = Arc::new(fs::File::open(path)?);
        lock().put(path.to_owned(), file.clone());
        Ok(file)
    }

    #[cfg(test)]
    fn open_files(&self) -> usize {
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

fn corrupt(what: &Path, why: &str) -> VaultError {
    VaultError::Corrupt(format!("bundle {}: {why}", what.display()))
}

fn load(dir: &Path, cipher: &XChaCha20Poly1305) -> Result<Bundles, VaultError> {
    let mut bundles = Bundles::default();
    let root = dir.join(BUNDLE_DIR);
    let entries = match fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(bundles),
        Err(e) => return Err(e.into()),
    };
    let mut names: Vec<String> = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(&format!(".{INDEX_EXT}")) {
            names.push(stem.to_owned());
        }
    }
    names.sort();
    for name in names {
        let index = root.join(format!("{name}.{INDEX_EXT}"));
        let entries = open_index(&fs::read(&index)?, &name, INDEX_MAGIC, cipher)
            .map_err(|why| corrupt(&index, why))?;
        let bundle = bundles.files.len();
        bundles.files.push(root.join(format!("{name}.{DATA_EXT}")));
        for (oid, mut location) in entries {
            location.bundle = bundle;
            bundles.by_id.insert(oid, location);
        }
    }
    Ok(bundles)
}

/// The entries of a sealed index (their `bundle` field 0).
fn open_index(
    sealed: &[u8],
    name: &str,
    magic: &[u8; 4],
    cipher: &XChaCha20Poly1305,
) -> Result<Vec<(Oid, Location)>, &'static str> {
    if sealed.len() < NONCE {
        return Err("index is truncated");
    }
    let aad = [magic.as_slice(), name.as_bytes()].concat();
    let plain = cipher
        .decrypt(
            XNonce::from_slice(&sealed[..NONCE]),
            Payload {
                msg: &sealed[NONCE..],
                aad: &aad,
            },
        )
        .map_err(|_| "index failed authentication")?;
    if plain.len() % ENTRY != 0 {
        return Err("index is malformed");
    }
    plain
        .chunks(ENTRY)
        .map(|e| {
            let oid = Oid::from_bytes(&e[..20]).map_err(|_| "bad id")?;
            let kind = super::objects::byte_kind(e[32]).ok_or("bad kind")?;
            let location = Location {
                bundle: 0,
                offset: u64::from_le_bytes(e[20..28].try_into().expect("8 bytes")),
                len: u32::from_le_bytes(e[28..32].try_into().expect("4 bytes")),
                kind,
                size: u64::from_le_bytes(e[33..41].try_into().expect("8 bytes")),
            };
            Ok((oid, location))
        })
        .collect()
}

/// Reads and opens the bundled object at `at`.
pub(crate) fn read(
    cache: &BundleCache,
    bundles: &Bundles,
    at: Location,
    oid: Oid,
    cipher: &XChaCha20Poly1305,
) -> Result<Vec<u8>, VaultError> {
    let path = &bundles.files[at.bundle];
    let mut sealed = vec![0u8; at.len as usize];
    cache.file(path)?.read_exact_at(&mut sealed, at.offset)?;
    open_record(&sealed, oid, at.kind, DATA_MAGIC, cipher).map_err(|why| corrupt(path, why))
}

fn open_record(
    sealed: &[u8],
    oid: Oid,
    kind: ObjectType,
    magic: &[u8; 4],
    cipher: &XChaCha20Poly1305,
) -> Result<Vec<u8>, &'static str> {
    if sealed.len() < NONCE {
        return Err("record is truncated");
    }
    let aad = [magic.as_slice(), oid.as_bytes()].concat();
    let mut plain = cipher
        .decrypt(
            XNonce::from_slice(&sealed[..NONCE]),
            Payload {
                msg: &sealed[NONCE..],
                aad: &aad,
            },
        )
        .map_err(|_| "record failed authentication")?;
    if plain.first().copied() != Some(super::objects::kind_byte(kind)) {
        return Err("record kind does not match the index");
    }
    plain.remove(0);
    Ok(plain)
}

/// A bundle being written by a pack receive. Its file is created with the
/// first object, so a pack that brings nothing new touches no file.
pub(crate) struct BundleWriter {
    name: String,
    dir: PathBuf,
    file: Option<BufWriter<fs::File>>,
    path: PathBuf,
    offset: u64,
    entries: Vec<u8>,
    written: HashMap<Oid, Location>,
}

impl BundleWriter {
    pub(crate) fn create(objects: &Path) -> BundleWriter {
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let name: String = id.iter().map(|b| format!("{b:02x}")).collect();
        Self::named(objects, name)
    }

    /// A writer of the bundle `name` (a migrated bundle keeps its name).
    fn named(objects: &Path, name: String) -> BundleWriter {
        let dir = objects.join(BUNDLE_DIR);
        let path = dir.join(format!("{name}.{DATA_EXT}"));
        BundleWriter {
            name,
            dir,
            file: None,
            path,
            offset: DATA_MAGIC.len() as u64,
            entries: Vec::new(),
            written: HashMap::new(),
        }
    }

    /// The bundle's file, created (with its magic) on first use.
    fn file(&mut self) -> io::Result<&mut BufWriter<fs::File>> {
        if self.file.is_none() {
            fs::create_dir_all(&self.dir)?;
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&self.path)?;
            let mut file = BufWriter::with_capacity(256 * 1024, file);
            file.write_all(DATA_MAGIC)?;
            self.file = Some(file);
        }
        Ok(self.file.as_mut().expect("just created"))
    }

    /// Appends an object.
    pub(crate) fn add(
        &mut self,
        oid: Oid,
        kind: ObjectType,
        data: &[u8],
        cipher: &XChaCha20Poly1305,
    ) -> Result<(), VaultError> {
        if self.written.contains_key(&oid) {
            return Ok(());
        }
        let mut nonce = [0u8; NONCE];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut msg = Vec::with_capacity(1 + data.len());
        msg.push(super::objects::kind_byte(kind));
        msg.extend_from_slice(data);
        let aad = [DATA_MAGIC.as_slice(), oid.as_bytes()].concat();
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &msg,
                    aad: &aad,
                },
            )
            .map_err(|_| io::Error::other("encryption failed"))?;
        let len = u32::try_from(NONCE + sealed.len())
            .map_err(|_| io::Error::other("object too large for a bundle"))?;
        let file = self.file()?;
        file.write_all(&nonce)?;
        file.write_all(&sealed)?;
        let location = Location {
            bundle: 0,
            offset: self.offset,
            len,
            kind,
            size: data.len() as u64,
        };
        self.entries.extend_from_slice(oid.as_bytes());
        self.entries.extend_from_slice(&self.offset.to_le_bytes());
        self.entries.extend_from_slice(&len.to_le_bytes());
        self.entries.push(super::objects::kind_byte(kind));
        self.entries.extend_from_slice(&location.size.to_le_bytes());
        self.offset += u64::from(len);
        self.written.insert(oid, location);
        Ok(())
    }

    /// An object appended earlier (a delta base).
    pub(crate) fn read(
        &mut self,
        oid: Oid,
        cipher: &XChaCha20Poly1305,
    ) -> Result<Option<(ObjectType, Vec<u8>)>, VaultError> {
        let Some(at) = self.written.get(&oid).copied() else {
            return Ok(None);
        };
        let file = self.file()?;
        file.flush()?;
        let mut sealed = vec![0u8; at.len as usize];
        file.get_ref().read_exact_at(&mut sealed, at.offset)?;
        let data = open_record(&sealed, oid, at.kind, DATA_MAGIC, cipher)
            .map_err(|why| corrupt(&self.path, why))?;
        Ok(Some((at.kind, data)))
    }

    /// Writes the index, which makes the bundle visible, and adds it to
    /// `cache`. A bundle that received nothing has no file and stays so.
    pub(crate) fn finish(
        mut self,
        cipher: &XChaCha20Poly1305,
        cache: &RwLock<Bundles>,
    ) -> Result<(), VaultError> {
        if !self.write_index(cipher, false)? {
            return Ok(());
        }
        let mut bundles = cache.write().unwrap_or_else(PoisonError::into_inner);
        let bundle = bundles.files.len();
        bundles.files.push(self.path.clone());
        for (oid, mut at) in self.written {
            at.bundle = bundle;
            bundles.by_id.insert(oid, at);
        }
        Ok(())
    }

    /// Flushes the data and writes the index; with `durable`, both reach the
    /// disk (and the directory entry) before this returns. `false` if the
    /// bundle received nothing (no file).
    fn write_index(
        &mut self,
        cipher: &XChaCha20Poly1305,
        durable: bool,
    ) -> Result<bool, VaultError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(false);
        };
        file.flush()?;
        if durable {
            file.get_ref().sync_all()?;
        }
        let mut nonce = [0u8; NONCE];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = [INDEX_MAGIC.as_slice(), self.name.as_bytes()].concat();
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &self.entries,
                    aad: &aad,
                },
            )
            .map_err(|_| io::Error::other("encryption failed"))?;
        let mut tmp = tempfile::Builder::new()
            .prefix("index")
            .tempfile_in(&self.dir)?;
        tmp.write_all(&nonce)?;
        tmp.write_all(&sealed)?;
        if durable {
            tmp.as_file().sync_all()?;
        }
        tmp.persist(self.dir.join(format!("{}.{INDEX_EXT}", self.name)))
            .map_err(|e| e.error)?;
        if durable {
            fs::File::open(&self.dir)?.sync_all()?;
        }
        Ok(true)
    }

    /// Removes the unfinished bundle (a refused pack).
    pub(crate) fn discard(self) {
        if let Some(file) = self.file {
            drop(file);
            let _ = fs::remove_file(&self.path);
        }
    }
}

pub(crate) mod v1;

#[cfg(test)]
mod tests {
    use super::super::objects::{ObjectFiles, ObjectKeys, object_id};
    use super::*;
    use keynode_core::datakey::DataKey;

    #[test]
    fn bundled_objects_read_back_and_tampering_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let files = ObjectFiles::new(dir.clone(), ObjectKeys::new(&DataKey::from_bytes([2; 32])));
        let cipher = files.keys().cipher();
        let mut writer = BundleWriter::create(&dir);
        let objects: Vec<(Oid, Vec<u8>)> = (0..50u32)
            .map(|i| {
                let data = format!("kn7mark secret {i}")
                    .repeat(i as usize)
                    .into_bytes();
                (object_id(ObjectType::Blob, &data), data)
            })
            .collect();
        for (oid, data) in &objects {
            writer.add(*oid, ObjectType::Blob, data, &cipher).unwrap();
        }
        // Readable while being written (delta bases).
        let (kind, back) = writer.read(objects[7].0, &cipher).unwrap().unwrap();
        assert_eq!((kind, &back), (ObjectType::Blob, &objects[7].1));
        assert!(
            !files.exists(objects[7].0),
            "visible before its index is written"
        );
        writer
            .finish(&cipher, files.bundles().unwrap().as_ref())
            .unwrap();
        for (oid, data) in &objects {
            assert_eq!(files.read(*oid).unwrap().unwrap().1, *data);
            assert_eq!(
                files.read_header(*oid).unwrap(),
                Some((ObjectType::Blob, data.len() as u64))
            );
        }
        // Nothing on disk in the clear.
        for entry in fs::read_dir(dir.join(BUNDLE_DIR)).unwrap() {
            let bytes = fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(7).any(|w| w == b"kn7mark"));
        }
        // A fresh cache (a restarted node) loads the index from disk.
        let fresh = ObjectFiles::new(dir.clone(), ObjectKeys::new(&DataKey::from_bytes([2; 32])));
        assert_eq!(fresh.read(objects[30].0).unwrap().unwrap().1, objects[30].1);
        // Another key does not open the index.
        let other = ObjectFiles::new(dir.clone(), ObjectKeys::new(&DataKey::from_bytes([3; 32])));
        assert!(matches!(
            other.read(objects[30].0),
            Err(VaultError::Corrupt(_))
        ));
        // A flipped bit in a record is refused.
        let data_file = fs::read_dir(dir.join(BUNDLE_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == DATA_EXT))
            .unwrap();
        let mut bytes = fs::read(&data_file).unwrap();
        let n = bytes.len();
        bytes[n - 5] ^= 1;
        fs::write(&data_file, &bytes).unwrap();
        assert!(matches!(
            files.read(objects[49].0),
            Err(VaultError::Corrupt(_))
        ));
        assert_eq!(files.read(objects[1].0).unwrap().unwrap().1, objects[1].1);
    }

    #[test]
    fn bundle_files_stay_open_bounded_and_close_with_their_repository() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let keys = ObjectKeys::new(&DataKey::from_bytes([2; 32]));
        let files = ObjectFiles::new(dir.clone(), keys.clone());
        let cipher = keys.cipher();
        let mut ids = Vec::new();
        for i in 0..OPEN_BUNDLES + 8 {
            let data = format!("kn7mark bundle {i}").into_bytes();
            let oid = object_id(ObjectType::Blob, &data);
            let mut writer = BundleWriter::create(&dir);
            writer.add(oid, ObjectType::Blob, &data, &cipher).unwrap();
            writer
                .finish(&cipher, files.bundles().unwrap().as_ref())
                .unwrap();
            ids.push((oid, data));
        }
        // Twice over: the second pass reads through the files kept open.
        for _ in 0..2 {
            for (oid, data) in &ids {
                assert_eq!(files.read(*oid).unwrap().unwrap().1, *data);
            }
        }
        assert_eq!(keys.bundles.open_files(), OPEN_BUNDLES);
        keys.forget(&dir);
        assert_eq!(keys.bundles.open_files(), 0);
    }

    #[test]
    fn the_sweep_removes_unfinished_writes_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let files = ObjectFiles::new(dir.clone(), ObjectKeys::new(&DataKey::from_bytes([2; 32])));
        let cipher = files.keys().cipher();
        let kept = object_id(ObjectType::Blob, b"kept");
        let mut done = BundleWriter::create(&dir);
        done.add(kept, ObjectType::Blob, b"kept", &cipher).unwrap();
        done.finish(&cipher, files.bundles().unwrap().as_ref())
            .unwrap();
        // A receive cut short: bundle data without an index.
        let mut cut = BundleWriter::create(&dir);
        let lost = object_id(ObjectType::Blob, b"lost");
        cut.add(lost, ObjectType::Blob, b"lost", &cipher).unwrap();
        drop(cut);
        // An object write cut short.
        fs::create_dir_all(dir.join("tmp")).unwrap();
        fs::write(dir.join("tmp").join("objXYZ"), b"partial").unwrap();
        assert_eq!(super::super::objects::sweep(&dir).unwrap(), 2);
        assert_eq!(fs::read_dir(dir.join(BUNDLE_DIR)).unwrap().count(), 2);
        assert_eq!(files.read(kept).unwrap().unwrap().1, b"kept");
        assert!(!files.exists(lost));
        assert_eq!(super::super::objects::sweep(&dir).unwrap(), 0);
    }

    #[test]
    fn a_pack_with_nothing_new_writes_no_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let files = ObjectFiles::new(dir.clone(), ObjectKeys::new(&DataKey::from_bytes([2; 32])));
        let writer = BundleWriter::create(&dir);
        writer
            .finish(&files.keys().cipher(), files.bundles().unwrap().as_ref())
            .unwrap();
        assert!(!dir.join(BUNDLE_DIR).exists());
    }

    #[test]
    fn a_discarded_bundle_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let keys = ObjectKeys::new(&DataKey::from_bytes([2; 32]));
        let mut writer = BundleWriter::create(&dir);
        let oid = object_id(ObjectType::Blob, b"x");
        writer
            .add(oid, ObjectType::Blob, b"x", &keys.cipher())
            .unwrap();
        writer.discard();
        assert_eq!(fs::read_dir(dir.join(BUNDLE_DIR)).unwrap().count(), 0);
    }

    fn bundle_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir.join(BUNDLE_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn blobs(n: u32) -> Vec<(Oid, ObjectType, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let data = format!("kn7mark old {i}")
                    .repeat(i as usize + 1)
                    .into_bytes();
                (object_id(ObjectType::Blob, &data), ObjectType::Blob, data)
            })
            .collect()
    }

    #[test]
    fn bundles_have_a_key_of_their_own() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let keys = ObjectKeys::new(&DataKey::from_bytes([2; 32]));
        let files = ObjectFiles::new(dir.clone(), keys.clone());
        let oid = object_id(ObjectType::Blob, b"x");
        let mut writer = BundleWriter::create(&dir);
        writer
            .add(oid, ObjectType::Blob, b"x", &keys.cipher())
            .unwrap();
        writer
            .finish(&keys.cipher(), files.bundles().unwrap().as_ref())
            .unwrap();
        let index = fs::read_dir(dir.join(BUNDLE_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == INDEX_EXT))
            .unwrap();
        let name = index.file_stem().unwrap().to_str().unwrap().to_owned();
        let sealed = fs::read(&index).unwrap();
        assert!(open_index(&sealed, &name, INDEX_MAGIC, &keys.cipher()).is_ok());
        // The object-file key (a BLAKE2b key) does not open a bundle.
        assert!(open_index(&sealed, &name, INDEX_MAGIC, &keys.legacy_cipher()).is_err());
    }

    #[test]
    fn format_1_bundles_are_rewritten_once_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let keys = ObjectKeys::new(&DataKey::from_bytes([2; 32]));
        let old = blobs(40);
        v1::write(&dir, "00aa", &old, &keys.legacy_cipher());
        v1::write(&dir, "00bb", &old[..3], &keys.legacy_cipher());
        // Format 1 is not read as such.
        let before = ObjectFiles::new(dir.clone(), ObjectKeys::new(&DataKey::from_bytes([2; 32])));
        assert!(!before.exists(old[0].0));
        assert_eq!(
            v1::migrate(&dir, &keys.legacy_cipher(), &keys.cipher()).unwrap(),
            2
        );
        assert_eq!(
            bundle_files(&dir),
            ["00aa.knb2", "00aa.kni2", "00bb.knb2", "00bb.kni2"]
        );
        let files = ObjectFiles::new(dir.clone(), ObjectKeys::new(&DataKey::from_bytes([2; 32])));
        for (oid, _, data) in &old {
            assert_eq!(files.read(*oid).unwrap().unwrap().1, *data);
        }
        for entry in fs::read_dir(dir.join(BUNDLE_DIR)).unwrap() {
            let bytes = fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(7).any(|w| w == b"kn7mark"));
        }
        assert_eq!(
            v1::migrate(&dir, &keys.legacy_cipher(), &keys.cipher()).unwrap(),
            0
        );
    }

    #[test]
    fn a_migration_cut_short_is_finished_at_the_next_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let keys = ObjectKeys::new(&DataKey::from_bytes([2; 32]));
        let old = blobs(5);
        // Cut after the format 2 copy: the old files are still there.
        v1::write(&dir, "00aa", &old, &keys.legacy_cipher());
        v1::migrate(&dir, &keys.legacy_cipher(), &keys.cipher()).unwrap();
        let copy = fs::read(dir.join(BUNDLE_DIR).join("00aa.knb2")).unwrap();
        v1::write(&dir, "00aa", &old, &keys.legacy_cipher());
        assert_eq!(super::super::objects::sweep(&dir).unwrap(), 0);
        assert_eq!(
            v1::migrate(&dir, &keys.legacy_cipher(), &keys.cipher()).unwrap(),
            0
        );
        assert_eq!(bundle_files(&dir), ["00aa.knb2", "00aa.kni2"]);
        assert_eq!(
            fs::read(dir.join(BUNDLE_DIR).join("00aa.knb2")).unwrap(),
            copy
        );
        // Cut while writing the copy: data without its index, swept, redone.
        fs::remove_file(dir.join(BUNDLE_DIR).join("00aa.kni2")).unwrap();
        v1::write(&dir, "00aa", &old, &keys.legacy_cipher());
        assert_eq!(super::super::objects::sweep(&dir).unwrap(), 1);
        assert_eq!(
            v1::migrate(&dir, &keys.legacy_cipher(), &keys.cipher()).unwrap(),
            1
        );
        // Cut between removing the old index and its data.
        v1::write(&dir, "00cc", &old, &keys.legacy_cipher());
        fs::remove_file(dir.join(BUNDLE_DIR).join("00cc.kni")).unwrap();
        assert_eq!(super::super::objects::sweep(&dir).unwrap(), 1);
        assert_eq!(bundle_files(&dir), ["00aa.knb2", "00aa.kni2"]);
        let files = ObjectFiles::new(dir.clone(), ObjectKeys::new(&DataKey::from_bytes([2; 32])));
        for (oid, _, data) in &old {
            assert_eq!(files.read(*oid).unwrap().unwrap().1, *data);
        }
    }

    #[test]
    fn a_format_1_bundle_under_another_key_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let keys = ObjectKeys::new(&DataKey::from_bytes([2; 32]));
        let other = ObjectKeys::new(&DataKey::from_bytes([3; 32]));
        v1::write(&dir, "00aa", &blobs(3), &other.legacy_cipher());
        assert_eq!(
            v1::migrate(&dir, &keys.legacy_cipher(), &keys.cipher()).unwrap(),
            0
        );
        assert_eq!(bundle_files(&dir), ["00aa.knb", "00aa.kni"]);
    }
}
