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
use keynode_notify::{NotificationsManager, ReceiveError, SignedNotification};
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
    /// A notification for us, signed by the caller. Accepted only from a
    /// trusted (`notify`) gestalt; every refusal looks the same.
    Notify {
        /// The notification.
        signed: SignedNotification,
    },
    /// The vaults we share with the caller's gestalt. Needs `scan`.
    Scan,
    /// Opens a vault for a clone or a pull (by name or id). Needs that action
    /// on the vault; answered with an `Advert`, then the caller sends
    /// `VaultWant`.
    VaultOpen {
        /// Vault name or id.
        vault: String,
        /// `clone` or `pull`.
        action: keynode_acl::VaultAction,
    },
    /// What the caller wants after an `Advert`: the head (or nothing when up to
    /// date) and the commits it has. Answered with `PackChunk`s and `PackEnd`.
    VaultWant {
        /// The advertised head, or `None` when the caller has it.
        want: Option<String>,
        /// Commits the caller has (at most 1,024).
        haves: Vec<String>,
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
    /// The notification was accepted.
    Notified,
    /// Vaults shared with the caller.
    Scanned(Vec<crate::api::ScanEntry>),
    /// A vault's id, name and head.
    Advert(keynode_vaults::Advert),
    /// A piece of a pack (≤ 64 KiB).
    PackChunk(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The pack is complete.
    PackEnd(keynode_vaults::PackStats),
}

/// The agent's [`Service`]: dispatches each stream by its first request.
///
/// It holds the node's parts weakly: the network holds the service, and the
/// parts hold the network, so a strong reference here would keep a stopped
/// node (and its LMDB environment) alive.
pub struct PeerService {
    pub(crate) gestalts: Weak<Gestalts>,
    pub(crate) notifications: actix::WeakAddr<NotificationsManager>,
    pub(crate) vaults: actix::WeakAddr<keynode_vaults::VaultManager>,
}

impl Service for PeerService {
    fn serve(&self, peer: NodeId, mut stream: RpcStream) -> BoxFuture<'static, ()> {
        let gestalts = self.gestalts.upgrade();
        let notifications = self.notifications.upgrade();
        let vaults = self.vaults.upgrade();
        Box::pin(async move {
            let (Some(gestalts), Some(notifications), Some(vaults)) =
                (gestalts, notifications, vaults)
            else {
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
                PeerRequest::Notify { signed } => {
                    receive_notification(&gestalts, &notifications, peer, signed).await
                }
                PeerRequest::Scan => crate::transfer::serve_scan(&gestalts, &vaults, peer).await,
                PeerRequest::VaultOpen { vault, action } => {
                    crate::transfer::serve_vault(
                        &gestalts,
                        &vaults,
                        peer,
                        vault,
                        action,
                        &mut stream,
                    )
                    .await
                }
                PeerRequest::VaultWant { .. } => Err(WireError::new(
                    WireErrorKind::BadRequest,
                    "VaultWant without VaultOpen",
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

/// Serves `Notify`: the sender is the authenticated peer; it must be trusted.
async fn receive_notification(
    gestalts: &Gestalts,
    notifications: &actix::Addr<NotificationsManager>,
    peer: NodeId,
    signed: SignedNotification,
) -> Result<PeerResponse, WireError> {
    let trusted = gestalts
        .has_action(peer, keynode_acl::GestaltAction::Notify)
        .await
        .map_err(|e| WireError::new(WireErrorKind::Unavailable, e.message))?;
    let received = notifications
        .send(keynode_notify::messages::Receive {
            signed,
            sender: peer,
            trusted,
        })
        .await
        .map_err(|e| WireError::new(WireErrorKind::Unavailable, e.to_string()))?;
    match received {
        Ok(_) => Ok(PeerResponse::Notified),
        Err(ReceiveError::Refused(r)) => {
            gestalts
                .record(keynode_audit::AuditEvent::Refused {
                    peer,
                    op: "notification".into(),
                    reason: r.to_string(),
                })
                .await;
            Err(WireError::new(
                WireErrorKind::PermissionDenied,
                r.to_string(),
            ))
        }
        Err(ReceiveError::Store(e)) => Err(WireError::new(
            WireErrorKind::Unavailable,
            format!("cannot store the notification now: {e}"),
        )),
    }
}
