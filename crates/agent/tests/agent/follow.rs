//! Followed clones across real agents: a write on the owner reaches every
//! following clone without a command, a follower that was away catches up
//! when it is back, only nodes that may pull hear of a new head (checked on
//! the wire), and an unshare stops both the announcements and the pulls.

use std::future::Future;
use std::time::{Duration, Instant};

use keynode_agent::api::{FollowStatus, Request, Response, VaultMeta};
use keynode_agent::peer::{PeerRequest, PeerResponse};
use keynode_agent::protocol::FollowedHead;
use keynode_agent::testing::{TestNet, call, knows, ok, read, trust, write};
use keynode_agent::{Client, Node};
use keynode_core::{NodeId, VaultId, VaultName};
use keynode_net::{NetError, RpcStream};

const WITHIN: Duration = Duration::from_secs(15);

/// Waits until `check` holds, or fails naming `what`.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WITHIN;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn vaults(node: &Node) -> Vec<VaultMeta> {
    match ok(node, Request::VaultsList).await {
        Response::Vaults(v) => v,
        other => panic!("{other:?}"),
    }
}

async fn status(node: &Node, vault: &str) -> Option<FollowStatus> {
    vaults(node)
        .await
        .into_iter()
        .find(|m| m.name.as_str() == vault)
        .and_then(|m| m.follow)
}

async fn share(owner: &Node, vault: &str, with: &Node, grant: bool) {
    let (vault, node) = (vault.to_owned(), with.node_id());
    ok(
        owner,
        if grant {
            Request::VaultsShare {
                vault,
                to: node.into(),
            }
        } else {
            Request::VaultsUnshare {
                vault,
                to: node.into(),
            }
        },
    )
    .await;
}

async fn clone(node: &Node, vault: &str, from: &Node, follow: bool) -> VaultMeta {
    match ok(
        node,
        Request::VaultsClone {
            vault: vault.into(),
            node: from.node_id(),
            follow,
        },
    )
    .await
    {
        Response::Vault(m) => m,
        other => panic!("{other:?}"),
    }
}

async fn value_is(node: &Node, vault: &str, want: &[u8]) -> bool {
    read(node, vault, "db/password").await == want
}

/// B owns `prod` with one secret; B and every other node know and trust each
/// other (nothing is shared yet).
async fn owner_and(net: &TestNet, names: &[&str]) -> (Node, Vec<Node>) {
    let b = net.node("b").await;
    ok(
        &b,
        Request::VaultsCreate {
            name: VaultName::new("prod").unwrap(),
        },
    )
    .await;
    write(&b, "prod", "db/password", b"v0")
        .await
        .expect("write");
    let mut others = Vec::new();
    for name in names {
        let n = net.node(name).await;
        knows(&n, &b).await;
        knows(&b, &n).await;
        trust(&b, &n).await;
        trust(&n, &b).await;
        others.push(n);
    }
    (b, others)
}

#[actix_rt::test]
async fn followers_are_updated_without_a_command_and_unshare_stops_them() {
    let net = TestNet::new();
    let (b, nodes) = owner_and(&net, &["a1", "a2", "quiet"]).await;
    let (a1, a2, quiet) = (&nodes[0], &nodes[1], &nodes[2]);
    for n in &nodes {
        share(&b, "prod", n, true).await;
    }
    clone(a1, "prod", &b, true).await;
    clone(a2, "prod", &b, true).await;
    clone(quiet, "prod", &b, false).await;
    assert_eq!(status(quiet, "prod").await, Some(FollowStatus::Off));
    assert_eq!(
        status(&b, "prod").await,
        None,
        "the owner's vault follows nothing"
    );

    // A burst of writes: every follower ends on the last one by itself.
    for i in 1..=3 {
        let value = format!("v{i}");
        write(&b, "prod", "db/password", value.as_bytes())
            .await
            .expect("write");
    }
    for n in [a1, a2] {
        until("a follower has the last write", || {
            value_is(n, "prod", b"v3")
        })
        .await;
        until("the follower says it follows", || async {
            status(n, "prod").await == Some(FollowStatus::Following)
        })
        .await;
    }
    // The clone that does not follow stays where it was until pulled.
    assert!(value_is(quiet, "prod", b"v0").await);
    ok(
        quiet,
        Request::VaultsFollow {
            vault: "prod".into(),
            follow: true,
        },
    )
    .await;
    until("a clone that follows again catches up", || {
        value_is(quiet, "prod", b"v3")
    })
    .await;

    // Unshared: A1 hears nothing more and pulls nothing; A2 still follows.
    share(&b, "prod", a1, false).await;
    write(&b, "prod", "db/password", b"v4")
        .await
        .expect("write");
    until("the follower still shared is updated", || {
        value_is(a2, "prod", b"v4")
    })
    .await;
    until("the unshared follower is told it is refused", || async {
        status(a1, "prod").await == Some(FollowStatus::Refused)
    })
    .await;
    assert!(value_is(a1, "prod", b"v3").await);
    // Shared again: the follower asks again by itself and catches up.
    share(&b, "prod", a1, true).await;
    until("a follower shared again catches up", || {
        value_is(a1, "prod", b"v4")
    })
    .await;
    // Unfollowed: stays behind, says so.
    ok(
        a2,
        Request::VaultsFollow {
            vault: "prod".into(),
            follow: false,
        },
    )
    .await;
    assert_eq!(status(a2, "prod").await, Some(FollowStatus::Off));
    // Own vaults cannot follow.
    let r = call(
        &b,
        Request::VaultsFollow {
            vault: "prod".into(),
            follow: true,
        },
    )
    .await;
    assert!(r.is_err(), "{r:?}");
}

