//! Encryption at rest, through the binary: two agents share, clone, pull and
//! fork a vault whose name, secret names and secret values carry a marker;
//! after both stop, no byte of any file under either node path contains it.
//! Both agents log at debug level, so the logs are scanned too.

use std::path::{Path, PathBuf};

use crate::support::*;

const MARK: &str = "kn7mark";

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("entry");
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            files(&entry.path(), out);
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
}

/// Every regular file under `dir` whose bytes contain `needle`.
fn containing(dir: &Path, needle: &[u8]) -> (Vec<PathBuf>, usize, u64) {
    let mut all = Vec::new();
    files(dir, &mut all);
    let mut bytes = 0;
    let hits = all
        .iter()
        .filter(|p| {
            let data = std::fs::read(p).expect("read");
            bytes += data.len() as u64;
            data.windows(needle.len()).any(|w| w == needle)
        })
        .cloned()
        .collect();
    (hits, all.len(), bytes)
}

#[test]
fn no_name_or_secret_reaches_the_disk_in_the_clear() {
    let (a, b) = (Agent::new(), Agent::new());
    a.start_logging_everything();
    b.start_logging_everything();
    let (a_id, a_port) = a.id_and_port();
    let (b_id, b_port) = b.id_and_port();
    a.run(&["nodes", "add", &b_id, "127.0.0.1", &b_port])
        .success();
    b.run(&["nodes", "add", &a_id, "127.0.0.1", &a_port])
        .success();
    a.run(&["identities", "trust", &b_id]).success();
    b.run(&["identities", "trust", &a_id]).success();

    let vault = format!("{MARK}-vault");
    let small = format!("{vault}:{MARK}-dir/{MARK}-name");
    let big = format!("{vault}:{MARK}-big");
    let small_value = format!("{MARK}-value");
    // 3 MiB: past the one-pass threshold, so it takes the streamed path.
    let big_value = format!("{MARK}-big-value\n").repeat(3 << 16);
    b.run(&["vaults", "create", &vault]).success();
    b.run_stdin(&["secrets", "write", &small], small_value.as_bytes())
        .success();
    b.run_stdin(&["secrets", "write", &big], big_value.as_bytes())
        .success();
    b.run(&["vaults", "share", &vault, &a_id]).success();
    wait_for(
        || {
            a.json(&["notifications", "inbox", "read"])
                .as_array()
                .is_some_and(|l| !l.is_empty())
        },
        "the VaultShare notification",
    );
    a.run(&["vaults", "clone", &vault, &b_id, "--no-follow"])
        .success();
    assert_eq!(a.run(&["secrets", "get", &small]).success(), small_value);
    b.run_stdin(
        &[
            "secrets",
            "write",
            &format!("{vault}:{MARK}-dir/{MARK}-new"),
        ],
        format!("{MARK}-pulled").as_bytes(),
    )
    .success();
    assert_eq!(a.json(&["vaults", "pull", &vault])["commits"], 1);
    let fork = format!("{MARK}-fork");
    a.run(&["vaults", "fork", &vault, &fork]).success();
    a.run_stdin(
        &["secrets", "write", &format!("{fork}:{MARK}-forked")],
        format!("{MARK}-forked-value").as_bytes(),
    )
    .success();
    assert_eq!(
        a.run(&["secrets", "get", &big]).success().len(),
        big_value.len()
    );

    // Failures whose messages name things: refused and missing, locally and
    // from a peer. The client hears the names; no log does.
    for r in [
        b.run(&["vaults", "create", &vault]),
        b.run(&["secrets", "get", &format!("{vault}:{MARK}-missing")]),
        a.run(&["vaults", "clone", &format!("{MARK}-nope"), &b_id]),
        a.run_stdin(&["secrets", "write", &small], b"read-only"),
    ] {
        assert_ne!(r.code(), 0, "{}", r.stdout());
    }

    a.run(&["agent", "stop"]).success();
    b.run(&["agent", "stop"]).success();
    for (who, agent) in [("a", &a), ("b", &b)] {
        let (hits, files, bytes) = containing(&agent.node, MARK.as_bytes());
        assert!(hits.is_empty(), "node {who}: the marker is in {hits:?}");
        // The scan read real state: the vault's objects and the environment.
        assert!(
            files > 10 && bytes > 3 << 20,
            "node {who}: {files} files, {bytes} bytes"
        );
    }
    // A marker that is there in the clear is found (the scan can fail).
    let plain = a.node.join("plain-probe");
    std::fs::write(&plain, format!("x{MARK}x")).expect("probe");
    assert_eq!(containing(&a.node, MARK.as_bytes()).0, vec![plain.clone()]);
    std::fs::remove_file(&plain).expect("remove probe");

    // Everything is still there for the password.
    a.start().success();
    assert_eq!(a.run(&["secrets", "get", &small]).success(), small_value);
    assert_eq!(
        a.run(&["secrets", "get", &format!("{fork}:{MARK}-forked")])
            .success(),
        format!("{MARK}-forked-value")
    );
    let inbox = a.json(&["notifications", "inbox", "read"]);
    assert_eq!(inbox[0]["data"]["vault_name"], vault.as_str());
}
