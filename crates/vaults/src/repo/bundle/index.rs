//! Bundle indexes, format 3: entries sorted by object id, sealed in blocks
//! that are found and opened one at a time.
//!
//! ```text
//! bundles/<name>.kni3 = "KNI3" ‖ block+
//! block               = nonce (24) ‖ XChaCha20-Poly1305(entry{1..64},
//!                       aad = "KNI3" ‖ name ‖ block number (u32 LE) ‖ last (u8))
//! entry               = object id (20) ‖ offset (u64) ‖ record length (u32) ‖ kind (u8) ‖ size (u64)
//! ```
//!
//! Every block but the last holds [`BLOCK`] entries, so block `i` starts at a
//! known offset. A node keeps only the first id of each block in memory (20
//! bytes per 64 objects); a lookup searches those, then reads and opens one
//! block (a node-wide cache keeps the most recent ones open). Format 2 held
//! a whole index in memory, about 100 bytes per object, which a followed
//! vault's owner could grow past what its objects take on disk.
//!
//! The associated data binds each block to its bundle, its place and whether
//! it ends the index, so blocks cannot be swapped between bundles, reordered,
//! or dropped from the end (the new last block was sealed as not last).
//! Entries must be strictly ascending within and across blocks.
//!
//! Format 2 (`.kni2`, one sealed run of entries in any order) is rewritten in
//! format 3 when the store opens ([`migrate_v2`]).

use std::fs;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use git2::Oid;
use rand::RngCore;

use super::{BUNDLE_DIR, Location, NONCE, corrupt};
use crate::VaultError;

const INDEX_MAGIC: &[u8; 4] = b"KNI3";
/// File name extension of a format 3 index.
pub(crate) const INDEX_EXT: &str = "kni3";
const INDEX_MAGIC_V2: &[u8; 4] = b"KNI2";
/// File name extension of a format 2 index.
pub(crate) const INDEX_EXT_V2: &str = "kni2";
/// Entries per block.
pub(crate) const BLOCK: usize = 64;
/// Bytes of one entry.
pub(crate) const ENTRY: usize = 20 + 8 + 4 + 1 + 8;
const TAG: usize = 16;
/// Bytes of a full sealed block.
const SEALED_BLOCK: usize = NONCE + BLOCK * ENTRY + TAG;

/// An object id and where its record is.
pub(crate) type Item = (Oid, Location);

/// What a node keeps of an index: the first id of every block, and how many
/// entries the last block holds.
#[derive(Debug)]
pub(crate) struct Outline {
    pub(crate) firsts: Vec<Oid>,
    pub(crate) last_len: usize,
}

impl Outline {
    /// Entries in the index.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        (self.firsts.len() - 1) * BLOCK + self.last_len
    }

    /// The block that holds `oid` if any block does.
    pub(crate) fn block_of(&self, oid: Oid) -> Option<usize> {
        self.firsts
            .partition_point(|first| *first <= oid)
            .checked_sub(1)
    }

    fn is_last(&self, block: usize) -> bool {
        block + 1 == self.firsts.len()
    }

    fn sealed_len(&self, block: usize) -> usize {
        if self.is_last(block) {
            NONCE + self.last_len * ENTRY + TAG
        } else {
            SEALED_BLOCK
        }
    }
}

fn aad(name: &str, block: usize, last: bool) -> Vec<u8> {
    let block = u32::try_from(block).expect("fewer than 2³² blocks");
    [
        INDEX_MAGIC.as_slice(),
        name.as_bytes(),
        &block.to_le_bytes(),
        &[u8::from(last)],
    ]
    .concat()
}

pub(crate) fn encode(items: &[Item], out: &mut Vec<u8>) {
    for (oid, at) in items {
        out.extend_from_slice(oid.as_bytes());
        out.extend_from_slice(&at.offset.to_le_bytes());
        out.extend_from_slice(&at.len.to_le_bytes());
        out.push(super::super::objects::kind_byte(at.kind));
        out.extend_from_slice(&at.size.to_le_bytes());
    }
}

