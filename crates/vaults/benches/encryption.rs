//! What encryption at rest costs: the same operations on a store with encrypted
//! object files and an encrypted LMDB environment (what a node uses) and on one
//! with libgit2's plain object database and an LMDB environment whose page
//! cipher is the identity, in one run.
//!
//! Run: `cargo bench -p keynode-vaults --bench encryption`

use std::path::Path;

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use keynode_core::datakey::DataKey;
use keynode_core::{Keypair, NodeId, SecretPath, VaultId, VaultName};
use keynode_vaults::{Op, PutPolicy, VaultStore};

mod support;
use support::{clone, value};

/// Secrets in the cloned vault, and its commits.
const SECRETS: usize = 2_000;
const COMMITS: usize = 200;

#[derive(Clone, Copy)]
enum Mode {
    Encrypted,
    Plain,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Encrypted => "encrypted",
            Mode::Plain => "plain_git",
        }
    }
}

fn store(root: &Path, name: &str, mode: Mode) -> (NodeId, VaultStore) {
    let db = root.join(format!("{name}-db"));
    std::fs::create_dir(&db).expect("mkdir");
    let key = DataKey::from_bytes([7; 32]);
    let owner = Keypair::generate().node_id();
    let dir = root.join(name);
    let store = match mode {
        Mode::Encrypted => {
            let env = keynode_core::store::open_env(&db, &key, 1 << 30, 16).expect("env");
            VaultStore::open(&dir, env, owner, &key)
        }
        Mode::Plain => {
            let env = keynode_core::store::open_env_unencrypted_for_benchmarks(&db, 1 << 30, 16)
                .expect("env");
            VaultStore::open_unencrypted_for_benchmarks(&dir, env, owner)
        }
    }
    .expect("open");
    (owner, store)
}

fn path(i: usize) -> SecretPath {
    SecretPath::new(&format!("dir{:02}/secret-{i:05}", i % 20)).expect("path")
}

/// Pseudo-random bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

fn put(store: &VaultStore, v: VaultId, path: SecretPath, data: &[u8]) {
    let blob = store.write_blob(v, &mut &data[..]).expect("blob");
    let op = Op::Put {
        path,
        blob,
        policy: PutPolicy::Overwrite,
    };
    store.commit(v, vec![op]).expect("commit");
}

fn read(store: &VaultStore, v: VaultId, path: &SecretPath) -> u64 {
    let mut n = 0u64;
    store
        .read_secret(v, path, None, &mut |c| {
            n += c.len() as u64;
            Ok(())
        })
        .expect("read")
}

/// A vault of `SECRETS` secrets written in bulk, then one-secret commits.
fn build(store: &VaultStore) -> VaultId {
    let v = store
        .create(&VaultName::new("bench").expect("name"))
        .expect("create")
        .id;
    let bulk = 500;
    for start in (0..SECRETS).step_by(bulk) {
        let ops = (start..start + bulk)
            .map(|i| Op::Put {
                path: path(i),
                blob: store.write_blob(v, &mut &value(i, 0)[..]).expect("blob"),
                policy: PutPolicy::CreateNew,
            })
            .collect();
        store.commit(v, ops).expect("commit");
    }
    for n in 0..COMMITS - 1 - SECRETS / bulk {
        let i = (n * 7919) % SECRETS;
        put(store, v, path(i), &value(i, n + 1));
    }
    v
}

/// A whole clone, deleted again so every iteration starts alike.
fn clone_and_delete(server: &VaultStore, node: NodeId, v: VaultId, client: &VaultStore) {
    let id = clone(server, node, v, client);
    client.delete(id).expect("delete");
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group("encryption");
    for mode in [Mode::Encrypted, Mode::Plain] {
        let (_, store) = store(tmp.path(), &format!("{}-w", mode.name()), mode);
        let v = store
            .create(&VaultName::new("v").expect("name"))
            .expect("create")
            .id;
        let key = SecretPath::new("key").expect("path");
        let mut i = 0usize;
        group.bench_function(BenchmarkId::new("write_small_secret", mode.name()), |b| {
            b.iter(|| {
                i += 1;
                put(&store, v, key.clone(), &value(1, i));
            })
        });
        let big = noise(1 << 20, 1);
        let big_path = SecretPath::new("big").expect("path");
        group.bench_function(BenchmarkId::new("write_1mib_secret", mode.name()), |b| {
            b.iter(|| {
                i += 1;
                let mut data = big.clone();
                data[..8].copy_from_slice(&(i as u64).to_le_bytes());
                put(&store, v, big_path.clone(), &data);
            })
        });
        group.bench_function(BenchmarkId::new("read_small_secret", mode.name()), |b| {
            b.iter(|| assert!(read(&store, v, &key) > 0))
        });
        group.bench_function(BenchmarkId::new("read_1mib_secret", mode.name()), |b| {
            b.iter(|| assert_eq!(read(&store, v, &big_path), 1 << 20))
        });
        let many = store
            .create(&VaultName::new("many").expect("name"))
            .expect("create")
            .id;
        let ops = (0..10_000)
            .map(|i| Op::Put {
                path: SecretPath::new(&format!("secret-{i:05}")).expect("path"),
                blob: store.write_blob(many, &mut &value(i, 0)[..]).expect("blob"),
                policy: PutPolicy::CreateNew,
            })
            .collect();
        store.commit(many, ops).expect("commit");
        group.bench_function(BenchmarkId::new("list_10000_secrets", mode.name()), |b| {
            b.iter(|| {
                assert_eq!(
                    store.list_secrets(many, None, None).expect("list").len(),
                    10_000
                )
            })
        });
    }
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for mode in [Mode::Encrypted, Mode::Plain] {
        let (node, server) = store(tmp.path(), &format!("{}-server", mode.name()), mode);
        let (_, client) = store(tmp.path(), &format!("{}-client", mode.name()), mode);
        let v = build(&server);
        group.bench_function(
            BenchmarkId::new("clone_200_commits_2000_secrets", mode.name()),
            |b| b.iter(|| clone_and_delete(&server, node, v, &client)),
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
