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

/// A handshake timeout no test waits for: a socket closed under it was closed
/// for another reason (end of stream, a size bound, the inbound cap).
const NEVER: Duration = Duration::from_secs(3600);

/// How long a test waits for the event it expects before failing. A bound on
/// the test, not a claim about speed (that is what the benchmarks are for).
const PATIENCE: Duration = Duration::from_secs(30);

/// A server with the given handshake timeout and a good peer that knows it.
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
        assert!(closed_within(&mut sock, PATIENCE).await);
    }
    still_serves(&server, &good).await;
}

#[tokio::test]
async fn truncated_handshake_closes_the_connection() {
    // Half of a first message, then end of stream: the server closes, and
    // not by its handshake timeout (which nobody waits for).
    let (server, good) = server_and_good_peer(NEVER).await;
    let mut sock = TcpStream::connect(server.addr()).await.unwrap();
    sock.write_all(&[0, 32]).await.unwrap();
    sock.write_all(&[1u8; 16]).await.unwrap();
    sock.shutdown().await.unwrap();
    assert!(closed_within(&mut sock, PATIENCE).await);
    still_serves(&server, &good).await;
}

#[tokio::test]
async fn a_silent_handshake_is_ended_by_the_timeout() {
    let timeout = Duration::from_millis(500);
    let (server, good) = server_and_good_peer(timeout).await;
    // Half of a first message, then silence: the handshake timeout ends it,
    // and never before it is due (tokio timers do not fire early).
    let mut sock = TcpStream::connect(server.addr()).await.unwrap();
    sock.write_all(&[0, 32]).await.unwrap();
    sock.write_all(&[1u8; 16]).await.unwrap();
    let start = Instant::now();
    assert!(closed_within(&mut sock, PATIENCE).await);
    assert!(start.elapsed() >= timeout);
    still_serves(&server, &good).await;
}

