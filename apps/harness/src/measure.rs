//! Measurements beside the workload: `fanout` (one share reaching every member
//! of a big gestalt) and `idle` (memory of idle agents, how many fit).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keynode_client::api::{Request, Response};
use serde_json::json;

use crate::cluster::{self, Cluster, futures_join};

fn step(what: &str, t: Instant) {
    eprintln!("  {what:<50} {:>8.2} s", t.elapsed().as_secs_f64());
}

async fn must(sock: &std::path::Path, req: Request, what: &str) -> Result<Response, String> {
    cluster::call(sock, req)
        .await
        .map_err(|e| format!("{what}: {e}"))
}

/// Runs `f(i)` for every `i` in `items`, `parallel` at a time.
async fn each<F, Fut>(items: Vec<usize>, parallel: usize, f: F) -> Result<(), String>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    for chunk in items.chunks(parallel.max(1)) {
        for r in futures_join(chunk.iter().map(|&i| f(i))).await {
            r?;
        }
    }
    Ok(())
}

/// `fanout`: one owner and a gestalt of `members` nodes (a star of claims
/// around its first member). The owner shares a vault with the gestalt and we
/// time the share call, until the owner's outbox holds no VaultShare (every
/// member acknowledged it into its inbox), and until every inbox was seen
/// holding it. Returns the report.
pub async fn fanout(
    members: usize,
    runs: usize,
    writes: usize,
    report: PathBuf,
) -> Result<bool, String> {
    let t = Instant::now();
    eprintln!("fanout: starting {} agents…", members + 1);
    let mut cluster = Cluster::start(members + 1, false).await?;
    step("agents started", t);
    let r = fanout_on(&cluster, members, runs, writes, &report).await;
    cluster.stop().await;
    r
}

