//! Notifications: send, and read or clear the inbox and the outbox.

use keynode_core::{NodeId, Tid};
use keynode_notify::NotificationData;
use keynode_notify::messages as n;

use crate::api::{ApiError, ErrorKind, Response};
use crate::ctx::Ctx;
use crate::errors::Ask;
use crate::notifications::{inbox_view, outbox_view};

/// Queues a notification for `to` (delivered now if it is reachable, retried
/// from the outbox if not).
pub(crate) async fn notify(ctx: &Ctx, to: NodeId, data: NotificationData) -> Result<(), ApiError> {
    ctx.notifications.ask(n::Send { to, data }).await?;
    Ok(())
}

/// `Removed(1)`, or NotFound naming the box.
fn removed_one(found: bool, id: Tid, which: &str) -> Result<Response, ApiError> {
    if found {
        Ok(Response::Removed(1))
    } else {
        Err(ApiError::new(
            ErrorKind::NotFound,
            format!("no notification {id} in the {which}"),
        ))
    }
}

pub(super) async fn send(ctx: &Ctx, node: NodeId, message: String) -> Result<Response, ApiError> {
    let data = NotificationData::general(message)
        .map_err(|e| ApiError::new(ErrorKind::BadData, e.to_string()))?;
    notify(ctx, node, data).await?;
    Ok(Response::Unit)
}

fn order(newest_first: bool) -> keynode_notify::Order {
    if newest_first {
        keynode_notify::Order::Newest
    } else {
        keynode_notify::Order::Oldest
    }
}

pub(super) async fn inbox_read(
    ctx: &Ctx,
    unread_only: bool,
    limit: Option<u32>,
    newest_first: bool,
) -> Result<Response, ApiError> {
    let msg = n::InboxRead {
        unread_only,
        limit: limit.map(|l| l as usize),
        order: order(newest_first),
    };
    let entries = ctx.notifications.ask(msg).await?;
    Ok(Response::Notifications(
        entries.iter().map(inbox_view).collect(),
    ))
}

pub(super) async fn inbox_remove(ctx: &Ctx, id: Tid) -> Result<Response, ApiError> {
    let found = ctx.notifications.ask(n::InboxRemove { id }).await?;
    removed_one(found, id, "inbox")
}

pub(super) async fn inbox_clear(ctx: &Ctx) -> Result<Response, ApiError> {
    let removed = ctx.notifications.ask(n::InboxClear {}).await?;
    Ok(Response::Removed(removed as u64))
}

pub(super) async fn outbox_read(ctx: &Ctx) -> Result<Response, ApiError> {
    let pending = ctx.notifications.ask(n::OutboxRead {}).await?;
    Ok(Response::Notifications(
        pending.iter().map(outbox_view).collect(),
    ))
}

pub(super) async fn outbox_remove(ctx: &Ctx, id: Tid) -> Result<Response, ApiError> {
    let found = ctx.notifications.ask(n::OutboxRemove { id }).await?;
    removed_one(found, id, "outbox")
}

pub(super) async fn outbox_clear(ctx: &Ctx) -> Result<Response, ApiError> {
    let removed = ctx.notifications.ask(n::OutboxClear {}).await?;
    Ok(Response::Removed(removed as u64))
}

pub(super) async fn quarantine_read(
    ctx: &Ctx,
    limit: Option<u32>,
    newest_first: bool,
) -> Result<Response, ApiError> {
    let msg = n::QuarantineRead {
        limit: limit.map(|l| l as usize),
        order: order(newest_first),
    };
    let held = ctx.notifications.ask(msg).await?;
    Ok(Response::Notifications(
        held.iter()
            .map(crate::notifications::quarantine_view)
            .collect(),
    ))
}

/// `notifications accept NODE`: trust first (so what it sends next is not
/// held again), then move what it left in the quarantine into the inbox.
pub(super) async fn accept(ctx: &Ctx, node: NodeId) -> Result<Response, ApiError> {
    super::gestalts::trust(ctx, node.into()).await?;
    let moved = ctx
        .notifications
        .ask(n::QuarantineAccept { sender: node })
        .await?;
    Ok(Response::Moved(moved as u64))
}

pub(super) async fn block(ctx: &Ctx, node: NodeId) -> Result<Response, ApiError> {
    let removed = ctx
        .notifications
        .ask(n::QuarantineBlock { sender: node })
        .await?;
    Ok(Response::Removed(removed as u64))
}

pub(super) async fn unblock(ctx: &Ctx, node: NodeId) -> Result<Response, ApiError> {
    if ctx.notifications.ask(n::Unblock { sender: node }).await? {
        Ok(Response::Unit)
    } else {
        Err(ApiError::new(
            ErrorKind::NotFound,
            format!("{node} is not blocked"),
        ))
    }
}
