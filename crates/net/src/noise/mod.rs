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
    let side = match role {
        Role::Initiator(_) => "outbound",
        Role::Responder => "inbound",
    };
    let result = tokio::time::timeout(timeout, run_handshake(io, identity, role))
        .await
        .map_err(|_| HandshakeError::Timeout(timeout))
        .and_then(|r| r);
    let outcome = match &result {
        Ok(_) => "ok",
        Err(HandshakeError::Timeout(_)) => "timeout",
        Err(_) => "failed",
    };
    metrics::counter!("keynode_handshakes_total", "direction" => side, "outcome" => outcome)
        .increment(1);
    result
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

mod stream;

pub use stream::*;

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
    async fn mixed_write_and_read_sizes_round_trip() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (_, a) = identity();
        let (_, b) = identity();
        // A small pipe, so the writer's queue fills and waits on the socket.
        let (x, y) = tokio::io::duplex(4096);
        let (ra, rb) = tokio::join!(
            handshake(x, &a, Role::Initiator(None), HANDSHAKE_TIMEOUT),
            handshake(y, &b, Role::Responder, HANDSHAKE_TIMEOUT),
        );
        let (mut sa, _) = ra.unwrap();
        let (mut sb, _) = rb.unwrap();
        let data: Vec<u8> = (0..1_500_000u32).map(|i| (i % 253) as u8).collect();
        let expect = data.clone();
        let writer = tokio::spawn(async move {
            // Whole frames sealed in place, partial frames gathered, and flushes
            // in between.
            let sizes = [1, 12, MAX_PLAINTEXT, 70_000, 3 * MAX_PLAINTEXT + 5, 65_507];
            let mut rest = &data[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                sa.write_all(&rest[..n]).await.unwrap();
                if i % 4 == 3 {
                    sa.flush().await.unwrap();
                }
                rest = &rest[n..];
                i += 1;
            }
            sa.shutdown().await.unwrap();
        });
        // Reads shaped like yamux's: a 12-byte header, then a body.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 300_000];
        for i in 0.. {
            let want = [12, 65_507, 1, 300_000][i % 4];
            let n = sb.read(&mut buf[..want]).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, expect);
        writer.await.unwrap();
    }

    /// A connected pair of Noise streams over one in-memory pipe big enough to
    /// hold everything the tests below write.
    async fn noise_pair() -> (
        NoiseStream<tokio::io::DuplexStream>,
        NoiseStream<tokio::io::DuplexStream>,
    ) {
        let (_, a) = identity();
        let (_, b) = identity();
        let (x, y) = tokio::io::duplex(4 << 20);
        let (ra, rb) = tokio::join!(
            handshake(x, &a, Role::Initiator(None), HANDSHAKE_TIMEOUT),
            handshake(y, &b, Role::Responder, HANDSHAKE_TIMEOUT),
        );
        (ra.unwrap().0, rb.unwrap().0)
    }

    /// Reads exactly `n` bytes from `s` without ever waiting: every byte must be
    /// decryptable from what is already in the pipe.
    fn read_now(s: &mut NoiseStream<tokio::io::DuplexStream>, n: usize) -> Vec<u8> {
        use futures::FutureExt;
        use tokio::io::AsyncReadExt;
        let mut got = vec![0u8; n];
        s.read_exact(&mut got)
            .now_or_never()
            .expect("bytes flushed by the peer must be readable without waiting")
            .unwrap();
        got
    }

    /// The RPC pattern under yamux: a 12-byte header and a small body written
    /// separately, then a flush. Everything must be on the wire after the flush
    /// (no batch threshold, no later write needed) and readable by the peer
    /// header first, as yamux reads.
    #[tokio::test]
    async fn small_writes_then_flush_reach_the_peer_at_once() {
        use futures::FutureExt;
        use tokio::io::AsyncWriteExt;
        let (mut a, mut b) = noise_pair().await;
        for round in 0..3u8 {
            let header = [round; 12];
            let body = [round.wrapping_add(100); 20];
            // Small writes never wait on the socket.
            assert_eq!(a.write(&header).now_or_never().unwrap().unwrap(), 12);
            assert_eq!(a.write(&body).now_or_never().unwrap().unwrap(), 20);
            a.flush().now_or_never().unwrap().unwrap();
            assert_eq!(read_now(&mut b, 12), header);
            assert_eq!(read_now(&mut b, 20), body);
            // And the reply the other way.
            b.write_all(&body).now_or_never().unwrap().unwrap();
            b.flush().now_or_never().unwrap().unwrap();
            assert_eq!(read_now(&mut a, 20), body);
        }
    }

    /// Whole frames queued below the write batch threshold, then a small tail:
    /// one flush sends all of it.
    #[tokio::test]
    async fn flush_drains_frames_queued_below_the_batch_threshold() {
        use futures::FutureExt;
        use tokio::io::AsyncWriteExt;
        let (mut a, mut b) = noise_pair().await;
        let frames = WRITE_BATCH / WIRE_FRAME - 1;
        let data: Vec<u8> = (0..frames * MAX_PLAINTEXT + 7)
            .map(|i| (i % 249) as u8)
            .collect();
        a.write_all(&data).now_or_never().unwrap().unwrap();
        a.flush().now_or_never().unwrap().unwrap();
        assert_eq!(read_now(&mut b, data.len()), data);
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
