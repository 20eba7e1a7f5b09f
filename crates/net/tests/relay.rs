//! Finding nodes by NodeId and reaching them through relays, with real nodes
//! on loopback TCP and an in-memory directory (the DHT directory itself is
//! tested against a local Mainline testnet in `keynode_net::dht`).

#[path = "support/cluster.rs"]
mod cluster;

use std::sync::Arc;
use std::time::Duration;

use cluster::{Echo, EchoReq, EchoResp, Node, config, eventually};
use keynode_net::{
    AddressSource, MemoryDirectory, NetConfig, NetError, NoService, PeerAddress, RelayAddress,
    RelayLimits, WireErrorKind,
};

async fn echo(from: &Node, to: &Node, text: &str) -> Result<EchoResp, NetError> {
    from.net
        .call::<_, EchoResp>(to.id(), &EchoReq::Echo(text.into()))
        .await
}

fn relay_of(node: &Node) -> RelayAddress {
    RelayAddress {
        node: node.id(),
        address: PeerAddress::from(node.addr()),
    }
}

fn relay_config(limits: RelayLimits) -> NetConfig {
    NetConfig {
        relay_serve: Some(limits),
        ..config()
    }
}

fn behind(relay: &Node) -> NetConfig {
    NetConfig {
        no_listen: true,
        relays: vec![relay_of(relay)],
        ..config()
    }
}

async fn reserved(node: &Node, relay: &Node) -> bool {
    eventually(Duration::from_secs(10), || {
        node.net.reserved_relays().contains(&relay.id())
    })
    .await
}

#[tokio::test]
async fn a_node_is_found_through_the_directory_and_its_address_kept() {
    let dir = MemoryDirectory::new();
    let a = Node::start_listed(config(), Arc::new(Echo), &dir).await;
    let b = Node::start_listed(config(), Arc::new(Echo), &dir).await;
    assert!(eventually(Duration::from_secs(5), || dir.get(a.id()).is_some()).await);
    assert_eq!(
        dir.get(a.id()).unwrap().addresses,
        vec![PeerAddress::from(a.addr())]
    );
    // b was told nothing about a but its NodeId.
    assert!(b.net.book().get(a.id()).unwrap().is_empty());
    assert_eq!(echo(&b, &a, "hi").await.unwrap().text, "hi");
    // What worked is in the book, marked as found on the DHT.
    assert!(
        eventually(Duration::from_secs(5), || {
            b.net
                .book()
                .info(a.id())
                .unwrap()
                .iter()
                .any(|(addr, info)| {
                    *addr == PeerAddress::from(a.addr())
                        && info.source == AddressSource::Dht
                        && info.last_ok_ms.is_some()
                })
        })
        .await
    );
    // A node nobody published is still "no address".
    let c = Node::start(config(), Arc::new(Echo)).await;
    assert!(matches!(
        echo(&b, &c, "x").await,
        Err(NetError::NoAddress(id)) if id == c.id()
    ));
}

#[tokio::test]
async fn a_moved_node_is_followed_through_the_directory() {
    let dir = MemoryDirectory::new();
    let mut a = Node::start_listed(config(), Arc::new(Echo), &dir).await;
    let b = Node::start_listed(config(), Arc::new(Echo), &dir).await;
    b.learn(&a);
    echo(&b, &a, "before").await.unwrap();
    let old = a.addr();
    // a comes back on another port with the same key and state.
    a.net.shutdown().await;
    let key = a.key.clone();
    let env = a.env.clone();
    let context = keynode_net::NetContext {
        discovery: Some(dir.discovery(key.node_id())),
        ..keynode_net::NetContext::default()
    };
    a = Node::start_with(
        Arc::new(tempfile::tempdir().unwrap()),
        env,
        key,
        config(),
        Arc::new(Echo),
        context,
    )
    .await;
    assert_ne!(a.addr(), old);
    assert!(
        eventually(Duration::from_secs(5), || {
            dir.get(a.id()).unwrap().addresses == vec![PeerAddress::from(a.addr())]
        })
        .await
    );
    b.net.disconnect(a.id());
    // b still has only the old address: the dial fails there, the
    // directory gives the new one.
    assert_eq!(echo(&b, &a, "after").await.unwrap().text, "after");
    let book = b.net.book().get(a.id()).unwrap();
    assert!(book.contains(&PeerAddress::from(a.addr())));
}

