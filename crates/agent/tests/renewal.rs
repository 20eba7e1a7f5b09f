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
    knows(&a, &b).await;
    knows(&b, &a).await;
    trust(&a, &b).await;
    ok(
        &b,
        Request::IdentitiesTrust {
            gestalt: a.node_id().into(),
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
            node: b.node_id(),
        },
    )
    .await;
    ok(
        &b,
        Request::VaultsClone {
            vault: "prod".into(),
            node: a.node_id(),
        },
    )
    .await;
    let old = b.node_id();
    let old_key = keystore::read_key_file(&b.paths().root_key(), b"pw").unwrap();
    let b_paths = b.paths().clone();
    b.stop().await;

    let renewed = keynode_agent::renewal::renew(&b_paths, b"pw").expect("renew");
    assert_eq!(renewed.old, old);
    assert_ne!(renewed.new, old);
    assert_eq!(renewed.code.keypair().node_id(), renewed.new);
    // A second renewal waits for the first to reach a start.
    assert!(matches!(
        keynode_agent::renewal::renew(&b_paths, b"pw"),
        Err(keynode_agent::renewal::RenewError::Pending)
    ));

    // B starts as the new key, same password, and tells A.
    let b = net.node("b").await;
    assert_eq!(b.node_id(), renewed.new);
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
