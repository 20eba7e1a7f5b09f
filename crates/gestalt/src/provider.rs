//! Identity providers: where identities publish the claims that link them to
//! nodes.

use std::future::Future;
use std::path::{Path, PathBuf};

use data_encoding::HEXLOWER;
use keynode_core::codec::{self, CodecError};
use keynode_core::{IdentityId, ProviderId};

use crate::claims::{ClaimBody, ClaimError, SignedClaim, verify_claim};

/// Most claims one identity may hold on the [`OfflineProvider`].
pub const MAX_OFFLINE_CLAIMS: usize = 10_000;
/// Largest claim file the [`OfflineProvider`] reads, in bytes.
pub const MAX_CLAIM_FILE: usize = 64 * 1024;

/// A provider operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The claim is not a valid identity claim for this provider and identity.
    #[error("claim refused by the provider: {0}")]
    Refused(#[source] ClaimError),
    /// The claim names another provider or identity.
    #[error("claim is for {0}, not this provider and identity")]
    WrongIdentity(String),
    /// The provider's storage failed.
    #[error("provider io: {0}")]
    Io(#[from] std::io::Error),
    /// A claim could not be encoded.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
}

/// An identity provider (a website, a directory service, …). Claims are published
/// under an identity by whoever controls it; anyone can read them.
pub trait IdentityProvider: Send + Sync {
    /// The provider's id, the first half of `provider:identity`.
    fn id(&self) -> ProviderId;

    /// Proves control of `identity` to the provider (e.g. an OAuth flow); a no-op
    /// for providers without accounts.
    fn authenticate(
        &self,
        identity: &IdentityId,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// Publishes `claim` under `identity`. It must be a valid
    /// [`LinkIdentity`](ClaimBody::LinkIdentity) claim naming this provider and
    /// `identity`.
    fn publish(
        &self,
        identity: &IdentityId,
        claim: &SignedClaim,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// The claims published under `identity`, oldest first (unverified: callers
    /// verify).
    fn claims(
        &self,
        identity: &IdentityId,
    ) -> impl Future<Output = Result<Vec<SignedClaim>, ProviderError>> + Send;
}

/// Checks that `claim` may be published under `provider:identity`.
pub fn check_publishable(
    provider: &ProviderId,
    identity: &IdentityId,
    claim: &SignedClaim,
) -> Result<(), ProviderError> {
    match &claim.claim.body {
        ClaimBody::LinkIdentity {
            node,
            provider: p,
            identity: i,
        } if p == provider && i == identity => {
            verify_claim(*node, claim).map_err(ProviderError::Refused)
        }
        ClaimBody::LinkIdentity {
            provider: p,
            identity: i,
            ..
        } => Err(ProviderError::WrongIdentity(format!("{p}:{i}"))),
        ClaimBody::LinkNode { .. } | ClaimBody::Rotate { .. } => {
            Err(ProviderError::Refused(ClaimError::NotANodeLink))
        }
    }
}

/// A provider that keeps published claims in a directory, for tests and demos:
/// no network, and several nodes on one machine share it by pointing at the same
/// directory. Layout: `<dir>/<identity, hex>/<claim hash, hex>.claim`, each file
/// one encoded [`SignedClaim`], written to a temporary name and renamed, so
/// concurrent publishers never clash.
#[derive(Debug, Clone)]
pub struct OfflineProvider {
    id: ProviderId,
    dir: PathBuf,
}

impl OfflineProvider {
    /// A provider called `id` keeping its claims under `dir` (created on first
    /// publish).
    pub fn new(id: ProviderId, dir: impl Into<PathBuf>) -> Self {
        OfflineProvider {
            id,
            dir: dir.into(),
        }
    }

    /// Where it keeps its claims.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn identity_dir(&self, identity: &IdentityId) -> PathBuf {
        self.dir.join(HEXLOWER.encode(identity.as_str().as_bytes()))
    }
}

impl IdentityProvider for OfflineProvider {
    fn id(&self) -> ProviderId {
        self.id.clone()
    }

    async fn authenticate(&self, _identity: &IdentityId) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn publish(
        &self,
        identity: &IdentityId,
        claim: &SignedClaim,
    ) -> Result<(), ProviderError> {
        check_publishable(&self.id, identity, claim)?;
        let dir = self.identity_dir(identity);
        tokio::fs::create_dir_all(&dir).await?;
        let name = HEXLOWER.encode(&claim.hash().map_err(ProviderError::Refused)?);
        let tmp = dir.join(format!(".tmp-{name}-{}", std::process::id()));
        tokio::fs::write(&tmp, codec::encode(claim)?).await?;
        tokio::fs::rename(&tmp, dir.join(format!("{name}.claim"))).await?;
        Ok(())
    }

    async fn claims(&self, identity: &IdentityId) -> Result<Vec<SignedClaim>, ProviderError> {
        let mut entries = match tokio::fs::read_dir(self.identity_dir(identity)).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "claim") || out.len() >= MAX_OFFLINE_CLAIMS {
                continue;
            }
            let bytes = tokio::fs::read(&path).await?;
            match codec::decode_with_limit::<SignedClaim, MAX_CLAIM_FILE>(&bytes) {
                Ok(c) => out.push(c),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping a malformed claim file")
                }
            }
        }
        out.sort_by_key(|c| (c.claim.issued_ms, c.claim.id));
        Ok(out)
    }
}