async fn fanout_on(
    cluster: &Cluster,
    members: usize,
    runs: usize,
    writes: usize,
    report: &std::path::Path,
) -> Result<bool, String> {
    let a = Arc::new(
        cluster
            .agents
            .iter()
            .map(|a| (a.socket.clone(), a.node_id, a.port))
            .collect::<Vec<_>>(),
    );
    let (owner, root) = (0usize, 1usize);
    let all: Vec<usize> = (1..=members).collect();
    let t = Instant::now();
    each(all.clone(), 16, |m| {
        let a = a.clone();
        async move {
            let add = |_from: usize, to: usize| Request::NodesAdd {
                node: a[to].1,
                host: "127.0.0.1".into(),
                port: a[to].2,
            };
            must(&a[owner].0, add(owner, m), "owner nodes add").await?;
            must(&a[m].0, add(m, owner), "member nodes add").await?;
            if m != root {
                must(&a[root].0, add(root, m), "root nodes add").await?;
                must(&a[m].0, add(m, root), "member nodes add root").await?;
            }
            Ok(())
        }
    })
    .await?;
    step("address books", t);
    let t = Instant::now();
    each(
        all.iter().copied().filter(|&m| m != root).collect(),
        4,
        |m| {
            let a = a.clone();
            async move {
                must(
                    &a[m].0,
                    Request::IdentitiesInvite { node: a[root].1 },
                    "invite",
                )
                .await?;
                must(&a[root].0, Request::NodesClaim { node: a[m].1 }, "claim").await?;
                Ok(())
            }
        },
    )
    .await?;
    step(&format!("gestalt of {members} formed (claims)"), t);
    let t = Instant::now();
    each(all.clone(), 16, |m| {
        let a = a.clone();
        async move {
            must(
                &a[m].0,
                Request::IdentitiesTrust {
                    gestalt: a[owner].1.into(),
                },
                "member trusts owner",
            )
            .await
            .map(drop)
        }
    })
    .await?;
    step("members trust the owner", t);
    let t = Instant::now();
    must(
        &a[owner].0,
        Request::IdentitiesTrust {
            gestalt: a[root].1.into(),
        },
        "owner trusts the gestalt",
    )
    .await?;
    let r = must(
        &a[owner].0,
        Request::IdentitiesDiscover {
            gestalt: a[root].1.into(),
        },
        "owner discovers the gestalt",
    )
    .await?;
    let known = match r {
        Response::Discovered(d) => d.gestalt.map(|g| g.nodes.len()).unwrap_or(0),
        _ => 0,
    };
    step(
        &format!("owner trusts and discovers the gestalt ({known} nodes)"),
        t,
    );
    if known != members {
        return Err(format!("the owner sees {known} of {members} members"));
    }

    let mut results = Vec::new();
    for run in 0..runs {
        let vault = format!("fan{run}");
        must(
            &a[owner].0,
            Request::VaultsCreate {
                name: cluster::vault_name(&vault).map_err(|e| format!("create: {e}"))?,
            },
            "create",
        )
        .await?;
        let t0 = Instant::now();
        must(
            &a[owner].0,
            Request::VaultsShare {
                vault: vault.clone(),
                to: a[root].1.into(),
            },
            "share",
        )
        .await?;
        let share_call = t0.elapsed();
        // Delivered = acknowledged by the recipient into its inbox.
        let delivered = loop {
            let r = must(&a[owner].0, Request::NotificationsOutboxRead, "outbox").await?;
            let left = match r {
                Response::Notifications(l) => l.iter().filter(|n| n.kind == "vault_share").count(),
                _ => 0,
            };
            if left == 0 {
                break t0.elapsed();
            }
            if t0.elapsed() > Duration::from_secs(120) {
                return Err(format!(
                    "{left} VaultShare notifications undelivered after 120 s"
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        // Every inbox holds it (checked after delivery; an upper bound).
        let missing: Vec<usize> = {
            let checks = futures_join(all.iter().map(|&m| {
                let (a, vault) = (a.clone(), vault.clone());
                async move {
                    let r = cluster::call(
                        &a[m].0,
                        Request::NotificationsInboxRead {
                            unread: false,
                            limit: None,
                            newest_first: true,
                        },
                    )
                    .await;
                    let ok = matches!(r, Ok(Response::Notifications(l)) if l.iter().any(|n| n.kind == "vault_share" && n.from == a[owner].1 && n.data.contains(&format!("\"{vault}\""))));
                    (m, ok)
                }
            }))
            .await;
            checks
                .into_iter()
                .filter(|(_, ok)| !ok)
                .map(|(m, _)| m)
                .collect()
        };
        let all_seen = t0.elapsed();
        eprintln!(
            "  run {run}: share call {:.1} ms, delivered to all {members} {:.1} ms, inboxes verified {:.1} ms{}",
            share_call.as_secs_f64() * 1000.0,
            delivered.as_secs_f64() * 1000.0,
            all_seen.as_secs_f64() * 1000.0,
            if missing.is_empty() {
                String::new()
            } else {
                format!(", MISSING on {missing:?}")
            }
        );
        results.push(json!({
            "run": run,
            "share_call_ms": share_call.as_secs_f64() * 1000.0,
            "delivered_all_ms": delivered.as_secs_f64() * 1000.0,
            "inboxes_verified_ms": all_seen.as_secs_f64() * 1000.0,
            "missing": missing,
        }));
    }
    let ok = results
        .iter()
        .all(|r| r["missing"].as_array().is_some_and(|m| m.is_empty()));
    let mut delivered: Vec<f64> = results
        .iter()
        .filter_map(|r| r["delivered_all_ms"].as_f64())
        .collect();
    delivered.sort_by(f64::total_cmp);
    let follow = if writes > 0 {
        let vault = format!("fan{}", runs - 1);
        Some(crate::follow::measure(cluster, &vault, writes).await?)
    } else {
        None
    };
    let ok = ok && follow.as_ref().is_none_or(|f| f["ok"] == true);
    let out = json!({
        "mode": "fanout",
        "members": members,
        "runs": results,
        "median_delivered_all_ms": delivered.get(delivered.len() / 2),
        "target_ms": 2000,
        "follow": follow,
    });
    std::fs::create_dir_all(report).map_err(|e| e.to_string())?;
    std::fs::write(
        report.join("fanout.json"),
        serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    println!(
        "fanout to {members} members: median {:.1} ms until every member acknowledged (target 2000 ms)",
        delivered
            .get(delivered.len() / 2)
            .copied()
            .unwrap_or(f64::NAN)
    );
    Ok(ok)
}

/// `idle`: starts `nodes` agents, waits, and reports each one's resident memory.
pub async fn idle(nodes: usize, wait: Duration, report: PathBuf) -> Result<bool, String> {
    let t = Instant::now();
    let mut cluster = Cluster::start(nodes, false).await?;
    let started = t.elapsed();
    tokio::time::sleep(wait).await;
    let mut rss: Vec<u64> = (0..nodes).filter_map(|i| cluster.rss_kib(i)).collect();
    // Every agent still answers.
    let alive = futures_join(
        cluster
            .agents
            .iter()
            .map(|a| a.socket.clone())
            .map(|s| async move { cluster::call(&s, Request::AgentStatus).await.is_ok() }),
    )
    .await
    .into_iter()
    .filter(|ok| *ok)
    .count();
    cluster.stop().await;
    rss.sort();
    let total: u64 = rss.iter().sum();
    let mib = |k: u64| k as f64 / 1024.0;
    let out = json!({
        "mode": "idle",
        "nodes": nodes,
        "alive": alive,
        "start_s": started.as_secs_f64(),
        "rss_kib": {
            "min": rss.first(), "median": rss.get(rss.len() / 2), "max": rss.last(), "total": total,
        },
    });
    std::fs::create_dir_all(&report).map_err(|e| e.to_string())?;
    std::fs::write(
        report.join("idle.json"),
        serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    println!(
        "{nodes} idle agents ({alive} answering) started in {:.1} s; RSS per agent: median {:.1} MiB, max {:.1} MiB; total {:.0} MiB",
        started.as_secs_f64(),
        mib(rss.get(rss.len() / 2).copied().unwrap_or(0)),
        mib(rss.last().copied().unwrap_or(0)),
        mib(total)
    );
    Ok(alive == nodes)
}
