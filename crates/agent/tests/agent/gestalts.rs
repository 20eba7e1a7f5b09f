//! Gestalts across real agents: invitations, cross-signed claims, discovery,
//! and permissions that follow the gestalt.

use keynode_agent::api::{
    ErrorKind, GestaltAction, GestaltView, PermissionView, Request, Response,
};
use keynode_agent::testing::{TestNet, call, knows, ok};
use keynode_agent::{ClientError, Node};
use keynode_core::{GestaltId, NodeId};

async fn perms(node: &Node, of: NodeId) -> PermissionView {
    match ok(node, Request::IdentitiesPermissions { gestalt: of.into() }).await {
        Response::Permissions(p) => p,
        other => panic!("unexpected {other:?}"),
    }
}

async fn gestalt(node: &Node, of: &str) -> GestaltView {
    let gestalt = of.parse().expect("gestalt id");
    match ok(node, Request::IdentitiesGet { gestalt }).await {
        Response::Gestalt(g) => g,
        other => panic!("unexpected {other:?}"),
    }
}

async fn allow(node: &Node, of: NodeId, action: &str) {
    ok(
        node,
        Request::IdentitiesAllow {
            gestalt: of.into(),
            action: action.parse().expect("gestalt action"),
        },
    )
    .await;
}

#[actix_rt::test]
async fn invite_claim_discover_and_permissions_follow_the_gestalt() {
    let net = TestNet::new();
    let a = net.node("a").await;
    let a2 = net.node("a2").await;
    let b = net.node("b").await;
    let c = net.node("c").await;
    for (x, y) in [(&a, &a2), (&c, &a), (&b, &a), (&b, &a2)] {
        knows(x, y).await;
    }

    // An uninvited claim is refused by the target, and nothing is linked.
    let r = call(&c, Request::NodesClaim { node: a.node_id() }).await;
    match r {
        Err(ClientError::Api(e)) => {
            assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
            assert!(e.message.contains("invited"), "{e}");
        }
        other => panic!("uninvited claim accepted: {other:?}"),
    }
    assert_eq!(
        gestalt(&a, &a.node_id().to_string()).await.nodes,
        vec![a.node_id()]
    );

    // A2 invites A; A claims A2: both graphs link them.
    ok(&a2, Request::IdentitiesInvite { node: a.node_id() }).await;
    let claimed = ok(&a, Request::NodesClaim { node: a2.node_id() }).await;
    assert!(
        matches!(claimed, Response::Claimed { seq: 0, .. }),
        "{claimed:?}"
    );
    let mut pair = vec![a.node_id(), a2.node_id()];
    pair.sort();
    assert_eq!(gestalt(&a, &a.node_id().to_string()).await.nodes, pair);
    assert_eq!(gestalt(&a2, &a.node_id().to_string()).await.nodes, pair);
    // The invitation was good for that one claim.
    assert!(
        !perms(&a2, a.node_id())
            .await
            .gestalt
            .contains(&"claim".to_string())
    );
    match call(&a, Request::NodesClaim { node: a2.node_id() }).await {
        Err(ClientError::Api(e)) => assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}"),
        other => panic!("a second claim on one invitation: {other:?}"),
    }

    // B trusts A and discovers A2 through A's sigchain.
    ok(
        &b,
        Request::IdentitiesTrust {
            gestalt: a.node_id().into(),
        },
    )
    .await;
    let Response::Discovered(d) = ok(
        &b,
        Request::IdentitiesDiscover {
            gestalt: a.node_id().into(),
        },
    )
    .await
    else {
        panic!("no discovery")
    };
    assert!(d.failures.is_empty(), "{:?}", d.failures);
    assert_eq!(gestalt(&b, &a2.node_id().to_string()).await.nodes, pair);

    // A permission set on A holds on A2, and the reverse.
    allow(&b, a.node_id(), "scan").await;
    allow(&b, a2.node_id(), "claim").await;
    for n in [a.node_id(), a2.node_id()] {
        assert_eq!(
            perms(&b, n).await.gestalt,
            ["notify", "scan", "claim"],
            "on {n}"
        );
    }
    // C is its own gestalt and holds nothing.
    allow(&b, c.node_id(), "notify").await;
    assert_eq!(perms(&b, c.node_id()).await.gestalt, ["notify"]);

    // Unlinking splits the gestalt; both halves keep a copy of the permissions,
    // and from then on they change independently.
    b.gestalts()
        .graph()
        .send(keynode_gestalt::messages::Unlink {
            a: GestaltId::Node(a.node_id()),
            b: GestaltId::Node(a2.node_id()),
        })
        .await
        .expect("mailbox")
        .expect("unlink");
    b.gestalts().route().await.expect("route");
    assert_eq!(
        gestalt(&b, &a.node_id().to_string()).await.nodes,
        vec![a.node_id()]
    );
    for n in [a.node_id(), a2.node_id()] {
        assert_eq!(
            perms(&b, n).await.gestalt,
            ["notify", "scan", "claim"],
            "on {n}"
        );
    }
    ok(
        &b,
        Request::IdentitiesDisallow {
            gestalt: a.node_id().into(),
            action: GestaltAction::Scan,
        },
    )
    .await;
    assert_eq!(perms(&b, a.node_id()).await.gestalt, ["notify", "claim"]);
    assert_eq!(
        perms(&b, a2.node_id()).await.gestalt,
        ["notify", "scan", "claim"]
    );

    for n in [a, a2, b, c] {
        n.stop().await;
    }
}

