//! Property tests: the frame and message decoders take any bytes without
//! panicking and refuse oversize input.

use std::io::Cursor;

use keynode_core::Keypair;
use keynode_net::noise::{self, FrameError, NOISE_PATTERN, NoiseStream, TAG_LEN};
use keynode_net::rpc::{
    self, FRAME_PREFIX_LEN, FrameKind, MAX_MESSAGE, RpcError, RpcStream, StreamHeader, StreamKind,
    WireError,
};
use proptest::prelude::*;

/// A pair of transport states from a real XX handshake done in memory.
fn transport_pair() -> (snow::TransportState, snow::TransportState) {
    let params: snow::params::NoiseParams = NOISE_PATTERN.parse().unwrap();
    let ka = snow::Builder::new(params.clone())
        .generate_keypair()
        .unwrap();
    let kb = snow::Builder::new(params.clone())
        .generate_keypair()
        .unwrap();
    let mut a = snow::Builder::new(params.clone())
        .prologue(noise::PROLOGUE)
        .unwrap()
        .local_private_key(&ka.private)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut b = snow::Builder::new(params)
        .prologue(noise::PROLOGUE)
        .unwrap()
        .local_private_key(&kb.private)
        .unwrap()
        .build_responder()
        .unwrap();
    let (mut m, mut p) = (vec![0u8; 1024], vec![0u8; 1024]);
    let n = a.write_message(&[], &mut m).unwrap();
    b.read_message(&m[..n], &mut p).unwrap();
    let n = b.write_message(&[], &mut m).unwrap();
    a.read_message(&m[..n], &mut p).unwrap();
    let n = a.write_message(&[], &mut m).unwrap();
    b.read_message(&m[..n], &mut p).unwrap();
    (
        a.into_transport_mode().unwrap(),
        b.into_transport_mode().unwrap(),
    )
}

/// Seals each message as one length-prefixed Noise frame.
fn seal_all(state: &mut snow::TransportState, msgs: &[Vec<u8>]) -> Vec<u8> {
    let mut wire = Vec::new();
    for m in msgs {
        let mut frame = vec![0u8; m.len() + TAG_LEN];
        let n = state.write_message(m, &mut frame).unwrap();
        wire.extend_from_slice(&(n as u16).to_be_bytes());
        wire.extend_from_slice(&frame[..n]);
    }
    wire
}

fn read_all_noise(bytes: Vec<u8>, state: snow::TransportState) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut stream = NoiseStream::new(Cursor::new(bytes), state);
    let mut out = Vec::new();
    futures::executor::block_on(stream.read_to_end(&mut out))?;
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn noise_frame_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        match noise::parse_frame(&bytes) {
            Ok(Some(n)) => prop_assert!(n >= 2 + TAG_LEN && n <= bytes.len()),
            Ok(None) => {}
            Err(FrameError::TooShort(len)) => prop_assert!(len < TAG_LEN),
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    #[test]
    fn noise_stream_rejects_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 1..2000)) {
        let (_, b) = transport_pair();
        // Random bytes never authenticate (or are truncated); never a panic.
        prop_assert!(read_all_noise(bytes, b).is_err());
    }

    #[test]
    fn noise_stream_reads_valid_frames_then_rejects_a_bad_tail(
        msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..4),
        tail in proptest::collection::vec(any::<u8>(), 1..100),
    ) {
        // Sealed by the right session: read back exactly.
        let (mut a, b) = transport_pair();
        prop_assert_eq!(read_all_noise(seal_all(&mut a, &msgs), b).unwrap(), msgs.concat());
        // Sealed by another session: refused.
        let (mut a, _) = transport_pair();
        let (_, b) = transport_pair();
        prop_assert!(read_all_noise(seal_all(&mut a, &msgs), b).is_err());
        // Valid frames followed by junk: refused once the junk is reached.
        let (mut a, b) = transport_pair();
        let mut wire = seal_all(&mut a, &msgs);
        wire.extend_from_slice(&tail);
        prop_assert!(read_all_noise(wire, b).is_err());
    }

    #[test]
    fn rpc_prefix_refuses_oversize(prefix in any::<[u8; FRAME_PREFIX_LEN]>()) {
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        match rpc::decode_prefix(prefix) {
            Ok((_, n)) => prop_assert!(n == len && n <= MAX_MESSAGE && prefix[4] <= 1),
            Err(RpcError::TooLarge { len: l, .. }) => prop_assert!(l > MAX_MESSAGE && l == len),
            Err(RpcError::BadFrameKind(k)) => prop_assert!(k > 1 && len <= MAX_MESSAGE),
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    #[test]
    fn rpc_frames_and_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = rpc::decode_frame::<StreamHeader>(&bytes);
        let _ = rpc::decode_frame::<WireError>(&bytes);
        let _ = rpc::decode_frame::<Vec<String>>(&bytes);
        let _ = keynode_core::codec::decode_with_limit::<StreamHeader, 64>(&bytes);
        // And through a stream, frame after frame, until the end or an error.
        futures::executor::block_on(async {
            let peer = Keypair::from_secret_bytes([1; 32]).node_id();
            let mut s = RpcStream::new(futures::io::Cursor::new(bytes.clone()), peer);
            for _ in 0..64 {
                match s.recv::<(u64, String)>().await {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        });
    }

    #[test]
    fn rpc_frames_round_trip(version in any::<u16>(), ping in any::<bool>(), body in proptest::collection::vec(any::<u8>(), 0..1000)) {
        let header = StreamHeader { version, kind: if ping { StreamKind::Ping } else { StreamKind::Service } };
        let frame = rpc::encode_frame(FrameKind::Data, &header).unwrap();
        prop_assert_eq!(rpc::decode_frame::<StreamHeader>(&frame).unwrap(), header);
        let frame = rpc::encode_frame(FrameKind::Data, &body).unwrap();
        prop_assert_eq!(rpc::decode_frame::<Vec<u8>>(&frame).unwrap(), body);
    }
}

#[test]
fn oversize_frames_are_refused_before_reading_the_body() {
    let mut bytes = ((MAX_MESSAGE + 1) as u32).to_be_bytes().to_vec();
    bytes.push(0);
    futures::executor::block_on(async {
        let peer = Keypair::from_secret_bytes([1; 32]).node_id();
        let mut s = RpcStream::new(futures::io::Cursor::new(bytes), peer);
        assert!(matches!(
            s.recv::<Vec<u8>>().await,
            Err(RpcError::TooLarge { .. })
        ));
    });
    let too_big = vec![0u8; MAX_MESSAGE + 1];
    assert!(matches!(
        rpc::encode_frame(FrameKind::Data, serde_bytes::Bytes::new(&too_big)),
        Err(RpcError::TooLarge { .. })
    ));
}
