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
//! bundles/<name>.kni3 = the index: entries sorted by id, sealed in blocks (see `index`)
//! ```
//!
//! The XChaCha20-Poly1305 key is the node's bundle key, used for nothing else.
//! Format 1 (`.knb`/`.kni`, magics `KNB1`/`KNI1`) sealed bundles under the key
//! that also derives each object file's key (a BLAKE2b key); [`v1`] reads such
//! bundles once, at open, and rewrites them. Format 2 indexes (`.kni2`) are
//! rewritten in format 3 at open too ([`index::migrate_v2`]).
//!
//! The index is written (to a temporary name, then renamed) after the bundle,
//! so a bundle without its index (a crash mid-receive, or a refused pack that
//! could not be removed) is never read; `VaultStore::open` sweeps such
//! leftovers.
//!
//! **Memory.** A node keeps, per bundle, the first id of each index block (20
//! bytes per 64 objects) and, across all repositories, the most recently used
//! [`OPEN_BLOCKS`] index blocks and [`OPEN_BUNDLES`] files. A lookup is a
//! binary search in memory and, when its block is not cached, one positioned
//! read and one decryption of about 2.6 KiB; a read is one more positioned
//! read and decryption.
//!
//! **Merging.** Every received pack adds a bundle, and a lookup asks each
//! bundle of the repository. Past [`MAX_BUNDLES`], [`merge`] rewrites the
//! smallest ones into one (records copied as they are once authenticated,
//! since a record's associated data names only its object), writes it
//! durably, then deletes them: each object is rewritten a few times over a
//! vault's life, not at every pull.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use git2::{ObjectType, Oid};
use lru::LruCache;
use rand::RngCore;

use crate::VaultError;
pub(crate) use index::{INDEX_EXT, INDEX_EXT_V2};
use index::{IndexWriter, Item, Outline};

/// Received objects up to this size go into the pack's bundle.
pub(crate) const BUNDLED_OBJECT: usize = crate::BUNDLED_BLOB;
/// Directory of bundles under a repository's `objects`.
pub(crate) const BUNDLE_DIR: &str = "bundles";
const DATA_MAGIC: &[u8; 4] = b"KNB2";
/// File name extension of a bundle's data.
pub(crate) const DATA_EXT: &str = "knb2";
const NONCE: usize = 24;
pub(crate) use crate::MAX_BUNDLES;

/// Where a bundled object's record is in its bundle.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Location {
    offset: u64,
    len: u32,
    pub(crate) kind: ObjectType,
    pub(crate) size: u64,
}

/// Distinguishes bundles in the node-wide block cache.
static NEXT_BUNDLE: AtomicU64 = AtomicU64::new(0);

/// One bundle as a node keeps it: its files and its index's outline.
#[derive(Debug)]
pub(crate) struct Bundle {
    id: u64,
    name: String,
    data: PathBuf,
    index: PathBuf,
    outline: Outline,
    /// Bytes of the data file.
    bytes: u64,
}

impl Bundle {
    fn new(root: &Path, name: &str, outline: Outline, bytes: u64) -> Bundle {
        Bundle {
            id: NEXT_BUNDLE.fetch_add(1, Ordering::Relaxed),
            name: name.to_owned(),
            data: root.join(format!("{name}.{DATA_EXT}")),
            index: root.join(format!("{name}.{INDEX_EXT}")),
            outline,
            bytes,
        }
    }
}

/// The bundles of one repository.
#[derive(Default)]
pub(crate) struct Bundles {
    list: Vec<Arc<Bundle>>,
}

impl Bundles {
    /// The bundle that holds `oid`, and where; the newest bundles are asked
    /// first.
    pub(crate) fn find(
        &self,
        cache: &BundleCache,
        oid: Oid,
        cipher: &XChaCha20Poly1305,
    ) -> Result<Option<(Arc<Bundle>, Location)>, VaultError> {
        for bundle in self.list.iter().rev() {
            if let Some(at) = cache.find(bundle, oid, cipher)? {
                return Ok(Some((bundle.clone(), at)));
            }
        }
        Ok(None)
    }

