//! Claims and cross-signing, as plain functions (no I/O, no clock).
//!
//! A [`Claim`] is one entry of a node's [sigchain](crate::Sigchain): its position
//! (`seq`, and `prev`, the [hash](SignedClaim::hash) of the previous entry), an
//! id, and a [`ClaimBody`]. Signatures cover [`CLAIM_SIGNING_PREFIX`] followed by
//! the codec encoding of the claim, so a claim signature can never be confused
//! with any other keynode signature.
//!
//! # Linking two nodes (the exchange the agent runs)
//!
//! A node–node link is two claims, one in each chain, each signed by both nodes.
//! With A the claimer (`nodes claim B`) and B the target (which must have granted
//! A's gestalt `claim`):
//!
//! 1. A: `half_a = propose_link(A.head, a_key, B, id)` (signed by A) and sends it
//!    to B.
//! 2. B checks that A may claim, then `full_a = countersign(half_a, b_key)?`
//!    (verifies A's signature and that the claim names B as `node2`), and
//!    `half_b = propose_link(B.head, b_key, A, id)`. B replies `(full_a, half_b)`:
//!    one round trip carries both claims.
//! 3. A: `accept_countersigned(&half_a, full_a)?` (same claim, both signatures
//!    valid), appends it to its own chain, then
//!    `full_b = countersign(half_b, a_key)?` and sends `full_b` to B.
//! 4. B: `accept_countersigned(&half_b, full_b)?` and appends it to its chain.
//!
//! Either chain's claim alone proves the link (it carries both signatures), so a
//! lost final message leaves a valid, one-sided proof; B may re-propose later.
//! A [`Sigchain`](crate::Sigchain) refuses a claim whose `seq`/`prev` no longer
//! match its head (another append won the race): the proposer starts over.
//!
//! # Linking a node and an identity
//!
//! The node makes `claim_identity(head, key, provider, identity, id)`, appends it
//! to its chain, and publishes it on the provider under that identity
//! ([`IdentityProvider::publish`](crate::IdentityProvider::publish)). The node's
//! signature proves the node's consent; publication by the identity proves the
//! identity's.

use keynode_core::codec::{self, CodecError};
use keynode_core::{IdentityId, Keypair, NodeId, ProviderId, Signature, Tid};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of every signed claim message (domain separation).
pub const CLAIM_SIGNING_PREFIX: &[u8] = b"keynode/claim/v1\0";
/// Prefix of every claim hash input (domain separation).
pub const CLAIM_HASH_PREFIX: &[u8] = b"keynode/claim-hash/v1\0";

/// SHA-256 of [`CLAIM_HASH_PREFIX`] ‖ the codec encoding of a [`SignedClaim`].
pub type ClaimHash = [u8; 32];

/// What a claim states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimBody {
    /// Two nodes belong to one gestalt. In `node1`'s chain; signed by both.
    LinkNode {
        /// The chain owner.
        node1: NodeId,
        /// The other node.
        node2: NodeId,
    },
    /// A node and an identity belong to one gestalt. In `node`'s chain, signed by
    /// it, and published by the identity on its provider.
    LinkIdentity {
        /// The chain owner.
        node: NodeId,
        /// The identity's provider.
        provider: ProviderId,
        /// The identity.
        identity: IdentityId,
    },
    /// The chain passes from `old` to `new`: the node renewed its key. Signed
    /// by both (the old key consents, the new one is held). Claims before it
    /// in the chain are `old`'s, claims after it `new`'s; it also links the
    /// two, so the gestalt stays whole.
    Rotate {
        /// The chain owner until this claim.
        old: NodeId,
        /// The chain owner from this claim on.
        new: NodeId,
    },
}

impl ClaimBody {
    /// The node that owns the chain at this claim (for a rotation, the node it
    /// passes from).
    pub fn owner(&self) -> NodeId {
        match self {
            ClaimBody::LinkNode { node1, .. } => *node1,
            ClaimBody::LinkIdentity { node, .. } => *node,
            ClaimBody::Rotate { old, .. } => *old,
        }
    }
}

/// One sigchain entry, before signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Position in the chain, from 0, contiguous.
    pub seq: u64,
    /// Hash of the previous entry; `None` only at `seq` 0.
    pub prev: Option<ClaimHash>,
    /// When it was made, in milliseconds since the Unix epoch (from `id`).
    pub issued_ms: u64,
    /// Its id (time-sortable).
    pub id: Tid,
    /// What it states.
    pub body: ClaimBody,
}

