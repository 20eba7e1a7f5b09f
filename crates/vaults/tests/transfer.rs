//! Clone, pull and fork between real stores (each with its own LMDB env and
//! vaults directory) in one process, connected through byte buffers or a pipe.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;

use keynode_core::{SecretPath, VaultId, VaultName};
use keynode_vaults::{
    EntryKind, Op, PackStats, PullOutcome, PutPolicy, Remote, VaultError, VaultManager, VaultMeta,
    messages, want,
};
use support::{Node, Pipe, noise};

mod support;

impl Node {
    fn dir(&self) -> PathBuf {
        self.tmp.path().join("vaults")
    }

    /// What is in the vaults directory, sorted.
    fn files(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    fn put(&self, v: VaultId, path: &str, data: &[u8]) {
        let blob = self.store.write_blob(v, &mut &data[..]).unwrap();
        let op = Op::Put {
            path: SecretPath::new(path).unwrap(),
            blob,
            policy: PutPolicy::Overwrite,
        };
        self.store.commit(v, vec![op]).unwrap();
    }

    fn history(&self, v: VaultId) -> Vec<String> {
        let log = self.store.log(v, None, None).unwrap();
        log.into_iter().map(|c| c.oid).collect()
    }

    /// Every secret of the head, with its content, sorted by path.
    fn content(&self, v: VaultId) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut dirs = vec![None::<SecretPath>];
        while let Some(dir) = dirs.pop() {
            for e in self.store.list_secrets(v, dir.as_ref(), None).unwrap() {
                let path = match &dir {
                    Some(d) => format!("{d}/{}", e.name),
                    None => e.name.clone(),
                };
                let path = SecretPath::new(&path).unwrap();
                match e.kind {
                    EntryKind::Dir => dirs.push(Some(path)),
                    EntryKind::File => {
                        let mut data = Vec::new();
                        self.store
                            .read_secret(v, &path, None, &mut |c| {
                                data.extend_from_slice(c);
                                Ok(())
                            })
                            .unwrap();
                        out.push((path.to_string(), data));
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Every file of a vault's repository, with its length, sorted.
    fn packs_and_objects(&self, v: VaultId) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        let mut stack = vec![self.store.repo_path(v)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let meta = e.metadata().unwrap();
                if meta.is_dir() {
                    stack.push(e.path());
                } else {
                    out.push((e.path(), meta.len()));
                }
            }
        }
        out.sort();
        out
    }

    /// The bundle files (data and index) of a vault's repository.
    fn bundles(&self, v: VaultId) -> Vec<String> {
        self.objects_in(v, "bundles")
    }

    /// The pack files of a vault's repository.
    fn packs(&self, v: VaultId) -> Vec<String> {
        self.objects_in(v, "pack")
    }

    /// The files in directory `dir` of a vault's `objects`, sorted.
    fn objects_in(&self, v: VaultId, dir: &str) -> Vec<String> {
        let dir = self.store.repo_path(v).join("objects").join(dir);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }
}

fn name_of(s: &str) -> VaultName {
    VaultName::new(s).unwrap()
}

/// The pack `server` sends for `want` to a client holding `haves`.
fn pack_of(
    server: &Node,
    v: VaultId,
    want: &str,
    haves: &[String],
) -> Result<(Vec<u8>, PackStats), VaultError> {
    let mut pack = Vec::new();
    let stats = server.store.send_pack(v, want, haves, &mut |chunk| {
        assert!(chunk.len() <= keynode_vaults::PACK_CHUNK);
        pack.extend_from_slice(chunk);
        Ok(())
    })?;
    assert_eq!(stats.bytes, pack.len() as u64);
    Ok((pack, stats))
}

/// Clones `server`'s vault `v` into `client`, as the agent would.
fn clone(server: &Node, v: VaultId, client: &Node) -> Result<(VaultMeta, PackStats), VaultError> {
    let advert = server.store.advertise(v)?;
    let (pack, stats) = pack_of(server, v, &advert.head, &[])?;
    let remote = Remote {
        node: server.id,
        vault: v,
    };
    let meta = client
        .store
        .receive_clone(&advert.name, remote, &advert.head, &mut &pack[..])?;
    Ok((meta, stats))
}

/// Pulls `client`'s clone `c` from `server` (the vault of its remote), as the
/// agent would; `None` stats when nothing had to be sent.
fn pull(
    server: &Node,
    client: &Node,
    c: VaultId,
) -> Result<(PullOutcome, Option<PackStats>), VaultError> {
    let remote = client.store.meta(c)?.remote.unwrap();
    let advert = server.store.advertise(remote.vault)?;
    let haves = client.store.haves(c)?;
    match want(&advert, &haves) {
        None => {
            let outcome = client
                .store
                .receive_pull(c, &advert.head, &mut io::empty())?;
            Ok((outcome, None))
        }
        Some(w) => {
            let (pack, stats) = pack_of(server, remote.vault, &w, &haves)?;
            let outcome = client.store.receive_pull(c, &advert.head, &mut &pack[..])?;
            Ok((outcome, Some(stats)))
        }
    }
}

/// A vault with some history: nested secrets, several commits.
fn populated(owner: &Node, name: &str) -> VaultId {
    let v = owner.vault(name);
    owner.put(v, "db/password", b"hunter2");
    owner.put(v, "db/user", b"admin");
    let ops = (0..50)
        .map(|i| Op::Put {
            path: SecretPath::new(&format!("keys/k{i:02}")).unwrap(),
            blob: owner.store.write_blob(v, &mut &noise(1024, i)[..]).unwrap(),
            policy: PutPolicy::CreateNew,
        })
        .collect();
    owner.store.commit(v, ops).unwrap();
    owner.put(v, "db/password", b"correct horse");
    v
}

#[test]
fn clone_copies_content_and_history_under_a_new_id() {
    let (owner, client) = (Node::new(), Node::new());
    let v = populated(&owner, "prod");
    let (meta, stats) = clone(&owner, v, &client).unwrap();
    assert_ne!(meta.id, v);
    assert_eq!(meta.name.as_str(), "prod");
    assert_eq!(
        meta.remote,
        Some(Remote {
            node: owner.id,
            vault: v
        })
    );
    assert_eq!(client.store.meta(meta.id).unwrap(), meta);
    assert_eq!(client.history(meta.id), owner.history(v));
    assert_eq!(client.content(meta.id), owner.content(v));
    assert_eq!(
        client.store.log(meta.id, None, None).unwrap(),
        owner.store.log(v, None, None).unwrap()
    );
    assert!(stats.objects > 50);

    // Name conflicts number the clone.
    let (second, _) = clone(&owner, v, &client).unwrap();
    let (third, _) = clone(&owner, v, &client).unwrap();
    assert_eq!(second.name.as_str(), "prod-1");
    assert_eq!(third.name.as_str(), "prod-2");
    assert_eq!(client.store.list().unwrap().len(), 3);
    assert!(client.files().iter().all(|f| f.ends_with(".git")));
}

#[test]
fn clones_are_read_only_and_forks_are_writable() {
    let (owner, client) = (Node::new(), Node::new());
    let v = populated(&owner, "prod");
    let (c, _) = clone(&owner, v, &client).unwrap();
    let blob = client.store.write_blob(c.id, &mut &b"x"[..]);
    assert!(matches!(blob, Err(VaultError::ReadOnly(_))));
    let rm = Op::Remove {
        path: SecretPath::new("db").unwrap(),
        recursive: true,
    };
    let err = client.store.commit(c.id, vec![rm]).unwrap_err();
    assert!(matches!(err, VaultError::ReadOnly(ref n) if n.as_str() == "prod"));
    assert!(err.to_string().contains("fork"));

    let fork = client.store.fork(c.id, None).unwrap();
    assert_eq!(fork.name.as_str(), "prod-fork");
    assert_eq!(fork.remote, None);
    assert_ne!(fork.id, c.id);
    assert_eq!(client.history(fork.id), client.history(c.id));
    assert_eq!(client.content(fork.id), client.content(c.id));
    client.put(fork.id, "db/password", b"mine now");
    assert_eq!(
        client.history(fork.id).len(),
        client.history(c.id).len() + 1
    );
    // The clone is untouched by writes to its fork.
    assert_eq!(client.history(c.id), owner.history(v));

    assert_eq!(
        client.store.fork(c.id, None).unwrap().name.as_str(),
        "prod-fork-1"
    );
    let named = client.store.fork(c.id, Some(&name_of("mine"))).unwrap();
    assert_eq!(named.name.as_str(), "mine");
    assert!(matches!(
        client.store.fork(c.id, Some(&name_of("mine"))),
        Err(VaultError::VaultExists(_))
    ));
    // Own vaults fork too, and the fork survives the source's deletion.
    let own = owner.store.fork(v, None).unwrap();
    owner.store.delete(v).unwrap();
    assert_eq!(owner.content(own.id), client.content(c.id));
    owner.put(own.id, "new", b"1");
    assert!(owner.files().iter().all(|f| f.ends_with(".git")));
}

#[test]
fn pull_sends_only_what_is_new() {
    let (owner, client) = (Node::new(), Node::new());
    let v = populated(&owner, "prod");
    let (c, full) = clone(&owner, v, &client).unwrap();

    owner.put(v, "keys/k07", b"rotated");
    let (outcome, stats) = pull(&owner, &client, c.id).unwrap();
    let stats = stats.unwrap();
    assert_eq!(
        outcome,
        PullOutcome::Updated {
            from: client.history(c.id)[1].clone(),
            to: owner.head(v),
            commits: 1
        }
    );
    // One commit, the root tree, `keys/` and one blob.
    assert_eq!(stats.objects, 4);
    assert!(
        stats.bytes * 10 < full.bytes && stats.bytes < 4096,
        "pull {} B, clone {} B",
        stats.bytes,
        full.bytes
    );
    assert_eq!(client.content(c.id), owner.content(v));
    assert_eq!(client.history(c.id), owner.history(v));

    // Up to date: nothing to ask for, and an empty pack if asked anyway.
    let (outcome, stats) = pull(&owner, &client, c.id).unwrap();
    assert_eq!((outcome, stats), (PullOutcome::UpToDate, None));
    let haves = client.store.haves(c.id).unwrap();
    let (pack, stats) = pack_of(&owner, v, &owner.head(v), &haves).unwrap();
    assert_eq!(stats.objects, 0);
    let packs = client.packs(c.id);
    let outcome = client
        .store
        .receive_pull(c.id, &owner.head(v), &mut &pack[..])
        .unwrap();
    assert_eq!(outcome, PullOutcome::UpToDate);
    assert_eq!(client.packs(c.id), packs, "an empty pack is not stored");

    // A restore on the owner is a new commit: still a fast-forward.
    let first = owner.history(v).last().unwrap().clone();
    owner.store.version(v, &first).unwrap();
    let (outcome, _) = pull(&owner, &client, c.id).unwrap();
    assert!(matches!(outcome, PullOutcome::Updated { commits: 1, .. }));
    assert!(client.content(c.id).is_empty());
    assert_eq!(client.history(c.id), owner.history(v));

    // Several commits at once.
    owner.put(v, "a", b"1");
    owner.put(v, "b", b"2");
    owner.put(v, "a", b"3");
    let (outcome, _) = pull(&owner, &client, c.id).unwrap();
    assert!(matches!(outcome, PullOutcome::Updated { commits: 3, .. }));
    assert_eq!(client.content(c.id), owner.content(v));
}

#[test]
fn many_pulls_keep_few_packs() {
    let (owner, client) = (Node::new(), Node::new());
    let v = populated(&owner, "prod");
    let (c, _) = clone(&owner, v, &client).unwrap();
    for i in 0..keynode_vaults::MAX_PACKS + 5 {
        owner.put(
            v,
            &format!("keys/k{:02}", i % 50),
            format!("v{i}").as_bytes(),
        );
        let (outcome, _) = pull(&owner, &client, c.id).unwrap();
        assert!(matches!(outcome, PullOutcome::Updated { commits: 1, .. }));
        let packs = client.packs(c.id).len() / 2;
        assert!(packs <= keynode_vaults::MAX_PACKS, "{packs} packs");
        // With encrypted objects (this store's), a small pull goes to the
        // journal, a larger one adds a bundle.
        let bundles = client.bundles(c.id);
        assert!(
            bundles.len() / 2 <= keynode_vaults::MAX_BUNDLES,
            "{bundles:?}"
        );
        assert!(
            bundles
                .iter()
                .all(|b| b.ends_with(".knb2") || b.ends_with(".kni3"))
        );
    }
    assert!(client.packs(c.id).len() / 2 < 10);
    assert!(
        client
            .store
            .repo_path(c.id)
            .join("objects")
            .join("journal.knj1")
            .is_file(),
        "small pulls are journaled"
    );
    assert_eq!(client.content(c.id), owner.content(v));
    assert_eq!(client.history(c.id), owner.history(v));
}

#[test]
fn pulls_into_own_vaults_are_refused() {
    let owner = Node::new();
    let v = populated(&owner, "prod");
    let head = owner.head(v);
    let err = owner
        .store
        .receive_pull(v, &head, &mut io::empty())
        .unwrap_err();
    assert!(matches!(err, VaultError::NotAClone(_)), "{err}");
}

#[test]
fn divergent_history_is_refused_and_changes_nothing() {
    let (owner, client) = (Node::new(), Node::new());
    let v = populated(&owner, "prod");
    let (c, full) = clone(&owner, v, &client).unwrap();
    // The owner forks its vault at the clone's head; both lines move on.
    let other = owner.store.fork(v, Some(&name_of("other"))).unwrap().id;
    owner.put(v, "db/password", b"line one");
    owner.put(other, "db/password", b"line two");
    owner.put(other, "db/user", b"root");
    pull(&owner, &client, c.id).unwrap();
    let head = client.head(c.id);
    let content = client.content(c.id);

    // The clone is pointed at the other line and pulls.
    let remote = Remote {
        node: owner.id,
        vault: other,
    };
    client.store.set_remote(c.id, Some(remote)).unwrap();
    let advert = owner.store.advertise(other).unwrap();
    let haves = client.store.haves(c.id).unwrap();
    let (pack, stats) = pack_of(&owner, other, &advert.head, &haves).unwrap();
    assert!(
        stats.bytes * 10 < full.bytes,
        "a divergent pull resent {} of {} bytes",
        stats.bytes,
        full.bytes
    );
    let err = client
        .store
        .receive_pull(c.id, &advert.head, &mut &pack[..])
        .unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::Diverged {
                ahead: 1,
                behind: 2
            }
        ),
        "{err}"
    );
    assert_eq!(client.head(c.id), head);
    assert_eq!(client.content(c.id), content);

    // The received commits stay unreachable: the clone does not serve them.
    let err = pack_of(&client, c.id, &advert.head, &[]).unwrap_err();
    assert!(matches!(err, VaultError::NotServed(_)), "{err}");
}

#[test]
fn wants_outside_the_served_history_are_refused() {
    let owner = Node::new();
    let v = populated(&owner, "prod");
    let w = owner.vault("w");
    owner.put(w, "x", b"elsewhere");
    let head = owner.head(v);

    // An ancestor of the head is served.
    let ancestor = owner.history(v)[2].clone();
    assert!(pack_of(&owner, v, &ancestor, &[]).is_ok());
    // A commit of another vault, a blob of this one: not served.
    let foreign = owner.head(w);
    let blob = owner
        .store
        .stat(v, &SecretPath::new("db/user").unwrap(), None)
        .unwrap()
        .blob;
    for bad in [foreign, blob, "0".repeat(40)] {
        let err = pack_of(&owner, v, &bad, &[]).unwrap_err();
        assert!(matches!(err, VaultError::NotServed(_)), "{bad}: {err}");
    }
    // Text that is no commit id at all.
    for bad in ["", "HEAD", "main", "zz", &"g".repeat(40), &head[..39], "é"] {
        let err = pack_of(&owner, v, bad, &[]).unwrap_err();
        assert!(matches!(err, VaultError::BadRevision(_)), "{bad}: {err}");
        let err = pack_of(&owner, v, &head, &[bad.to_owned()]).unwrap_err();
        assert!(matches!(err, VaultError::BadRevision(_)), "{bad}: {err}");
    }
    // Unknown haves are ignored.
    let (_, stats) = pack_of(&owner, v, &head, &["1".repeat(40)]).unwrap();
    let (_, full) = pack_of(&owner, v, &head, &[]).unwrap();
    assert_eq!(stats.objects, full.objects);
    // A client cannot claim a head it was not advertised.
    let client = Node::new();
    let remote = Remote {
        node: owner.id,
        vault: v,
    };
    let (pack, _) = pack_of(&owner, v, &head, &[]).unwrap();
    let err = client
        .store
        .receive_clone(&name_of("c"), remote, "nonsense", &mut &pack[..])
        .unwrap_err();
    assert!(matches!(err, VaultError::BadRevision(_)), "{err}");
}

/// Asserts that `client` holds no vault and no repository directory.
fn assert_empty(client: &Node) {
    assert!(client.store.list().unwrap().is_empty());
    assert!(client.files().is_empty(), "{:?}", client.files());
}

#[test]
fn a_failed_clone_leaves_nothing_behind() {
    let (owner, client) = (Node::new(), Node::new());
    let v = populated(&owner, "prod");
    let head = owner.head(v);
    let (pack, _) = pack_of(&owner, v, &head, &[]).unwrap();
    let remote = Remote {
        node: owner.id,
        vault: v,
    };
    let attempt = |bytes: &[u8]| {
        client
            .store
            .receive_clone(&name_of("prod"), remote, &head, &mut &bytes[..])
    };
    let len = pack.len();
    for cut in [0, 1, 12, 100, len / 2, len - 21, len - 1] {
        let err = attempt(&pack[..cut]).unwrap_err();
        assert!(
            matches!(err, VaultError::BadPack(_) | VaultError::MissingHead(_)),
            "cut at {cut}: {err}"
        );
        assert_empty(&client);
    }
    for at in [5, 20, len / 3, len / 2, len - 5] {
        let mut bad = pack.clone();
        bad[at] ^= 0x40;
        let err = attempt(&bad).unwrap_err();
        assert!(matches!(err, VaultError::BadPack(_)), "flip at {at}: {err}");
        assert_empty(&client);
    }
    let mut long = pack.clone();
    long.extend_from_slice(b"trailing");
    assert!(matches!(attempt(&long), Err(VaultError::BadPack(_))));
    assert_empty(&client);
    // A reader that fails midway.
    let mut failing = (&pack[..len / 2]).chain(Failing);
    let err = client
        .store
        .receive_clone(&name_of("prod"), remote, &head, &mut failing)
        .unwrap_err();
    assert!(matches!(err, VaultError::Io(_)), "{err}");
    assert_empty(&client);
    // A valid pack that lacks objects (the server believed a lying have).
    let parent = owner.history(v)[1].clone();
    let (thin, _) = pack_of(&owner, v, &head, &[parent]).unwrap();
    assert!(matches!(attempt(&thin), Err(VaultError::BadPack(_))));
    assert_empty(&client);
    // A valid pack of some other commit.
    let (other, _) = pack_of(&owner, v, &owner.history(v)[1], &[]).unwrap();
    assert!(matches!(attempt(&other), Err(VaultError::MissingHead(_))));
    assert_empty(&client);

    // The name is still free.
    assert_eq!(attempt(&pack).unwrap().name.as_str(), "prod");
}

struct Failing;

impl Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "peer went away",
        ))
    }
}

