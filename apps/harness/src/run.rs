//! `load` and `chaos`: start (or attach to) the agents, set them up, run the
//! workload (and the nemesis), check the invariants, write the report.

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use keynode_client::api::Request;
use serde_json::{Value, json};

use crate::check;
use crate::cluster::{self, Cluster, futures_join};
use crate::metrics::Recorder;
use crate::nemesis::{self, Applied};
use crate::proxy::Proxy;
use crate::svg;
use crate::topology::{self, Topology};
use crate::workload::{self, Shared, Violation, World};

/// How a run is configured.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// `load` or `chaos`.
    pub mode: &'static str,
    /// Agents to start.
    pub nodes: usize,
    /// How long the workload runs.
    pub duration: Duration,
    /// Vaults per node.
    pub vaults: usize,
    /// Secrets written into each vault at setup.
    pub secrets: usize,
    /// The seed of the workload and the nemesis.
    pub seed: u64,
    /// Concurrent client tasks.
    pub concurrency: usize,
    /// How many neighbouring gestalts each node talks to.
    pub reach: usize,
    /// Where the report goes.
    pub report: PathBuf,
    /// Agents that already run elsewhere.
    pub attach: Option<PathBuf>,
    /// Keep the agents' node paths.
    pub keep: bool,
    /// Run the end-of-run checks (b)-(d) (always on in chaos).
    pub check: bool,
    /// How long notifications may take to arrive after healing.
    pub settle: Duration,
    /// Start the agents on a local DHT testnet, with no `nodes add`.
    pub dht: bool,
    /// With `dht`: node 0 relays and this many others run without a listener.
    pub behind_relay: usize,
}

/// Runs `load` or `chaos`; returns whether every invariant held.
pub async fn run(cfg: RunConfig) -> Result<bool, String> {
    let chaos = cfg.mode == "chaos";
    let started = Instant::now();
    if cfg.behind_relay > 0 && (!cfg.dht || cfg.behind_relay + 1 > cfg.nodes) {
        return Err("--behind-relay K needs --dht and more than K nodes".into());
    }
    let testnet = if cfg.dht && cfg.attach.is_none() {
        let t = tokio::task::spawn_blocking(|| mainline::Testnet::builder(20).build())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot start the DHT testnet: {e}"))?;
        eprintln!("a local DHT testnet of 20 nodes: {}", t.bootstrap.join(","));
        Some(t)
    } else {
        None
    };
    let bootstrap = testnet.as_ref().map(|t| t.bootstrap.join(","));
    let mut cluster = match &cfg.attach {
        Some(f) => Cluster::attach(f)?,
        None => {
            eprintln!("starting {} agents…", cfg.nodes);
            Cluster::start_on(cfg.nodes, cfg.keep, bootstrap, cfg.behind_relay).await?
        }
    };
    if chaos && !cluster.spawned() {
        return Err(
            "chaos needs agents the harness starts (it kills them); --attach is for load".into(),
        );
    }
    let result = run_on(&cfg, &mut cluster, started).await;
    cluster.stop().await;
    if cfg.keep && cluster.spawned() {
        eprintln!("node paths kept in {}", cluster.root().display());
    }
    result
}

