//! The journal: a repository's newest small objects, appended to one file.
//!
//! Every object this node writes (a commit's blob, trees and commit) was one
//! encrypted file, created under a temporary name and renamed into place.
//! Under a busy cluster the profile was the file system's inode allocator
//! (`ext4_new_inode` → `find_inode_bit` → `recently_deleted`, a third of both
//! CPUs): creating files is what a write cost, not sealing them. So objects
//! up to [`BUNDLED_OBJECT`] bytes are appended to the repository's journal
//! instead, one `pwrite` each and no new inode; once it holds
//! [`JOURNAL_BYTES`] or [`JOURNAL_RECORDS`], the next consolidation rolls it
//! into a bundle (sealed index, written durably) and empties it in place.
//!
//! ```text
//! objects/journal.knj1 = "KNJ1" ‖ epoch (16 random bytes) ‖ check (16) ‖ record*
//! check                = BLAKE2b-256(journal key, "KNJ1" ‖ epoch)[..16]
//! record               = len (u32 LE) ‖ nonce (24)
//!                        ‖ XChaCha20-Poly1305(kind ‖ object id ‖ content,
//!                                             aad = "KNJ1" ‖ epoch ‖ offset of len (u64 LE))
//! ```
//!
//! The key is the node's journal key, used for nothing else. The associated
//! data binds each record to its journal's epoch and its place in it, so a
//! record cannot be moved, repeated, or carried over from before a roll; the
//! object id inside the ciphertext is what the in-memory index is rebuilt
//! from at open (one decryption of at most a few MiB).
//!
//! **Crashes.** A record is one write, made before any ref names its object,
//! so what a crash can leave is a torn last record: at open the journal is
//! read up to the first record that is short or fails authentication, and cut
//! there (nothing reachable was after it). A header whose check fails (another
//! node's key, a foreign file) is refused and the file left alone. A roll
//! writes the bundle durably before it empties the journal, so a crash in
//! between leaves each object in both, never in neither.
//!
//! **Memory and size.** The index holds about 48 bytes per record, and a
//! journal past [`JOURNAL_HARD_BYTES`] or [`JOURNAL_HARD_RECORDS`] (a roll
//! kept off by a long backup) takes no more records: objects then go to files
//! of their own as before.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use git2::{ObjectType, Oid};
use keynode_core::datakey::{DataKey, keyed_hash};
use rand::RngCore;

use super::bundle::{BUNDLED_OBJECT, BundleWriter, Bundles};
use super::objects::{byte_kind, kind_byte};
use crate::VaultError;

/// The journal's file name, under a repository's `objects`.
pub(crate) const JOURNAL_FILE: &str = "journal.knj1";
const MAGIC: &[u8; 4] = b"KNJ1";
const EPOCH: usize = 16;
const CHECK: usize = 16;
/// Header bytes: magic, epoch, check.
const HEADER: usize = MAGIC.len() + EPOCH + CHECK;
const NONCE: usize = 24;
const TAG: usize = 16;
/// A record's length prefix.
const LEN: usize = 4;
/// Plaintext bytes before an object's content: kind and id.
const PREFIX: usize = 1 + 20;
/// Largest sealed record (nonce and ciphertext) a journal holds.
const MAX_SEALED: usize = NONCE + PREFIX + BUNDLED_OBJECT + TAG;

/// Bytes past which a journal is rolled into a bundle at the next
/// consolidation.
pub(crate) const JOURNAL_BYTES: u64 = 1 << 20;
/// Records past which a journal is rolled into a bundle.
pub(crate) const JOURNAL_RECORDS: usize = 1024;
/// Bytes past which a journal takes no more records.
pub(crate) const JOURNAL_HARD_BYTES: u64 = 4 * JOURNAL_BYTES;
/// Records past which a journal takes no more records.
pub(crate) const JOURNAL_HARD_RECORDS: usize = 4 * JOURNAL_RECORDS;

/// Where a journaled object's record is.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Offset of the record's length prefix.
    offset: u64,
    /// Bytes of nonce and ciphertext.
    len: u32,
    kind: ObjectType,
    size: u32,
}

/// One repository's journal, as a node keeps it.
pub(crate) struct Journal {
    path: PathBuf,
    /// The open file; `None` until the first record creates it.
    file: Option<fs::File>,
    epoch: [u8; EPOCH],
    /// Where the next record goes.
    end: u64,
    index: HashMap<Oid, Slot>,
}

