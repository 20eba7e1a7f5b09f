//! Key renewal with real nodes: a node renews its key, its peers apply the
//! rotation, its shares and clones keep working under the new NodeId, and the
//! old key is refused.

use std::time::{Duration, Instant};

use keynode_agent::api::{ErrorKind, Request, Response};
use keynode_agent::testing::{TestNet, call, knows, ok, pulled, read, trust, write};
use keynode_agent::{ClientError, Node};
use keynode_core::keystore::{self, KdfParams};
use keynode_core::{NodeId, VaultName};

async fn grantees(node: &Node, vault: &str) -> Vec<NodeId> {
    match ok(
        node,
        Request::VaultsPermissions {
            vault: vault.into(),
        },
    )
    .await
    {
        Response::VaultPermissions(g) => g.into_iter().flat_map(|g| g.nodes).collect(),
        other => panic!("{other:?}"),
    }
}

#[actix_rt::test]
async fn a_renewed_key_keeps_its_shares_and_the_old_key_is_refused() {
    let net = TestNet::new();
    let a = net.node("a").await;
    let b = net.node("b").await;
    let c = net.node("c").await;
    knows(&a, &b).await;
    knows(&b, &a).await;
    knows(&b, &c).await;
    trust(&a, &b).await;
    trust(&b, &a).await;
    // A notification B queues for C, who is down, waits out the renewal.
    let c_id = c.node_id();
    c.stop().await;
    ok(
        &b,
        Request::NotificationsSend {
            node: c_id,
            message: "later".into(),
        },
    )
    .await;
    ok(
        &a,
        Request::VaultsCreate {
            name: VaultName::new("prod").unwrap(),
        },
    )
    .await;
    write(&a, "prod", "db/password", b"hunter2").await.unwrap();
    ok(
        &a,
        Request::VaultsShare {
            vault: "prod".into(),
            to: b.node_id().into(),
        },
    )
    .await;
    ok(
        &b,
        Request::VaultsClone {
            vault: "prod".into(),
            node: a.node_id(),
            follow: false,
        },
    )
    .await;
    let old = b.node_id();
    let old_key = keystore::read_key_file(&b.paths().root_key(), b"pw").unwrap();
    let b_paths = b.paths().clone();
    b.stop().await;
    // A queues a notification for B while B is down.
    ok(
        &a,
        Request::NotificationsSend {
            node: old,
            message: "while you were away".into(),
        },
    )
    .await;

    let renewed = keynode_agent::renewal::renew(&b_paths, b"pw").expect("renew");
    assert_eq!(renewed.old, old);
    assert_ne!(renewed.new, old);
    assert_eq!(renewed.code.keypair().node_id(), renewed.new);
    // A second renewal waits for the first to reach a start.
    assert!(matches!(
        keynode_agent::renewal::renew(&b_paths, b"pw"),
        Err(keynode_agent::renewal::RenewError::Pending)
    ));

    // A serves a large clone to D while B's rotation reaches it.
    let d = net.node("d").await;
    knows(&a, &d).await;
    knows(&d, &a).await;
    trust(&a, &d).await;
    ok(
        &a,
        Request::VaultsCreate {
            name: VaultName::new("big").unwrap(),
        },
    )
    .await;
    let blob: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    write(&a, "big", "blob", &blob).await.unwrap();
    ok(
        &a,
        Request::VaultsShare {
            vault: "big".into(),
            to: d.node_id().into(),
        },
    )
    .await;
    let d_socket = d.socket_path();
    let a_id = a.node_id();
    let cloning = tokio::spawn(async move {
        keynode_agent::Client::connect(&d_socket)
            .await
            .unwrap()
            .call(Request::VaultsClone {
                vault: "big".into(),
                node: a_id,
                follow: false,
            })
            .await
    });

    // B starts as the new key, same password, and tells A.
    let b = net.node("b").await;
    assert_eq!(b.node_id(), renewed.new);
    // What was queued goes out signed by the new key.
    match ok(&b, Request::NotificationsOutboxRead).await {
        Response::Notifications(n) => {
            let later: Vec<_> = n
                .iter()
                .filter(|n| n.to == c_id && n.kind == "general")
                .collect();
            assert_eq!(later.len(), 1, "{n:?}");
            assert_eq!(later[0].from, renewed.new);
        }
        other => panic!("{other:?}"),
    }
    let t = Instant::now();
    loop {
        if grantees(&a, "prod").await.contains(&renewed.new) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "A never applied the rotation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A's queued notification was readdressed to the new key and arrives.
    let t = Instant::now();
    loop {
        let Response::Notifications(inbox) = ok(
            &b,
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
        if inbox.iter().any(|n| n.data.contains("while you were away")) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the queued notification never came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        matches!(cloning.await.unwrap(), Ok(Response::Vault(_))),
        "the clone during the rotation failed"
    );
    assert_eq!(read(&d, "big", "blob").await.len(), blob.len());
    d.stop().await;
    // The renewed node pulls under its new key.
    write(&a, "prod", "db/user", b"admin").await.unwrap();
    assert_eq!(pulled(&b, "prod").await, 1);
    assert_eq!(read(&b, "prod", "db/user").await, b"admin");
    // A's audit log says so.
    let Response::AuditEntries(log) = ok(&a, Request::AuditRead { limit: None }).await else {
        panic!("no audit")
    };
    assert!(
        log.iter().any(|e| e.kind == "key_rotated"),
        "{:?}",
        log.iter().map(|e| &e.kind).collect::<Vec<_>>()
    );

    // Whoever still holds the old key is refused.
    let thief_cfg = net.config("thief");
    std::fs::create_dir_all(thief_cfg.paths.root_key().parent().unwrap()).unwrap();
    keystore::write_key_file(
        &thief_cfg.paths.root_key(),
        &old_key,
        b"pw",
        KdfParams::DEFAULT,
    )
    .unwrap();
    let thief = Node::start(thief_cfg).await.unwrap();
    assert_eq!(thief.node_id(), old);
    knows(&thief, &a).await;
    match call(
        &thief,
        Request::VaultsClone {
            vault: "prod".into(),
            node: a.node_id(),
            follow: false,
        },
    )
    .await
    {
        Err(ClientError::Api(e)) => assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}"),
        other => panic!("the old key was served: {other:?}"),
    }
    // Its own node refuses the old key too (its graph recorded the rotation).
    assert!(b.gestalts().is_renewed(old).await);
    thief.stop().await;
    a.stop().await;
    b.stop().await;
}

#[actix_rt::test]
async fn forged_replayed_conflicting_and_unknown_rotations_are_refused() {
    use keynode_core::{SystemClock, TidGenerator};
    let net = TestNet::new();
    let a = net.node("a").await;
    let tids = TidGenerator::new(SystemClock);
    let old = keynode_core::Keypair::generate();
    let new = keynode_core::Keypair::generate();
    let claim = keynode_gestalt::rotate(None, &old, &new, tids.next_id()).unwrap();
    // A does not know `old`: not for it.
    let e = a
        .gestalts()
        .apply_rotation(&claim, new.node_id())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    ok(
        &a,
        Request::NodesAdd {
            node: old.node_id(),
            host: "127.0.0.1".into(),
            port: 1,
        },
    )
    .await;
    ok(
        &a,
        Request::IdentitiesTrust {
            gestalt: old.node_id().into(),
        },
    )
    .await;
    // Announced by someone else than the new key.
    let e = a
        .gestalts()
        .apply_rotation(&claim, keynode_core::Keypair::generate().node_id())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
    // Signed by one key only.
    let mut half = claim.clone();
    half.signatures.truncate(1);
    let e = a
        .gestalts()
        .apply_rotation(&half, new.node_id())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadData, "{e}");
    assert!(!a.gestalts().is_renewed(old.node_id()).await);
    // The real one applies; the same again changes nothing.
    let (o, n, outcome) = a
        .gestalts()
        .apply_rotation(&claim, new.node_id())
        .await
        .unwrap();
    assert_eq!((o, n), (old.node_id(), new.node_id()));
    assert_eq!(outcome, keynode_gestalt::RotationOutcome::Recorded);
    let (_, _, again) = a
        .gestalts()
        .apply_rotation(&claim, new.node_id())
        .await
        .unwrap();
    assert_eq!(again, keynode_gestalt::RotationOutcome::Known);
    // The trust of the old key moved to the new one; the old key has none.
    assert!(
        a.gestalts()
            .has_action(new.node_id(), keynode_acl::GestaltAction::Notify)
            .await
            .unwrap()
    );
    assert!(
        !a.gestalts()
            .has_action(old.node_id(), keynode_acl::GestaltAction::Notify)
            .await
            .unwrap()
    );
    // A thief with the old key renews it again, to its own key: refused.
    let thief = keynode_core::Keypair::generate();
    let stolen = keynode_gestalt::rotate(None, &old, &thief, tids.next_id()).unwrap();
    let e = a
        .gestalts()
        .apply_rotation(&stolen, thief.node_id())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    assert!(
        !a.gestalts()
            .has_action(thief.node_id(), keynode_acl::GestaltAction::Notify)
            .await
            .unwrap()
    );
    // A revoked key (a stolen device) is refused, and whoever holds it
    // cannot renew it.
    let lost = keynode_core::Keypair::generate();
    ok(
        &a,
        Request::IdentitiesTrust {
            gestalt: lost.node_id().into(),
        },
    )
    .await;
    ok(
        &a,
        Request::NodesRevoke {
            node: lost.node_id(),
        },
    )
    .await;
    assert!(
        !a.gestalts()
            .has_action(lost.node_id(), keynode_acl::GestaltAction::Notify)
            .await
            .unwrap()
    );
    let escape = keynode_core::Keypair::generate();
    let claim = keynode_gestalt::rotate(None, &lost, &escape, tids.next_id()).unwrap();
    let e = a
        .gestalts()
        .apply_rotation(&claim, escape.node_id())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    a.stop().await;
}

