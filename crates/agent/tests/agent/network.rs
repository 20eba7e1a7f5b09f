//! Real agents in one process, talking over loopback TCP through the network.

use keynode_agent::SeedNode;
use keynode_agent::api::{ErrorKind, Request, Response};
use keynode_agent::testing::{call, knows};
use keynode_agent::{ClientError, Node, NodeConfig};

async fn start(dir: &tempfile::TempDir, name: &str, port: u16, seeds: Vec<SeedNode>) -> Node {
    let mut cfg = NodeConfig::new(dir.path().join(name), "pw");
    cfg.agent_port = port;
    cfg.seed_nodes = seeds;
    Node::start(cfg).await.expect("start")
}

fn seed(n: &Node) -> SeedNode {
    SeedNode {
        node: n.node_id(),
        host: "127.0.0.1".into(),
        port: n.listen_addr().port(),
    }
}

#[actix_rt::test]
async fn three_agents_ping_each_other_over_one_connection_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = start(&dir, "a", 0, vec![]).await;
    let b = start(&dir, "b", 0, vec![seed(&a)]).await;
    let c = start(&dir, "c", 0, vec![seed(&a), seed(&b)]).await;
    knows(&a, &b).await;
    knows(&a, &c).await;
    for (from, to) in [(&a, &b), (&a, &c), (&b, &a), (&c, &a), (&c, &b)] {
        for _ in 0..3 {
            let r = call(from, Request::NodesPing { node: to.node_id() })
                .await
                .expect("ping");
            assert!(matches!(r, Response::Pong { .. }), "{r:?}");
        }
    }
    // One connection per pair, reused by every ping.
    let Response::Connections(conns) = call(&a, Request::NodesConnections).await.expect("conns")
    else {
        panic!("no connections")
    };
    let peers: std::collections::BTreeSet<_> = conns.iter().map(|c| c.node_id).collect();
    assert_eq!(peers, [b.node_id(), c.node_id()].into_iter().collect());
    assert!(conns.len() <= 3, "pings opened new connections: {conns:?}");
    let Response::Nodes(book) = call(&c, Request::NodesList).await.expect("list") else {
        panic!("no list")
    };
    assert_eq!(book.len(), 2, "seed nodes are in the address book");
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[actix_rt::test]
async fn an_impostor_at_a_known_address_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = start(&dir, "a", 0, vec![]).await;
    let b = start(&dir, "b", 0, vec![]).await;
    let c = start(&dir, "c", 0, vec![]).await;
    // A believes B lives where C listens.
    call(
        &a,
        Request::NodesAdd {
            node: b.node_id(),
            host: "127.0.0.1".into(),
            port: c.listen_addr().port(),
        },
    )
    .await
    .expect("add");
    let r = call(&a, Request::NodesPing { node: b.node_id() }).await;
    match r {
        Err(ClientError::Api(e)) => {
            assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
            assert!(e.message.contains(&b.node_id().to_string()), "{e}");
            assert!(e.message.contains(&c.node_id().to_string()), "{e}");
        }
        other => panic!("impostor accepted: {other:?}"),
    }
    // Unknown nodes and unreachable ones are clear errors too.
    let stranger = keynode_core::Keypair::generate().node_id();
    let r = call(&a, Request::NodesPing { node: stranger }).await;
    assert!(
        matches!(r, Err(ClientError::Api(ref e)) if e.kind == ErrorKind::NotFound),
        "{r:?}"
    );
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[actix_rt::test]
async fn a_dropped_connection_is_reestablished_on_the_next_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = start(&dir, "a", 0, vec![]).await;
    let b = start(&dir, "b", 0, vec![]).await;
    let port = b.listen_addr().port();
    knows(&a, &b).await;
    call(&a, Request::NodesPing { node: b.node_id() })
        .await
        .expect("first ping");
    // B goes away; A's next call fails cleanly.
    let b_id = b.node_id();
    b.stop().await;
    let r = call(&a, Request::NodesPing { node: b_id }).await;
    assert!(
        matches!(r, Err(ClientError::Api(ref e)) if e.kind == ErrorKind::Unreachable),
        "{r:?}"
    );
    // B comes back on the same port with the same identity: A reconnects.
    let b = start(&dir, "b", port, vec![]).await;
    assert_eq!(b.node_id(), b_id);
    let r = call(&a, Request::NodesPing { node: b_id })
        .await
        .expect("ping after restart");
    assert!(matches!(r, Response::Pong { .. }));
    a.stop().await;
    b.stop().await;
}

#[actix_rt::test]
async fn a_moved_node_is_found_again_and_gets_what_was_queued_for_it() {
    use keynode_agent::testing::{TestNet, ok, trust};
    let net = TestNet::new();
    let a = net.node("a").await;
    let b = net.node("b").await;
    knows(&a, &b).await;
    knows(&b, &a).await;
    trust(&a, &b).await;
    trust(&b, &a).await;
    ok(
        &b,
        Request::VaultsCreate {
            name: keynode_core::VaultName::new("prod").unwrap(),
        },
    )
    .await;
    let a_id = a.node_id();
    let old_port = a.listen_addr().port();
    a.stop().await;
    // B shares while A is away: the VaultShare waits in B's outbox.
    ok(
        &b,
        Request::VaultsShare {
            vault: "prod".into(),
            to: a_id.into(),
        },
    )
    .await;
    // A comes back elsewhere (another port); nobody types its address.
    let a = net.node("a").await;
    assert_ne!(a.listen_addr().port(), old_port);
    let t = std::time::Instant::now();
    loop {
        let Response::Notifications(inbox) = ok(
            &a,
            Request::NotificationsInboxRead {
                unread: false,
                limit: None,
                newest_first: false,
            },
        )
        .await
        else {
            panic!("no inbox")
        };
        if inbox.iter().any(|n| n.kind == "vault_share") {
            break;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "the queued VaultShare never reached the moved node"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // B learned where A listens now, and dials it there.
    let Response::Nodes(nodes) = ok(&b, Request::NodesList).await else {
        panic!("no list")
    };
    let entry = nodes.iter().find(|n| n.node_id == a_id).unwrap();
    assert_eq!(
        entry.sources[0].address,
        format!("127.0.0.1:{}", a.listen_addr().port())
    );
    assert_eq!(entry.sources[0].source, "learned");
    b.network().disconnect(a_id);
    a.network().disconnect(b.node_id());
    ok(&b, Request::NodesPing { node: a_id }).await;
    a.stop().await;
    b.stop().await;
}

#[actix_rt::test]
async fn a_strangers_listen_address_is_ignored() {
    use keynode_agent::peer::{PeerRequest, PeerResponse};
    use keynode_agent::testing::{TestNet, ok};
    let net = TestNet::new();
    let b = net.node("b").await;
    let stranger = net.node("stranger").await;
    stranger
        .network()
        .book()
        .add(
            b.node_id(),
            keynode_net::PeerAddress::new("127.0.0.1", b.listen_addr().port()),
        )
        .unwrap();
    // The stranger claims a listening port; the answer is the same as to a
    // known node, and nothing is recorded.
    for port in [0u16, 4242] {
        let r: PeerResponse = stranger
            .network()
            .call(b.node_id(), &PeerRequest::ListenAt { port })
            .await
            .unwrap();
        assert!(matches!(r, PeerResponse::Noted), "{r:?}");
    }
    let Response::Nodes(nodes) = ok(&b, Request::NodesList).await else {
        panic!("no list")
    };
    assert!(
        nodes.iter().all(|n| n.node_id != stranger.node_id()),
        "{nodes:?}"
    );
    stranger.stop().await;
    b.stop().await;
}
