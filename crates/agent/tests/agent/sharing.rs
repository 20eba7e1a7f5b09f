//! Vault sharing across four and more real agents (SPEC §6 and §7): share,
//! notifications, scan, clone, pull, unshare, fork; outsiders learn nothing;
//! interrupted transfers change nothing.

use std::time::{Duration, Instant};

use keynode_agent::api::{ErrorKind, GestaltAction, Request, Response};
use keynode_agent::peer::{PeerRequest, PeerResponse};
use keynode_agent::testing::{
    TestNet, arrives, call, inbox, knows, ok, pull, pulled, read, trust, write,
};
use keynode_agent::{ClientError, Node};
use keynode_core::{NodeId, SystemClock, TidGenerator, VaultName};
use keynode_net::NetError;
use keynode_notify::{Notification, NotificationData};
use rand::RngCore;

fn refused(r: Result<Response, ClientError>, kind: ErrorKind) -> String {
    match r {
        Err(ClientError::Api(e)) if e.kind == kind => e.message,
        other => panic!("expected {kind:?}, got {other:?}"),
    }
}

async fn vault_names(node: &Node) -> Vec<String> {
    match ok(node, Request::VaultsList).await {
        Response::Vaults(v) => v.into_iter().map(|m| m.name.to_string()).collect(),
        other => panic!("{other:?}"),
    }
}

async fn head(node: &Node, vault: &str) -> String {
    match ok(
        node,
        Request::VaultsLog {
            vault: vault.into(),
            depth: Some(1),
            commit: None,
        },
    )
    .await
    {
        Response::Log(l) => l[0].oid.clone(),
        other => panic!("{other:?}"),
    }
}

/// B owns vaults; A and A2 are one gestalt that trusts B; C is an outsider.
async fn world(net: &TestNet) -> (Node, Node, Node, Node) {
    let b = net.node("b").await;
    let a = net.node("a").await;
    let a2 = net.node("a2").await;
    let c = net.node("c").await;
    for x in [&b, &a, &a2, &c] {
        for y in [&b, &a, &a2, &c] {
            if x.node_id() != y.node_id() {
                knows(x, y).await;
            }
        }
    }
    ok(&a2, Request::IdentitiesInvite { node: a.node_id() }).await;
    ok(&a, Request::NodesClaim { node: a2.node_id() }).await;
    for n in [&a, &a2, &c] {
        trust(n, &b).await;
    }
    trust(&b, &a).await;
    ok(
        &b,
        Request::IdentitiesDiscover {
            gestalt: a.node_id().into(),
        },
    )
    .await;
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
    (b, a, a2, c)
}