#[actix_rt::test]
async fn a_follower_away_during_three_writes_catches_up_when_back() {
    let net = TestNet::new();
    let (b, mut nodes) = owner_and(&net, &["a"]).await;
    let a = nodes.remove(0);
    share(&b, "prod", &a, true).await;
    clone(&a, "prod", &b, true).await;
    a.stop().await;
    for i in 1..=3 {
        write(&b, "prod", "db/password", format!("v{i}").as_bytes())
            .await
            .expect("write");
    }
    let a = net.node("a").await;
    until("the follower catches up after its restart", || {
        value_is(&a, "prod", b"v3")
    })
    .await;

    // The owner away and back on its port: the follower meets it again.
    let port = b.listen_addr().port();
    b.stop().await;
    let b = net.node_on("b", port).await;
    write(&b, "prod", "db/password", b"v4")
        .await
        .expect("write");
    until(
        "the follower hears of a write after the owner's restart",
        || value_is(&a, "prod", b"v4"),
    )
    .await;
}

async fn follow_stream(from: &Node, owner: NodeId, vaults: Vec<VaultId>) -> RpcStream {
    let mut stream = from.network().open(owner).await.expect("stream");
    stream
        .send(&PeerRequest::Follow { vaults })
        .await
        .expect("send");
    stream
}

async fn heads(stream: &mut RpcStream) -> Option<Vec<FollowedHead>> {
    match tokio::time::timeout(WITHIN, stream.recv::<PeerResponse>()).await {
        Ok(Ok(Some(PeerResponse::Heads(h)))) => Some(h),
        Ok(Ok(None)) => None,
        other => panic!("expected Heads: {other:?}"),
    }
}