/// Entries in any order (format 2 kept them so).
fn decode(plain: &[u8]) -> Result<Vec<Item>, &'static str> {
    if !plain.len().is_multiple_of(ENTRY) {
        return Err("index is malformed");
    }
    plain
        .chunks(ENTRY)
        .map(|e| {
            let oid = Oid::from_bytes(&e[..20]).map_err(|_| "bad id")?;
            let kind = super::super::objects::byte_kind(e[32]).ok_or("bad kind")?;
            let location = Location {
                offset: u64::from_le_bytes(e[20..28].try_into().expect("8 bytes")),
                len: u32::from_le_bytes(e[28..32].try_into().expect("4 bytes")),
                kind,
                size: u64::from_le_bytes(e[33..41].try_into().expect("8 bytes")),
            };
            Ok((oid, location))
        })
        .collect()
}

/// Opens one sealed block: 1 to [`BLOCK`] entries, strictly ascending.
fn open_block(
    sealed: &[u8],
    name: &str,
    block: usize,
    last: bool,
    cipher: &XChaCha20Poly1305,
) -> Result<Vec<Item>, &'static str> {
    if sealed.len() < NONCE {
        return Err("index is truncated");
    }
    let plain = cipher
        .decrypt(
            XNonce::from_slice(&sealed[..NONCE]),
            Payload {
                msg: &sealed[NONCE..],
                aad: &aad(name, block, last),
            },
        )
        .map_err(|_| "index failed authentication")?;
    let items = decode(&plain)?;
    let full = items.len() == BLOCK;
    if items.is_empty() || !(full || last) {
        return Err("index block has the wrong size");
    }
    if !items.windows(2).all(|w| w[0].0 < w[1].0) {
        return Err("index is not sorted");
    }
    Ok(items)
}

/// Reads the whole index at `path` (of bundle `name`) once, to keep its
/// outline; every block is authenticated on the way.
pub(crate) fn outline(
    path: &Path,
    name: &str,
    cipher: &XChaCha20Poly1305,
) -> Result<Outline, VaultError> {
    let bytes = fs::read(path)?;
    let why = |why| corrupt(path, why);
    if bytes.len() < INDEX_MAGIC.len() || &bytes[..4] != INDEX_MAGIC {
        return Err(why("is not a format 3 index"));
    }
    let body = &bytes[4..];
    let mut firsts = Vec::with_capacity(body.len().div_ceil(SEALED_BLOCK));
    let mut last_len = 0;
    let mut previous: Option<Oid> = None;
    for (block, sealed) in body.chunks(SEALED_BLOCK).enumerate() {
        let last = (block + 1) * SEALED_BLOCK >= body.len();
        let items = open_block(sealed, name, block, last, cipher).map_err(why)?;
        if previous.is_some_and(|p| p >= items[0].0) {
            return Err(why("index is not sorted"));
        }
        firsts.push(items[0].0);
        previous = items.last().map(|(oid, _)| *oid);
        last_len = items.len();
    }
    if firsts.is_empty() {
        return Err(why("index is empty"));
    }
    Ok(Outline { firsts, last_len })
}

/// Reads and opens block `block` of the index `file` (of bundle `name`),
/// whose outline is `outline`.
pub(crate) fn read_block(
    file: &fs::File,
    path: &Path,
    name: &str,
    outline: &Outline,
    block: usize,
    cipher: &XChaCha20Poly1305,
) -> Result<Vec<Item>, VaultError> {
    let mut sealed = vec![0u8; outline.sealed_len(block)];
    file.read_exact_at(&mut sealed, (4 + block * SEALED_BLOCK) as u64)?;
    let items = open_block(&sealed, name, block, outline.is_last(block), cipher)
        .map_err(|why| corrupt(path, why))?;
    if items[0].0 != outline.firsts[block] {
        return Err(corrupt(path, "index changed since it was read"));
    }
    Ok(items)
}

/// Every entry of the index at `path`, in order.
#[cfg(test)]
pub(crate) fn read_all(path: &Path, name: &str, cipher: &XChaCha20Poly1305) -> Vec<Item> {
    let outline = outline(path, name, cipher).unwrap();
    let file = fs::File::open(path).unwrap();
    (0..outline.firsts.len())
        .flat_map(|b| read_block(&file, path, name, &outline, b, cipher).unwrap())
        .collect()
}