#[test]
fn a_renewal_cut_short_is_finished_or_dropped_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let paths = keynode_agent::NodePaths::new(dir.path().join("n"));
    std::fs::create_dir_all(paths.root.join("keys")).unwrap();
    let new_of = |p: &std::path::Path| {
        let mut s = p.as_os_str().to_owned();
        s.push(".new");
        std::path::PathBuf::from(s)
    };
    // Cut before the data key was re-sealed: the renewal did not happen.
    std::fs::write(paths.root_key(), b"old root").unwrap();
    std::fs::write(paths.data_key(), b"old data").unwrap();
    std::fs::write(new_of(&paths.root_key()), b"new root").unwrap();
    keynode_agent::renewal::finish_interrupted(&paths).unwrap();
    assert_eq!(std::fs::read(paths.root_key()).unwrap(), b"old root");
    assert!(!new_of(&paths.root_key()).exists());
    // Cut after both were written (or between the renames): it did.
    std::fs::write(new_of(&paths.root_key()), b"new root").unwrap();
    std::fs::write(new_of(&paths.data_key()), b"new data").unwrap();
    keynode_agent::renewal::finish_interrupted(&paths).unwrap();
    assert_eq!(std::fs::read(paths.root_key()).unwrap(), b"new root");
    assert_eq!(std::fs::read(paths.data_key()).unwrap(), b"new data");
    std::fs::write(new_of(&paths.data_key()), b"newer data").unwrap();
    keynode_agent::renewal::finish_interrupted(&paths).unwrap();
    assert_eq!(std::fs::read(paths.root_key()).unwrap(), b"new root");
    assert_eq!(std::fs::read(paths.data_key()).unwrap(), b"newer data");
}