    /// Bundles in the repository.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Bytes this node keeps in memory for these bundles' indexes.
    #[cfg(test)]
    pub(crate) fn resident_bytes(&self) -> usize {
        self.list
            .iter()
            .map(|b| std::mem::size_of::<Bundle>() + b.outline.firsts.capacity() * 20)
            .sum()
    }
}

/// Bundle and index files kept open, across the repositories of a node.
/// Reading a bundled object was an open, a read and a close: under load an
/// agent opened thousands of bundle files a second.
pub(crate) const OPEN_BUNDLES: usize = 128;
/// Opened index blocks kept, across the repositories of a node (about 3 KiB
/// each).
pub(crate) const OPEN_BLOCKS: usize = 128;

/// A cached index block: its bundle's id and its number.
type BlockKey = (u64, usize);

/// The bundles of every repository of a node, by `objects` path, the most
/// recently read bundle and index files, open, and index blocks, opened.
pub(crate) struct BundleCache {
    repos: Mutex<HashMap<PathBuf, Arc<RwLock<Bundles>>>>,
    files: Mutex<LruCache<PathBuf, Arc<fs::File>>>,
    blocks: Mutex<LruCache<BlockKey, Arc<[Item]>>>,
}

impl Default for BundleCache {
    fn default() -> Self {
        let cap = |n| NonZeroUsize::new(n).expect("not zero");
        BundleCache {
            repos: Mutex::default(),
            files: Mutex::new(LruCache::new(cap(OPEN_BUNDLES))),
            blocks: Mutex::new(LruCache::new(cap(OPEN_BLOCKS))),
        }
    }
}

impl BundleCache {
    /// The bundles of the repository whose objects are in `dir`, loading
    /// their indexes' outlines on first use.
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
    /// open files.
    pub(crate) fn forget(&self, dir: &Path) {
        let mut repos = self.repos.lock().unwrap_or_else(PoisonError::into_inner);
        let gone: Vec<Arc<RwLock<Bundles>>> = repos
            .extract_if(|path, _| path.starts_with(dir))
            .map(|(_, b)| b)
            .collect();
        drop(repos);
        for bundles in gone {
            let bundles = bundles.read().unwrap_or_else(PoisonError::into_inner);
            for bundle in &bundles.list {
                self.close(bundle);
            }
        }
    }

    /// Closes the files of `bundle` and drops its cached blocks.
    fn close(&self, bundle: &Bundle) {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        files.pop(&bundle.data);
        files.pop(&bundle.index);
        drop(files);
        let mut blocks = self.blocks.lock().unwrap_or_else(PoisonError::into_inner);
        for block in 0..bundle.outline.firsts.len() {
            blocks.pop(&(bundle.id, block));
        }
    }

    /// The file at `path`, open for reading.
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

