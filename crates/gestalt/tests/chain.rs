//! Sigchains and chain verification, with one test per forgery.

use keynode_core::{IdentityId, Keypair, NodeId, ProviderId, SystemClock, Tid, TidGenerator};
use keynode_gestalt::{
    ChainError, ChainHead, ClaimBody, ClaimError, Env, Sigchain, SigchainError, SignedClaim,
    VerifiedLink, accept_countersigned, claim_identity, countersign, propose_link, rotate,
    verify_chain,
};

fn open_env(dir: &std::path::Path) -> Env {
    let key = keynode_core::datakey::DataKey::from_bytes([7; 32]);
    keynode_core::store::open_env(dir, &key, 1 << 28, 16).unwrap()
}

fn tid() -> Tid {
    static TIDS: std::sync::OnceLock<TidGenerator<SystemClock>> = std::sync::OnceLock::new();
    TIDS.get_or_init(|| TidGenerator::new(SystemClock))
        .next_id()
}

/// Runs the full exchange between `a` and `b` and returns (a's claim, b's claim).
fn link(
    a: &Keypair,
    a_head: Option<&ChainHead>,
    b: &Keypair,
    b_head: Option<&ChainHead>,
) -> (SignedClaim, SignedClaim) {
    let half_a = propose_link(a_head, a, b.node_id(), tid()).unwrap();
    let full_a = countersign(half_a.clone(), b).unwrap();
    let half_b = propose_link(b_head, b, a.node_id(), tid()).unwrap();
    let full_a = accept_countersigned(&half_a, full_a).unwrap();
    let full_b = countersign(half_b.clone(), a).unwrap();
    let full_b = accept_countersigned(&half_b, full_b).unwrap();
    (full_a, full_b)
}

fn identity(key: &Keypair, head: Option<&ChainHead>, name: &str) -> SignedClaim {
    claim_identity(
        head,
        key,
        ProviderId::new("offline").unwrap(),
        IdentityId::new(name).unwrap(),
        tid(),
    )
    .unwrap()
}

/// A chain for `x`: a link to `y`, an identity claim, a link to `z`.
fn chain(x: &Keypair, y: &Keypair, z: &Keypair) -> Vec<SignedClaim> {
    let (c0, _) = link(x, None, y, None);
    let c1 = identity(x, Some(&c0.head().unwrap()), "x");
    let (c2, _) = link(x, Some(&c1.head().unwrap()), z, None);
    vec![c0, c1, c2]
}

fn keys() -> (Keypair, Keypair, Keypair) {
    (
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate(),
    )
}

fn resign(c: &mut SignedClaim, signers: &[&Keypair]) {
    let msg = c.claim.signing_bytes().unwrap();
    c.signatures = signers
        .iter()
        .map(|k| (k.node_id(), k.sign(&msg)))
        .collect();
}