#[actix_rt::test]
async fn identities_claimed_on_the_offline_provider_are_discovered() {
    let net = TestNet::new();
    let a = net.node("a").await;
    let b = net.node("b").await;
    knows(&b, &a).await;
    let r = ok(
        &a,
        Request::IdentitiesClaim {
            provider: "offline".parse().expect("provider"),
            identity: "alice".parse().expect("identity"),
        },
    )
    .await;
    assert!(matches!(r, Response::Claimed { .. }));
    ok(
        &a,
        Request::IdentitiesAuthenticate {
            provider: "offline".parse().expect("provider"),
        },
    )
    .await;
    let r = call(
        &a,
        Request::IdentitiesAuthenticate {
            provider: "github".parse().expect("provider"),
        },
    )
    .await;
    assert!(
        matches!(r, Err(ClientError::Api(ref e)) if e.kind == ErrorKind::NotFound),
        "{r:?}"
    );

    // B knows only the identity; discovery finds the node through the provider.
    ok(
        &b,
        Request::IdentitiesTrust {
            gestalt: "offline:alice".parse().expect("gestalt id"),
        },
    )
    .await;
    ok(
        &b,
        Request::IdentitiesDiscover {
            gestalt: "offline:alice".parse().expect("gestalt id"),
        },
    )
    .await;
    let g = gestalt(&b, "offline:alice").await;
    assert_eq!(g.nodes, vec![a.node_id()]);
    assert_eq!(g.identities, ["offline:alice"]);
    // Trust given to the identity holds on its node.
    assert_eq!(perms(&b, a.node_id()).await.gestalt, ["notify"]);

    // Bad input is refused where it is parsed, before any request is made.
    for bad in ["", "no-colon-no-node", "offline:", "vbad"] {
        assert!(bad.parse::<GestaltId>().is_err(), "{bad}");
    }
    let e = "pull"
        .parse::<GestaltAction>()
        .expect_err("pull is a vault action");
    assert!(e.to_string().contains("vaults share"), "{e}");
    a.stop().await;
    b.stop().await;
}