#[actix_rt::test]
async fn only_nodes_that_may_pull_hear_of_a_new_head_on_the_wire() {
    let net = TestNet::new();
    let (b, nodes) = owner_and(&net, &["a", "outsider"]).await;
    let (a, outsider) = (&nodes[0], &nodes[1]);
    let prod = vaults(&b).await[0].id;
    share(&b, "prod", a, true).await;

    // The outsider asks to follow: one "no", and the stream ends there.
    let mut refused = follow_stream(outsider, b.node_id(), vec![prod]).await;
    assert_eq!(
        heads(&mut refused).await,
        Some(vec![FollowedHead {
            vault: prod,
            head: None
        }])
    );
    assert_eq!(heads(&mut refused).await, Some(vec![]));
    assert_eq!(heads(&mut refused).await, None);
    // A vault that does not exist gets the same answer.
    let mut missing = follow_stream(outsider, b.node_id(), vec![VaultId::generate()]).await;
    let first = heads(&mut missing).await.expect("heads");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].head, None);

    // A may pull: it hears the head now and each new one, and nothing else.
    let mut stream = follow_stream(a, b.node_id(), vec![prod]).await;
    let now = heads(&mut stream).await.expect("heads");
    assert!(now[0].head.is_some());
    write(&b, "prod", "db/password", b"v1")
        .await
        .expect("write");
    let next = heads(&mut stream).await.expect("heads");
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].vault, prod);
    assert_ne!(next[0].head, now[0].head);
    // A write to a vault A does not follow is not announced to it.
    ok(
        &b,
        Request::VaultsCreate {
            name: VaultName::new("other").unwrap(),
        },
    )
    .await;
    write(&b, "other", "x", b"1").await.expect("write");
    // Unshared: the next write is announced as "no" and the stream ends.
    share(&b, "prod", a, false).await;
    write(&b, "prod", "db/password", b"v2")
        .await
        .expect("write");
    assert_eq!(
        heads(&mut stream).await,
        Some(vec![FollowedHead {
            vault: prod,
            head: None
        }])
    );
    assert_eq!(heads(&mut stream).await, Some(vec![]));
    assert_eq!(heads(&mut stream).await, None);

    // Too many vaults, or one twice: a clear refusal.
    for bad in [vec![prod, prod], vec![VaultId::generate(); 1025]] {
        let r: Result<PeerResponse, NetError> = a
            .network()
            .call(b.node_id(), &PeerRequest::Follow { vaults: bad })
            .await;
        match r {
            Err(NetError::Remote(w)) => assert!(w.message.contains("at most"), "{w:?}"),
            other => panic!("not refused: {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn a_watch_sees_local_writes_and_pulled_changes() {
    let net = TestNet::new();
    let (b, mut nodes) = owner_and(&net, &["a"]).await;
    let a = nodes.remove(0);
    share(&b, "prod", &a, true).await;
    let clone = clone(&a, "prod", &b, true).await;
    let client = Client::connect(&a.socket_path()).await.expect("connect");
    let (watched, mut watch) = client.watch(vec!["prod".into()]).await.expect("watch");
    assert_eq!(watched.len(), 1);
    assert_eq!(watched[0].id, clone.id);
    write(&b, "prod", "db/password", b"v1")
        .await
        .expect("write");
    let (vault, head) = tokio::time::timeout(WITHIN, watch.next())
        .await
        .expect("a change in time")
        .expect("watch")
        .expect("not ended");
    assert_eq!(vault, clone.id);
    assert_ne!(head, watched[0].head);
    assert!(value_is(&a, "prod", b"v1").await);

    // A watch of nothing, or of a vault that does not exist, is refused.
    let none = Client::connect(&a.socket_path()).await.expect("connect");
    assert!(none.watch(vec![]).await.is_err());
    let missing = Client::connect(&a.socket_path()).await.expect("connect");
    assert!(missing.watch(vec!["nope".into()]).await.is_err());
}

async fn claim_identity(node: &Node, identity: &str) {
    ok(
        node,
        Request::IdentitiesClaim {
            provider: "offline".parse().unwrap(),
            identity: identity.parse().unwrap(),
        },
    )
    .await;
}

#[actix_rt::test]
async fn a_share_with_a_person_reaches_every_node_of_theirs() {
    let net = TestNet::new();
    let (b, nodes) = owner_and(&net, &["alice-laptop", "alice-server", "mallory"]).await;
    let (laptop, server, mallory) = (&nodes[0], &nodes[1], &nodes[2]);
    claim_identity(laptop, "alice").await;
    claim_identity(server, "alice").await;
    claim_identity(mallory, "mallory").await;
    let alice: keynode_core::GestaltId = "offline:alice".parse().unwrap();

    // Unknown people are refused with a hint, nothing shared.
    let r = call(
        &b,
        Request::VaultsShare {
            vault: "prod".into(),
            to: "offline:nobody".parse().unwrap(),
        },
    )
    .await;
    match r {
        Err(keynode_agent::ClientError::Api(e)) => {
            assert!(e.message.contains("identities claim"), "{}", e.message)
        }
        other => panic!("{other:?}"),
    }

    // B knows only the identity: the share finds both of Alice's nodes.
    ok(
        &b,
        Request::VaultsShare {
            vault: "prod".into(),
            to: alice.clone(),
        },
    )
    .await;
    for n in [laptop, server] {
        keynode_agent::testing::arrives(n, "vault_share", WITHIN).await;
        clone(n, "prod", &b, true).await;
        assert!(value_is(n, "prod", b"v0").await);
    }
    let Response::VaultPermissions(grants) = ok(
        &b,
        Request::VaultsPermissions {
            vault: "prod".into(),
        },
    )
    .await
    else {
        panic!("no permissions")
    };
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].identities, ["offline:alice"]);
    let mut both = vec![laptop.node_id(), server.node_id()];
    both.sort();
    let mut granted = grants[0].nodes.clone();
    granted.sort();
    assert_eq!(granted, both);
    // Someone else's identity gets nothing.
    let r = call(
        mallory,
        Request::VaultsClone {
            vault: "prod".into(),
            node: b.node_id(),
            follow: false,
        },
    )
    .await;
    assert!(r.is_err(), "{r:?}");

    // Unshared from the person: both of Alice's nodes are refused.
    ok(
        &b,
        Request::VaultsUnshare {
            vault: "prod".into(),
            to: alice,
        },
    )
    .await;
    for n in [laptop, server] {
        let r = call(n, keynode_agent::testing::pull("prod")).await;
        assert!(r.is_err(), "{r:?}");
    }
}

