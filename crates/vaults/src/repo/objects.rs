//! A vault's git objects, encrypted at rest.
//!
//! libgit2 keeps objects as zlib-compressed files and packs, in the clear. Here
//! an object (written by this node, or received above the bundle threshold; see
//! `bundle.rs`) is one file sealed with AES-256-GCM in the STREAM construction
//! (Hoang, Reyhanitabar, Rogaway, Vizár 2015) over 64 KiB chunks, so objects of
//! any size are written and read with one chunk in memory, and truncating,
//! reordering or splicing chunks fails authentication. Each file has its own
//! key, derived from the node's object key and a random 32-byte salt, so the
//! chunk nonces can simply count:
//!
//! ```text
//! file   = "KNO1" ‖ kind (1 byte) ‖ salt (32 random bytes) ‖ chunk*
//! key    = BLAKE2b-256(object key, salt)
//! chunk  = AES-256-GCM(key, nonce = 0⁷ ‖ counter (u32 BE) ‖ last flag, aad = header)
//! ```
//!
//! AES-GCM (ring, with AES-NI and carry-less multiplication) decrypts a large
//! secret about twice as fast as ChaCha20-Poly1305 in pure Rust on this class of
//! x86 machine, which is what keeps reading big secrets close to libgit2's
//! plain inflate.
//!
//! Every chunk but the last holds exactly [`CHUNK`] plaintext bytes, so the
//! object's size follows from the file's length. The header (with the object's
//! kind) is the associated data of every chunk.
//!
//! A file is named by a keyed BLAKE2b of the object id (`xx/yyyy…`, 64 hex
//! digits), not by the id itself: a git object id is a plain SHA-1 of the
//! content, so storing it would let whoever holds the disk confirm a guessed
//! secret value (`sha1("blob 6\0hunter")`). Nothing on disk repeats an id, a
//! name or a byte of content. What remains visible is the number of objects and
//! their approximate sizes.
//!
//! Integrity: besides the AEAD, libgit2 re-hashes every object it reads
//! (strict hash verification), so a file moved to another object's name is
//! refused too. Files are written to a temporary name and renamed into place,
//! as libgit2 does for loose objects.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::KeyInit;
use git2::{ObjectType, Oid};
use keynode_core::datakey::{DataKey, keyed_hash};
use rand::RngCore;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use sha1::{Digest, Sha1};
use zeroize::Zeroizing;

use super::bundle::{self, BUNDLED_OBJECT, Bundle, BundleCache, BundleWriter, Bundles};
use super::journal::{JOURNAL_FILE, Journal, JournalKey, Journals};
use crate::VaultError;

/// Plaintext bytes per chunk.
pub(crate) const CHUNK: usize = 64 * 1024;
/// Authentication tag bytes per chunk.
const TAG: usize = 16;
const MAGIC: &[u8; 4] = b"KNO1";
const SALT: usize = 32;
/// Header bytes: magic, kind, salt.
const HEADER: usize = 4 + 1 + SALT;
/// Content up to this size is buffered whole by [`ObjectFiles::write_stream`],
/// so its id is known before it is sealed (one pass); larger content is sealed
/// as it arrives and hashed in a second pass.
const BUFFERED_OBJECT: usize = 1 << 20;
/// Largest object this store writes or reads (a secret is far smaller).
pub(crate) const MAX_OBJECT: u64 = 1 << 32;
/// Directory (under a repository's `objects`) of files being written.
const TMP_DIR: &str = "tmp";

/// The keys of a node's object files, derived from its data key, and the
/// bundle indexes loaded so far (see `bundle.rs`). One key per use: each is
/// derived from the data key with its own context and serves one primitive.
pub(crate) struct ObjectKeys {
    /// BLAKE2b key deriving each object file's AES-256-GCM key from its salt.
    files: DataKey,
    /// BLAKE2b key naming object files.
    names: DataKey,
    /// XChaCha20-Poly1305 key of bundles (format 2).
    bundle: DataKey,
    pub(super) bundles: BundleCache,
    /// The journal key (`journal.rs`).
    journal: JournalKey,
    journals: Journals,
}