#[actix_rt::test]
async fn share_notify_scan_clone_pull_unshare_across_a_gestalt() {
    let net = TestNet::new();
    let (b, a, a2, c) = world(&net).await;

    // Sharing with a node B does not know says how to fix it.
    let stranger = net.node("stranger").await;
    let msg = refused(
        call(
            &b,
            Request::VaultsShare {
                vault: "prod".into(),
                to: stranger.node_id().into(),
            },
        )
        .await,
        ErrorKind::NotFound,
    );
    assert!(
        msg.contains("nodes add") && msg.contains("identities trust"),
        "{msg}"
    );

    // 1. Share with A: the whole gestalt gets clone, pull and scan, and every
    // node of it is notified.
    ok(
        &b,
        Request::VaultsShare {
            vault: "prod".into(),
            to: a.node_id().into(),
        },
    )
    .await;
    for n in [&a, &a2] {
        let note = arrives(n, "vault_share", Duration::from_secs(10)).await;
        assert_eq!(note.from, b.node_id());
        assert!(
            note.data.contains("\"vault_name\":\"prod\""),
            "{}",
            note.data
        );
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
    assert!(grants[0].nodes.contains(&a2.node_id()) && grants[0].nodes.contains(&a.node_id()));
    assert_eq!(grants[0].actions, ["clone", "pull"]);

    // 3. A2, never named in the share, scans and clones; a local vault of the
    // same name makes the clone `prod-1`, the next `prod-2`.
    let Response::Scan(list) = ok(&a2, Request::VaultsScan { node: b.node_id() }).await else {
        panic!("no scan")
    };
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "prod");
    assert_eq!(list[0].actions, ["clone", "pull"]);
    ok(
        &a2,
        Request::VaultsCreate {
            name: VaultName::new("prod").unwrap(),
        },
    )
    .await;
    let Response::Vault(clone) = ok(
        &a2,
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
    assert_eq!(clone.name.as_str(), "prod-1");
    let remote = clone.remote.expect("remote recorded");
    assert_eq!(remote.node, b.node_id());
    let Response::Vault(again) = ok(
        &a2,
        Request::VaultsClone {
            vault: list[0].vault_id.clone(),
            node: b.node_id(),
            follow: false,
        },
    )
    .await
    else {
        panic!("no clone")
    };
    assert_eq!(again.name.as_str(), "prod-2");
    assert_ne!(again.id, clone.id, "a clone gets a new local id");
    assert_eq!(read(&a2, "prod-1", "db/password").await, b"hunter2");
    assert_eq!(
        head(&a2, "prod-1").await,
        head(&b, "prod").await,
        "same history"
    );

    // 5. Pull: only the new commits; fast-forward; up to date afterwards.
    write(&b, "prod", "db/password", b"correct horse")
        .await
        .expect("write");
    write(&b, "prod", "db/user", b"admin").await.expect("write");
    let commits = pulled(&a2, "prod-1").await;
    assert_eq!(commits, 2);
    assert_eq!(read(&a2, "prod-1", "db/password").await, b"correct horse");
    let commits = pulled(&a2, "prod-1").await;
    assert_eq!(commits, 0);

    // 6. Clones are immutable; a fork is a writable copy with no remote.
    let msg = refused(write(&a2, "prod-1", "x", b"1").await, ErrorKind::ReadOnly);
    assert!(msg.contains("vaults fork"), "{msg}");
    let Response::Vault(fork) = ok(
        &a2,
        Request::VaultsFork {
            vault: "prod-1".into(),
            new_name: None,
        },
    )
    .await
    else {
        panic!("no fork")
    };
    assert!(fork.remote.is_none());
    write(&a2, fork.name.as_str(), "mine", b"1")
        .await
        .expect("write to fork");

    // Divergent history: pulling an unrelated vault into the clone is refused
    // with Diverged and changes nothing.
    ok(
        &b,
        Request::VaultsCreate {
            name: VaultName::new("other").unwrap(),
        },
    )
    .await;
    write(&b, "other", "k", b"v").await.expect("write");
    ok(
        &b,
        Request::VaultsShare {
            vault: "other".into(),
            to: a.node_id().into(),
        },
    )
    .await;
    let before = head(&a2, "prod-1").await;
    let msg = refused(
        call(
            &a2,
            Request::VaultsPull {
                vault: "prod-1".into(),
                node: Some(b.node_id()),
                pull_vault: Some("other".into()),
            },
        )
        .await,
        ErrorKind::Conflict,
    );
    assert!(msg.contains("diverged"), "{msg}");
    assert_eq!(head(&a2, "prod-1").await, before);
    assert_eq!(read(&a2, "prod-1", "db/password").await, b"correct horse");
    // ...and the stored remote still points at prod.
    pulled(&a2, "prod-1").await;

    // 7. The outsider learns nothing: the same refusal whether the vault exists.
    let denied = [
        refused(
            call(&c, Request::VaultsScan { node: b.node_id() }).await,
            ErrorKind::PermissionDenied,
        ),
        refused(
            call(
                &c,
                Request::VaultsClone {
                    vault: "prod".into(),
                    node: b.node_id(),
                    follow: false,
                },
            )
            .await,
            ErrorKind::PermissionDenied,
        ),
        refused(
            call(
                &c,
                Request::VaultsClone {
                    vault: "no-such".into(),
                    node: b.node_id(),
                    follow: false,
                },
            )
            .await,
            ErrorKind::PermissionDenied,
        ),
        refused(
            call(
                &c,
                Request::VaultsClone {
                    vault: clone.id.to_string(),
                    node: b.node_id(),
                    follow: false,
                },
            )
            .await,
            ErrorKind::PermissionDenied,
        ),
    ];
    assert!(denied.iter().all(|m| m == &denied[1]), "{denied:?}");
    assert!(!denied[1].contains("prod") && !denied[1].contains("no-such"));
    let mine = ok(
        &c,
        Request::VaultsCreate {
            name: VaultName::new("c-own").unwrap(),
        },
    )
    .await;
    let Response::Vault(mine) = mine else {
        panic!()
    };
    let _ = mine;
    assert_eq!(
        vault_names(&c).await,
        ["c-own"],
        "failed clones leave nothing"
    );

    // 2. Unshare: VaultUnshare to the gestalt; pulls refused; existing clones stay.
    ok(
        &b,
        Request::VaultsUnshare {
            vault: "prod".into(),
            to: a2.node_id().into(),
        },
    )
    .await;
    arrives(&a, "vault_unshare", Duration::from_secs(10)).await;
    refused(call(&a2, pull("prod-1")).await, ErrorKind::PermissionDenied);
    assert_eq!(read(&a2, "prod-1", "db/password").await, b"correct horse");
    // scan stays while `other` is shared, and lists only it.
    let Response::Scan(list) = ok(&a2, Request::VaultsScan { node: b.node_id() }).await else {
        panic!("no scan")
    };
    assert_eq!(
        list.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["other"]
    );
    ok(
        &b,
        Request::VaultsUnshare {
            vault: "other".into(),
            to: a.node_id().into(),
        },
    )
    .await;
    refused(
        call(&a2, Request::VaultsScan { node: b.node_id() }).await,
        ErrorKind::PermissionDenied,
    );

    // Deleting a vault purges its grants.
    ok(
        &b,
        Request::VaultsShare {
            vault: "other".into(),
            to: a.node_id().into(),
        },
    )
    .await;
    ok(
        &b,
        Request::VaultsDelete {
            vault: "other".into(),
        },
    )
    .await;
    let Response::Permissions(p) = ok(
        &b,
        Request::IdentitiesPermissions {
            gestalt: a.node_id().into(),
        },
    )
    .await
    else {
        panic!()
    };
    assert!(p.vaults.is_empty(), "{p:?}");

    for n in [a, a2, b, c, stranger] {
        n.stop().await;
    }
}

#[actix_rt::test]
async fn a_notification_queued_while_the_recipient_is_down_arrives_when_it_returns() {
    let net = TestNet::new();
    let b = net.node("b").await;
    let a = net.node("a").await;
    let port = a.listen_addr().port();
    knows(&b, &a).await;
    knows(&a, &b).await;
    trust(&a, &b).await;
    let a_id = a.node_id();
    a.stop().await;

    ok(
        &b,
        Request::NotificationsSend {
            node: a_id,
            message: "while you were out".into(),
        },
    )
    .await;
    let Response::Notifications(queued) = ok(&b, Request::NotificationsOutboxRead).await else {
        panic!()
    };
    assert_eq!(queued.len(), 1, "queued while unreachable");

    // A comes back and connects to B: B retries at once, not after its backoff.
    let a = net.node_on("a", port).await;
    let t = Instant::now();
    ok(&a, Request::NodesPing { node: b.node_id() }).await;
    let note = arrives(&a, "general", Duration::from_secs(30)).await;
    assert!(note.data.contains("while you were out"));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    let Response::Notifications(queued) = ok(&b, Request::NotificationsOutboxRead).await else {
        panic!()
    };
    assert!(queued.is_empty());
    a.stop().await;
    b.stop().await;
}

#[actix_rt::test]
async fn untrusted_and_unknown_senders_get_the_same_refusal() {
    let net = TestNet::new();
    let a = net.node("a").await;
    let known = net.node("known").await;
    let unknown = net.node("unknown").await;
    let trusted = net.node("trusted").await;
    for n in [&known, &unknown, &trusted] {
        knows(n, &a).await;
    }
    // `known` is in A's graph (A granted it scan) but not trusted.
    ok(
        &a,
        Request::IdentitiesAllow {
            gestalt: known.node_id().into(),
            action: GestaltAction::Scan,
        },
    )
    .await;
    trust(&a, &trusted).await;

    let tids = TidGenerator::new(SystemClock);
    let send = |from: &Node, to: NodeId| {
        let signed = Notification {
            id: tids.next_id(),
            from: from.node_id(),
            to,
            sent_ms: 1,
            data: NotificationData::General {
                message: "hi".into(),
            },
        }
        .sign(from.network().key())
        .expect("sign");
        let net = from.network().clone();
        async move {
            net.call::<_, PeerResponse>(to, &PeerRequest::Notify { signed })
                .await
        }
    };
    let refusal = |r: Result<PeerResponse, NetError>| match r {
        Err(NetError::Remote(w)) => (w.kind, w.message),
        other => panic!("not refused: {other:?}"),
    };
    let from_known = refusal(send(&known, a.node_id()).await);
    let from_unknown = refusal(send(&unknown, a.node_id()).await);
    assert_eq!(from_known, from_unknown);
    // A notification signed by one node but sent by another is refused the same way.
    let forged = Notification {
        id: tids.next_id(),
        from: trusted.node_id(),
        to: a.node_id(),
        sent_ms: 1,
        data: NotificationData::General {
            message: "forged".into(),
        },
    }
    .sign(unknown.network().key())
    .expect("sign");
    let r = unknown
        .network()
        .call::<_, PeerResponse>(a.node_id(), &PeerRequest::Notify { signed: forged })
        .await;
    assert_eq!(refusal(r), from_known);
    // The trusted one gets through.
    assert!(matches!(
        send(&trusted, a.node_id()).await,
        Ok(PeerResponse::Notified)
    ));
    let got = inbox(&a).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].from, trusted.node_id());
    for n in [a, known, unknown, trusted] {
        n.stop().await;
    }
}

