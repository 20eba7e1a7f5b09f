//! The owner's side of following: announcing new heads to followers that may
//! pull them, and to nobody else.

use std::collections::{BTreeMap, BTreeSet};

use actix::Addr;
use keynode_acl::VaultAction;
use keynode_audit::AuditEvent;
use keynode_core::{NodeId, VaultId};
use keynode_net::{RpcStream, WireError, WireErrorKind};
use keynode_vaults::messages as v;
use keynode_vaults::{HeadEvents, VaultManager};
use tokio::sync::broadcast::error::RecvError;

use crate::errors::Ask;
use crate::gestalts::Gestalts;
use crate::protocol::{FollowedHead, MAX_FOLLOWED, PeerRequest, PeerResponse};

/// One `Follow` stream being served to `peer`.
pub(crate) struct Announcing<'a> {
    pub gestalts: &'a Gestalts,
    pub vaults: &'a Addr<VaultManager>,
    pub heads: &'a HeadEvents,
    pub shutdown: &'a tokio_util::sync::CancellationToken,
    pub peer: NodeId,
}

impl Announcing<'_> {
    /// Serves `Follow` until the caller goes away, sends anything, or may
    /// pull none of the vaults any more. The answer returned is the last
    /// frame (an empty `Heads` ends a stream whose vaults were all refused).
    pub(crate) async fn serve(
        &self,
        wanted: Vec<VaultId>,
        stream: &mut RpcStream,
    ) -> Result<PeerResponse, WireError> {
        let unique: BTreeSet<VaultId> = wanted.iter().copied().collect();
        if wanted.len() > MAX_FOLLOWED || unique.len() != wanted.len() {
            return Err(WireError::new(
                WireErrorKind::BadRequest,
                format!("follow at most {MAX_FOLLOWED} vaults, each once"),
            ));
        }
        // Subscribed before the heads are read, so no move falls in between.
        let mut changes = self.heads.subscribe();
        let mut followed = BTreeSet::new();
        let mut first = Vec::with_capacity(unique.len());
        for vault in unique {
            let head = self.head_for_peer(vault).await?;
            if head.is_some() {
                followed.insert(vault);
            }
            first.push(FollowedHead { vault, head });
        }
        send(stream, first).await?;
        stream.quiet();
        while !followed.is_empty() {
            let moved = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                // The caller sends nothing after `Follow`: anything, or the
                // stream's end, closes the subscription.
                _ = stream.recv::<PeerRequest>() => break,
                change = changes.recv() => change,
            };
            let mut latest = BTreeMap::new();
            match moved {
                Ok(change) => {
                    if followed.contains(&change.vault) {
                        latest.insert(change.vault, Some(change.head));
                    }
                    // A burst goes out as one frame, the newest head of each.
                    loop {
                        match changes.try_recv() {
                            Ok(c) if followed.contains(&c.vault) => {
                                latest.insert(c.vault, Some(c.head));
                            }
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                                latest.extend(followed.iter().map(|v| (*v, None)));
                            }
                            Err(_) => break,
                        }
                    }
                }
                // Fell behind: every followed head is read again.
                Err(RecvError::Lagged(_)) => latest.extend(followed.iter().map(|v| (*v, None))),
                Err(RecvError::Closed) => break,
            }
            if latest.is_empty() {
                continue;
            }
            let mut out = Vec::with_capacity(latest.len());
            for (vault, head) in latest {
                let head = match head {
                    // Still permitted? Checked at every announcement, so an
                    // unshare stops them at once.
                    Some(h) if self.may_pull(vault).await? => Some(h),
                    Some(_) => None,
                    None => self.head_for_peer(vault).await?,
                };
                if head.is_none() {
                    followed.remove(&vault);
                }
                out.push(FollowedHead { vault, head });
            }
            send(stream, out).await?;
        }
        Ok(PeerResponse::Heads(Vec::new()))
    }

    async fn may_pull(&self, vault: VaultId) -> Result<bool, WireError> {
        match self
            .gestalts
            .may_vault(self.peer, vault, VaultAction::Pull)
            .await
        {
            Ok(may) => Ok(may),
            Err(e) => Err(self.gestalts.serve_failed(self.peer, "follow", &e).await),
        }
    }

    /// The head of `vault` if the peer may pull it; `None` for "not shared"
    /// and "no such vault" alike.
    async fn head_for_peer(&self, vault: VaultId) -> Result<Option<String>, WireError> {
        if !self.may_pull(vault).await? {
            self.gestalts
                .record(AuditEvent::Refused {
                    peer: self.peer,
                    op: "follow".into(),
                    reason: format!("vault {vault} not shared"),
                })
                .await;
            return Ok(None);
        }
        match self.vaults.ask(v::Advertise { vault }).await {
            Ok(advert) => Ok(Some(advert.head)),
            // Deleted meanwhile: nothing to follow.
            Err(_) => Ok(None),
        }
    }
}

async fn send(stream: &mut RpcStream, heads: Vec<FollowedHead>) -> Result<(), WireError> {
    stream
        .send(&PeerResponse::Heads(heads))
        .await
        .map_err(|_| WireError::new(WireErrorKind::Unavailable, "follower went away"))
}
