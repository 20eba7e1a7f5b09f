//! Receiving a git pack into the encrypted object files.
//!
//! libgit2's indexer writes a received pack (and its index) to disk in the
//! clear; the encrypted store cannot use it. This parser reads the pack as it
//! streams in (one object inflated at a time), resolves deltas against objects
//! already stored, and writes every object through the store, so no plaintext
//! byte reaches the disk. It checks what the indexer checks: the header, every
//! object's zlib stream and declared size, every delta's base and sizes, the
//! trailing SHA-1 over the whole pack, and connectivity (every tree entry and
//! every parent and tree a commit names is in the pack or already stored).
//!
//! Format (git's `Documentation/gitformat-pack.txt`): `PACK`, version 2 or 3 and
//! an object count (big-endian u32), then per object a type-and-size varint, for
//! an `OFS_DELTA` a negative offset to its base, for a `REF_DELTA` the base's id,
//! then the zlib-compressed content; last the SHA-1 of everything before.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, Read};

use flate2::bufread::ZlibDecoder;
use flate2::{Decompress, FlushDecompress, Status};
use git2::{ObjectType, Oid};
use sha1::{Digest, Sha1};

use super::bundle::{BUNDLED_OBJECT, BundleWriter, Staged};
use super::objects::{ObjectFiles, object_id};
use crate::VaultError;

/// Largest object a received pack may hold (inflated), so a small hostile pack
/// cannot make the receiver allocate without bound.
pub(crate) const MAX_PACK_OBJECT: u64 = 256 << 20;
/// Most objects one pack may announce: each costs some 100 bytes of
/// bookkeeping while the pack is read.
pub(crate) const MAX_PACK_OBJECTS: u32 = 500_000;
/// Whole blobs larger than this stream from the pack to their object file
/// (two chunks in memory) instead of being inflated in memory.
pub(crate) const STREAMED_OBJECT: u64 = 1 << 20;
/// Largest object held in memory while a pack is read: a tree or commit sent
/// whole, a delta's base or its result.
pub(crate) const MAX_MEMORY_OBJECT: u64 = 16 << 20;
/// Most bytes of deltas that may wait for a base not yet received.
pub(crate) const MAX_PENDING_DELTAS: usize = 32 << 20;

const OFS_DELTA: u8 = 6;
const REF_DELTA: u8 = 7;

fn bad(why: impl Into<String>) -> VaultError {
    VaultError::BadPack(git2::Error::from_str(&why.into()))
}

/// The pack's bytes, counted and hashed as they are consumed.
struct Input<R> {
    inner: io::BufReader<R>,
    hash: Sha1,
    offset: u64,
}

impl<R: Read> Read for Input<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(buf.len());
            buf[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for Input<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            self.hash.update(&buf[..n.min(buf.len())]);
        }
        self.offset += n as u64;
        self.inner.consume(n);
    }
}

impl<R: Read> Input<R> {
    fn byte(&mut self) -> Result<u8, VaultError> {
        let mut b = [0u8; 1];
        self.read_exact(&mut b).map_err(truncated)?;
        Ok(b[0])
    }
}

fn truncated(e: io::Error) -> VaultError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        bad("pack is truncated")
    } else {
        e.into()
    }
}

/// What the pack held.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Received {
    /// Objects in the pack.
    pub(crate) objects: usize,
}

/// A delta waiting for a base that has not arrived yet.
struct Pending {
    offset: u64,
    delta: Vec<u8>,
}

/// A pack whose small objects hold at most this many bytes goes to the
/// repository's journal once it is accepted (held in memory until then);
/// a larger one gets a bundle of its own.
const JOURNALED_PACK: usize = 256 * 1024;

