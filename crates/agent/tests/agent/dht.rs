//! Finding and reaching nodes by NodeId alone, with real agents: a local
//! Mainline testnet stands in for the public DHT, nobody types an address,
//! and a node without a listener is reached through its relay.

use std::time::{Duration, Instant};

use keynode_agent::api::{Request, Response};
use keynode_agent::testing::{TestNet, arrives, ok, pulled, read, trust, write};
use keynode_agent::{DhtSettings, Node, NodeConfig, RelayAddress, RelayLimits};
use keynode_core::VaultName;

fn testnet() -> mainline::Testnet {
    mainline::Testnet::builder(5)
        .build()
        .expect("a local DHT testnet")
}

fn on_dht(mut cfg: NodeConfig, dht: &mainline::Testnet) -> NodeConfig {
    cfg.dht = Some(DhtSettings {
        bootstrap: Some(dht.bootstrap.clone()),
        port: None,
    });
    cfg
}

async fn start(cfg: NodeConfig) -> Node {
    Node::start(cfg).await.expect("start")
}

/// The configuration of a node without a listener, reserving at `relay`.
fn behind(mut cfg: NodeConfig, relay: &Node) -> NodeConfig {
    cfg.no_listen = true;
    cfg.relays = vec![RelayAddress {
        node: relay.node_id(),
        address: keynode_net::PeerAddress::new("127.0.0.1", relay.listen_addr().port()),
    }];
    cfg
}

