//! Claims: the cross-signing exchange that links two nodes (both sides), and
//! identity claims published on a provider.

use keynode_acl::GestaltAction;
use keynode_core::{GestaltId, IdentityId, NodeId, ProviderId};
use keynode_gestalt::messages as graph;
use keynode_gestalt::{
    ClaimBody, ClaimRef, IdentityProvider, OfflineProvider, SignedClaim, accept_countersigned,
    claim_identity, countersign, propose_link,
};
use keynode_net::{RpcStream, WireError, WireErrorKind};

use super::{Gestalts, OFFLINE_PROVIDER};

/// Longest a claim's exchange with the other node may take, either side.
pub const CLAIM_TIMEOUT: std::time::Duration = keynode_net::REQUEST_TIMEOUT;
use crate::api::{ApiError, ErrorKind};
use crate::errors::{Ask, Failure, rpc_failure};
use crate::protocol::{PeerRequest, PeerResponse};

impl Gestalts {
    async fn append_and_link(&self, claim: &SignedClaim, other: NodeId) -> Result<(), ApiError> {
        let _one = self.mutations.lock().await;
        let sigchain = self.sigchain.clone();
        let c = claim.clone();
        let head = keynode_core::exec::blocking(self.exec.as_ref(), move || sigchain.append(&c))
            .await
            .map_err(Failure::api)?
            .map_err(Failure::api)?;
        let proof = ClaimRef {
            chain: self.me,
            seq: head.seq,
            id: claim.claim.id,
        };
        self.link_locked(other, proof).await
    }

    /// Links us with `other` in our graph on the strength of `proof`.
    async fn link_with_proof(&self, other: NodeId, proof: ClaimRef) -> Result<(), ApiError> {
        let _one = self.mutations.lock().await;
        self.link_locked(other, proof).await
    }

    /// [`link_with_proof`](Self::link_with_proof) with the mutation lock held.
    async fn link_locked(&self, other: NodeId, proof: ClaimRef) -> Result<(), ApiError> {
        self.graph
            .ask(graph::LinkNodes {
                a: self.me,
                b: other,
                proof,
            })
            .await?;
        self.route().await
    }

    fn head(&self) -> Result<Option<keynode_gestalt::ChainHead>, ApiError> {
        self.sigchain.head().map_err(Failure::api)
    }