/// Reads a whole pack from `pack` and stores its objects in `files`: those up
/// to [`BUNDLED_OBJECT`] bytes in the journal (a small pack) or in one new
/// bundle, larger ones in their own files. A refused pack leaves nothing.
///
/// The objects this pack adds may hold at most `room` bytes (inflated) in all:
/// beyond it the pack is refused ([`VaultError::VaultTooLarge`] with `limit`).
pub(crate) fn ingest(
    pack: &mut dyn Read,
    files: &ObjectFiles,
    room: u64,
    limit: u64,
) -> Result<Received, VaultError> {
    let mut bundle = Some(BundleWriter::staging(files.dir(), JOURNALED_PACK));
    let mut created = Vec::new();
    let room = Room { left: room, limit };
    match read_pack(pack, files, &mut bundle, &mut created, room) {
        Ok(received) => {
            match bundle.take().expect("still here").into_staged() {
                Staged::Memory(objects) => files.journal_all(objects)?,
                Staged::Bundle(bundle) => {
                    bundle.finish(&files.keys().cipher(), files.bundles()?.as_ref())?;
                }
            }
            Ok(received)
        }
        Err(e) => {
            if let Some(bundle) = bundle.take() {
                bundle.discard();
            }
            // A refused pack leaves no byte behind: the object files it made
            // (never those that were here before) go too.
            for oid in created {
                let _ = std::fs::remove_file(files.path(oid));
            }
            Err(e)
        }
    }
}

fn read_pack(
    pack: &mut dyn Read,
    files: &ObjectFiles,
    bundle: &mut Option<BundleWriter>,
    created: &mut Vec<Oid>,
    room: Room,
) -> Result<Received, VaultError> {
    let bundle = bundle.as_mut().expect("a bundle to write");
    let mut input = Input {
        inner: io::BufReader::with_capacity(64 * 1024, pack),
        hash: Sha1::new(),
        offset: 0,
    };
    let mut z = Decompress::new(true);
    let mut header = [0u8; 12];
    input.read_exact(&mut header).map_err(truncated)?;
    if &header[..4] != b"PACK" {
        return Err(bad("not a pack"));
    }
    let version = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if version != 2 && version != 3 {
        return Err(bad(format!("pack version {version} is not supported")));
    }
    let count = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    if count > MAX_PACK_OBJECTS {
        return Err(bad(format!("pack announces {count} objects")));
    }
    let mut state = State {
        files,
        bundle,
        at: HashMap::new(),
        written: HashSet::new(),
        needed: HashSet::new(),
        waiting: HashMap::new(),
        pending: 0,
        created,
        room,
    };
    for _ in 0..count {
        let start = input.offset;
        let first = input.byte()?;
        let kind = (first >> 4) & 7;
        let mut size = u64::from(first & 0x0f);
        let mut shift = 4;
        let mut b = first;
        while b & 0x80 != 0 {
            b = input.byte()?;
            if shift > 57 {
                return Err(bad("object size overflows"));
            }
            size |= u64::from(b & 0x7f) << shift;
            shift += 7;
        }
        if size > MAX_PACK_OBJECT {
            return Err(bad(format!("object of {size} bytes is too large")));
        }
        let base = match kind {
            OFS_DELTA => {
                let mut c = input.byte()?;
                let mut back = u64::from(c & 0x7f);
                while c & 0x80 != 0 {
                    c = input.byte()?;
                    back = back
                        .checked_add(1)
                        .and_then(|v| v.checked_mul(128))
                        .ok_or_else(|| bad("delta offset overflows"))?
                        | u64::from(c & 0x7f);
                }
                let at = start
                    .checked_sub(back)
                    .filter(|_| back > 0)
                    .ok_or_else(|| bad("delta base offset is outside the pack"))?;
                Some(Base::Offset(at))
            }
            REF_DELTA => {
                let mut id = [0u8; 20];
                input.read_exact(&mut id).map_err(truncated)?;
                Some(Base::Id(
                    Oid::from_bytes(&id).map_err(|e| bad(e.message()))?,
                ))
            }
            1..=4 => None,
            other => return Err(bad(format!("unknown object type {other}"))),
        };
        if base.is_none() && kind == 3 && size > STREAMED_OBJECT {
            // A big whole blob: straight from the pack to its file.
            let oid = stream_blob(&mut input, size, &mut state)?;
            state.stored(start, oid)?;
            continue;
        }
        if size > MAX_MEMORY_OBJECT {
            return Err(bad(format!(
                "a {size}-byte object that is not a whole blob (deltas and trees are held in memory)"
            )));
        }
        let data = inflate(&mut input, size, &mut z)?;
        match base {
            None => {
                let kind = match kind {
                    1 => ObjectType::Commit,
                    2 => ObjectType::Tree,
                    3 => ObjectType::Blob,
                    _ => ObjectType::Tag,
                };
                state.store(start, kind, &data)?;
            }
            Some(Base::Offset(at)) => {
                let base = *state
                    .at
                    .get(&at)
                    .ok_or_else(|| bad("delta base offset names no object"))?;
                state.resolve(start, base, &data)?;
            }
            Some(Base::Id(id)) => {
                if state.written.contains(&id) || files.exists(id) {
                    state.resolve(start, id, &data)?;
                } else {
                    state.pending += data.len();
                    if state.pending > MAX_PENDING_DELTAS {
                        return Err(bad(format!(
                            "over {MAX_PENDING_DELTAS} bytes of deltas wait for bases not sent"
                        )));
                    }
                    state.waiting.entry(id).or_default().push(Pending {
                        offset: start,
                        delta: data,
                    });
                }
            }
        }
    }
    let expected = std::mem::replace(&mut input.hash, Sha1::new()).finalize();
    let mut trailer = [0u8; 20];
    input.read_exact(&mut trailer).map_err(truncated)?;
    if trailer[..] != expected[..] {
        return Err(bad("pack checksum mismatch"));
    }
    if !input.fill_buf()?.is_empty() {
        return Err(bad("bytes after the pack trailer"));
    }
    if let Some(base) = state.waiting.keys().next() {
        return Err(bad(format!("delta base {base} is missing")));
    }
    for id in &state.needed {
        if !state.written.contains(id) && !files.exists(*id) {
            return Err(bad(format!("object {id} is referenced but missing")));
        }
    }
    Ok(Received {
        objects: count as usize,
    })
}

