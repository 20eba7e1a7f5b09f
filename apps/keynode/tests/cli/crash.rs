//! kill -9 in the middle of writes loses nothing that was acknowledged.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::*;

#[test]
fn kill_9_during_writes_keeps_every_acknowledged_write() {
    let a = Agent::started();
    a.run(&["vaults", "create", "v"]).success();
    for round in 0..3 {
        let pid = a.pid();
        // A client streams writes; we record each one the agent acknowledged.
        let node = a.node.clone();
        let count = Arc::new(AtomicUsize::new(0));
        let counted = count.clone();
        let writer = std::thread::spawn(move || {
            let mut acked = Vec::new();
            for i in 0.. {
                let mut child = Command::new(bin())
                    .arg("--node-path")
                    .arg(&node)
                    .args(["secrets", "write", &format!("v:r{round}/s{i}")])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn");
                {
                    use std::io::Write;
                    let mut stdin = child.stdin.take().expect("stdin");
                    let _ = stdin.write_all(format!("value {round} {i}").as_bytes());
                }
                if child.wait().expect("wait").success() {
                    acked.push(i);
                    counted.store(acked.len(), Ordering::SeqCst);
                } else {
                    return acked;
                }
            }
            acked
        });
        // Kill once some writes were acknowledged (a few more each round), with
        // the writer still going: the kill lands in the middle of a write.
        let enough = 3 + 2 * round;
        wait_for(
            || count.load(Ordering::SeqCst) >= enough,
            "acknowledged writes before the kill",
        );
        let st = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
        let acked = writer.join().expect("writer");
        assert!(acked.len() >= enough, "{} acknowledged", acked.len());

        // Restart with no manual step.
        a.start().success();
        for i in &acked {
            assert_eq!(
                a.run(&["secrets", "get", &format!("v:r{round}/s{i}")])
                    .success(),
                format!("value {round} {i}"),
                "acknowledged write r{round}/s{i} lost"
            );
        }
        // The log is linear and consistent: every commit's secrets are readable.
        let log = a.json(&["vaults", "log", "v"]);
        let log = log.as_array().expect("log");
        for c in log.iter().take(5) {
            let oid = c["oid"].as_str().expect("oid");
            a.run(&["secrets", "list", "v", "--at", oid]).success();
        }
        let listed = a
            .run(&["secrets", "list", &format!("v:r{round}")])
            .success();
        assert!(listed.lines().count() >= acked.len());
        // New writes work.
        a.run_stdin(&["secrets", "write", &format!("v:after{round}")], b"ok")
            .success();
    }
}

#[test]
fn kill_9_during_imports_keeps_every_acknowledged_import_whole() {
    // Imports write their small files together into one bundle: an
    // acknowledged import survives kill -9 whole, one cut short leaves
    // nothing half-written behind.
    let a = Agent::started();
    a.run(&["vaults", "create", "v"]).success();
    let src = a.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    for f in 0..200 {
        std::fs::write(src.join(format!("f{f:03}")), format!("file {f}")).expect("write");
    }
    let pid = a.pid();
    let node = a.node.clone();
    let source = src.clone();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let importer = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for i in 0.. {
            let ok = Command::new(bin())
                .arg("--node-path")
                .arg(&node)
                .args(["secrets", "dir"])
                .arg(&source)
                .arg(format!("v:i{i}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run")
                .success();
            if !ok {
                return acked;
            }
            acked.push(i);
            counted.store(acked.len(), Ordering::SeqCst);
        }
        acked
    });
    wait_for(
        || count.load(Ordering::SeqCst) >= 3,
        "acknowledged imports before the kill",
    );
    let st = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let acked = importer.join().expect("importer");
    assert!(acked.len() >= 3, "{} acknowledged", acked.len());

    a.start().success();
    for i in &acked {
        let listed = a.run(&["secrets", "list", &format!("v:i{i}")]).success();
        assert_eq!(listed.lines().count(), 200, "import i{i} is not whole");
        for f in [0, 199] {
            assert_eq!(
                a.run(&["secrets", "get", &format!("v:i{i}/f{f:03}")])
                    .success(),
                format!("file {f}"),
                "acknowledged import i{i} lost f{f:03}"
            );
        }
    }
    // Whatever was cut short is absent or whole, never partial: every import
    // directory at the head holds all 200 files, and every commit reads.
    let dirs = a.run(&["secrets", "list", "v"]).success();
    let dirs: Vec<&str> = dirs.lines().map(|d| d.trim_end_matches('/')).collect();
    assert!(dirs.len() >= acked.len(), "{dirs:?}");
    for d in dirs {
        let listed = a.run(&["secrets", "list", &format!("v:{d}")]).success();
        assert_eq!(listed.lines().count(), 200, "import {d} is partial");
    }
    for c in a.json(&["vaults", "log", "v"]).as_array().expect("log") {
        let oid = c["oid"].as_str().expect("oid");
        a.run(&["secrets", "list", "v", "--at", oid]).success();
    }
    a.run(&["secrets", "dir", src.to_str().expect("utf8"), "v:after"])
        .success();
    assert_eq!(
        a.run(&["secrets", "get", "v:after/f100"]).success(),
        "file 100"
    );
}