    /// Where `oid` is in `bundle`, if there.
    fn find(
        &self,
        bundle: &Bundle,
        oid: Oid,
        cipher: &XChaCha20Poly1305,
    ) -> Result<Option<Location>, VaultError> {
        let Some(block) = bundle.outline.block_of(oid) else {
            return Ok(None);
        };
        let key = (bundle.id, block);
        let cached = self
            .blocks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        let items = match cached {
            Some(items) => items,
            None => {
                let file = self.file(&bundle.index)?;
                let items: Arc<[Item]> = index::read_block(
                    &file,
                    &bundle.index,
                    &bundle.name,
                    &bundle.outline,
                    block,
                    cipher,
                )?
                .into();
                self.blocks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .put(key, items.clone());
                items
            }
        };
        Ok(items
            .binary_search_by_key(&oid, |(id, _)| *id)
            .ok()
            .map(|i| items[i].1))
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

/// The names of the bundles in the bundle directory `root` that have a file
/// ending in `.{ext}`, sorted; none when there is no directory.
pub(crate) fn names_with(root: &Path, ext: &str) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let suffix = format!(".{ext}");
    let mut names = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        if let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(&suffix)) {
            names.push(stem.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn load(dir: &Path, cipher: &XChaCha20Poly1305) -> Result<Bundles, VaultError> {
    let mut bundles = Bundles::default();
    let root = dir.join(BUNDLE_DIR);
    for name in names_with(&root, INDEX_EXT)? {
        let index = root.join(format!("{name}.{INDEX_EXT}"));
        let outline = index::outline(&index, &name, cipher)?;
        let bytes = fs::metadata(root.join(format!("{name}.{DATA_EXT}")))?.len();
        bundles
            .list
            .push(Arc::new(Bundle::new(&root, &name, outline, bytes)));
    }
    Ok(bundles)
}

/// Reads and opens the record of `oid`, at `at` in `bundle`.
pub(crate) fn read(
    cache: &BundleCache,
    bundle: &Bundle,
    at: Location,
    oid: Oid,
    cipher: &XChaCha20Poly1305,
) -> Result<Vec<u8>, VaultError> {
    let mut sealed = vec![0u8; at.len as usize];
    cache
        .file(&bundle.data)?
        .read_exact_at(&mut sealed, at.offset)?;
    open_record(&sealed, oid, at.kind, DATA_MAGIC, cipher).map_err(|why| corrupt(&bundle.data, why))
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

fn random_name() -> String {
    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// A bundle's data file being written, created with its first record.
struct DataWriter {
    dir: PathBuf,
    path: PathBuf,
    file: Option<BufWriter<fs::File>>,
    offset: u64,
}

impl DataWriter {
    fn new(dir: PathBuf, name: &str) -> DataWriter {
        DataWriter {
            path: dir.join(format!("{name}.{DATA_EXT}")),
            dir,
            file: None,
            offset: DATA_MAGIC.len() as u64,
        }
    }

    /// The file, created (with its magic) on first use.
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

    /// Appends a sealed record; returns its offset and length.
    fn append(&mut self, parts: &[&[u8]]) -> Result<(u64, u32), VaultError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len =
            u32::try_from(len).map_err(|_| io::Error::other("object too large for a bundle"))?;
        let file = self.file()?;
        for part in parts {
            file.write_all(part)?;
        }
        let offset = self.offset;
        self.offset += u64::from(len);
        Ok((offset, len))
    }

    /// Flushes the data (to disk with `durable`); `false` if nothing was
    /// written (no file).
    fn flush(&mut self, durable: bool) -> io::Result<bool> {
        let Some(file) = self.file.as_mut() else {
            return Ok(false);
        };
        file.flush()?;
        if durable {
            file.get_ref().sync_all()?;
        }
        Ok(true)
    }

    fn discard(self) {
        if let Some(file) = self.file {
            drop(file);
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A bundle being written by a pack receive. Its file is created with the
/// first object, so a pack that brings nothing new touches no file.
pub(crate) struct BundleWriter {
    name: String,
    data: DataWriter,
    written: HashMap<Oid, Location>,
    /// Objects held in memory, in order, before any file is made (see
    /// [`staging`](Self::staging)).
    staged: Vec<(Oid, ObjectType, Vec<u8>)>,
    staged_index: HashMap<Oid, usize>,
    staged_bytes: usize,
    /// Bytes of content staged at most; 0: none.
    stage_limit: usize,
}

/// What a staging writer holds when it is done.
pub(crate) enum Staged {
    /// Everything is still in memory (no file was made), in order.
    Memory(Vec<(Oid, ObjectType, Vec<u8>)>),
    /// It went to a bundle file, still to be finished.
    Bundle(Box<BundleWriter>),
}

impl BundleWriter {
    pub(crate) fn create(objects: &Path) -> BundleWriter {
        Self::named(objects, random_name())
    }

    /// A writer of the bundle `name` (a migrated bundle keeps its name).
    fn named(objects: &Path, name: String) -> BundleWriter {
        BundleWriter {
            data: DataWriter::new(objects.join(BUNDLE_DIR), &name),
            name,
            written: HashMap::new(),
            staged: Vec::new(),
            staged_index: HashMap::new(),
            staged_bytes: 0,
            stage_limit: 0,
        }
    }

    /// A writer that holds up to `limit` bytes of objects in memory before
    /// it makes a file: a small pack (most pulls) then goes to the journal
    /// whole, with no file of its own ([`into_staged`](Self::into_staged)).
    pub(crate) fn staging(objects: &Path, limit: usize) -> BundleWriter {
        let mut writer = Self::create(objects);
        writer.stage_limit = limit;
        writer
    }

    /// The staged objects if no file was made, else the writer to finish.
    pub(crate) fn into_staged(self) -> Staged {
        if self.written.is_empty() && self.stage_limit > 0 {
            Staged::Memory(self.staged)
        } else {
            Staged::Bundle(Box::new(self))
        }
    }

    /// Seals what was staged into the file: staging is over.
    fn spill(&mut self, cipher: &XChaCha20Poly1305) -> Result<(), VaultError> {
        self.stage_limit = 0;
        self.staged_index.clear();
        for (oid, kind, data) in std::mem::take(&mut self.staged) {
            self.add(oid, kind, &data, cipher)?;
        }
        Ok(())
    }

    /// Appends an object.
    pub(crate) fn add(
        &mut self,
        oid: Oid,
        kind: ObjectType,
        data: &[u8],
        cipher: &XChaCha20Poly1305,
    ) -> Result<(), VaultError> {
        if self.written.contains_key(&oid) || self.staged_index.contains_key(&oid) {
            return Ok(());
        }
        if self.stage_limit > 0 {
            if self.staged_bytes + data.len() <= self.stage_limit {
                self.staged_index.insert(oid, self.staged.len());
                self.staged.push((oid, kind, data.to_vec()));
                self.staged_bytes += data.len();
                return Ok(());
            }
            self.spill(cipher)?;
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
        let (offset, len) = self.data.append(&[&nonce, &sealed])?;
        let location = Location {
            offset,
            len,
            kind,
            size: data.len() as u64,
        };
        self.written.insert(oid, location);
        Ok(())
    }

    /// An object appended earlier (a delta base).
    pub(crate) fn read(
        &mut self,
        oid: Oid,
        cipher: &XChaCha20Poly1305,
    ) -> Result<Option<(ObjectType, Vec<u8>)>, VaultError> {
        if let Some(&i) = self.staged_index.get(&oid) {
            let (_, kind, data) = &self.staged[i];
            return Ok(Some((*kind, data.clone())));
        }
        let Some(at) = self.written.get(&oid).copied() else {
            return Ok(None);
        };
        let file = self.data.file()?;
        file.flush()?;
        let mut sealed = vec![0u8; at.len as usize];
        file.get_ref().read_exact_at(&mut sealed, at.offset)?;
        let data = open_record(&sealed, oid, at.kind, DATA_MAGIC, cipher)
            .map_err(|why| corrupt(&self.data.path, why))?;
        Ok(Some((at.kind, data)))
    }

    /// Writes the index, which makes the bundle visible, and adds it to
    /// `bundles`. A bundle that received nothing has no file and stays so.
    pub(crate) fn finish(
        self,
        cipher: &XChaCha20Poly1305,
        bundles: &RwLock<Bundles>,
    ) -> Result<(), VaultError> {
        self.finish_as(cipher, bundles, false)
    }

    /// [`finish`](Self::finish), with the data, the index and the directory
    /// entry on disk before it returns (a journal's roll: the journal is
    /// emptied next).
    pub(crate) fn finish_durable(
        self,
        cipher: &XChaCha20Poly1305,
        bundles: &RwLock<Bundles>,
    ) -> Result<(), VaultError> {
        self.finish_as(cipher, bundles, true)
    }

    fn finish_as(
        mut self,
        cipher: &XChaCha20Poly1305,
        bundles: &RwLock<Bundles>,
        durable: bool,
    ) -> Result<(), VaultError> {
        let Some(bundle) = self.write_index(cipher, durable)? else {
            return Ok(());
        };
        bundles
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .list
            .push(Arc::new(bundle));
        Ok(())
    }

    /// Flushes the data and writes the index; with `durable`, both reach the
    /// disk (and the directory entry) before this returns. `None` if the
    /// bundle received nothing (no file).
    fn write_index(
        &mut self,
        cipher: &XChaCha20Poly1305,
        durable: bool,
    ) -> Result<Option<Bundle>, VaultError> {
        if !self.data.flush(durable)? {
            return Ok(None);
        }
        let mut items: Vec<Item> = self.written.drain().collect();
        items.sort_unstable_by_key(|(oid, _)| *oid);
        let mut index = IndexWriter::new(&self.data.dir, &self.name, cipher)?;
        for (oid, at) in items {
            index.push(oid, at)?;
        }
        let outline = index.finish(durable)?;
        Ok(Some(Bundle::new(
            &self.data.dir,
            &self.name,
            outline,
            self.data.offset,
        )))
    }

    /// Removes the unfinished bundle (a refused pack).
    pub(crate) fn discard(self) {
        self.data.discard();
    }
}

/// One bundle being read in id order, a block at a time.
struct Cursor {
    bundle: Arc<Bundle>,
    index: fs::File,
    data: fs::File,
    block: usize,
    items: Vec<Item>,
    at: usize,
}

impl Cursor {
    fn open(bundle: Arc<Bundle>, cipher: &XChaCha20Poly1305) -> Result<Cursor, VaultError> {
        let mut cursor = Cursor {
            index: fs::File::open(&bundle.index)?,
            data: fs::File::open(&bundle.data)?,
            bundle,
            block: 0,
            items: Vec::new(),
            at: 0,
        };
        cursor.load(cipher)?;
        Ok(cursor)
    }

    fn load(&mut self, cipher: &XChaCha20Poly1305) -> Result<(), VaultError> {
        let b = &self.bundle;
        self.items = if self.block < b.outline.firsts.len() {
            index::read_block(
                &self.index,
                &b.index,
                &b.name,
                &b.outline,
                self.block,
                cipher,
            )?
        } else {
            Vec::new()
        };
        self.at = 0;
        Ok(())
    }

    fn peek(&self) -> Option<Item> {
        self.items.get(self.at).copied()
    }

    fn advance(&mut self, cipher: &XChaCha20Poly1305) -> Result<(), VaultError> {
        self.at += 1;
        if self.at == self.items.len() {
            self.block += 1;
            self.load(cipher)?;
        }
        Ok(())
    }
}

/// If the repository whose objects are in `objects` has more than
/// [`MAX_BUNDLES`] bundles, rewrites its smallest ones into one, durably,
/// then deletes them; returns how many were merged. The caller keeps other
/// merges of this repository and anything that lists its files (a fork, a
/// backup) away meanwhile; readers may go on: one that finds an object in a
/// bundle deleted since looks it up again.
pub(crate) fn merge(
    objects: &Path,
    cache: &BundleCache,
    bundles: &RwLock<Bundles>,
    cipher: &XChaCha20Poly1305,
) -> Result<usize, VaultError> {
    let mut chosen = bundles
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .list
        .clone();
    if chosen.len() <= MAX_BUNDLES {
        return Ok(0);
    }
    // The smallest ones, down to half the limit: the large bundle of a
    // vault's early history is rewritten rarely.
    chosen.sort_by_key(|b| b.bytes);
    chosen.truncate(chosen.len() - MAX_BUNDLES / 2);
    let name = random_name();
    let root = objects.join(BUNDLE_DIR);
    let mut data = DataWriter::new(root.clone(), &name);
    let merged = write_merged(&chosen, &mut data, &root, &name, cipher);
    let merged = match merged {
        Ok(outline) => Bundle::new(&root, &name, outline, data.offset),
        Err(e) => {
            data.discard();
            return Err(e);
        }
    };
    {
        let mut bundles = bundles.write().unwrap_or_else(PoisonError::into_inner);
        bundles
            .list
            .retain(|b| !chosen.iter().any(|c| c.id == b.id));
        bundles.list.push(Arc::new(merged));
    }
    for bundle in &chosen {
        cache.close(bundle);
        // The index first: data without an index is swept at open.
        for path in [&bundle.index, &bundle.data] {
            if let Err(e) = fs::remove_file(path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a merged bundle");
            }
        }
    }
    Ok(chosen.len())
}

/// Copies the records of `chosen` (each object once, in id order, each
/// authenticated on the way) into `data`, then writes the index; both durable.
fn write_merged(
    chosen: &[Arc<Bundle>],
    data: &mut DataWriter,
    root: &Path,
    name: &str,
    cipher: &XChaCha20Poly1305,
) -> Result<Outline, VaultError> {
    let mut cursors = chosen
        .iter()
        .map(|b| Cursor::open(b.clone(), cipher))
        .collect::<Result<Vec<_>, _>>()?;
    let mut index = IndexWriter::new(root, name, cipher)?;
    let mut previous: Option<Oid> = None;
    let mut sealed = Vec::new();
    loop {
        let next = cursors
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.peek().map(|item| (item.0, i)))
            .min();
        let Some((oid, i)) = next else { break };
        let cursor = &mut cursors[i];
        let (_, at) = cursor.peek().expect("just peeked");
        if previous != Some(oid) {
            sealed.resize(at.len as usize, 0);
            cursor.data.read_exact_at(&mut sealed, at.offset)?;
            open_record(&sealed, oid, at.kind, DATA_MAGIC, cipher)
                .map_err(|why| corrupt(&cursor.bundle.data, why))?;
            let (offset, len) = data.append(&[&sealed])?;
            index.push(oid, Location { offset, len, ..at })?;
            previous = Some(oid);
        }
        cursor.advance(cipher)?;
    }
    data.flush(true)?;
    index.finish(true)
}

pub(crate) mod index;
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

    /// Writes a bundle of `objects` into the repository of `files`.
    fn bundle_of(files: &ObjectFiles, objects: &[(Oid, Vec<u8>)]) {
        let cipher = files.keys().cipher();
        let mut writer = BundleWriter::create(files.dir());
        for (oid, data) in objects {
            writer.add(*oid, ObjectType::Blob, data, &cipher).unwrap();
        }
        writer
            .finish(&cipher, files.bundles().unwrap().as_ref())
            .unwrap();
    }

    fn numbered(range: std::ops::Range<u32>) -> Vec<(Oid, Vec<u8>)> {
        range
            .map(|i| {
                let data = format!("kn7mark merged {i}").into_bytes();
                (object_id(ObjectType::Blob, &data), data)
            })
            .collect()
    }

    fn on_disk(dir: &Path, ext: &str) -> usize {
        fs::read_dir(dir.join(BUNDLE_DIR))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|e| e == ext)
            })
            .count()
    }

    #[test]
    fn bundles_past_the_limit_are_merged_and_every_object_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let keys = ObjectKeys::new(&DataKey::from_bytes([2; 32]));
        let files = ObjectFiles::new(dir.clone(), keys.clone());
        let merge = || files.merge_bundles().unwrap();
        // Forty pulls of 15 objects, 5 of them also in the pull before.
        for pull in 0..40u32 {
            bundle_of(&files, &numbered(pull * 10..pull * 10 + 15));
            let merged = merge();
            let count = files.bundle_count().unwrap();
            assert!(count <= MAX_BUNDLES, "{count} bundles after pull {pull}");
            assert!(merged == 0 || merged == MAX_BUNDLES + 1 - MAX_BUNDLES / 2);
            assert_eq!(on_disk(&dir, DATA_EXT), count);
            assert_eq!(on_disk(&dir, INDEX_EXT), count);
        }
        let all = numbered(0..405);
        for (oid, data) in &all {
            assert_eq!(files.read(*oid).unwrap().unwrap().1, *data);
        }
        assert!(!files.exists(object_id(ObjectType::Blob, b"kn7mark merged 405")));
        // Nothing in the clear, and a restarted node reads the same.
        for entry in fs::read_dir(dir.join(BUNDLE_DIR)).unwrap() {
            let bytes = fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(7).any(|w| w == b"kn7mark"));
        }
        let fresh = ObjectFiles::new(dir.clone(), ObjectKeys::new(&DataKey::from_bytes([2; 32])));
        for (oid, data) in &all {
            assert_eq!(fresh.read(*oid).unwrap().unwrap().1, *data);
        }
        assert_eq!(super::super::objects::sweep(&dir).unwrap(), 0);
    }

    #[test]
    fn a_reader_of_a_merged_bundle_finds_the_object_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let keys = ObjectKeys::new(&DataKey::from_bytes([2; 32]));
        let files = ObjectFiles::new(dir.clone(), keys.clone());
        for pull in 0..=MAX_BUNDLES as u32 {
            bundle_of(&files, &numbered(pull * 3..pull * 3 + 3));
        }
        let (oid, data) = numbered(0..1).remove(0);
        let cipher = keys.cipher();
        let stale = files
            .bundles()
            .unwrap()
            .read()
            .unwrap()
            .find(&keys.bundles, oid, &cipher)
            .unwrap()
            .unwrap();
        assert!(files.merge_bundles().unwrap() > 0);
        // The looked-up bundle's files are gone (a reader between lookup and
        // read sees NotFound, which makes `ObjectFiles` look up again)...
        match read(&keys.bundles, &stale.0, stale.1, oid, &cipher) {
            Err(VaultError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
            other => panic!("read a deleted bundle: {other:?}"),
        }
        // ...and the object is in the merged one.
        assert_eq!(files.read(oid).unwrap().unwrap().1, data);
    }

    #[test]
    fn a_bundle_that_fails_authentication_is_not_merged_away() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let files = ObjectFiles::new(dir.clone(), ObjectKeys::new(&DataKey::from_bytes([2; 32])));
        for pull in 0..=MAX_BUNDLES as u32 {
            bundle_of(&files, &numbered(pull * 3..pull * 3 + 3));
        }
        // The last record of every bundle is damaged.
        for entry in fs::read_dir(dir.join(BUNDLE_DIR)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == DATA_EXT) {
                let mut bytes = fs::read(&path).unwrap();
                let n = bytes.len();
                bytes[n - 3] ^= 1;
                fs::write(&path, &bytes).unwrap();
            }
        }
        assert!(matches!(files.merge_bundles(), Err(VaultError::Corrupt(_))));
        // Nothing was deleted, no half-merged bundle is left, the rest reads.
        assert_eq!(files.bundle_count().unwrap(), MAX_BUNDLES + 1);
        assert_eq!(on_disk(&dir, DATA_EXT), MAX_BUNDLES + 1);
        let readable = numbered(0..3 * (MAX_BUNDLES as u32 + 1))
            .iter()
            .filter(|(oid, _)| files.read(*oid).is_ok())
            .count();
        assert_eq!(readable, 2 * (MAX_BUNDLES + 1));
    }

    #[test]
    fn many_tiny_objects_keep_a_small_index_in_memory() {
        // What a followed vault's owner could send: many tiny objects. The
        // node keeps 20 bytes per 64 of them, not an entry each.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let keys = ObjectKeys::new(&DataKey::from_bytes([2; 32]));
        let files = ObjectFiles::new(dir.clone(), keys.clone());
        let objects = 40_000u32;
        for pull in 0..10 {
            bundle_of(&files, &numbered(pull * 4_000..(pull + 1) * 4_000));
            files.merge_bundles().unwrap();
        }
        let resident = files.bundles().unwrap().read().unwrap().resident_bytes();
        assert!(
            resident < objects as usize,
            "{resident} bytes in memory for {objects} objects"
        );
        for (oid, data) in numbered(0..objects).iter().step_by(997) {
            assert_eq!(files.read(*oid).unwrap().unwrap().1, *data);
        }
        let cached = keys.bundles.blocks.lock().unwrap().len();
        assert!(cached <= OPEN_BLOCKS);
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
        assert!(index::outline(&index, &name, &keys.cipher()).is_ok());
        // The object-file key (a BLAKE2b key) does not open a bundle.
        assert!(index::outline(&index, &name, &keys.legacy_cipher()).is_err());
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
            ["00aa.knb2", "00aa.kni3", "00bb.knb2", "00bb.kni3"]
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
        assert_eq!(bundle_files(&dir), ["00aa.knb2", "00aa.kni3"]);
        assert_eq!(
            fs::read(dir.join(BUNDLE_DIR).join("00aa.knb2")).unwrap(),
            copy
        );
        // Cut while writing the copy: data without its index, swept, redone.
        fs::remove_file(dir.join(BUNDLE_DIR).join("00aa.kni3")).unwrap();
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
        assert_eq!(bundle_files(&dir), ["00aa.knb2", "00aa.kni3"]);
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