/// Writes an index: entries pushed in ascending order, sealed a block at a
/// time (one block held back, to be sealed as the last one).
pub(crate) struct IndexWriter {
    name: String,
    dir: std::path::PathBuf,
    file: BufWriter<tempfile::NamedTempFile>,
    cipher: XChaCha20Poly1305,
    block: Vec<Item>,
    held: Option<Vec<Item>>,
    sealed: usize,
    firsts: Vec<Oid>,
}

impl IndexWriter {
    /// A writer of the index of bundle `name` in the bundle directory `dir`.
    pub(crate) fn new(
        dir: &Path,
        name: &str,
        cipher: &XChaCha20Poly1305,
    ) -> Result<Self, VaultError> {
        let tmp = tempfile::Builder::new().prefix("index").tempfile_in(dir)?;
        let mut file = BufWriter::with_capacity(64 * 1024, tmp);
        file.write_all(INDEX_MAGIC)?;
        Ok(IndexWriter {
            name: name.to_owned(),
            dir: dir.to_owned(),
            file,
            cipher: cipher.clone(),
            block: Vec::with_capacity(BLOCK),
            held: None,
            sealed: 0,
            firsts: Vec::new(),
        })
    }

    /// Adds the next entry; ids must ascend.
    pub(crate) fn push(&mut self, oid: Oid, at: Location) -> Result<(), VaultError> {
        let last = self
            .block
            .last()
            .or_else(|| self.held.as_ref().and_then(|h| h.last()));
        if last.is_some_and(|(previous, _)| *previous >= oid) {
            return Err(VaultError::Corrupt(
                "bundle index entries out of order".into(),
            ));
        }
        if self.block.is_empty() {
            self.firsts.push(oid);
        }
        self.block.push((oid, at));
        if self.block.len() == BLOCK {
            let full = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
            if let Some(held) = self.held.replace(full) {
                self.seal(&held, false)?;
            }
        }
        Ok(())
    }

    fn seal(&mut self, items: &[Item], last: bool) -> Result<(), VaultError> {
        let mut plain = Vec::with_capacity(items.len() * ENTRY);
        encode(items, &mut plain);
        let mut nonce = [0u8; NONCE];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &aad(&self.name, self.sealed, last),
                },
            )
            .map_err(|_| io::Error::other("encryption failed"))?;
        self.file.write_all(&nonce)?;
        self.file.write_all(&sealed)?;
        self.sealed += 1;
        Ok(())
    }

    /// Seals what is left and puts the index in place (`<name>.kni3`); with
    /// `durable`, the file and its directory entry are on disk before this
    /// returns. An index needs at least one entry.
    pub(crate) fn finish(mut self, durable: bool) -> Result<Outline, VaultError> {
        let block = std::mem::take(&mut self.block);
        let held = self.held.take();
        let last_len = match (held, block.is_empty()) {
            (None, true) => return Err(io::Error::other("an index with no entry").into()),
            (Some(held), true) => {
                self.seal(&held, true)?;
                held.len()
            }
            (held, false) => {
                if let Some(held) = held {
                    self.seal(&held, false)?;
                }
                self.seal(&block, true)?;
                block.len()
            }
        };
        let tmp = self.file.into_inner().map_err(|e| e.into_error())?;
        if durable {
            tmp.as_file().sync_all()?;
        }
        tmp.persist(self.dir.join(format!("{}.{INDEX_EXT}", self.name)))
            .map_err(|e| e.error)?;
        if durable {
            fs::File::open(&self.dir)?.sync_all()?;
        }
        Ok(Outline {
            firsts: self.firsts,
            last_len,
        })
    }
}

/// The entries of a format 1 or 2 index (one sealed run, its associated data
/// `magic` ‖ name).
pub(crate) fn open_run(
    sealed: &[u8],
    name: &str,
    magic: &[u8; 4],
    cipher: &XChaCha20Poly1305,
) -> Result<Vec<Item>, &'static str> {
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
    decode(&plain)
}

