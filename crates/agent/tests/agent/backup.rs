//! Backups of real nodes: taken while the node serves and writes, restored on
//! a new node path with the same identity, vaults, history, permissions and
//! queued deliveries; and refused whole when damaged or foreign.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use keynode_agent::api::{Request, Response};
use keynode_agent::backup::{self, BackupError};
use keynode_agent::testing::{TestNet, knows, ok, pulled, read, trust, write};
use keynode_agent::{Node, NodeConfig};
use keynode_core::VaultName;

async fn backup_to(node: &Node, path: &Path) -> keynode_agent::api::BackupSummary {
    match ok(
        node,
        Request::BackupCreate {
            path: path.to_path_buf(),
        },
    )
    .await
    {
        Response::BackupCreated(s) => s,
        other => panic!("{other:?}"),
    }
}

async fn outbox_len(node: &Node) -> usize {
    match ok(node, Request::NotificationsOutboxRead).await {
        Response::Notifications(n) => n.len(),
        other => panic!("{other:?}"),
    }
}

async fn vault_names(node: &Node) -> Vec<String> {
    match ok(node, Request::VaultsList).await {
        Response::Vaults(v) => v.into_iter().map(|m| m.name.to_string()).collect(),
        other => panic!("{other:?}"),
    }
}

/// Every file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[actix_rt::test]
async fn a_backup_taken_during_writes_restores_the_whole_node() {
    let net = TestNet::new();
    let a = net.node("a").await;
    let b = net.node("b").await;
    let c = net.node("c").await;
    for (x, y) in [(&a, &b), (&b, &a), (&a, &c), (&c, &a)] {
        knows(x, y).await;
    }
    trust(&a, &b).await;
    trust(&b, &a).await;
    trust(&a, &c).await;
    for v in ["prod", "dev"] {
        ok(
            &a,
            Request::VaultsCreate {
                name: VaultName::new(v).unwrap(),
            },
        )
        .await;
    }
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
    // A notification for C, who is down: it waits in A's outbox.
    let c_id = c.node_id();
    c.stop().await;
    ok(
        &a,
        Request::NotificationsSend {
            node: c_id,
            message: "for later".into(),
        },
    )
    .await;
    assert_eq!(outbox_len(&a).await, 1);

    // Writes run on while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        let socket = a.socket_path();
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let request = Request::SecretsWrite {
                    vault: "dev".into(),
                    path: keynode_agent::testing::secret_path(&format!("k{i}")),
                    create_new: false,
                };
                let value = format!("v{i}");
                keynode_agent::Client::connect(&socket)
                    .await
                    .unwrap()
                    .upload(request, &mut value.as_bytes())
                    .await
                    .unwrap();
                i += 1;
                acked.store(i, Ordering::SeqCst);
            }
        })
    };
    while acked.load(Ordering::SeqCst) < 5 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let before = acked.load(Ordering::SeqCst);
    let archive = net.path().join("a.backup");
    let summary = backup_to(&a, &archive).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    assert_eq!(summary.node_id, a.node_id());
    assert!(summary.members > 5, "{summary:?}");
    // The node served reads during and after.
    assert_eq!(read(&a, "prod", "db/password").await, b"hunter2");
    let manifest = backup::verify(&archive).unwrap();
    assert_eq!(manifest.node_id, a.node_id());

    // Nothing in the archive is in the clear.
    let bytes = std::fs::read(&archive).unwrap();
    for needle in [&b"hunter2"[..], b"db/password", b"for later", b"prod"] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{:?} in the clear",
            String::from_utf8_lossy(needle)
        );
    }

    // The disk dies: A comes back from the archive on another node path.
    let a_id = a.node_id();
    a.stop().await;
    let restored = net.path().join("a2");
    backup::restore(&archive, &restored).unwrap();
    let mut cfg = NodeConfig::new(&restored, "pw");
    cfg.provider_dir = Some(net.path().join("offline-provider"));
    let a2 = Node::start(cfg).await.expect("the restored node starts");
    assert_eq!(a2.node_id(), a_id);
    assert_eq!(vault_names(&a2).await, ["dev", "prod"]);
    assert_eq!(read(&a2, "prod", "db/password").await, b"hunter2");
    // Every write acknowledged before the backup began is in it.
    for i in 0..before {
        assert_eq!(
            read(&a2, "dev", &format!("k{i}")).await,
            format!("v{i}").as_bytes()
        );
    }
    // Permissions, trust and the queued delivery came along.
    match ok(
        &a2,
        Request::VaultsPermissions {
            vault: "prod".into(),
        },
    )
    .await
    {
        Response::VaultPermissions(grants) => assert!(
            grants
                .iter()
                .any(|g| g.nodes.contains(&b.node_id()) && g.actions.contains(&"pull".to_string())),
            "{grants:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(outbox_len(&a2).await, 1);
    // B's clone pulls from the restored node at its new address.
    ok(
        &b,
        Request::NodesAdd {
            node: a_id,
            host: "127.0.0.1".into(),
            port: a2.listen_addr().port(),
        },
    )
    .await;
    write(&a2, "prod", "db/user", b"admin").await.unwrap();
    assert_eq!(pulled(&b, "prod").await, 1);
    assert_eq!(read(&b, "prod", "db/user").await, b"admin");
    a2.stop().await;
    b.stop().await;
}

#[actix_rt::test]
async fn damaged_foreign_and_misplaced_archives_are_refused_and_write_nothing() {
    let net = TestNet::new();
    let a = net.node("a").await;
    ok(
        &a,
        Request::VaultsCreate {
            name: VaultName::new("v").unwrap(),
        },
    )
    .await;
    write(&a, "v", "s", b"secret value").await.unwrap();
    let good = net.path().join("good.backup");
    backup_to(&a, &good).await;
    let other = net.node("other").await;
    let foreign = net.path().join("other.backup");
    backup_to(&other, &foreign).await;
    // A second backup to the same file is refused; the first is untouched.
    let first = std::fs::read(&good).unwrap();
    match keynode_agent::testing::call(&a, Request::BackupCreate { path: good.clone() }).await {
        Err(keynode_agent::ClientError::Api(e)) => {
            assert_eq!(e.kind, keynode_agent::api::ErrorKind::Exists, "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&good).unwrap(), first);
    a.stop().await;
    other.stop().await;

    let bytes = std::fs::read(&good).unwrap();
    let dir = net.path().join("bad");
    std::fs::create_dir(&dir).unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("no manifest", bytes[..bytes.len() - 4096].to_vec()),
        (
            "random",
            (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
    ];
    // A flipped bit in the middle of the content.
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    cases.push(("bit flip", flipped));
    cases.push(("reordered", reorder(&good)));
    cases.push(("resigned", resign_manifest(&good, &foreign)));
    cases.push(("extra member", with_extra_member(&good)));
    cases.push(("oversized member", oversized_member()));
    for (name, data) in cases {
        let file = dir.join(format!("{}.backup", name.replace(' ', "-")));
        std::fs::write(&file, &data).unwrap();
        let err = backup::verify(&file).expect_err(name);
        assert!(matches!(err, BackupError::Invalid(_)), "{name}: {err}");
        let target = net
            .path()
            .join(format!("restore-{}", name.replace(' ', "-")));
        let err = backup::restore(&file, &target).expect_err(name);
        assert!(matches!(err, BackupError::Invalid(_)), "{name}: {err}");
        assert!(!target.exists(), "{name}: the target was written");
    }
    // No staging directory is left beside the targets.
    let leftovers: Vec<_> = std::fs::read_dir(net.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".keynode-restore-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A restore over a node path that holds anything is refused untouched.
    let busy = net.path().join("a");
    let before = files_under(&busy).len();
    let err = backup::restore(&good, &busy).unwrap_err();
    assert!(matches!(err, BackupError::NotEmpty(_)), "{err}");
    assert_eq!(files_under(&busy).len(), before);
    // The good one restores into an empty directory.
    let empty = net.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    backup::restore(&good, &empty).unwrap();
    assert!(empty.join("keys/root.key").is_file());
}

/// Members of the archive at `path`: (name, content), in order.
fn members(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (name, data)
        })
        .collect()
}

fn tar_of(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// The same members, the first two swapped.
fn reorder(path: &Path) -> Vec<u8> {
    let mut m = members(path);
    m.swap(0, 1);
    tar_of(&m)
}

/// The archive with another node's manifest signature.
fn resign_manifest(path: &Path, foreign: &Path) -> Vec<u8> {
    let mut m = members(path);
    let sig = members(foreign).pop().unwrap();
    *m.last_mut().unwrap() = sig;
    tar_of(&m)
}

/// The archive with one more vault file that the manifest does not list.
fn with_extra_member(path: &Path) -> Vec<u8> {
    let mut m = members(path);
    let at = m.len() - 2;
    m.insert(
        at,
        (
            "vaults/x.git/HEAD".into(),
            b"ref: refs/heads/main\n".to_vec(),
        ),
    );
    tar_of(&m)
}

/// A member whose header announces far more than follows.
fn oversized_member() -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path("keys/root.key").unwrap();
    h.set_size(1 << 40);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(&[0u8; 4096]);
    out
}
