//! Nodes started in-process through the library, several at once, and clients
//! that misbehave on the agent socket.

use std::time::Duration;

use keynode_agent::api::{
    ClientMsg, ErrorKind, MAX_FRAME, PROTOCOL_VERSION, Request, Response, ServerMsg,
};
use keynode_agent::testing::secret_path;
use keynode_agent::{Client, ClientError, Node, NodeConfig};
use keynode_core::{SecretPath, VaultName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

async fn node(dir: &tempfile::TempDir, name: &str) -> Node {
    Node::start(NodeConfig::new(dir.path().join(name), "pw"))
        .await
        .expect("start")
}

async fn call(node: &Node, req: Request) -> Result<Response, ClientError> {
    Client::connect(&node.socket_path()).await?.call(req).await
}

async fn log_len(node: &Node, vault: &str) -> usize {
    match call(
        node,
        Request::VaultsLog {
            vault: vault.into(),
            depth: None,
            commit: None,
        },
    )
    .await
    .expect("log")
    {
        Response::Log(l) => l.len(),
        other => panic!("unexpected {other:?}"),
    }
}

fn frame(msg: &ClientMsg) -> Vec<u8> {
    let body = keynode_core::codec::encode(msg).expect("encode");
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// `frame` with its one occurrence of `from` replaced by `to` (as long).
fn with_replaced(frame: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at: Vec<usize> = (0..=frame.len() - from.len())
        .filter(|&i| &frame[i..i + from.len()] == from)
        .collect();
    assert_eq!(at.len(), 1, "{from:?} is not unique in the frame");
    let mut out = frame.to_vec();
    out[at[0]..at[0] + to.len()].copy_from_slice(to);
    out
}

/// The agent's messages in `bytes` (length-delimited frames).
fn server_msgs(mut bytes: &[u8]) -> Vec<ServerMsg> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let Some(body) = bytes.get(4..4 + len) else {
            break;
        };
        out.push(keynode_core::codec::decode(body).expect("a server message"));
        bytes = &bytes[4 + len..];
    }
    out
}

/// Reads until the agent closes the connection (or 5 s pass).
async fn read_to_close(s: &mut UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

#[actix_rt::test]
async fn several_nodes_run_in_one_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node(&dir, "a").await;
    let b = node(&dir, "b").await;
    let c = node(&dir, "c").await;
    assert_ne!(a.node_id(), b.node_id());
    assert_ne!(b.node_id(), c.node_id());
    call(
        &a,
        Request::VaultsCreate {
            name: VaultName::new("only-on-a").unwrap(),
        },
    )
    .await
    .expect("create");
    let Response::Vaults(on_b) = call(&b, Request::VaultsList).await.expect("list") else {
        panic!("no list")
    };
    assert!(on_b.is_empty());
    let client = Client::connect(&c.socket_path()).await.expect("connect");
    assert_eq!(client.node_id(), c.node_id());
    // The same node path cannot be opened twice, even in one process.
    let again = Node::start(NodeConfig::new(dir.path().join("a"), "pw")).await;
    assert!(matches!(again, Err(keynode_agent::StartError::Locked(_))));
    // An idle client (greeted, no request yet) does not hold up a stop.
    let t = std::time::Instant::now();
    for n in [a, b, c] {
        n.stop().await;
    }
    // Had a stop waited for the idle client, it would have waited its grace.
    assert!(
        t.elapsed() < keynode_agent::node::STOP_GRACE,
        "stop waited for an idle client"
    );
    drop(client);
    // After a stop the path can be started again, with the same identity.
    let a2 = node(&dir, "a").await;
    let Response::Vaults(on_a) = call(&a2, Request::VaultsList).await.expect("list") else {
        panic!("no list")
    };
    assert_eq!(on_a.len(), 1);
    a2.stop().await;
}

#[actix_rt::test]
async fn wrong_password_is_a_typed_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    node(&dir, "a").await.stop().await;
    let r = Node::start(NodeConfig::new(dir.path().join("a"), "nope")).await;
    assert!(matches!(
        r,
        Err(keynode_agent::StartError::WrongPassword(_))
    ));
}