/// How long a test waits for the event it expects before failing.
const PATIENCE: Duration = Duration::from_secs(60);

#[actix_rt::test]
async fn a_connection_cut_in_the_middle_of_a_pack_changes_nothing() {
    /// Every file under `dir`, with its length.
    fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                match e.file_type() {
                    Ok(t) if t.is_dir() => stack.push(e.path()),
                    Ok(_) => out.push((e.path(), e.metadata().map(|m| m.len()).unwrap_or(0))),
                    Err(_) => {}
                }
            }
        }
        out
    }
    let net = TestNet::new();
    let b = net.node("b").await;
    let a = net.node("a").await;
    knows(&b, &a).await;
    knows(&a, &b).await;
    trust(&a, &b).await;
    trust(&b, &a).await;
    ok(
        &b,
        Request::VaultsCreate {
            name: VaultName::new("big").unwrap(),
        },
    )
    .await;
    let mut blob = vec![0u8; 64 * 1024 * 1024];
    rand::thread_rng().fill_bytes(&mut blob);
    write(&b, "big", "blob", &blob).await.expect("write");
    ok(
        &b,
        Request::VaultsShare {
            vault: "big".into(),
            to: a.node_id().into(),
        },
    )
    .await;
    let vaults_dir = a.paths().vaults();

    // Cuts the connection once the receiver has written part of the pack to
    // disk: a file under some repository's `objects` that was not there
    // before, not empty.
    let cut_mid_pack = || {
        let (b_net, a_id) = (b.network().clone(), a.node_id());
        let dir = vaults_dir.clone();
        let before = files_under(&dir);
        tokio::spawn(async move {
            let deadline = Instant::now() + PATIENCE;
            loop {
                let now = files_under(&dir);
                let arrived = now.iter().any(|(f, len)| {
                    *len > 0
                        && f.components().any(|c| c.as_os_str() == "objects")
                        && !before.iter().any(|(g, _)| g == f)
                });
                if arrived {
                    break;
                }
                assert!(Instant::now() < deadline, "the pack never reached the disk");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            b_net.disconnect(a_id);
        })
    };

    // Clone cut short: no vault, no name taken, nothing left in the vaults dir.
    let cutter = cut_mid_pack();
    let r = call(
        &a,
        Request::VaultsClone {
            vault: "big".into(),
            node: b.node_id(),
            follow: false,
        },
    )
    .await;
    cutter.await.expect("cutter");
    assert!(
        r.is_err(),
        "the clone finished before the cut; make the vault bigger"
    );
    assert!(vault_names(&a).await.is_empty());
    // The failed receive removes its staging directory as it unwinds.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left: Vec<_> = std::fs::read_dir(&vaults_dir)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "leftovers: {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A complete clone, then a pull cut short: head and content unchanged.
    ok(
        &b,
        Request::VaultsCreate {
            name: VaultName::new("small").unwrap(),
        },
    )
    .await;
    write(&b, "small", "k", b"v1").await.expect("write");
    ok(
        &b,
        Request::VaultsShare {
            vault: "small".into(),
            to: a.node_id().into(),
        },
    )
    .await;
    ok(
        &a,
        Request::VaultsClone {
            vault: "small".into(),
            node: b.node_id(),
            follow: false,
        },
    )
    .await;
    write(&b, "small", "big", &blob).await.expect("write");
    write(&b, "small", "k", b"v2").await.expect("write");
    let before = head(&a, "small").await;
    let cutter = cut_mid_pack();
    let r = call(&a, pull("small")).await;
    cutter.await.expect("cutter");
    assert!(r.is_err(), "the pull finished before the cut");
    assert_eq!(head(&a, "small").await, before);
    assert_eq!(read(&a, "small", "k").await, b"v1");
    // The next pull completes.
    ok(&a, pull("small")).await;
    assert_eq!(read(&a, "small", "k").await, b"v2");
    a.stop().await;
    b.stop().await;
}

