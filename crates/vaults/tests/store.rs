//! Behaviour of `VaultStore` and `VaultManager` through the public API.

use std::path::Path;
use std::sync::Arc;

use keynode_core::{Keypair, NodeId, SecretPath, VaultId, VaultName};
use keynode_vaults::{
    BUNDLED_BLOB, BlobId, CommitOutcome, DIR_MARKER, Entry, EntryKind, Env, Op, PutPolicy,
    READ_CHUNK, Remote, VaultError, VaultManager, VaultStore, messages,
};
use tempfile::TempDir;

fn open_env(dir: &Path) -> Env {
    keynode_core::store::open_env(dir, &key(), 1 << 30, 16).expect("env")
}

/// The data key of every store here.
fn key() -> keynode_core::datakey::DataKey {
    keynode_core::datakey::DataKey::from_bytes([7; 32])
}

struct Fixture {
    tmp: TempDir,
    env: Env,
    owner: NodeId,
    store: VaultStore,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("db")).unwrap();
        let env = open_env(&tmp.path().join("db"));
        let owner = Keypair::generate().node_id();
        let store =
            VaultStore::open(&tmp.path().join("vaults"), env.clone(), owner, &key()).unwrap();
        Fixture {
            tmp,
            env,
            owner,
            store,
        }
    }

    fn vaults_dir(&self) -> std::path::PathBuf {
        self.tmp.path().join("vaults")
    }

    fn vault(&self, name: &str) -> VaultId {
        self.store.create(&name_of(name)).unwrap().id
    }

    fn blob(&self, id: VaultId, data: &[u8]) -> BlobId {
        self.store.write_blob(id, &mut &data[..]).unwrap()
    }

    fn put(&self, id: VaultId, path: &str, data: &[u8]) -> CommitOutcome {
        let blob = self.blob(id, data);
        self.store
            .commit(id, vec![put(path, blob, PutPolicy::Overwrite)])
            .unwrap()
    }

    fn read(&self, id: VaultId, path: &str, at: Option<&str>) -> Result<Vec<u8>, VaultError> {
        let mut out = Vec::new();
        let size = self.store.read_secret(id, &p(path), at, &mut |chunk| {
            assert!(chunk.len() <= READ_CHUNK);
            out.extend_from_slice(chunk);
            Ok(())
        })?;
        assert_eq!(size, out.len() as u64);
        Ok(out)
    }

    fn names(&self, id: VaultId, dir: Option<&str>) -> Vec<String> {
        self.store
            .list_secrets(id, dir.map(p).as_ref(), None)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect()
    }

    fn head_message(&self, id: VaultId) -> String {
        self.store.log(id, Some(1), None).unwrap()[0]
            .message
            .clone()
    }
}

fn name_of(s: &str) -> VaultName {
    VaultName::new(s).unwrap()
}

fn p(s: &str) -> SecretPath {
    SecretPath::new(s).unwrap()
}

fn put(path: &str, blob: BlobId, policy: PutPolicy) -> Op {
    Op::Put {
        path: p(path),
        blob,
        policy,
    }
}

fn mkdir(path: &str, parents: bool) -> Op {
    Op::Mkdir {
        path: p(path),
        parents,
    }
}

fn rm(path: &str, recursive: bool) -> Op {
    Op::Remove {
        path: p(path),
        recursive,
    }
}

