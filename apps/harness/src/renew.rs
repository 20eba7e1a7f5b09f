//! `keynode-harness renew`: how long after a node renews its key a peer's
//! share works again under the new key. Two agents; B clones a vault A shares
//! with it; then, each round, B stops, renews its key, starts, and the clock
//! runs from B being live until (1) A lists B's new NodeId among the vault's
//! grantees and (2) B's pull of the vault succeeds.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use keynode_client::api::{Request, Response};
use keynode_core::VaultName;
use serde_json::json;

use crate::cluster::{self, Cluster, PASSWORD};

async fn ok(socket: &std::path::Path, req: Request) -> Result<Response, String> {
    cluster::call(socket, req).await.map_err(|e| e.to_string())
}

/// Runs `rounds` renewals; writes `renew.json` under `report`.
pub async fn run(rounds: usize, report: PathBuf) -> Result<bool, String> {
    let mut cluster = Cluster::start(2, false).await?;
    let (a, b) = (&cluster.agents[0], &cluster.agents[1]);
    let (a_sock, b_sock) = (a.socket.clone(), b.socket.clone());
    let (a_id, b_id) = (a.node_id, b.node_id);
    let (a_port, b_port) = (a.port, b.port);
    ok(
        &a_sock,
        Request::NodesAdd {
            node: b_id,
            host: "127.0.0.1".into(),
            port: b_port,
        },
    )
    .await?;
    ok(
        &b_sock,
        Request::NodesAdd {
            node: a_id,
            host: "127.0.0.1".into(),
            port: a_port,
        },
    )
    .await?;
    ok(
        &a_sock,
        Request::IdentitiesTrust {
            gestalt: b_id.into(),
        },
    )
    .await?;
    ok(
        &b_sock,
        Request::IdentitiesTrust {
            gestalt: a_id.into(),
        },
    )
    .await?;
    ok(
        &a_sock,
        Request::VaultsCreate {
            name: VaultName::new("prod").map_err(|e| e.to_string())?,
        },
    )
    .await?;
    cluster::write(&a_sock, "prod", "k", b"v0")
        .await
        .map_err(|e| e.to_string())?;
    ok(
        &a_sock,
        Request::VaultsShare {
            vault: "prod".into(),
            to: b_id.into(),
        },
    )
    .await?;
    ok(
        &b_sock,
        Request::VaultsClone {
            vault: "prod".into(),
            node: a_id,
            follow: false,
        },
    )
    .await?;
    let b_dir = cluster.agents[1].dir.clone().ok_or("no node path")?;
    let mut granted = Vec::new();
    let mut pulled = Vec::new();
    let mut all_ok = true;
    for round in 0..rounds {
        cluster.kill(1).await;
        let paths = keynode_client::NodePaths::new(&b_dir);
        let renewed = tokio::task::spawn_blocking(move || {
            keynode_agent::renewal::renew(&paths, PASSWORD.as_bytes())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        cluster.agents[1].node_id = renewed.new;
        cluster.restart(1).await?;
        let t = Instant::now();
        cluster::write(&a_sock, "prod", "k", format!("v{}", round + 1).as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let deadline = t + Duration::from_secs(60);
        let mut seen = None;
        let mut done = None;
        while Instant::now() < deadline && done.is_none() {
            if seen.is_none() {
                let perms = Request::VaultsPermissions {
                    vault: "prod".into(),
                };
                let granted = matches!(
                    ok(&a_sock, perms).await,
                    Ok(Response::VaultPermissions(g)) if g.iter().any(|g| g.nodes.contains(&renewed.new))
                );
                if granted {
                    seen = Some(t.elapsed());
                }
            }
            let pull = Request::VaultsPull {
                vault: "prod".into(),
                node: None,
                pull_vault: None,
            };
            if matches!(ok(&b_sock, pull).await, Ok(Response::Pulled { commits, .. }) if commits > 0)
            {
                done = Some(t.elapsed());
            }
            if done.is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        match (seen, done) {
            (Some(s), Some(d)) => {
                granted.push(s.as_secs_f64());
                pulled.push(d.as_secs_f64());
            }
            _ => all_ok = false,
        }
    }
    cluster.stop().await;
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let out = json!({
        "mode": "renew",
        "rounds": rounds,
        "completed": pulled.len(),
        "grant_seen_s": { "all": granted, "max": max(&granted) },
        "pulled_s": { "all": pulled, "max": max(&pulled) },
    });
    std::fs::create_dir_all(&report).map_err(|e| e.to_string())?;
    std::fs::write(
        report.join("renew.json"),
        serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
    );
    Ok(all_ok)
}