enum Base {
    Offset(u64),
    Id(Oid),
}

/// Inflates one object's zlib stream, which must yield exactly `size` bytes,
/// through `z` (reset here: one stream serves every object of a pack, where
/// a new one per object allocated its state and window each time).
fn inflate<R: Read>(
    input: &mut Input<R>,
    size: u64,
    z: &mut Decompress,
) -> Result<Vec<u8>, VaultError> {
    z.reset(true);
    // The output never holds more than one byte past the header's size
    // (which is how a stream longer than declared shows): its capacity grows
    // by doubling up to exactly `size + 1`, and the stream writes only into
    // that capacity. A declared size is not allocated before bytes arrive.
    let limit = size + 1;
    let mut out = Vec::with_capacity(limit.min(64 * 1024) as usize);
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Err(bad("bad zlib stream: the pack ends inside an object"));
        }
        if out.len() == out.capacity() {
            let room = limit - out.len() as u64;
            out.reserve_exact(room.min(out.capacity().max(4096) as u64) as usize);
        }
        let (read, wrote) = (z.total_in(), z.total_out());
        let status = z
            .decompress_vec(buf, &mut out, FlushDecompress::None)
            .map_err(|e| bad(format!("bad zlib stream: {e}")))?;
        let used = (z.total_in() - read) as usize;
        input.consume(used);
        if out.len() as u64 > size {
            return Err(bad("object is longer than its header says"));
        }
        match status {
            Status::StreamEnd => break,
            _ if used == 0 && z.total_out() == wrote => {
                return Err(bad("bad zlib stream: it makes no progress"));
            }
            _ => {}
        }
    }
    if out.len() as u64 != size {
        return Err(bad("object size does not match its header"));
    }
    Ok(out)
}