#[actix_rt::test]
async fn an_invitation_sends_a_gestalt_invite() {
    let net = TestNet::new();
    let a = net.node("a").await;
    let a2 = net.node("a2").await;
    knows(&a2, &a).await;
    ok(
        &a,
        Request::IdentitiesTrust {
            gestalt: a2.node_id().into(),
        },
    )
    .await;
    ok(&a2, Request::IdentitiesInvite { node: a.node_id() }).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let Response::Notifications(inbox) = ok(
            &a,
            Request::NotificationsInboxRead {
                unread: false,
                limit: None,
                newest_first: true,
            },
        )
        .await
        else {
            panic!("no inbox")
        };
        if let Some(n) = inbox.iter().find(|n| n.kind == "gestalt_invite") {
            assert_eq!(n.from, a2.node_id());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no GestaltInvite arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    a.stop().await;
    a2.stop().await;
}

#[actix_rt::test]
async fn a_countersignature_is_visible_even_when_the_claimer_stops_there() {
    use keynode_agent::peer::{PeerRequest, PeerResponse};
    let net = TestNet::new();
    let target = net.node("target").await;
    let claimer = net.node("claimer").await;
    knows(&claimer, &target).await;
    knows(&target, &claimer).await;
    ok(
        &target,
        Request::IdentitiesInvite {
            node: claimer.node_id(),
        },
    )
    .await;
    // The claimer proposes its half by hand and walks away with the
    // countersignature, never sending LinkFinish.
    let key = keynode_core::keystore::read_key_file(&claimer.paths().root_key(), b"pw")
        .expect("claimer's key");
    let half = keynode_gestalt::propose_link(
        None,
        &key,
        target.node_id(),
        keynode_core::Tid::from_bytes([1; 16]).expect("tid"),
    )
    .expect("half");
    let mut stream = claimer
        .network()
        .open(target.node_id())
        .await
        .expect("stream");
    stream
        .send(&PeerRequest::LinkPropose { half: half.clone() })
        .await
        .expect("propose");
    let got = stream.recv::<PeerResponse>().await.expect("answer");
    assert!(
        matches!(got, Some(PeerResponse::LinkProposed { .. })),
        "{got:?}"
    );
    drop(stream);
    // The invitation is spent: the same proposal again is refused.
    let mut again = claimer
        .network()
        .open(target.node_id())
        .await
        .expect("stream");
    again
        .send(&PeerRequest::LinkPropose { half: half.clone() })
        .await
        .expect("propose");
    let got = again.recv::<PeerResponse>().await;
    assert!(
        !matches!(got, Ok(Some(PeerResponse::LinkProposed { .. }))),
        "a replayed proposal was countersigned: {got:?}"
    );
    drop(again);
    // The target's graph links them, and its audit log says it countersigned.
    let mut pair = vec![target.node_id(), claimer.node_id()];
    pair.sort();
    assert_eq!(
        gestalt(&target, &claimer.node_id().to_string()).await.nodes,
        pair
    );
    let Response::AuditEntries(log) = ok(&target, Request::AuditRead { limit: None }).await else {
        panic!("no audit")
    };
    assert!(
        log.iter().any(|e| e.kind == "countersigned"
            && e.fields
                .iter()
                .any(|(k, v)| k == "node" && *v == claimer.node_id().to_string())),
        "{:?}",
        log.iter().map(|e| &e.kind).collect::<Vec<_>>()
    );
    // A good claimer, invited, is still served.
    let good = net.node("good").await;
    knows(&good, &target).await;
    knows(&target, &good).await;
    ok(
        &target,
        Request::IdentitiesInvite {
            node: good.node_id(),
        },
    )
    .await;
    let claimed = ok(
        &good,
        Request::NodesClaim {
            node: target.node_id(),
        },
    )
    .await;
    assert!(matches!(claimed, Response::Claimed { .. }), "{claimed:?}");
    assert_eq!(
        gestalt(&target, &good.node_id().to_string())
            .await
            .nodes
            .len(),
        3
    );
    target.stop().await;
    claimer.stop().await;
    good.stop().await;
}
