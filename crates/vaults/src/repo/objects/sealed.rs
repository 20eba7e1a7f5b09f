//! The sealed file format of one object (see the module above): the writer
//! that seals chunk by chunk, the STREAM nonce sequence, and the reader that
//! opens and authenticates a file.

use super::*;

/// Writes an object file chunk by chunk.
pub(super) struct Sealer<W: Write> {
    out: W,
    header: [u8; HEADER],
    stream: Stream,
    buf: Vec<u8>,
}

impl<W: Write> Sealer<W> {
    pub(super) fn new(keys: &ObjectKeys, kind: ObjectType, mut out: W) -> io::Result<Self> {
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(MAGIC);
        header[4] = kind_byte(kind);
        rand::rngs::OsRng.fill_bytes(&mut header[5..]);
        out.write_all(&header)?;
        let stream = Stream::new(keys, &header[5..]);
        Ok(Sealer {
            out,
            header,
            stream,
            buf: Vec::with_capacity(CHUNK + TAG),
        })
    }

    pub(super) fn next(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.seal(chunk, false)
    }

    pub(super) fn last(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.seal(chunk, true)
    }

    pub(super) fn seal(&mut self, chunk: &[u8], last: bool) -> io::Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(chunk);
        self.stream
            .seal(&self.header, &mut self.buf, last)
            .map_err(|()| io::Error::other("encryption failed"))?;
        self.out.write_all(&self.buf)
    }
}

/// STREAM over AES-256-GCM: one key per file, nonces count chunks, the last
/// chunk's nonce is flagged.
pub(super) struct Stream {
    key: LessSafeKey,
    counter: u32,
    done: bool,
}

impl Stream {
    pub(super) fn new(keys: &ObjectKeys, salt: &[u8]) -> Stream {
        let key = Zeroizing::new(keyed_hash(keys.files.expose(), salt));
        let key = UnboundKey::new(&AES_256_GCM, key.as_ref()).expect("a 32-byte key");
        Stream {
            key: LessSafeKey::new(key),
            counter: 0,
            done: false,
        }
    }

    pub(super) fn nonce(&self, last: bool) -> Nonce {
        let mut n = [0u8; 12];
        n[7..11].copy_from_slice(&self.counter.to_be_bytes());
        n[11] = u8::from(last);
        Nonce::assume_unique_for_key(n)
    }

    pub(super) fn advance(&mut self, last: bool) -> Result<(), ()> {
        if self.done || self.counter == u32::MAX {
            return Err(());
        }
        self.counter += 1;
        self.done = last;
        Ok(())
    }

    pub(super) fn seal(&mut self, aad: &[u8], buf: &mut Vec<u8>, last: bool) -> Result<(), ()> {
        let nonce = self.nonce(last);
        self.advance(last)?;
        self.key
            .seal_in_place_append_tag(nonce, Aad::from(aad), buf)
            .map_err(|_| ())
    }

    pub(super) fn open(&mut self, aad: &[u8], buf: &mut Vec<u8>, last: bool) -> Result<(), ()> {
        let nonce = self.nonce(last);
        self.advance(last)?;
        let n = self
            .key
            .open_in_place(nonce, Aad::from(aad), buf)
            .map_err(|_| ())?
            .len();
        buf.truncate(n);
        Ok(())
    }
}

/// An object file opened for reading: its kind, size, and a decrypting reader.
pub(crate) struct Opened {
    pub(crate) kind: ObjectType,
    pub(crate) size: u64,
    file: io::BufReader<fs::File>,
    header: [u8; HEADER],
    stream: Stream,
    /// Encrypted bytes left after the chunks read so far.
    left: u64,
    /// The current plaintext chunk and how much of it was read.
    chunk: Vec<u8>,
    pos: usize,
}

impl Opened {
    pub(super) fn from_file(mut file: fs::File, keys: &ObjectKeys) -> Result<Opened, &'static str> {
        let len = file.metadata().map_err(|_| "unreadable")?.len();
        let size = plain_size(len).ok_or("has an impossible length")?;
        if size > MAX_OBJECT {
            return Err("is too large");
        }
        let mut header = [0u8; HEADER];
        file.read_exact(&mut header).map_err(|_| "unreadable")?;
        if &header[..4] != MAGIC {
            return Err("is not an encrypted object file");
        }
        let kind = byte_kind(header[4]).ok_or("has an unknown kind")?;
        let stream = Stream::new(keys, &header[5..]);
        Ok(Opened {
            kind,
            size,
            file: io::BufReader::with_capacity(CHUNK + TAG, file),
            header,
            stream,
            left: len - HEADER as u64,
            chunk: Vec::with_capacity(CHUNK + TAG),
            pos: 0,
        })
    }

    /// Decrypts the next chunk into `self.chunk`; `false` at the end.
    pub(super) fn fill(&mut self) -> io::Result<bool> {
        if self.stream.done {
            return Ok(false);
        }
        let n = self.left.min((CHUNK + TAG) as u64) as usize;
        self.chunk.resize(n, 0);
        self.file.read_exact(&mut self.chunk)?;
        self.left -= n as u64;
        self.pos = 0;
        let last = self.left == 0;
        self.stream
            .open(&self.header, &mut self.chunk, last)
            .map_err(|()| {
                io::Error::new(io::ErrorKind::InvalidData, "object failed authentication")
            })?;
        Ok(true)
    }
}

impl Read for Opened {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if !self.fill()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
