//! The agent's service on the network: each stream a peer opens is dispatched by
//! its first request ([`PeerRequest`]) to the module that serves it.
//!
//! Every request arrives with the caller's NodeId proven by the Noise handshake
//! ([`keynode_net::Service`]); nothing in a message body is trusted to say who
//! is asking. A failure on our side reaches the peer as a kind and a fixed
//! message (`errors::to_peer`); its detail stays in the local log and
//! the audit log.

use std::sync::Weak;

use futures_util::future::BoxFuture;
use keynode_core::NodeId;
use keynode_net::{PeerClass, RpcError, RpcStream, Service, WireError, WireErrorKind};
use keynode_notify::{NotificationsManager, ReceiveError, SignedNotification};

pub use crate::protocol::{PeerRequest, PeerResponse};

use crate::errors::{Ask, to_peer};
use crate::gestalts::Gestalts;

/// Longest a peer may take, after opening a stream, to send its request.
pub const FIRST_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The agent's [`Service`].
///
/// It holds the node's parts weakly: the network holds the service, and the
/// parts hold the network, so a strong reference here would keep a stopped
/// node (and its LMDB environment) alive.
pub struct PeerService {
    pub(crate) gestalts: Weak<Gestalts>,
    pub(crate) notifications: actix::WeakAddr<NotificationsManager>,
    pub(crate) vaults: actix::WeakAddr<keynode_vaults::VaultManager>,
    pub(crate) heads: keynode_vaults::HeadEvents,
    pub(crate) exec: keynode_core::exec::Exec,
    /// Cancelled when the node stops: ends the streams that stay open
    /// (`Follow`), which a closing connection does not always wake.
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
    /// Followed clones (holds no state open).
    pub(crate) follow: std::sync::Arc<crate::follow::Following>,
}

impl Service for PeerService {
    /// A peer our graph does not know gets the stranger's few streams: it can
    /// ask nothing that needs a permission, and it may be anyone with a key.
    fn classify(&self, peer: NodeId) -> BoxFuture<'static, PeerClass> {
        let gestalts = self.gestalts.upgrade();
        Box::pin(async move {
            match gestalts {
                Some(g) if g.knows(peer).await => PeerClass::Known,
                _ => PeerClass::Stranger,
            }
        })
    }

    fn serve(&self, peer: NodeId, mut stream: RpcStream) -> BoxFuture<'static, ()> {
        let gestalts = self.gestalts.upgrade();
        let notifications = self.notifications.upgrade();
        let vaults = self.vaults.upgrade();
        let exec = self.exec.clone();
        let heads = self.heads.clone();
        let shutdown = self.shutdown.clone();
        let follow = self.follow.clone();
        Box::pin(async move {
            let (Some(gestalts), Some(notifications), Some(vaults)) =
                (gestalts, notifications, vaults)
            else {
                let err = WireError::new(WireErrorKind::Unavailable, "the node is stopping");
                let _ = stream.send_error(&err).await;
                return;
            };
            let first = tokio::time::timeout(FIRST_REQUEST_TIMEOUT, stream.recv::<PeerRequest>());
            let request = match first.await {
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) => return,
                Err(_) => {
                    let err = WireError::new(WireErrorKind::Timeout, "no request in time");
                    let _ = stream.send_error(&err).await;
                    return;
                }
                Ok(Err(RpcError::Busy { .. })) => {
                    let err = WireError::new(WireErrorKind::Unavailable, "busy; try again later");
                    let _ = stream.send_error(&err).await;
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "bad peer request");
                    let err = WireError::new(WireErrorKind::BadRequest, "malformed request");
                    let _ = stream.send_error(&err).await;
                    return;
                }
            };
            let kind: &'static str = (&request).into();
            let result = match request {
                PeerRequest::Chain { after } => gestalts
                    .serve_chain(peer, after)
                    .await
                    .map(PeerResponse::Chain),
                PeerRequest::LinkPropose { half } => {
                    let linked = gestalts.serve_link(peer, half, &mut stream).await;
                    if linked.is_ok() {
                        spawn_tell_owners(&gestalts, &notifications, &vaults, &shutdown);
                    }
                    linked
                }
                PeerRequest::LinkFinish { .. } => Err(WireError::new(
                    WireErrorKind::BadRequest,
                    "LinkFinish without LinkPropose",
                )),
                PeerRequest::Notify { signed } => {
                    let share = matches!(
                        signed.notification.data,
                        keynode_notify::NotificationData::VaultShare { .. }
                    );
                    let r = receive_notification(&gestalts, &notifications, &vaults, peer, signed)
                        .await;
                    if share && r.is_ok() {
                        // Shared again: what the sender refused may be served now.
                        follow.resubscribe(peer);
                    }
                    r
                }
                PeerRequest::Scan => crate::transfer::serve_scan(&gestalts, &vaults, peer).await,
                PeerRequest::VaultOpen { vault, action } => {
                    let serving = crate::transfer::Serving {
                        gestalts: &gestalts,
                        vaults: &vaults,
                        exec: &exec,
                        peer,
                    };
                    serving.vault(vault, action, &mut stream).await
                }
                PeerRequest::VaultWant { .. } => Err(WireError::new(
                    WireErrorKind::BadRequest,
                    "VaultWant without VaultOpen",
                )),
                PeerRequest::ListenAt { port } => {
                    gestalts.note_listen_address(peer, port).await;
                    Ok(PeerResponse::Noted)
                }
                PeerRequest::Follow { vaults: wanted } => {
                    let announcing = crate::follow::Announcing {
                        gestalts: &gestalts,
                        vaults: &vaults,
                        heads: &heads,
                        shutdown: &shutdown,
                        peer,
                    };
                    announcing.serve(wanted, &mut stream).await
                }
                PeerRequest::GestaltGrew { members } => {
                    // Answered at once; the discovery runs on its own, until
                    // it ends or the node stops.
                    let (g, n, v) = (gestalts.clone(), notifications.clone(), vaults.clone());
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = shutdown.cancelled() => {}
                            _ = crate::growth::on_hint(&g, &n, &v, peer, members) => {}
                        }
                    });
                    Ok(PeerResponse::Noted)
                }
            };
            crate::metrics::peer_request(kind, &result);
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

