//! Crash safety of permission propagation: a graph change whose events never
//! reached the ACL (the agent died between the two transactions) is applied
//! at the next start from the graph's journal, with no scan of the graph.

use keynode_agent::api::{PermissionView, Request, Response};
use keynode_agent::testing::{TestNet, ok};
use keynode_core::{GestaltId, Keypair, NodeId, Tid};
use keynode_gestalt::{ClaimRef, messages};

async fn perms(node: &keynode_agent::Node, of: NodeId) -> PermissionView {
    match ok(
        node,
        Request::IdentitiesPermissions {
            gestalt: GestaltId::Node(of),
        },
    )
    .await
    {
        Response::Permissions(p) => p,
        other => panic!("unexpected {other:?}"),
    }
}

async fn allow(node: &keynode_agent::Node, of: NodeId, action: &str) {
    ok(
        node,
        Request::IdentitiesAllow {
            gestalt: GestaltId::Node(of),
            action: action.parse().expect("action"),
        },
    )
    .await;
}

#[actix_rt::test]
async fn a_link_journaled_before_a_crash_reaches_the_acl_at_the_next_start() {
    let net = TestNet::new();
    let (x, y) = (Keypair::generate().node_id(), Keypair::generate().node_id());
    let a = net.node("a").await;
    allow(&a, x, "notify").await;
    allow(&a, y, "scan").await;

    // The graph links x and y in its own transaction (journaling the event),
    // and the agent "dies" before routing it to the ACL.
    a.gestalts()
        .graph()
        .send(messages::LinkNodes {
            a: x,
            b: y,
            proof: ClaimRef {
                chain: x,
                seq: 1,
                id: Tid::from_bytes([1; 16]).expect("tid"),
            },
        })
        .await
        .expect("mailbox")
        .expect("link");
    assert_eq!(perms(&a, x).await.gestalt, ["notify"], "the ACL lags");
    let pending = a
        .gestalts()
        .graph()
        .send(messages::Pending {})
        .await
        .expect("mailbox")
        .expect("pending");
    assert_eq!(pending.len(), 1, "{pending:?}");
    a.stop().await;

    // The next start applies the journal: one gestalt, one record (the union).
    let a = net.node("a").await;
    for n in [x, y] {
        assert_eq!(perms(&a, n).await.gestalt, ["notify", "scan"], "on {n}");
    }
    let pending = a
        .gestalts()
        .graph()
        .send(messages::Pending {})
        .await
        .expect("mailbox")
        .expect("pending");
    assert!(pending.is_empty(), "{pending:?}");
    // From now on they change together.
    allow(&a, x, "claim").await;
    assert_eq!(perms(&a, y).await.gestalt, ["notify", "scan", "claim"]);
    a.stop().await;
}
