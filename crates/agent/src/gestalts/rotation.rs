//! Key renewal as the gestalts see it: applying a rotation claim (ours at the
//! first start with a renewed key, a peer's when it announces one), and
//! refusing a renewed key as itself.

use keynode_core::{GestaltId, NodeId};
use keynode_gestalt::messages as graph;
use keynode_gestalt::{ClaimBody, ClaimRef, RotationOutcome, SignedClaim, verify_claim};

use super::Gestalts;
use crate::api::{ApiError, ErrorKind};
use crate::errors::Ask;

impl Gestalts {
    /// A known peer listens on `port` at the address its inbound connection
    /// comes from: recorded as a learned address (latest first), so a node
    /// that moved is dialed where it is now. A stranger's claim, a port 0 and
    /// a peer without an inbound connection are ignored.
    pub(crate) async fn note_listen_address(&self, peer: NodeId, port: u16) {
        if port == 0 || !self.knows(peer).await {
            return;
        }
        let Ok(net) = self.network() else { return };
        let Some(conn) = net
            .connections()
            .into_iter()
            .find(|c| c.node_id == peer && c.direction == keynode_net::Direction::Inbound)
        else {
            return;
        };
        let addr = keynode_net::PeerAddress::new(conn.remote_addr.ip().to_string(), port);
        let book = net.book().clone();
        let noted = keynode_core::exec::blocking(self.exec().as_ref(), move || {
            book.add_from(peer, addr, keynode_net::AddressSource::Learned)
        })
        .await;
        if !matches!(noted, Ok(Ok(()))) {
            tracing::debug!(%peer, "could not record a learned address");
        }
    }

    /// Every node this node knows: the graph's nodes and the address book's.
    pub(crate) async fn known_nodes(&self) -> Result<Vec<NodeId>, ApiError> {
        let mut out: Vec<NodeId> = Vec::new();
        for g in self.graph.ask(graph::Gestalts {}).await? {
            for m in g.members() {
                if let GestaltId::Node(n) = m {
                    out.push(n);
                }
            }
        }
        if let Ok(net) = self.network() {
            let book = net.book().clone();
            if let Ok(Ok(entries)) =
                keynode_core::exec::blocking(self.exec().as_ref(), move || book.list()).await
            {
                out.extend(entries.into_iter().map(|(n, _)| n));
            }
        }
        out.sort();
        out.dedup();
        out.retain(|n| *n != self.me);
        Ok(out)
    }

    /// `nodes revoke`: `node`'s key is refused from now on (a key that may be
    /// stolen; its owner brings a new key in with an invitation and a claim).
    pub async fn revoke(&self, node: NodeId) -> Result<RotationOutcome, ApiError> {
        if node == self.me {
            return Err(ApiError::new(
                ErrorKind::BadData,
                "a node cannot revoke its own key (renew it: `keys renew`)",
            ));
        }
        let outcome = self.graph.ask(graph::Revoke { node }).await?;
        if outcome == RotationOutcome::Recorded {
            self.record(keynode_audit::AuditEvent::Revoked { node })
                .await;
        }
        Ok(outcome)
    }

    /// Whether `node`'s key was renewed: it is refused as itself (no
    /// permission, a stranger on the network).
    pub async fn is_renewed(&self, node: NodeId) -> bool {
        matches!(self.graph.ask(graph::RotatedTo { node }).await, Ok(Some(_)))
    }

    /// Applies `claim`, a rotation of `old`'s key to `new`, announced by
    /// `announced_by` (the authenticated peer, which must be `new`; or this
    /// node at its first start with the renewed key): after checking both
    /// signatures and that `old` is a node this one knows, links `old`–`new`
    /// (so `new` holds every grant of the gestalt), records the rotation (so
    /// `old` is refused from now on) and audits it. A replay is
    /// [`RotationOutcome::Known`] and changes nothing; a second rotation of
    /// `old` to another key is refused.
    pub async fn apply_rotation(
        &self,
        claim: &SignedClaim,
        announced_by: NodeId,
    ) -> Result<(NodeId, NodeId, RotationOutcome), ApiError> {
        let bad = |why: &str| ApiError::new(ErrorKind::BadData, why.to_owned());
        let ClaimBody::Rotate { old, new } = claim.claim.body else {
            return Err(bad("not a rotation claim"));
        };
        verify_claim(old, claim).map_err(|e| bad(&format!("invalid rotation: {e}")))?;
        if announced_by != new {
            return Err(ApiError::new(
                ErrorKind::PermissionDenied,
                "a rotation is announced by its new key only",
            ));
        }
        let known = self
            .graph
            .ask(graph::GestaltOf {
                id: GestaltId::Node(old),
            })
            .await?
            .is_some();
        if !known && old != self.me && new != self.me {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!("no record of {old} here: its rotation is not for this node"),
            ));
        }
        if self.is_renewed(new).await {
            return Err(bad("the new key was itself renewed"));
        }
        let _one = self.mutations.lock().await;
        let outcome = self.graph.ask(graph::RecordRotation { old, new }).await?;
        match outcome {
            RotationOutcome::Conflict { earlier } => {
                self.record(keynode_audit::AuditEvent::Refused {
                    peer: announced_by,
                    op: "rotation".into(),
                    reason: format!("{old} was renewed as {earlier} before"),
                })
                .await;
                return Err(ApiError::new(
                    ErrorKind::Conflict,
                    format!("{old} was renewed as another key before"),
                ));
            }
            RotationOutcome::Known => {}
            RotationOutcome::Recorded => {
                self.graph
                    .ask(graph::LinkNodes {
                        a: old,
                        b: new,
                        proof: ClaimRef::of(new, claim),
                    })
                    .await?;
                self.route().await?;
                self.record(keynode_audit::AuditEvent::KeyRotated { old, new })
                    .await;
            }
        }
        Ok((old, new, outcome))
    }
}
