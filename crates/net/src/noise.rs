//! The Noise handshake that authenticates a connection, and the encrypted stream
//! that follows it.
//!
//! Pattern `Noise_XX_25519_ChaChaPoly_BLAKE2s`, prologue [`PROLOGUE`]. Each side
//! has a fresh X25519 static key per process and binds it to its NodeId (an
//! Ed25519 key) by sending, inside the encrypted handshake payload, its NodeId and
//! an Ed25519 signature over [`STATIC_KEY_DOMAIN`] followed by the 32-byte X25519
//! static public key. See `docs/PROTOCOL.md` for the byte layout.
//!
//! After the handshake, [`NoiseStream`] carries frames of a 2-byte big-endian
//! length followed by one Noise transport message (at most [`MAX_NOISE_FRAME`]
//! bytes, so at most [`MAX_PLAINTEXT`] bytes of plaintext).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use keynode_core::{Keypair, NodeId, Signature, codec};
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver, FallbackResolver, RingResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The Noise protocol name.
pub const NOISE_PATTERN: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";

/// The Noise prologue: keynode's protocol name and major version. Both sides must
/// use the same bytes or the handshake fails.
pub const PROLOGUE: &[u8] = b"keynode/1";

/// Domain separation for the signature that binds the Noise static key to a NodeId;
/// the signed message is these bytes followed by the 32-byte X25519 static key.
pub const STATIC_KEY_DOMAIN: &[u8] = b"keynode-noise-static-key:";

/// Longest a whole handshake may take, from the first byte to the last.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest handshake message accepted, in bytes (the largest legitimate one is
/// under 200).
pub const MAX_HANDSHAKE_MESSAGE: usize = 1024;

/// Largest Noise message, in bytes (the Noise specification's limit).
pub const MAX_NOISE_FRAME: usize = 65_535;

/// Size of the ChaCha20-Poly1305 authentication tag, in bytes.
pub const TAG_LEN: usize = 16;

/// Largest plaintext carried by one Noise frame, in bytes.
pub const MAX_PLAINTEXT: usize = MAX_NOISE_FRAME - TAG_LEN;

/// Ciphertext queued for the socket, in bytes, before a writer must wait.
const WRITE_HIGH_WATER: usize = 2 * (MAX_NOISE_FRAME + 2);

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 2 * (MAX_NOISE_FRAME + 2);

/// The handshake failed; the connection is dropped.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Reading or writing the socket failed.
    #[error("handshake i/o failed")]
    Io(#[source] io::Error),
    /// The handshake did not finish within its time bound.
    #[error("handshake timed out after {0:?}")]
    Timeout(Duration),
    /// The peer announced a handshake message larger than allowed.
    #[error("handshake message of {len} bytes exceeds {max}")]
    Oversized {
        /// Announced length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Noise rejected a message (wrong prologue, bad key, failed decryption…).
    #[error("noise handshake failed: {0}")]
    Noise(#[source] snow::Error),
    /// The handshake payload is not a NodeId and a signature.
    #[error("malformed handshake payload")]
    BadPayload(#[source] codec::CodecError),
    /// The peer's Noise static key is not signed by the NodeId it claims.
    #[error("peer's static key is not signed by {0}")]
    BadSignature(NodeId),
    /// The peer proved an identity other than the one dialed.
    #[error("expected peer {expected}, got {got}")]
    UnexpectedPeer {
        /// The NodeId the dialer asked for.
        expected: NodeId,
        /// The NodeId the peer proved.
        got: NodeId,
    },
}

impl From<snow::Error> for HandshakeError {
    fn from(e: snow::Error) -> Self {
        HandshakeError::Noise(e)
    }
}

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

/// Where a node's randomness comes from: the OS, or a seeded generator so a
/// simulation replays exactly.
pub trait Entropy: Send + Sync + 'static {
    /// Fills `dest` with random bytes.
    fn fill(&self, dest: &mut [u8]);
}

/// The operating system's random number generator.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, dest: &mut [u8]) {
        rand::rngs::OsRng.fill_bytes(dest);
    }
}

/// A deterministic generator (ChaCha12) from a seed: for tests and simulations only.
#[derive(Debug)]
pub struct SeededEntropy(Mutex<rand::rngs::StdRng>);

impl SeededEntropy {
    /// A generator that always produces the same bytes for the same seed.
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)))
    }
}

impl Entropy for SeededEntropy {
    fn fill(&self, dest: &mut [u8]) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .fill_bytes(dest);
    }
}

struct EntropyRng(Arc<dyn Entropy>);

impl Random for EntropyRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