impl Claim {
    /// The bytes every signature covers: [`CLAIM_SIGNING_PREFIX`] ‖ encoding.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, ClaimError> {
        let mut out = CLAIM_SIGNING_PREFIX.to_vec();
        out.extend(codec::encode(self)?);
        Ok(out)
    }
}

/// A claim with the signatures of the nodes it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedClaim {
    /// The claim.
    pub claim: Claim,
    /// Who signed it, in signing order.
    pub signatures: Vec<(NodeId, Signature)>,
}

impl SignedClaim {
    /// The hash the next entry's `prev` must carry.
    pub fn hash(&self) -> Result<ClaimHash, ClaimError> {
        let mut h = Sha256::new();
        h.update(CLAIM_HASH_PREFIX);
        h.update(codec::encode(self)?);
        Ok(h.finalize().into())
    }

    /// The chain head this entry makes.
    pub fn head(&self) -> Result<ChainHead, ClaimError> {
        Ok(ChainHead {
            seq: self.claim.seq,
            hash: self.hash()?,
        })
    }

    /// Whether `node` is among the signers (not checking the signature).
    pub fn signed_by(&self, node: &NodeId) -> bool {
        self.signatures.iter().any(|(n, _)| n == node)
    }
}

/// The last entry of a chain: its position and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// The entry's `seq`.
    pub seq: u64,
    /// The entry's hash.
    pub hash: ClaimHash,
}

/// A claim was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Encoding failed.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// A signature does not verify.
    #[error("bad signature by {0}")]
    BadSignature(NodeId),
    /// A required signature is missing.
    #[error("claim is not signed by {0}")]
    MissingSignature(NodeId),
    /// Signed by a node the claim does not name, or twice by one node.
    #[error("claim has an unexpected or duplicate signature by {0}")]
    UnexpectedSigner(NodeId),
    /// The claim is about another chain owner.
    #[error("claim belongs to {named}'s chain, not {owner}'s")]
    NotOwner {
        /// The chain it was presented in.
        owner: NodeId,
        /// The owner it names.
        named: NodeId,
    },
    /// A node linked to itself.
    #[error("a node cannot link to itself")]
    SelfLink,
    /// Countersigning a claim that is not a node link.
    #[error("only node links are countersigned")]
    NotANodeLink,
    /// The claim does not name the countersigner as `node2`.
    #[error("claim names {named} as the other node, not {signer}")]
    NotForSigner {
        /// The node it names.
        named: NodeId,
        /// Who was asked to sign.
        signer: NodeId,
    },
    /// The countersigned claim is not the one proposed.
    #[error("the countersigned claim differs from the one proposed")]
    Altered,
}

/// The position of the next entry after `head`.
pub fn next_position(head: Option<&ChainHead>) -> (u64, Option<ClaimHash>) {
    match head {
        Some(h) => (h.seq + 1, Some(h.hash)),
        None => (0, None),
    }
}

fn sign_new(
    head: Option<&ChainHead>,
    key: &Keypair,
    id: Tid,
    body: ClaimBody,
) -> Result<SignedClaim, ClaimError> {
    let (seq, prev) = next_position(head);
    let claim = Claim {
        seq,
        prev,
        issued_ms: id.timestamp_ms(),
        id,
        body,
    };
    let sig = key.sign(&claim.signing_bytes()?);
    Ok(SignedClaim {
        claim,
        signatures: vec![(key.node_id(), sig)],
    })
}

/// The proposer's half of a node link for its own chain (after `head`), linking
/// `key`'s node to `other`, signed by the proposer only.
pub fn propose_link(
    head: Option<&ChainHead>,
    key: &Keypair,
    other: NodeId,
    id: Tid,
) -> Result<SignedClaim, ClaimError> {
    let me = key.node_id();
    if me == other {
        return Err(ClaimError::SelfLink);
    }
    sign_new(
        head,
        key,
        id,
        ClaimBody::LinkNode {
            node1: me,
            node2: other,
        },
    )
}