#[tokio::test]
async fn a_node_without_a_listener_is_reached_through_its_relay() {
    let dir = MemoryDirectory::new();
    let relay = Node::start(relay_config(RelayLimits::default()), Arc::new(NoService)).await;
    let hidden = Node::start_listed(behind(&relay), Arc::new(Echo), &dir).await;
    assert_eq!(hidden.addr().port(), 0);
    assert!(reserved(&hidden, &relay).await);
    let record = dir.get(hidden.id()).unwrap();
    assert!(record.addresses.is_empty());
    assert_eq!(record.relays, vec![relay_of(&relay)]);

    let dialer = Node::start_listed(config(), Arc::new(Echo), &dir).await;
    let resp = echo(&dialer, &hidden, "through").await.unwrap();
    assert_eq!(resp.text, "through");
    assert_eq!(resp.caller, dialer.id());
    let conn = dialer
        .net
        .connections()
        .into_iter()
        .find(|c| c.node_id == hidden.id())
        .unwrap();
    assert_eq!(conn.relay, Some(relay.id()));
    // The hidden node sees the dialer (proved end to end), not the relay.
    let seen = hidden.net.connections();
    assert!(
        seen.iter()
            .any(|c| c.node_id == dialer.id() && c.relay == Some(relay.id()))
    );
    // Large messages and many concurrent streams cross the circuit.
    let big = "x".repeat(900_000);
    assert_eq!(
        echo(&dialer, &hidden, &big).await.unwrap().text.len(),
        big.len()
    );
    let calls = (0..32).map(|i| {
        let (d, h) = (&dialer, &hidden);
        async move { echo(d, h, &i.to_string()).await.unwrap().text }
    });
    let out = futures::future::join_all(calls).await;
    assert_eq!(out.len(), 32);
    // The hidden node calls back over the same relayed connection.
    assert_eq!(echo(&hidden, &dialer, "back").await.unwrap().text, "back");
}

#[tokio::test]
async fn a_relay_refuses_circuits_over_its_limits_and_serves_again_after() {
    let dir = MemoryDirectory::new();
    let limits = RelayLimits {
        max_circuits: 1,
        ..RelayLimits::default()
    };
    let relay = Node::start(relay_config(limits), Arc::new(NoService)).await;
    let hidden = Node::start_listed(behind(&relay), Arc::new(Echo), &dir).await;
    assert!(reserved(&hidden, &relay).await);
    let first = Node::start_listed(config(), Arc::new(Echo), &dir).await;
    let second = Node::start_listed(config(), Arc::new(Echo), &dir).await;
    echo(&first, &hidden, "one").await.unwrap();
    let refused = echo(&second, &hidden, "two").await.unwrap_err();
    assert!(
        matches!(&refused, NetError::Remote(e) if e.kind == WireErrorKind::Unavailable && e.message.contains("circuit limit")),
        "{refused:?}"
    );
    // The first circuit ends: its seat is free again.
    first.net.disconnect(hidden.id());
    hidden.net.disconnect(first.id());
    let mut ok = false;
    for _ in 0..50 {
        if echo(&second, &hidden, "two").await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the freed circuit seat was not reused");
}

#[tokio::test]
async fn relays_refuse_what_they_should() {
    let dir = MemoryDirectory::new();
    // A node that does not relay refuses a reservation.
    let plain = Node::start(config(), Arc::new(NoService)).await;
    let hidden = Node::start_listed(behind(&plain), Arc::new(Echo), &dir).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(hidden.net.reserved_relays().is_empty());
    let dialer = Node::start_listed(config(), Arc::new(Echo), &dir).await;
    let err = echo(&dialer, &hidden, "x").await.unwrap_err();
    assert!(
        matches!(&err, NetError::Remote(e) if e.kind == WireErrorKind::PermissionDenied && e.message.contains("does not relay")),
        "{err:?}"
    );
    // A relay has no circuit to a node without a reservation there.
    let relay = Node::start(relay_config(RelayLimits::default()), Arc::new(NoService)).await;
    let nobody = Node::start(config(), Arc::new(Echo)).await;
    dir.discovery(nobody.id())
        .publish(keynode_net::NodeRecord {
            relays: vec![relay_of(&relay)],
            ..Default::default()
        })
        .await
        .unwrap();
    let err = echo(&dialer, &nobody, "x").await.unwrap_err();
    assert!(
        matches!(&err, NetError::Remote(e) if e.kind == WireErrorKind::NotFound && e.message.contains("no reservation")),
        "{err:?}"
    );
    // A relay that answers as another node is refused by the handshake.
    let impostor = Node::start(relay_config(RelayLimits::default()), Arc::new(NoService)).await;
    let fake = RelayAddress {
        node: keynode_core::Keypair::generate().node_id(),
        address: PeerAddress::from(impostor.addr()),
    };
    let victim = Node::start(config(), Arc::new(Echo)).await;
    dir.discovery(victim.id())
        .publish(keynode_net::NodeRecord {
            relays: vec![fake],
            ..Default::default()
        })
        .await
        .unwrap();
    let err = echo(&dialer, &victim, "x").await.unwrap_err();
    assert!(matches!(err, NetError::UnexpectedPeer { .. }), "{err:?}");
}