fn corrupt(path: &Path, why: &str) -> VaultError {
    VaultError::Corrupt(format!("journal {}: {why}", path.display()))
}

fn check(key: &DataKey, epoch: &[u8; EPOCH]) -> [u8; CHECK] {
    let full = keyed_hash(key.expose(), &[MAGIC.as_slice(), epoch].concat());
    let mut out = [0u8; CHECK];
    out.copy_from_slice(&full[..CHECK]);
    out
}

fn aad(epoch: &[u8; EPOCH], offset: u64) -> [u8; MAGIC.len() + EPOCH + 8] {
    let mut out = [0u8; MAGIC.len() + EPOCH + 8];
    out[..4].copy_from_slice(MAGIC);
    out[4..4 + EPOCH].copy_from_slice(epoch);
    out[4 + EPOCH..].copy_from_slice(&offset.to_le_bytes());
    out
}

/// The journal key and cipher of a node.
pub(crate) struct JournalKey {
    key: DataKey,
    cipher: XChaCha20Poly1305,
}

impl JournalKey {
    pub(crate) fn new(key: DataKey) -> JournalKey {
        JournalKey {
            cipher: XChaCha20Poly1305::new(key.expose().into()),
            key,
        }
    }
}

impl Journal {
    /// The journal of the repository whose objects are in `objects`: read
    /// from its file (a torn tail cut off), or empty when there is none.
    fn load(objects: &Path, key: &JournalKey) -> Result<Journal, VaultError> {
        let path = objects.join(JOURNAL_FILE);
        let mut journal = Journal {
            path,
            file: None,
            epoch: [0; EPOCH],
            end: HEADER as u64,
            index: HashMap::new(),
        };
        let file = match fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&journal.path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(journal),
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata()?.len();
        let most = JOURNAL_HARD_BYTES + (LEN + MAX_SEALED) as u64;
        if len > most {
            return Err(corrupt(&journal.path, "is larger than a journal can be"));
        }
        if len < HEADER as u64 {
            // Created, and cut before its header was whole: nothing in it.
            return Ok(journal);
        }
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, 0)?;
        if &bytes[..4] != MAGIC {
            return Err(corrupt(&journal.path, "has no journal header"));
        }
        journal.epoch.copy_from_slice(&bytes[4..4 + EPOCH]);
        if bytes[4 + EPOCH..HEADER] != check(&key.key, &journal.epoch) {
            return Err(corrupt(
                &journal.path,
                "was not written under this node's key",
            ));
        }
        let mut at = HEADER;
        while let Some((oid, slot)) = journal.parse(&bytes, at, key) {
            journal.index.insert(oid, slot);
            at += LEN + slot.len as usize;
        }
        journal.end = at as u64;
        if at < bytes.len() {
            tracing::warn!(
                path = %journal.path.display(),
                kept = at,
                cut = bytes.len() - at,
                "cutting the torn end of a vault journal"
            );
            file.set_len(at as u64)?;
        }
        journal.file = Some(file);
        Ok(journal)
    }

    /// The record at `at` in `bytes`, if whole and authentic.
    fn parse(&self, bytes: &[u8], at: usize, key: &JournalKey) -> Option<(Oid, Slot)> {
        let len_bytes = bytes.get(at..at + LEN)?;
        let len = u32::from_le_bytes(len_bytes.try_into().ok()?) as usize;
        if !(NONCE + PREFIX + TAG..=MAX_SEALED).contains(&len) {
            return None;
        }
        let sealed = bytes.get(at + LEN..at + LEN + len)?;
        let plain = self.open(sealed, at as u64, key).ok()?;
        let kind = byte_kind(plain[0])?;
        let oid = Oid::from_bytes(&plain[1..PREFIX]).ok()?;
        let slot = Slot {
            offset: at as u64,
            len: len as u32,
            kind,
            size: (plain.len() - PREFIX) as u32,
        };
        Some((oid, slot))
    }

    fn open(&self, sealed: &[u8], offset: u64, key: &JournalKey) -> Result<Vec<u8>, ()> {
        if sealed.len() < NONCE + PREFIX + TAG {
            return Err(());
        }
        let plain = key
            .cipher
            .decrypt(
                XNonce::from_slice(&sealed[..NONCE]),
                Payload {
                    msg: &sealed[NONCE..],
                    aad: &aad(&self.epoch, offset),
                },
            )
            .map_err(|_| ())?;
        if plain.len() < PREFIX {
            return Err(());
        }
        Ok(plain)
    }

    /// Whether the journal holds `oid`.
    pub(crate) fn contains(&self, oid: Oid) -> bool {
        self.index.contains_key(&oid)
    }

    /// The kind and size of `oid`, if journaled.
    pub(crate) fn header(&self, oid: Oid) -> Option<(ObjectType, u64)> {
        self.index.get(&oid).map(|s| (s.kind, u64::from(s.size)))
    }

    /// Records held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the next consolidation should roll the journal.
    pub(crate) fn full(&self) -> bool {
        self.end >= JOURNAL_BYTES || self.index.len() >= JOURNAL_RECORDS
    }

    /// Reads and opens the record of `oid`, if journaled.
    pub(crate) fn read(
        &self,
        oid: Oid,
        key: &JournalKey,
    ) -> Result<Option<(ObjectType, Vec<u8>)>, VaultError> {
        let (Some(slot), Some(file)) = (self.index.get(&oid), self.file.as_ref()) else {
            return Ok(None);
        };
        let mut sealed = vec![0u8; slot.len as usize];
        file.read_exact_at(&mut sealed, slot.offset + LEN as u64)?;
        let mut plain = self
            .open(&sealed, slot.offset, key)
            .map_err(|()| corrupt(&self.path, "a record failed authentication"))?;
        if plain[0] != kind_byte(slot.kind) || plain[1..PREFIX] != *oid.as_bytes() {
            return Err(corrupt(&self.path, "a record does not match its index"));
        }
        plain.drain(..PREFIX);
        Ok(Some((slot.kind, plain)))
    }

    /// Appends object `oid`; `false` (nothing written) if it is larger than
    /// [`BUNDLED_OBJECT`] or the journal is past its hard limits.
    pub(crate) fn append(
        &mut self,
        oid: Oid,
        kind: ObjectType,
        data: &[u8],
        key: &JournalKey,
    ) -> Result<bool, VaultError> {
        if self.index.contains_key(&oid) {
            return Ok(true);
        }
        if data.len() > BUNDLED_OBJECT
            || self.end >= JOURNAL_HARD_BYTES
            || self.index.len() >= JOURNAL_HARD_RECORDS
        {
            return Ok(false);
        }
        if self.file.is_none() {
            self.create(key)?;
        }
        let mut msg = Vec::with_capacity(PREFIX + data.len());
        msg.push(kind_byte(kind));
        msg.extend_from_slice(oid.as_bytes());
        msg.extend_from_slice(data);
        let mut nonce = [0u8; NONCE];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &msg,
                    aad: &aad(&self.epoch, self.end),
                },
            )
            .map_err(|_| io::Error::other("encryption failed"))?;
        let len = NONCE + sealed.len();
        let mut record = Vec::with_capacity(LEN + len);
        record.extend_from_slice(&(len as u32).to_le_bytes());
        record.extend_from_slice(&nonce);
        record.extend_from_slice(&sealed);
        let file = self.file.as_ref().expect("created above");
        file.write_all_at(&record, self.end)?;
        self.index.insert(
            oid,
            Slot {
                offset: self.end,
                len: len as u32,
                kind,
                size: data.len() as u32,
            },
        );
        self.end += record.len() as u64;
        Ok(true)
    }

    /// Creates the file with a fresh header.
    fn create(&mut self, key: &JournalKey) -> Result<(), VaultError> {
        if let Some(parent) = self.path.parent() {
            fs::create_dir_all(parent)?;
        }
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)?;
        self.file = Some(file);
        self.restart(key)
    }

    /// Starts a new epoch in the same file: a new header, nothing after it.
    fn restart(&mut self, key: &JournalKey) -> Result<(), VaultError> {
        rand::rngs::OsRng.fill_bytes(&mut self.epoch);
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&self.epoch);
        header.extend_from_slice(&check(&key.key, &self.epoch));
        let file = self.file.as_ref().expect("the file is open");
        file.write_all_at(&header, 0)?;
        file.set_len(HEADER as u64)?;
        self.end = HEADER as u64;
        self.index.clear();
        Ok(())
    }

    /// Rolls the journal into a new bundle of the repository whose objects
    /// are in `objects` (written durably, then added to `bundles`), then
    /// empties it; returns how many objects moved. Each record is
    /// authenticated on the way.
    pub(crate) fn roll(
        &mut self,
        objects: &Path,
        key: &JournalKey,
        bundle_cipher: &XChaCha20Poly1305,
        bundles: &RwLock<Bundles>,
    ) -> Result<usize, VaultError> {
        if self.index.is_empty() {
            return Ok(0);
        }
        let mut slots: Vec<(Oid, Slot)> = self.index.iter().map(|(o, s)| (*o, *s)).collect();
        slots.sort_unstable_by_key(|(_, s)| s.offset);
        let mut writer = BundleWriter::create(objects);
        let written = (|| {
            for (oid, _) in &slots {
                let (kind, data) = self
                    .read(*oid, key)?
                    .ok_or_else(|| corrupt(&self.path, "an indexed record is missing"))?;
                writer.add(*oid, kind, &data, bundle_cipher)?;
            }
            Ok::<_, VaultError>(())
        })();
        if let Err(e) = written {
            writer.discard();
            return Err(e);
        }
        writer.finish_durable(bundle_cipher, bundles)?;
        self.restart(key)?;
        Ok(slots.len())
    }
}