#[test]
fn a_failed_pull_leaves_the_clone_as_it_was() {
    let (owner, client) = (Node::new(), Node::new());
    let v = populated(&owner, "prod");
    let (c, _) = clone(&owner, v, &client).unwrap();
    for i in 0..3u64 {
        owner.put(v, &format!("keys/k{i:02}"), &noise(4096, 100 + i));
    }
    let advert = owner.store.advertise(v).unwrap();
    let haves = client.store.haves(c.id).unwrap();
    let (pack, _) = pack_of(&owner, v, &advert.head, &haves).unwrap();
    let head = client.head(c.id);
    let content = client.content(c.id);
    let packs = client.packs(c.id);
    let len = pack.len();
    let unchanged = |what: &str| {
        assert_eq!(client.head(c.id), head, "{what}");
        assert_eq!(client.content(c.id), content, "{what}");
        assert_eq!(client.packs(c.id), packs, "{what}");
    };
    for cut in [0, 1, 12, len / 2, len - 1] {
        let err = client
            .store
            .receive_pull(c.id, &advert.head, &mut &pack[..cut])
            .unwrap_err();
        assert!(
            matches!(err, VaultError::BadPack(_) | VaultError::MissingHead(_)),
            "cut at {cut}: {err}"
        );
        unchanged(&format!("cut at {cut}"));
    }
    for at in [20, len / 2, len - 3] {
        let mut bad = pack.clone();
        bad[at] ^= 0x01;
        let err = client
            .store
            .receive_pull(c.id, &advert.head, &mut &bad[..])
            .unwrap_err();
        assert!(matches!(err, VaultError::BadPack(_)), "flip at {at}: {err}");
        unchanged(&format!("flip at {at}"));
    }
    let mut failing = (&pack[..len / 2]).chain(Failing);
    let err = client
        .store
        .receive_pull(c.id, &advert.head, &mut failing)
        .unwrap_err();
    assert!(matches!(err, VaultError::Io(_)), "{err}");
    unchanged("failing reader");

    let outcome = client
        .store
        .receive_pull(c.id, &advert.head, &mut &pack[..])
        .unwrap();
    assert!(matches!(outcome, PullOutcome::Updated { commits: 3, .. }));
    assert_eq!(client.content(c.id), owner.content(v));
}

