//! `keynode-client`'s typed [`Agent`] against a real agent: what a program
//! that reads its secrets from keynode does.

use keynode_agent::Node;
use keynode_agent::testing::TestNet;
use keynode_client::api::{EntryKind, ErrorKind};
use keynode_client::{Agent, ClientError};

async fn started(net: &TestNet) -> (Node, Agent) {
    let node = net.node("a").await;
    let agent = Agent::new(node.paths().root.clone());
    (node, agent)
}

async fn create(agent: &Agent, name: &str) {
    agent
        .call(keynode_client::api::Request::VaultsCreate {
            name: keynode_core::VaultName::new(name).expect("name"),
        })
        .await
        .expect("create");
}

fn kind(e: ClientError) -> ErrorKind {
    match e {
        ClientError::Api(e) => e.kind,
        other => panic!("not an API error: {other}"),
    }
}

#[actix_rt::test]
async fn a_program_reads_writes_lists_and_watches_through_the_client() {
    let net = TestNet::new();
    let (node, agent) = started(&net).await;
    assert_eq!(
        agent.status().await.expect("status").node_id,
        node.node_id()
    );
    agent
        .call(keynode_client::api::Request::VaultsCreate {
            name: keynode_core::VaultName::new("prod").expect("name"),
        })
        .await
        .expect("create");
    let (heads, mut watch) = agent.watch(&["prod"]).await.expect("watch");
    assert_eq!(heads.len(), 1);

    agent
        .write("prod", "db/password", b"hunter2")
        .await
        .expect("write");
    agent.write("prod", "db/user", b"app").await.expect("write");
    agent
        .write("prod", "api-key", &[0, 159, 255])
        .await
        .expect("write");
    assert_eq!(
        agent.read("prod", "db/password").await.expect("read"),
        b"hunter2"
    );
    assert_eq!(
        agent.read("prod", "api-key").await.expect("read"),
        [0, 159, 255]
    );
    // The watch saw the first write move the head.
    let (vault, _head) = watch.next().await.expect("watch").expect("a move");
    assert_eq!(vault, heads[0].id);

    let root = agent.list("prod", None).await.expect("list");
    let names: Vec<(&str, EntryKind)> = root.iter().map(|e| (e.name.as_str(), e.kind)).collect();
    assert_eq!(
        names,
        [("api-key", EntryKind::File), ("db", EntryKind::Dir)]
    );
    let db = agent.list("prod", Some("db")).await.expect("list");
    assert_eq!(db.len(), 2);
    let vars = agent.env(&[("prod", Some("db"))]).await.expect("env");
    let mut vars: Vec<(String, Vec<u8>)> = vars;
    vars.sort();
    assert_eq!(
        vars,
        [
            ("password".to_owned(), b"hunter2".to_vec()),
            ("user".to_owned(), b"app".to_vec())
        ]
    );
    assert_eq!(
        agent.vaults().await.expect("vaults")[0].name.as_str(),
        "prod"
    );
    // An older revision still holds the old value.
    agent
        .write("prod", "db/password", b"changed")
        .await
        .expect("write");
    assert_eq!(
        agent.read("prod", "db/password").await.expect("read"),
        b"changed"
    );
    let log = match agent
        .call(keynode_client::api::Request::VaultsLog {
            vault: "prod".into(),
            depth: None,
            commit: None,
        })
        .await
        .expect("log")
    {
        keynode_client::api::Response::Log(log) => log,
        other => panic!("{other:?}"),
    };
    let before = &log[1].oid;
    let old = agent.read_at("prod", "db/password", Some(before)).await;
    assert_eq!(old.expect("read at"), b"hunter2");
    drop(watch);
    node.stop().await;
}

#[actix_rt::test]
async fn client_errors_say_what_went_wrong() {
    let net = TestNet::new();
    let (node, agent) = started(&net).await;
    assert_eq!(
        kind(agent.read("nope", "x").await.unwrap_err()),
        ErrorKind::NotFound
    );
    // A path that climbs out is refused before anything is sent.
    let bad = agent.read("nope", "../etc/passwd").await.unwrap_err();
    assert_eq!(kind(bad), ErrorKind::BadData);
    assert_eq!(
        kind(agent.write("nope", "x", b"1").await.unwrap_err()),
        ErrorKind::NotFound
    );
    node.stop().await;
    // No agent: exit code 69, as the CLI says.
    let gone = agent.status().await.unwrap_err();
    assert!(matches!(gone, ClientError::NotRunning(_)), "{gone}");
    assert_eq!(gone.exit_code(), 69);
}

