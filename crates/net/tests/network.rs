//! Several real nodes on loopback TCP: pings, impostors, concurrency, errors,
//! reconnection, connection reuse and the actor.

#[path = "support/cluster.rs"]
mod cluster;

use std::sync::Arc;
use std::time::Duration;

use cluster::{Echo, EchoReq, EchoResp, Node, config, eventually};
use keynode_core::Keypair;
use keynode_net::actor::{AddNode, Connections, ListNodes, Ping};
use keynode_net::{
    AddressBook, Direction, MemoryTransport, NetError, Network, NetworkManager, NoService,
    PeerAddress, WireErrorKind,
};

#[tokio::test]
async fn ping_between_two_and_three_nodes() {
    let a = Node::start(config(), Arc::new(Echo)).await;
    let b = Node::start(config(), Arc::new(Echo)).await;
    let c = Node::start(config(), Arc::new(Echo)).await;
    a.learn(&b);
    a.learn(&c);
    b.learn(&c);
    let rtt = a.net.ping(b.id()).await.unwrap();
    assert!(rtt < Duration::from_secs(1));
    a.net.ping(c.id()).await.unwrap();
    b.net.ping(c.id()).await.unwrap();
    // Answering over the inbound connection needs no address.
    c.net.ping(a.id()).await.unwrap();
    c.net.ping(b.id()).await.unwrap();

    let conns = a.net.connections();
    assert_eq!(conns.len(), 2);
    assert!(conns.iter().all(|c| c.direction == Direction::Outbound));
    let on_c = c.net.connections();
    assert_eq!(on_c.len(), 2);
    assert!(on_c.iter().all(|c| c.direction == Direction::Inbound));
    assert!(on_c.iter().any(|i| i.node_id == a.id()));
}

#[tokio::test]
async fn impostor_is_refused() {
    let a = Node::start(config(), Arc::new(Echo)).await;
    let y = Node::start(config(), Arc::new(Echo)).await;
    let x = Keypair::generate().node_id();
    // The book says X lives where Y answers.
    a.learn_at(x, y.addr());
    let err = a.net.ping(x).await.unwrap_err();
    assert!(
        matches!(err, NetError::UnexpectedPeer { expected, got } if expected == x && got == y.id()),
        "{err:?}"
    );
    let err = a
        .net
        .call::<_, EchoResp>(x, &EchoReq::Echo("secret".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::UnexpectedPeer { .. }));
    assert!(a.net.connections().is_empty());
    // Y never learns who A is: in XX the dialer's identity comes in the third
    // message, which A never sent (it aborted on reading Y's second), so Y
    // cannot have a connection to A, now or later.
    assert!(y.net.connections().is_empty());
    // Unknown nodes have no address.
    let nobody = Keypair::generate().node_id();
    assert!(matches!(a.net.ping(nobody).await, Err(NetError::NoAddress(n)) if n == nobody));
}

#[tokio::test]
async fn hundred_concurrent_calls_share_one_connection() {
    let a = Node::start(config(), Arc::new(Echo)).await;
    let b = Node::start(config(), Arc::new(Echo)).await;
    a.learn(&b);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let net = a.net.clone();
        let peer = b.id();
        tasks.push(tokio::spawn(async move {
            let req = if i % 10 == 0 {
                EchoReq::Sleep(50)
            } else {
                EchoReq::Echo(format!("req {i}"))
            };
            (i, net.call::<_, EchoResp>(peer, &req).await)
        }));
    }
    for t in tasks {
        let (i, resp) = t.await.unwrap();
        let resp = resp.unwrap();
        assert_eq!(resp.caller, a.id(), "the caller is the authenticated node");
        if i % 10 != 0 {
            assert_eq!(resp.text, format!("req {i}"));
        }
    }
    assert_eq!(a.net.connections().len(), 1);
    assert_eq!(b.net.connections().len(), 1);
    // Every stream is gone once the calls are done.
    assert!(
        eventually(Duration::from_secs(2), || a.net.connections()[0].streams
            == 0)
        .await
    );
}

#[tokio::test]
async fn remote_errors_cross_the_wire_typed() {
    let a = Node::start(config(), Arc::new(Echo)).await;
    let b = Node::start(config(), Arc::new(Echo)).await;
    let n = Node::start(config(), Arc::new(NoService)).await;
    a.learn(&b);
    a.learn(&n);
    let err = a
        .net
        .call::<_, EchoResp>(b.id(), &EchoReq::Fail)
        .await
        .unwrap_err();
    match err {
        NetError::Remote(e) => {
            assert_eq!(e.kind, WireErrorKind::NotFound);
            assert_eq!(e.message, "no such thing");
        }
        other => panic!("{other:?}"),
    }
    let err = a
        .net
        .call::<_, EchoResp>(n.id(), &EchoReq::Echo("x".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Remote(e) if e.kind == WireErrorKind::Unsupported));
}

