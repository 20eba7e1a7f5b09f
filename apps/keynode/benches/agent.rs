//! Agent benchmarks, each beside its reference, in one run:
//!
//! - single-secret commits through the agent API (a connection each, and one
//!   kept connection) vs `git add && git commit`;
//! - listing a 10,000-secret vault through the API vs `git ls-tree` on the same
//!   repository;
//! - agent start to ready (with and without the Argon2id key derivation);
//! - `vaults clone` of a 1,000-secret vault and `vaults pull` of 11 changed
//!   secrets, end to end through the CLI between two agents;
//! - idle agent memory (printed; not a time).
//!
//! Run: `cargo bench -p keynode --bench agent`

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use keynode_agent::{Node, NodeConfig};
use keynode_client::Client;
use keynode_client::api::{Request, Response};
use keynode_core::{SecretPath, VaultName};

mod support;
use support::{Agent, PASSWORD, keynode, ok, trusting_pair};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn call(node: &Path, req: Request) -> Response {
    Client::connect(&node.join("agent.sock"))
        .await
        .expect("connect")
        .call(req)
        .await
        .expect("call")
}

async fn write(node: &Path, vault: &str, path: &str, data: &[u8]) {
    let mut data = data;
    Client::connect(&node.join("agent.sock"))
        .await
        .expect("connect")
        .upload(
            Request::SecretsWrite {
                vault: vault.into(),
                path: SecretPath::new(path).expect("secret path"),
                create_new: false,
            },
            &mut data,
        )
        .await
        .expect("write");
}

fn commits(c: &mut Criterion) {
    let agent = Agent::start();
    let rt = rt();
    rt.block_on(call(
        &agent.node,
        Request::VaultsCreate {
            name: VaultName::new("bench").expect("vault name"),
        },
    ));
    let n = AtomicU64::new(0);
    let mut g = c.benchmark_group("commit_one_secret");
    g.bench_function("keynode_agent_api", |b| {
        b.iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            rt.block_on(write(
                &agent.node,
                "bench",
                "key",
                format!("value {i}").as_bytes(),
            ));
        })
    });
    // The same commit through `keynode_client::Agent`, whose connection is
    // kept between calls: no connect and no greeting per commit.
    let kept = keynode_client::Agent::new(&agent.node);
    g.bench_function("keynode_agent_api_kept_connection", |b| {
        b.iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            rt.block_on(kept.write("bench", "key", format!("value {i}").as_bytes()))
                .expect("write");
        })
    });

    let repo = tempfile::tempdir().expect("tempdir");
    let git = |args: &[&str]| {
        let st = Command::new("git")
            .arg("-C")
            .arg(repo.path())
            .args([
                "-c",
                "user.name=b",
                "-c",
                "user.email=b@b",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("git");
        assert!(st.success());
    };
    git(&["init", "-q"]);
    g.bench_function("git_add_commit", |b| {
        b.iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            std::fs::write(repo.path().join("key"), format!("value {i}")).expect("write");
            git(&["add", "key"]);
            git(&["commit", "-q", "-m", "update key"]);
        })
    });
    g.finish();
}

fn list(c: &mut Criterion) {
    let agent = Agent::start();
    let src = tempfile::tempdir().expect("tempdir");
    for i in 0..10_000 {
        std::fs::write(src.path().join(format!("secret-{i:05}")), format!("v{i}")).expect("write");
    }
    ok(keynode(&agent.node).args(["vaults", "create", "big"]));
    ok(keynode(&agent.node)
        .args(["secrets", "dir"])
        .arg(src.path())
        .arg("big"));
    let rt = rt();
    // The vault's own objects are encrypted, so git reads a plain repository of
    // the same 10,000 files.
    let plain = tempfile::tempdir().expect("tempdir");
    let repo = plain.path().join("repo.git");
    let work = src.path();
    for args in [
        &["init", "-q", "--bare"][..],
        &["--work-tree", "W", "add", "."][..],
        &[
            "--work-tree",
            "W",
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@b",
            "commit",
            "-qm",
            "all",
        ][..],
    ] {
        let st = Command::new("git")
            .arg("--git-dir")
            .arg(&repo)
            .args(args.iter().map(|a| {
                if *a == "W" {
                    work.as_os_str().to_owned()
                } else {
                    std::ffi::OsString::from(a)
                }
            }))
            .status()
            .expect("git");
        assert!(st.success());
    }

    let mut g = c.benchmark_group("list_10000_secrets");
    g.bench_function("keynode_agent_api", |b| {
        b.iter(|| {
            let r = rt.block_on(call(
                &agent.node,
                Request::SecretsList {
                    vault: "big".into(),
                    path: None,
                    at: None,
                },
            ));
            let Response::Entries(e) = r else {
                panic!("no entries")
            };
            assert_eq!(e.len(), 10_000);
        })
    });
    // `secrets list` reports sizes, like `git ls-tree -l`; plain ls-tree does not.
    for (name, args) in [
        ("git_ls_tree", &["ls-tree", "HEAD"][..]),
        ("git_ls_tree_long", &["ls-tree", "-l", "HEAD"][..]),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let out = Command::new("git")
                    .arg("--git-dir")
                    .arg(&repo)
                    .args(args)
                    .output()
                    .expect("git");
                assert!(out.status.success());
            })
        });
    }
    g.finish();
}