async fn run_on(cfg: &RunConfig, cluster: &mut Cluster, started: Instant) -> Result<bool, String> {
    let chaos = cfg.mode == "chaos";
    let topo = Arc::new(Topology::plan(cluster, cfg.vaults.max(1), cfg.reach));
    // On the DHT the nodes find each other's own addresses: no proxy sits
    // between them, and the nemesis kills, restarts and moves nodes instead.
    let proxy = if chaos && !cfg.dht {
        let targets: Vec<std::net::SocketAddr> = cluster
            .agents
            .iter()
            .map(|a| std::net::SocketAddr::from(([127, 0, 0, 1], a.port)))
            .collect();
        Some(Arc::new(Proxy::start(topo.links(), &targets).await?))
    } else {
        None
    };
    let start_s = started.elapsed().as_secs_f64();
    eprintln!(
        "agents ready in {start_s:.1} s; forming {} gestalts, trust and vaults…",
        topo.members.len()
    );
    let hosts: Vec<(String, u16)> = cluster
        .agents
        .iter()
        .map(|a| (a.host.clone(), a.port))
        .collect();
    if cfg.dht {
        topology::find_all(&topo).await?;
        eprintln!(
            "every node found its peers on the DHT ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
    }
    let (setup, seeded) = {
        let proxy = proxy.clone();
        topology::setup(
            &topo,
            !cfg.dht,
            move |i, j| match &proxy {
                Some(p) => ("127.0.0.1".into(), p.port(i, j).unwrap_or(0)),
                None => hosts[j].clone(),
            },
            cfg.secrets,
        )
        .await?
    };
    let mut world = World::default();
    for (node, vault, path, value) in seeded {
        world.add_write(workload::Write {
            node,
            vault,
            path,
            value,
        });
    }
    let shared = Arc::new(Shared {
        topo: topo.clone(),
        world: Mutex::new(world),
        rec: Mutex::new(Recorder::new()),
        seed: cfg.seed,
    });

    let schedule = if chaos {
        let s = if cfg.dht {
            nemesis::schedule_moves(cfg.seed, topo.n(), cfg.duration)
        } else {
            nemesis::schedule(cfg.seed, topo.n(), &topo.links(), cfg.duration)
        };
        eprintln!("nemesis schedule (seed {}):", cfg.seed);
        for e in &s {
            eprintln!("  {}", nemesis::describe(e));
        }
        s
    } else {
        Vec::new()
    };

    eprintln!(
        "running {} for {} with {} clients (seed {})…",
        cfg.mode,
        humantime::format_duration(cfg.duration),
        cfg.concurrency,
        cfg.seed
    );
    let t0 = Instant::now();
    shared
        .rec
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .reset_clock(t0);
    let deadline = t0 + cfg.duration;
    let workers: Vec<_> = (0..cfg.concurrency)
        .map(|w| tokio::spawn(workload::worker(shared.clone(), w, deadline)))
        .collect();
    let bar = progress(cfg.duration);
    let ticker = {
        let (shared, bar) = (shared.clone(), bar.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let e = t0.elapsed();
                let (n, errs) = shared
                    .rec
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .totals();
                bar.set_position(e.as_secs().min(bar.length().unwrap_or(0)));
                bar.set_message(format!(
                    "{n} ops, {:.0}/s, {errs} errors",
                    n as f64 / e.as_secs_f64().max(0.001)
                ));
            }
        })
    };

    // The nemesis runs beside the workload and heals everything at the end.
    let mut applied: Vec<Applied> = Vec::new();
    if chaos {
        for s in &schedule {
            tokio::time::sleep_until((t0 + Duration::from_millis(s.at_ms)).into()).await;
            let r = nemesis::apply(cluster, proxy.as_deref(), &s.fault).await;
            if let Err(e) = &r {
                bar.println(format!("nemesis: {e}"));
            }
            applied.push(Applied {
                at_ms: t0.elapsed().as_secs_f64() * 1000.0,
                fault: s.fault.clone(),
                error: r.err(),
            });
        }
        tokio::time::sleep_until(deadline.into()).await;
        if let Some(proxy) = &proxy {
            proxy.heal_all();
        }
    }
    let mut violations: Vec<Violation> = Vec::new();
    for i in 0..cluster.agents.len() {
        if !cluster.agents[i].is_up()
            && let Err(e) = cluster.restart(i).await
        {
            violations.push(Violation::new("agent-restarts", e));
        }
    }
    for w in workers {
        let _ = w.await;
    }
    let workload_s = t0.elapsed().as_secs_f64();
    ticker.abort();
    bar.finish_and_clear();
    let healed = Instant::now();
    let rss: Vec<Option<u64>> = (0..cluster.agents.len())
        .map(|i| cluster.rss_kib(i))
        .collect();

    let (history, writes, clones) = {
        let rec = shared.rec.lock().unwrap_or_else(|p| p.into_inner());
        let mut world = shared.world.lock().unwrap_or_else(|p| p.into_inner());
        violations.append(&mut world.violations);
        (
            Arc::new(rec.history.clone()),
            world.writes.clone(),
            world.clones.clone(),
        )
    };
    let (total, errors) = shared
        .rec
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .totals();
    eprintln!("{total} operations ({errors} failed) in {workload_s:.1} s; checking…");

    violations.extend(check::check_history(&topo, &history));
    let mut checks = json!({ "history_events": history.len() });
    if chaos || cfg.check {
        // A new connection retries what is queued for that peer at once: touch
        // every link so delivery does not wait for the outbox backoff.
        let pings: Vec<(PathBuf, keynode_core::NodeId)> = topo
            .links()
            .into_iter()
            .map(|(i, j)| (topo.sockets[i].clone(), topo.ids[j]))
            .collect();
        futures_join(pings.into_iter().map(|(s, node)| async move {
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                cluster::call(&s, Request::NodesPing { node }),
            )
            .await;
        }))
        .await;
        let settle = Duration::from_secs(30);
        let nw = writes.len();
        violations.extend(check::check_writes(&topo, writes, settle).await);
        let nc = clones.len();
        violations.extend(check::check_clones(&topo, clones, history.clone(), settle).await);
        let (v, took) = check::check_notifications(&topo, &history, healed + cfg.settle).await;
        violations.extend(v);
        checks = json!({
            "history_events": history.len(),
            "writes_checked": nw,
            "clones_checked": nc,
            "notifications_checked": history.iter().filter(|e| e.op == "notify" && e.ok.is_some()).count(),
            "notifications_settled_s": took.as_secs_f64(),
            "checks_s": healed.elapsed().as_secs_f64(),
        });
    }

    let (summary, series) = {
        let rec = shared.rec.lock().unwrap_or_else(|p| p.into_inner());
        (rec.summary(workload_s), rec.series())
    };
    let report = json!({
        "mode": cfg.mode,
        "version": env!("CARGO_PKG_VERSION"),
        "seed": cfg.seed,
        "config": {
            "nodes": topo.n(),
            "duration_s": cfg.duration.as_secs_f64(),
            "vaults": topo.vaults,
            "secrets": cfg.secrets,
            "concurrency": cfg.concurrency,
            "reach": cfg.reach,
            "attach": cfg.attach.as_ref().map(|p| p.display().to_string()),
            "mix": workload::MIX.iter().map(|(k, w)| json!({"op": k, "weight": w})).collect::<Vec<_>>(),
        },
        "nodes": cluster.agents.iter().map(|a| json!({
            "index": a.index, "node_id": a.node_id.to_string(), "host": a.host, "port": a.port,
            "gestalt": topo.gestalt[a.index], "peers": topo.peers[a.index],
            "rss_kib": rss[a.index],
        })).collect::<Vec<_>>(),
        "agents_start_s": start_s,
        "setup": setup,
        "workload_s": workload_s,
        "ops": summary["ops"],
        "total": summary["total"],
        "time_series": series,
        "schedule": schedule,
        "applied": applied,
        "checks": checks,
        "invariant_violations": violations.len(),
        "violations": violations,
    });
    write_report(cfg, &report, &history)?;
    print_summary(&report);
    Ok(violations.is_empty())
}

