//! Verifying a fetched sigchain, as a plain function.

use keynode_core::{IdentityId, NodeId, ProviderId, Tid};
use serde::{Deserialize, Serialize};

use crate::claims::{ChainHead, ClaimBody, ClaimError, SignedClaim, verify_claim};

/// Where a proof lives: one entry of one node's sigchain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClaimRef {
    /// The chain owner.
    pub chain: NodeId,
    /// The entry's position.
    pub seq: u64,
    /// The claim's id.
    pub id: Tid,
}

impl ClaimRef {
    /// The reference to `claim` in `chain`.
    pub fn of(chain: NodeId, claim: &SignedClaim) -> ClaimRef {
        ClaimRef {
            chain,
            seq: claim.claim.seq,
            id: claim.claim.id,
        }
    }
}

/// What a verified chain entry proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifiedLink {
    /// Two nodes are linked (signed by both).
    Node {
        /// The chain owner.
        owner: NodeId,
        /// The other node.
        other: NodeId,
        /// The proof.
        claim: ClaimRef,
    },
    /// The node claims an identity (signed by the node). The link enters the
    /// graph only once the identity's provider shows the claim published.
    Identity {
        /// The chain owner.
        node: NodeId,
        /// The provider.
        provider: ProviderId,
        /// The identity.
        identity: IdentityId,
        /// The proof.
        claim: ClaimRef,
    },
    /// The chain passed from `old` to `new` (a key renewal, signed by both);
    /// it links the two as a node link does.
    Rotation {
        /// The owner before.
        old: NodeId,
        /// The owner after.
        new: NodeId,
        /// The proof.
        claim: ClaimRef,
    },
}

/// A fetched chain was refused. Nothing of it may be used.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// An entry is not at the expected position: a gap, a missing first entry, a
    /// reordered or truncated chain.
    #[error("expected claim {expected}, found claim {found}")]
    Sequence {
        /// The seq expected.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// An entry's `prev` is not the hash of the entry before it.
    #[error("claim {seq} does not link to the claim before it")]
    BrokenLink {
        /// The entry.
        seq: u64,
    },
    /// The chain's rotations do not end at the node it is the chain of.
    #[error("the chain ends as {ends}'s, not {owner}'s")]
    NotOwnersChain {
        /// The node whose chain it should be.
        owner: NodeId,
        /// Whose it is after its rotations.
        ends: NodeId,
    },
    /// An entry breaks a claim rule (signatures, owner).
    #[error("claim {seq}: {source}")]
    Claim {
        /// The entry.
        seq: u64,
        /// Why.
        #[source]
        source: ClaimError,
    },
}

/// Verifies the entries of `owner`'s chain that follow `after` (the last entry
/// already verified, or `None` for the whole chain): contiguous `seq` from
/// `after.seq + 1` (or 0), every `prev` the hash of the entry before it, and every
/// claim valid for `owner` ([`verify_claim`]: a node link names `owner` as
/// `node1` and is signed by exactly both nodes; an identity link names `owner`
/// and is signed by it). Returns what the entries prove, in chain order; the new
/// head is [`SignedClaim::head`] of the last entry.
///
/// A chain that went through key renewals holds [`ClaimBody::Rotate`] claims:
/// read whole (`after` is `None`), it starts as its first claim's owner's,
/// passes to each rotation's `new` (signed by the owner it passes from and the
/// one it passes to), and must end as `owner`'s. Read from `after`, it is
/// `owner`'s at `after` (that is how it was verified before).
pub fn verify_chain(
    owner: NodeId,
    claims: &[SignedClaim],
    after: Option<&ChainHead>,
) -> Result<Vec<VerifiedLink>, ChainError> {
    let (mut expected, mut prev) = crate::claims::next_position(after);
    let rotates = claims
        .iter()
        .any(|c| matches!(c.claim.body, ClaimBody::Rotate { .. }));
    let mut current = match (after, claims.first()) {
        (None, Some(first)) if rotates => first.claim.body.owner(),
        _ => owner,
    };
    let mut out = Vec::with_capacity(claims.len());
    for c in claims {
        let seq = c.claim.seq;
        if seq != expected {
            return Err(ChainError::Sequence {
                expected,
                found: seq,
            });
        }
        if c.claim.prev != prev {
            return Err(ChainError::BrokenLink { seq });
        }
        let fail = |source| ChainError::Claim { seq, source };
        verify_claim(current, c).map_err(fail)?;
        let claim = ClaimRef::of(current, c);
        out.push(match &c.claim.body {
            ClaimBody::LinkNode { node2, .. } => VerifiedLink::Node {
                owner: current,
                other: *node2,
                claim,
            },
            ClaimBody::LinkIdentity {
                provider, identity, ..
            } => VerifiedLink::Identity {
                node: current,
                provider: provider.clone(),
                identity: identity.clone(),
                claim,
            },
            ClaimBody::Rotate { old, new } => {
                let link = VerifiedLink::Rotation {
                    old: *old,
                    new: *new,
                    claim,
                };
                current = *new;
                link
            }
        });
        prev = Some(c.hash().map_err(fail)?);
        expected = seq + 1;
    }
    if current != owner {
        return Err(ChainError::NotOwnersChain {
            owner,
            ends: current,
        });
    }
    Ok(out)
}
