//! The harness through its binary: a short chaos scenario that fails on any
//! invariant violation (the CI scenario), one seed giving one run, and a short
//! load run whose report has the documented shape. How fast the cluster goes is
//! the benchmarks' business (`docs/PERFORMANCE.md`), not these tests'.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_keynode-harness");

fn report(dir: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json");
    serde_json::from_str(&text).expect("report.json is JSON")
}

#[test]
fn chaos_scenario_holds_every_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "chaos",
            "--nodes",
            "4",
            "--duration",
            "30s",
            "--seed",
            "1",
            "--report",
        ])
        .arg(dir.path())
        .output()
        .expect("run the harness");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let r = report(dir.path());
    assert_eq!(
        r["invariant_violations"], 0,
        "violations: {}\n{stdout}\n{stderr}",
        r["violations"]
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The nemesis really ran: kills, restarts and link faults were applied.
    let applied = r["applied"].as_array().unwrap();
    assert!(!applied.is_empty());
    assert!(applied.iter().all(|a| a["error"].is_null()), "{applied:?}");
    // Every kind of operation succeeded under the faults, and what the checks
    // read back is what was done.
    for op in ["write", "share", "scan", "notify"] {
        assert!(
            r["ops"][op]["ok"].as_u64().unwrap() > 0,
            "no {op} succeeded"
        );
    }
    let writes = r["ops"]["write"]["ok"].as_u64().unwrap();
    let checked = r["checks"]["writes_checked"].as_u64().unwrap();
    assert!(
        checked > 0 && checked >= writes,
        "{checked} of {writes} writes checked"
    );
    assert!(r["checks"]["notifications_checked"].as_u64().unwrap() > 0);
    assert!(dir.path().join("report.svg").exists());
    assert!(dir.path().join("history.jsonl").exists());
}

#[test]
fn same_seed_gives_the_same_run() {
    // Two runs of 3 s with one seed agree on the schedule and on what came of
    // it: the layout of gestalts and peers, the faults applied and how each
    // went, and the verdict of the checks.
    let run = |seed: &str| {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(BIN)
            .args([
                "chaos",
                "--nodes",
                "3",
                "--duration",
                "3s",
                "--seed",
                seed,
                "--report",
            ])
            .arg(dir.path())
            .output()
            .expect("run the harness");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = report(dir.path());
        let applied: Vec<serde_json::Value> = r["applied"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let mut a = a.clone();
                a.as_object_mut().unwrap().remove("at_ms");
                a
            })
            .collect();
        let layout: Vec<serde_json::Value> = r["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| serde_json::json!([n["gestalt"], n["peers"]]))
            .collect();
        (
            r["schedule"].clone(),
            applied,
            layout,
            r["invariant_violations"].clone(),
        )
    };
    let (first, second) = (run("7"), run("7"));
    assert!(
        !first.0.as_array().unwrap().is_empty(),
        "a schedule was made"
    );
    assert_eq!(
        first.1.len(),
        first.0.as_array().unwrap().len(),
        "all applied"
    );
    assert_eq!(first.3, 0);
    assert_eq!(first, second);
}

#[test]
fn load_report_has_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "load",
            "--nodes",
            "3",
            "--duration",
            "3s",
            "--seed",
            "2",
            "--report",
        ])
        .arg(dir.path())
        .output()
        .expect("run the harness");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(dir.path());
    assert_eq!(r["mode"], "load");
    assert_eq!(r["seed"], 2);
    assert_eq!(r["config"]["nodes"], 3);
    assert_eq!(r["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(r["invariant_violations"], 0);
    for op in ["write", "share", "scan", "notify"] {
        let s = &r["ops"][op];
        assert!(s["count"].as_u64().unwrap() > 0, "{op}: {s}");
        for k in [
            "ok",
            "errors",
            "ops_per_s",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "max_ms",
            "errors_by_kind",
        ] {
            assert!(s.get(k).is_some(), "{op} lacks {k}");
        }
    }
    assert!(r["total"]["ops_per_s"].as_f64().unwrap() > 0.0);
    let series = r["time_series"].as_array().unwrap();
    assert!(series.len() >= 3, "{series:?}");
    for k in ["t", "ok", "errors", "p50_ms", "p99_ms"] {
        assert!(series[0].get(k).is_some(), "time series lacks {k}");
    }
    let svg = std::fs::read_to_string(dir.path().join("report.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
}

#[test]
fn attach_drives_agents_started_elsewhere() {
    // Two agents started by hand (the hidden `agent` subcommand), then `load --attach`.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "pw").unwrap();
    let mut lines = String::new();
    let mut children = Vec::new();
    for name in ["a", "b"] {
        let mut child = Command::new(BIN)
            .args(["agent", "--node-path"])
            .arg(dir.path().join(name))
            .arg("--password-file")
            .arg(dir.path().join("pw"))
            .arg("--provider-dir")
            .arg(dir.path().join("provider"))
            .arg("--stdin-lifeline")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
        lines.push_str(&format!(
            "{}@127.0.0.1:{} socket={}\n",
            ready["node_id"].as_str().unwrap(),
            ready["port"],
            dir.path().join(name).join("agent.sock").display()
        ));
        children.push(child);
    }
    std::fs::write(dir.path().join("nodes.txt"), &lines).unwrap();
    let out = Command::new(BIN)
        .args(["load", "--duration", "2s", "--attach"])
        .arg(dir.path().join("nodes.txt"))
        .arg("--report")
        .arg(dir.path().join("report"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&dir.path().join("report"));
    assert_eq!(r["config"]["nodes"], 2);
    assert!(r["ops"]["write"]["ok"].as_u64().unwrap() > 0);
    // Closing stdin stops an agent started with --stdin-lifeline.
    for mut c in children {
        drop(c.stdin.take());
        let status = c.wait().unwrap();
        assert!(status.success());
    }
}