fn progress(d: Duration) -> ProgressBar {
    let bar = ProgressBar::new(d.as_secs());
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len}s {msg}") {
        bar.set_style(style);
    }
    bar
}

fn write_report(
    cfg: &RunConfig,
    report: &Value,
    history: &[crate::metrics::Event],
) -> Result<(), String> {
    let dir = &cfg.report;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("report.json"), text).map_err(|e| e.to_string())?;
    let mut h = std::io::BufWriter::new(
        std::fs::File::create(dir.join("history.jsonl")).map_err(|e| e.to_string())?,
    );
    for e in history {
        let line = serde_json::to_string(e).map_err(|e| e.to_string())?;
        writeln!(h, "{line}").map_err(|e| e.to_string())?;
    }
    h.flush().map_err(|e| e.to_string())?;
    let marks: Vec<(f64, String)> = report["applied"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["at_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                        e["action"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let title = format!(
        "keynode-harness {} — {} nodes, seed {}",
        cfg.mode, report["config"]["nodes"], cfg.seed
    );
    let series = report["time_series"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    std::fs::write(dir.join("report.svg"), svg::render(&title, &series, &marks))
        .map_err(|e| e.to_string())?;
    eprintln!("report: {}", dir.join("report.json").display());
    Ok(())
}

fn print_summary(report: &Value) {
    println!(
        "{:<8} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "op", "ok", "errors", "ops/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    let row = |name: &str, s: &Value| {
        let f = |k: &str| {
            s[k].as_f64()
                .map(|v| format!("{v:.2}"))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<8} {:>8} {:>7} {:>9.1} {:>9} {:>9} {:>9} {:>9}",
            name,
            s["ok"].as_u64().unwrap_or(0),
            s["errors"].as_u64().unwrap_or(0),
            s["ops_per_s"].as_f64().unwrap_or(0.0),
            f("p50_ms"),
            f("p90_ms"),
            f("p99_ms"),
            f("max_ms")
        );
    };
    if let Some(ops) = report["ops"].as_object() {
        for (k, v) in ops {
            row(k, v);
        }
    }
    row("total", &report["total"]);
    let mut rss: Vec<u64> = report["nodes"]
        .as_array()
        .map(|nodes| nodes.iter().filter_map(|n| n["rss_kib"].as_u64()).collect())
        .unwrap_or_default();
    rss.sort_unstable();
    if let (Some(min), Some(max)) = (rss.first(), rss.last()) {
        let mib = |k: u64| k as f64 / 1024.0;
        println!(
            "agent RSS at the end of the workload: median {:.1} MiB (min {:.1}, max {:.1})",
            mib(rss[rss.len() / 2]),
            mib(*min),
            mib(*max)
        );
    }
    let v = report["invariant_violations"].as_u64().unwrap_or(0);
    if v == 0 {
        println!("invariants: all held");
    } else {
        println!("invariants: {v} violation(s)");
        if let Some(list) = report["violations"].as_array() {
            for x in list.iter().take(20) {
                println!(
                    "  [{}] {}",
                    x["invariant"].as_str().unwrap_or(""),
                    x["detail"].as_str().unwrap_or("")
                );
            }
        }
    }
}