fn mv(from: &str, to: &str) -> Op {
    Op::Rename {
        from: p(from),
        to: p(to),
    }
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn create_list_rename_delete() {
    let fx = Fixture::new();
    let b = fx.store.create(&name_of("beta")).unwrap();
    let a = fx.store.create(&name_of("alpha")).unwrap();
    assert!(fx.store.repo_path(a.id).is_dir());
    assert_eq!(a.remote, None);
    assert!(a.created_ms > 0);

    let names: Vec<_> = fx
        .store
        .list()
        .unwrap()
        .into_iter()
        .map(|m| m.name.to_string())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert!(
        matches!(fx.store.create(&name_of("alpha")), Err(VaultError::VaultExists(n)) if n.as_str() == "alpha")
    );

    // Every vault starts with one commit of the empty tree, by the owner.
    let log = fx.store.log(a.id, None, None).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].message, "create vault alpha");
    assert_eq!(log[0].author, fx.owner.to_string());
    assert!(fx.store.list_secrets(a.id, None, None).unwrap().is_empty());

    // Resolve by name first, then by id.
    assert_eq!(fx.store.resolve("alpha").unwrap(), a);
    assert_eq!(fx.store.resolve(&b.id.to_string()).unwrap(), b);
    assert_eq!(fx.store.meta(b.id).unwrap(), b);
    assert!(matches!(fx.store.resolve("gamma"), Err(VaultError::VaultNotFound(s)) if s == "gamma"));
    assert!(matches!(
        fx.store.resolve(""),
        Err(VaultError::VaultNotFound(_))
    ));
    let other = fx.vault("x");
    fx.store.rename(other, &name_of(&a.id.to_string())).unwrap();
    assert_eq!(
        fx.store.resolve(&a.id.to_string()).unwrap().id,
        other,
        "names win over ids"
    );

    // Rename: metadata only; conflicts refused; same name is a no-op.
    assert!(matches!(
        fx.store.rename(a.id, &name_of("beta")),
        Err(VaultError::VaultExists(_))
    ));
    fx.store.rename(a.id, &name_of("alpha")).unwrap();
    fx.store.rename(a.id, &name_of("gamma")).unwrap();
    assert_eq!(fx.store.resolve("gamma").unwrap().id, a.id);
    assert!(fx.store.resolve("alpha").is_err());
    fx.store.create(&name_of("alpha")).unwrap();

    // Delete removes metadata, name and repository.
    fx.put(a.id, "s", b"x");
    fx.store.delete(a.id).unwrap();
    assert!(!fx.store.repo_path(a.id).exists());
    assert!(matches!(
        fx.store.meta(a.id),
        Err(VaultError::VaultNotFound(_))
    ));
    assert!(fx.store.resolve("gamma").is_err());
    assert!(matches!(
        fx.store.delete(a.id),
        Err(VaultError::VaultNotFound(_))
    ));
    assert!(matches!(
        fx.store.log(a.id, None, None),
        Err(VaultError::VaultNotFound(_))
    ));
    assert!(matches!(
        fx.store.write_blob(a.id, &mut &b""[..]),
        Err(VaultError::VaultNotFound(_))
    ));
    fx.store.create(&name_of("gamma")).unwrap();
    assert_eq!(fx.store.list().unwrap().len(), 4);
}

#[test]
fn put_creates_updates_and_refuses() {
    let fx = Fixture::new();
    let v = fx.vault("v");
    let one = fx.blob(v, b"one");
    let two = fx.blob(v, b"two");

    let out = fx
        .store
        .commit(v, vec![put("db/pg/password", one, PutPolicy::CreateNew)])
        .unwrap();
    assert_eq!(
        out.commit().unwrap().message,
        "create secret db/pg/password"
    );
    assert_eq!(fx.read(v, "db/pg/password", None).unwrap(), b"one");
    assert!(matches!(
        fx.store.commit(v, vec![put("db/pg/password", two, PutPolicy::CreateNew)]),
        Err(VaultError::SecretExists(s)) if s == "db/pg/password"
    ));
    fx.store
        .commit(v, vec![put("db/pg/password", two, PutPolicy::Overwrite)])
        .unwrap();
    assert_eq!(fx.head_message(v), "update secret db/pg/password");
    assert_eq!(fx.read(v, "db/pg/password", None).unwrap(), b"two");

    assert!(matches!(
        fx.store.commit(v, vec![put("db/pg", one, PutPolicy::Overwrite)]),
        Err(VaultError::IsADirectory(s)) if s == "db/pg"
    ));
    assert!(matches!(
        fx.store.commit(v, vec![put("db/pg/password/x", one, PutPolicy::Overwrite)]),
        Err(VaultError::NotADirectory(s)) if s == "db/pg/password"
    ));
    assert!(matches!(
        fx.store.commit(
            v,
            vec![put(&format!("d/{DIR_MARKER}"), one, PutPolicy::Overwrite)]
        ),
        Err(VaultError::Reserved(_))
    ));
    let foreign = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
    assert!(matches!(
        fx.store
            .commit(v, vec![put("x", foreign, PutPolicy::Overwrite)]),
        Err(VaultError::BlobNotFound(_))
    ));

    // A failing op fails the whole commit.
    let before = fx.store.log(v, None, None).unwrap().len();
    assert!(
        fx.store
            .commit(
                v,
                vec![put("new", one, PutPolicy::CreateNew), rm("missing", false)]
            )
            .is_err()
    );
    assert_eq!(fx.store.log(v, None, None).unwrap().len(), before);
    assert!(matches!(
        fx.read(v, "new", None),
        Err(VaultError::SecretNotFound(_))
    ));
}

