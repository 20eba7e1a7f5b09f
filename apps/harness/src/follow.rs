//! `fanout --writes W`: every member of the gestalt clones the shared vault
//! (following it), and each of W writes on the owner is timed until it is
//! visible on every member (the member's watch reports the owner's new head,
//! which happens once its pull is in) and until a program run under
//! `keynode secrets env --watch` on one member was restarted with the new
//! value (the program writes the value and the time it started).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keynode_client::Client;
use keynode_client::api::{Request, Response};
use serde_json::{Value, json};

use crate::cluster::{self, Agent, Cluster, futures_join};

/// Longest one write may take to reach everyone before it counts as missed.
const VISIBLE_WITHIN: Duration = Duration::from_secs(10);
/// Targets of the issue, p99 on loopback.
const FOLLOWER_TARGET_MS: f64 = 1000.0;
const PROGRAM_TARGET_MS: f64 = 1500.0;

/// A program under `keynode secrets env --watch` on one member.
struct Watched {
    child: std::process::Child,
    out: PathBuf,
}

impl Watched {
    /// Starts it, if the `keynode` binary sits beside the harness.
    fn start(member: &Agent, vault: &str) -> Result<Option<Watched>, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let keynode = exe.with_file_name("keynode");
        let Some(dir) = &member.dir else {
            return Ok(None);
        };
        if !keynode.exists() {
            eprintln!(
                "  (no {} beside the harness: `cargo build --release -p keynode` to time a watched program)",
                keynode.display()
            );
            return Ok(None);
        }
        let out = dir.join("watched-starts");
        let script = format!(
            "echo \"$VALUE $(date +%s%N)\" >> '{}'; exec sleep 3600",
            out.display()
        );
        let child = std::process::Command::new(keynode)
            .arg("--node-path")
            .arg(dir)
            .args([
                "secrets", "env", "--watch", vault, "--", "sh", "-c", &script,
            ])
            .env_remove("KEYNODE_NODE_PATH")
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start keynode secrets env --watch: {e}"))?;
        Ok(Some(Watched { child, out }))
    }

    /// When the program started with `value`, in ns since the epoch.
    fn started_with(&self, value: &str) -> Option<u128> {
        let text = std::fs::read_to_string(&self.out).ok()?;
        text.lines().find_map(|l| {
            let (v, ns) = l.split_once(' ')?;
            (v == value).then(|| ns.trim().parse().ok())?
        })
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ns_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// How long traffic is counted while nothing changes: one keep-alive
/// interval, so every connection pings exactly once per side in it whatever
/// its age (a shorter window counts the pings of some connections only).
const IDLE_WINDOW: Duration = keynode_net::KEEPALIVE_INTERVAL;

/// Bytes and packets on the loopback interface (`/proc/net/dev`, headers
/// included) over [`IDLE_WINDOW`] while nothing changes: every byte any
/// agent of the run sends, as all of them talk over loopback. (A process's
/// `/proc/PID/io` does not count socket `send`/`recv`.)
async fn idle_traffic(followers: usize, when: &str) -> Value {
    let lo = || -> Option<(u64, u64)> {
        let text = std::fs::read_to_string("/proc/net/dev").ok()?;
        let line = text.lines().find_map(|l| l.trim().strip_prefix("lo:"))?;
        let mut fields = line.split_whitespace().map(|f| f.parse::<u64>().ok());
        Some((fields.next()??, fields.next()??))
    };
    let Some((b0, p0)) = lo() else {
        return Value::Null;
    };
    tokio::time::sleep(IDLE_WINDOW).await;
    let Some((b1, p1)) = lo() else {
        return Value::Null;
    };
    let secs = IDLE_WINDOW.as_secs_f64();
    let (bytes, packets) = ((b1 - b0) as f64 / secs, (p1 - p0) as f64 / secs);
    let per = bytes / followers.max(1) as f64;
    println!(
        "follow: idle, {followers} members {when}: {bytes:.0} B/s, {packets:.1} packets/s on loopback ({per:.1} B/s per member)"
    );
    json!({
        "window_s": secs,
        "loopback_bytes_per_s": bytes,
        "loopback_packets_per_s": packets,
        "per_member_bytes_per_s": per,
    })
}

/// p50, p99 and max of `ms`, in ms.
fn summary(ms: &mut [f64]) -> Value {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if ms.is_empty() {
            return None;
        }
        let i = ((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1;
        Some(ms[i])
    };
    json!({ "samples": ms.len(), "p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": ms.last() })
}

async fn must(sock: &Path, req: Request, what: &str) -> Result<Response, String> {
    cluster::call(sock, req)
        .await
        .map_err(|e| format!("{what}: {e}"))
}

/// Runs the measurement; the report's `ok` says whether every write reached
/// everyone within the targets.
pub async fn measure(cluster: &Cluster, vault: &str, writes: usize) -> Result<Value, String> {
    let owner = &cluster.agents[0];
    let members: Vec<&Agent> = cluster.agents[1..].iter().collect();
    cluster::write(&owner.socket, vault, "VALUE", b"v0")
        .await
        .map_err(|e| format!("first write: {e}"))?;
    // The reference: the same owner and connections, nobody following yet.
    let idle_before = idle_traffic(members.len(), "before following").await;
    let t = Instant::now();
    for chunk in members.chunks(16) {
        for r in futures_join(chunk.iter().map(|m| {
            let (socket, vault, node) = (m.socket.clone(), vault.to_owned(), owner.node_id);
            async move {
                let clone = Request::VaultsClone {
                    vault,
                    node,
                    follow: true,
                };
                must(&socket, clone, "clone").await
            }
        }))
        .await
        {
            r?;
        }
    }
    eprintln!(
        "  {} members cloned {vault}, following      {:>8.2} s",
        members.len(),
        t.elapsed().as_secs_f64()
    );
    let (tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    for (i, m) in members.iter().enumerate() {
        let client = Client::connect(&m.socket)
            .await
            .map_err(|e| format!("watch: {e}"))?;
        let (_, mut watch) = client
            .watch(vec![vault.into()])
            .await
            .map_err(|e| format!("watch: {e}"))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Ok(Some((_, head))) = watch.next().await {
                if tx.send((i, head, Instant::now())).is_err() {
                    break;
                }
            }
        });
    }
    let program = Watched::start(members[0], vault)?;
    if let Some(p) = &program {
        let deadline = Instant::now() + VISIBLE_WITHIN;
        while p.started_with("v0").is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let (mut follower_ms, mut program_ms) = (Vec::new(), Vec::new());
    let (mut missed, mut program_missed) = (0usize, 0usize);
    for w in 1..=writes {
        let value = format!("v{w}");
        let (t0, epoch0) = (Instant::now(), ns_now());
        cluster::write(&owner.socket, vault, "VALUE", value.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let head = cluster::head(&owner.socket, vault)
            .await
            .map_err(|e| format!("head: {e}"))?
            .ok_or("no head")?;
        let mut seen = HashSet::new();
        let deadline = tokio::time::Instant::from_std(t0 + VISIBLE_WITHIN);
        while seen.len() < members.len() {
            match tokio::time::timeout_at(deadline, seen_rx.recv()).await {
                Ok(Some((i, h, at))) if h == head => {
                    if seen.insert(i) {
                        follower_ms.push(at.duration_since(t0).as_secs_f64() * 1000.0);
                    }
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        missed += members.len() - seen.len();
        if let Some(p) = &program {
            let deadline = t0 + VISIBLE_WITHIN;
            loop {
                if let Some(ns) = p.started_with(&value) {
                    program_ms.push(ns.saturating_sub(epoch0) as f64 / 1e6);
                    break;
                }
                if Instant::now() > deadline {
                    program_missed += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
    let idle = idle_traffic(members.len(), "following").await;
    let followers = summary(&mut follower_ms);
    let watched = program.as_ref().map(|_| summary(&mut program_ms));
    let follower_p99 = followers["p99_ms"].as_f64().unwrap_or(f64::INFINITY);
    let program_p99 = watched
        .as_ref()
        .map(|w| w["p99_ms"].as_f64().unwrap_or(f64::INFINITY));
    let ok = missed == 0
        && program_missed == 0
        && follower_p99 <= FOLLOWER_TARGET_MS
        && program_p99.is_none_or(|p| p <= PROGRAM_TARGET_MS);
    println!(
        "follow: {writes} writes to {} followers: visible p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (target p99 ≤ {FOLLOWER_TARGET_MS} ms), {missed} missed",
        members.len(),
        followers["p50_ms"].as_f64().unwrap_or(f64::NAN),
        follower_p99,
        followers["max_ms"].as_f64().unwrap_or(f64::NAN),
    );
    if let Some(w) = &watched {
        println!(
            "follow: watched program restarted with the new value: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (target p99 ≤ {PROGRAM_TARGET_MS} ms), {program_missed} missed",
            w["p50_ms"].as_f64().unwrap_or(f64::NAN),
            w["p99_ms"].as_f64().unwrap_or(f64::NAN),
            w["max_ms"].as_f64().unwrap_or(f64::NAN),
        );
    }
    Ok(json!({
        "writes": writes,
        "followers": members.len(),
        "visible_on_followers": followers,
        "missed": missed,
        "watched_program": watched,
        "watched_program_missed": program_missed,
        "idle_owner": idle,
        "idle_owner_before_following": idle_before,
        "target_follower_p99_ms": FOLLOWER_TARGET_MS,
        "target_program_p99_ms": PROGRAM_TARGET_MS,
        "ok": ok,
    }))
}