#[actix_rt::test]
async fn one_connection_carries_requests_one_after_another() {
    use keynode_client::api::{Request, Response};
    let net = TestNet::new();
    let (node, agent) = started(&net).await;
    create(&agent, "prod").await;
    let mut conn = agent.connect().await.expect("connect");
    let get = |path: &str| Request::SecretsGet {
        vault: "prod".into(),
        path: keynode_core::SecretPath::new(path).expect("path"),
        at: None,
    };
    let write = |vault: &str, path: &str| Request::SecretsWrite {
        vault: vault.into(),
        path: keynode_core::SecretPath::new(path).expect("path"),
        create_new: false,
    };
    // An upload, a download, a unary call, each answered in turn.
    conn.upload(write("prod", "a"), &mut &b"one"[..])
        .await
        .expect("upload");
    let mut out = Vec::new();
    conn.download(get("a"), &mut out).await.expect("download");
    assert_eq!(out, b"one");
    assert!(matches!(
        conn.call(Request::VaultsList).await.expect("list"),
        Response::Vaults(v) if v.len() == 1
    ));
    // A refused unary request and a refused download leave it in step.
    let refused = conn
        .call(Request::VaultsDelete {
            vault: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(kind(refused), ErrorKind::NotFound);
    assert!(conn.reusable());
    let missing = conn.download(get("missing"), &mut Vec::new()).await;
    assert_eq!(kind(missing.unwrap_err()), ErrorKind::NotFound);
    assert!(conn.reusable());
    out.clear();
    conn.download(get("a"), &mut out).await.expect("download");
    assert_eq!(out, b"one");
    // A refused upload ends the connection: the agent does not read the
    // rest of its frames as requests.
    let refused = conn
        .upload(write("nope", "x"), &mut &b"data"[..])
        .await
        .unwrap_err();
    assert_eq!(kind(refused), ErrorKind::NotFound);
    assert!(!conn.reusable());
    assert!(matches!(
        conn.call(Request::VaultsList).await,
        Err(ClientError::Protocol(_))
    ));
    // Nothing the refused upload carried became a request or a secret.
    assert_eq!(
        kind(agent.read("nope", "x").await.unwrap_err()),
        ErrorKind::NotFound
    );
    node.stop().await;
}

#[actix_rt::test]
async fn a_malformed_frame_after_a_request_ends_only_that_connection() {
    use futures_util::{SinkExt, StreamExt};
    use keynode_client::api::{ClientMsg, PROTOCOL_VERSION, ServerMsg};
    let net = TestNet::new();
    let (node, agent) = started(&net).await;
    let stream = tokio::net::UnixStream::connect(node.socket_path())
        .await
        .expect("connect");
    let mut conn = tokio_util::codec::Framed::new(stream, keynode_client::api::codec());
    let frame = |m: &ClientMsg| bytes::Bytes::from(keynode_core::codec::encode(m).expect("encode"));
    let recv = |f: Option<Result<bytes::BytesMut, std::io::Error>>| {
        keynode_core::codec::decode::<ServerMsg>(&f.expect("a frame").expect("read"))
            .expect("decode")
    };
    conn.send(frame(&ClientMsg::Hello {
        version: PROTOCOL_VERSION,
    }))
    .await
    .expect("hello");
    assert!(matches!(recv(conn.next().await), ServerMsg::Hello { .. }));
    conn.send(frame(&ClientMsg::Request(
        keynode_client::api::Request::AgentStatus,
    )))
    .await
    .expect("request");
    assert!(matches!(recv(conn.next().await), ServerMsg::Response(_)));
    // Garbage where the next request belongs: a protocol error, then the end.
    conn.send(bytes::Bytes::from_static(&[0xff, 0xfe, 0x00, 0x13]))
        .await
        .expect("garbage");
    match recv(conn.next().await) {
        ServerMsg::Error(e) => assert_eq!(e.kind, ErrorKind::Protocol),
        other => panic!("{other:?}"),
    }
    assert!(conn.next().await.is_none(), "the connection is closed");
    let mut other = agent.connect().await.expect("connect");
    other
        .call(keynode_client::api::Request::AgentStatus)
        .await
        .expect("status");
    // The agent serves everyone else as before.
    assert_eq!(
        agent.status().await.expect("status").node_id,
        node.node_id()
    );
    node.stop().await;
}

#[actix_rt::test]
async fn kept_connections_give_way_to_new_ones_after_a_restart_and_calls_run_at_once() {
    let net = TestNet::new();
    let (node, agent) = started(&net).await;
    create(&agent, "prod").await;
    agent.write("prod", "k", b"v1").await.expect("write");
    // Calls one after another go over one kept connection.
    for _ in 0..5 {
        assert_eq!(agent.read("prod", "k").await.expect("read"), b"v1");
        assert_eq!(agent.kept_connections(), 1);
    }
    // A refused call keeps it too.
    assert_eq!(
        kind(agent.read("prod", "missing").await.unwrap_err()),
        ErrorKind::NotFound
    );
    assert_eq!(agent.kept_connections(), 1);
    // Many calls at once: each takes its own connection, and at most
    // IDLE_CONNECTIONS are kept.
    let reads = (0..16).map(|_| agent.read("prod", "k"));
    for r in futures_util::future::join_all(reads).await {
        assert_eq!(r.expect("read"), b"v1");
    }
    assert_eq!(agent.kept_connections(), keynode_client::IDLE_CONNECTIONS);
    // Stopping the agent does not wait for the kept, idle connections.
    node.stop().await;
    assert!(matches!(
        agent.status().await.unwrap_err(),
        ClientError::NotRunning(_)
    ));
    // The same node again: the kept connections are closed and noticed, and
    // calls go through new ones.
    let node = keynode_agent::Node::start(net.config("a"))
        .await
        .expect("restart");
    assert_eq!(agent.read("prod", "k").await.expect("read"), b"v1");
    // The closed ones were dropped by the call that found no agent; one
    // new connection is kept.
    assert_eq!(agent.kept_connections(), 1);
    agent.write("prod", "k", b"v2").await.expect("write");
    let clone = agent.clone();
    assert_eq!(clone.read("prod", "k").await.expect("read"), b"v2");
    assert_eq!(agent.kept_connections(), 1, "clones share them");
    node.stop().await;
}