fn start(c: &mut Criterion) {
    let mut g = c.benchmark_group("agent_start");
    g.sample_size(10);
    let runner = actix_rt::System::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("n");
    // Create the identity once; measure restarts.
    runner.block_on(async {
        Node::start(NodeConfig::new(&path, PASSWORD))
            .await
            .expect("start")
            .stop()
            .await;
    });
    let measure = |excluding_kdf: bool, iters: u64| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let t = runner.block_on(async {
                let node = Node::start(NodeConfig::new(&path, PASSWORD))
                    .await
                    .expect("start");
                let t = node.timings();
                node.stop().await;
                t
            });
            total += if excluding_kdf {
                t.total - t.key_derivation
            } else {
                t.key_derivation
            };
        }
        total
    };
    g.bench_function("ready_excluding_key_derivation", |b| {
        b.iter_custom(|n| measure(true, n))
    });
    g.bench_function("argon2id_key_derivation", |b| {
        b.iter_custom(|n| measure(false, n))
    });
    g.bench_function("binary_start_background_to_ready", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let dir = tempfile::tempdir().expect("tempdir");
                let node = dir.path().join("n");
                let t = Instant::now();
                ok(keynode(&node).args(["agent", "start", "--background"]));
                total += t.elapsed();
                ok(keynode(&node).args(["agent", "stop"]));
            }
            total
        })
    });
    g.finish();
}

/// End to end through the CLI: `keynode vaults clone` of a 1,000-secret vault,
/// and `keynode vaults pull` of a commit changing 11 secrets, between two
/// agents on loopback.
fn transfer_cli(c: &mut Criterion) {
    let (a, b, a_id, b_id) = trusting_pair();
    ok(keynode(&b.node).args(["vaults", "create", "thousand"]));
    let src = tempfile::tempdir().expect("tempdir");
    for i in 0..1_000 {
        std::fs::write(
            src.path().join(format!("secret-{i:04}")),
            format!("value {i}"),
        )
        .expect("write");
    }
    ok(keynode(&b.node)
        .args(["secrets", "dir"])
        .arg(src.path())
        .arg("thousand"));
    ok(keynode(&b.node).args(["vaults", "share", "thousand", &a_id]));

    let mut g = c.benchmark_group("transfer_cli");
    g.sample_size(20);
    g.bench_function("vaults_clone_1000_secrets", |bench| {
        bench.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let t = Instant::now();
                ok(keynode(&a.node).args(["vaults", "clone", "thousand", &b_id]));
                total += t.elapsed();
                ok(keynode(&a.node).args(["vaults", "delete", "thousand"]));
            }
            total
        })
    });
    ok(keynode(&a.node).args(["vaults", "clone", "thousand", &b_id]));
    let changes = tempfile::tempdir().expect("tempdir");
    let mut round = 0u64;
    g.bench_function("vaults_pull_11_changed_secrets", |bench| {
        bench.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                round += 1;
                for i in 0..11 {
                    let f = changes.path().join(format!("secret-{:04}", i * 90));
                    std::fs::write(f, format!("round {round}")).expect("write");
                }
                ok(keynode(&b.node)
                    .args(["secrets", "dir"])
                    .arg(changes.path())
                    .arg("thousand"));
                let t = Instant::now();
                ok(keynode(&a.node).args(["vaults", "pull", "thousand"]));
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn idle_memory(_c: &mut Criterion) {
    let agent = Agent::start();
    std::thread::sleep(Duration::from_secs(2));
    let status = keynode(&agent.node)
        .args(["--format", "json", "agent", "status"])
        .output()
        .expect("status");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    let pid = status["pid"].as_u64().expect("pid");
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc");
    let field = |name: &str| {
        proc_status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    println!(
        "idle_agent_memory: VmRSS {} (peak VmHWM {}, which includes the Argon2id derivation)",
        field("VmRSS:"),
        field("VmHWM:")
    );
}

criterion_group!(benches, commits, list, start, transfer_cli, idle_memory);
criterion_main!(benches);
