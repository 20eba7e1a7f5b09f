//! Writing a pack (git's pack format, version 2) whole: no deltas.
//!
//! libgit2's pack builder searches deltas among all objects and deflates
//! everything at zlib's default level. In a pack with few versions of the same
//! paths (a short history, most pulls; libgit2 makes no thin packs, so nothing
//! outside the pack is a base) the search finds little, and for a vault the
//! builder was most of a clone's time: deflating incompressible secrets and
//! hashing them again (see `docs/PERFORMANCE.md`). `send_pack` uses this writer
//! for such packs; it makes no deltas and picks each object's compression from
//! what it holds:
//!
//! - up to [`SAMPLE`] bytes: zlib's fastest level (for a vault's trees,
//!   commits and small secrets it gives the default level's size at a third
//!   of its time);
//! - larger: the first [`SAMPLE`] bytes are deflated at the fastest level; if
//!   that saves under an eighth, the object is *stored* (zlib's level 0: valid
//!   zlib, no compression work), otherwise deflated at the fastest level.
//!
//! ```text
//! pack   = "PACK" ‖ version (u32 BE, 2) ‖ count (u32 BE) ‖ object* ‖ SHA-1 of all before
//! object = type and size (varint: 3 bits type, 4 + 7·k bits size) ‖ zlib(content)
//! ```

use std::io::{self, Write};

use flate2::write::ZlibEncoder;
use flate2::{Compress, Compression, FlushCompress, Status};
use git2::ObjectType;
use sha1::{Digest, Sha1};

use crate::PACK_CHUNK;

/// How much of a large object is compressed to judge the rest.
const SAMPLE: usize = 16 * 1024;

/// A pack streamed to a sink in chunks of at most [`PACK_CHUNK`] bytes.
pub(super) struct PackWriter<'s> {
    sink: &'s mut dyn FnMut(&[u8]) -> io::Result<()>,
    hash: Sha1,
    out: Vec<u8>,
    bytes: u64,
    /// One zlib stream per level used, reset between objects: a new stream
    /// allocates and clears a few hundred KiB, more than a small object's
    /// compression costs.
    streams: Vec<(Compression, Compress)>,
}

impl<'s> PackWriter<'s> {
    /// Starts a pack of `count` objects.
    pub(super) fn new(
        sink: &'s mut dyn FnMut(&[u8]) -> io::Result<()>,
        count: u32,
    ) -> PackWriter<'s> {
        let mut out = Vec::with_capacity(2 * PACK_CHUNK);
        out.extend_from_slice(b"PACK");
        out.extend_from_slice(&2u32.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        PackWriter {
            sink,
            hash: Sha1::new(),
            out,
            bytes: 0,
            streams: Vec::new(),
        }
    }

    /// Appends one whole object.
    pub(super) fn object(&mut self, kind: ObjectType, data: &[u8]) -> io::Result<()> {
        let code: u8 = match kind {
            ObjectType::Commit => 1,
            ObjectType::Tree => 2,
            ObjectType::Blob => 3,
            ObjectType::Tag => 4,
            _ => return Err(io::Error::other("not a packable object")),
        };
        let mut size = data.len() as u64;
        let mut b = (code << 4) | (size & 0x0f) as u8;
        size >>= 4;
        while size > 0 {
            self.out.push(b | 0x80);
            b = (size & 0x7f) as u8;
            size >>= 7;
        }
        self.out.push(b);
        let level = level(data);
        let mut z = match self.streams.iter().position(|(l, _)| *l == level) {
            Some(i) => {
                let (_, mut z) = self.streams.swap_remove(i);
                z.reset();
                z
            }
            None => Compress::new(level, true),
        };
        let written = self.deflate(&mut z, data);
        self.streams.push((level, z));
        written
    }

    /// Appends `data` through the zlib stream `z` (fresh or reset), sending
    /// whole chunks as they fill.
    fn deflate(&mut self, z: &mut Compress, mut data: &[u8]) -> io::Result<()> {
        loop {
            self.out.reserve(PACK_CHUNK);
            let before = z.total_in();
            let status = z
                .compress_vec(data, &mut self.out, FlushCompress::Finish)
                .map_err(io::Error::other)?;
            data = &data[(z.total_in() - before) as usize..];
            if self.out.len() >= PACK_CHUNK {
                let mut out = std::mem::take(&mut self.out);
                self.drain(&mut out)?;
                self.out = out;
            }
            if status == Status::StreamEnd {
                return Ok(());
            }
        }
    }