/// As the `keynode` binary runs them (a multi-threaded runtime, where short
/// store jobs take turns on the process's few job threads and streamed
/// transfers run beside them): clones and pulls of a small vault and of one
/// whose pack is past what is built in memory, all at once, both ways.
#[test]
fn transfers_at_once_on_a_multi_threaded_runtime() {
    let system = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    });
    system.block_on(async {
        let net = TestNet::new();
        let a = net.node("a").await;
        let b = net.node("b").await;
        knows(&a, &b).await;
        knows(&b, &a).await;
        trust(&a, &b).await;
        trust(&b, &a).await;
        let mut big = vec![0u8; 2 << 20];
        rand::thread_rng().fill_bytes(&mut big);
        for (owner, other) in [(&a, &b), (&b, &a)] {
            for name in ["small", "big"] {
                ok(
                    owner,
                    Request::VaultsCreate {
                        name: VaultName::new(name).unwrap(),
                    },
                )
                .await;
                ok(
                    owner,
                    Request::VaultsShare {
                        vault: name.into(),
                        to: other.node_id().into(),
                    },
                )
                .await;
            }
            write(owner, "small", "s", b"one").await.expect("write");
            write(owner, "big", "blob", &big).await.expect("write");
        }
        async fn clone(node: &Node, vault: &str, from: &Node) -> Result<Response, ClientError> {
            let req = Request::VaultsClone {
                vault: vault.into(),
                node: from.node_id(),
                follow: false,
            };
            call(node, req).await
        }
        let (r1, r2, r3, r4) = tokio::join!(
            clone(&a, "small", &b),
            clone(&a, "big", &b),
            clone(&b, "small", &a),
            clone(&b, "big", &a),
        );
        for r in [r1, r2, r3, r4] {
            r.expect("clone");
        }
        for (owner, other) in [(&a, &b), (&b, &a)] {
            write(owner, "small", "s", b"two").await.expect("write");
            big[0] ^= 1;
            write(owner, "big", "blob", &big).await.expect("write");
            let (p1, p2) = tokio::join!(call(other, pull("small-1")), call(other, pull("big-1")));
            p1.expect("pull small");
            p2.expect("pull big");
            assert_eq!(read(other, "small-1", "s").await, b"two");
            assert!(
                read(other, "big-1", "blob").await == big,
                "the big secret came back changed"
            );
        }
    });
}
