//! Gestalts that grow: when a node joins a gestalt that vaults are shared
//! with, the owners of those shares learn it without a command on their side.
//!
//! - **The member** whose chain gained a node link (either side of `nodes
//!   claim`) tells the owners it knows of: the senders of the VaultShares in
//!   its inbox and the remotes of its clones (`PeerRequest::GestaltGrew`). The
//!   hint names the gestalt's nodes and, for those in the member's address
//!   book, where they listen.
//! - **The owner** never trusts the hint: from a node it already knows, at
//!   most once per [`HINT_INTERVAL`], it re-discovers that node's gestalt
//!   itself (every claim verified). Grants follow the gestalt as always (a
//!   link merges the permission records); each node that joined gets the
//!   VaultShare of every vault its gestalt may clone, and a hinted address
//!   for a joined node the owner could not reach otherwise is kept as
//!   `learned` (the Noise handshake proves whoever answers there).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix::Addr;
use keynode_acl::VaultAction;
use keynode_core::{GestaltId, NodeId};
use keynode_net::{AddressSource, PeerAddress};
use keynode_notify::{NotificationData, NotificationsManager};
use keynode_vaults::VaultManager;
use serde::{Deserialize, Serialize};

use crate::errors::Ask;
use crate::gestalts::Gestalts;
use crate::protocol::{PeerRequest, PeerResponse};

/// Most members one hint names.
pub const MAX_HINTED_MEMBERS: usize = 16;
/// Most addresses a hint gives for one member.
pub const MAX_HINTED_ADDRESSES: usize = 4;
/// An owner re-discovers a hinting node's gestalt at most this often.
pub const HINT_INTERVAL: Duration = Duration::from_secs(10);
/// Most hinting nodes remembered for the interval (the oldest are forgotten).
const HINTERS: usize = 1024;
/// Most owners told at once.
const TELL_PARALLEL: usize = 8;

/// A node of the hinting node's gestalt, and where it may listen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHint {
    /// The node.
    pub node: NodeId,
    /// Where the hinting node reaches it (host, port); a dial hint only.
    pub addresses: Vec<(String, u16)>,
}

/// When each node last made this owner re-discover.
#[derive(Debug, Default)]
pub(crate) struct Hints {
    last: Mutex<HashMap<NodeId, Instant>>,
}

impl Hints {
    /// Whether a hint from `peer` now may start a discovery.
    fn admit(&self, peer: NodeId) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last
            .get(&peer)
            .is_some_and(|t| now.duration_since(*t) < HINT_INTERVAL)
        {
            return false;
        }
        if last.len() >= HINTERS {
            last.retain(|_, t| now.duration_since(*t) < HINT_INTERVAL);
            if last.len() >= HINTERS {
                return false;
            }
        }
        last.insert(peer, now);
        true
    }
}

/// Member side: our gestalt gained a node; tells every owner we know of.
pub(crate) async fn tell_owners(
    gestalts: &Gestalts,
    notifications: &Addr<NotificationsManager>,
    vaults: &Addr<VaultManager>,
) {
    use futures_util::StreamExt;
    let Ok(net) = gestalts.network() else {
        return;
    };
    let mut owners = match notifications
        .ask(keynode_notify::messages::InboxSenders {
            kind: "vault-share",
        })
        .await
    {
        Ok(o) => o,
        Err(e) => {
            tracing::debug!(error = %e.message, "cannot read the inbox for owners");
            BTreeSet::new()
        }
    };
    if let Ok(list) = vaults.ask(keynode_vaults::messages::ListVaults {}).await {
        owners.extend(list.into_iter().filter_map(|m| m.remote.map(|r| r.node)));
    }
    let me = gestalts.me();
    owners.remove(&me);
    if owners.is_empty() {
        return;
    }
    let members: Vec<MemberHint> = gestalts
        .gestalt_nodes(&GestaltId::Node(me))
        .await
        .into_iter()
        .filter(|n| *n != me)
        .take(MAX_HINTED_MEMBERS)
        .map(|node| MemberHint {
            node,
            addresses: net
                .book()
                .get(node)
                .unwrap_or_default()
                .into_iter()
                .take(MAX_HINTED_ADDRESSES)
                .map(|a| (a.host, a.port))
                .collect(),
        })
        .collect();
    let request = PeerRequest::GestaltGrew { members };
    futures_util::stream::iter(owners)
        .for_each_concurrent(TELL_PARALLEL, |owner| {
            let request = &request;
            async move {
                let told: Result<PeerResponse, _> = net.call(owner, request).await;
                match told {
                    Ok(_) => tracing::debug!(%owner, "told an owner our gestalt grew"),
                    Err(e) => tracing::debug!(%owner, error = %e, "could not tell an owner our gestalt grew"),
                }
            }
        })
        .await;
}