#[test]
fn a_valid_chain_verifies_whole_and_incrementally() {
    let (x, y, z) = keys();
    let c = chain(&x, &y, &z);
    let links = verify_chain(x.node_id(), &c, None).unwrap();
    assert_eq!(links.len(), 3);
    assert!(matches!(links[0], VerifiedLink::Node { other, .. } if other == y.node_id()));
    assert!(
        matches!(&links[1], VerifiedLink::Identity { identity, .. } if identity.as_str() == "x")
    );
    let head = c[0].head().unwrap();
    assert_eq!(
        verify_chain(x.node_id(), &c[1..], Some(&head))
            .unwrap()
            .len(),
        2
    );
    assert!(
        verify_chain(x.node_id(), &[], Some(&head))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn forgery_bad_signature() {
    let (x, y, z) = keys();
    let mut c = chain(&x, &y, &z);
    let mut sig = *c[2].signatures[1].1.as_bytes();
    sig[5] ^= 1;
    c[2].signatures[1].1 = keynode_core::Signature::from_bytes(sig);
    assert!(matches!(
        verify_chain(x.node_id(), &c, None),
        Err(ChainError::Claim { seq: 2, source: ClaimError::BadSignature(n) }) if n == z.node_id()
    ));
    // A body changed after signing fails the same way.
    let mut c = chain(&x, &y, &z);
    c[0].claim.issued_ms += 1;
    assert!(matches!(
        verify_chain(x.node_id(), &c, None),
        Err(ChainError::Claim {
            seq: 0,
            source: ClaimError::BadSignature(_)
        })
    ));
}

#[test]
fn forgery_signed_by_one_side_only() {
    let (x, y, _) = keys();
    let half = propose_link(None, &x, y.node_id(), tid()).unwrap();
    assert!(matches!(
        verify_chain(x.node_id(), &[half], None),
        Err(ChainError::Claim { source: ClaimError::MissingSignature(n), .. }) if n == y.node_id()
    ));
    // Nor may x sign twice in y's place.
    let mut twice = propose_link(None, &x, y.node_id(), tid()).unwrap();
    resign(&mut twice, &[&x, &x]);
    assert!(verify_chain(x.node_id(), &[twice], None).is_err());
}

#[test]
fn forgery_claim_naming_a_third_node() {
    // In x's chain, a link between y and z (signed by both of them).
    let (x, y, z) = keys();
    let mut c = propose_link(None, &y, z.node_id(), tid()).unwrap();
    resign(&mut c, &[&y, &z]);
    assert!(matches!(
        verify_chain(x.node_id(), &[c], None),
        Err(ChainError::Claim {
            source: ClaimError::NotOwner { .. },
            ..
        })
    ));
    // An identity claim for another node, and an extra third signer.
    let ident = identity(&y, None, "y");
    assert!(verify_chain(x.node_id(), &[ident], None).is_err());
    let mut extra = propose_link(None, &x, y.node_id(), tid()).unwrap();
    resign(&mut extra, &[&x, &y, &z]);
    assert!(matches!(
        verify_chain(x.node_id(), &[extra], None),
        Err(ChainError::Claim { source: ClaimError::UnexpectedSigner(n), .. }) if n == z.node_id()
    ));
}

#[test]
fn forgery_claim_copied_from_another_chain() {
    // y's chain holds its half of the x–y link; y (or anyone) presents x's claim
    // as part of y's chain, and vice versa.
    let (x, y, _) = keys();
    let (for_x, for_y) = link(&x, None, &y, None);
    assert!(verify_chain(x.node_id(), std::slice::from_ref(&for_x), None).is_ok());
    assert!(verify_chain(y.node_id(), std::slice::from_ref(&for_y), None).is_ok());
    assert!(matches!(
        verify_chain(y.node_id(), &[for_x], None),
        Err(ChainError::Claim {
            source: ClaimError::NotOwner { .. },
            ..
        })
    ));
    // Copied into another position of the right chain, the hash link breaks.
    let (x2, z2, w2) = keys();
    let c = chain(&x2, &z2, &w2);
    let copied = vec![c[0].clone(), c[1].clone(), c[0].clone()];
    assert!(verify_chain(x2.node_id(), &copied, None).is_err());
}

#[test]
fn forgery_broken_hash_link() {
    let (x, y, z) = keys();
    let mut c = chain(&x, &y, &z);
    // Re-signed by the owner with a wrong prev: valid signatures, broken chain.
    c[1].claim.prev = Some([7; 32]);
    resign(&mut c[1], &[&x]);
    assert!(matches!(
        verify_chain(x.node_id(), &c, None),
        Err(ChainError::BrokenLink { seq: 1 })
    ));
    // A first entry with a prev, or continuing from a different head.
    let c = chain(&x, &y, &z);
    let wrong = ChainHead {
        seq: 0,
        hash: [1; 32],
    };
    assert!(matches!(
        verify_chain(x.node_id(), &c[1..], Some(&wrong)),
        Err(ChainError::BrokenLink { seq: 1 })
    ));
}

#[test]
fn forgery_truncated_or_reordered_chain() {
    let (x, y, z) = keys();
    let c = chain(&x, &y, &z);
    // Missing first entry.
    assert!(matches!(
        verify_chain(x.node_id(), &c[1..], None),
        Err(ChainError::Sequence {
            expected: 0,
            found: 1
        })
    ));
    // A gap.
    let gap = vec![c[0].clone(), c[2].clone()];
    assert!(matches!(
        verify_chain(x.node_id(), &gap, None),
        Err(ChainError::Sequence {
            expected: 1,
            found: 2
        })
    ));
    // Reordered.
    let reordered = vec![c[0].clone(), c[2].clone(), c[1].clone()];
    assert!(verify_chain(x.node_id(), &reordered, None).is_err());
    // An incremental answer that skips the entry after our head.
    let head = c[0].head().unwrap();
    assert!(matches!(
        verify_chain(x.node_id(), &c[2..], Some(&head)),
        Err(ChainError::Sequence {
            expected: 1,
            found: 2
        })
    ));
    // Replaying entries we already hold.
    assert!(verify_chain(x.node_id(), &c[..], Some(&head)).is_err());
}

#[test]
fn sigchain_appends_in_order_and_reads_incrementally() {
    let tmp = tempfile::tempdir().unwrap();
    let env = open_env(tmp.path());
    let (x, y, z) = keys();
    let chain_x = Sigchain::open(env.clone(), x.node_id()).unwrap();
    assert_eq!(chain_x.head().unwrap(), None);

    let (c0, _) = link(&x, None, &y, None);
    chain_x.append(&c0).unwrap();
    // The same position again, a stale proposal: refused.
    let (stale, _) = link(&x, None, &z, None);
    assert!(matches!(
        chain_x.append(&stale),
        Err(SigchainError::NotNext {
            expected: 1,
            found: 0
        })
    ));
    // Half-signed or foreign claims are refused.
    let half = propose_link(chain_x.head().unwrap().as_ref(), &x, z.node_id(), tid()).unwrap();
    assert!(matches!(
        chain_x.append(&half),
        Err(SigchainError::Claim(_))
    ));
    let foreign = identity(&y, chain_x.head().unwrap().as_ref(), "y");
    assert!(chain_x.append(&foreign).is_err());

    let c1 = identity(&x, chain_x.head().unwrap().as_ref(), "x");
    let h1 = chain_x.append(&c1).unwrap();
    assert_eq!(h1, c1.head().unwrap());
    assert_eq!(chain_x.head().unwrap(), Some(h1));

    let all = chain_x.claims_after(None).unwrap();
    assert_eq!(all, vec![c0.clone(), c1.clone()]);
    assert_eq!(chain_x.claims_after(Some(0)).unwrap(), vec![c1]);
    assert!(chain_x.claims_after(Some(1)).unwrap().is_empty());
    assert!(chain_x.claims_after(Some(u64::MAX)).unwrap().is_empty());
    assert_eq!(verify_chain(x.node_id(), &all, None).unwrap().len(), 2);
    assert!(
        matches!(all[1].claim.body, ClaimBody::LinkIdentity { node, .. } if node == x.node_id())
    );

    // Reopening keeps the chain.
    drop(chain_x);
    let again = Sigchain::open(env, x.node_id()).unwrap();
    assert_eq!(again.head().unwrap(), Some(h1));
    let _: NodeId = again.owner();
}

/// `x`'s chain (a link to `y`), rotated to `x2`, then a link from `x2` to `z`.
fn rotated(x: &Keypair, x2: &Keypair, y: &Keypair, z: &Keypair) -> Vec<SignedClaim> {
    let (c0, _) = link(x, None, y, None);
    let c1 = rotate(Some(&c0.head().unwrap()), x, x2, tid()).unwrap();
    let (c2, _) = link(x2, Some(&c1.head().unwrap()), z, None);
    vec![c0, c1, c2]
}

#[test]
fn a_rotation_passes_the_chain_to_the_new_key() {
    let (x, y, z) = keys();
    let x2 = Keypair::generate();
    let c = rotated(&x, &x2, &y, &z);
    let links = verify_chain(x2.node_id(), &c, None).unwrap();
    assert!(
        matches!(links[0], VerifiedLink::Node { owner, other, .. } if owner == x.node_id() && other == y.node_id())
    );
    assert!(
        matches!(links[1], VerifiedLink::Rotation { old, new, .. } if old == x.node_id() && new == x2.node_id())
    );
    assert!(
        matches!(links[2], VerifiedLink::Node { owner, other, .. } if owner == x2.node_id() && other == z.node_id())
    );
    // It is no longer x's chain, and read from after the rotation it is x2's.
    assert!(matches!(
        verify_chain(x.node_id(), &c, None),
        Err(ChainError::NotOwnersChain { .. })
    ));
    let head = c[1].head().unwrap();
    assert_eq!(
        verify_chain(x2.node_id(), &c[2..], Some(&head))
            .unwrap()
            .len(),
        1
    );
    // The node's own chain takes the rotation, then the new key's claims.
    let dir = tempfile::tempdir().unwrap();
    let env = open_env(dir.path());
    let old_chain = Sigchain::open(env.clone(), x.node_id()).unwrap();
    old_chain.append(&c[0]).unwrap();
    let chain = Sigchain::open(env, x2.node_id()).unwrap();
    chain.append(&c[1]).unwrap();
    chain.append(&c[2]).unwrap();
    assert_eq!(chain.claims_after(None).unwrap(), c);
}

#[test]
fn forged_replayed_and_one_key_rotations_are_refused() {
    let (x, y, z) = keys();
    let x2 = Keypair::generate();
    let thief = Keypair::generate();
    // Signed by the new key only.
    let mut c = rotated(&x, &x2, &y, &z);
    resign(&mut c[1], &[&x2]);
    assert!(matches!(
        verify_chain(x2.node_id(), &c[..2], None),
        Err(ChainError::Claim { seq: 1, source: ClaimError::MissingSignature(n) }) if n == x.node_id()
    ));
    // Signed by the old key only.
    let mut c = rotated(&x, &x2, &y, &z);
    resign(&mut c[1], &[&x]);
    assert!(verify_chain(x2.node_id(), &c[..2], None).is_err());
    // A thief's key in place of the old one.
    let mut c = rotated(&x, &x2, &y, &z);
    c[1].claim.body = ClaimBody::Rotate {
        old: thief.node_id(),
        new: x2.node_id(),
    };
    resign(&mut c[1], &[&thief, &x2]);
    assert!(verify_chain(x2.node_id(), &c[..2], None).is_err());
    // Someone else's real claims, served as x2's chain without a rotation.
    let (c0, _) = link(&x, None, &y, None);
    assert!(verify_chain(x2.node_id(), &[c0], None).is_err());
    // The rotation replayed later in the chain: x no longer owns it.
    let c = rotated(&x, &x2, &y, &z);
    let mut again = c[1].clone();
    again.claim.seq = 3;
    again.claim.prev = Some(c[2].hash().unwrap());
    resign(&mut again, &[&x, &x2]);
    let mut replayed = c.clone();
    replayed.push(again);
    assert!(matches!(
        verify_chain(x2.node_id(), &replayed, None),
        Err(ChainError::Claim {
            seq: 3,
            source: ClaimError::NotOwner { .. }
        })
    ));
    // Reordered: the new key's claim before the rotation.
    let mut reordered = c.clone();
    reordered.swap(1, 2);
    assert!(verify_chain(x2.node_id(), &reordered, None).is_err());
    // A rotation to itself.
    assert!(
        rotate(None, &x, &x, tid()).is_ok_and(|r| verify_chain(x.node_id(), &[r], None).is_err())
    );
}
