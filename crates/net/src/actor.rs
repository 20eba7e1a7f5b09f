//! [`NetworkManager`]: the [`Network`] handle behind typed actix messages, for
//! code that talks to the network through its actor system.

use std::time::Duration;

use actix::{Actor, Context, Handler, Message, MessageResult, ResponseFuture};
use keynode_core::NodeId;

use crate::book::{BookError, PeerAddress};
use crate::network::{ConnectionInfo, NetError, Network};
use crate::rpc::RpcStream;
use crate::transport::{TcpTransport, Transport};

/// An actor owning a [`Network`] handle. Every handler delegates to the handle,
/// so the network keeps working whether or not it is used through the actor.
#[derive(Debug)]
pub struct NetworkManager<T: Transport = TcpTransport> {
    net: Network<T>,
    exec: keynode_core::exec::Exec,
}

impl<T: Transport> NetworkManager<T> {
    /// Wraps a started network.
    pub fn new(net: Network<T>) -> Self {
        Self {
            net,
            exec: keynode_core::exec::threads(),
        }
    }

    /// Runs address-book writes through `exec` instead of tokio's blocking
    /// pool (e.g. [`Inline`](keynode_core::exec::Inline) in a simulation).
    pub fn with_executor(mut self, exec: keynode_core::exec::Exec) -> Self {
        self.exec = exec;
        self
    }

    /// The wrapped handle.
    pub fn network(&self) -> &Network<T> {
        &self.net
    }
}

impl<T: Transport + Unpin> Actor for NetworkManager<T> {
    type Context = Context<Self>;
}

/// Pings a node; answers with the round-trip time.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Duration, NetError>")]
pub struct Ping {
    /// The node to ping.
    pub node: NodeId,
}

/// Records an address for a node in the address book.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), BookError>")]
pub struct AddNode {
    /// The node.
    pub node: NodeId,
    /// Where it listens.
    pub addr: PeerAddress,
}

/// Lists the address book: each node's addresses, latest first, with where
/// each came from and when it last worked.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Vec<crate::book::NodeAddresses>, BookError>")]
pub struct ListNodes;

/// Lists the live connections.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<ConnectionInfo>")]
pub struct Connections;

/// Where a node may be found: the book, then the directory (looked up now).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<crate::network::Found, NetError>")]
pub struct Find {
    /// The node to look for.
    pub node: NodeId,
}

/// Opens a service stream to a node.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<RpcStream, NetError>")]
pub struct Open {
    /// The node.
    pub node: NodeId,
}

impl<T: Transport + Unpin> Handler<Ping> for NetworkManager<T> {
    type Result = ResponseFuture<Result<Duration, NetError>>;

    fn handle(&mut self, msg: Ping, _: &mut Context<Self>) -> Self::Result {
        let net = self.net.clone();
        Box::pin(async move { net.ping(msg.node).await })
    }
}

impl<T: Transport + Unpin> Handler<AddNode> for NetworkManager<T> {
    type Result = ResponseFuture<Result<(), BookError>>;

    fn handle(&mut self, msg: AddNode, _: &mut Context<Self>) -> Self::Result {
        let book = self.net.book().clone();
        let exec = self.exec.clone();
        // The write transaction begins and commits inside one blocking call, off
        // the arbiter's thread.
        Box::pin(async move {
            keynode_core::exec::blocking(exec.as_ref(), move || book.add(msg.node, msg.addr))
                .await
                .map_err(|e| {
                    BookError::Storage(keynode_core::store::heed3::Error::Io(
                        std::io::Error::other(e),
                    ))
                })?
        })
    }
}

impl<T: Transport + Unpin> Handler<ListNodes> for NetworkManager<T> {
    type Result = Result<Vec<crate::book::NodeAddresses>, BookError>;

    fn handle(&mut self, _: ListNodes, _: &mut Context<Self>) -> Self::Result {
        self.net.book().list_info()
    }
}

impl<T: Transport + Unpin> Handler<Connections> for NetworkManager<T> {
    type Result = MessageResult<Connections>;

    fn handle(&mut self, _: Connections, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.net.connections())
    }
}

impl<T: Transport + Unpin> Handler<Find> for NetworkManager<T> {
    type Result = ResponseFuture<Result<crate::network::Found, NetError>>;

    fn handle(&mut self, msg: Find, _: &mut Context<Self>) -> Self::Result {
        let net = self.net.clone();
        Box::pin(async move { net.find(msg.node).await })
    }
}

impl<T: Transport + Unpin> Handler<Open> for NetworkManager<T> {
    type Result = ResponseFuture<Result<RpcStream, NetError>>;

    fn handle(&mut self, msg: Open, _: &mut Context<Self>) -> Self::Result {
        let net = self.net.clone();
        Box::pin(async move { net.open(msg.node).await })
    }
}