    /// `nodes claim NODE`: the cross-signing exchange with `target` (which must
    /// have granted us `claim`). Both chains end with a claim signed by both,
    /// and both graphs link the two nodes.
    pub async fn claim_node(&self, target: NodeId) -> Result<SignedClaim, ApiError> {
        if target == self.me {
            return Err(ApiError::new(
                ErrorKind::BadData,
                "a node cannot claim itself",
            ));
        }
        let _guard = self.claim_lock.lock().await;
        // A peer that goes silent mid-exchange costs the claim, not the caller.
        let exchange = async {
            let half = propose_link(
                self.head()?.as_ref(),
                &self.key,
                target,
                self.tids.next_id(),
            )
            .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
            let net = self.net()?;
            let mut stream = net.open(target).await.map_err(Failure::api)?;
            let remote = |e: keynode_net::RpcError| rpc_failure(target, e);
            stream
                .send(&PeerRequest::LinkPropose { half: half.clone() })
                .await
                .map_err(remote)?;
            let (countersigned, proposal) = match stream.recv::<PeerResponse>().await {
                Ok(Some(PeerResponse::LinkProposed {
                    countersigned,
                    proposal,
                })) => (countersigned, proposal),
                Ok(None) => {
                    return Err(ApiError::new(
                        ErrorKind::Unreachable,
                        format!("the connection to {target} closed during the claim"),
                    ));
                }
                Ok(_) => {
                    return Err(ApiError::new(
                        ErrorKind::Protocol,
                        format!("{target} answered the claim oddly"),
                    ));
                }
                Err(e) => return Err(remote(e)),
            };
            let full = accept_countersigned(&half, countersigned).map_err(|e| {
                ApiError::new(
                    ErrorKind::Protocol,
                    format!("{target} returned a bad countersignature: {e}"),
                )
            })?;
            match &proposal.claim.body {
                ClaimBody::LinkNode { node1, .. } if *node1 == target => {}
                _ => {
                    return Err(ApiError::new(
                        ErrorKind::Protocol,
                        format!("{target} proposed a claim for another node"),
                    ));
                }
            }
            let theirs = countersign(proposal, &self.key).map_err(|e| {
                ApiError::new(
                    ErrorKind::Protocol,
                    format!("{target}'s proposal is invalid: {e}"),
                )
            })?;
            self.append_and_link(&full, target).await?;
            stream
                .send(&PeerRequest::LinkFinish { full: theirs })
                .await
                .map_err(remote)?;
            match stream.recv::<PeerResponse>().await {
                Ok(Some(PeerResponse::LinkFinished)) => {
                    self.record(keynode_audit::AuditEvent::Claimed { node: target })
                        .await;
                    Ok(full)
                }
                Err(e) => Err(remote(e)),
                Ok(_) => Err(ApiError::new(
                    ErrorKind::Protocol,
                    format!("{target} did not finish the claim"),
                )),
            }
        };
        tokio::time::timeout(CLAIM_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                ApiError::new(
                    ErrorKind::Unreachable,
                    format!("{target} did not finish the claim within {CLAIM_TIMEOUT:?}"),
                )
            })?
    }

    /// Refuses (and records) a `LinkPropose` from a gestalt we did not grant
    /// `claim`.
    async fn check_invited(&self, peer: NodeId) -> Result<(), WireError> {
        match self.has_action(peer, GestaltAction::Claim).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.record(keynode_audit::AuditEvent::Refused {
                    peer,
                    op: "claim".into(),
                    reason: "not invited".into(),
                })
                .await;
                Err(WireError::new(
                    WireErrorKind::PermissionDenied,
                    "not invited to claim this node",
                ))
            }
            Err(e) => Err(self.serve_failed(peer, "claim", &e).await),
        }
    }

    /// Serves a peer's `LinkPropose`: only a gestalt we granted `claim` may link
    /// itself to us.
    pub(crate) async fn serve_link(
        &self,
        peer: NodeId,
        half: SignedClaim,
        stream: &mut RpcStream,
    ) -> Result<PeerResponse, WireError> {
        // Uninvited callers are refused without waiting for the claim lock;
        // the check is repeated under it, where the invitation is spent, so
        // one invitation cannot serve two proposals.
        self.check_invited(peer).await?;
        let _guard = self.claim_lock.lock().await;
        self.check_invited(peer).await?;
        let bad = |what: &'static str| WireError::new(WireErrorKind::BadRequest, what);
        match &half.claim.body {
            ClaimBody::LinkNode { node1, .. } if *node1 == peer => {}
            _ => return Err(bad("the claim must be the caller's")),
        }
        let countersigned = countersign(half, &self.key).map_err(|_| bad("invalid claim"))?;
        // What we sign is visible here before it leaves: the peer holds a claim
        // signed by both of us from the moment it has the countersignature,
        // whether or not it finishes, so our graph links it (the proof: its
        // claim, at its position in its chain) and the audit log says so.
        let theirs = ClaimRef {
            chain: peer,
            seq: countersigned.claim.seq,
            id: countersigned.claim.id,
        };
        if let Err(e) = self.link_with_proof(peer, theirs).await {
            return Err(self.serve_failed(peer, "claim", &e).await);
        }
        // An invitation is good for one countersignature, spent as it is
        // issued: a claimer that stops here cannot come back for another.
        if let Err(e) = self
            .disallow(&GestaltId::Node(peer), GestaltAction::Claim)
            .await
        {
            return Err(self.serve_failed(peer, "claim", &e).await);
        }
        self.record(keynode_audit::AuditEvent::Countersigned { node: peer })
            .await;
        let proposal = self
            .sigchain
            .head()
            .map_err(|e| e.to_string())
            .and_then(|head| {
                propose_link(head.as_ref(), &self.key, peer, self.tids.next_id())
                    .map_err(|e| e.to_string())
            });
        let proposal = match proposal {
            Ok(p) => p,
            Err(e) => return Err(self.serve_failed(peer, "claim", &e).await),
        };
        stream
            .send(&PeerResponse::LinkProposed {
                countersigned,
                proposal: proposal.clone(),
            })
            .await
            .map_err(|_| bad("stream failed"))?;
        let full = match tokio::time::timeout(CLAIM_TIMEOUT, stream.recv::<PeerRequest>()).await {
            Ok(Ok(Some(PeerRequest::LinkFinish { full }))) => full,
            Err(_) => return Err(bad("no LinkFinish in time")),
            _ => return Err(bad("expected LinkFinish")),
        };
        let full =
            accept_countersigned(&proposal, full).map_err(|_| bad("invalid countersignature"))?;
        if let Err(e) = self.append_and_link(&full, peer).await {
            return Err(self.serve_failed(peer, "claim", &e).await);
        }
        self.record(keynode_audit::AuditEvent::Claimed { node: peer })
            .await;
        Ok(PeerResponse::LinkFinished)
    }

    /// Serves a peer's `Chain` request.
    pub(crate) async fn serve_chain(
        &self,
        peer: NodeId,
        after: Option<u64>,
    ) -> Result<Vec<SignedClaim>, WireError> {
        let sigchain = self.sigchain.clone();
        let read =
            keynode_core::exec::blocking(self.exec.as_ref(), move || sigchain.claims_after(after))
                .await;
        match read {
            Ok(Ok(claims)) => Ok(claims),
            Ok(Err(e)) => Err(self.serve_failed(peer, "chain", &e).await),
            Err(e) => Err(self.serve_failed(peer, "chain", &e).await),
        }
    }

    /// The identity provider called `provider`.
    pub fn provider(&self, provider: &ProviderId) -> Result<&OfflineProvider, ApiError> {
        if provider.as_str() == OFFLINE_PROVIDER {
            Ok(&self.provider)
        } else {
            Err(ApiError::new(
                ErrorKind::NotFound,
                format!("unknown identity provider {provider}; available: {OFFLINE_PROVIDER}"),
            ))
        }
    }

    /// `identities claim PROVIDER:IDENTITY`: a claim in our chain, published on
    /// the provider, and the link in our graph.
    pub async fn claim_identity(
        &self,
        provider: ProviderId,
        identity: IdentityId,
    ) -> Result<SignedClaim, ApiError> {
        let p = self.provider(&provider)?.clone();
        p.authenticate(&identity)
            .await
            .map_err(|e| ApiError::new(ErrorKind::Unavailable, e.to_string()))?;
        let _guard = self.claim_lock.lock().await;
        let claim = claim_identity(
            self.head()?.as_ref(),
            &self.key,
            provider.clone(),
            identity.clone(),
            self.tids.next_id(),
        )
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
        let sigchain = self.sigchain.clone();
        let c = claim.clone();
        let head = keynode_core::exec::blocking(self.exec.as_ref(), move || sigchain.append(&c))
            .await
            .map_err(Failure::api)?
            .map_err(Failure::api)?;
        p.publish(&identity, &claim)
            .await
            .map_err(|e| ApiError::new(ErrorKind::Unavailable, e.to_string()))?;
        let proof = ClaimRef {
            chain: self.me,
            seq: head.seq,
            id: claim.claim.id,
        };
        let _one = self.mutations.lock().await;
        self.graph
            .ask(graph::LinkIdentity {
                node: self.me,
                provider,
                identity,
                proof,
            })
            .await?;
        self.route().await?;
        Ok(claim)
    }
}