#[test]
fn mkdir_remove_and_rename() {
    let fx = Fixture::new();
    let v = fx.vault("v");
    let blob = fx.blob(v, b"s");

    // Mkdir
    fx.store.commit(v, vec![mkdir("a", false)]).unwrap();
    assert_eq!(fx.head_message(v), "create directory a");
    assert_eq!(fx.names(v, None), ["a"]);
    assert!(fx.names(v, Some("a")).is_empty(), "the marker is hidden");
    assert!(matches!(
        fx.store.commit(v, vec![mkdir("a", false)]),
        Err(VaultError::SecretExists(_))
    ));
    assert_eq!(
        fx.store.commit(v, vec![mkdir("a", true)]).unwrap(),
        CommitOutcome::Unchanged
    );
    assert!(matches!(
        fx.store.commit(v, vec![mkdir("b/c", false)]),
        Err(VaultError::ParentNotFound(s)) if s == "b/c"
    ));
    fx.store.commit(v, vec![mkdir("b/c/d", true)]).unwrap();
    assert_eq!(fx.names(v, Some("b")), ["c"]);
    fx.store
        .commit(v, vec![put("f", blob, PutPolicy::CreateNew)])
        .unwrap();
    assert!(matches!(
        fx.store.commit(v, vec![mkdir("f", true)]),
        Err(VaultError::SecretExists(_))
    ));
    assert!(
        matches!(fx.store.commit(v, vec![mkdir("f/g", true)]), Err(VaultError::NotADirectory(s)) if s == "f")
    );
    assert!(matches!(
        fx.store.commit(v, vec![mkdir(DIR_MARKER, true)]),
        Err(VaultError::Reserved(_))
    ));

    // A file in a marked directory keeps the marker hidden.
    fx.store
        .commit(v, vec![put("a/x", blob, PutPolicy::CreateNew)])
        .unwrap();
    assert_eq!(fx.names(v, Some("a")), ["x"]);
    assert_eq!(fx.store.stat(v, &p("a"), None).unwrap().size, 1);

    // Remove
    assert!(
        matches!(fx.store.commit(v, vec![rm("nope", false)]), Err(VaultError::SecretNotFound(s)) if s == "nope")
    );
    assert!(matches!(
        fx.store.commit(v, vec![rm("f/x", false)]),
        Err(VaultError::SecretNotFound(_))
    ));
    assert!(
        matches!(fx.store.commit(v, vec![rm("a", false)]), Err(VaultError::DirectoryNotEmpty(s)) if s == "a")
    );
    assert!(matches!(
        fx.store.commit(v, vec![rm("b", false)]),
        Err(VaultError::DirectoryNotEmpty(_))
    ));
    fx.store.commit(v, vec![rm("b/c/d", false)]).unwrap();
    assert_eq!(fx.head_message(v), "remove directory b/c/d");
    assert!(
        matches!(
            fx.store.stat(v, &p("b"), None),
            Err(VaultError::SecretNotFound(_))
        ),
        "emptied parents vanish"
    );
    fx.store.commit(v, vec![rm("a", true)]).unwrap();
    fx.store.commit(v, vec![rm("f", false)]).unwrap();
    assert_eq!(fx.head_message(v), "remove secret f");
    assert!(fx.names(v, None).is_empty());

    // Rename
    fx.store
        .commit(
            v,
            vec![
                put("k/one", blob, PutPolicy::CreateNew),
                put("k/two", blob, PutPolicy::CreateNew),
                mkdir("m", false),
            ],
        )
        .unwrap();
    fx.store.commit(v, vec![mv("k/one", "k/uno")]).unwrap();
    assert_eq!(fx.head_message(v), "rename secret k/one -> k/uno");
    assert_eq!(fx.names(v, Some("k")), ["two", "uno"]);
    fx.store.commit(v, vec![mv("k", "m/k")]).unwrap();
    assert_eq!(fx.head_message(v), "rename directory k -> m/k");
    assert_eq!(fx.names(v, None), ["m"]);
    assert_eq!(fx.read(v, "m/k/uno", None).unwrap(), b"s");
    assert!(
        matches!(fx.store.commit(v, vec![mv("zz", "y")]), Err(VaultError::SecretNotFound(s)) if s == "zz")
    );
    assert!(
        matches!(fx.store.commit(v, vec![mv("m/k/two", "m/k/uno")]), Err(VaultError::SecretExists(s)) if s == "m/k/uno")
    );
    assert!(matches!(
        fx.store.commit(v, vec![mv("m/k/two", "m/k/two")]),
        Err(VaultError::SecretExists(_))
    ));
    assert!(
        matches!(fx.store.commit(v, vec![mv("m/k/two", "q/two")]), Err(VaultError::ParentNotFound(s)) if s == "q/two")
    );
    assert!(
        matches!(fx.store.commit(v, vec![mv("m/k/two", "m/k/uno/two")]), Err(VaultError::NotADirectory(s)) if s == "m/k/uno")
    );
    assert!(matches!(
        fx.store.commit(v, vec![mv("m", "m/k/inner")]),
        Err(VaultError::MoveIntoItself(_))
    ));

    // Several ops build on each other inside one commit.
    let out = fx
        .store
        .commit(
            v,
            vec![
                mkdir("n", false),
                put("n/s", blob, PutPolicy::CreateNew),
                mv("n", "o"),
                rm("m", true),
            ],
        )
        .unwrap();
    assert_eq!(
        out.commit().unwrap().message,
        "create directory n\ncreate secret n/s\nrename directory n -> o\nremove directory m"
    );
    assert_eq!(fx.names(v, None), ["o"]);
    assert_eq!(fx.names(v, Some("o")), ["s"]);
}

