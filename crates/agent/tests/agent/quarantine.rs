//! Shares from strangers, kept apart: a notification from an authenticated
//! sender we do not trust is held in a bounded quarantine (the sender is told
//! "refused" as before), and can be accepted (trusting the sender) or blocked.

use std::time::{Duration, Instant};

use keynode_agent::api::{NotificationView, Request, Response};
use keynode_agent::testing::{TestNet, call, inbox, knows, ok, trust, write};
use keynode_agent::{ClientError, Node};
use keynode_core::VaultName;

async fn quarantine(node: &Node) -> Vec<NotificationView> {
    match ok(
        node,
        Request::NotificationsQuarantineRead {
            limit: None,
            newest_first: false,
        },
    )
    .await
    {
        Response::Notifications(v) => v,
        other => panic!("{other:?}"),
    }
}

async fn held_from(node: &Node, from: &Node, kind: &str) -> bool {
    quarantine(node)
        .await
        .iter()
        .any(|n| n.from == from.node_id() && n.kind == kind)
}

async fn until_held(node: &Node, from: &Node, kind: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !held_from(node, from, kind).await {
        assert!(Instant::now() < deadline, "no {kind} was quarantined");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until `node`'s outbox is empty: its notifications were answered
/// (a refusal drops them).
async fn outbox_empties(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let Response::Notifications(out) = ok(node, Request::NotificationsOutboxRead).await else {
            panic!("no outbox");
        };
        if out.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "the refusal did not arrive");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn send(from: &Node, to: &Node, message: &str) {
    ok(
        from,
        Request::NotificationsSend {
            node: to.node_id(),
            message: message.into(),
        },
    )
    .await;
}

#[actix_rt::test]
async fn a_strangers_share_is_quarantined_then_accepted() {
    let net = TestNet::new();
    let (a, b) = (net.node("a").await, net.node("b").await);
    knows(&a, &b).await;
    knows(&b, &a).await;
    // B trusts A and shares with it; A has never trusted B.
    trust(&b, &a).await;
    ok(
        &b,
        Request::VaultsCreate {
            name: VaultName::new("prod").unwrap(),
        },
    )
    .await;
    write(&b, "prod", "db/password", b"hunter2")
        .await
        .expect("write");
    ok(
        &b,
        Request::VaultsShare {
            vault: "prod".into(),
            to: a.node_id().into(),
        },
    )
    .await;
    until_held(&a, &b, "vault_share").await;
    assert!(inbox(&a).await.is_empty(), "nothing reached the inbox");
    // The sender was refused as always: nothing is left queued for A.
    outbox_empties(&b).await;

    // Accepted: B is trusted, the share is in the inbox, the quarantine empty.
    let Response::Moved(moved) = ok(&a, Request::NotificationsAccept { node: b.node_id() }).await
    else {
        panic!("not moved");
    };
    assert_eq!(moved, 1);
    let inbox = inbox(&a).await;
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].kind, "vault_share");
    assert_eq!(inbox[0].from, b.node_id());
    assert!(quarantine(&a).await.is_empty());
    // Trusted now: the next one goes straight to the inbox.
    send(&b, &a, "hello").await;
    keynode_agent::testing::arrives(&a, "general", Duration::from_secs(15)).await;
    assert!(quarantine(&a).await.is_empty());
    ok(
        &a,
        Request::VaultsClone {
            vault: "prod".into(),
            node: b.node_id(),
            follow: false,
        },
    )
    .await;
}

#[actix_rt::test]
async fn a_blocked_sender_is_dropped_and_can_be_unblocked() {
    let net = TestNet::new();
    let (a, pest) = (net.node("a").await, net.node("pest").await);
    knows(&pest, &a).await;
    send(&pest, &a, "buy now").await;
    until_held(&a, &pest, "general").await;
    let Response::Removed(n) = ok(
        &a,
        Request::NotificationsBlock {
            node: pest.node_id(),
        },
    )
    .await
    else {
        panic!("not removed");
    };
    assert_eq!(n, 1);
    assert!(quarantine(&a).await.is_empty());
    // While blocked, nothing more is held.
    send(&pest, &a, "buy now!!").await;
    outbox_empties(&pest).await;
    assert!(quarantine(&a).await.is_empty());
    // Unblocked: held again. Unblocking twice says it was not blocked.
    ok(
        &a,
        Request::NotificationsUnblock {
            node: pest.node_id(),
        },
    )
    .await;
    let again = call(
        &a,
        Request::NotificationsUnblock {
            node: pest.node_id(),
        },
    )
    .await;
    assert!(matches!(again, Err(ClientError::Api(_))), "{again:?}");
    send(&pest, &a, "third time").await;
    until_held(&a, &pest, "general").await;
}