/// ring's primitives (falling back to snow's defaults) with our entropy source.
struct Resolver {
    entropy: Arc<dyn Entropy>,
    crypto: FallbackResolver,
}

impl Resolver {
    fn new(entropy: Arc<dyn Entropy>) -> Self {
        Self {
            entropy,
            crypto: FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver)),
        }
    }
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(EntropyRng(self.entropy.clone())))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        self.crypto.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        self.crypto.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        self.crypto.resolve_cipher(choice)
    }
}

fn params() -> NoiseParams {
    NOISE_PATTERN
        .parse()
        .unwrap_or_else(|_| unreachable!("the pattern name is a valid constant"))
}

/// What a node sends in its handshake payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandshakePayload {
    /// The sender's NodeId (Ed25519 public key).
    pub node_id: NodeId,
    /// Ed25519 signature over [`STATIC_KEY_DOMAIN`] ‖ X25519 static public key.
    pub signature: Signature,
}

/// The message a node signs to bind `static_key` to its NodeId.
pub fn static_key_message(static_key: &[u8]) -> Vec<u8> {
    [STATIC_KEY_DOMAIN, static_key].concat()
}

/// A node's handshake identity: its Ed25519 key, a Noise static key made for this
/// process and the signed payload binding the two.
pub struct Identity {
    node_id: NodeId,
    static_private: zeroize::Zeroizing<Vec<u8>>,
    payload: Vec<u8>,
    entropy: Arc<dyn Entropy>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.node_id)
    }
}

impl Identity {
    /// Makes a fresh Noise static key from `entropy` and signs it with `key`.
    pub fn new(key: &Keypair, entropy: Arc<dyn Entropy>) -> Result<Self, HandshakeError> {
        let builder =
            snow::Builder::with_resolver(params(), Box::new(Resolver::new(entropy.clone())));
        let keypair = builder.generate_keypair()?;
        let node_id = key.node_id();
        let payload = HandshakePayload {
            node_id,
            signature: key.sign(&static_key_message(&keypair.public)),
        };
        let payload = codec::encode(&payload).map_err(HandshakeError::BadPayload)?;
        Ok(Self {
            node_id,
            static_private: zeroize::Zeroizing::new(keypair.private),
            payload,
            entropy,
        })
    }

    /// The NodeId this identity proves.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    fn builder(&self) -> Result<snow::Builder<'_>, HandshakeError> {
        Ok(
            snow::Builder::with_resolver(params(), Box::new(Resolver::new(self.entropy.clone())))
                .prologue(PROLOGUE)?
                .local_private_key(&self.static_private)?,
        )
    }
}

/// Which end of the handshake this side plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The dialer, who knows which NodeId it wants (`None` accepts anyone).
    Initiator(Option<NodeId>),
    /// The listener, who accepts any NodeId that proves itself.
    Responder,
}

/// Runs the XX handshake over `io` within `timeout`; returns the encrypted stream
/// and the NodeId the peer proved.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    identity: &Identity,
    role: Role,
    timeout: Duration,
) -> Result<(NoiseStream<S>, NodeId), HandshakeError> {
    tokio::time::timeout(timeout, run_handshake(io, identity, role))
        .await
        .map_err(|_| HandshakeError::Timeout(timeout))?
}

async fn run_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    identity: &Identity,
    role: Role,
) -> Result<(NoiseStream<S>, NodeId), HandshakeError> {
    let mut msg = vec![0u8; MAX_HANDSHAKE_MESSAGE];
    let mut payload = vec![0u8; MAX_HANDSHAKE_MESSAGE];
    let builder = identity.builder()?;
    let peer = match role {
        Role::Initiator(expected) => {
            let mut hs = builder.build_initiator()?;
            // -> e
            let n = hs.write_message(&[], &mut msg)?;
            write_handshake_message(&mut io, &msg[..n]).await?;
            // <- e, ee, s, es, payload
            let len = read_handshake_message(&mut io, &mut msg).await?;
            let n = hs.read_message(&msg[..len], &mut payload)?;
            let peer = verify_payload(&hs, &payload[..n])?;
            // Abort before revealing who we are to the wrong node.
            if let Some(expected) = expected
                && expected != peer
            {
                return Err(HandshakeError::UnexpectedPeer {
                    expected,
                    got: peer,
                });
            }
            // -> s, se, payload
            let n = hs.write_message(&identity.payload, &mut msg)?;
            write_handshake_message(&mut io, &msg[..n]).await?;
            (hs.into_transport_mode()?, peer)
        }
        Role::Responder => {
            let mut hs = builder.build_responder()?;
            let len = read_handshake_message(&mut io, &mut msg).await?;
            hs.read_message(&msg[..len], &mut payload)?;
            let n = hs.write_message(&identity.payload, &mut msg)?;
            write_handshake_message(&mut io, &msg[..n]).await?;
            let len = read_handshake_message(&mut io, &mut msg).await?;
            let n = hs.read_message(&msg[..len], &mut payload)?;
            let peer = verify_payload(&hs, &payload[..n])?;
            (hs.into_transport_mode()?, peer)
        }
    };
    let (transport, node) = peer;
    Ok((NoiseStream::new(io, transport), node))
}