#[test]
fn a_mutation_that_changes_nothing_makes_no_commit() {
    let fx = Fixture::new();
    let v = fx.vault("v");
    let blob = fx.blob(v, b"same");
    fx.store
        .commit(v, vec![put("s", blob, PutPolicy::Overwrite)])
        .unwrap();
    let n = fx.store.log(v, None, None).unwrap().len();
    assert_eq!(
        fx.store.commit(v, vec![]).unwrap(),
        CommitOutcome::Unchanged
    );
    assert_eq!(
        fx.store
            .commit(v, vec![put("s", blob, PutPolicy::Overwrite)])
            .unwrap(),
        CommitOutcome::Unchanged
    );
    let other = fx.blob(v, b"other");
    assert_eq!(
        fx.store
            .commit(
                v,
                vec![put("t", other, PutPolicy::CreateNew), rm("t", false)]
            )
            .unwrap(),
        CommitOutcome::Unchanged
    );
    assert_eq!(
        fx.store.version(v, "HEAD").unwrap(),
        CommitOutcome::Unchanged
    );
    assert_eq!(fx.store.log(v, None, None).unwrap().len(), n);
}

#[test]
fn log_depth_and_from() {
    let fx = Fixture::new();
    let v = fx.vault("v");
    for i in 0..5 {
        fx.put(v, "s", format!("{i}").as_bytes());
    }
    let all = fx.store.log(v, None, None).unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(all[0].message, "update secret s");
    assert_eq!(all[4].message, "create secret s");
    assert_eq!(all[5].message, "create vault v");
    assert!(
        all.iter()
            .all(|c| c.oid.len() == 40 && c.author == fx.owner.to_string())
    );
    assert!(all.windows(2).all(|w| w[0].time_ms >= w[1].time_ms));

    assert_eq!(fx.store.log(v, Some(2), None).unwrap(), all[..2]);
    assert!(fx.store.log(v, Some(0), None).unwrap().is_empty());
    assert_eq!(fx.store.log(v, Some(100), None).unwrap(), all);
    assert_eq!(fx.store.log(v, None, Some(&all[3].oid)).unwrap(), all[3..]);
    assert_eq!(
        fx.store.log(v, Some(1), Some(&all[2].oid[..8])).unwrap(),
        all[2..3]
    );
    assert_eq!(fx.store.log(v, Some(2), Some("HEAD~4")).unwrap(), all[4..]);
    assert_eq!(fx.store.log(v, None, Some("HEAD")).unwrap(), all);
    for bad in [
        "HEAD~6",
        "main",
        "HEAD@{1}",
        "HEAD:s",
        "HEAD^",
        "ab",
        "..",
        "0000000000000000000000000000000000000000",
    ] {
        assert!(
            matches!(fx.store.log(v, None, Some(bad)), Err(VaultError::BadRevision(s)) if s == bad),
            "{bad}"
        );
    }
    // A blob id is not a commit, and another vault's commit is not this vault's.
    let blob = fx.blob(v, b"0").to_string();
    assert!(matches!(
        fx.store.log(v, None, Some(&blob)),
        Err(VaultError::BadRevision(_))
    ));
    let w = fx.vault("w");
    let foreign = fx.store.log(w, None, None).unwrap()[0].oid.clone();
    assert!(matches!(
        fx.store.log(v, None, Some(&foreign)),
        Err(VaultError::BadRevision(_))
    ));
}