/// The journals of every repository of a node, by `objects` path.
#[derive(Default)]
pub(crate) struct Journals {
    repos: Mutex<HashMap<PathBuf, Arc<RwLock<Journal>>>>,
}

impl Journals {
    /// The journal of the repository whose objects are in `dir`, read on
    /// first use.
    pub(crate) fn of(
        &self,
        dir: &Path,
        key: &JournalKey,
    ) -> Result<Arc<RwLock<Journal>>, VaultError> {
        let mut repos = self.repos.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(j) = repos.get(dir) {
            return Ok(j.clone());
        }
        let loaded = Arc::new(RwLock::new(Journal::load(dir, key)?));
        repos.insert(dir.to_owned(), loaded.clone());
        Ok(loaded)
    }

    /// Drops what is kept for `dir` (a deleted repository).
    pub(crate) fn forget(&self, dir: &Path) {
        self.repos
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|path, _| !path.starts_with(dir));
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::repo::objects::{ObjectFiles, ObjectKeys, object_id};

    fn keys(b: u8) -> Arc<ObjectKeys> {
        ObjectKeys::new(&DataKey::from_bytes([b; 32]))
    }

    fn blob(i: u32, len: usize) -> (Oid, Vec<u8>) {
        let mut data = format!("object {i} ").into_bytes();
        data.resize(len.max(data.len()), b'x');
        (object_id(ObjectType::Blob, &data), data)
    }