#[actix_rt::test]
async fn a_node_claimed_into_the_gestalt_after_a_share_gets_it_without_the_owner_acting() {
    let net = TestNet::new();
    let (b, mut nodes) = owner_and(&net, &["alice-laptop"]).await;
    let laptop = nodes.remove(0);
    // Shared with Alice, the person: her laptop is the node that proves it.
    claim_identity(&laptop, "alice").await;
    ok(
        &b,
        Request::VaultsShare {
            vault: "prod".into(),
            to: "offline:alice".parse().unwrap(),
        },
    )
    .await;
    keynode_agent::testing::arrives(&laptop, "vault_share", WITHIN).await;

    // Alice's new server: knows her laptop and where B is, trusts B; B has
    // never heard of it.
    let server = net.node("alice-server").await;
    knows(&server, &laptop).await;
    knows(&laptop, &server).await;
    knows(&server, &b).await;
    trust(&server, &b).await;
    let r = call(
        &server,
        Request::VaultsClone {
            vault: "prod".into(),
            node: b.node_id(),
            follow: true,
        },
    )
    .await;
    assert!(r.is_err(), "not in the gestalt yet: {r:?}");

    ok(
        &server,
        Request::IdentitiesInvite {
            node: laptop.node_id(),
        },
    )
    .await;
    ok(
        &laptop,
        Request::NodesClaim {
            node: server.node_id(),
        },
    )
    .await;
    // The laptop tells B; B verifies the new link itself, and the server gets
    // the share (within the 30 s) and can clone.
    let share =
        keynode_agent::testing::arrives(&server, "vault_share", Duration::from_secs(30)).await;
    assert_eq!(share.from, b.node_id());
    clone(&server, "prod", &b, true).await;
    assert!(value_is(&server, "prod", b"v0").await);

    // A hint from a node B does not know is ignored.
    let stranger = net.node("stranger").await;
    knows(&stranger, &b).await;
    let told: PeerResponse = stranger
        .network()
        .call(b.node_id(), &PeerRequest::GestaltGrew { members: vec![] })
        .await
        .expect("answered");
    assert!(matches!(told, PeerResponse::Noted));
}

#[actix_rt::test]
async fn a_history_that_diverges_stops_following_and_rewrites_nothing() {
    let net = TestNet::new();
    let (b, mut nodes) = owner_and(&net, &["a"]).await;
    let a = nodes.remove(0);
    share(&b, "prod", &a, true).await;
    // B's disk will die: a backup now, at v0.
    let archive = net.path().join("b.knbackup");
    ok(
        &b,
        Request::BackupCreate {
            path: archive.clone(),
        },
    )
    .await;
    clone(&a, "prod", &b, true).await;
    write(&b, "prod", "db/password", b"v1")
        .await
        .expect("write");
    until("the follower has v1", || value_is(&a, "prod", b"v1")).await;

    // B comes back from the backup, without v1, and writes on: its history no
    // longer holds A's head.
    let port = b.listen_addr().port();
    b.stop().await;
    let restored = net.path().join("b-restored");
    keynode_agent::backup::restore(&archive, &restored).expect("restore");
    let mut cfg = net.config("b-restored");
    cfg.agent_port = port;
    let b = Node::start(cfg).await.expect("restored owner");
    write(&b, "prod", "db/password", b"v2")
        .await
        .expect("write");
    until("the follower says it diverged", || async {
        matches!(
            status(&a, "prod").await,
            Some(FollowStatus::Diverged { .. })
        )
    })
    .await;
    // Nothing was rewritten; a fork keeps a writable copy.
    assert!(value_is(&a, "prod", b"v1").await);
    ok(
        &a,
        Request::VaultsFork {
            vault: "prod".into(),
            new_name: Some(VaultName::new("prod-kept").unwrap()),
        },
    )
    .await;
    assert!(value_is(&a, "prod-kept", b"v1").await);
    // Following again tries again, and stops again.
    ok(
        &a,
        Request::VaultsFollow {
            vault: "prod".into(),
            follow: true,
        },
    )
    .await;
    until("following again meets the same divergence", || async {
        matches!(
            status(&a, "prod").await,
            Some(FollowStatus::Diverged { .. })
        )
    })
    .await;
    assert!(value_is(&a, "prod", b"v1").await);
}