#[test]
fn version_appends_a_restore_and_old_versions_stay_readable() {
    let fx = Fixture::new();
    let v = fx.vault("v");
    fx.put(v, "s", b"first");
    let first = fx.store.log(v, Some(1), None).unwrap()[0].oid.clone();
    fx.put(v, "s", b"second");
    fx.put(v, "t", b"extra");

    assert_eq!(fx.read(v, "s", Some(&first)).unwrap(), b"first");
    assert_eq!(fx.read(v, "s", Some("HEAD~1")).unwrap(), b"second");
    assert!(matches!(
        fx.read(v, "t", Some(&first)),
        Err(VaultError::SecretNotFound(_))
    ));
    let old_listing = fx.store.list_secrets(v, None, Some(&first)).unwrap();
    assert_eq!(
        old_listing,
        [Entry {
            name: "s".into(),
            kind: EntryKind::File,
            size: Some(5)
        }]
    );

    let out = fx.store.version(v, &first[..10]).unwrap();
    let info = out.commit().unwrap();
    assert_eq!(info.message, format!("restore to {}", &first[..7]));
    let log = fx.store.log(v, None, None).unwrap();
    assert_eq!(log.len(), 5, "history only grows");
    assert_eq!(log[0].oid, info.oid);
    assert_eq!(fx.read(v, "s", None).unwrap(), b"first");
    assert!(matches!(
        fx.read(v, "t", None),
        Err(VaultError::SecretNotFound(_))
    ));
    assert_eq!(
        fx.store.version(v, &first).unwrap(),
        CommitOutcome::Unchanged
    );
    // Back to the newest content.
    fx.store.version(v, "HEAD~1").unwrap();
    assert_eq!(fx.read(v, "t", None).unwrap(), b"extra");
    assert!(matches!(
        fx.store.version(v, "HEAD~99"),
        Err(VaultError::BadRevision(_))
    ));
}