    fn write(files: &ObjectFiles, objects: &[(Oid, Vec<u8>)]) {
        for (oid, data) in objects {
            files.write(*oid, ObjectType::Blob, data).unwrap();
        }
    }

    fn reads(files: &ObjectFiles, objects: &[(Oid, Vec<u8>)]) -> usize {
        objects
            .iter()
            .filter(|(oid, data)| {
                files
                    .read(*oid)
                    .unwrap()
                    .is_some_and(|(k, d)| k == ObjectType::Blob && &d == data)
            })
            .count()
    }

    /// Files under `dir` but the journal.
    fn other_files(dir: &Path) -> usize {
        let mut n = 0;
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = fs::read_dir(&d) else {
                continue;
            };
            for e in entries {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else if e.file_name() != JOURNAL_FILE {
                    n += 1;
                }
            }
        }
        n
    }

    #[test]
    fn small_objects_go_to_the_journal_and_read_back_after_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let objects: Vec<_> = (0..50).map(|i| blob(i, 100 + i as usize * 10)).collect();
        let files = ObjectFiles::new(dir.clone(), keys(7));
        write(&files, &objects);
        assert_eq!(reads(&files, &objects), 50);
        assert_eq!(files.journaled().unwrap(), 50);
        assert_eq!(other_files(&dir), 0, "no object file of its own");
        assert_eq!(
            files.read_header(objects[3].0).unwrap(),
            Some((ObjectType::Blob, 130))
        );
        // A larger object still gets its file.
        let big = blob(99, BUNDLED_OBJECT + 1);
        write(&files, std::slice::from_ref(&big));
        assert_eq!(other_files(&dir), 1);
        // A new process: the index is rebuilt from the file.
        let again = ObjectFiles::new(dir.clone(), keys(7));
        assert_eq!(reads(&again, &objects), 50);
        assert_eq!(reads(&again, &[big]), 1);
        let raw = fs::read(dir.join(JOURNAL_FILE)).unwrap();
        assert!(
            !raw.windows(8).any(|w| w == b"object 1"),
            "content is sealed"
        );
        assert!(
            !raw.windows(20).any(|w| w == objects[0].0.as_bytes()),
            "ids are sealed"
        );
    }

    #[test]
    fn a_torn_last_record_is_cut_and_appending_goes_on() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let objects: Vec<_> = (0..3).map(|i| blob(i, 200)).collect();
        write(&ObjectFiles::new(dir.clone(), keys(7)), &objects);
        let path = dir.join(JOURNAL_FILE);
        let len = fs::metadata(&path).unwrap().len();
        let record = (len - HEADER as u64) / 3;
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let files = ObjectFiles::new(dir.clone(), keys(7));
        assert_eq!(reads(&files, &objects[..2]), 2);
        assert!(files.read(objects[2].0).unwrap().is_none());
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            HEADER as u64 + 2 * record
        );
        write(&files, &objects[2..]);
        assert_eq!(reads(&ObjectFiles::new(dir, keys(7)), &objects), 3);
    }

    #[test]
    fn moved_flipped_and_foreign_records_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let objects: Vec<_> = (0..4).map(|i| blob(i, 300)).collect();
        write(&ObjectFiles::new(dir.clone(), keys(7)), &objects);
        let path = dir.join(JOURNAL_FILE);
        let clean = fs::read(&path).unwrap();
        let record = (clean.len() - HEADER) / 4;

        // Records 1 and 2 swapped: each fails where it now is.
        let mut swapped = clean.clone();
        let (a, b) = (HEADER + record, HEADER + 2 * record);
        swapped[a..a + record].copy_from_slice(&clean[b..b + record]);
        swapped[b..b + record].copy_from_slice(&clean[a..a + record]);
        fs::write(&path, &swapped).unwrap();
        let files = ObjectFiles::new(dir.clone(), keys(7));
        assert_eq!(reads(&files, &objects[..1]), 1);
        assert_eq!(
            reads(&files, &objects[1..]),
            0,
            "nothing after a moved record"
        );

        // One byte of content flipped: never read back as content.
        let mut flipped = clean.clone();
        flipped[HEADER + record + 40] ^= 1;
        fs::write(&path, &flipped).unwrap();
        let files = ObjectFiles::new(dir.clone(), keys(7));
        assert!(files.read(objects[1].0).unwrap().is_none());

        // Another node's key: refused, and the file left as it is.
        fs::write(&path, &clean).unwrap();
        let other = ObjectFiles::new(dir.clone(), keys(8));
        assert!(matches!(
            other.read(objects[0].0),
            Err(VaultError::Corrupt(_))
        ));
        assert_eq!(fs::read(&path).unwrap(), clean);
    }

    #[test]
    fn a_full_journal_rolls_into_a_bundle_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let files = ObjectFiles::new(dir.clone(), keys(7));
        let objects: Vec<_> = (0..JOURNAL_RECORDS as u32).map(|i| blob(i, 40)).collect();
        write(&files, &objects[..10]);
        assert!(!files.journal_full().unwrap());
        write(&files, &objects[10..]);
        assert!(files.journal_full().unwrap());
        let path = dir.join(JOURNAL_FILE);
        let inode = fs::metadata(&path).unwrap().ino();
        assert_eq!(files.roll_journal().unwrap(), JOURNAL_RECORDS);
        assert_eq!(files.journaled().unwrap(), 0);
        assert_eq!(files.bundle_count().unwrap(), 1);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.len(), meta.ino()),
            (HEADER as u64, inode),
            "emptied in place"
        );
        assert_eq!(reads(&files, &objects), JOURNAL_RECORDS);
        // After a restart: from the bundle; the emptied journal reads as empty.
        let again = ObjectFiles::new(dir.clone(), keys(7));
        assert_eq!(reads(&again, &objects), JOURNAL_RECORDS);
        assert_eq!(again.journaled().unwrap(), 0);
        // Records written before the roll cannot come back under the new epoch.
        let more = blob(5000, 40);
        write(&again, std::slice::from_ref(&more));
        assert_eq!(reads(&ObjectFiles::new(dir, keys(7)), &[more]), 1);
    }

    #[test]
    fn past_its_hard_limit_the_journal_takes_no_more() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let files = ObjectFiles::new(dir.clone(), keys(7));
        let objects: Vec<_> = (0..JOURNAL_HARD_RECORDS as u32 + 3)
            .map(|i| blob(i, 1))
            .collect();
        write(&files, &objects);
        assert_eq!(files.journaled().unwrap(), JOURNAL_HARD_RECORDS);
        assert_eq!(other_files(&dir), 3, "the rest in files of their own");
        assert_eq!(reads(&files, &objects), objects.len());
    }
}