impl ObjectKeys {
    pub(crate) fn new(key: &DataKey) -> Arc<ObjectKeys> {
        Arc::new(ObjectKeys {
            files: key.derive("keynode/1 vault objects"),
            names: key.derive("keynode/1 vault object names"),
            bundle: key.derive("keynode/2 vault bundles"),
            bundles: BundleCache::default(),
            journal: JournalKey::new(key.derive("keynode/1 vault journal")),
            journals: Journals::default(),
        })
    }

    /// The cipher of bundles.
    pub(crate) fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.bundle.expose().into())
    }

    /// The cipher format 1 bundles were sealed with (the object-file key):
    /// only to read them once, to rewrite them (`bundle::v1`).
    pub(crate) fn legacy_cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.files.expose().into())
    }

    /// Forgets what is cached about the repository at `path` (deleted).
    pub(crate) fn forget(&self, path: &Path) {
        self.bundles.forget(path);
        self.journals.forget(path);
    }
}

fn corrupt(oid: Oid, why: &str) -> VaultError {
    VaultError::Corrupt(format!("object {oid}: {why}"))
}

pub(crate) fn kind_byte(kind: ObjectType) -> u8 {
    match kind {
        ObjectType::Commit => 1,
        ObjectType::Tree => 2,
        ObjectType::Blob => 3,
        ObjectType::Tag => 4,
        _ => 0,
    }
}

pub(crate) fn byte_kind(b: u8) -> Option<ObjectType> {
    Some(match b {
        1 => ObjectType::Commit,
        2 => ObjectType::Tree,
        3 => ObjectType::Blob,
        4 => ObjectType::Tag,
        _ => return None,
    })
}

/// The git object id of an object of `kind` with `content`.
pub(crate) fn object_id(kind: ObjectType, content: &[u8]) -> Oid {
    let mut h = hasher(kind, content.len() as u64);
    h.update(content);
    finish(h)
}

fn hasher(kind: ObjectType, size: u64) -> Sha1 {
    let mut h = Sha1::new();
    h.update(kind.str().as_bytes());
    h.update(format!(" {size}\0").as_bytes());
    h
}

fn finish(h: Sha1) -> Oid {
    Oid::from_bytes(&h.finalize()).expect("a SHA-1 is 20 bytes")
}

/// Plaintext size of an object file of `len` bytes, `None` if no valid file has
/// that length.
fn plain_size(len: u64) -> Option<u64> {
    let body = len.checked_sub(HEADER as u64)?;
    let step = (CHUNK + TAG) as u64;
    let (full, rem) = (body / step, body % step);
    match rem {
        0 if full > 0 => Some(full * CHUNK as u64),
        r if r >= TAG as u64 => Some(full * CHUNK as u64 + r - TAG as u64),
        _ => None,
    }
}

/// Appends at most `limit` bytes of `data` to `buf`; returns how many.
fn read_up_to(data: &mut dyn Read, buf: &mut Vec<u8>, limit: u64) -> io::Result<usize> {
    (&mut *data).take(limit).read_to_end(buf)
}

/// A bundled object: its bundle and where in it it is.
type Bundled = (Arc<Bundle>, bundle::Location);

/// An object's size and a reader of its content.
pub(crate) type SizedReader = (u64, Box<dyn Read>);

/// The encrypted object files of one repository (its `objects` directory).
#[derive(Clone)]
pub(crate) struct ObjectFiles {
    dir: PathBuf,
    keys: Arc<ObjectKeys>,
    /// This repository's entry in the node's bundle cache, looked up once per
    /// handle rather than on every object lookup.
    bundles: OnceLock<Arc<RwLock<Bundles>>>,
    /// This repository's journal, looked up once per handle.
    journal: OnceLock<Arc<RwLock<Journal>>>,
}

impl ObjectFiles {
    pub(crate) fn new(dir: PathBuf, keys: Arc<ObjectKeys>) -> ObjectFiles {
        ObjectFiles {
            dir,
            keys,
            bundles: OnceLock::new(),
            journal: OnceLock::new(),
        }
    }

    /// The same keys over another repository's `objects` directory.
    pub(crate) fn at(&self, dir: PathBuf) -> ObjectFiles {
        ObjectFiles::new(dir, self.keys.clone())
    }

