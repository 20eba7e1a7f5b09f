//! The vault store alone (no agent, no socket): the floor under the agent's
//! figures. Run: `cargo bench -p keynode-vaults --bench store`

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use keynode_core::{Keypair, SecretPath, VaultName};
use keynode_vaults::{Env, Op, PutPolicy, VaultStore};

fn open_env(dir: &Path) -> Env {
    keynode_core::store::open_env(dir, &key(), 1 << 30, 16).expect("env")
}

/// The data key of every store here.
fn key() -> keynode_core::datakey::DataKey {
    keynode_core::datakey::DataKey::from_bytes([7; 32])
}

fn store() -> (tempfile::TempDir, VaultStore) {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(tmp.path().join("db")).expect("mkdir");
    let env = open_env(&tmp.path().join("db"));
    let owner = Keypair::generate().node_id();
    let store = VaultStore::open(&tmp.path().join("vaults"), env, owner, &key()).expect("open");
    (tmp, store)
}

fn put(store: &VaultStore, v: keynode_core::VaultId, path: &str, data: &[u8]) {
    let blob = store.write_blob(v, &mut &data[..]).expect("blob");
    let path = SecretPath::new(path).expect("path");
    let policy = PutPolicy::Overwrite;
    store
        .commit(v, vec![Op::Put { path, blob, policy }])
        .expect("commit");
}

fn bench(c: &mut Criterion) {
    let (_tmp, store) = store();
    let v = store
        .create(&VaultName::new("v").expect("name"))
        .expect("create")
        .id;
    let mut i = 0u64;
    c.bench_function("store/commit_one_secret", |b| {
        b.iter(|| {
            i += 1;
            put(&store, v, "key", format!("value {i}").as_bytes());
        })
    });

    let big = store
        .create(&VaultName::new("big").expect("name"))
        .expect("create")
        .id;
    let ops = (0..10_000)
        .map(|i| Op::Put {
            path: SecretPath::new(&format!("secret-{i:05}")).expect("path"),
            blob: store
                .write_blob(big, &mut format!("v{i}").as_bytes())
                .expect("blob"),
            policy: PutPolicy::CreateNew,
        })
        .collect();
    store.commit(big, ops).expect("commit");
    c.bench_function("store/list_10000_secrets", |b| {
        b.iter(|| {
            assert_eq!(
                store.list_secrets(big, None, None).expect("list").len(),
                10_000
            )
        })
    });
    c.bench_function("store/commit_into_10000_secrets", |b| {
        b.iter(|| {
            i += 1;
            put(&store, big, "secret-00042", format!("value {i}").as_bytes());
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