/// Owner side: `peer` says its gestalt grew. Re-discovers it (the hint only
/// says when), then shares with the nodes that joined.
pub(crate) async fn on_hint(
    gestalts: &Gestalts,
    notifications: &Addr<NotificationsManager>,
    vaults: &Addr<VaultManager>,
    peer: NodeId,
    members: Vec<MemberHint>,
) {
    if members.len() > MAX_HINTED_MEMBERS || !gestalts.knows(peer).await {
        return;
    }
    if !gestalts.hints().admit(peer) {
        tracing::debug!(%peer, "a growth hint within the interval; ignored");
        return;
    }
    let id = GestaltId::Node(peer);
    let before = gestalts.gestalt_nodes(&id).await;
    if let Err(e) = gestalts.discover(id.clone()).await {
        tracing::debug!(%peer, error = %e.message, "re-discovery after a growth hint failed");
        return;
    }
    let after = gestalts.gestalt_nodes(&id).await;
    let joined: Vec<NodeId> = after.difference(&before).copied().collect();
    if joined.is_empty() {
        return;
    }
    tracing::info!(%peer, joined = joined.len(), "a gestalt with shares grew");
    if let Ok(net) = gestalts.network() {
        for hint in members.iter().filter(|h| joined.contains(&h.node)) {
            if !net.book().get(hint.node).unwrap_or_default().is_empty() {
                continue;
            }
            for (host, port) in hint.addresses.iter().take(MAX_HINTED_ADDRESSES) {
                let addr = PeerAddress::new(host.clone(), *port);
                if let Err(e) = net.book().add_from(hint.node, addr, AddressSource::Learned) {
                    tracing::debug!(node = %hint.node, error = %e, "a hinted address was refused");
                }
            }
        }
    }
    share_with_joined(gestalts, notifications, vaults, &id, &joined).await;
}

/// Sends the nodes that joined `id`'s gestalt the VaultShare of every vault
/// the gestalt may clone, listing what it holds.
async fn share_with_joined(
    gestalts: &Gestalts,
    notifications: &Addr<NotificationsManager>,
    vaults: &Addr<VaultManager>,
    id: &GestaltId,
    joined: &[NodeId],
) {
    let Ok(perm) = gestalts.permission(id).await else {
        return;
    };
    let scan = perm.gestalt.contains(&keynode_acl::GestaltAction::Scan);
    for (vault, actions) in &perm.vaults {
        if !actions.contains(&VaultAction::Clone) {
            continue;
        }
        let Ok(meta) = vaults
            .ask(keynode_vaults::messages::GetVault { vault: *vault })
            .await
        else {
            continue;
        };
        let mut listed: Vec<String> = actions.iter().map(ToString::to_string).collect();
        if scan {
            listed.push("scan".into());
        }
        let data = NotificationData::VaultShare {
            vault: *vault,
            name: meta.name.clone(),
            actions: listed,
        };
        for node in joined {
            let sent = notifications
                .ask(keynode_notify::messages::Send {
                    to: *node,
                    data: data.clone(),
                })
                .await;
            if let Err(e) = sent {
                tracing::warn!(%node, error = %e.message, "cannot queue a VaultShare for a new member");
            }
        }
    }
}
