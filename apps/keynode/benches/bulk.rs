//! Bulk work through the binary, each beside its git reference in one run
//! (issue 18):
//!
//! - `keynode secrets dir` of 5,000 small files into a new vault (one commit)
//!   vs `git add -A && git commit` of the same files into a new repository;
//! - `keynode vaults clone` of a 5,000-secret vault (one commit), end to end;
//! - `keynode vaults clone` of a vault of 10 × 1 MiB secrets vs
//!   `git clone --no-local` of a plain twin repository.
//!
//! Run: `cargo bench -p keynode --bench bulk -- --noplot`

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rand::RngCore;

mod support;
use support::{Agent, keynode, ok, trusting_pair};

const SMALL: usize = 5_000;

fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.org")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.org");
    c
}

/// A directory of `n` small files (`secret-NNNN`, a few bytes each).
fn small_files(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..n {
        std::fs::write(
            dir.path().join(format!("secret-{i:04}")),
            format!("value {i}"),
        )
        .expect("write");
    }
    dir
}

/// A directory of ten incompressible 1 MiB files.
fn big_files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = vec![0u8; 1 << 20];
    for i in 0..10 {
        rand::thread_rng().fill_bytes(&mut bytes);
        std::fs::write(dir.path().join(format!("blob-{i}")), &bytes).expect("write");
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

/// `secrets dir` of 5,000 small files into a new vault, against `git add -A
/// && git commit` of the same files into a new repository.
fn bulk_write(c: &mut Criterion) {
    let agent = Agent::start();
    let src = small_files(SMALL);
    let mut g = c.benchmark_group("secrets_dir_5000_small_files");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    let mut round = 0u64;
    g.bench_function("keynode_secrets_dir", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                round += 1;
                let vault = format!("bulk{round}");
                ok(keynode(&agent.node).args(["vaults", "create", &vault]));
                let t = Instant::now();
                ok(keynode(&agent.node)
                    .args(["secrets", "dir"])
                    .arg(src.path())
                    .arg(&vault));
                total += t.elapsed();
                ok(keynode(&agent.node).args(["vaults", "delete", &vault]));
            }
            total
        })
    });
    let scratch = tempfile::tempdir().expect("tempdir");
    g.bench_function("git_add_commit", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                round += 1;
                let repo = scratch.path().join(format!("r{round}"));
                copy_dir(src.path(), &repo);
                ok(git(&repo).args(["init", "-q"]));
                let t = Instant::now();
                ok(git(&repo).args(["add", "-A"]));
                ok(git(&repo).args(["commit", "-q", "-m", "bulk"]));
                total += t.elapsed();
                std::fs::remove_dir_all(&repo).expect("rm");
            }
            total
        })
    });
    g.finish();
}

/// Two agents that trust each other; `b` owns `name` filled from `src` and
/// shares it with `a`. Returns `(a, b, b's id)`.
fn owner_and_cloner(name: &str, src: &Path) -> (Agent, Agent, String) {
    let (a, b, a_id, b_id) = trusting_pair();
    ok(keynode(&b.node).args(["vaults", "create", name]));
    ok(keynode(&b.node).args(["secrets", "dir"]).arg(src).arg(name));
    ok(keynode(&b.node).args(["vaults", "share", name, &a_id]));
    (a, b, b_id)
}

/// Times `vaults clone NAME` on `a` (deleting the clone after each).
fn time_clones(a: &Agent, name: &str, owner: &str, n: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..n {
        let t = Instant::now();
        ok(keynode(&a.node).args(["vaults", "clone", "--no-follow", name, owner]));
        total += t.elapsed();
        ok(keynode(&a.node).args(["vaults", "delete", name]));
    }
    total
}

fn bulk_clone(c: &mut Criterion) {
    let small = small_files(SMALL);
    let (a, _b, owner) = owner_and_cloner("many", small.path());
    let mut g = c.benchmark_group("clone_cli");
    g.sample_size(10);
    g.bench_function("vaults_clone_5000_secrets", |b| {
        b.iter_custom(|n| time_clones(&a, "many", &owner, n))
    });

    let big = big_files();
    let (a, _b, owner) = owner_and_cloner("big", big.path());
    g.bench_function("vaults_clone_10x1mib", |b| {
        b.iter_custom(|n| time_clones(&a, "big", &owner, n))
    });
    // The reference: a plain repository of the same files, cloned by git
    // through its pack protocol (`--no-local`: no hard links).
    let twin = tempfile::tempdir().expect("tempdir");
    copy_dir(big.path(), twin.path());
    ok(git(twin.path()).args(["init", "-q"]));
    ok(git(twin.path()).args(["add", "-A"]));
    ok(git(twin.path()).args(["commit", "-q", "-m", "big"]));
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut round = 0u64;
    g.bench_function("git_clone_no_local_10x1mib", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                round += 1;
                let dest = scratch.path().join(format!("c{round}"));
                let t = Instant::now();
                ok(git(scratch.path())
                    .args(["clone", "-q", "--no-local"])
                    .arg(twin.path())
                    .arg(&dest));
                total += t.elapsed();
                std::fs::remove_dir_all(&dest).expect("rm");
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bulk_write, bulk_clone);
criterion_main!(benches);