/// Our gestalt gained a node: the owners of what is shared with it hear of it
/// (in the background, until done or the node stops).
pub(crate) fn spawn_tell_owners(
    gestalts: &std::sync::Arc<Gestalts>,
    notifications: &actix::Addr<NotificationsManager>,
    vaults: &actix::Addr<keynode_vaults::VaultManager>,
    shutdown: &tokio_util::sync::CancellationToken,
) {
    let (g, n, v, shutdown) = (
        gestalts.clone(),
        notifications.clone(),
        vaults.clone(),
        shutdown.clone(),
    );
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = crate::growth::tell_owners(&g, &n, &v) => {}
        }
    });
}

/// Serves `Notify`: the sender is the authenticated peer; it must be trusted.
async fn receive_notification(
    gestalts: &Gestalts,
    notifications: &actix::Addr<NotificationsManager>,
    vaults: &actix::Addr<keynode_vaults::VaultManager>,
    peer: NodeId,
    signed: SignedNotification,
) -> Result<PeerResponse, WireError> {
    let rotation = match &signed.notification.data {
        keynode_notify::NotificationData::KeyRotated { proof, .. } => Some(proof.clone()),
        _ => None,
    };
    let trusted = match rotation {
        // A renewed key is not trusted yet: the rotation it carries, signed
        // by the key we know, is what may make it so.
        Some(proof) => {
            if signed.notification.from != peer || signed.verify().is_err() {
                return Err(WireError::new(
                    WireErrorKind::BadRequest,
                    "a notification must be signed by its sender",
                ));
            }
            match crate::renewal::apply_announced(gestalts, vaults, notifications, &proof, peer)
                .await
            {
                Ok(()) => true,
                Err(e) => {
                    gestalts
                        .record(keynode_audit::AuditEvent::Refused {
                            peer,
                            op: "rotation".into(),
                            reason: e.message.clone(),
                        })
                        .await;
                    return Err(WireError::new(
                        WireErrorKind::PermissionDenied,
                        "rotation refused",
                    ));
                }
            }
        }
        None => match gestalts
            .has_action(peer, keynode_acl::GestaltAction::Notify)
            .await
        {
            Ok(t) => t,
            Err(e) => return Err(gestalts.serve_failed(peer, "notification", &e).await),
        },
    };
    let received = notifications
        .ask_raw(keynode_notify::messages::Receive {
            signed,
            sender: peer,
            trusted,
        })
        .await;
    let received = match received {
        Ok(r) => r,
        Err(e) => return Err(gestalts.serve_failed(peer, "notification", &e).await),
    };
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
            // Every refusal looks the same to the sender.
            Err(to_peer(WireErrorKind::PermissionDenied, &r))
        }
        Err(ReceiveError::Store(e)) => Err(gestalts.serve_failed(peer, "notification", &e).await),
    }
}

/// Most announcements in flight at once.
const ANNOUNCE_PARALLEL: usize = 16;

/// Tells every node in the address book that this node listens on `port`
/// (`PeerRequest::ListenAt`), a few at a time; a node that cannot be reached
/// is skipped (it learns it when we next meet).
pub(crate) async fn announce_presence(net: &crate::AgentNetwork, port: u16) {
    use futures_util::StreamExt;
    let nodes: Vec<NodeId> = match net.book().list() {
        Ok(list) => list.into_iter().map(|(n, _)| n).collect(),
        Err(_) => return,
    };
    futures_util::stream::iter(nodes)
        .for_each_concurrent(ANNOUNCE_PARALLEL, |node| async move {
            let told: Result<PeerResponse, _> =
                net.call(node, &PeerRequest::ListenAt { port }).await;
            if let Err(e) = told {
                tracing::debug!(%node, error = %e, "could not tell a node where we listen");
            }
        })
        .await;
}