fn verify_payload(hs: &snow::HandshakeState, payload: &[u8]) -> Result<NodeId, HandshakeError> {
    let payload: HandshakePayload = codec::decode_with_limit::<_, MAX_HANDSHAKE_MESSAGE>(payload)
        .map_err(HandshakeError::BadPayload)?;
    let remote_static = hs
        .get_remote_static()
        .ok_or(HandshakeError::Noise(snow::Error::Input))?;
    payload
        .node_id
        .verify(&static_key_message(remote_static), &payload.signature)
        .map_err(|_| HandshakeError::BadSignature(payload.node_id))?;
    Ok(payload.node_id)
}

/// Writes one length-prefixed handshake message.
pub async fn write_handshake_message<S: AsyncWrite + Unpin>(
    io: &mut S,
    msg: &[u8],
) -> Result<(), HandshakeError> {
    let len = u16::try_from(msg.len()).map_err(|_| HandshakeError::Oversized {
        len: msg.len(),
        max: MAX_HANDSHAKE_MESSAGE,
    })?;
    let mut frame = Vec::with_capacity(2 + msg.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(msg);
    io.write_all(&frame).await.map_err(HandshakeError::Io)?;
    io.flush().await.map_err(HandshakeError::Io)
}

/// Reads one length-prefixed handshake message into `buf`, refusing lengths over
/// [`MAX_HANDSHAKE_MESSAGE`]; returns its length.
pub async fn read_handshake_message<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut [u8],
) -> Result<usize, HandshakeError> {
    let mut prefix = [0u8; 2];
    io.read_exact(&mut prefix)
        .await
        .map_err(HandshakeError::Io)?;
    let len = usize::from(u16::from_be_bytes(prefix));
    let max = MAX_HANDSHAKE_MESSAGE.min(buf.len());
    if len > max {
        return Err(HandshakeError::Oversized { len, max });
    }
    io.read_exact(&mut buf[..len])
        .await
        .map_err(HandshakeError::Io)?;
    Ok(len)
}

/// An encrypted, authenticated byte stream over `S`.
///
/// Writes are buffered into one Noise frame of up to [`MAX_PLAINTEXT`] bytes and
/// sealed when the frame is full or on `flush`. Reads decrypt one frame at a
/// time; a frame that fails to authenticate is an `InvalidData` error, after
/// which the stream is unusable.
pub struct NoiseStream<S> {
    io: S,
    noise: snow::TransportState,
    rbuf: BytesMut,
    rplain: Vec<u8>,
    rpos: usize,
    wplain: Vec<u8>,
    wcipher: Vec<u8>,
    wpos: usize,
}

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
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            rplain: Vec::new(),
            rpos: 0,
            wplain: Vec::with_capacity(MAX_PLAINTEXT),
            wcipher: Vec::with_capacity(WRITE_HIGH_WATER),
            wpos: 0,
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Encrypts the buffered plaintext into one frame queued for the socket.
    fn seal(&mut self) -> io::Result<()> {
        if self.wplain.is_empty() {
            return Ok(());
        }
        let start = self.wcipher.len();
        let len = self.wplain.len() + TAG_LEN;
        self.wcipher.resize(start + 2 + len, 0);
        let n = self
            .noise
            .write_message(&self.wplain, &mut self.wcipher[start + 2..])
            .map_err(io::Error::other)?;
        let prefix = u16::try_from(n).map_err(io::Error::other)?;
        self.wcipher[start..start + 2].copy_from_slice(&prefix.to_be_bytes());
        self.wcipher.truncate(start + 2 + n);
        self.wplain.clear();
        Ok(())
    }
}

