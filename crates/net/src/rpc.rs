//! Typed, length-delimited messages on one multiplexed stream.
//!
//! A frame is a 4-byte big-endian body length, a 1-byte [`FrameKind`] and the body:
//! a value in keynode's [`codec`] for [`FrameKind::Data`], a [`WireError`] for
//! [`FrameKind::Error`]. Bodies are limited to [`MAX_MESSAGE`] bytes, checked
//! before anything is allocated. The first frame of every stream is a
//! [`StreamHeader`] written by the side that opened it.

use std::fmt;
use std::io;
use std::time::Duration;

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use keynode_core::{NodeId, codec};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The protocol version in every [`StreamHeader`].
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest frame body, in bytes: 1 MiB of payload plus 64 KiB for its envelope.
pub const MAX_MESSAGE: usize = (1 << 20) + (64 << 10);

/// Size of a frame's prefix (length and kind), in bytes.
pub const FRAME_PREFIX_LEN: usize = 5;

/// Longest a unary request may take, from opening the stream to the response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest [`WireError::message`] sent, in bytes; longer ones are cut.
pub const MAX_WIRE_MESSAGE: usize = 512;

/// Bodies up to this size are copied next to their prefix so they leave in one
/// write; larger ones are written separately, in bytes.
const COALESCE_LIMIT: usize = 64 << 10;

/// A frame body is read in pieces of at most this many bytes: the buffer grows
/// as bytes arrive, never to the size a prefix merely announces.
const READ_PIECE: usize = 16 << 10;

/// Bodies up to this size are received without drawing on the
/// [`ReceiveBudget`]; larger ones reserve their whole length first.
pub const SMALL_FRAME: usize = 4 << 10;

/// Default [`ReceiveBudget`] of a node, in bytes.
pub const DEFAULT_RECEIVE_BUDGET: usize = 32 << 20;

/// Bytes that large frames being received may hold at once, shared by every
/// stream of a node: when it is spent, a large frame is refused
/// ([`RpcError::Busy`]) instead of buffered. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ReceiveBudget(std::sync::Arc<tokio::sync::Semaphore>);

impl ReceiveBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        let bytes = bytes.min(u32::MAX as usize);
        Self(std::sync::Arc::new(tokio::sync::Semaphore::new(bytes)))
    }

    /// Bytes not reserved now.
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }

    fn reserve(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let n = u32::try_from(bytes).ok()?;
        self.0.clone().try_acquire_many_owned(n).ok()
    }
}

/// What a frame body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// An application value.
    Data = 0,
    /// A [`WireError`]: the peer failed the request.
    Error = 1,
}

/// The first frame of every stream: which protocol version and what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamHeader {
    /// [`PROTOCOL_VERSION`] of the opener.
    pub version: u16,
    /// What the stream carries.
    pub kind: StreamKind,
}

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamKind {
    /// A liveness check answered by the network layer itself with a [`Pong`].
    Ping,
    /// A request for the node's [`Service`](crate::Service).
    Service,
    /// A relay reservation, circuit or incoming circuit, answered by the
    /// network layer itself (see `docs/PROTOCOL.md`, "Relays").
    Relay,
}

/// The answer to a ping stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// [`PROTOCOL_VERSION`] of the answering node.
    pub version: u16,
}

/// What kind of failure a remote node reports. Closed: new kinds come with a new
/// [`PROTOCOL_VERSION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WireErrorKind {
    /// The request was malformed or made no sense.
    BadRequest,
    /// The caller may not do this.
    PermissionDenied,
    /// The thing asked for does not exist.
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// The node cannot serve this now (shutting down, overloaded); try later.
    Unavailable,
    /// The node does not speak this protocol version or request.
    Unsupported,
    /// The node gave up waiting.
    Timeout,
    /// The node failed in a way the caller cannot fix.
    Internal,
}

impl fmt::Display for WireErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireErrorKind::BadRequest => "bad request",
            WireErrorKind::PermissionDenied => "permission denied",
            WireErrorKind::NotFound => "not found",
            WireErrorKind::AlreadyExists => "already exists",
            WireErrorKind::Unavailable => "unavailable",
            WireErrorKind::Unsupported => "unsupported",
            WireErrorKind::Timeout => "timed out",
            WireErrorKind::Internal => "internal error",
        })
    }
}

