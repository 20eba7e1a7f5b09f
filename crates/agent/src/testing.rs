//! Helpers for tests that run several real nodes in one process (feature
//! `test-utils`): each node gets its own node path under one temporary
//! directory, listens on loopback, and shares an offline identity provider
//! directory with the others.
//!
//! ```no_run
//! # async fn demo() {
//! use keynode_agent::testing::{TestNet, knows, ok};
//! use keynode_agent::api::Request;
//!
//! let net = TestNet::new();
//! let (a, b) = (net.node("a").await, net.node("b").await);
//! knows(&a, &b).await;
//! ok(&a, Request::NodesPing { node: b.node_id() }).await;
//! # }
//! ```

use crate::api::{Request, Response};
use crate::{Client, ClientError, Node, NodeConfig};

/// A temporary directory holding the node paths of one test.
pub struct TestNet {
    dir: tempfile::TempDir,
}

impl Default for TestNet {
    fn default() -> Self {
        Self::new()
    }
}

impl TestNet {
    /// A fresh directory.
    pub fn new() -> TestNet {
        TestNet {
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
        }
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The configuration of node `name` (password "pw", port 0).
    pub fn config(&self, name: &str) -> NodeConfig {
        let mut cfg = NodeConfig::new(self.dir.path().join(name), "pw");
        cfg.provider_dir = Some(self.dir.path().join("offline-provider"));
        cfg
    }

    /// Starts node `name` on any free port (or restarts it, same identity).
    pub async fn node(&self, name: &str) -> Node {
        self.node_on(name, 0).await
    }

    /// Starts node `name` on `port`.
    pub async fn node_on(&self, name: &str, port: u16) -> Node {
        let mut cfg = self.config(name);
        cfg.agent_port = port;
        Node::start(cfg)
            .await
            .unwrap_or_else(|e| panic!("start {name}: {e}"))
    }
}

/// One request to `node` through its client socket.
pub async fn call(node: &Node, req: Request) -> Result<Response, ClientError> {
    Client::connect(&node.socket_path()).await?.call(req).await
}

/// One request that must succeed.
pub async fn ok(node: &Node, req: Request) -> Response {
    let what = format!("{req:?}");
    call(node, req)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// `from` learns `to`'s loopback address.
pub async fn knows(from: &Node, to: &Node) {
    ok(
        from,
        Request::NodesAdd {
            node: to.node_id(),
            host: "127.0.0.1".into(),
            port: to.listen_addr().port(),
        },
    )
    .await;
}

/// `who` trusts `whom` (accepts its notifications).
pub async fn trust(who: &Node, whom: &Node) {
    ok(
        who,
        Request::IdentitiesTrust {
            gestalt: keynode_core::GestaltId::Node(whom.node_id()),
        },
    )
    .await;
}

/// A pull of `vault` from its stored remote.
pub fn pull(vault: &str) -> Request {
    Request::VaultsPull {
        vault: vault.into(),
        node: None,
        pull_vault: None,
    }
}

/// Pulls `vault` from its stored remote, which must succeed; returns how many
/// commits arrived.
pub async fn pulled(node: &Node, vault: &str) -> u64 {
    match ok(node, pull(vault)).await {
        Response::Pulled { commits, .. } => commits,
        other => panic!("pull of {vault}: unexpected {other:?}"),
    }
}

/// Writes a secret.
pub async fn write(
    node: &Node,
    vault: &str,
    path: &str,
    value: &[u8],
) -> Result<Response, ClientError> {
    let mut data = value;
    let request = Request::SecretsWrite {
        vault: vault.into(),
        path: secret_path(path),
        create_new: false,
    };
    Client::connect(&node.socket_path())
        .await?
        .upload(request, &mut data)
        .await
}

/// Reads a secret that must exist.
pub async fn read(node: &Node, vault: &str, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let request = Request::SecretsGet {
        vault: vault.into(),
        path: secret_path(path),
        at: None,
    };
    Client::connect(&node.socket_path())
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
        .download(request, &mut out)
        .await
        .unwrap_or_else(|e| panic!("read {vault}:{path}: {e}"));
    out
}

/// `path` as a secret path, which must be valid.
pub fn secret_path(path: &str) -> keynode_core::SecretPath {
    keynode_core::SecretPath::new(path).unwrap_or_else(|e| panic!("secret path {path:?}: {e}"))
}

/// `node`'s inbox, oldest first.
pub async fn inbox(node: &Node) -> Vec<crate::api::NotificationView> {
    match ok(
        node,
        Request::NotificationsInboxRead {
            unread: false,
            limit: None,
            newest_first: false,
        },
    )
    .await
    {
        Response::Notifications(n) => n,
        other => panic!("inbox: unexpected {other:?}"),
    }
}

/// Waits up to `within` for a notification of `kind` in `node`'s inbox.
pub async fn arrives(
    node: &Node,
    kind: &str,
    within: std::time::Duration,
) -> crate::api::NotificationView {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(n) = inbox(node).await.into_iter().find(|n| n.kind == kind) {
            return n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {kind} notification arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