#[tokio::test]
async fn oversized_length_prefix_is_refused_at_once() {
    let (server, good) = server_and_good_peer(NEVER).await;
    let mut sock = TcpStream::connect(server.addr()).await.unwrap();
    sock.write_all(&[0xff, 0xff]).await.unwrap();
    let _ = sock.write_all(&[0u8; 4096]).await;
    // Closed with the handshake timeout an hour away: the size bound did it.
    assert!(closed_within(&mut sock, PATIENCE).await);
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
        tokio::time::timeout(PATIENCE, async {
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
    assert!(closed_within(&mut sock, PATIENCE).await);

    // Frames that decrypt to garbage (not yamux).
    let mut sock = TcpStream::connect(server.addr()).await.unwrap();
    let mut noise = handshake_by_hand(&mut sock, &attacker).await;
    let mut frame = vec![0u8; 2 + 64 + 16];
    let n = noise
        .write_message(&random_bytes(64), &mut frame[2..])
        .unwrap();
    frame[..2].copy_from_slice(&(n as u16).to_be_bytes());
    sock.write_all(&frame).await.unwrap();
    assert!(closed_within(&mut sock, PATIENCE).await);

    // A frame shorter than its tag.
    let mut sock = TcpStream::connect(server.addr()).await.unwrap();
    let _noise = handshake_by_hand(&mut sock, &attacker).await;
    sock.write_all(&[0, 3, 1, 2, 3]).await.unwrap();
    assert!(closed_within(&mut sock, PATIENCE).await);

    assert!(
        cluster::eventually(PATIENCE, || server
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
    // Slow peers that never finish hold their handshakes open (the timeout is
    // an hour away) ...
    let (server, good) = server_and_good_peer(NEVER).await;
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut sock = TcpStream::connect(server.addr()).await.unwrap();
        sock.write_all(&[0, 32, 7, 7, 7]).await.unwrap();
        slow.push(sock);
    }
    // ... and meanwhile a good peer handshakes and is served.
    tokio::time::timeout(PATIENCE, still_serves(&server, &good))
        .await
        .expect("a good peer is served while slow handshakes hang");
    // The slow ones are still hanging, not refused: they cost only themselves.
    for sock in &mut slow {
        let mut buf = [0u8; 1];
        assert!(
            matches!(sock.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a slow handshake is still open"
        );
    }
}

#[tokio::test]
async fn flood_beyond_the_inbound_cap_is_turned_away() {
    let mut cfg = config();
    cfg.handshake_timeout = NEVER;
    cfg.max_inbound_connections = 8;
    let server = Node::start(cfg, Arc::new(Echo)).await;
    let good = Node::start(config(), Arc::new(Echo)).await;
    good.learn(&server);
    server.learn(&good);

    // Eight silent sockets take every inbound slot (the server accepts in
    // arrival order, so they are taken before the ones below come in).
    let mut holders = Vec::new();
    for _ in 0..8 {
        holders.push(TcpStream::connect(server.addr()).await.unwrap());
    }
    // Beyond the cap, sockets are closed without a handshake: with the
    // handshake timeout an hour away, only the cap closes them.
    for _ in 0..50 {
        let mut sock = TcpStream::connect(server.addr()).await.unwrap();
        assert!(closed_within(&mut sock, PATIENCE).await);
    }
    // Outbound connections are not capped: the server still reaches the good peer.
    server.net.ping(good.id()).await.unwrap();
    server.net.disconnect(good.id());
    // The silent sockets still hold their slots; once they go, the good peer
    // gets in.
    for h in &mut holders {
        let mut buf = [0u8; 1];
        assert!(
            matches!(h.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a holder keeps its slot"
        );
    }
    drop(holders);
    // The server frees the slots as it sees each close; the good peer retries
    // until one is free.
    let deadline = Instant::now() + PATIENCE;
    loop {
        good.net.disconnect(server.id());
        let r: Result<EchoResp, _> = good
            .net
            .call(server.id(), &EchoReq::Echo("in".into()))
            .await;
        match r {
            Ok(resp) => break assert_eq!(resp.caller, good.id()),
            Err(e) => assert!(Instant::now() < deadline, "never got in: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Echo, calling everyone but `known` a stranger.
struct Classed {
    known: std::sync::Mutex<Vec<keynode_core::NodeId>>,
}

impl keynode_net::Service for Classed {
    fn serve(
        &self,
        peer: keynode_core::NodeId,
        stream: keynode_net::RpcStream,
    ) -> futures::future::BoxFuture<'static, ()> {
        Echo.serve(peer, stream)
    }

    fn classify(
        &self,
        peer: keynode_core::NodeId,
    ) -> futures::future::BoxFuture<'static, keynode_net::PeerClass> {
        let known = self.known.lock().unwrap().contains(&peer);
        Box::pin(async move {
            if known {
                keynode_net::PeerClass::Known
            } else {
                keynode_net::PeerClass::Stranger
            }
        })
    }
}

#[tokio::test]
async fn strangers_get_few_streams_and_few_connections_and_known_peers_the_rest() {
    let mut cfg = config();
    cfg.max_streams_per_stranger = 2;
    cfg.max_inbound_strangers = 1;
    let service = Arc::new(Classed {
        known: std::sync::Mutex::new(Vec::new()),
    });
    let server = Node::start(cfg, service.clone()).await;
    let stranger = Node::start(config(), Arc::new(Echo)).await;
    let other = Node::start(config(), Arc::new(Echo)).await;
    let friend = Node::start(config(), Arc::new(Echo)).await;
    service.known.lock().unwrap().push(friend.id());
    for n in [&stranger, &other, &friend] {
        n.learn(&server);
    }

    // A stranger may hold two streams at once; a third is refused.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = stranger.net.open(server.id()).await.unwrap();
        // The header goes with the first frame. The request is served until
        // we drop the stream: a slot is held while its handler runs.
        s.send(&EchoReq::Hold).await.unwrap();
        held.push(s);
    }
    // A second stranger finds the strangers' connections taken.
    let second: Result<EchoResp, _> = other
        .net
        .call(server.id(), &EchoReq::Echo("me too".into()))
        .await;
    assert!(second.is_err(), "a second stranger got a connection");

    // A third stream is reset; the two held streams and the connection live on.
    let third: Result<EchoResp, _> = stranger
        .net
        .call(server.id(), &EchoReq::Echo("a third".into()))
        .await;
    assert!(third.is_err(), "a stranger's third stream was served");
    // Our own streams to the stranger are not its to spend.
    server.net.ping(stranger.id()).await.unwrap();
    let before = server.net.connections();
    assert_eq!(before.len(), 1);
    drop(held.pop());
    // A slot freed, the stranger is served again, on the same connection.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r: Result<EchoResp, _> = stranger
            .net
            .call(server.id(), &EchoReq::Echo("again".into()))
            .await;
        match r {
            Ok(resp) => break assert_eq!(resp.caller, stranger.id()),
            Err(e) => assert!(Instant::now() < deadline, "never served again: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = server.net.connections();
    assert_eq!(after.len(), 1, "the stranger lost its connection");
    assert_eq!(
        (after[0].remote_addr, after[0].established_ms),
        (before[0].remote_addr, before[0].established_ms),
        "the stranger was served again on a new connection"
    );

    // Once the service knows it, the same connection gets a known peer's streams.
    // (It is asked again with the stranger's next stream.)
    service.known.lock().unwrap().push(stranger.id());
    let r: EchoResp = stranger
        .net
        .call(server.id(), &EchoReq::Echo("known now".into()))
        .await
        .unwrap();
    assert_eq!(r.caller, stranger.id());
    let calls = (0..8).map(|i| {
        let net = stranger.net.clone();
        let id = server.id();
        async move {
            net.call::<_, EchoResp>(id, &EchoReq::Echo(format!("{i}")))
                .await
        }
    });
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap().caller, stranger.id());
    }
    drop(held);

    // A known peer is served, with many streams at once.
    let calls = (0..8).map(|i| {
        let net = friend.net.clone();
        let id = server.id();
        async move {
            net.call::<_, EchoResp>(id, &EchoReq::Echo(format!("{i}")))
                .await
        }
    });
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap().caller, friend.id());
    }
}