#[test]
fn reads_and_stats() {
    let fx = Fixture::new();
    let v = fx.vault("v");
    fx.put(v, "dir/a", b"12345");
    let created = fx.store.log(v, Some(1), None).unwrap().remove(0);
    fx.put(v, "dir/b", b"1");
    fx.store.commit(v, vec![mkdir("dir/sub", false)]).unwrap();

    assert!(matches!(fx.read(v, "dir", None), Err(VaultError::IsADirectory(s)) if s == "dir"));
    assert!(
        matches!(fx.read(v, "dir/zz", None), Err(VaultError::SecretNotFound(s)) if s == "dir/zz")
    );
    assert!(matches!(
        fx.read(v, &format!("dir/sub/{DIR_MARKER}"), None),
        Err(VaultError::Reserved(_))
    ));
    assert!(matches!(
        fx.store.list_secrets(v, Some(&p("dir/a")), None),
        Err(VaultError::NotADirectory(s)) if s == "dir/a"
    ));
    assert!(matches!(
        fx.store.list_secrets(v, Some(&p("nope")), None),
        Err(VaultError::SecretNotFound(_))
    ));
    assert_eq!(
        fx.store.list_secrets(v, Some(&p("dir")), None).unwrap(),
        [
            Entry {
                name: "a".into(),
                kind: EntryKind::File,
                size: Some(5)
            },
            Entry {
                name: "b".into(),
                kind: EntryKind::File,
                size: Some(1)
            },
            Entry {
                name: "sub".into(),
                kind: EntryKind::Dir,
                size: None
            },
        ]
    );

    let stat = fx.store.stat(v, &p("dir/a"), None).unwrap();
    assert_eq!(stat.kind, EntryKind::File);
    assert_eq!(stat.size, 5);
    assert_eq!(stat.mode, 0o100644);
    assert_eq!(stat.blob.len(), 40);
    assert_eq!(
        stat.last_commit,
        Some(created),
        "the commit that last changed the path"
    );
    let dir = fx.store.stat(v, &p("dir"), None).unwrap();
    assert_eq!(
        (dir.kind, dir.size, dir.mode),
        (EntryKind::Dir, 3, 0o040000)
    );
    assert_eq!(dir.last_commit.unwrap().message, "create directory dir/sub");
    assert_eq!(fx.store.stat(v, &p("dir/sub"), None).unwrap().size, 0);
    assert!(matches!(
        fx.store.stat(v, &p("x"), None),
        Err(VaultError::SecretNotFound(_))
    ));
}

#[test]
fn clones_are_read_only() {
    let fx = Fixture::new();
    let v = fx.vault("mirror");
    fx.put(v, "s", b"x");
    let blob = fx.blob(v, b"y");
    let remote = Remote {
        node: Keypair::generate().node_id(),
        vault: VaultId::generate(),
    };
    fx.store.set_remote(v, Some(remote)).unwrap();
    assert_eq!(fx.store.meta(v).unwrap().remote, Some(remote));

    let refused = |r: Result<_, VaultError>| match r {
        Err(e @ VaultError::ReadOnly(_)) => e.to_string(),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a clone accepted a write"),
    };
    let msg = refused(
        fx.store
            .commit(v, vec![put("t", blob, PutPolicy::CreateNew)])
            .map(drop),
    );
    assert_eq!(
        msg,
        "vault mirror is a clone and read-only; fork it with `keynode vaults fork mirror`"
    );
    refused(fx.store.version(v, "HEAD~1").map(drop));
    refused(fx.store.write_blob(v, &mut &b"z"[..]).map(drop));
    refused(fx.store.write_blobs(v, &[b"z".to_vec()]).map(drop));
    // Reading still works.
    assert_eq!(fx.read(v, "s", None).unwrap(), b"x");
    fx.store.set_remote(v, None).unwrap();
    fx.store
        .commit(v, vec![put("t", blob, PutPolicy::CreateNew)])
        .unwrap();
}