/// Streams a whole blob of `size` bytes from the pack into its object file.
fn stream_blob<R: Read>(
    input: &mut Input<R>,
    size: u64,
    state: &mut State<'_>,
) -> Result<Oid, VaultError> {
    // Known from its header: refused before a byte is written if it does not fit.
    state.room.take(size)?;
    let mut exact = Exact {
        z: ZlibDecoder::new(input),
        left: size,
    };
    let written = state.files.write_stream_new(ObjectType::Blob, &mut exact);
    let (oid, new) = written.map_err(|e| match e {
        VaultError::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidInput
                    | io::ErrorKind::InvalidData
                    | io::ErrorKind::UnexpectedEof
            ) =>
        {
            bad(format!("bad zlib stream: {e}"))
        }
        other => other,
    })?;
    if new {
        state.created.push(oid);
    }
    if exact.z.read(&mut [0u8; 1])? != 0 {
        return Err(bad("object is longer than its header says"));
    }
    state.written.insert(oid);
    Ok(oid)
}

/// Exactly `left` more bytes of `z`: fewer is an error, more are left unread.
struct Exact<Z> {
    z: Z,
    left: u64,
}

impl<Z: Read> Read for Exact<Z> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.z.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "object is shorter than its header says",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

struct State<'a> {
    files: &'a ObjectFiles,
    bundle: &'a mut BundleWriter,
    /// Offset of every object seen → its id.
    at: HashMap<u64, Oid>,
    written: HashSet<Oid>,
    /// Ids that stored trees and commits refer to.
    needed: HashSet<Oid>,
    /// Deltas by the id of the base they wait for.
    waiting: HashMap<Oid, Vec<Pending>>,
    /// Bytes of deltas that have waited, in all.
    pending: usize,
    /// Object files this pack created (removed if it is refused).
    created: &'a mut Vec<Oid>,
    /// What the vault may still take.
    room: Room,
}

/// Bytes a pack may still add to its vault.
#[derive(Debug, Clone, Copy)]
struct Room {
    left: u64,
    limit: u64,
}

impl Room {
    fn take(&mut self, bytes: u64) -> Result<(), VaultError> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(VaultError::VaultTooLarge { limit: self.limit }),
        }
    }
}

impl State<'_> {
    fn store(&mut self, offset: u64, kind: ObjectType, data: &[u8]) -> Result<Oid, VaultError> {
        let oid = object_id(kind, data);
        links(kind, data, &mut self.needed)?;
        self.put(oid, kind, data)?;
        self.stored(offset, oid)?;
        Ok(oid)
    }

    /// Records object `oid` at `offset` as stored and resolves the deltas that
    /// waited for it (and, in turn, for them).
    fn stored(&mut self, offset: u64, oid: Oid) -> Result<(), VaultError> {
        self.at.insert(offset, oid);
        self.written.insert(oid);
        // Deltas that waited for this object (and, in turn, for them).
        let mut ready = vec![oid];
        while let Some(base) = ready.pop() {
            for p in self.waiting.remove(&base).unwrap_or_default() {
                let (kind, content) = self.apply(base, &p.delta)?;
                let id = object_id(kind, &content);
                links(kind, &content, &mut self.needed)?;
                self.put(id, kind, &content)?;
                self.at.insert(p.offset, id);
                self.written.insert(id);
                ready.push(id);
            }
        }
        Ok(())
    }

    /// Stores an object unless it is here already.
    fn put(&mut self, oid: Oid, kind: ObjectType, data: &[u8]) -> Result<(), VaultError> {
        if self.written.contains(&oid) || self.files.exists(oid) {
            return Ok(());
        }
        self.room.take(data.len() as u64)?;
        if data.len() <= BUNDLED_OBJECT {
            self.bundle
                .add(oid, kind, data, &self.files.keys().cipher())
        } else {
            self.files.write(oid, kind, data)?;
            self.created.push(oid);
            Ok(())
        }
    }

    fn resolve(&mut self, offset: u64, base: Oid, delta: &[u8]) -> Result<Oid, VaultError> {
        let (kind, content) = self.apply(base, delta)?;
        self.store(offset, kind, &content)
    }

    fn apply(&mut self, base: Oid, delta: &[u8]) -> Result<(ObjectType, Vec<u8>), VaultError> {
        let found = match self.bundle.read(base, &self.files.keys().cipher())? {
            Some(found) => Some(found),
            None => {
                // A base is read whole: only one that fits in memory.
                match self.files.read_header(base)? {
                    Some((_, size)) if size > MAX_MEMORY_OBJECT => {
                        return Err(bad(format!("a delta against a {size}-byte base")));
                    }
                    _ => self.files.read(base)?,
                }
            }
        };
        let mut pos = 0;
        let _source_size = delta_size(delta, &mut pos)?;
        let target_size = delta_size(delta, &mut pos)?;
        if target_size > MAX_MEMORY_OBJECT {
            return Err(bad(format!(
                "a delta that makes a {target_size}-byte object"
            )));
        }
        let (kind, source) = found.ok_or_else(|| bad(format!("delta base {base} is missing")))?;
        Ok((kind, apply_delta(&source, delta)?))
    }
}