    /// Ends the pack with its checksum; returns the pack's size in bytes.
    pub(super) fn finish(mut self) -> io::Result<u64> {
        let mut out = std::mem::take(&mut self.out);
        self.hash.update(&out);
        let sum = std::mem::take(&mut self.hash).finalize();
        out.extend_from_slice(&sum);
        for chunk in out.chunks(PACK_CHUNK) {
            (self.sink)(chunk)?;
        }
        Ok(self.bytes + out.len() as u64)
    }

    /// Hashes and sends what `buf` holds, leaving it empty.
    fn drain(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        self.hash.update(&buf[..]);
        for chunk in buf.chunks(PACK_CHUNK) {
            (self.sink)(chunk)?;
        }
        self.bytes += buf.len() as u64;
        buf.clear();
        Ok(())
    }
}

/// The zlib level for `data` (see the module's documentation).
fn level(data: &[u8]) -> Compression {
    if data.len() <= SAMPLE {
        return Compression::fast();
    }
    let sample = &data[..SAMPLE];
    let mut z = ZlibEncoder::new(Vec::with_capacity(SAMPLE), Compression::fast());
    let squeezed = z.write_all(sample).and_then(|()| z.finish());
    match squeezed {
        Ok(out) if out.len() < SAMPLE - SAMPLE / 8 => Compression::fast(),
        _ => Compression::none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(objects: &[(ObjectType, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut chunks = Vec::new();
        let mut sink = |c: &[u8]| {
            chunks.push(c.len());
            out.extend_from_slice(c);
            Ok(())
        };
        let mut w = PackWriter::new(&mut sink, objects.len() as u32);
        for (kind, data) in objects {
            w.object(*kind, data).unwrap();
        }
        let n = w.finish().unwrap();
        assert!(chunks.iter().all(|&c| c <= PACK_CHUNK));
        assert_eq!(n, out.len() as u64);
        out
    }

    #[test]
    fn what_is_written_is_a_pack_git_reads() {
        let random: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let text = b"key=value\n".repeat(30_000);
        let objects = vec![
            (ObjectType::Blob, b"small".to_vec()),
            (ObjectType::Blob, Vec::new()),
            (ObjectType::Blob, random.clone()),
            (ObjectType::Blob, text.clone()),
            // Each level's stream again, reset: after a large object too.
            (ObjectType::Blob, b"small again".to_vec()),
            (ObjectType::Blob, b"value=key\n".repeat(20_000)),
            (ObjectType::Blob, random[..100_000].to_vec()),
        ];
        let bytes = pack(&objects);
        // Checksum over everything before it.
        let (body, sum) = bytes.split_at(bytes.len() - 20);
        assert_eq!(Sha1::digest(body).as_slice(), sum);
        // The compressible text shrank, the random bytes stayed their size.
        assert!(bytes.len() < random.len() + 100_000 + text.len() / 2);
        // libgit2's indexer reads it back, objects and ids intact.
        let tmp = tempfile::tempdir().unwrap();
        let git = git2::Repository::init_bare(tmp.path()).unwrap();
        let odb = git.odb().unwrap();
        let mut writer = odb.packwriter().unwrap();
        writer.write_all(&bytes).unwrap();
        writer.commit().unwrap();
        for (kind, data) in &objects {
            let oid = git2::Oid::hash_object(*kind, data).unwrap();
            let read = odb.read(oid).unwrap();
            assert_eq!(read.data(), &data[..]);
        }
    }

    #[test]
    fn incompressible_objects_are_stored_and_the_rest_deflated() {
        use rand::RngCore;
        let mut random = vec![0u8; 100_000];
        rand::rngs::OsRng.fill_bytes(&mut random);
        assert_eq!(level(&random), Compression::none());
        assert_eq!(level(&b"key=value\n".repeat(10_000)), Compression::fast());
        assert_eq!(level(b"small"), Compression::fast());
        // Stored: the pack of a random object is its size plus framing, and
        // a compressible one of the same size is a fraction of it.
        let stored = pack(&[(ObjectType::Blob, random.clone())]).len();
        assert!(
            stored >= random.len() && stored < random.len() + 256,
            "{stored}"
        );
        let text = b"key=value\n".repeat(10_000);
        assert!(pack(&[(ObjectType::Blob, text.clone())]).len() < text.len() / 10);
    }

    #[test]
    fn an_empty_pack_is_header_and_checksum() {
        let bytes = pack(&[]);
        assert_eq!(bytes.len(), 12 + 20);
        assert_eq!(&bytes[..4], b"PACK");
    }
}
