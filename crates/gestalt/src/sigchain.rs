//! [`Sigchain`]: a node's own append-only chain of signed claims, in LMDB.

use keynode_core::NodeId;
use keynode_core::codec::{CodecError, decode, encode};
use keynode_core::store::heed3::types::Bytes;
use keynode_core::store::heed3::{self, CommitOrAbort, EncryptedDatabase};

use crate::Env;
use crate::claims::{ChainHead, ClaimError, SignedClaim, next_position, verify_claim};

/// LMDB database of the node's sigchain: `seq` (u64 big endian) → encoded
/// [`SignedClaim`].
pub const SIGCHAIN_DB: &str = "sigchain.claims";

/// Most entries [`Sigchain::claims_after`] returns in one call.
pub const MAX_CLAIMS_PER_READ: usize = 1_000;

/// A sigchain operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SigchainError {
    /// The entry is not the next one: another append came first, or it was
    /// proposed against an old head.
    #[error("claim {found} is not the next entry (expected {expected})")]
    NotNext {
        /// The seq expected.
        expected: u64,
        /// The seq given.
        found: u64,
    },
    /// The entry's `prev` is not the hash of the current head.
    #[error("claim does not link to the chain head")]
    BrokenLink,
    /// The claim is not valid for this chain.
    #[error("invalid claim: {0}")]
    Claim(#[from] ClaimError),
    /// LMDB failed.
    #[error("storage: {0}")]
    Storage(#[from] heed3::Error),
    /// A stored value could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
}

/// The node's own sigchain. Appends are checked (position, hash link, signatures)
/// in one write transaction, so the stored chain always verifies.
pub struct Sigchain {
    env: Env,
    owner: NodeId,
    db: EncryptedDatabase<'static, Bytes, Bytes>,
}

impl std::fmt::Debug for Sigchain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sigchain")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Sigchain {
    /// Opens `owner`'s chain, creating [`SIGCHAIN_DB`] if missing.
    pub fn open(env: Env, owner: NodeId) -> Result<Sigchain, SigchainError> {
        let wtxn = env.write_txn()?;
        let created = env.create_databases_and_commit(wtxn, |opener, wtxn| {
            let db: EncryptedDatabase<'_, Bytes, Bytes> =
                opener.create_database(wtxn, Some(SIGCHAIN_DB))?;
            Ok::<_, heed3::Error>(CommitOrAbort::<_, ()>::Commit(db))
        })?;
        let CommitOrAbort::Commit(db) = created else {
            return Err(heed3::Error::Io(std::io::Error::other(
                "sigchain database was not created",
            ))
            .into());
        };
        Ok(Sigchain { env, owner, db })
    }

    /// The chain owner.
    pub fn owner(&self) -> NodeId {
        self.owner
    }

    fn head_in(&self, txn: &mut heed3::RoTxn<'_>) -> Result<Option<ChainHead>, SigchainError> {
        match self.db.last(txn)? {
            Some((_, bytes)) => Ok(Some(decode::<SignedClaim>(bytes)?.head()?)),
            None => Ok(None),
        }
    }

    /// The last entry's position and hash, or `None` for an empty chain.
    pub fn head(&self) -> Result<Option<ChainHead>, SigchainError> {
        let mut txn = self.env.read_txn()?;
        self.head_in(&mut txn)
    }

    /// Appends `claim` if it is the next entry (seq and prev match the head) and
    /// valid for this chain ([`verify_claim`]): the owner's, or the rotation
    /// that passes the chain to the owner (a renewed key appending the claim
    /// its old key co-signed). Returns the new head.
    pub fn append(&self, claim: &SignedClaim) -> Result<ChainHead, SigchainError> {
        match &claim.claim.body {
            crate::ClaimBody::Rotate { old, new } if *new == self.owner => {
                verify_claim(*old, claim)?
            }
            _ => verify_claim(self.owner, claim)?,
        }
        let mut txn = self.env.write_txn()?;
        let (expected, prev) = next_position(self.head_in(&mut txn)?.as_ref());
        if claim.claim.seq != expected {
            return Err(SigchainError::NotNext {
                expected,
                found: claim.claim.seq,
            });
        }
        if claim.claim.prev != prev {
            return Err(SigchainError::BrokenLink);
        }
        self.db
            .put(&mut txn, &expected.to_be_bytes(), &encode(claim)?)?;
        txn.commit()?;
        Ok(claim.head()?)
    }

    /// The entries after `after` (all of them for `None`), in order, at most
    /// [`MAX_CLAIMS_PER_READ`]: call again from the last one for more.
    pub fn claims_after(&self, after: Option<u64>) -> Result<Vec<SignedClaim>, SigchainError> {
        let start = match after {
            Some(s) => match s.checked_add(1) {
                Some(n) => n,
                None => return Ok(Vec::new()),
            },
            None => 0,
        };
        let mut txn = self.env.read_txn()?;
        let from = start.to_be_bytes();
        let range = (
            std::ops::Bound::Included(&from[..]),
            std::ops::Bound::Unbounded,
        );
        let mut out = Vec::new();
        for item in self.db.range(&mut txn, &range)?.take(MAX_CLAIMS_PER_READ) {
            out.push(decode(item?.1)?);
        }
        Ok(out)
    }
}