#[actix_rt::test]
async fn the_manager_answers_transfer_messages() {
    let (owner, client) = (Node::new(), Node::new());
    let v = populated(&owner, "prod");
    let (owner_id, client_dirs) = (owner.id, (owner.tmp, client.tmp));
    let server = actix::Actor::start(VaultManager::new(Arc::new(owner.store)));
    let receiver = actix::Actor::start(VaultManager::new(Arc::new(client.store)));

    let advert = server
        .send(messages::Advertise { vault: v })
        .await
        .unwrap()
        .unwrap();
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(4);
    let sent = server.send(messages::SendPack {
        vault: v,
        want: advert.head.clone(),
        haves: Vec::new(),
        sink: Box::new(move |chunk| tx.send(chunk.to_vec()).map_err(io::Error::other)),
        // A pipe of four chunks to the receiver, which runs at once.
        waits: true,
    });
    let received = receiver.send(messages::ReceiveClone {
        name: advert.name.clone(),
        remote: Remote {
            node: owner_id,
            vault: v,
        },
        head: advert.head.clone(),
        follow: keynode_vaults::Follow::On,
        pack: Box::new(Pipe {
            rx,
            chunk: Vec::new(),
            at: 0,
        }),
        waits: true,
    });
    let (sent, received) = tokio::join!(sent, received);
    let stats = sent.unwrap().unwrap();
    let clone = received.unwrap().unwrap();
    assert!(stats.objects > 0);
    assert_eq!(clone.name.as_str(), "prod");

    let haves = receiver
        .send(messages::Haves { vault: clone.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(haves[0], advert.head);
    let mut pack = Vec::new();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    server
        .send(messages::SendPack {
            vault: v,
            want: advert.head.clone(),
            haves,
            sink: Box::new(move |chunk| tx.send(chunk.to_vec()).map_err(io::Error::other)),
            waits: false,
        })
        .await
        .unwrap()
        .unwrap();
    pack.extend(rx.into_iter().flatten());
    let outcome = receiver
        .send(messages::ReceivePull {
            vault: clone.id,
            head: advert.head.clone(),
            pack: Box::new(io::Cursor::new(pack)),
            waits: false,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, PullOutcome::UpToDate);
    let fork = receiver
        .send(messages::Fork {
            vault: clone.id,
            name: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fork.name.as_str(), "prod-fork");
    assert_eq!(fork.remote, None);
    drop(client_dirs);
}

/// A pack of one commit whose tree holds `entries` (name, mode), as a hostile
/// source would build it with plain git; returns the pack and the commit id.
fn hostile_pack(entries: &[(&str, i32)]) -> (Vec<u8>, String) {
    let tmp = tempfile::tempdir().unwrap();
    let git = git2::Repository::init_bare(tmp.path()).unwrap();
    let blob = git.blob(b"payload").unwrap();
    // Written raw, as a hostile source would: libgit2's tree builder refuses
    // some of these names itself.
    let mut raw = Vec::new();
    let mut sorted = entries.to_vec();
    sorted.sort();
    for (name, mode) in sorted {
        raw.extend_from_slice(format!("{mode:o} {name}\0").as_bytes());
        raw.extend_from_slice(blob.as_bytes());
    }
    let tree_id = git
        .odb()
        .unwrap()
        .write(git2::ObjectType::Tree, &raw)
        .unwrap();
    let tree = git.find_tree(tree_id).unwrap();
    let sig = git2::Signature::new("evil", "evil@example", &git2::Time::new(0, 0)).unwrap();
    let commit = git.commit(None, &sig, &sig, "evil", &tree, &[]).unwrap();
    let mut pb = git.packbuilder().unwrap();
    pb.insert_commit(commit).unwrap();
    let mut buf = git2::Buf::new();
    pb.write_buf(&mut buf).unwrap();
    (buf.to_vec(), commit.to_string())
}

#[test]
fn received_trees_with_links_submodules_or_odd_names_are_refused() {
    let client = Node::new();
    let remote = Remote {
        node: keynode_core::Keypair::generate().node_id(),
        vault: VaultId::generate(),
    };
    for entries in [
        vec![("fine", 0o100644), ("link", 0o120000)],
        vec![("esc\u{1b}[2J", 0o100644)],
        vec![(".GIT", 0o100644)],
        vec![("back\\slash", 0o100644)],
        vec![("..", 0o100644)],
        vec![("sub", 0o160000)],
    ] {
        let (pack, head) = hostile_pack(&entries);
        let err = client
            .store
            .receive_clone(&name_of("evil"), remote, &head, &mut &pack[..])
            .unwrap_err();
        assert!(matches!(err, VaultError::BadTree(_)), "{entries:?}: {err}");
        assert_empty(&client);
    }
    // The same route takes a plain tree.
    let (pack, head) = hostile_pack(&[("fine", 0o100644), ("run", 0o100755)]);
    client
        .store
        .receive_clone(&name_of("plain"), remote, &head, &mut &pack[..])
        .unwrap();
}

#[test]
fn packs_that_would_pass_the_vault_size_limit_are_refused() {
    let owner = Node::new();
    let mut client = Node::new();
    client.store = client.store.with_max_vault_bytes(256 << 10);
    let v = owner.vault("big");
    owner.put(v, "small", b"fits");
    // A clone that fits.
    let (meta, _) = clone(&owner, v, &client).unwrap();
    assert!(client.store.vault_bytes(meta.id).unwrap() < 256 << 10);
    // A pull that would not: refused, the clone as it was, no new file.
    owner.put(v, "large", &noise(300 << 10, 9));
    let before = client.history(meta.id);
    let files_before = client.packs_and_objects(meta.id);
    let err = pull(&owner, &client, meta.id).unwrap_err();
    assert!(
        matches!(err, VaultError::VaultTooLarge { limit } if limit == 256 << 10),
        "{err}"
    );
    assert!(err.to_string().contains("size limit"), "{err}");
    assert_eq!(client.history(meta.id), before);
    assert_eq!(client.packs_and_objects(meta.id), files_before);
    // A clone that would not fit: nothing left behind.
    let other = Node::new();
    let mut small = Node::new();
    small.store = small.store.with_max_vault_bytes(64 << 10);
    let w = other.vault("w");
    other.put(w, "large", &noise(100 << 10, 3));
    let err = clone(&other, w, &small).unwrap_err();
    assert!(matches!(err, VaultError::VaultTooLarge { .. }), "{err}");
    assert_empty(&small);
}

/// Every head change queued on `rx`, as (vault, head).
fn drained(
    rx: &mut tokio::sync::broadcast::Receiver<keynode_vaults::HeadChange>,
) -> Vec<(VaultId, String)> {
    let mut out = Vec::new();
    while let Ok(change) = rx.try_recv() {
        out.push((change.vault, change.head));
    }
    out
}

#[test]
fn head_changes_follow_every_move_of_a_branch_and_nothing_else() {
    let (owner, client) = (Node::new(), Node::new());
    let mut owner_rx = owner.store.head_changes();
    let mut client_rx = client.store.head_events().subscribe();
    let v = owner.vault("prod");
    owner.put(v, "db", b"one");
    let first = owner.history(v)[0].clone();
    owner.put(v, "db", b"one"); // unchanged: no commit, no event
    assert_eq!(drained(&mut owner_rx), vec![(v, first.clone())]);
    let (meta, _) = clone(&owner, v, &client).unwrap();
    assert_eq!(drained(&mut client_rx), vec![(meta.id, first.clone())]);
    owner.put(v, "db", b"two");
    let second = owner.history(v)[0].clone();
    assert_eq!(drained(&mut owner_rx), vec![(v, second.clone())]);
    pull(&owner, &client, meta.id).unwrap();
    assert_eq!(drained(&mut client_rx), vec![(meta.id, second.clone())]);
    // Up to date: the branch does not move, nobody is told.
    pull(&owner, &client, meta.id).unwrap();
    assert!(drained(&mut client_rx).is_empty());
    let restored = owner.store.version(v, &first).unwrap();
    let restored = restored.commit().unwrap().oid.clone();
    assert_eq!(drained(&mut owner_rx), vec![(v, restored)]);
}

#[test]
fn clones_follow_by_default_and_keep_what_they_were_told() {
    use keynode_vaults::Follow;
    let (owner, client) = (Node::new(), Node::new());
    let v = owner.vault("prod");
    owner.put(v, "db", b"one");
    assert_eq!(
        owner.store.follow(v).unwrap(),
        None,
        "own vaults do not follow"
    );
    assert!(matches!(
        owner.store.set_follow(v, Follow::Off),
        Err(VaultError::NotAClone(_))
    ));
    let (meta, _) = clone(&owner, v, &client).unwrap();
    assert_eq!(client.store.follow(meta.id).unwrap(), Some(Follow::On));
    let diverged = Follow::Diverged {
        remote_head: "ab".repeat(20),
    };
    client.store.set_follow(meta.id, diverged.clone()).unwrap();
    assert_eq!(
        client.store.follow(meta.id).unwrap(),
        Some(diverged.clone())
    );
    // A clone made not to follow.
    let advert = owner.store.advertise(v).unwrap();
    let (pack, _) = pack_of(&owner, v, &advert.head, &[]).unwrap();
    let remote = Remote {
        node: owner.id,
        vault: v,
    };
    let quiet = client
        .store
        .receive_clone_with(
            &advert.name,
            remote,
            &advert.head,
            &mut &pack[..],
            Follow::Off,
        )
        .unwrap();
    let follows = client.store.follows().unwrap();
    let states: Vec<_> = follows.iter().map(|(m, f)| (m.id, f.clone())).collect();
    assert_eq!(states.len(), 2);
    assert!(states.contains(&(meta.id, diverged)));
    assert!(states.contains(&(quiet.id, Follow::Off)));
    // Following again, then deleted: no row is left for the id.
    client.store.set_follow(quiet.id, Follow::On).unwrap();
    assert_eq!(client.store.follow(quiet.id).unwrap(), Some(Follow::On));
    client.store.delete(meta.id).unwrap();
    assert!(client.store.follow(meta.id).is_err());
    assert_eq!(client.store.follows().unwrap().len(), 1);
}

#[test]
fn a_long_history_is_packed_with_deltas_and_one_import_whole() {
    // 200 secrets, then 40 commits each changing one: 40 versions of the root
    // tree (~8 KiB each) a delta search pairs.
    let owner = Node::new();
    let client = Node::new();
    let v = owner.vault("history");
    let ops = (0..200)
        .map(|i| Op::Put {
            path: SecretPath::new(&format!("s{i:03}")).unwrap(),
            blob: owner.store.write_blob(v, &mut &noise(64, i)[..]).unwrap(),
            policy: PutPolicy::CreateNew,
        })
        .collect();
    owner.store.commit(v, ops).unwrap();
    for round in 0..40u64 {
        owner.put(v, &format!("s{:03}", round * 5), &noise(64, 1_000 + round));
    }
    let (pack, stats) = pack_of(&owner, v, &owner.head(v), &[]).unwrap();
    let deltas = deltas_in(&pack);
    assert!(deltas >= 40, "{deltas} deltas: {stats:?}");
    let trees = 41 * 200 * 30;
    assert!(
        (pack.len() as u64) < trees / 4,
        "{} bytes for 41 versions of a 200-entry tree",
        stats.bytes
    );
    let (meta, _) = clone(&owner, v, &client).unwrap();
    assert_eq!(client.store.log(meta.id, None, None).unwrap().len(), 42);

    // One import of incompressible secrets (one commit: the store's writer):
    // a pack barely larger than the secrets, cloned intact. Whether they are
    // stored rather than deflated is not visible in the size; the writer's
    // level choice is tested in `repo/pack_out.rs`.
    let big = owner.vault("big");
    let ops = (0..3)
        .map(|i| Op::Put {
            path: SecretPath::new(&format!("b{i}")).unwrap(),
            blob: owner
                .store
                .write_blob(big, &mut &noise(300_000, 50 + i)[..])
                .unwrap(),
            policy: PutPolicy::CreateNew,
        })
        .collect();
    owner.store.commit(big, ops).unwrap();
    let (pack, _) = pack_of(&owner, big, &owner.head(big), &[]).unwrap();
    assert!(pack.len() < 900_000 + 4_096, "{} bytes", pack.len());
    let (meta, _) = clone(&owner, big, &client).unwrap();
    assert_eq!(client.content(meta.id), owner.content(big));
}

/// How many of `pack`'s objects are deltas (walking its entries: each header,
/// a delta's base, and its zlib stream).
fn deltas_in(pack: &[u8]) -> usize {
    assert_eq!(&pack[..4], b"PACK");
    let count = u32::from_be_bytes(pack[8..12].try_into().unwrap());
    let mut at = 12;
    let mut deltas = 0;
    for _ in 0..count {
        let kind = (pack[at] >> 4) & 7;
        while pack[at] & 0x80 != 0 {
            at += 1;
        }
        at += 1;
        match kind {
            6 => {
                deltas += 1;
                while pack[at] & 0x80 != 0 {
                    at += 1;
                }
                at += 1;
            }
            7 => {
                deltas += 1;
                at += 20;
            }
            _ => {}
        }
        let mut z = flate2::Decompress::new(true);
        let mut out = vec![0u8; 1 << 20];
        loop {
            let before = z.total_in();
            let status = z
                .decompress(&pack[at..], &mut out, flate2::FlushDecompress::None)
                .unwrap();
            at += (z.total_in() - before) as usize;
            if status == flate2::Status::StreamEnd {
                break;
            }
        }
    }
    deltas
}

#[test]
fn a_short_history_of_small_secrets_is_packed_whole_without_a_delta_search() {
    // 20 secrets, then 60 commits each changing one: many versions, but
    // ~60 KiB in all, below what a delta search is worth.
    let owner = Node::new();
    let v = owner.vault("small");
    for i in 0..20 {
        owner.put(v, &format!("s{i:02}"), &noise(64, i));
    }
    for round in 0..60u64 {
        owner.put(v, &format!("s{:02}", round % 20), &noise(64, 500 + round));
    }
    let (pack, stats) = pack_of(&owner, v, &owner.head(v), &[]).unwrap();
    assert_eq!(deltas_in(&pack), 0, "{stats:?}");
    let client = Node::new();
    let (meta, _) = clone(&owner, v, &client).unwrap();
    assert_eq!(client.content(meta.id), owner.content(v));
    assert_eq!(client.store.log(meta.id, None, None).unwrap().len(), 81);
}

/// The haves a clone sends after pull upon pull (the store keeps its chain of
/// first parents and walks only what each pull added) are those a walk of the
/// whole history gives: the head, ancestors 1, 2, 4… back, and the root.
#[test]
fn haves_after_many_pulls_sample_the_whole_history() {
    let owner = Node::new();
    let client = Node::new();
    let v = owner.vault("long");
    for i in 0..9 {
        owner.put(v, "s", format!("v{i}").as_bytes());
    }
    let (c, _) = clone(&owner, v, &client).unwrap();
    for round in 0..6 {
        for i in 0..(round * 5 + 1) {
            owner.put(v, "s", format!("r{round}-{i}").as_bytes());
        }
        let (outcome, _) = pull(&owner, &client, c.id).unwrap();
        assert!(
            matches!(outcome, PullOutcome::Updated { .. }),
            "{outcome:?}"
        );

        let history = client.history(c.id);
        assert_eq!(history, owner.history(v));
        let mut expected = vec![history[0].clone()];
        let mut distance = 1;
        while distance < history.len() - 1 {
            expected.push(history[distance].clone());
            distance *= 2;
        }
        expected.push(history[history.len() - 1].clone());
        assert_eq!(client.store.haves(c.id).unwrap(), expected, "round {round}");
    }
}