#[test]
fn empty_and_large_binary_secrets_round_trip() {
    let fx = Fixture::new();
    let v = fx.vault("v");
    fx.put(v, "empty", b"");
    assert_eq!(fx.read(v, "empty", None).unwrap(), b"");
    assert_eq!(fx.store.stat(v, &p("empty"), None).unwrap().size, 0);

    let big = noise(20 * 1024 * 1024 + 3, 0x5eed);
    let blob = fx.store.write_blob(v, &mut &big[..]).unwrap();
    fx.store
        .commit(v, vec![put("big.bin", blob, PutPolicy::CreateNew)])
        .unwrap();
    let mut chunks = 0;
    let mut back = Vec::with_capacity(big.len());
    let size = fx
        .store
        .read_secret(v, &p("big.bin"), None, &mut |c| {
            assert!(!c.is_empty() && c.len() <= READ_CHUNK);
            chunks += 1;
            back.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
    assert_eq!(size, big.len() as u64);
    assert!(back == big, "content differs");
    assert!(chunks >= big.len() / READ_CHUNK);

    // A sink error stops the read and surfaces as Io.
    let err = fx
        .store
        .read_secret(v, &p("big.bin"), None, &mut |_| {
            Err(std::io::Error::other("full"))
        })
        .unwrap_err();
    assert!(matches!(err, VaultError::Io(_)));
}

#[test]
fn concurrent_writers_on_one_vault_all_land_linearly() {
    let fx = Arc::new(Fixture::new());
    let v = fx.vault("v");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let fx = Arc::clone(&fx);
            std::thread::spawn(move || {
                for i in 0..20 {
                    let out = fx.put(v, &format!("t{t}/s{i}"), format!("{t}-{i}").as_bytes());
                    assert!(matches!(out, CommitOutcome::Committed(_)));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let log = fx.store.log(v, None, None).unwrap();
    assert_eq!(log.len(), 161);
    assert_eq!(fx.names(v, None).len(), 8);
    for t in 0..8 {
        assert_eq!(fx.names(v, Some(&format!("t{t}"))).len(), 20);
    }
    assert_eq!(fx.read(v, "t7/s19", None).unwrap(), b"7-19");
}

#[test]
fn writers_on_different_vaults_proceed_in_parallel() {
    let fx = Arc::new(Fixture::new());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let fx = Arc::clone(&fx);
            std::thread::spawn(move || {
                let v = fx.vault(&format!("v{t}"));
                for i in 0..15 {
                    fx.put(v, &format!("s{i}"), b"x");
                }
                v
            })
        })
        .collect();
    for t in threads {
        let v = t.join().unwrap();
        assert_eq!(fx.store.log(v, None, None).unwrap().len(), 16);
        assert_eq!(fx.names(v, None).len(), 15);
    }
    assert_eq!(fx.store.list().unwrap().len(), 4);
}

#[test]
fn open_sweeps_crash_leftovers() {
    let fx = Fixture::new();
    let keep = fx.vault("keep");
    fx.put(keep, "s", b"x");
    let dir = fx.vaults_dir();
    // A create that died before its rename, one that died before its LMDB
    // transaction, and a delete that died after it.
    std::fs::create_dir_all(dir.join(".tmp-zabc/objects")).unwrap();
    let orphan = VaultId::generate();
    std::fs::create_dir_all(dir.join(format!("{orphan}.git/refs"))).unwrap();
    std::fs::create_dir_all(dir.join(format!(".trash-{orphan}"))).unwrap();
    std::fs::write(dir.join("unrelated.txt"), b"left alone").unwrap();

    let store = VaultStore::open(&dir, fx.env.clone(), fx.owner, &key()).unwrap();
    let mut left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let mut want = [format!("{keep}.git"), "unrelated.txt".to_owned()];
    want.sort();
    assert_eq!(left, want);
    assert_eq!(store.list().unwrap().len(), 1);
    let mut out = Vec::new();
    store
        .read_secret(keep, &p("s"), None, &mut |c| {
            out.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
    assert_eq!(out, b"x");
}

#[actix_rt::test]
async fn the_actor_drives_the_store() {
    let fx = Fixture::new();
    let store = VaultStore::open(&fx.vaults_dir(), fx.env.clone(), fx.owner, &key()).unwrap();
    let addr = actix::Actor::start(VaultManager::new(Arc::new(store)));

    let meta = addr
        .send(messages::CreateVault { name: name_of("v") })
        .await
        .unwrap()
        .unwrap();
    let v = meta.id;
    assert!(matches!(
        addr.send(messages::CreateVault { name: name_of("v") })
            .await
            .unwrap(),
        Err(VaultError::VaultExists(_))
    ));
    assert_eq!(
        addr.send(messages::ListVaults {}).await.unwrap().unwrap(),
        std::slice::from_ref(&meta)
    );
    assert_eq!(
        addr.send(messages::ResolveVault {
            name_or_id: "v".into()
        })
        .await
        .unwrap()
        .unwrap(),
        meta
    );
    let blob = addr
        .send(messages::WriteBlob {
            vault: v,
            source: Box::new(std::io::Cursor::new(b"hello".to_vec())),
            waits: false,
        })
        .await
        .unwrap()
        .unwrap();
    let out = addr
        .send(messages::Commit {
            vault: v,
            ops: vec![
                put("greeting", blob, PutPolicy::CreateNew),
                mkdir("d", false),
            ],
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.commit().unwrap().message,
        "create secret greeting\ncreate directory d"
    );

    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let size = addr
        .send(messages::ReadSecret {
            vault: v,
            path: p("greeting"),
            at: None,
            sink: Box::new(move |c| tx.send(c.to_vec()).map_err(std::io::Error::other)),
            waits: false,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(size, 5);
    assert_eq!(rx.iter().flatten().collect::<Vec<u8>>(), b"hello");

    let listing = addr
        .send(messages::ListSecrets {
            vault: v,
            dir: None,
            at: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(listing.len(), 2);
    let stat = addr
        .send(messages::Stat {
            vault: v,
            path: p("greeting"),
            at: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stat.size, 5);
    let log = addr
        .send(messages::Log {
            vault: v,
            depth: None,
            from: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(log.len(), 2);
    let restored = addr
        .send(messages::Version {
            vault: v,
            rev: log[1].oid.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(restored, CommitOutcome::Committed(_)));
    addr.send(messages::RenameVault {
        vault: v,
        name: name_of("w"),
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        addr.send(messages::GetVault { vault: v })
            .await
            .unwrap()
            .unwrap()
            .name
            .as_str(),
        "w"
    );
    addr.send(messages::SetRemote {
        vault: v,
        remote: None,
    })
    .await
    .unwrap()
    .unwrap();
    addr.send(messages::DeleteVault { vault: v })
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        addr.send(messages::GetVault { vault: v }).await.unwrap(),
        Err(VaultError::VaultNotFound(_))
    ));
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn many_blobs_written_together_share_one_file_and_read_back_after_a_reopen() {
    let fx = Fixture::new();
    let v = fx.vault("bulk");
    let before = files_under(&fx.vaults_dir()).len();
    let large = vec![7u8; BUNDLED_BLOB + 1];
    let mut blobs: Vec<Vec<u8>> = (0..300)
        .map(|i| format!("value {i}").into_bytes())
        .collect();
    blobs.push(large.clone());
    blobs.push(b"value 3".to_vec()); // a duplicate
    blobs.push(Vec::new()); // an empty secret
    let ids = fx.store.write_blobs(v, &blobs).unwrap();
    assert_eq!(ids.len(), blobs.len());
    assert_eq!(ids[3], ids[301], "one content, one id");
    // The same ids as blobs written one by one.
    assert_eq!(ids[0], fx.blob(fx.vault("single"), b"value 0"));
    let ops = ids
        .iter()
        .enumerate()
        .map(|(i, blob)| put(&format!("s{i}"), *blob, PutPolicy::Overwrite))
        .collect();
    fx.store.commit(v, ops).unwrap();
    // 302 new objects, few new files: one bundle (data and index), the large
    // blob's own file, the tree and the commit (and the second vault's).
    let added = files_under(&fx.vaults_dir()).len() - before;
    assert!(added < 30, "{added} files for 304 blobs");

    let again = VaultStore::open(&fx.vaults_dir(), fx.env.clone(), fx.owner, &key()).unwrap();
    let read = |path: &str| {
        let mut out = Vec::new();
        again
            .read_secret(v, &p(path), None, &mut |c| {
                out.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
        out
    };
    assert_eq!(read("s0"), b"value 0");
    assert_eq!(read("s299"), b"value 299");
    assert_eq!(read("s300"), large);
    assert_eq!(read("s301"), b"value 3");
    assert_eq!(read("s302"), b"");
}