/// A node–identity claim for `key`'s chain (after `head`), signed by the node.
pub fn claim_identity(
    head: Option<&ChainHead>,
    key: &Keypair,
    provider: ProviderId,
    identity: IdentityId,
    id: Tid,
) -> Result<SignedClaim, ClaimError> {
    let node = key.node_id();
    sign_new(
        head,
        key,
        id,
        ClaimBody::LinkIdentity {
            node,
            provider,
            identity,
        },
    )
}

/// The target's countersignature: checks that `claim` is a node link naming
/// `key`'s node as `node2`, signed (validly) by `node1` and by nobody else, then
/// adds `key`'s signature.
pub fn countersign(mut claim: SignedClaim, key: &Keypair) -> Result<SignedClaim, ClaimError> {
    let me = key.node_id();
    let ClaimBody::LinkNode { node1, node2 } = claim.claim.body else {
        return Err(ClaimError::NotANodeLink);
    };
    if node2 != me {
        return Err(ClaimError::NotForSigner {
            named: node2,
            signer: me,
        });
    }
    if node1 == node2 {
        return Err(ClaimError::SelfLink);
    }
    let msg = claim.claim.signing_bytes()?;
    check_signatures(&claim, &msg, &[node1])?;
    claim.signatures.push((me, key.sign(&msg)));
    Ok(claim)
}

/// The proposer's check of a countersigned claim: it is the claim proposed
/// (same content) and now validly signed by both nodes.
pub fn accept_countersigned(
    proposed: &SignedClaim,
    returned: SignedClaim,
) -> Result<SignedClaim, ClaimError> {
    if returned.claim != proposed.claim {
        return Err(ClaimError::Altered);
    }
    let owner = match &proposed.claim.body {
        ClaimBody::LinkNode { node1, .. } => *node1,
        ClaimBody::LinkIdentity { .. } | ClaimBody::Rotate { .. } => {
            return Err(ClaimError::NotANodeLink);
        }
    };
    verify_claim(owner, &returned)?;
    Ok(returned)
}

/// Checks that the signers are exactly `required` (no missing, extra or
/// duplicate signer) and that every signature verifies over `msg`.
fn check_signatures(
    claim: &SignedClaim,
    msg: &[u8],
    required: &[NodeId],
) -> Result<(), ClaimError> {
    for (i, (node, sig)) in claim.signatures.iter().enumerate() {
        if !required.contains(node) || claim.signatures[..i].iter().any(|(n, _)| n == node) {
            return Err(ClaimError::UnexpectedSigner(*node));
        }
        node.verify(msg, sig)
            .map_err(|_| ClaimError::BadSignature(*node))?;
    }
    for node in required {
        if !claim.signed_by(node) {
            return Err(ClaimError::MissingSignature(*node));
        }
    }
    Ok(())
}

/// The rotation of `old`'s chain to `new` (the node renewing its key), at the
/// position after `head`, signed by both keys.
pub fn rotate(
    head: Option<&ChainHead>,
    old: &Keypair,
    new: &Keypair,
    id: Tid,
) -> Result<SignedClaim, ClaimError> {
    let (seq, prev) = next_position(head);
    let claim = Claim {
        seq,
        prev,
        issued_ms: id.timestamp_ms(),
        id,
        body: ClaimBody::Rotate {
            old: old.node_id(),
            new: new.node_id(),
        },
    };
    let msg = claim.signing_bytes()?;
    let signatures = vec![
        (old.node_id(), old.sign(&msg)),
        (new.node_id(), new.sign(&msg)),
    ];
    Ok(SignedClaim { claim, signatures })
}