    /// Where object `oid` is kept.
    pub(crate) fn path(&self, oid: Oid) -> PathBuf {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mac = keyed_hash(self.keys.names.expose(), oid.as_bytes());
        let mut hex = String::with_capacity(65);
        for (i, b) in mac.iter().enumerate() {
            if i == 1 {
                hex.push('/');
            }
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 15)]));
        }
        self.dir.join(hex)
    }

    /// The repository's objects directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn keys(&self) -> &ObjectKeys {
        &self.keys
    }

    /// The repository's bundles (indexes loaded on first use).
    pub(crate) fn bundles(&self) -> Result<Arc<RwLock<Bundles>>, VaultError> {
        if let Some(b) = self.bundles.get() {
            return Ok(b.clone());
        }
        let b = self.keys.bundles.of(&self.dir, &self.keys.cipher())?;
        Ok(self.bundles.get_or_init(|| b).clone())
    }

    /// The repository's journal (read on first use).
    fn journal(&self) -> Result<Arc<RwLock<Journal>>, VaultError> {
        if let Some(j) = self.journal.get() {
            return Ok(j.clone());
        }
        let j = self.keys.journals.of(&self.dir, &self.keys.journal)?;
        Ok(self.journal.get_or_init(|| j).clone())
    }

    /// Whether the journal holds enough to be rolled into a bundle.
    pub(crate) fn journal_full(&self) -> Result<bool, VaultError> {
        let journal = self.journal()?;
        let full = journal
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .full();
        Ok(full)
    }

    /// Objects in the journal.
    #[cfg(test)]
    pub(crate) fn journaled(&self) -> Result<usize, VaultError> {
        let journal = self.journal()?;
        let len = journal.read().unwrap_or_else(PoisonError::into_inner).len();
        Ok(len)
    }

    /// Rolls the journal into a bundle (see `journal.rs`); returns how many
    /// objects moved. The caller holds the vault's writer lock and keeps
    /// backups from listing files.
    pub(crate) fn roll_journal(&self) -> Result<usize, VaultError> {
        let journal = self.journal()?;
        let bundles = self.bundles()?;
        let mut journal = journal.write().unwrap_or_else(PoisonError::into_inner);
        journal.roll(&self.dir, &self.keys.journal, &self.keys.cipher(), &bundles)
    }

    /// Appends `objects` to the journal, in order (an accepted small pack);
    /// those it does not take (past its hard limit) get files of their own.
    pub(crate) fn journal_all(
        &self,
        objects: Vec<(Oid, ObjectType, Vec<u8>)>,
    ) -> Result<(), VaultError> {
        let journal = self.journal()?;
        let mut journal = journal.write().unwrap_or_else(PoisonError::into_inner);
        let mut rest = Vec::new();
        for (oid, kind, data) in objects {
            if !journal.append(oid, kind, &data, &self.keys.journal)? {
                rest.push((oid, kind, data));
            }
        }
        drop(journal);
        for (oid, kind, data) in rest {
            self.write(oid, kind, &data)?;
        }
        Ok(())
    }

    fn read_journaled(&self, oid: Oid) -> Result<Option<(ObjectType, Vec<u8>)>, VaultError> {
        let journal = self.journal()?;
        let journal = journal.read().unwrap_or_else(PoisonError::into_inner);
        journal.read(oid, &self.keys.journal)
    }

    fn bundled(&self, oid: Oid) -> Result<Option<Bundled>, VaultError> {
        let bundles = self.bundles()?;
        let bundles = bundles.read().unwrap_or_else(PoisonError::into_inner);
        bundles.find(&self.keys.bundles, oid, &self.keys.cipher())
    }

    /// Merges the repository's smallest bundles once it has more than
    /// `bundle::MAX_BUNDLES`; returns how many were merged. The caller holds
    /// the vault's writer lock and keeps backups from listing files.
    pub(crate) fn merge_bundles(&self) -> Result<usize, VaultError> {
        bundle::merge(
            &self.dir,
            &self.keys.bundles,
            self.bundles()?.as_ref(),
            &self.keys.cipher(),
        )
    }

    /// Bundles in the repository.
    pub(crate) fn bundle_count(&self) -> Result<usize, VaultError> {
        Ok(self
            .bundles()?
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len())
    }

    pub(crate) fn exists(&self, oid: Oid) -> bool {
        let journaled = self.journal().is_ok_and(|j| {
            j.read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(oid)
        });
        journaled || matches!(self.bundled(oid), Ok(Some(_))) || self.path(oid).is_file()
    }

    fn temp(&self) -> io::Result<tempfile::NamedTempFile> {
        let dir = self.dir.join(TMP_DIR);
        let builder = || tempfile::Builder::new().prefix("obj").tempfile_in(&dir);
        match builder() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&dir)?;
                builder()
            }
            other => other,
        }
    }

    fn place(&self, tmp: tempfile::NamedTempFile, oid: Oid) -> io::Result<()> {
        let path = self.path(oid);
        match tmp.persist(&path) {
            Ok(_) => Ok(()),
            Err(e) if e.error.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent)?;
                }
                e.file.persist(&path).map_err(|e| e.error)?;
                Ok(())
            }
            Err(e) => Err(e.error),
        }
    }

    /// Stores object `oid` (whose id the caller computed) unless it is already
    /// here.
    pub(crate) fn write(&self, oid: Oid, kind: ObjectType, data: &[u8]) -> Result<(), VaultError> {
        if self.exists(oid) {
            return Ok(());
        }
        self.write_new(oid, kind, data)
    }

    /// Stores object `oid`, which the caller found missing (libgit2 asks
    /// `exists` before every write). The file is sealed in memory and written
    /// with one call.
    pub(crate) fn write_new(
        &self,
        oid: Oid,
        kind: ObjectType,
        data: &[u8],
    ) -> Result<(), VaultError> {
        if data.len() <= BUNDLED_OBJECT {
            let journal = self.journal()?;
            let mut journal = journal.write().unwrap_or_else(PoisonError::into_inner);
            if journal.append(oid, kind, data, &self.keys.journal)? {
                return Ok(());
            }
        }
        let chunks = data.len().div_ceil(CHUNK).max(1);
        let mut sealed = Vec::with_capacity(HEADER + data.len() + chunks * TAG);
        {
            let mut sealer = Sealer::new(&self.keys, kind, &mut sealed)?;
            let mut pieces = data.chunks(CHUNK).peekable();
            if pieces.peek().is_none() {
                sealer.last(&[])?;
            }
            while let Some(chunk) = pieces.next() {
                if pieces.peek().is_some() {
                    sealer.next(chunk)?;
                } else {
                    sealer.last(chunk)?;
                }
            }
        }
        let mut tmp = self.temp()?;
        tmp.write_all(&sealed)?;
        self.place(tmp, oid)?;
        Ok(())
    }

    /// Stores many blobs at once: those up to [`BUNDLED_OBJECT`] bytes in one
    /// new bundle (one data file and one index for all of them, where one file
    /// each made the file system's inode allocator the cost of a bulk write),
    /// larger ones in files of their own. Returns their ids in order. Blobs
    /// already here are not written again; if nothing is new, no bundle is.
    pub(crate) fn write_blobs(&self, blobs: &[Vec<u8>]) -> Result<Vec<Oid>, VaultError> {
        let kind = ObjectType::Blob;
        let cipher = self.keys.cipher();
        let mut bundle = BundleWriter::create(&self.dir);
        let mut ids = Vec::with_capacity(blobs.len());
        let mut put = || -> Result<(), VaultError> {
            for data in blobs {
                let oid = object_id(kind, data);
                if data.len() > BUNDLED_OBJECT {
                    self.write(oid, kind, data)?;
                } else if !self.exists(oid) {
                    bundle.add(oid, kind, data, &cipher)?;
                }
                ids.push(oid);
            }
            Ok(())
        };
        match put() {
            Ok(()) => bundle.finish(&cipher, self.bundles()?.as_ref())?,
            Err(e) => {
                bundle.discard();
                return Err(e);
            }
        }
        Ok(ids)
    }

    /// Streams `data` into a new object of `kind` and returns its id. Content
    /// up to [`BUFFERED_OBJECT`] is buffered and written in one pass; larger
    /// content is sealed chunk by chunk (two chunks in memory) and its id (a
    /// SHA-1 over a header that starts with the size) computed in a second,
    /// decrypting pass over the written file.
    pub(crate) fn write_stream(
        &self,
        kind: ObjectType,
        data: &mut dyn Read,
    ) -> Result<Oid, VaultError> {
        self.write_stream_new(kind, data).map(|(oid, _)| oid)
    }

    /// [`write_stream`](Self::write_stream), also saying whether the object is
    /// new here (`false`: it was stored already, and nothing was written).
    pub(crate) fn write_stream_new(
        &self,
        kind: ObjectType,
        data: &mut dyn Read,
    ) -> Result<(Oid, bool), VaultError> {
        // Read (not zeroed) up to one byte past the buffered size: a small
        // secret costs its own size, not a megabyte of memset.
        let mut head = Vec::new();
        let n = read_up_to(data, &mut head, BUFFERED_OBJECT as u64 + 1)?;
        if n <= BUFFERED_OBJECT {
            let oid = object_id(kind, &head);
            let new = !self.exists(oid);
            self.write(oid, kind, &head)?;
            return Ok((oid, new));
        }
        let mut rest = io::Cursor::new(head).chain(data);
        let data: &mut dyn Read = &mut rest;
        let mut current = vec![0u8; CHUNK];
        let n = super::fill(data, &mut current)?;
        current.truncate(n);
        let mut next = vec![0u8; CHUNK];
        let m = super::fill(data, &mut next)?;
        next.truncate(m);
        let mut tmp = self.temp()?;
        let mut size = 0u64;
        {
            let mut sealer = Sealer::new(&self.keys, kind, tmp.as_file_mut())?;
            loop {
                size += current.len() as u64;
                if size > MAX_OBJECT {
                    return Err(io::Error::other("object is too large").into());
                }
                if next.is_empty() {
                    sealer.last(&current)?;
                    break;
                }
                sealer.next(&current)?;
                std::mem::swap(&mut current, &mut next);
                next.resize(CHUNK, 0);
                let m = super::fill(data, &mut next)?;
                next.truncate(m);
            }
        }
        tmp.as_file_mut().flush()?;
        let mut h = hasher(kind, size);
        let mut opened = Opened::from_file(fs::File::open(tmp.path())?, &self.keys)
            .map_err(|why| VaultError::Corrupt(format!("object being written: {why}")))?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = opened.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let oid = finish(h);
        if self.exists(oid) {
            return Ok((oid, false));
        }
        self.place(tmp, oid)?;
        Ok((oid, true))
    }

    fn open(&self, oid: Oid) -> Result<Option<Opened>, VaultError> {
        let file = match fs::File::open(self.path(oid)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Opened::from_file(file, &self.keys)
            .map(Some)
            .map_err(|why| corrupt(oid, why))
    }

    /// The object's kind and content.
    pub(crate) fn read(&self, oid: Oid) -> Result<Option<(ObjectType, Vec<u8>)>, VaultError> {
        if let Some(found) = self.read_bundled(oid)? {
            return Ok(Some(found));
        }
        let Some(mut opened) = self.open(oid)? else {
            return Ok(None);
        };
        let size = usize::try_from(opened.size).map_err(|_| corrupt(oid, "too large"))?;
        let mut out = Vec::with_capacity(size);
        opened.read_to_end(&mut out).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => corrupt(oid, "failed authentication"),
            _ => e.into(),
        })?;
        Ok(Some((opened.kind, out)))
    }

    /// The object's kind and size, from the index of its bundle or from its
    /// file's header byte and length. Like git's header reads this decrypts
    /// nothing (listing 10,000 secrets reads 10,000 headers); the content is
    /// authenticated whenever it is read, and a file whose length no sealed
    /// object can have is refused here already.
    pub(crate) fn read_header(&self, oid: Oid) -> Result<Option<(ObjectType, u64)>, VaultError> {
        let journaled = self
            .journal()?
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .header(oid);
        if let Some(found) = journaled {
            return Ok(Some(found));
        }
        let bundled = match self.bundled(oid) {
            Err(VaultError::Io(e)) if e.kind() == io::ErrorKind::NotFound => self.bundled(oid),
            other => other,
        };
        if let Some((_, at)) = bundled? {
            return Ok(Some((at.kind, at.size)));
        }
        let mut file = match fs::File::open(self.path(oid)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let size = plain_size(file.metadata()?.len())
            .ok_or_else(|| corrupt(oid, "has an impossible length"))?;
        let mut head = [0u8; 5];
        file.read_exact(&mut head)
            .map_err(|_| corrupt(oid, "is truncated"))?;
        if &head[..4] != MAGIC {
            return Err(corrupt(oid, "is not an encrypted object file"));
        }
        let kind = byte_kind(head[4]).ok_or_else(|| corrupt(oid, "has an unknown kind"))?;
        Ok(Some((kind, size)))
    }

    /// The object's size and a reader of its content (decrypting one chunk at
    /// a time for an object in its own file).
    pub(crate) fn reader(&self, oid: Oid) -> Result<Option<SizedReader>, VaultError> {
        if let Some((_, data)) = self.read_bundled(oid)? {
            return Ok(Some((data.len() as u64, Box::new(io::Cursor::new(data)))));
        }
        Ok(self
            .open(oid)?
            .map(|o| (o.size, Box::new(o) as Box<dyn Read>)))
    }

    /// A bundled object's kind and content. A bundle merged away between the
    /// lookup and the read (its files deleted) has the object looked up again,
    /// in the merged bundle.
    fn read_bundled(&self, oid: Oid) -> Result<Option<(ObjectType, Vec<u8>)>, VaultError> {
        if let Some(found) = self.read_journaled(oid)? {
            return Ok(Some(found));
        }
        let once = || -> Result<Option<(ObjectType, Vec<u8>)>, VaultError> {
            let Some((bundle, at)) = self.bundled(oid)? else {
                return Ok(None);
            };
            let data = bundle::read(&self.keys.bundles, &bundle, at, oid, &self.keys.cipher())?;
            Ok(Some((at.kind, data)))
        };
        match once() {
            Err(VaultError::Io(e)) if e.kind() == io::ErrorKind::NotFound => once(),
            other => other,
        }
    }

    /// Hard-links (or copies) every object file into `dest` (a fork keeps the
    /// node's keys, so the files are valid there as they are).
    pub(crate) fn copy_to(&self, dest: &Path) -> Result<(), VaultError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == JOURNAL_FILE {
                // Appended to, so copied rather than linked: under the
                // journal's lock, so no record is half written.
                let journal = self.journal()?;
                let _held = journal.read().unwrap_or_else(PoisonError::into_inner);
                fs::create_dir_all(dest)?;
                fs::copy(entry.path(), dest.join(name))?;
                continue;
            }
            let objects = name.len() == 2 || name == bundle::BUNDLE_DIR;
            if !objects || !entry.file_type()?.is_dir() {
                continue;
            }
            fs::create_dir_all(dest.join(name))?;
            for file in fs::read_dir(entry.path())? {
                let file = file?;
                let target = dest.join(name).join(file.file_name());
                if fs::hard_link(file.path(), &target).is_err() {
                    fs::copy(file.path(), &target)?;
                }
            }
        }
        Ok(())
    }
}

