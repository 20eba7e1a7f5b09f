//! What every request handler is handed: the node's actors and shared state.

use std::sync::{Arc, Mutex};

use actix::Addr;
use keynode_core::exec::Exec;
use keynode_net::{BoxTransport, NetworkManager};
use tokio_util::sync::CancellationToken;

use crate::api::AgentStatus;
use crate::gestalts::Gestalts;

/// The node as request handlers see it.
pub(crate) struct Ctx {
    /// Gestalts, permissions, claims and discovery.
    pub gestalts: Arc<Gestalts>,
    /// The notifications actor.
    pub notifications: Addr<keynode_notify::NotificationsManager>,
    /// The vault storage actor.
    pub vaults: Addr<keynode_vaults::VaultManager>,
    /// The network actor.
    pub network: Addr<NetworkManager<BoxTransport>>,
    /// The audit log actor.
    pub audit: Addr<keynode_audit::AuditManager>,
    /// Re-seals the root key under a new password.
    pub rekey: crate::password::Rekey,
    /// What `agent status` reports.
    pub status: Arc<Mutex<AgentStatus>>,
    /// Cancelled when the agent stops.
    pub shutdown: CancellationToken,
    /// Where blocking work runs.
    pub exec: Exec,
    /// The node's state, for its fill level and backups.
    pub env: keynode_core::store::Env,
    /// The node's root key (backups are signed with it).
    pub key: Arc<keynode_core::Keypair>,
    /// The node path.
    pub paths: crate::paths::NodePaths,
    /// Followed clones: what their remotes announced.
    pub follow: Arc<crate::follow::Following>,
    /// Where to subscribe to vault head changes.
    pub heads: keynode_vaults::HeadEvents,
}

impl Ctx {
    /// This node's id.
    pub fn node_id(&self) -> keynode_core::NodeId {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .node_id
    }
}
