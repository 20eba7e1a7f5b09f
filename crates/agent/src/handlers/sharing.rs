//! Sharing and transfer: share, unshare, who may, and scan, clone, pull and
//! fork across nodes.

use keynode_core::{GestaltId, NodeId, VaultName};
use keynode_notify::NotificationData;

use super::notifications::notify;
use super::vaults::{meta, resolve};
use crate::api::{ApiError, Response};
use crate::ctx::Ctx;

/// What a share grants, as the VaultShare notification lists it (SPEC §6.1):
/// exactly what `keynode_acl::rules::share_vault` sets.
pub const SHARED_ACTIONS: [&str; 3] = ["clone", "pull", "scan"];

/// `vaults share` / `unshare` (SPEC §6.1–2): one ACL transaction for the
/// grantee's whole gestalt, then a notification queued for every node of it,
/// all under the gestalt lock so no link or unlink comes between.
///
/// A person (`provider:identity`) is discovered first: its provider's claims,
/// each verified, say which nodes are theirs, so a share reaches every one of
/// them (and a node that proves the identity later joins the grant through
/// the gestalt).
pub(super) async fn share(
    ctx: &Ctx,
    vault: &str,
    to: GestaltId,
    grant: bool,
) -> Result<Response, ApiError> {
    let meta = meta(ctx, vault).await?;
    if grant && matches!(to, GestaltId::Identity(..)) {
        let report = ctx.gestalts.discover(to.clone()).await?;
        for (vertex, e) in &report.failures {
            tracing::debug!(%vertex, error = %e, "discovery before a share: a vertex failed");
        }
    }
    let data = if grant {
        NotificationData::VaultShare {
            vault: meta.id,
            name: meta.name.clone(),
            actions: SHARED_ACTIONS.iter().map(|a| (*a).to_owned()).collect(),
        }
    } else {
        NotificationData::VaultUnshare {
            vault: meta.id,
            name: meta.name.clone(),
        }
    };
    let vault = meta.id;
    ctx.gestalts
        .share_vault(to.clone(), vault, grant, async |nodes| {
            // Every member at once (each send waits for its delivery or its
            // place in the outbox); none is dropped halfway when another
            // fails, and the first failure is the answer.
            let sends = nodes.into_iter().map(|to| notify(ctx, to, data.clone()));
            futures_util::future::join_all(sends)
                .await
                .into_iter()
                .collect::<Result<Vec<()>, ApiError>>()?;
            Ok(())
        })
        .await?;
    use keynode_audit::AuditEvent as A;
    ctx.gestalts
        .record(match (to, grant) {
            (GestaltId::Node(node), true) => A::VaultShared { vault, node },
            (GestaltId::Node(node), false) => A::VaultUnshared { vault, node },
            (person, true) => A::VaultSharedWith {
                vault,
                gestalt: person.to_string(),
            },
            (person, false) => A::VaultUnsharedFrom {
                vault,
                gestalt: person.to_string(),
            },
        })
        .await;
    Ok(Response::Unit)
}

pub(super) async fn permissions(ctx: &Ctx, vault: &str) -> Result<Response, ApiError> {
    let vault = resolve(ctx, vault).await?;
    Ok(Response::VaultPermissions(
        ctx.gestalts.vault_grants(vault).await?,
    ))
}

pub(super) async fn scan(ctx: &Ctx, node: NodeId) -> Result<Response, ApiError> {
    Ok(Response::Scan(crate::transfer::scan(ctx, node).await?))
}

pub(super) async fn clone(
    ctx: &Ctx,
    vault: &str,
    node: NodeId,
    follow: bool,
) -> Result<Response, ApiError> {
    let meta = crate::transfer::clone(ctx, node, vault, follow).await?;
    if follow {
        ctx.follow.changed();
    }
    Ok(Response::Vault(meta))
}

pub(super) async fn pull(
    ctx: &Ctx,
    vault: &str,
    node: Option<NodeId>,
    pull_vault: Option<String>,
) -> Result<Response, ApiError> {
    crate::transfer::pull(ctx, vault, node, pull_vault).await
}

pub(super) async fn fork(
    ctx: &Ctx,
    vault: &str,
    name: Option<VaultName>,
) -> Result<Response, ApiError> {
    Ok(Response::Vault(
        crate::transfer::fork(ctx, vault, name).await?,
    ))
}