/// Removes unfinished writes under a repository's `objects` directory: files in
/// the temporary directory, and bundles without an index. Returns how many.
pub(crate) fn sweep(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    let tmp = dir.join(TMP_DIR);
    if let Ok(entries) = fs::read_dir(&tmp) {
        for entry in entries {
            fs::remove_file(entry?.path())?;
            removed += 1;
        }
    }
    let bundles = dir.join(bundle::BUNDLE_DIR);
    if let Ok(entries) = fs::read_dir(&bundles) {
        for entry in entries {
            let path = entry?.path();
            let unindexed = [
                (
                    bundle::DATA_EXT,
                    &[bundle::INDEX_EXT, bundle::INDEX_EXT_V2][..],
                ),
                (bundle::v1::DATA_EXT, &[bundle::v1::INDEX_EXT_V1][..]),
            ]
            .iter()
            .any(|(data, indexes)| {
                path.extension().is_some_and(|e| e == *data)
                    && !indexes.iter().any(|i| path.with_extension(i).exists())
            });
            let temporary = path.extension().is_none();
            if unindexed || temporary {
                fs::remove_file(&path)?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

mod sealed;

use sealed::{Opened, Sealer};

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> (tempfile::TempDir, ObjectFiles) {
        let tmp = tempfile::tempdir().unwrap();
        let keys = ObjectKeys::new(&DataKey::from_bytes([3; 32]));
        let files = ObjectFiles::new(tmp.path().join("objects"), keys);
        (tmp, files)
    }

    #[test]
    fn sizes_follow_from_lengths() {
        for size in [
            0u64,
            1,
            100,
            CHUNK as u64 - 1,
            CHUNK as u64,
            CHUNK as u64 + 1,
            3 * CHUNK as u64,
        ] {
            let chunks = size.div_ceil(CHUNK as u64).max(1);
            let len = HEADER as u64 + size + chunks * TAG as u64;
            assert_eq!(plain_size(len), Some(size), "size {size}");
        }
        assert_eq!(plain_size(HEADER as u64), None);
        assert_eq!(plain_size(HEADER as u64 + 5), None);
    }

    #[test]
    fn objects_round_trip_at_every_chunk_boundary() {
        let (_tmp, files) = files();
        for size in [
            0usize,
            1,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            2 * CHUNK,
            2 * CHUNK + 7,
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let oid = object_id(ObjectType::Blob, &data);
            assert_eq!(oid, Oid::hash_object(ObjectType::Blob, &data).unwrap());
            files.write(oid, ObjectType::Blob, &data).unwrap();
            let (kind, back) = files.read(oid).unwrap().unwrap();
            assert_eq!((kind, back.len()), (ObjectType::Blob, size));
            assert!(back == data);
            assert_eq!(
                files.read_header(oid).unwrap(),
                Some((ObjectType::Blob, size as u64))
            );
            let streamed = files
                .write_stream(ObjectType::Blob, &mut &data[..])
                .unwrap();
            assert_eq!(streamed, oid);
        }
        assert!(files.read(Oid::ZERO_SHA1).unwrap().is_none());
    }

    #[test]
    fn nothing_on_disk_repeats_content_or_ids() {
        let (tmp, files) = files();
        let data = b"MARKER-hunter2-MARKER".repeat(100_000);
        let oid = files
            .write_stream(ObjectType::Blob, &mut &data[..])
            .unwrap();
        let small = b"MARKER small";
        let small_oid = object_id(ObjectType::Blob, small);
        files.write(small_oid, ObjectType::Blob, small).unwrap();
        let mut seen = 0;
        for entry in walk(tmp.path()) {
            let bytes = fs::read(&entry).unwrap();
            let name = entry.to_string_lossy().into_owned();
            assert!(!name.contains(&oid.to_string()) && !name.contains(&small_oid.to_string()));
            assert!(!bytes.windows(6).any(|w| w == b"MARKER"), "{name}");
            assert!(!bytes.windows(20).any(|w| w == oid.as_bytes()));
            seen += 1;
        }
        assert_eq!(seen, 2);
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn tampering_truncation_and_foreign_keys_are_refused() {
        let (tmp, files) = files();
        let data = vec![9u8; BUFFERED_OBJECT + 2 * CHUNK + 10];
        let oid = files
            .write_stream(ObjectType::Blob, &mut &data[..])
            .unwrap();
        let path = files.path(oid);
        let good = fs::read(&path).unwrap();
        // A flipped bit in the header, the first chunk and the last chunk.
        for i in [4, HEADER + 3, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 1;
            fs::write(&path, &bad).unwrap();
            assert!(files.read(oid).is_err(), "flip at {i} accepted");
        }
        // Dropping the last chunk leaves a valid-looking length but no last flag.
        let whole = (data.len() / CHUNK) * (CHUNK + TAG);
        fs::write(&path, &good[..HEADER + whole]).unwrap();
        assert!(matches!(files.read(oid), Err(VaultError::Corrupt(_))));
        // Swapping two full chunks.
        let mut swapped = good.clone();
        let a = HEADER..HEADER + CHUNK + TAG;
        let b = HEADER + CHUNK + TAG..HEADER + 2 * (CHUNK + TAG);
        let first = good[a.clone()].to_vec();
        swapped[a].copy_from_slice(&good[b.clone()]);
        swapped[b].copy_from_slice(&first);
        fs::write(&path, &swapped).unwrap();
        assert!(files.read(oid).is_err());
        // Another node's key opens nothing.
        fs::write(&path, &good).unwrap();
        let other = ObjectFiles::new(
            tmp.path().join("objects"),
            ObjectKeys::new(&DataKey::from_bytes([4; 32])),
        );
        fs::create_dir_all(other.path(oid).parent().unwrap()).unwrap();
        fs::copy(&path, other.path(oid)).unwrap();
        assert!(other.read(oid).is_err());
        assert_eq!(files.read(oid).unwrap().unwrap().1, data);
    }
}