/// The claim-level rules for an entry of `owner`'s chain (its position is checked
/// by [`verify_chain`](crate::verify_chain)): a node link names `owner` as
/// `node1`, another node as `node2`, and is signed by exactly both; an identity
/// link names `owner` as its node and is signed by exactly it; a rotation
/// names `owner` as `old`, another node as `new`, and is signed by exactly
/// both.
pub fn verify_claim(owner: NodeId, claim: &SignedClaim) -> Result<(), ClaimError> {
    let required: Vec<NodeId> = match &claim.claim.body {
        ClaimBody::LinkNode { node1, node2 } => {
            if *node1 != owner {
                return Err(ClaimError::NotOwner {
                    owner,
                    named: *node1,
                });
            }
            if node1 == node2 {
                return Err(ClaimError::SelfLink);
            }
            vec![*node1, *node2]
        }
        ClaimBody::LinkIdentity { node, .. } => {
            if *node != owner {
                return Err(ClaimError::NotOwner {
                    owner,
                    named: *node,
                });
            }
            vec![*node]
        }
        ClaimBody::Rotate { old, new } => {
            if *old != owner {
                return Err(ClaimError::NotOwner { owner, named: *old });
            }
            if old == new {
                return Err(ClaimError::SelfLink);
            }
            vec![*old, *new]
        }
    };
    check_signatures(claim, &claim.claim.signing_bytes()?, &required)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keynode_core::{SystemClock, TidGenerator};

    #[test]
    fn the_exchange_produces_two_doubly_signed_claims() {
        let tids = TidGenerator::new(SystemClock);
        let (a, b) = (Keypair::generate(), Keypair::generate());
        let half_a = propose_link(None, &a, b.node_id(), tids.next_id()).unwrap();
        let full_a = countersign(half_a.clone(), &b).unwrap();
        let half_b = propose_link(None, &b, a.node_id(), tids.next_id()).unwrap();
        let full_a = accept_countersigned(&half_a, full_a).unwrap();
        let full_b =
            accept_countersigned(&half_b, countersign(half_b.clone(), &a).unwrap()).unwrap();
        verify_claim(a.node_id(), &full_a).unwrap();
        verify_claim(b.node_id(), &full_b).unwrap();
        assert!(
            matches!(verify_claim(a.node_id(), &half_a), Err(ClaimError::MissingSignature(n)) if n == b.node_id())
        );
        assert!(matches!(
            verify_claim(b.node_id(), &full_a),
            Err(ClaimError::NotOwner { .. })
        ));
    }

    #[test]
    fn countersign_refuses_what_it_should() {
        let tids = TidGenerator::new(SystemClock);
        let (a, b, c) = (
            Keypair::generate(),
            Keypair::generate(),
            Keypair::generate(),
        );
        let half = propose_link(None, &a, b.node_id(), tids.next_id()).unwrap();
        // Not addressed to c.
        assert!(matches!(
            countersign(half.clone(), &c),
            Err(ClaimError::NotForSigner { .. })
        ));
        // A forged proposer signature.
        let mut forged = half.clone();
        forged.signatures[0].1 = c.sign(&forged.claim.signing_bytes().unwrap());
        assert!(matches!(
            countersign(forged, &b),
            Err(ClaimError::BadSignature(_))
        ));
        // Already countersigned: b would sign twice.
        let full = countersign(half.clone(), &b).unwrap();
        assert!(matches!(
            countersign(full.clone(), &b),
            Err(ClaimError::UnexpectedSigner(_))
        ));
        // An altered claim is refused by the proposer.
        let mut altered = full;
        altered.claim.seq = 7;
        assert!(matches!(
            accept_countersigned(&half, altered),
            Err(ClaimError::Altered)
        ));
        // Identity claims are not countersigned; self links are refused.
        let ident = claim_identity(
            None,
            &a,
            ProviderId::new("p").unwrap(),
            IdentityId::new("i").unwrap(),
            tids.next_id(),
        )
        .unwrap();
        assert!(matches!(
            countersign(ident.clone(), &b),
            Err(ClaimError::NotANodeLink)
        ));
        verify_claim(a.node_id(), &ident).unwrap();
        assert!(matches!(
            propose_link(None, &a, a.node_id(), tids.next_id()),
            Err(ClaimError::SelfLink)
        ));
    }

    #[test]
    fn hashes_cover_signatures_and_position() {
        let tids = TidGenerator::new(SystemClock);
        let a = Keypair::generate();
        let c0 = claim_identity(
            None,
            &a,
            ProviderId::new("p").unwrap(),
            IdentityId::new("i").unwrap(),
            tids.next_id(),
        )
        .unwrap();
        let h0 = c0.head().unwrap();
        assert_eq!(h0.seq, 0);
        let c1 =
            propose_link(Some(&h0), &a, Keypair::generate().node_id(), tids.next_id()).unwrap();
        assert_eq!((c1.claim.seq, c1.claim.prev), (1, Some(h0.hash)));
        let mut c0b = c0.clone();
        c0b.signatures.clear();
        assert_ne!(c0b.hash().unwrap(), h0.hash);
    }
}
