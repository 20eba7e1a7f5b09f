//! `agent start --metrics HOST:PORT`: Prometheus text, scraped as a
//! monitoring system would, with counts and sizes and no names or secrets.

use std::io::{Read, Write};

use crate::support::*;

/// `GET /metrics` over a plain socket: the status line and the body.
fn scrape(port: u16) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// The value of the sample `name{labels}` (labels as the exporter writes
/// them), if there.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `agent start --background --metrics ADDR` with the test password.
fn start_with_metrics(a: &Agent, addr: &str) -> Run {
    let password = a.password_file.to_str().expect("utf8");
    a.start_with_env(&["--password-file", password, "--metrics", addr], &[])
}

#[test]
fn metrics_are_served_scraped_and_hold_no_names() {
    let (a, b) = (Agent::new(), Agent::started());
    let port = free_port();
    start_with_metrics(&a, &format!("127.0.0.1:{port}")).success();
    a.knows(&b);
    b.knows(&a);
    let (a_id, b_id) = (a.id_and_port().0, b.id_and_port().0);
    a.run(&["vaults", "create", "kn7vaultname"]).success();
    a.run_stdin(&["secrets", "write", "kn7vaultname:kn7path"], b"kn7value")
        .success();
    a.run(&["secrets", "get", "kn7vaultname:nothing"])
        .fails(66, "");
    // A peer asks for what was not shared with it: refused on our side.
    b.run(&["vaults", "clone", "kn7vaultname", &a_id])
        .fails(77, "remote node");
    a.run(&["identities", "trust", &b_id]).success();
    b.run(&["identities", "trust", &a_id]).success();
    a.run(&["vaults", "share", "kn7vaultname", &b_id]).success();
    b.run(&["vaults", "clone", "kn7vaultname", &a_id]).success();

    let (status, body) = scrape(port);
    assert!(status.contains("200"), "{status}");
    let count =
        |series: &str| sample(&body, series).unwrap_or_else(|| panic!("no {series} in\n{body}"));
    assert_eq!(
        count(r#"keynode_client_requests_total{kind="vaults_create",outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        count(r#"keynode_client_requests_total{kind="secrets_write",outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        count(r#"keynode_client_requests_total{kind="secrets_get",outcome="not_found"}"#),
        1.0
    );
    assert!(count(r#"keynode_refusals_total{op="clone"}"#) >= 1.0);
    assert!(count(r#"keynode_transfers_total{kind="serve",outcome="ok"}"#) >= 1.0);
    assert!(count(r#"keynode_transfer_bytes_total{direction="sent"}"#) > 0.0);
    assert!(count(r#"keynode_handshakes_total{direction="inbound",outcome="ok"}"#) >= 1.0);
    assert!(body.contains("keynode_peer_requests_total{kind=\"vault_open\""));
    assert!(count("keynode_state_bytes") > 0.0);
    assert!(count("keynode_state_limit_bytes") > count("keynode_state_bytes"));
    for gauge in [
        "keynode_connections_open",
        "keynode_outbox_depth",
        "keynode_inbox_size",
        "keynode_vaults",
    ] {
        assert!(sample(&body, gauge).is_some(), "no {gauge} in\n{body}");
    }
    // Counts and sizes only: no vault name, path, value or node id.
    assert!(!body.contains("kn7"), "{body}");
    assert!(!body.contains(&a_id) && !body.contains(&b_id));
    // Only /metrics is served; a stopped agent serves nothing.
    a.run(&["agent", "stop"]).success();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn metrics_are_off_by_default_and_a_bad_address_is_refused() {
    let a = Agent::new();
    start_with_metrics(&a, "not-an-address").fails(64, "--metrics");
    std::fs::create_dir_all(&a.node).expect("node");
    std::fs::write(a.node.join("keynode.toml"), "metrics = \"nowhere\"\n").expect("config");
    a.start().fails(78, "key `metrics`");
    std::fs::remove_file(a.node.join("keynode.toml")).expect("rm");
    // A port that is taken fails the start, naming it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    start_with_metrics(&a, &format!("127.0.0.1:{port}")).fails(74, &port.to_string());
    a.start().success();
    assert_eq!(a.json(&["agent", "status"])["status"], "live");
}
