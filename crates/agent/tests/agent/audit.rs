//! The owner's audit log records shares, served transfers and refusals with the
//! peer's NodeId, and verifies.

use keynode_agent::api::{AuditEntryView, ErrorKind, Request, Response};
use keynode_agent::testing::{TestNet, call, knows, ok, trust, write};
use keynode_agent::{ClientError, Node};
use keynode_core::VaultName;

async fn audit(node: &Node, limit: Option<u32>) -> Vec<AuditEntryView> {
    match ok(node, Request::AuditRead { limit }).await {
        Response::AuditEntries(e) => e,
        other => panic!("{other:?}"),
    }
}

fn field<'a>(e: &'a AuditEntryView, name: &str) -> Option<&'a str> {
    e.fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[actix_rt::test]
async fn shares_served_clones_and_refusals_are_audited() {
    let net = TestNet::new();
    let b = net.node("b").await;
    let a = net.node("a").await;
    let c = net.node("c").await;
    for (x, y) in [(&a, &b), (&b, &a), (&c, &b), (&b, &c)] {
        knows(x, y).await;
    }
    trust(&a, &b).await;
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
    let Response::Vault(clone) = ok(
        &a,
        Request::VaultsClone {
            vault: "prod".into(),
            node: b.node_id(),
            follow: false,
        },
    )
    .await
    else {
        panic!("no clone")
    };
    assert_eq!(clone.name.as_str(), "prod");
    // An outsider is refused.
    match call(
        &c,
        Request::VaultsClone {
            vault: "prod".into(),
            node: b.node_id(),
            follow: false,
        },
    )
    .await
    {
        Err(ClientError::Api(e)) if e.kind == ErrorKind::PermissionDenied => {}
        other => panic!("expected a refusal, got {other:?}"),
    }

    let log = audit(&b, None).await;
    let kinds: Vec<&str> = log.iter().map(|e| e.kind.as_str()).collect();
    // Newest first: the trust, the share, the served clone, the refusal.
    assert_eq!(
        kinds,
        vec!["refused", "served", "vault_shared", "trusted"],
        "{log:#?}"
    );
    let (refused, served, shared, trusted) = (&log[0], &log[1], &log[2], &log[3]);
    assert_eq!(trusted.seq, 0);
    assert_eq!(
        field(trusted, "gestalt"),
        Some(a.node_id().to_string().as_str())
    );
    assert_eq!(shared.peer, Some(a.node_id()));
    assert_eq!(served.peer, Some(a.node_id()));
    assert_eq!(field(served, "op"), Some("clone"));
    assert!(field(served, "vault").is_some());
    assert_eq!(field(served, "vault"), field(shared, "vault"));
    assert_eq!(refused.peer, Some(c.node_id()));
    assert_eq!(field(refused, "op"), Some("clone"));
    assert!(log.windows(2).all(|w| w[0].seq == w[1].seq + 1));
    assert!(log.windows(2).all(|w| w[0].time_ms >= w[1].time_ms));

    assert_eq!(audit(&b, Some(2)).await.len(), 2);
    match ok(&b, Request::AuditVerify).await {
        Response::AuditVerified { entries } => assert_eq!(entries, 4),
        other => panic!("{other:?}"),
    }
    // The cloner recorded its trust only: serving is the owner's business.
    let theirs = audit(&a, None).await;
    assert_eq!(theirs.len(), 1, "{theirs:#?}");
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[actix_rt::test]
async fn a_refusal_flood_is_summarised_not_logged_one_by_one() {
    let net = TestNet::new();
    let b = net.node("b").await;
    let c = net.node("c").await;
    let good = net.node("good").await;
    for (x, y) in [(&c, &b), (&b, &c), (&good, &b), (&b, &good)] {
        knows(x, y).await;
    }
    trust(&b, &good).await;
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
            to: good.node_id().into(),
        },
    )
    .await;
    let before = audit(&b, None).await.len();
    const FLOOD: usize = 300;
    for _ in 0..FLOOD {
        let r = call(
            &c,
            Request::VaultsClone {
                vault: "prod".into(),
                node: b.node_id(),
                follow: false,
            },
        )
        .await;
        assert!(matches!(r, Err(ClientError::Api(e)) if e.kind == ErrorKind::PermissionDenied));
    }
    // One refusal is recorded as it happens; the rest wait for their window.
    let during = audit(&b, None).await;
    assert_eq!(during.len() - before, 1, "{:?}", &during[..3]);
    assert_eq!(during[0].kind, "refused");
    // A permitted peer is served all along.
    let Response::Vault(clone) = ok(
        &good,
        Request::VaultsClone {
            vault: "prod".into(),
            node: b.node_id(),
            follow: false,
        },
    )
    .await
    else {
        panic!("no clone")
    };
    assert_eq!(clone.name.as_str(), "prod");
    // The count reaches the log when the window closes (here: at stop).
    b.stop().await;
    let b = net.node("b").await;
    let log = audit(&b, None).await;
    let summary = log
        .iter()
        .find(|e| e.kind == "refused_repeatedly")
        .expect("a summary of the flood");
    assert_eq!(
        field(summary, "count"),
        Some((FLOOD - 1).to_string().as_str())
    );
    assert_eq!(
        field(summary, "peer"),
        Some(c.node_id().to_string().as_str())
    );
    c.stop().await;
    good.stop().await;
    b.stop().await;
}