/// An error that crosses the wire: a kind and a short human sentence (never a
/// debug dump).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct WireError {
    /// What went wrong.
    pub kind: WireErrorKind,
    /// A short explanation for a person, at most [`MAX_WIRE_MESSAGE`] bytes.
    pub message: String,
}

impl WireError {
    /// A wire error; `message` is cut to [`MAX_WIRE_MESSAGE`] bytes.
    pub fn new(kind: WireErrorKind, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_WIRE_MESSAGE {
            let mut end = MAX_WIRE_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Self { kind, message }
    }
}

/// A stream could not carry a message.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Reading or writing the stream failed (reset, connection lost…).
    #[error("stream i/o failed")]
    Io(#[source] io::Error),
    /// A frame is larger than [`MAX_MESSAGE`].
    #[error("message of {len} bytes exceeds {max}")]
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame kind this version does not know.
    #[error("unknown frame kind {0}")]
    BadFrameKind(u8),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// A body is not a valid encoding of the expected type.
    #[error("malformed message")]
    Codec(#[source] codec::CodecError),
    /// The peer answered with an error.
    #[error("remote node failed: {0}")]
    Remote(WireError),
    /// A large frame arrived while the node's [`ReceiveBudget`] was spent.
    #[error("too busy to receive a {len}-byte message now")]
    Busy {
        /// The frame's announced length.
        len: usize,
    },
}

impl From<io::Error> for RpcError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            RpcError::Truncated
        } else {
            RpcError::Io(e)
        }
    }
}

/// Decodes a frame prefix into its kind and body length, refusing bodies over
/// [`MAX_MESSAGE`].
pub fn decode_prefix(prefix: [u8; FRAME_PREFIX_LEN]) -> Result<(FrameKind, usize), RpcError> {
    let [a, b, c, d, kind] = prefix;
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if len > MAX_MESSAGE {
        return Err(RpcError::TooLarge {
            len,
            max: MAX_MESSAGE,
        });
    }
    let kind = match kind {
        0 => FrameKind::Data,
        1 => FrameKind::Error,
        other => return Err(RpcError::BadFrameKind(other)),
    };
    Ok((kind, len))
}

/// Decodes a whole frame held in `buf` (prefix and body, nothing more) as a `T`;
/// an error frame becomes [`RpcError::Remote`].
pub fn decode_frame<T: DeserializeOwned>(buf: &[u8]) -> Result<T, RpcError> {
    let Some((prefix, body)) = buf.split_first_chunk::<FRAME_PREFIX_LEN>() else {
        return Err(RpcError::Truncated);
    };
    let (kind, len) = decode_prefix(*prefix)?;
    if body.len() != len {
        return Err(RpcError::Truncated);
    }
    decode_body(kind, body)
}

fn decode_body<T: DeserializeOwned>(kind: FrameKind, body: &[u8]) -> Result<T, RpcError> {
    match kind {
        FrameKind::Data => {
            codec::decode_with_limit::<T, MAX_MESSAGE>(body).map_err(RpcError::Codec)
        }
        FrameKind::Error => {
            let err: WireError =
                codec::decode_with_limit::<_, MAX_MESSAGE>(body).map_err(RpcError::Codec)?;
            Err(RpcError::Remote(err))
        }
    }
}

/// Encodes `value` as one frame of `kind`.
pub fn encode_frame<T: Serialize + ?Sized>(
    kind: FrameKind,
    value: &T,
) -> Result<Vec<u8>, RpcError> {
    let body = codec::encode(value).map_err(RpcError::Codec)?;
    frame_bytes(kind, body)
}

