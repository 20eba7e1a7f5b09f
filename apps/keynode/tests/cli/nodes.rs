//! `keynode nodes ...` and the agent's network options.

use crate::support::*;

fn id_and_port(a: &Agent) -> (String, u16) {
    let s = a.json(&["agent", "status"]);
    (
        s["node_id"].as_str().expect("id").to_owned(),
        s["agent_port"].as_u64().expect("port") as u16,
    )
}

#[test]
fn add_ping_list_connections() {
    let a = Agent::started();
    let b = Agent::started();
    let (b_id, b_port) = id_and_port(&b);
    assert_ne!(b_port, 0, "port 0 picks a free port and status reports it");
    a.run(&["nodes", "add", &b_id, "127.0.0.1", &b_port.to_string()])
        .success();
    let pong = a.json(&["nodes", "ping", &b_id]);
    assert_eq!(pong["node_id"], b_id.as_str());
    assert!(pong["rtt_us"].as_u64().is_some());
    assert!(
        a.run(&["nodes", "ping", &b_id])
            .success()
            .contains("answered")
    );

    let list = a.json(&["nodes", "list"]);
    assert_eq!(list[0]["node_id"], b_id.as_str());
    assert_eq!(list[0]["addresses"][0], format!("127.0.0.1:{b_port}"));
    // Typed by a person, and it worked (the ping dialed it).
    assert_eq!(list[0]["sources"][0]["source"], "typed");
    assert!(list[0]["sources"][0]["last_ok_ms"].as_u64().is_some());
    assert!(
        a.run(&["nodes", "list"])
            .success()
            .contains("(typed, worked ")
    );
    let conns = a.json(&["nodes", "connections"]);
    assert_eq!(conns[0]["node_id"], b_id.as_str());
    assert_eq!(conns[0]["direction"], "outbound");
    let (a_id, _) = id_and_port(&a);
    let conns = b.json(&["nodes", "connections"]);
    assert_eq!(conns[0]["node_id"], a_id.as_str());
    assert_eq!(conns[0]["direction"], "inbound");
}

#[test]
fn bad_node_input_is_refused() {
    let a = Agent::started();
    a.run(&["nodes", "ping", "vnotanodeid"])
        .fails(65, "node id");
    a.run(&["nodes", "add", "zzz", "127.0.0.1", "1"])
        .fails(65, "node id");
    a.run(&["nodes", "add", "v", "h", "99999"])
        .fails(64, "99999");
    let stranger = Agent::started();
    let (s_id, _) = id_and_port(&stranger);
    // Unknown to the address book.
    a.run(&["nodes", "ping", &s_id]).fails(66, "nodes add");
    // Known, but nobody listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    a.run(&["nodes", "add", &s_id, "127.0.0.1", &port.to_string()])
        .success();
    a.run(&["nodes", "ping", &s_id]).fails(69, "reach");
    a.run(&["nodes", "add", &s_id, "bad host", "1"])
        .fails(65, "host");
}

#[test]
fn seed_nodes_and_a_fixed_port() {
    let b = Agent::started();
    let (b_id, b_port) = id_and_port(&b);
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("addr").port();
    drop(free);
    let a = Agent::new();
    let seeds = format!("{b_id}@127.0.0.1:{b_port}");
    a.run(&[
        "agent",
        "start",
        "--background",
        "--password-file",
        a.password_file.to_str().expect("utf8"),
        "--agent-port",
        &port.to_string(),
        "--seed-nodes",
        &seeds,
    ])
    .success();
    assert_eq!(a.json(&["agent", "status"])["agent_port"], port);
    a.run(&["nodes", "ping", &b_id]).success();
    // A second agent cannot take a port in use; a bad seed list is a usage error.
    let c = Agent::new();
    let pw = c.password_file.to_str().expect("utf8").to_owned();
    c.run(&[
        "agent",
        "start",
        "--background",
        "--password-file",
        &pw,
        "--agent-port",
        &port.to_string(),
    ])
    .fails(74, "network");
    c.run(&[
        "agent",
        "start",
        "--background",
        "--password-file",
        &pw,
        "--seed-nodes",
        "nonsense",
    ])
    .fails(64, "seed-nodes");
}
