//! `keynode-harness backup`: the time and size of `backup create` on a node of
//! V vaults × S secrets, side by side with `tar` of the same node path in the
//! same run, and the latency of writes during the backup beside their latency
//! without one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keynode_client::Client;
use keynode_client::api::{Request, Response};
use keynode_core::{SecretPath, VaultName};
use serde_json::json;

use crate::cluster::{self, Cluster};

/// Writes to a vault until `stop`, returning each write's latency.
async fn writes_until(socket: PathBuf, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut out = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let t = Instant::now();
        if cluster::write(
            &socket,
            "live",
            &format!("k{}", i % 64),
            format!("v{i}").as_bytes(),
        )
        .await
        .is_ok()
        {
            out.push(t.elapsed());
        }
        i += 1;
    }
    out
}

fn quantiles(mut v: Vec<Duration>) -> serde_json::Value {
    v.sort();
    let ms = |d: Option<&Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    let at = |q: f64| v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)));
    json!({ "count": v.len(), "p50_ms": ms(at(0.5)), "p99_ms": ms(at(0.99)), "max_ms": ms(v.last()) })
}

fn du(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

/// Runs the measurement; writes `backup.json` under `report`.
pub async fn run(vaults: usize, secrets: usize, report: PathBuf) -> Result<bool, String> {
    let mut cluster = Cluster::start(1, false).await?;
    let agent = &cluster.agents[0];
    let socket = agent.socket.clone();
    let node_path = agent.dir.clone().ok_or("the agent has no node path")?;
    // The secrets, as files to import (one commit per vault).
    let src = cluster.root().join("src");
    let mut files = Vec::with_capacity(secrets);
    for i in 0..secrets {
        let rel = format!("d{:03}/s{i:05}", i / 100);
        let full = src.join(&rel);
        std::fs::create_dir_all(full.parent().expect("parent")).map_err(|e| e.to_string())?;
        let value = format!(
            "secret-{i:05}-{:016x}",
            (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        );
        std::fs::write(&full, value).map_err(|e| e.to_string())?;
        files.push((SecretPath::new(&rel).map_err(|e| e.to_string())?, full));
    }
    let t = Instant::now();
    for v in 0..vaults {
        let name = format!("v{v:02}");
        cluster::call(
            &socket,
            Request::VaultsCreate {
                name: VaultName::new(&name).map_err(|e| e.to_string())?,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        Client::connect(&socket)
            .await
            .map_err(|e| e.to_string())?
            .upload_files(
                Request::SecretsDir {
                    vault: name,
                    path: None,
                },
                &files,
            )
            .await
            .map_err(|e| e.to_string())?;
    }
    cluster::call(
        &socket,
        Request::VaultsCreate {
            name: VaultName::new("live").map_err(|e| e.to_string())?,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let filled = t.elapsed();
    let node_bytes = du(&node_path);

    // Writes alone, for the baseline.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(writes_until(socket.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let alone = writer.await.map_err(|e| e.to_string())?;

    // tar of the same node path (the agent running, as for the backup).
    let tar_out = cluster.root().join("node.tar");
    let t = Instant::now();
    let status = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&tar_out)
        .arg("-C")
        .arg(&node_path)
        .args(["--exclude", "agent.sock", "."])
        .status()
        .map_err(|e| format!("tar: {e}"))?;
    let tar_time = t.elapsed();
    if !status.success() {
        return Err(format!("tar exited with {status}"));
    }
    let tar_bytes = std::fs::metadata(&tar_out)
        .map_err(|e| e.to_string())?
        .len();

    // The backup, with writes running.
    let archive = cluster.root().join("node.knb");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(writes_until(socket.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let summary = match cluster::call(
        &socket,
        Request::BackupCreate {
            path: archive.clone(),
        },
    )
    .await
    .map_err(|e| e.to_string())?
    {
        Response::BackupCreated(s) => s,
        other => return Err(format!("unexpected {other:?}")),
    };
    let backup_time = t.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let during = writer.await.map_err(|e| e.to_string())?;
    let archive_bytes = std::fs::metadata(&archive)
        .map_err(|e| e.to_string())?
        .len();
    let verified = keynode_agent::backup::verify(&archive).is_ok();
    cluster.stop().await;

    let ratio = backup_time.as_secs_f64() / tar_time.as_secs_f64().max(1e-9);
    let out = json!({
        "mode": "backup",
        "vaults": vaults,
        "secrets_per_vault": secrets,
        "fill_s": filled.as_secs_f64(),
        "node_path_bytes": node_bytes,
        "backup": { "seconds": backup_time.as_secs_f64(), "bytes": archive_bytes, "members": summary.members, "verified": verified },
        "tar": { "seconds": tar_time.as_secs_f64(), "bytes": tar_bytes },
        "time_vs_tar": ratio,
        "writes_without_backup": quantiles(alone),
        "writes_during_backup": quantiles(during),
    });
    std::fs::create_dir_all(&report).map_err(|e| e.to_string())?;
    std::fs::write(
        report.join("backup.json"),
        serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
    );
    Ok(verified)
}