fn frame_bytes(kind: FrameKind, body: Vec<u8>) -> Result<Vec<u8>, RpcError> {
    let len = body.len();
    if len > MAX_MESSAGE {
        return Err(RpcError::TooLarge {
            len,
            max: MAX_MESSAGE,
        });
    }
    let mut frame = Vec::with_capacity(FRAME_PREFIX_LEN + len);
    frame.extend_from_slice(&(len as u32).to_be_bytes());
    frame.push(kind as u8);
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// The byte stream under an [`RpcStream`] (a yamux stream in a node; anything in
/// a test).
pub trait StreamIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> StreamIo for S {}

/// One request/response stream with a peer: typed frames in both directions.
///
/// The peer's NodeId is the one it proved in the Noise handshake.
pub struct RpcStream {
    io: Box<dyn StreamIo>,
    peer: NodeId,
    /// Bytes (the stream header) to send in front of the first frame.
    pending: Vec<u8>,
    rbuf: Vec<u8>,
    budget: Option<ReceiveBudget>,
    _guard: Option<Box<dyn StreamHold>>,
}

/// What keeps a stream counted on its connection while the stream lives.
pub(crate) trait StreamHold: Send + Sync {
    /// The stream may stay silent for long (see [`RpcStream::quiet`]).
    fn quiet(&self);
}

impl fmt::Debug for RpcStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcStream")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl RpcStream {
    /// Wraps a byte stream with the peer it leads to.
    pub fn new(io: impl StreamIo, peer: NodeId) -> Self {
        Self {
            io: Box::new(io),
            peer,
            pending: Vec::new(),
            rbuf: Vec::new(),
            budget: None,
            _guard: None,
        }
    }

    /// Draws large frames received on this stream from `budget`.
    pub fn with_budget(mut self, budget: ReceiveBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Queues `header` to go out with the first frame sent.
    pub(crate) fn with_header(mut self, header: &StreamHeader) -> Result<Self, RpcError> {
        self.pending = encode_frame(FrameKind::Data, header)?;
        Ok(self)
    }

    /// Keeps `guard` alive as long as the stream.
    pub(crate) fn with_guard(mut self, guard: impl StreamHold + 'static) -> Self {
        self._guard = Some(Box::new(guard));
        self
    }

    /// Marks this stream as a subscription that may stay silent for long (a
    /// follow stream waiting for the next head). It still keeps its
    /// connection open, but its silence no longer makes the connection probe
    /// the peer every few seconds: only the regular keep-alive runs.
    pub fn quiet(&self) {
        if let Some(guard) = &self._guard {
            guard.quiet();
        }
    }

    /// The authenticated peer at the other end.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// Sends one value.
    pub async fn send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), RpcError> {
        let body = codec::encode(value).map_err(RpcError::Codec)?;
        self.send_body(FrameKind::Data, body).await
    }

    /// Sends an error in place of a value; the peer's `recv` returns
    /// [`RpcError::Remote`].
    pub async fn send_error(&mut self, error: &WireError) -> Result<(), RpcError> {
        let body = codec::encode(error).map_err(RpcError::Codec)?;
        self.send_body(FrameKind::Error, body).await
    }

    async fn send_body(&mut self, kind: FrameKind, body: Vec<u8>) -> Result<(), RpcError> {
        if body.len() <= COALESCE_LIMIT {
            let frame = frame_bytes(kind, body)?;
            if self.pending.is_empty() {
                self.io.write_all(&frame).await?;
            } else {
                self.pending.extend_from_slice(&frame);
                let out = std::mem::take(&mut self.pending);
                self.io.write_all(&out).await?;
            }
        } else {
            if body.len() > MAX_MESSAGE {
                return Err(RpcError::TooLarge {
                    len: body.len(),
                    max: MAX_MESSAGE,
                });
            }
            let mut prefix = std::mem::take(&mut self.pending);
            prefix.extend_from_slice(&(body.len() as u32).to_be_bytes());
            prefix.push(kind as u8);
            self.io.write_all(&prefix).await?;
            self.io.write_all(&body).await?;
        }
        self.io.flush().await?;
        Ok(())
    }

    async fn flush_pending(&mut self) -> Result<(), RpcError> {
        if !self.pending.is_empty() {
            let out = std::mem::take(&mut self.pending);
            self.io.write_all(&out).await?;
            self.io.flush().await?;
        }
        Ok(())
    }

    /// Receives the next value; `None` once the peer has finished its side.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, RpcError> {
        self.flush_pending().await?;
        let mut prefix = [0u8; FRAME_PREFIX_LEN];
        let mut got = 0;
        while got < FRAME_PREFIX_LEN {
            let n = self.io.read(&mut prefix[got..]).await?;
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(RpcError::Truncated)
                };
            }
            got += n;
        }
        let (kind, len) = decode_prefix(prefix)?;
        // A large frame reserves its length from the node's budget first: a
        // peer that announces much and sends little holds the reservation,
        // not memory, and a spent budget refuses rather than buffers.
        let reserved = match &self.budget {
            Some(budget) if len > SMALL_FRAME => {
                Some(budget.reserve(len).ok_or(RpcError::Busy { len })?)
            }
            _ => None,
        };
        if reserved.is_some() || len <= SMALL_FRAME {
            // Accounted for (or small): read it in one go.
            self.rbuf.resize(len, 0);
            self.io.read_exact(&mut self.rbuf).await?;
        } else {
            // Unaccounted: the buffer grows only as bytes arrive.
            self.rbuf.clear();
            while self.rbuf.len() < len {
                let start = self.rbuf.len();
                let piece = (len - start).min(READ_PIECE);
                self.rbuf.reserve(piece);
                self.rbuf.resize(start + piece, 0);
                let n = self.io.read(&mut self.rbuf[start..]).await?;
                self.rbuf.truncate(start + n);
                if n == 0 {
                    return Err(RpcError::Truncated);
                }
            }
        }
        let value = decode_body(kind, &self.rbuf);
        drop(reserved);
        if self.rbuf.capacity() > COALESCE_LIMIT {
            // Do not keep a megabyte per idle stream.
            self.rbuf = Vec::new();
        }
        value.map(Some)
    }

    /// The byte stream under this one, after the frames exchanged so far
    /// (nothing is read ahead of a frame, so nothing is lost), keeping this
    /// stream's guard alive: for carrying another protocol on from here.
    pub(crate) async fn into_io(mut self) -> Result<Guarded, RpcError> {
        self.flush_pending().await?;
        Ok(Guarded {
            io: self.io,
            _guard: self._guard,
        })
    }

    /// Finishes this side: the peer's `recv` returns `None` after the frames
    /// already sent. Receiving remains possible.
    pub async fn finish(&mut self) -> Result<(), RpcError> {
        self.flush_pending().await?;
        self.io.close().await?;
        Ok(())
    }
}

