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
