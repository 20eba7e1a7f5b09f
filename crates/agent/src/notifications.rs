//! Notifications over the network: delivery through [`PeerRequest::Notify`], and
//! the views the client protocol shows.

use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use keynode_core::NodeId;
use keynode_net::{NetError, WireErrorKind};

use crate::AgentNetwork;
use keynode_notify::{
    Deliver, DeliveryError, InboxEntry, Notification, NotificationData, Pending, SignedNotification,
};

use crate::api::NotificationView;
use crate::peer::{PeerRequest, PeerResponse};

/// Delivers notifications with a `Notify` request to the recipient. A
/// recipient's refusal is final; anything else is retried by the outbox.
#[derive(Clone, Default)]
pub struct NetDeliver {
    net: Arc<OnceLock<AgentNetwork>>,
}

impl NetDeliver {
    /// Plugs the network in once it runs.
    pub fn set_network(&self, net: AgentNetwork) {
        let _ = self.net.set(net);
    }
}

impl Deliver for NetDeliver {
    fn deliver(
        &self,
        to: NodeId,
        n: SignedNotification,
    ) -> BoxFuture<'static, Result<(), DeliveryError>> {
        let net = self.net.get().cloned();
        Box::pin(async move {
            let Some(net) = net else {
                return Err(DeliveryError::Unreachable("network not running".into()));
            };
            match net
                .call::<_, PeerResponse>(to, &PeerRequest::Notify { signed: n })
                .await
            {
                Ok(PeerResponse::Notified) => Ok(()),
                Ok(other) => Err(DeliveryError::Unreachable(format!(
                    "unexpected answer {other:?}"
                ))),
                Err(NetError::Remote(w)) if w.kind == WireErrorKind::PermissionDenied => {
                    Err(DeliveryError::Rejected(w.message))
                }
                Err(e) => Err(DeliveryError::Unreachable(e.to_string())),
            }
        })
    }

    fn connected(&self, to: NodeId) -> bool {
        self.net.get().is_some_and(|net| net.is_connected(to))
    }
}

fn kind_and_data(data: &NotificationData) -> (String, String) {
    let json = match data {
        NotificationData::General { message } => serde_json::json!({ "message": message }),
        NotificationData::GestaltInvite => serde_json::json!({}),
        NotificationData::VaultShare {
            vault,
            name,
            actions,
        } => serde_json::json!({
            "vault_id": vault.to_string(), "vault_name": name.as_str(), "actions": actions,
        }),
        NotificationData::VaultUnshare { vault, name } => serde_json::json!({
            "vault_id": vault.to_string(), "vault_name": name.as_str(),
        }),
        NotificationData::KeyRotated { old, .. } => serde_json::json!({
            "old_node_id": old.to_string(),
        }),
    };
    (data.kind().replace('-', "_"), json.to_string())
}

fn view(id: String, n: &Notification) -> NotificationView {
    let (kind, data) = kind_and_data(&n.data);
    NotificationView {
        id,
        from: n.from,
        to: n.to,
        kind,
        data,
        sent_ms: n.sent_ms,
        read: None,
        attempts: None,
        next_attempt_ms: None,
        received_ms: None,
    }
}

/// An inbox entry as the client sees it.
pub fn inbox_view(e: &InboxEntry) -> NotificationView {
    NotificationView {
        read: Some(e.read),
        ..view(e.id.to_string(), &e.notification)
    }
}

/// A quarantined notification as the client sees it.
pub fn quarantine_view(q: &keynode_notify::Quarantined) -> NotificationView {
    NotificationView {
        received_ms: Some(q.received_ms),
        ..view(q.id.to_string(), &q.notification)
    }
}

/// An outbox entry as the client sees it.
pub fn outbox_view(p: &Pending) -> NotificationView {
    NotificationView {
        attempts: Some(p.attempts),
        next_attempt_ms: Some(p.next_attempt_ms),
        ..view(p.id.to_string(), &p.signed.notification)
    }
}