/// Reads a delta's size varint.
fn delta_size(delta: &[u8], pos: &mut usize) -> Result<u64, VaultError> {
    let mut size = 0u64;
    let mut shift = 0;
    loop {
        let b = *delta.get(*pos).ok_or_else(|| bad("delta is truncated"))?;
        *pos += 1;
        if shift > 57 {
            return Err(bad("delta size overflows"));
        }
        size |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(size);
        }
    }
}

/// Applies a git delta to `source`.
pub(crate) fn apply_delta(source: &[u8], delta: &[u8]) -> Result<Vec<u8>, VaultError> {
    let mut pos = 0;
    let source_size = delta_size(delta, &mut pos)?;
    let target_size = delta_size(delta, &mut pos)?;
    if source_size != source.len() as u64 {
        return Err(bad("delta base has the wrong size"));
    }
    if target_size > MAX_PACK_OBJECT {
        return Err(bad("delta result is too large"));
    }
    let mut out = Vec::with_capacity(target_size as usize);
    while pos < delta.len() {
        let cmd = delta[pos];
        pos += 1;
        if cmd & 0x80 != 0 {
            let mut field = |bits: u8, bytes: usize| -> Result<usize, VaultError> {
                let mut v = 0usize;
                for i in 0..bytes {
                    if bits & (1 << i) != 0 {
                        let b = *delta.get(pos).ok_or_else(|| bad("delta is truncated"))?;
                        pos += 1;
                        v |= usize::from(b) << (8 * i);
                    }
                }
                Ok(v)
            };
            let offset = field(cmd & 0x0f, 4)?;
            let mut len = field((cmd >> 4) & 0x07, 3)?;
            if len == 0 {
                len = 0x10000;
            }
            let end = offset
                .checked_add(len)
                .filter(|&e| e <= source.len())
                .ok_or_else(|| bad("delta copies past its base"))?;
            out.extend_from_slice(&source[offset..end]);
        } else if cmd != 0 {
            let len = usize::from(cmd);
            let bytes = delta
                .get(pos..pos + len)
                .ok_or_else(|| bad("delta is truncated"))?;
            out.extend_from_slice(bytes);
            pos += len;
        } else {
            return Err(bad("delta has a reserved instruction"));
        }
        if out.len() as u64 > target_size {
            return Err(bad("delta result exceeds its declared size"));
        }
    }
    if out.len() as u64 != target_size {
        return Err(bad("delta result has the wrong size"));
    }
    Ok(out)
}

