//! The transport phase: Noise frames (a 2-byte length, then ciphertext) over a
//! byte stream, as an `AsyncRead + AsyncWrite` of plaintext.

use super::*;

/// A decoded Noise frame was invalid; the connection is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is smaller than an authentication tag.
    #[error("noise frame of {0} bytes is shorter than its tag")]
    TooShort(usize),
    /// The frame did not authenticate.
    #[error("noise frame failed to decrypt")]
    Decrypt,
    /// The stream ended inside a frame.
    #[error("stream ended inside a noise frame")]
    Truncated,
}

impl From<FrameError> for io::Error {
    fn from(e: FrameError) -> Self {
        let kind = match e {
            FrameError::Truncated => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// Looks for one complete frame at the start of `buf`.
///
/// Returns its total length (prefix included) once it is all there, `None` while
/// more bytes are needed, and an error for a length that cannot be a Noise message.
pub fn parse_frame(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let [hi, lo, ..] = *buf else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len < TAG_LEN {
        return Err(FrameError::TooShort(len));
    }
    Ok((buf.len() >= 2 + len).then_some(2 + len))
}

/// An encrypted, authenticated byte stream over `S`.
///
/// Writes are gathered into Noise frames of up to [`MAX_PLAINTEXT`] bytes; a
/// write of at least a whole frame's worth is sealed straight from the caller's
/// buffer. Sealed frames (length prefix and ciphertext side by side) queue in one
/// buffer and leave in one socket write per batch of up to [`WRITE_BATCH`] bytes,
/// so encryption runs ahead while the socket drains; `flush` seals a partial
/// frame and drains the queue.
///
/// Reads take many frames per socket read. A frame is decrypted straight into
/// the caller's buffer when it fits there (several frames per call while they
/// do), otherwise into a one-frame buffer that later reads are served from. A
/// frame that fails to authenticate is an `InvalidData` error, after which the
/// stream is unusable.
pub struct NoiseStream<S> {
    io: S,
    noise: snow::TransportState,
    /// Ciphertext from the socket: `rbuf[rstart..rend]` is not yet decrypted.
    /// Starts at [`SMALL_BUF`], grows to [`READ_BUF`] while reads fill it,
    /// and goes back to small once drained by a small read.
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    /// One decrypted frame: `rplain[rpos..rlen]` is not yet read. Empty
    /// until needed; freed once a small frame has been read from it.
    rplain: Vec<u8>,
    rpos: usize,
    rlen: usize,
    /// The error that ended reading, reported again on every later read.
    rfailed: Option<FrameError>,
    /// Plaintext gathered for the next frame.
    wplain: Vec<u8>,
    /// Sealed frames: `wbuf[wpos..wend]` is not yet written to the socket.
    /// Grows as frames are queued, up to [`WRITE_BUF`]; back to small once
    /// drained after small writes.
    wbuf: Vec<u8>,
    wpos: usize,
    wend: usize,
}

/// Size of a whole frame on the wire, in bytes: prefix and largest message.
pub(crate) const WIRE_FRAME: usize = 2 + MAX_NOISE_FRAME;

/// Sealed bytes gathered before a socket write is attempted.
pub const WRITE_BATCH: usize = 4 * WIRE_FRAME;

/// Capacity of the queue of sealed frames, in bytes.
const WRITE_BUF: usize = 2 * WRITE_BATCH;

/// Capacity of the buffer of received ciphertext, in bytes; each socket read
/// asks for what is free in it.
const READ_BUF: usize = 8 * WIRE_FRAME;

/// What an idle connection keeps per buffer, in bytes: buffers grow with
/// traffic and shrink back when it stops, so a thousand idle (or stalled)
/// connections hold kilobytes each, not megabytes.
pub const SMALL_BUF: usize = 8 << 10;

impl<S> std::fmt::Debug for NoiseStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseStream").finish_non_exhaustive()
    }
}

impl<S> NoiseStream<S> {
    /// Wraps `io` with a finished handshake's transport state.
    pub fn new(io: S, noise: snow::TransportState) -> Self {
        Self {
            io,
            noise,
            rbuf: vec![0; SMALL_BUF],
            rstart: 0,
            rend: 0,
            rplain: Vec::new(),
            rpos: 0,
            rlen: 0,
            rfailed: None,
            wplain: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            wend: 0,
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Seals `plain` (at most [`MAX_PLAINTEXT`] bytes) into one frame at the end
    /// of the write queue, which has room for it.
    fn seal_from(
        noise: &mut snow::TransportState,
        wbuf: &mut Vec<u8>,
        wend: &mut usize,
        plain: &[u8],
    ) -> io::Result<()> {
        let start = *wend;
        let end = start + 2 + plain.len() + TAG_LEN;
        if wbuf.len() < end {
            wbuf.resize(end, 0);
        }
        let n = noise
            .write_message(plain, &mut wbuf[start + 2..end])
            .map_err(io::Error::other)?;
        let prefix = u16::try_from(n).map_err(io::Error::other)?;
        wbuf[start..start + 2].copy_from_slice(&prefix.to_be_bytes());
        *wend = start + 2 + n;
        Ok(())
    }

    /// Seals the gathered plaintext, if any, into one frame (the queue has room).
    fn seal(&mut self) -> io::Result<()> {
        if self.wplain.is_empty() {
            return Ok(());
        }
        Self::seal_from(
            &mut self.noise,
            &mut self.wbuf,
            &mut self.wend,
            &self.wplain,
        )?;
        if self.wplain.len() <= SMALL_BUF && self.wplain.capacity() > SMALL_BUF {
            self.wplain = Vec::new();
        } else {
            self.wplain.clear();
        }
        Ok(())
    }

    /// Room at the end of the write queue, moving unwritten bytes to the front
    /// when that makes room for a whole frame.
    fn write_room(&mut self) -> usize {
        if WRITE_BUF - self.wend < WIRE_FRAME && self.wpos > 0 {
            self.wbuf.copy_within(self.wpos..self.wend, 0);
            self.wend -= self.wpos;
            self.wpos = 0;
        }
        WRITE_BUF - self.wend
    }
}

impl<S: AsyncWrite + Unpin> NoiseStream<S> {
    /// Writes queued frames until the queue is empty or the socket is full.
    /// Ready once some bytes left (or none were queued); pending only when the
    /// socket took nothing.
    fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut progressed = false;
        while self.wpos < self.wend {
            match Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..self.wend]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.wpos += n;
                    progressed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if progressed => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        // Drained: a queue that only ever held small frames goes back to small.
        if self.wbuf.len() > SMALL_BUF && self.wend <= SMALL_BUF {
            self.wbuf = Vec::new();
        }
        self.wpos = 0;
        self.wend = 0;
        Poll::Ready(Ok(()))
    }

    /// Writes every queued frame.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wend {
            ready!(self.poll_write_some(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for NoiseStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let start = buf.filled().len();
        match this.read_frames(cx, buf) {
            Poll::Ready(Err(ReadFail::Frame(e))) => {
                this.rfailed = Some(e.clone());
                // Bytes already decrypted by this call are delivered; the error
                // comes with the next one.
                if buf.filled().len() > start {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(e.into()))
                }
            }
            // The socket is only read once nothing has been decrypted by this call.
            Poll::Ready(Err(ReadFail::Io(e))) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Why [`NoiseStream::read_frames`] stopped early.
enum ReadFail {
    Frame(FrameError),
    Io(io::Error),
}

impl From<FrameError> for ReadFail {
    fn from(e: FrameError) -> Self {
        ReadFail::Frame(e)
    }
}

impl From<io::Error> for ReadFail {
    fn from(e: io::Error) -> Self {
        ReadFail::Io(e)
    }
}

impl<S: AsyncRead + Unpin> NoiseStream<S> {
    /// Makes room after `rend` for at least the frame being received (or a
    /// small read), moving undecrypted bytes to the front and growing the
    /// buffer when the frame would not fit.
    fn make_read_room(&mut self) {
        let pending = self.rend - self.rstart;
        // A frame's length is known once its 2-byte prefix is in.
        let need = if pending >= 2 {
            2 + u16::from_be_bytes([self.rbuf[self.rstart], self.rbuf[self.rstart + 1]]) as usize
        } else {
            2
        };
        let want = need.max(pending + 1).min(READ_BUF);
        if self.rbuf.len() - self.rstart < want || self.rbuf.len() - self.rend < SMALL_BUF / 4 {
            if self.rstart > 0 {
                self.rbuf.copy_within(self.rstart..self.rend, 0);
                self.rend = pending;
                self.rstart = 0;
            }
            if self.rbuf.len() < want {
                self.rbuf
                    .resize(want.next_power_of_two().min(READ_BUF).max(want), 0);
            }
        }
    }

    /// Fills `buf` from decrypted frames, reading the socket only when nothing
    /// has been decrypted yet.
    fn read_frames(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<Result<(), ReadFail>> {
        let this = self;
        if let Some(e) = &this.rfailed {
            return Poll::Ready(Err(ReadFail::Frame(e.clone())));
        }
        let start = buf.filled().len();
        loop {
            if this.rpos < this.rlen {
                let n = buf.remaining().min(this.rlen - this.rpos);
                buf.put_slice(&this.rplain[this.rpos..this.rpos + n]);
                this.rpos += n;
            }
            if this.rpos == this.rlen && this.rlen > 0 && this.rlen <= SMALL_BUF {
                // A small frame read out: keep no frame-sized buffer for it.
                if this.rplain.len() > SMALL_BUF {
                    this.rplain = Vec::new();
                }
                this.rpos = 0;
                this.rlen = 0;
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if let Some(len) = parse_frame(&this.rbuf[this.rstart..this.rend])? {
                let body = &this.rbuf[this.rstart + 2..this.rstart + len];
                let plain_len = body.len() - TAG_LEN;
                if buf.remaining() >= plain_len {
                    // Decrypt straight into the caller's buffer.
                    let dst = buf.initialize_unfilled_to(plain_len);
                    let n = this
                        .noise
                        .read_message(body, dst)
                        .map_err(|_| FrameError::Decrypt)?;
                    buf.advance(n);
                } else {
                    if this.rplain.len() < plain_len {
                        this.rplain.resize(plain_len, 0);
                    }
                    let n = this
                        .noise
                        .read_message(body, &mut this.rplain)
                        .map_err(|_| FrameError::Decrypt)?;
                    this.rpos = 0;
                    this.rlen = n;
                }
                this.rstart += len;
                if this.rstart == this.rend {
                    this.rstart = 0;
                    this.rend = 0;
                }
                continue;
            }
            // No whole frame buffered: hand over what was decrypted, if anything.
            if buf.filled().len() > start {
                return Poll::Ready(Ok(()));
            }
            this.make_read_room();
            let free = this.rbuf.len() - this.rend;
            let mut rb = ReadBuf::new(&mut this.rbuf[this.rend..]);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                if this.rstart == this.rend {
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Err(FrameError::Truncated.into()));
            }
            this.rend += n;
            if n == free && this.rbuf.len() < READ_BUF {
                // The socket had more than we asked for: read bigger next time.
                let grown = (this.rbuf.len() * 2).min(READ_BUF);
                this.rbuf.resize(grown, 0);
            } else if n < SMALL_BUF / 2 && this.rstart == 0 && this.rend <= SMALL_BUF {
                // Traffic is light again: give the big buffer back.
                if this.rbuf.len() > SMALL_BUF {
                    this.rbuf.truncate(SMALL_BUF);
                    this.rbuf.shrink_to_fit();
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NoiseStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut taken = 0;
        loop {
            if this.wplain.len() == MAX_PLAINTEXT {
                if this.write_room() < WIRE_FRAME {
                    if taken > 0 {
                        break;
                    }
                    ready!(this.poll_write_some(cx))?;
                    continue;
                }
                this.seal()?;
            }
            let rest = &buf[taken..];
            if rest.is_empty() {
                break;
            }
            if this.wplain.is_empty() && rest.len() >= MAX_PLAINTEXT {
                // A whole frame: seal it from the caller's buffer, no gathering.
                if this.write_room() < WIRE_FRAME {
                    if taken > 0 {
                        break;
                    }
                    ready!(this.poll_write_some(cx))?;
                    continue;
                }
                Self::seal_from(
                    &mut this.noise,
                    &mut this.wbuf,
                    &mut this.wend,
                    &rest[..MAX_PLAINTEXT],
                )?;
                taken += MAX_PLAINTEXT;
                continue;
            }
            let n = rest.len().min(MAX_PLAINTEXT - this.wplain.len());
            this.wplain.extend_from_slice(&rest[..n]);
            taken += n;
        }
        if this.wend - this.wpos >= WRITE_BATCH {
            // Start the socket on a full batch; if it is busy, the next write or
            // flush will try again.
            if let Poll::Ready(Err(e)) = this.poll_write_some(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.wplain.is_empty() {
            while this.write_room() < WIRE_FRAME {
                ready!(this.poll_write_some(cx))?;
            }
            this.seal()?;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
