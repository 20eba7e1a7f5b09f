//! What nodes ask each other (the agent's service on the network).
//!
//! Every request arrives on its own stream with the caller's NodeId proven by the
//! Noise handshake ([`keynode_net::Service`]); nothing in a message body is
//! trusted to say who is asking. Messages are closed enums that only grow at the
//! end; see docs/PROTOCOL.md.

use std::sync::Weak;

use futures_util::future::BoxFuture;
use keynode_core::NodeId;
use keynode_gestalt::SignedClaim;
use keynode_net::{RpcStream, Service, WireError, WireErrorKind};
use serde::{Deserialize, Serialize};

use crate::gestalts::Gestalts;

/// A request from another node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Our sigchain entries after `after` (all when `None`).
    Chain {
        /// The last entry the caller has.
        after: Option<u64>,
    },
    /// The caller proposes a node link (`half`: for its chain, signed by it) and
    /// asks for our countersignature and our own proposal. Needs `claim`.
    LinkPropose {
        /// The caller's half-signed claim naming us as `node2`.
        half: SignedClaim,
    },
    /// The caller's countersignature of our proposal (same stream, after
    /// `LinkProposed`).
    LinkFinish {
        /// Our proposal, now signed by both.
        full: SignedClaim,
    },
}

/// An answer to a [`PeerRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // sent once per stream, never stored
pub enum PeerResponse {
    /// Sigchain entries, oldest first.
    Chain(Vec<SignedClaim>),
    /// The caller's claim countersigned, and our proposal for our chain.
    LinkProposed {
        /// The caller's claim, signed by both.
        countersigned: SignedClaim,
        /// Our half-signed claim naming the caller as `node2`.
        proposal: SignedClaim,
    },
    /// The link is in both chains.
    LinkFinished,
}

/// The agent's [`Service`]: dispatches each stream by its first request.
///
/// It holds the node's parts weakly: the network holds the service, and the
/// parts hold the network, so a strong reference here would keep a stopped
/// node (and its LMDB environment) alive.
pub struct PeerService {
    pub(crate) gestalts: Weak<Gestalts>,
}

impl Service for PeerService {
    fn serve(&self, peer: NodeId, mut stream: RpcStream) -> BoxFuture<'static, ()> {
        let gestalts = self.gestalts.upgrade();
        Box::pin(async move {
            let Some(gestalts) = gestalts else {
                let err = WireError::new(WireErrorKind::Unavailable, "the node is stopping");
                let _ = stream.send_error(&err).await;
                return;
            };
            let request = match stream.recv::<PeerRequest>().await {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "bad peer request");
                    let err = WireError::new(WireErrorKind::BadRequest, "malformed request");
                    let _ = stream.send_error(&err).await;
                    return;
                }
            };
            let result = match request {
                PeerRequest::Chain { after } => {
                    gestalts.serve_chain(after).await.map(PeerResponse::Chain)
                }
                PeerRequest::LinkPropose { half } => {
                    gestalts.serve_link(peer, half, &mut stream).await
                }
                PeerRequest::LinkFinish { .. } => Err(WireError::new(
                    WireErrorKind::BadRequest,
                    "LinkFinish without LinkPropose",
                )),
            };
            match result {
                Ok(response) => {
                    let _ = stream.send(&response).await;
                }
                Err(e) => {
                    let _ = stream.send_error(&e).await;
                }
            }
            let _ = stream.finish().await;
        })
    }
}
