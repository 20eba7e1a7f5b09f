//! Gestalts and identities: trust, gestalt actions, discovery, claims.

use keynode_audit::AuditEvent;
use keynode_core::{GestaltId, IdentityId, NodeId, ProviderId};
use keynode_gestalt::SignedClaim;

use super::notifications::notify;
use crate::api::{ApiError, DiscoveryView, GestaltAction, Response};
use crate::ctx::Ctx;
use crate::gestalts::permission_view;

/// The ACL's name for an API action.
fn acl_action(a: GestaltAction) -> keynode_acl::GestaltAction {
    match a {
        GestaltAction::Notify => keynode_acl::GestaltAction::Notify,
        GestaltAction::Scan => keynode_acl::GestaltAction::Scan,
        GestaltAction::Claim => keynode_acl::GestaltAction::Claim,
    }
}

fn claimed(c: &SignedClaim) -> Response {
    Response::Claimed {
        claim_id: c.claim.id.to_string(),
        seq: c.claim.seq,
    }
}

pub(super) async fn trust(ctx: &Ctx, id: GestaltId) -> Result<Response, ApiError> {
    ctx.gestalts
        .allow(&id, keynode_acl::GestaltAction::Notify)
        .await?;
    ctx.gestalts
        .record(AuditEvent::Trusted {
            gestalt: id.to_string(),
        })
        .await;
    // Learn the rest of the gestalt in the background.
    let (gestalts, shutdown) = (ctx.gestalts.clone(), ctx.shutdown.clone());
    tokio::spawn(async move {
        tokio::select! {
            // A stopping node does not wait for it.
            _ = shutdown.cancelled() => {}
            r = gestalts.discover(id.clone()) => if let Err(e) = r {
                tracing::debug!(gestalt = %id, error = %e, "discovery after trust failed");
            },
        }
    });
    Ok(Response::Unit)
}

pub(super) async fn untrust(ctx: &Ctx, id: GestaltId) -> Result<Response, ApiError> {
    ctx.gestalts
        .disallow(&id, keynode_acl::GestaltAction::Notify)
        .await?;
    ctx.gestalts
        .record(AuditEvent::Untrusted {
            gestalt: id.to_string(),
        })
        .await;
    Ok(Response::Unit)
}

pub(super) async fn allow(
    ctx: &Ctx,
    id: GestaltId,
    action: GestaltAction,
) -> Result<Response, ApiError> {
    ctx.gestalts.allow(&id, acl_action(action)).await?;
    ctx.gestalts
        .record(AuditEvent::Allowed {
            gestalt: id.to_string(),
            action: action.to_string(),
        })
        .await;
    Ok(Response::Unit)
}

pub(super) async fn disallow(
    ctx: &Ctx,
    id: GestaltId,
    action: GestaltAction,
) -> Result<Response, ApiError> {
    ctx.gestalts.disallow(&id, acl_action(action)).await?;
    ctx.gestalts
        .record(AuditEvent::Disallowed {
            gestalt: id.to_string(),
            action: action.to_string(),
        })
        .await;
    Ok(Response::Unit)
}

pub(super) async fn permissions(ctx: &Ctx, id: GestaltId) -> Result<Response, ApiError> {
    Ok(Response::Permissions(permission_view(
        &ctx.gestalts.permission(&id).await?,
    )))
}

/// `identities invite NODE`: grants it `claim` and tells it so.
pub(super) async fn invite(ctx: &Ctx, node: NodeId) -> Result<Response, ApiError> {
    let id = GestaltId::Node(node);
    let action = GestaltAction::Claim;
    ctx.gestalts.allow(&id, acl_action(action)).await?;
    ctx.gestalts
        .record(AuditEvent::Allowed {
            gestalt: id.to_string(),
            action: action.to_string(),
        })
        .await;
    notify(ctx, node, keynode_notify::NotificationData::GestaltInvite).await?;
    Ok(Response::Unit)
}

pub(super) async fn discover(ctx: &Ctx, id: GestaltId) -> Result<Response, ApiError> {
    let report = ctx.gestalts.discover(id.clone()).await?;
    Ok(Response::Discovered(DiscoveryView {
        visited: report.visited.iter().map(ToString::to_string).collect(),
        changes: report.events.len(),
        failures: report
            .failures
            .iter()
            .map(|(v, e)| format!("{v}: {e}"))
            .collect(),
        truncated: report.truncated,
        gestalt: ctx.gestalts.view(&id).await.ok(),
    }))
}

pub(super) async fn list(ctx: &Ctx) -> Result<Response, ApiError> {
    Ok(Response::Gestalts(ctx.gestalts.list().await?))
}

pub(super) async fn get(ctx: &Ctx, id: GestaltId) -> Result<Response, ApiError> {
    Ok(Response::Gestalt(ctx.gestalts.view(&id).await?))
}

pub(super) async fn authenticate(ctx: &Ctx, provider: ProviderId) -> Result<Response, ApiError> {
    ctx.gestalts.provider(&provider)?;
    Ok(Response::Unit)
}

pub(super) async fn claim_identity(
    ctx: &Ctx,
    provider: ProviderId,
    identity: IdentityId,
) -> Result<Response, ApiError> {
    Ok(claimed(
        &ctx.gestalts.claim_identity(provider, identity).await?,
    ))
}

pub(super) async fn claim_node(ctx: &Ctx, node: NodeId) -> Result<Response, ApiError> {
    let claim = ctx.gestalts.claim_node(node).await?;
    crate::peer::spawn_tell_owners(
        &ctx.gestalts,
        &ctx.notifications,
        &ctx.vaults,
        &ctx.shutdown,
    );
    Ok(claimed(&claim))
}