impl<S: AsyncWrite + Unpin> NoiseStream<S> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wcipher.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wcipher[self.wpos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        self.wcipher.clear();
        self.wpos = 0;
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
        loop {
            if this.rpos < this.rplain.len() {
                let n = buf.remaining().min(this.rplain.len() - this.rpos);
                buf.put_slice(&this.rplain[this.rpos..this.rpos + n]);
                this.rpos += n;
                return Poll::Ready(Ok(()));
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if let Some(len) = parse_frame(&this.rbuf)? {
                let body = &this.rbuf[2..len];
                let plain_len = body.len() - TAG_LEN;
                let n = if buf.remaining() >= plain_len {
                    // Decrypt straight into the caller's buffer.
                    let dst = buf.initialize_unfilled_to(plain_len);
                    let n = this
                        .noise
                        .read_message(body, dst)
                        .map_err(|_| FrameError::Decrypt)?;
                    buf.advance(n);
                    n
                } else {
                    this.rplain.resize(plain_len, 0);
                    this.rpos = 0;
                    let n = this
                        .noise
                        .read_message(body, &mut this.rplain)
                        .map_err(|_| FrameError::Decrypt)?;
                    this.rplain.truncate(n);
                    0
                };
                this.rbuf.advance(len);
                if n > 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if this.rbuf.capacity() - this.rbuf.len() < MAX_NOISE_FRAME {
                this.rbuf.reserve(READ_CHUNK);
            }
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.io),
                cx,
                &mut this.rbuf
            ))?;
            if n == 0 {
                if this.rbuf.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Err(FrameError::Truncated.into()));
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
        if this.wplain.len() == MAX_PLAINTEXT {
            if this.wcipher.len() - this.wpos >= WRITE_HIGH_WATER {
                ready!(this.poll_drain(cx))?;
            }
            this.seal()?;
        }
        let n = buf.len().min(MAX_PLAINTEXT - this.wplain.len());
        this.wplain.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.seal()?;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> (Keypair, Identity) {
        let key = Keypair::generate();
        let id = Identity::new(&key, Arc::new(OsEntropy)).unwrap();
        (key, id)
    }

    #[test]
    fn payload_layout_is_node_id_then_length_prefixed_signature() {
        let key = Keypair::generate();
        let payload = HandshakePayload {
            node_id: key.node_id(),
            signature: key.sign(b"x"),
        };
        let bytes = codec::encode(&payload).unwrap();
        assert_eq!(bytes.len(), 97);
        assert_eq!(&bytes[..32], key.node_id().as_bytes());
        assert_eq!(bytes[32], 64);
        assert_eq!(&bytes[33..], key.sign(b"x").as_bytes());
    }

    #[test]
    fn parse_frame_bounds() {
        assert_eq!(parse_frame(&[]), Ok(None));
        assert_eq!(parse_frame(&[0]), Ok(None));
        assert_eq!(parse_frame(&[0, 15]), Err(FrameError::TooShort(15)));
        assert_eq!(parse_frame(&[0, 16]), Ok(None));
        assert_eq!(parse_frame(&[0u8, 16].repeat(9)), Ok(Some(18)));
    }

    #[tokio::test]
    async fn handshake_and_large_transfer_both_ways() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a_key, a) = identity();
        let (b_key, b) = identity();
        let (x, y) = tokio::io::duplex(64 * 1024);
        let (ra, rb) = tokio::join!(
            handshake(
                x,
                &a,
                Role::Initiator(Some(b_key.node_id())),
                HANDSHAKE_TIMEOUT
            ),
            handshake(y, &b, Role::Responder, HANDSHAKE_TIMEOUT),
        );
        let (mut sa, peer_b) = ra.unwrap();
        let (mut sb, peer_a) = rb.unwrap();
        assert_eq!(peer_b, b_key.node_id());
        assert_eq!(peer_a, a_key.node_id());
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let expect = data.clone();
        let writer = tokio::spawn(async move {
            sa.write_all(&data).await.unwrap();
            sa.shutdown().await.unwrap();
            sa
        });
        let mut got = Vec::new();
        sb.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, expect);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn wrong_expected_peer_is_refused() {
        let (_, a) = identity();
        let (_, b) = identity();
        let other = Keypair::generate().node_id();
        let (x, y) = tokio::io::duplex(64 * 1024);
        let (ra, _rb) = tokio::join!(
            handshake(x, &a, Role::Initiator(Some(other)), HANDSHAKE_TIMEOUT),
            handshake(y, &b, Role::Responder, Duration::from_millis(200)),
        );
        assert!(matches!(
            ra,
            Err(HandshakeError::UnexpectedPeer { expected, got }) if expected == other && got == b.node_id()
        ));
    }

    #[tokio::test]
    async fn seeded_entropy_repeats() {
        let key = Keypair::from_secret_bytes([7; 32]);
        let a = Identity::new(&key, Arc::new(SeededEntropy::new(1))).unwrap();
        let b = Identity::new(&key, Arc::new(SeededEntropy::new(1))).unwrap();
        assert_eq!(*a.static_private, *b.static_private);
    }
}
