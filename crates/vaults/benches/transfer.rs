//! Vault transfer against git: a clone through `send_pack` → `receive_clone`
//! (over a pipe between two threads) against `git clone --no-local --bare`, and
//! a pull of one new commit against `git fetch` of one new commit. The vault:
//! 1,000 commits, 5,000 secrets in 50 directories, encrypted as a node keeps
//! it; git reads a twin built the same way in a store with libgit2's plain
//! object database (git cannot read encrypted objects).
//! Run: `cargo bench -p keynode-vaults --bench transfer`

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use keynode_core::{Keypair, NodeId, SecretPath, VaultId, VaultName};
use keynode_vaults::{Env, Op, PullOutcome, PutPolicy, VaultStore, want};

mod support;
use support::{clone, value};

/// Secrets in the benchmark vault.
const SECRETS: usize = 5_000;
/// Commits in the benchmark vault (the first one is the empty initial commit).
const COMMITS: usize = 1_000;
/// Directories the secrets are spread over.
const DIRS: usize = 50;
/// Secrets added per large commit.
const BULK: usize = 1_000;

fn open_env(dir: &Path) -> Env {
    keynode_core::store::open_env(dir, &key(), 1 << 30, 16).expect("env")
}

/// The data key of every store here.
fn key() -> keynode_core::datakey::DataKey {
    keynode_core::datakey::DataKey::from_bytes([7; 32])
}

fn store(root: &Path, name: &str) -> (NodeId, VaultStore) {
    let db = root.join(format!("{name}-db"));
    std::fs::create_dir(&db).expect("mkdir");
    let owner = Keypair::generate().node_id();
    let store = VaultStore::open(&root.join(name), open_env(&db), owner, &key()).expect("open");
    (owner, store)
}

/// A store whose repositories git can read (plain objects).
fn plain_store(root: &Path, name: &str) -> VaultStore {
    let db = root.join(format!("{name}-db"));
    std::fs::create_dir(&db).expect("mkdir");
    let owner = Keypair::generate().node_id();
    VaultStore::open_unencrypted_for_benchmarks(&root.join(name), open_env(&db), owner)
        .expect("open")
}

fn path(i: usize) -> SecretPath {
    SecretPath::new(&format!("dir{:02}/secret-{i:05}", i % DIRS)).expect("path")
}

fn put(store: &VaultStore, v: VaultId, i: usize, version: usize) {
    let blob = store
        .write_blob(v, &mut &value(i, version)[..])
        .expect("blob");
    let op = Op::Put {
        path: path(i),
        blob,
        policy: PutPolicy::Overwrite,
    };
    store.commit(v, vec![op]).expect("commit");
}

/// Builds the vault: a few large commits, then many one-secret updates.
fn build(store: &VaultStore) -> VaultId {
    let v = store
        .create(&VaultName::new("bench").expect("name"))
        .expect("create")
        .id;
    for start in (0..SECRETS).step_by(BULK) {
        let ops = (start..start + BULK)
            .map(|i| Op::Put {
                path: path(i),
                blob: store.write_blob(v, &mut &value(i, 0)[..]).expect("blob"),
                policy: PutPolicy::CreateNew,
            })
            .collect();
        store.commit(v, ops).expect("commit");
    }
    let small = COMMITS - 1 - SECRETS / BULK;
    for n in 0..small {
        put(store, v, (n * 7919) % SECRETS, n + 1);
    }
    assert_eq!(store.log(v, None, None).expect("log").len(), COMMITS);
    v
}

/// A whole pull: advert, haves, pack, fast-forward.
fn pull(server: &VaultStore, v: VaultId, client: &VaultStore, c: VaultId) -> PullOutcome {
    let advert = server.advertise(v).expect("advert");
    let haves = client.haves(c).expect("haves");
    let Some(w) = want(&advert, &haves) else {
        return PullOutcome::UpToDate;
    };
    let mut pack = Vec::new();
    server
        .send_pack(v, &w, &haves, &mut |chunk| {
            pack.extend_from_slice(chunk);
            Ok(())
        })
        .expect("send");
    client
        .receive_pull(c, &advert.head, &mut &pack[..])
        .expect("pull")
}

fn git(args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .status()
        .expect("git");
    assert!(status.success(), "git {args:?}");
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (node, server) = store(tmp.path(), "server");
    let (_, client) = store(tmp.path(), "client");
    let v = build(&server);
    let twin = plain_store(tmp.path(), "twin");
    let tv = build(&twin);
    let source = twin.repo_path(tv);
    let source_url = format!("file://{}", source.display());
    let dest = tmp.path().join("git-clone.git");
    let dest_text = dest.to_string_lossy().into_owned();
    let source_text = source.to_string_lossy().into_owned();

    let mut group = c.benchmark_group("transfer");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));

    group.bench_function("clone_1000_commits_5000_secrets/keynode", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let id = clone(&server, node, v, &client);
                total += start.elapsed();
                client.delete(id).expect("delete");
            }
            total
        })
    });
    group.bench_function("clone_1000_commits_5000_secrets/git_clone_no_local", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                git(&[
                    "clone",
                    "-q",
                    "--no-local",
                    "--bare",
                    &source_text,
                    &dest_text,
                ]);
                total += start.elapsed();
                std::fs::remove_dir_all(&dest).expect("rm");
            }
            total
        })
    });

    let c_id = clone(&server, node, v, &client);
    let mut version = COMMITS;
    group.bench_function("pull_one_commit/keynode", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                version += 1;
                put(&server, v, version % SECRETS, version);
                let start = Instant::now();
                let outcome = pull(&server, v, &client, c_id);
                total += start.elapsed();
                assert!(matches!(outcome, PullOutcome::Updated { commits: 1, .. }));
            }
            total
        })
    });
    git(&[
        "clone",
        "-q",
        "--no-local",
        "--bare",
        &source_text,
        &dest_text,
    ]);
    let fetch = [
        "-C",
        dest_text.as_str(),
        "fetch",
        "-q",
        source_url.as_str(),
        "+refs/heads/main:refs/heads/main",
    ];
    group.bench_function("pull_one_commit/git_fetch", |b| {
        b.iter_custom(|iters| {
            git(&fetch);
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                version += 1;
                put(&twin, tv, version % SECRETS, version);
                let start = Instant::now();
                git(&fetch);
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