/// Rewrites every format 2 index under the `objects` directory `objects` in
/// format 3 (the data files stay as they are); returns how many. Runs while
/// nothing else touches the repository (the store calls it at open) and is
/// safe to cut at any point: the format 3 index is written durably before the
/// format 2 one is removed, and a format 2 index whose format 3 twin exists
/// is only removed. An index that fails authentication is left as it is (and
/// reported): a wrong key must not destroy data.
pub(crate) fn migrate_v2(objects: &Path, cipher: &XChaCha20Poly1305) -> Result<usize, VaultError> {
    let root = objects.join(BUNDLE_DIR);
    let mut migrated = 0;
    for name in super::names_with(&root, INDEX_EXT_V2)? {
        let old = root.join(format!("{name}.{INDEX_EXT_V2}"));
        if !root.join(format!("{name}.{INDEX_EXT}")).exists() {
            let mut items = match open_run(&fs::read(&old)?, &name, INDEX_MAGIC_V2, cipher) {
                Ok(items) => items,
                Err(why) => {
                    tracing::warn!(bundle = %name, %why, "format 2 bundle index not migrated");
                    continue;
                }
            };
            items.sort_unstable_by_key(|(oid, _)| *oid);
            items.dedup_by_key(|(oid, _)| *oid);
            let mut writer = IndexWriter::new(&root, &name, cipher)?;
            for (oid, at) in items {
                writer.push(oid, at)?;
            }
            writer.finish(true)?;
            migrated += 1;
        }
        fs::remove_file(&old)?;
    }
    Ok(migrated)
}

/// Writes `plain` (encoded entries) sealed as one run, the way format 1 and 2
/// indexes were, to `path`, for the migrations' tests.
#[cfg(test)]
pub(crate) fn write_run(
    path: &Path,
    plain: &[u8],
    name: &str,
    magic: &[u8; 4],
    cipher: &XChaCha20Poly1305,
) {
    let nonce = [5u8; NONCE];
    let aad = [magic.as_slice(), name.as_bytes()].concat();
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: &aad,
            },
        )
        .unwrap();
    fs::write(path, [nonce.as_slice(), &sealed].concat()).unwrap();
}

/// Writes a format 2 index of `items` for bundle `name` (what an older
/// keynode wrote), for the migration's tests.
#[cfg(test)]
pub(crate) fn write_v2(root: &Path, name: &str, items: &[Item], cipher: &XChaCha20Poly1305) {
    let mut plain = Vec::new();
    encode(items, &mut plain);
    let path = root.join(format!("{name}.{INDEX_EXT_V2}"));
    write_run(&path, &plain, name, INDEX_MAGIC_V2, cipher);
}