#[actix_rt::test]
async fn nul_and_bad_ids_are_refused_and_harm_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = node(&dir, "a").await;
    call(
        &n,
        Request::VaultsCreate {
            name: VaultName::new("v").unwrap(),
        },
    )
    .await
    .expect("create");
    // A client cannot build a request with a bad path; one that writes the
    // frame itself is refused when the agent decodes it, and nothing changes.
    for path in ["a\0b", "\0", "../x", "/abs", "a//b"] {
        assert!(SecretPath::new(path).is_err(), "{path:?}");
        let stand_in = "q".repeat(path.len());
        for req in [
            Request::SecretsGet {
                vault: "v".into(),
                path: secret_path(&stand_in),
                at: None,
            },
            Request::SecretsWrite {
                vault: "v".into(),
                path: secret_path(&stand_in),
                create_new: false,
            },
        ] {
            let mut s = UnixStream::connect(&n.socket_path())
                .await
                .expect("connect");
            s.write_all(&frame(&ClientMsg::Hello {
                version: PROTOCOL_VERSION,
            }))
            .await
            .expect("hello");
            s.write_all(&with_replaced(
                &frame(&ClientMsg::Request(req)),
                stand_in.as_bytes(),
                path.as_bytes(),
            ))
            .await
            .expect("request");
            let reply = server_msgs(&read_to_close(&mut s).await);
            assert!(
                matches!(reply.last(), Some(ServerMsg::Error(e)) if e.kind == ErrorKind::Protocol),
                "{path:?}: {reply:?}"
            );
        }
    }
    // A vault id that is well-formed but unknown, and one that is malformed.
    for vault in ["z11111111111111111111", "zz", "v\0"] {
        let r = call(
            &n,
            Request::VaultsDelete {
                vault: vault.into(),
            },
        )
        .await;
        assert!(
            matches!(r, Err(ClientError::Api(ref e)) if e.kind == ErrorKind::NotFound),
            "{r:?}"
        );
    }
    assert_eq!(log_len(&n, "v").await, 1);
    n.stop().await;
}

#[actix_rt::test]
async fn malformed_frames_close_only_that_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = node(&dir, "a").await;
    let sock = n.socket_path();

    // Random bytes that happen to be a small frame of garbage.
    let mut s = UnixStream::connect(&sock).await.expect("connect");
    s.write_all(&[0, 0, 0, 5, 0xff, 0xfe, 0xfd, 0xfc, 0xfb])
        .await
        .expect("write");
    let reply = read_to_close(&mut s).await;
    assert!(
        !reply.is_empty(),
        "expected an error frame before the close"
    );

    // An oversized length prefix: refused without allocating it.
    let mut s = UnixStream::connect(&sock).await.expect("connect");
    s.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
    s.write_all(&[0u8; 64]).await.expect("write");
    read_to_close(&mut s).await;
    let mut s = UnixStream::connect(&sock).await.expect("connect");
    s.write_all(&((MAX_FRAME + 1) as u32).to_be_bytes())
        .await
        .expect("write");
    read_to_close(&mut s).await;

    // A request before Hello, and a Hello of another protocol version.
    let mut s = UnixStream::connect(&sock).await.expect("connect");
    s.write_all(&frame(&ClientMsg::Request(Request::VaultsList)))
        .await
        .expect("write");
    read_to_close(&mut s).await;
    let mut s = UnixStream::connect(&sock).await.expect("connect");
    s.write_all(&frame(&ClientMsg::Hello {
        version: PROTOCOL_VERSION + 1,
    }))
    .await
    .expect("write");
    let reply = read_to_close(&mut s).await;
    let msg: ServerMsg = keynode_core::codec::decode(&reply[4..]).expect("an error message");
    assert!(
        matches!(msg, ServerMsg::Error(ref e) if e.kind == ErrorKind::Protocol),
        "{msg:?}"
    );

    // A truncated frame, then the client vanishes.
    let mut s = UnixStream::connect(&sock).await.expect("connect");
    s.write_all(&[0, 0, 1, 0, 1, 2]).await.expect("write");
    drop(s);

    // The agent still serves everyone else.
    call(
        &n,
        Request::VaultsCreate {
            name: VaultName::new("still-ok").unwrap(),
        },
    )
    .await
    .expect("create");
    n.stop().await;
}