/// Adds the ids a tree or commit refers to to `needed`.
fn links(kind: ObjectType, data: &[u8], needed: &mut HashSet<Oid>) -> Result<(), VaultError> {
    match kind {
        ObjectType::Tree => {
            let mut rest = data;
            while !rest.is_empty() {
                let nul = rest
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or_else(|| bad("malformed tree"))?;
                let id = rest
                    .get(nul + 1..nul + 21)
                    .ok_or_else(|| bad("malformed tree"))?;
                // Submodule links (mode 160000) name commits of other repositories.
                if !rest.starts_with(b"160000 ") {
                    needed.insert(Oid::from_bytes(id).map_err(|e| bad(e.message()))?);
                }
                rest = &rest[nul + 21..];
            }
        }
        ObjectType::Commit => {
            for line in data.split(|&b| b == b'\n') {
                if line.is_empty() {
                    break;
                }
                let hex = line
                    .strip_prefix(b"tree ")
                    .or_else(|| line.strip_prefix(b"parent "));
                if let Some(hex) = hex {
                    let text = std::str::from_utf8(hex).map_err(|_| bad("malformed commit"))?;
                    needed.insert(Oid::from_str(text).map_err(|_| bad("malformed commit"))?);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_copy_and_insert() {
        let source = b"hello world";
        // source 11, target 10: copy 6 bytes at 0 ("hello "), insert "moon".
        let delta = [11, 10, 0x80 | 0x10, 6, 4, b'm', b'o', b'o', b'n'];
        assert_eq!(apply_delta(source, &delta).unwrap(), b"hello moon");
        let past = [11, 20, 0x80 | 0x01 | 0x10, 8, 6];
        assert!(apply_delta(source, &past).is_err());
        let wrong_base = [12, 1, 1, b'x'];
        assert!(apply_delta(source, &wrong_base).is_err());
        let reserved = [11, 1, 0];
        assert!(apply_delta(source, &reserved).is_err());
        let short = [11, 5, 5, b'a'];
        assert!(apply_delta(source, &short).is_err());
    }

    /// A pack writer for hostile packs: whole objects and REF_DELTAs.
    struct Writer {
        body: Vec<u8>,
        count: u32,
    }

    impl Writer {
        fn new() -> Self {
            Writer {
                body: Vec::new(),
                count: 0,
            }
        }

        fn header(&mut self, kind: u8, mut size: u64) {
            let mut b = (kind << 4) | (size & 0x0f) as u8;
            size >>= 4;
            while size > 0 {
                self.body.push(b | 0x80);
                b = (size & 0x7f) as u8;
                size >>= 7;
            }
            self.body.push(b);
        }

        fn zlib(&mut self, data: &[u8]) {
            use std::io::Write;
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
            z.write_all(data).unwrap();
            self.body.extend(z.finish().unwrap());
        }

        fn blob(&mut self, data: &[u8]) {
            self.header(3, data.len() as u64);
            self.zlib(data);
            self.count += 1;
        }

        fn ref_delta(&mut self, base: Oid, delta: &[u8]) {
            self.header(REF_DELTA, delta.len() as u64);
            self.body.extend_from_slice(base.as_bytes());
            self.zlib(delta);
            self.count += 1;
        }

        fn finish(self) -> Vec<u8> {
            let mut pack = b"PACK\0\0\0\x02".to_vec();
            pack.extend_from_slice(&self.count.to_be_bytes());
            pack.extend(self.body);
            let sum = Sha1::digest(&pack);
            pack.extend_from_slice(&sum);
            pack
        }
    }

    fn store() -> (tempfile::TempDir, ObjectFiles) {
        use super::super::objects::ObjectKeys;
        use keynode_core::datakey::DataKey;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let files = ObjectFiles::new(dir, ObjectKeys::new(&DataKey::from_bytes([1; 32])));
        (tmp, files)
    }

    /// Every file under `dir`.
    fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    }

    #[test]
    fn deltas_waiting_for_bases_never_sent_are_bounded() {
        let (_tmp, files) = store();
        // 1 MiB deltas (a few KiB on the wire each) against a base that never
        // comes: refused once they pass the bound, not buffered for ever.
        let missing = Oid::from_bytes(&[7; 20]).unwrap();
        let mut delta = vec![0u8; 1 << 20];
        delta[0] = 0x01; // sizes are not checked until a base arrives
        let mut w = Writer::new();
        for _ in 0..(MAX_PENDING_DELTAS >> 20) + 4 {
            w.ref_delta(missing, &delta);
        }
        let pack = w.finish();
        assert!(pack.len() < 1 << 20, "{} bytes on the wire", pack.len());
        let err = format!(
            "{:?}",
            ingest(&mut &pack[..], &files, u64::MAX, u64::MAX).unwrap_err()
        );
        assert!(err.contains("wait for bases"), "{err}");
    }

    #[test]
    fn a_big_blob_streams_to_its_file_and_a_refused_pack_takes_it_back() {
        let (_tmp, files) = store();
        let big: Vec<u8> = (0..3u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut w = Writer::new();
        w.blob(&big);
        let mut pack = w.finish();
        // Whole, it is stored.
        ingest(&mut &pack[..], &files, u64::MAX, u64::MAX).unwrap();
        let oid = object_id(ObjectType::Blob, &big);
        assert_eq!(files.read(oid).unwrap().unwrap().1, big);
        // With a bad trailer, the file it wrote goes again (a fresh store).
        let (_tmp2, other) = store();
        let last = pack.len() - 1;
        pack[last] ^= 1;
        assert!(ingest(&mut &pack[..], &other, u64::MAX, u64::MAX).is_err());
        assert!(!other.exists(oid));
        let left: Vec<_> = files_under(other.dir())
            .into_iter()
            .filter(|p| !p.starts_with(other.dir().join("tmp")))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // A refused pack never takes away what was stored before it.
        assert!(ingest(&mut &pack[..], &files, u64::MAX, u64::MAX).is_err());
        assert_eq!(files.read(oid).unwrap().unwrap().1, big);
    }

    #[test]
    fn objects_too_big_for_memory_are_refused_unless_whole_blobs() {
        let (_tmp, files) = store();
        let mut w = Writer::new();
        // A tree announced (and sent) at 17 MiB of zeros.
        w.header(2, MAX_MEMORY_OBJECT + 1);
        w.zlib(&vec![0u8; (MAX_MEMORY_OBJECT + 1) as usize]);
        w.count += 1;
        let err = format!(
            "{:?}",
            ingest(&mut &w.finish()[..], &files, u64::MAX, u64::MAX).unwrap_err()
        );
        assert!(err.contains("not a whole blob"), "{err}");
    }

    #[test]
    fn an_object_whose_stream_differs_from_its_header_is_refused() {
        let (_tmp, files) = store();
        let refused = |declared: u64, content: &[u8], cut: usize| {
            let mut w = Writer::new();
            // A good object first, so the shared zlib stream is reused.
            w.header(3, 5);
            w.zlib(b"first");
            w.count += 1;
            w.header(3, declared);
            w.zlib(content);
            w.count += 1;
            let mut pack = w.finish();
            pack.truncate(pack.len() - cut);
            format!(
                "{:?}",
                ingest(&mut &pack[..], &files, u64::MAX, u64::MAX).unwrap_err()
            )
        };
        let longer = refused(4, b"12345", 0);
        assert!(longer.contains("longer than its header"), "{longer}");
        let shorter = refused(6, b"12345", 0);
        assert!(shorter.contains("does not match its header"), "{shorter}");
        // Cut inside the second stream (and its checksum): no object is
        // made up from what is left.
        let cut = refused(5, b"12345", 24);
        assert!(cut.contains("ends inside an object"), "{cut}");
        // A bomb: 10 bytes declared, 8 MiB of zeros in the stream (8 KiB of
        // it on the wire): refused, the output never grown past 11 bytes.
        let bomb = refused(10, &vec![0u8; 8 << 20], 0);
        assert!(bomb.contains("longer than its header"), "{bomb}");
    }

    proptest::proptest! {
        #[test]
        fn garbage_deltas_never_panic(source: Vec<u8>, delta: Vec<u8>) {
            let _ = apply_delta(&source, &delta);
        }

        #[test]
        fn garbage_packs_are_refused_and_leave_no_bundle(
            count in 0u32..5,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            use super::super::objects::ObjectKeys;
            use keynode_core::datakey::DataKey;
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("objects");
            let files = ObjectFiles::new(dir.clone(), ObjectKeys::new(&DataKey::from_bytes([1; 32])));
            let mut pack = b"PACK\0\0\0\x02".to_vec();
            pack.extend_from_slice(&count.to_be_bytes());
            pack.extend_from_slice(&body);
            // Random bytes never end in the right SHA-1 trailer.
            proptest::prop_assert!(ingest(&mut &pack[..], &files, u64::MAX, u64::MAX).is_err());
            let bundles = dir.join(super::super::bundle::BUNDLE_DIR);
            let left = std::fs::read_dir(&bundles).map(|d| d.count()).unwrap_or(0);
            proptest::prop_assert_eq!(left, 0);
        }
    }
}