/// Rewrites every format 3 index under `objects` in format 2 (what an older
/// keynode left), for the migration's tests; returns how many.
#[cfg(test)]
pub(crate) fn downgrade(objects: &Path, cipher: &XChaCha20Poly1305) -> usize {
    let root = objects.join(BUNDLE_DIR);
    let mut n = 0;
    for entry in fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == INDEX_EXT) {
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            write_v2(&root, &name, &read_all(&path, &name, cipher), cipher);
            fs::remove_file(&path).unwrap();
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::KeyInit;
    use git2::ObjectType;

    fn cipher(k: u8) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&[k; 32].into())
    }

    fn items(n: usize) -> Vec<Item> {
        let mut items: Vec<Item> = (0..n)
            .map(|i| {
                let oid = Oid::hash_object(ObjectType::Blob, format!("o{i}").as_bytes()).unwrap();
                let at = Location {
                    offset: i as u64 * 10,
                    len: 50 + i as u32,
                    kind: ObjectType::Blob,
                    size: i as u64,
                };
                (oid, at)
            })
            .collect();
        items.sort_by_key(|(oid, _)| *oid);
        items
    }

    fn write(dir: &Path, name: &str, items: &[Item]) -> Outline {
        let mut w = IndexWriter::new(dir, name, &cipher(1)).unwrap();
        for (oid, at) in items {
            w.push(*oid, *at).unwrap();
        }
        w.finish(false).unwrap()
    }

    #[test]
    fn every_entry_is_found_in_its_block_and_only_firsts_stay_in_memory() {
        let tmp = tempfile::tempdir().unwrap();
        for n in [1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK, 1000] {
            let name = format!("n{n}");
            let all = items(n);
            let written = write(tmp.path(), &name, &all);
            let path = tmp.path().join(format!("{name}.{INDEX_EXT}"));
            let outline = outline(&path, &name, &cipher(1)).unwrap();
            assert_eq!(outline.firsts, written.firsts);
            assert_eq!(
                (outline.len(), outline.firsts.len()),
                (n, n.div_ceil(BLOCK))
            );
            let file = fs::File::open(&path).unwrap();
            for (oid, at) in &all {
                let b = outline.block_of(*oid).unwrap();
                let block = read_block(&file, &path, &name, &outline, b, &cipher(1)).unwrap();
                let found = block.iter().find(|(o, _)| o == oid).unwrap().1;
                assert_eq!((found.offset, found.len), (at.offset, at.len));
            }
            assert_eq!(read_all(&path, &name, &cipher(1)).len(), n);
        }
        // An id below the first is in no block.
        let outline = Outline {
            firsts: vec![Oid::from_bytes(&[5; 20]).unwrap()],
            last_len: 1,
        };
        assert_eq!(outline.block_of(Oid::from_bytes(&[4; 20]).unwrap()), None);
    }

    #[test]
    fn cut_swapped_foreign_or_renamed_indexes_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let all = items(3 * BLOCK);
        write(tmp.path(), "a", &all);
        let path = tmp.path().join(format!("a.{INDEX_EXT}"));
        let good = fs::read(&path).unwrap();
        let check = |bytes: &[u8], name: &str, key: u8| {
            fs::write(&path, bytes).unwrap();
            outline(&path, name, &cipher(key))
        };
        assert!(check(&good, "a", 1).is_ok());
        // Dropped at a block boundary: the new last block was not sealed last.
        assert!(check(&good[..4 + 2 * SEALED_BLOCK], "a", 1).is_err());
        // Two blocks swapped.
        let mut swapped = good.clone();
        let (x, y) = (4..4 + SEALED_BLOCK, 4 + SEALED_BLOCK..4 + 2 * SEALED_BLOCK);
        swapped[x.clone()].copy_from_slice(&good[y.clone()]);
        swapped[y].copy_from_slice(&good[x]);
        assert!(check(&swapped, "a", 1).is_err());
        // Another bundle's name, another key, a flipped bit.
        assert!(check(&good, "b", 1).is_err());
        assert!(check(&good, "a", 2).is_err());
        let mut flipped = good.clone();
        flipped[100] ^= 1;
        assert!(check(&flipped, "a", 1).is_err());
        assert!(check(b"KNI3", "a", 1).is_err());
        // Out-of-order pushes are refused while writing.
        let mut w = IndexWriter::new(tmp.path(), "c", &cipher(1)).unwrap();
        w.push(all[1].0, all[1].1).unwrap();
        assert!(w.push(all[0].0, all[0].1).is_err());
        assert!(w.push(all[1].0, all[1].1).is_err());
        let empty = IndexWriter::new(tmp.path(), "d", &cipher(1)).unwrap();
        assert!(empty.finish(false).is_err());
    }

    #[test]
    fn format_2_indexes_are_rewritten_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join(BUNDLE_DIR);
        fs::create_dir_all(&root).unwrap();
        let mut all = items(100);
        all.reverse();
        write_v2(&root, "a", &all, &cipher(1));
        write_v2(&root, "z", &all[..3], &cipher(2));
        assert_eq!(migrate_v2(tmp.path(), &cipher(1)).unwrap(), 1);
        assert!(!root.join("a.kni2").exists());
        let back = read_all(&root.join("a.kni3"), "a", &cipher(1));
        assert_eq!(back.len(), 100);
        // Under another key: left alone.
        assert!(root.join("z.kni2").exists() && !root.join("z.kni3").exists());
        // Cut after the new index: the old one is only removed.
        write_v2(&root, "a", &all, &cipher(1));
        assert_eq!(migrate_v2(tmp.path(), &cipher(1)).unwrap(), 0);
        assert!(!root.join("a.kni2").exists());
    }
}
