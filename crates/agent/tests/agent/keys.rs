//! The data key at start: created with a new node, opened with the root key
//! after, and node paths this version must not open refused untouched.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use keynode_agent::paths::NodePaths;
use keynode_agent::{Node, NodeConfig, StartError};
use keynode_core::Keypair;
use keynode_core::datakey::{self, DataKey};
use keynode_core::keystore::{self, KdfParams};

/// What [`snapshot`] keeps of one entry: contents (files), mode, size and
/// modification time (seconds, nanoseconds).
type Entry = (Option<Vec<u8>>, u32, u64, i64, i64);

/// Every file and directory under `root`.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).expect("metadata");
        let content = if meta.is_dir() {
            for e in std::fs::read_dir(&p).expect("read_dir") {
                stack.push(e.expect("entry").path());
            }
            None
        } else {
            Some(std::fs::read(&p).expect("read"))
        };
        out.insert(
            p,
            (
                content,
                meta.mode(),
                meta.len(),
                meta.mtime(),
                meta.mtime_nsec(),
            ),
        );
    }
    out
}

/// A node path as an earlier (unencrypted) version left it: a root key, an
/// LMDB environment and a vault, but no data key.
fn earlier_version_path(root: &Path) -> NodePaths {
    let paths = NodePaths::new(root);
    std::fs::create_dir_all(root.join("keys")).expect("keys dir");
    keystore::write_key_file(
        &paths.root_key(),
        &Keypair::generate(),
        b"pw",
        KdfParams::DEFAULT,
    )
    .expect("root key");
    std::fs::create_dir_all(paths.state()).expect("state dir");
    std::fs::write(
        paths.state().join("data.mdb"),
        b"vault name: prod (unencrypted)",
    )
    .expect("data.mdb");
    std::fs::write(paths.state().join("lock.mdb"), [0u8; 64]).expect("lock.mdb");
    std::fs::create_dir_all(paths.vaults().join("v1.git/objects")).expect("vault");
    std::fs::write(paths.root.join("agent.lock"), b"4242").expect("lock file");
    paths
}

#[actix_rt::test]
async fn a_node_path_of_an_earlier_version_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = earlier_version_path(&dir.path().join("old"));
    let before = snapshot(&paths.root);

    let err = Node::start(NodeConfig::new(&paths.root, "pw"))
        .await
        .err()
        .expect("an earlier version's node path was opened");
    assert!(
        matches!(&err, StartError::EarlierVersion(p) if *p == paths.root),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&paths.root.display().to_string()), "{msg}");
    assert!(msg.contains("earlier keynode version"), "{msg}");
    assert!(msg.contains("move it aside"), "{msg}");
    assert_eq!(snapshot(&paths.root), before, "the node path was modified");

    // The same with only the vaults left (state moved away), and with a wrong
    // password: refused before the password is even tried.
    std::fs::remove_dir_all(paths.state()).expect("remove state");
    let before = snapshot(&paths.root);
    let err = Node::start(NodeConfig::new(&paths.root, "wrong"))
        .await
        .err()
        .expect("opened");
    assert!(matches!(err, StartError::EarlierVersion(_)), "{err:?}");
    assert_eq!(snapshot(&paths.root), before, "the node path was modified");
}

#[actix_rt::test]
async fn a_new_node_seals_its_data_key_and_opens_it_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("a");
    let node = Node::start(NodeConfig::new(&root, "pw"))
        .await
        .expect("start");
    let paths = node.paths().clone();
    node.stop().await;

    let sealed = std::fs::read(paths.data_key()).expect("data key file");
    let mode = std::fs::metadata(paths.data_key()).expect("meta").mode() & 0o777;
    assert_eq!(mode, 0o600);
    let root_key = keystore::read_key_file(&paths.root_key(), b"pw").expect("root key");
    let key = datakey::open(&sealed, &root_key).expect("the root key opens the data key");
    // The key itself is never on disk in the clear.
    assert!(!sealed.windows(32).any(|w| w == key.expose()));

    // A restart opens the same key and the same state.
    let node = Node::start(NodeConfig::new(&root, "pw"))
        .await
        .expect("restart");
    assert!(!node.timings().created);
    node.stop().await;
    assert_eq!(std::fs::read(paths.data_key()).expect("data key"), sealed);
}

#[actix_rt::test]
async fn a_first_start_cut_short_before_the_data_key_is_completed() {
    // The root key was written but the node stopped before its data key: no
    // state exists yet, so the next start creates the data key.
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = NodePaths::new(dir.path().join("a"));
    std::fs::create_dir_all(paths.root.join("keys")).expect("keys dir");
    let key = Keypair::generate();
    keystore::write_key_file(&paths.root_key(), &key, b"pw", KdfParams::DEFAULT).expect("key");
    let node = Node::start(NodeConfig::new(&paths.root, "pw"))
        .await
        .expect("start");
    assert_eq!(node.node_id(), key.node_id());
    node.stop().await;
    datakey::read_file(&paths.data_key(), &key).expect("data key");
}

#[actix_rt::test]
async fn a_data_key_that_does_not_open_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("a");
    let node = Node::start(NodeConfig::new(&root, "pw"))
        .await
        .expect("start");
    let paths = node.paths().clone();
    node.stop().await;
    let original = std::fs::read(paths.data_key()).expect("data key");

    // Sealed by another node's root key.
    datakey::write_file(
        &paths.data_key(),
        &DataKey::generate(),
        &Keypair::generate(),
    )
    .expect("write");
    let err = Node::start(NodeConfig::new(&root, "pw"))
        .await
        .err()
        .expect("a foreign data key opened");
    assert!(
        matches!(&err, StartError::DataKey(p, _) if *p == paths.data_key()),
        "{err:?}"
    );
    let source = std::error::Error::source(&err).expect("cause").to_string();
    assert!(source.contains("root key"), "{source}");

    // Not a data key file at all.
    std::fs::write(paths.data_key(), b"garbage").expect("write");
    let err = Node::start(NodeConfig::new(&root, "pw"))
        .await
        .err()
        .expect("garbage opened");
    assert!(matches!(err, StartError::DataKey(..)), "{err:?}");

    // A data key the root key opens, but not the one the state is encrypted
    // with: the state does not open.
    let root_key = keystore::read_key_file(&paths.root_key(), b"pw").expect("root key");
    datakey::write_file(&paths.data_key(), &DataKey::generate(), &root_key).expect("write");
    let err = Node::start(NodeConfig::new(&root, "pw"))
        .await
        .err()
        .expect("state opened under another data key");
    assert!(
        matches!(&err, StartError::StateKey(p) if *p == paths.state()),
        "{err:?}"
    );

    // The right key again: the node starts.
    std::fs::write(paths.data_key(), &original).expect("restore");
    Node::start(NodeConfig::new(&root, "pw"))
        .await
        .expect("start with the right data key")
        .stop()
        .await;
}

#[actix_rt::test]
async fn a_data_key_without_its_root_key_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("a");
    let node = Node::start(NodeConfig::new(&root, "pw"))
        .await
        .expect("start");
    let paths = node.paths().clone();
    node.stop().await;
    std::fs::remove_file(paths.root_key()).expect("remove root key");
    let before = snapshot(&paths.root);
    let err = Node::start(NodeConfig::new(&root, "pw"))
        .await
        .err()
        .expect("started without its root key");
    assert!(matches!(err, StartError::RootKeyMissing(_)), "{err:?}");
    assert_eq!(snapshot(&paths.root), before, "the node path was modified");
}