/// A stream's bytes with whatever kept the stream counted (see
/// [`RpcStream::into_io`]).
pub(crate) struct Guarded {
    io: Box<dyn StreamIo>,
    _guard: Option<Box<dyn StreamHold>>,
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    fn node() -> NodeId {
        keynode_core::Keypair::generate().node_id()
    }

    #[test]
    fn prefix_limits() {
        assert!(matches!(
            decode_prefix([0, 0x11, 0, 1, 0]),
            Err(RpcError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_prefix([0, 0, 0, 1, 9]),
            Err(RpcError::BadFrameKind(9))
        ));
        assert_eq!(
            decode_prefix([0, 0, 1, 0, 1]).unwrap(),
            (FrameKind::Error, 256)
        );
    }

    #[test]
    fn header_bytes_match_the_protocol_doc() {
        let header = StreamHeader {
            version: PROTOCOL_VERSION,
            kind: StreamKind::Service,
        };
        assert_eq!(
            encode_frame(FrameKind::Data, &header).unwrap(),
            [0, 0, 0, 2, 0, 1, 1]
        );
        let err = WireError::new(WireErrorKind::NotFound, "x");
        assert_eq!(codec::encode(&err).unwrap(), [2, 1, b'x']);
    }

    #[test]
    fn wire_error_message_is_cut_on_a_char_boundary() {
        let e = WireError::new(WireErrorKind::Internal, "é".repeat(400));
        assert!(e.message.len() <= MAX_WIRE_MESSAGE);
        assert_eq!(e.to_string().split(": ").next(), Some("internal error"));
    }

    /// A write-only stream whose bytes the test can take back.
    #[derive(Clone, Default)]
    struct Tape(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl AsyncWrite for Tape {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.0.lock().unwrap().extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for Tape {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            std::task::Poll::Ready(Ok(0))
        }
    }

    #[test]
    fn frames_round_trip_through_a_stream() {
        futures::executor::block_on(async {
            let tape = Tape::default();
            let mut out = RpcStream::new(tape.clone(), node())
                .with_header(&StreamHeader {
                    version: PROTOCOL_VERSION,
                    kind: StreamKind::Service,
                })
                .unwrap();
            out.send(&(1u32, "two".to_string())).await.unwrap();
            out.send(&vec![7u8; 200_000]).await.unwrap();
            out.send_error(&WireError::new(WireErrorKind::NotFound, "no such vault"))
                .await
                .unwrap();
            out.finish().await.unwrap();
            let bytes = tape.0.lock().unwrap().clone();

            let mut inp = RpcStream::new(Cursor::new(bytes), node());
            let h: StreamHeader = inp.recv().await.unwrap().unwrap();
            assert_eq!(h.kind, StreamKind::Service);
            let v: (u32, String) = inp.recv().await.unwrap().unwrap();
            assert_eq!(v, (1, "two".into()));
            let big: Vec<u8> = inp.recv().await.unwrap().unwrap();
            assert_eq!(big.len(), 200_000);
            let err = inp.recv::<u32>().await.unwrap_err();
            assert!(matches!(err, RpcError::Remote(e) if e.kind == WireErrorKind::NotFound));
            assert!(inp.recv::<u32>().await.unwrap().is_none());
        });
    }

    #[test]
    fn an_announced_body_is_not_allocated_before_it_arrives() {
        futures::executor::block_on(async {
            // The largest body announced, ten bytes sent, then the end.
            let mut bytes = (MAX_MESSAGE as u32).to_be_bytes().to_vec();
            bytes.push(FrameKind::Data as u8);
            bytes.extend_from_slice(&[7; 10]);
            let mut inp = RpcStream::new(Cursor::new(bytes), node());
            assert!(matches!(inp.recv::<u64>().await, Err(RpcError::Truncated)));
            assert!(
                inp.rbuf.capacity() <= 2 * READ_PIECE,
                "{} bytes held for 10 received",
                inp.rbuf.capacity()
            );
        });
    }

    #[test]
    fn large_frames_draw_on_the_budget_and_give_it_back() {
        futures::executor::block_on(async {
            let budget = ReceiveBudget::new(256 << 10);
            let value = vec![9u8; 100 << 10];
            let bytes =
                encode_frame(FrameKind::Data, &serde_bytes::ByteBuf::from(value.clone())).unwrap();
            let mut inp =
                RpcStream::new(Cursor::new(bytes.clone()), node()).with_budget(budget.clone());
            let got: serde_bytes::ByteBuf = inp.recv().await.unwrap().unwrap();
            assert_eq!(got.into_vec(), value);
            assert_eq!(budget.available(), 256 << 10, "the reservation is returned");
            // With the budget spent elsewhere, the same frame is refused unread.
            let held = budget.reserve(200 << 10).unwrap();
            let mut inp = RpcStream::new(Cursor::new(bytes), node()).with_budget(budget.clone());
            assert!(matches!(
                inp.recv::<serde_bytes::ByteBuf>().await,
                Err(RpcError::Busy { .. })
            ));
            drop(held);
            // Small frames never need the budget.
            let small = encode_frame(FrameKind::Data, &1u64).unwrap();
            let _all = budget.reserve(256 << 10).unwrap();
            let mut inp = RpcStream::new(Cursor::new(small), node()).with_budget(budget);
            assert_eq!(inp.recv::<u64>().await.unwrap(), Some(1));
        });
    }

    #[test]
    fn truncated_frame_is_an_error() {
        futures::executor::block_on(async {
            let mut bytes = encode_frame(FrameKind::Data, &123_456u64).unwrap();
            bytes.pop();
            let mut inp = RpcStream::new(Cursor::new(bytes), node());
            assert!(matches!(inp.recv::<u64>().await, Err(RpcError::Truncated)));
        });
    }
}