#[actix_rt::test]
async fn an_upload_cut_short_commits_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = node(&dir, "a").await;
    call(
        &n,
        Request::VaultsCreate {
            name: VaultName::new("v").unwrap(),
        },
    )
    .await
    .expect("create");
    let mut s = UnixStream::connect(&n.socket_path())
        .await
        .expect("connect");
    s.write_all(&frame(&ClientMsg::Hello {
        version: PROTOCOL_VERSION,
    }))
    .await
    .expect("hello");
    s.write_all(&frame(&ClientMsg::Request(Request::SecretsWrite {
        vault: "v".into(),
        path: secret_path("half"),
        create_new: false,
    })))
    .await
    .expect("request");
    for _ in 0..10 {
        s.write_all(&frame(&ClientMsg::Data(vec![7u8; 60_000])))
            .await
            .expect("data");
    }
    drop(s); // no End
    // An upload interrupted by garbage in the middle.
    let mut s = UnixStream::connect(&n.socket_path())
        .await
        .expect("connect");
    s.write_all(&frame(&ClientMsg::Hello {
        version: PROTOCOL_VERSION,
    }))
    .await
    .expect("hello");
    s.write_all(&frame(&ClientMsg::Request(Request::SecretsWrite {
        vault: "v".into(),
        path: secret_path("garbled"),
        create_new: false,
    })))
    .await
    .expect("request");
    s.write_all(&frame(&ClientMsg::Data(vec![1u8; 1000])))
        .await
        .expect("data");
    s.write_all(&[0, 0, 0, 3, 9, 9, 9]).await.expect("garbage");
    read_to_close(&mut s).await;

    // The agent closes a connection only once its request's handler has
    // returned (the upload abandoned, its store job joined): whatever the
    // upload was going to commit, it has by now.
    assert_eq!(
        log_len(&n, "v").await,
        1,
        "an incomplete upload made a commit"
    );
    let r = call(
        &n,
        Request::SecretsStat {
            vault: "v".into(),
            path: secret_path("half"),
            at: None,
        },
    )
    .await;
    assert!(
        matches!(r, Err(ClientError::Api(ref e)) if e.kind == ErrorKind::NotFound),
        "{r:?}"
    );
    n.stop().await;
}

#[actix_rt::test]
async fn a_full_state_refuses_writes_clearly_and_keeps_serving_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::new(dir.path().join("small"), "pw");
    cfg.max_state_bytes = 256 << 10;
    let n = Node::start(cfg).await.expect("start");
    call(
        &n,
        Request::VaultsCreate {
            name: VaultName::new("keep").unwrap(),
        },
    )
    .await
    .unwrap();
    keynode_agent::testing::write(&n, "keep", "db/password", b"hunter2")
        .await
        .expect("write");
    // Addresses of made-up nodes until the state has no room for another.
    let mut made = 0;
    let refused = loop {
        let r = call(
            &n,
            Request::NodesAdd {
                node: keynode_core::Keypair::generate().node_id(),
                host: format!("host-{made}.example.org"),
                port: 4000,
            },
        )
        .await;
        match r {
            Ok(_) => made += 1,
            Err(e) => break e,
        }
        assert!(made < 20_000, "a 256 KiB state never filled");
    };
    // Vaults fill what room is left, then are refused the same way, and a
    // refused one leaves no repository behind.
    let mut vaults = 1;
    loop {
        let r = call(
            &n,
            Request::VaultsCreate {
                name: VaultName::new(format!("late{vaults}")).unwrap(),
            },
        )
        .await;
        match r {
            Ok(_) => vaults += 1,
            Err(ClientError::Api(e)) if e.kind == ErrorKind::Io => break,
            Err(e) => panic!("{e}"),
        }
        assert!(vaults < 500, "vaults never filled the state");
    }
    match refused {
        ClientError::Api(e) => {
            assert_eq!(e.kind, ErrorKind::Io, "{e}");
            assert!(e.message.contains("--max-state-bytes"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // It says so, and reads go on.
    let Response::Status(status) = call(&n, Request::AgentStatus).await.unwrap() else {
        panic!("no status")
    };
    assert!(status.storage_used_percent >= 90, "{status:?}");
    let Response::Vaults(list) = call(&n, Request::VaultsList).await.unwrap() else {
        panic!("no list")
    };
    assert_eq!(list.len(), vaults);
    let repos = std::fs::read_dir(dir.path().join("small").join("vaults"))
        .unwrap()
        .count();
    assert_eq!(repos, vaults, "a refused vault left its repository");
    let got = keynode_agent::testing::read(&n, "keep", "db/password").await;
    assert_eq!(got, b"hunter2");
    n.stop().await;
}
