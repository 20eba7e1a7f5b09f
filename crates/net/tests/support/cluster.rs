//! Real nodes in one process, each with its own LMDB env in a temporary directory.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use keynode_core::{Keypair, NodeId};
use keynode_net::book::Env;
use keynode_net::{
    AddressBook, MemoryDirectory, NetConfig, NetContext, Network, PeerAddress, RpcStream, Service,
    TcpTransport, WireError, WireErrorKind,
};
use serde::{Deserialize, Serialize};

/// A fresh LMDB env in a temporary directory.
pub fn env() -> (tempfile::TempDir, Env) {
    let tmp = tempfile::tempdir().unwrap();
    let key = keynode_core::datakey::DataKey::from_bytes([7; 32]);
    let env = keynode_core::store::open_env(tmp.path(), &key, 1 << 24, 16).unwrap();
    (tmp, env)
}

/// A test config: loopback, short timeouts.
pub fn config() -> NetConfig {
    NetConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        handshake_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        ..NetConfig::default()
    }
}

pub struct Node {
    pub net: Network,
    pub key: Arc<Keypair>,
    pub env: Env,
    _tmp: Arc<tempfile::TempDir>,
}

impl Node {
    pub async fn start(config: NetConfig, service: Arc<dyn Service>) -> Node {
        let (tmp, env) = env();
        Self::start_in(
            Arc::new(tmp),
            env,
            Arc::new(Keypair::generate()),
            config,
            service,
        )
        .await
    }

    pub async fn start_in(
        tmp: Arc<tempfile::TempDir>,
        env: Env,
        key: Arc<Keypair>,
        config: NetConfig,
        service: Arc<dyn Service>,
    ) -> Node {
        Self::start_with(tmp, env, key, config, service, NetContext::default()).await
    }

    /// A node that publishes to and looks up in `directory`.
    pub async fn start_listed(
        config: NetConfig,
        service: Arc<dyn Service>,
        directory: &MemoryDirectory,
    ) -> Node {
        let (tmp, env) = env();
        let key = Arc::new(Keypair::generate());
        let context = NetContext {
            discovery: Some(directory.discovery(key.node_id())),
            ..NetContext::default()
        };
        Self::start_with(Arc::new(tmp), env, key, config, service, context).await
    }

    pub async fn start_with(
        tmp: Arc<tempfile::TempDir>,
        env: Env,
        key: Arc<Keypair>,
        config: NetConfig,
        service: Arc<dyn Service>,
        context: NetContext,
    ) -> Node {
        let book = AddressBook::open(env.clone()).unwrap();
        let net = Network::start_with(key.clone(), config, TcpTransport, book, service, context)
            .await
            .unwrap();
        Node {
            net,
            key,
            env,
            _tmp: tmp,
        }
    }

    /// Restarts this node's network (same key, env and port).
    pub async fn restart(&self, service: Arc<dyn Service>) -> Node {
        self.net.shutdown().await;
        let mut cfg = config();
        cfg.listen = self.addr();
        Self::start_in(
            self._tmp.clone(),
            self.env.clone(),
            self.key.clone(),
            cfg,
            service,
        )
        .await
    }

    pub fn id(&self) -> NodeId {
        self.net.node_id()
    }

    pub fn addr(&self) -> SocketAddr {
        self.net.local_addr()
    }

    /// Tells this node where `other` listens.
    pub fn learn(&self, other: &Node) {
        self.learn_at(other.id(), other.addr());
    }

    pub fn learn_at(&self, id: NodeId, addr: SocketAddr) {
        self.net.book().add(id, PeerAddress::from(addr)).unwrap();
    }
}

/// Requests the echo service understands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum EchoReq {
    /// Answer with the same text and the caller's NodeId.
    Echo(String),
    /// Answer with a `NotFound` wire error.
    Fail,
    /// Wait this many milliseconds, then answer.
    Sleep(u64),
    /// Answer nothing; end when the caller closes or resets the stream (a
    /// request held open for as long as the caller wants).
    Hold,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoResp {
    pub text: String,
    pub caller: NodeId,
}

/// A unary service: one request, one response per stream.
pub struct Echo;

impl Service for Echo {
    fn serve(&self, peer: NodeId, mut stream: RpcStream) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let Ok(Some(req)) = stream.recv::<EchoReq>().await else {
                return;
            };
            let _ = match req {
                EchoReq::Echo(text) => stream.send(&EchoResp { text, caller: peer }).await,
                EchoReq::Fail => {
                    stream
                        .send_error(&WireError::new(WireErrorKind::NotFound, "no such thing"))
                        .await
                }
                EchoReq::Hold => {
                    let _ = stream.recv::<EchoReq>().await;
                    return;
                }
                EchoReq::Sleep(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    stream
                        .send(&EchoResp {
                            text: "slept".into(),
                            caller: peer,
                        })
                        .await
                }
            };
            let _ = stream.finish().await;
        })
    }
}

/// Reads `/proc/self/status`'s `RssAnon`, in bytes.
pub fn rss_anon() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .expect("RssAnon in /proc/self/status");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Waits until `cond` holds, up to `limit`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}