#[tokio::test]
async fn request_timeout_is_enforced() {
    let mut cfg = config();
    cfg.request_timeout = Duration::from_millis(200);
    let a = Node::start(cfg, Arc::new(Echo)).await;
    let b = Node::start(config(), Arc::new(Echo)).await;
    a.learn(&b);
    let err = a
        .net
        .call::<_, EchoResp>(b.id(), &EchoReq::Sleep(2_000))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Timeout { .. }), "{err:?}");
    // The connection is still good.
    a.net.ping(b.id()).await.unwrap();
}

#[tokio::test]
async fn dropped_connection_is_redialed() {
    let a = Node::start(config(), Arc::new(Echo)).await;
    let b = Node::start(config(), Arc::new(Echo)).await;
    a.learn(&b);
    let echo = EchoReq::Echo("one".into());
    a.net.call::<_, EchoResp>(b.id(), &echo).await.unwrap();
    let first = a.net.connections()[0].clone();

    // The test hook: close it locally.
    a.net.disconnect(b.id());
    assert!(a.net.connections().is_empty());
    a.net.call::<_, EchoResp>(b.id(), &echo).await.unwrap();
    assert_eq!(a.net.connections().len(), 1);

    // Kill the peer and restart it on the same port.
    let b2 = b.restart(Arc::new(Echo)).await;
    assert_eq!(b2.addr(), b.addr());
    let resp: EchoResp = a.net.call(b2.id(), &echo).await.unwrap();
    assert_eq!(resp.text, "one");
    let conns = a.net.connections();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].node_id, first.node_id);
}

#[tokio::test]
async fn simultaneous_dials_settle_on_one_connection() {
    let a = Node::start(config(), Arc::new(Echo)).await;
    let b = Node::start(config(), Arc::new(Echo)).await;
    a.learn(&b);
    b.learn(&a);
    let echo = EchoReq::Echo("x".into());
    let (ra, rb) = tokio::join!(
        a.net.call::<_, EchoResp>(b.id(), &echo),
        b.net.call::<_, EchoResp>(a.id(), &echo),
    );
    ra.unwrap();
    rb.unwrap();
    // Whether one or two connections were made, both ends end up with the same
    // single one.
    assert!(
        eventually(Duration::from_secs(5), || a.net.connections().len() == 1
            && b.net.connections().len() == 1)
        .await
    );
    for _ in 0..10 {
        a.net.call::<_, EchoResp>(b.id(), &echo).await.unwrap();
        b.net.call::<_, EchoResp>(a.id(), &echo).await.unwrap();
    }
    assert_eq!(a.net.connections().len(), 1);
    assert_eq!(b.net.connections().len(), 1);
}

#[tokio::test]
async fn idle_connections_close_and_keepalive_pings_flow() {
    let mut cfg = config();
    cfg.idle_timeout = Duration::from_millis(600);
    cfg.keepalive_interval = Duration::from_millis(100);
    let a = Node::start(cfg.clone(), Arc::new(Echo)).await;
    let b = Node::start(cfg, Arc::new(Echo)).await;
    a.learn(&b);
    // A long-running stream keeps the connection open past the idle timeout,
    // with keep-alive pings flowing meanwhile.
    let resp: EchoResp = a.net.call(b.id(), &EchoReq::Sleep(900)).await.unwrap();
    assert_eq!(resp.text, "slept");
    assert_eq!(a.net.connections().len(), 1);
    // Then, unused, it is closed on both ends.
    assert!(
        eventually(Duration::from_secs(3), || a.net.connections().is_empty()
            && b.net.connections().is_empty())
        .await
    );
    // And the next call dials again.
    a.net.ping(b.id()).await.unwrap();
}

#[tokio::test]
async fn shutdown_refuses_requests_and_frees_the_port() {
    let a = Node::start(config(), Arc::new(Echo)).await;
    let b = Node::start(config(), Arc::new(Echo)).await;
    a.learn(&b);
    a.net.ping(b.id()).await.unwrap();
    a.net.shutdown().await;
    assert!(matches!(a.net.ping(b.id()).await, Err(NetError::Shutdown)));
    assert!(eventually(Duration::from_secs(2), || b.net.connections().is_empty()).await);
    let again = a.restart(Arc::new(Echo)).await;
    assert_eq!(again.addr(), a.addr());
}

#[tokio::test]
async fn memory_transport_runs_the_same_stack() {
    let net = MemoryTransport::new();
    let mut nodes = Vec::new();
    for i in 0..2u8 {
        let (tmp, env) = cluster::env();
        let book = AddressBook::open(env).unwrap();
        let mut cfg = config();
        cfg.listen = format!("10.0.0.{}:4000", i + 1).parse().unwrap();
        let n = Network::start(
            Arc::new(Keypair::generate()),
            cfg,
            net.clone(),
            book,
            Arc::new(Echo),
        )
        .await
        .unwrap();
        nodes.push((tmp, n));
    }
    let (a, b) = (&nodes[0].1, &nodes[1].1);
    a.book()
        .add(b.node_id(), PeerAddress::new("10.0.0.2", 4000))
        .unwrap();
    let resp: EchoResp = a
        .call(b.node_id(), &EchoReq::Echo("in memory".into()))
        .await
        .unwrap();
    assert_eq!(resp.caller, a.node_id());
    a.ping(b.node_id()).await.unwrap();
}

