//! Hostile input: each attack only costs the attacker its own connection, and the
//! node keeps serving a good peer.

#[path = "support/cluster.rs"]
mod cluster;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{Echo, EchoReq, EchoResp, Node, config};
use keynode_core::Keypair;
use keynode_net::noise::{NOISE_PATTERN, PROLOGUE, STATIC_KEY_DOMAIN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server with a short handshake timeout and a good peer that knows it.
async fn server_and_good_peer(handshake_timeout: Duration) -> (Node, Node) {
    let mut cfg = config();
    cfg.handshake_timeout = handshake_timeout;
    let server = Node::start(cfg, Arc::new(Echo)).await;
    let good = Node::start(config(), Arc::new(Echo)).await;
    good.learn(&server);
    (server, good)
}

/// The good peer can still talk to the server (on a fresh connection).
async fn still_serves(server: &Node, good: &Node) {
    good.net.disconnect(server.id());
    let resp: EchoResp = good
        .net
        .call(server.id(), &EchoReq::Echo("still here".into()))
        .await
        .unwrap();
    assert_eq!(resp.text, "still here");
    assert_eq!(resp.caller, good.id());
}

/// Whether the server closes `sock` within `limit` (whatever it sends first).
async fn closed_within(sock: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut v = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut v);
    v
}

/// A by-hand Noise initiator (snow directly), for attackers that get past the
/// handshake. Returns the transport state after a complete XX handshake.
async fn handshake_by_hand(sock: &mut TcpStream, key: &Keypair) -> snow::TransportState {
    let builder = snow::Builder::new(NOISE_PATTERN.parse().unwrap());
    let static_key = builder.generate_keypair().unwrap();
    let mut hs = builder
        .prologue(PROLOGUE)
        .unwrap()
        .local_private_key(&static_key.private)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut msg = vec![0u8; 1024];
    let mut payload = vec![0u8; 1024];
    // -> e
    let n = hs.write_message(&[], &mut msg).unwrap();
    sock.write_all(&(n as u16).to_be_bytes()).await.unwrap();
    sock.write_all(&msg[..n]).await.unwrap();
    // <- e, ee, s, es, payload
    let mut len = [0u8; 2];
    sock.read_exact(&mut len).await.unwrap();
    let len = u16::from_be_bytes(len) as usize;
    sock.read_exact(&mut msg[..len]).await.unwrap();
    let n = hs.read_message(&msg[..len], &mut payload).unwrap();
    assert_eq!(n, 97, "payload: node id (32) ‖ 0x40 ‖ signature (64)");
    // -> s, se, payload = node id ‖ 0x40 ‖ sig(domain ‖ static key)
    let signed = [STATIC_KEY_DOMAIN, &static_key.public].concat();
    let mut mine = key.node_id().as_bytes().to_vec();
    mine.push(64);
    mine.extend_from_slice(key.sign(&signed).as_bytes());
    let n = hs.write_message(&mine, &mut msg).unwrap();
    sock.write_all(&(n as u16).to_be_bytes()).await.unwrap();
    sock.write_all(&msg[..n]).await.unwrap();
    hs.into_transport_mode().unwrap()
}

#[tokio::test]
async fn random_bytes_close_the_connection() {
    let (server, good) = server_and_good_peer(Duration::from_secs(5)).await;
    for _ in 0..5 {
        let mut sock = TcpStream::connect(server.addr()).await.unwrap();
        let _ = sock.write_all(&random_bytes(8192)).await;
        assert!(closed_within(&mut sock, Duration::from_secs(6)).await);
    }
    still_serves(&server, &good).await;
}

#[tokio::test]
async fn truncated_handshake_closes_the_connection() {
    let (server, good) = server_and_good_peer(Duration::from_millis(500)).await;
    // Half of a first message, then end of stream.
    let mut sock = TcpStream::connect(server.addr()).await.unwrap();
    sock.write_all(&[0, 32]).await.unwrap();
    sock.write_all(&[1u8; 16]).await.unwrap();
    sock.shutdown().await.unwrap();
    assert!(closed_within(&mut sock, Duration::from_millis(300)).await);
    // Half of a first message, then silence: the handshake timeout ends it.
    let mut sock = TcpStream::connect(server.addr()).await.unwrap();
    sock.write_all(&[0, 32]).await.unwrap();
    sock.write_all(&[1u8; 16]).await.unwrap();
    let start = Instant::now();
    assert!(closed_within(&mut sock, Duration::from_secs(3)).await);
    assert!(start.elapsed() >= Duration::from_millis(400));
    still_serves(&server, &good).await;
}