/// Waits until `node` holds a reservation at `relay`.
async fn reserved(node: &Node, relay: &Node) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.network().reserved_relays().contains(&relay.node_id()) {
        assert!(Instant::now() < deadline, "no reservation at the relay");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `from` finds `node`'s record on the DHT.
async fn published(from: &Node, node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Response::Found(f) = ok(
            from,
            Request::NodesFind {
                node: node.node_id(),
            },
        )
        .await
            && f.dht == "found"
        {
            return;
        }
        assert!(Instant::now() < deadline, "the record never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create(node: &Node, name: &str) {
    ok(
        node,
        Request::VaultsCreate {
            name: VaultName::new(name).unwrap(),
        },
    )
    .await;
}

async fn share(node: &Node, vault: &str, with: &Node) {
    ok(
        node,
        Request::VaultsShare {
            vault: vault.into(),
            to: with.node_id().into(),
        },
    )
    .await;
}

async fn clone(node: &Node, vault: &str, from: &Node) -> String {
    match ok(
        node,
        Request::VaultsClone {
            vault: vault.into(),
            node: from.node_id(),
            follow: false,
        },
    )
    .await
    {
        Response::Vault(v) => v.name.to_string(),
        other => panic!("{other:?}"),
    }
}

#[actix_rt::test]
async fn nodes_known_only_by_id_share_clone_and_pull_through_the_dht() {
    let dht = tokio::task::spawn_blocking(testnet).await.unwrap();
    let net = TestNet::new();
    let a = start(on_dht(net.config("a"), &dht)).await;
    let b = start(on_dht(net.config("b"), &dht)).await;
    published(&a, &b).await;
    published(&b, &a).await;
    // Nobody typed an address: each knows the other's NodeId only.
    trust(&a, &b).await;
    trust(&b, &a).await;
    create(&b, "prod").await;
    write(&b, "prod", "db", b"one").await.unwrap();
    share(&b, "prod", &a).await;
    arrives(&a, "vault_share", Duration::from_secs(20)).await;
    let name = clone(&a, "prod", &b).await;
    assert_eq!(read(&a, &name, "db").await, b"one");
    write(&b, "prod", "db", b"two").await.unwrap();
    assert_eq!(pulled(&a, &name).await, 1);
    assert_eq!(read(&a, &name, "db").await, b"two");
    // The book now holds what the DHT gave, as such.
    let Response::Nodes(nodes) = ok(&a, Request::NodesList).await else {
        panic!("no list")
    };
    let entry = nodes.iter().find(|n| n.node_id == b.node_id()).unwrap();
    assert!(
        entry
            .sources
            .iter()
            .any(|s| s.source == "dht" && s.last_ok_ms.is_some()),
        "{entry:?}"
    );
    let Response::Found(found) = ok(&a, Request::NodesFind { node: b.node_id() }).await else {
        panic!("no find")
    };
    let here = format!("127.0.0.1:{}", b.listen_addr().port());
    assert!(
        found.addresses.iter().any(|x| x.address == here),
        "{found:?}"
    );
    a.stop().await;
    b.stop().await;
}

#[actix_rt::test]
async fn a_moved_node_is_found_on_the_dht_with_what_was_queued_for_it() {
    let dht = tokio::task::spawn_blocking(testnet).await.unwrap();
    let net = TestNet::new();
    let quiet = |name: &str| {
        let mut cfg = on_dht(net.config(name), &dht);
        // Only the DHT may tell B where A went.
        cfg.announce = false;
        cfg
    };
    let a = start(quiet("a")).await;
    let b = start(quiet("b")).await;
    published(&b, &a).await;
    trust(&a, &b).await;
    trust(&b, &a).await;
    create(&b, "prod").await;
    let old_port = a.listen_addr().port();
    let a_id = a.node_id();
    a.stop().await;
    ok(
        &b,
        Request::VaultsShare {
            vault: "prod".into(),
            to: a_id.into(),
        },
    )
    .await;
    let a = start(quiet("a")).await;
    assert_ne!(a.listen_addr().port(), old_port);
    let t = Instant::now();
    // B's outbox retries: the old address fails, the DHT gives the new one.
    arrives(&a, "vault_share", Duration::from_secs(60)).await;
    eprintln!(
        "the queued share reached the moved node after {:?}",
        t.elapsed()
    );
    let name = clone(&a, "prod", &b).await;
    assert_eq!(name, "prod");
    a.stop().await;
    b.stop().await;
}

#[actix_rt::test]
async fn a_node_without_a_listener_shares_and_is_shared_with_through_its_relay() {
    let dht = tokio::task::spawn_blocking(testnet).await.unwrap();
    let net = TestNet::new();
    let mut rc = net.config("relay");
    rc.relay_serve = Some(RelayLimits::default());
    let relay = start(rc).await;
    let hidden = start(behind(on_dht(net.config("hidden"), &dht), &relay)).await;
    let peer = start(on_dht(net.config("peer"), &dht)).await;
    assert_eq!(hidden.listen_addr().port(), 0);
    published(&peer, &hidden).await;
    reserved(&hidden, &relay).await;
    trust(&peer, &hidden).await;
    trust(&hidden, &peer).await;

    // The peer shares with the hidden node: the VaultShare goes through
    // the relay.
    create(&peer, "theirs").await;
    share(&peer, "theirs", &hidden).await;
    arrives(&hidden, "vault_share", Duration::from_secs(20)).await;
    let relayed = |n: &Node, other: &Node| {
        n.network()
            .connections()
            .iter()
            .any(|c| c.node_id == other.node_id() && c.relay == Some(relay.node_id()))
    };
    assert!(relayed(&peer, &hidden));

    // The hidden node shares; the peer clones and pulls through the relay.
    create(&hidden, "mine").await;
    write(&hidden, "mine", "k", b"v1").await.unwrap();
    share(&hidden, "mine", &peer).await;
    arrives(&peer, "vault_share", Duration::from_secs(20)).await;
    peer.network().disconnect(hidden.node_id());
    hidden.network().disconnect(peer.node_id());
    let name = clone(&peer, "mine", &hidden).await;
    assert!(relayed(&peer, &hidden));
    assert_eq!(read(&peer, &name, "k").await, b"v1");
    write(&hidden, "mine", "k", b"v2").await.unwrap();
    assert_eq!(pulled(&peer, &name).await, 1);
    assert_eq!(read(&peer, &name, "k").await, b"v2");
    let Response::Connections(conns) = ok(&peer, Request::NodesConnections).await else {
        panic!("no connections")
    };
    let c = conns
        .iter()
        .find(|c| c.node_id == hidden.node_id())
        .unwrap();
    assert_eq!(c.relay, Some(relay.node_id()));
    for n in [hidden, peer, relay] {
        n.stop().await;
    }
}

#[actix_rt::test]
async fn a_renewed_nodes_old_record_names_its_new_id() {
    let dht = tokio::task::spawn_blocking(testnet).await.unwrap();
    let net = TestNet::new();
    let a = start(on_dht(net.config("a"), &dht)).await;
    let b = start(on_dht(net.config("b"), &dht)).await;
    published(&b, &a).await;
    let old = a.node_id();
    a.stop().await;
    let path = net.path().join("a");
    let renewed = tokio::task::spawn_blocking(move || {
        keynode_agent::renewal::renew(&keynode_agent::NodePaths::new(path), b"pw")
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("renew: {e}"));
    let a = start(on_dht(net.config("a"), &dht)).await;
    assert_eq!(a.node_id(), renewed.new);
    // B missed the rotation; looking the old NodeId up tells it where the
    // node went, vouched for by both keys.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let Response::Found(f) = ok(&b, Request::NodesFind { node: old }).await else {
            panic!("no find")
        };
        if f.renewed_to == Some(renewed.new) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old record never named the new id: {f:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.stop().await;
    b.stop().await;
}

#[actix_rt::test]
async fn a_relay_refuses_a_circuit_over_its_limit_with_a_clear_error() {
    let dht = tokio::task::spawn_blocking(testnet).await.unwrap();
    let net = TestNet::new();
    let mut rc = net.config("relay");
    rc.relay_serve = Some(RelayLimits {
        max_circuits: 1,
        ..RelayLimits::default()
    });
    let relay = start(rc).await;
    let hidden = start(behind(on_dht(net.config("hidden"), &dht), &relay)).await;
    let first = start(on_dht(net.config("first"), &dht)).await;
    let second = start(on_dht(net.config("second"), &dht)).await;
    published(&first, &hidden).await;
    published(&second, &hidden).await;
    reserved(&hidden, &relay).await;
    ok(
        &first,
        Request::NodesPing {
            node: hidden.node_id(),
        },
    )
    .await;
    // The relay's one circuit is taken: the second peer is refused, clearly.
    let refused = keynode_agent::testing::call(
        &second,
        Request::NodesPing {
            node: hidden.node_id(),
        },
    )
    .await
    .expect_err("a second circuit");
    let msg = refused.to_string();
    assert!(msg.contains("relay busy"), "{msg}");
    // The first circuit still works.
    ok(
        &first,
        Request::NodesPing {
            node: hidden.node_id(),
        },
    )
    .await;
    for n in [first, second, hidden, relay] {
        n.stop().await;
    }
}