#[actix_rt::test]
async fn network_manager_answers_typed_messages() {
    use actix::Actor;
    let a = Node::start(config(), Arc::new(Echo)).await;
    let b = Node::start(config(), Arc::new(Echo)).await;
    let manager = NetworkManager::new(a.net.clone()).start();
    manager
        .send(AddNode {
            node: b.id(),
            addr: PeerAddress::from(b.addr()),
        })
        .await
        .unwrap()
        .unwrap();
    let nodes = manager.send(ListNodes).await.unwrap().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].0, b.id());
    assert_eq!(nodes[0].1[0].1.source, keynode_net::AddressSource::Typed);
    assert_eq!(nodes[0].1[0].1.last_ok_ms, None);
    manager.send(Ping { node: b.id() }).await.unwrap().unwrap();
    // The dial that served the ping is remembered as the address working.
    let nodes = manager.send(ListNodes).await.unwrap().unwrap();
    assert!(nodes[0].1[0].1.last_ok_ms.is_some());
    let conns = manager.send(Connections).await.unwrap();
    assert_eq!(conns.len(), 1);
    let mut stream = manager
        .send(keynode_net::actor::Open { node: b.id() })
        .await
        .unwrap()
        .unwrap();
    stream.send(&EchoReq::Echo("actor".into())).await.unwrap();
    let resp: EchoResp = stream.recv().await.unwrap().unwrap();
    assert_eq!(resp.text, "actor");
}

/// Forwards TCP between a client and `to` until `hole` is set; from then on it
/// keeps both sockets open and forwards nothing (a path that died without a
/// word: no FIN, no RST, as a NAT that forgot the flow).
async fn black_hole_proxy(
    to: std::net::SocketAddr,
    hole: Arc<std::sync::atomic::AtomicBool>,
) -> std::net::SocketAddr {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let server = tokio::net::TcpStream::connect(to).await.unwrap();
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            for (mut r, mut w) in [(cr, sw), (sr, cw)].map(|(r, w)| (r, w)) {
                let hole = hole.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match r.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if hole.load(Ordering::Acquire) {
                            // Swallow, and hold the socket open.
                            continue;
                        }
                        if w.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    addr
}

/// A server, and a client reaching it through a proxy that can swallow
/// everything (`hole`), with a 200 ms silence probe and neither keep-alive
/// nor request timeout to find a dead path soon; connected.
async fn behind_a_hole() -> (Node, Node, Arc<std::sync::atomic::AtomicBool>) {
    let hole = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = Node::start(config(), Arc::new(Echo)).await;
    let mut cfg = config();
    cfg.silence_probe = Duration::from_millis(200);
    // Neither the keep-alive nor the request timeout would find it soon.
    cfg.keepalive_interval = Duration::from_secs(600);
    cfg.request_timeout = Duration::from_secs(600);
    let client = Node::start(cfg, Arc::new(Echo)).await;
    let proxy = black_hole_proxy(server.addr(), hole.clone()).await;
    client.learn_at(server.id(), proxy);
    client.net.ping(server.id()).await.unwrap();
    (server, client, hole)
}

#[tokio::test]
async fn a_connection_that_goes_silent_under_a_waiting_stream_is_given_up() {
    let (server, client, hole) = behind_a_hole().await;

    // A request is waiting for its answer when the path dies.
    let mut stream = client.net.open(server.id()).await.unwrap();
    stream.send(&EchoReq::Sleep(300_000)).await.unwrap();
    hole.store(true, std::sync::atomic::Ordering::Release);
    let waited = tokio::time::timeout(Duration::from_secs(10), stream.recv::<EchoResp>()).await;
    let answer = waited.expect("the stream hangs on a dead connection");
    assert!(!matches!(answer, Ok(Some(_))), "{answer:?}");
    // The connection is gone; the next call dials again and, the path
    // mended, is served.
    assert!(client.net.connections().is_empty());
    hole.store(false, std::sync::atomic::Ordering::Release);
    let r: EchoResp = client
        .net
        .call(server.id(), &EchoReq::Echo("back".into()))
        .await
        .unwrap();
    assert_eq!(r.text, "back");
}

#[tokio::test]
async fn a_quiet_stream_does_not_make_its_connection_probe_the_peer() {
    let (server, client, hole) = behind_a_hole().await;

    // A subscription waits, marked quiet, and the path dies: only the
    // keep-alive (600 s here) would notice, so the stream keeps waiting
    // through many silence-probe periods and the connection stays.
    let mut stream = client.net.open(server.id()).await.unwrap();
    stream.send(&EchoReq::Sleep(300_000)).await.unwrap();
    stream.quiet();
    hole.store(true, std::sync::atomic::Ordering::Release);
    let waited = tokio::time::timeout(Duration::from_secs(2), stream.recv::<EchoResp>()).await;
    assert!(waited.is_err(), "the quiet stream ended: {waited:?}");
    assert_eq!(client.net.connections().len(), 1);
}