#[tokio::test]
async fn oversized_length_prefix_is_refused_at_once() {
    let (server, good) = server_and_good_peer(Duration::from_secs(10)).await;
    let mut sock = TcpStream::connect(server.addr()).await.unwrap();
    sock.write_all(&[0xff, 0xff]).await.unwrap();
    let _ = sock.write_all(&[0u8; 4096]).await;
    // Closed long before the handshake timeout: the size bound did it.
    assert!(closed_within(&mut sock, Duration::from_secs(1)).await);
    still_serves(&server, &good).await;
}

#[tokio::test]
async fn garbage_after_a_valid_handshake_closes_the_connection() {
    let (server, good) = server_and_good_peer(Duration::from_secs(5)).await;
    let attacker = Keypair::generate();

    // Frames that do not decrypt.
    let mut sock = TcpStream::connect(server.addr()).await.unwrap();
    let _noise = handshake_by_hand(&mut sock, &attacker).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(2), async {
            while server.net.connections().is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .is_ok(),
        "the handshake by hand is accepted"
    );
    assert_eq!(server.net.connections()[0].node_id, attacker.node_id());
    let mut junk = vec![0x00, 0x40];
    junk.extend(random_bytes(64));
    sock.write_all(&junk).await.unwrap();
    assert!(closed_within(&mut sock, Duration::from_secs(2)).await);

    // Frames that decrypt to garbage (not yamux).
    let mut sock = TcpStream::connect(server.addr()).await.unwrap();
    let mut noise = handshake_by_hand(&mut sock, &attacker).await;
    let mut frame = vec![0u8; 2 + 64 + 16];
    let n = noise
        .write_message(&random_bytes(64), &mut frame[2..])
        .unwrap();
    frame[..2].copy_from_slice(&(n as u16).to_be_bytes());
    sock.write_all(&frame).await.unwrap();
    assert!(closed_within(&mut sock, Duration::from_secs(2)).await);

    // A frame shorter than its tag.
    let mut sock = TcpStream::connect(server.addr()).await.unwrap();
    let _noise = handshake_by_hand(&mut sock, &attacker).await;
    sock.write_all(&[0, 3, 1, 2, 3]).await.unwrap();
    assert!(closed_within(&mut sock, Duration::from_secs(2)).await);

    assert!(
        cluster::eventually(Duration::from_secs(2), || server
            .net
            .connections()
            .iter()
            .all(|c| c.node_id != attacker.node_id()))
        .await
    );
    still_serves(&server, &good).await;
}

#[tokio::test]
async fn slowloris_does_not_block_other_handshakes() {
    let (server, good) = server_and_good_peer(Duration::from_millis(1500)).await;
    let mut sock = TcpStream::connect(server.addr()).await.unwrap();
    let dripping = tokio::spawn(async move {
        // A first message, one byte per second.
        let start = Instant::now();
        let mut msg = vec![0u8, 32];
        msg.extend([7u8; 32]);
        for b in msg {
            if sock.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let closed = closed_within(&mut sock, Duration::from_secs(3)).await;
        (closed, start.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Meanwhile a good peer handshakes and is served at once.
    let start = Instant::now();
    still_serves(&server, &good).await;
    assert!(start.elapsed() < Duration::from_millis(500));
    let (closed, after) = dripping.await.unwrap();
    assert!(closed, "the slow peer was cut off");
    assert!(after < Duration::from_secs(5), "by the handshake timeout");
}

#[tokio::test]
async fn flood_beyond_the_inbound_cap_is_turned_away() {
    let mut cfg = config();
    cfg.handshake_timeout = Duration::from_secs(2);
    cfg.max_inbound_connections = 8;
    let server = Node::start(cfg, Arc::new(Echo)).await;
    let good = Node::start(config(), Arc::new(Echo)).await;
    good.learn(&server);
    server.learn(&good);

    // Eight silent sockets take every inbound slot.
    let mut holders = Vec::new();
    for _ in 0..8 {
        holders.push(TcpStream::connect(server.addr()).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Beyond the cap, sockets are closed at once, without a handshake.
    for _ in 0..50 {
        let mut sock = TcpStream::connect(server.addr()).await.unwrap();
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_millis(500), sock.read(&mut buf)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
    }
    // Outbound connections are not capped: the server still reaches the good peer.
    server.net.ping(good.id()).await.unwrap();
    server.net.disconnect(good.id());
    // Once the silent sockets time out, the good peer gets in.
    for mut h in holders {
        assert!(closed_within(&mut h, Duration::from_secs(4)).await);
    }
    still_serves(&server, &good).await;
}
