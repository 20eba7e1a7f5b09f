//! `keynode notifications ...`

use keynode_client::api::{NotificationView, Request, Response};
use keynode_core::Tid;

use crate::cli::{InboxCmd, NotificationsCmd, Order, OutboxCmd};
use crate::output;
use crate::{Ctx, Failure};

/// Parses a notification id.
fn tid(s: &str) -> Result<Tid, Failure> {
    s.parse()
        .map_err(|e| Failure::new(65, format!("{e} (got {s:?})")))
}

fn unexpected(r: Response) -> Failure {
    Failure::new(76, format!("unexpected answer from the agent: {r:?}"))
}

/// The JSON form: `data` as a JSON value rather than text.
fn json_view(n: &NotificationView) -> serde_json::Value {
    let mut v = serde_json::to_value(n).unwrap_or_default();
    if let Ok(data) = serde_json::from_str::<serde_json::Value>(&n.data) {
        v["data"] = data;
    }
    v
}

fn print(list: &[NotificationView], format: output::Format) {
    let docs: Vec<_> = list.iter().map(json_view).collect();
    output::emit(format, &docs, || {
        for n in list {
            let state = match (n.read, n.attempts) {
                (Some(false), _) => " (new)".to_owned(),
                (_, Some(a)) => format!(" ({a} attempts)"),
                _ => String::new(),
            };
            say!(
                "{}  {}  from {} to {}{}",
                n.id,
                output::time(n.sent_ms),
                n.from,
                n.to,
                state
            );
            say!("    {}: {}", n.kind, n.data);
        }
    });
}

async fn list(ctx: &Ctx, req: Request) -> Result<(), Failure> {
    let r = ctx.client().await?.call(req).await?;
    let Response::Notifications(list) = r else {
        return Err(unexpected(r));
    };
    print(&list, ctx.format);
    Ok(())
}

async fn removed(ctx: &Ctx, req: Request, what: &str) -> Result<(), Failure> {
    let r = ctx.client().await?.call(req).await?;
    let Response::Removed(n) = r else {
        return Err(unexpected(r));
    };
    output::emit(ctx.format, &serde_json::json!({"removed": n}), || {
        say!("removed {n} {what}")
    });
    Ok(())
}

pub async fn run(ctx: &Ctx, cmd: NotificationsCmd) -> Result<(), Failure> {
    match cmd {
        NotificationsCmd::Send { node_id, message } => {
            let node = crate::nodes::node_id(&node_id)?;
            ctx.client()
                .await?
                .call(Request::NotificationsSend { node, message })
                .await?;
            output::emit(
                ctx.format,
                &serde_json::json!({"sent": true, "node_id": node}),
                || say!("sent to {node} (queued if it is unreachable)"),
            );
            Ok(())
        }
        NotificationsCmd::Inbox(InboxCmd::Read {
            unread,
            untrusted,
            limit,
            order,
        }) => {
            let newest_first = order == Order::Newest;
            let req = if untrusted {
                Request::NotificationsQuarantineRead {
                    limit,
                    newest_first,
                }
            } else {
                Request::NotificationsInboxRead {
                    unread,
                    limit,
                    newest_first,
                }
            };
            list(ctx, req).await
        }
        NotificationsCmd::Accept { node_id } => {
            let node = crate::nodes::node_id(&node_id)?;
            let r = ctx
                .client()
                .await?
                .call(Request::NotificationsAccept { node })
                .await?;
            let Response::Moved(n) = r else {
                return Err(unexpected(r));
            };
            let doc = serde_json::json!({"accepted": node, "moved": n});
            output::emit(ctx.format, &doc, || {
                say!("{node} is trusted now; {n} notifications moved to the inbox")
            });
            Ok(())
        }
        NotificationsCmd::Block { node_id } => {
            let node = crate::nodes::node_id(&node_id)?;
            let r = ctx
                .client()
                .await?
                .call(Request::NotificationsBlock { node })
                .await?;
            let Response::Removed(n) = r else {
                return Err(unexpected(r));
            };
            let doc = serde_json::json!({"blocked": node, "removed": n});
            output::emit(ctx.format, &doc, || {
                say!("{node} is blocked; {n} held notifications dropped")
            });
            Ok(())
        }
        NotificationsCmd::Unblock { node_id } => {
            let node = crate::nodes::node_id(&node_id)?;
            ctx.client()
                .await?
                .call(Request::NotificationsUnblock { node })
                .await?;
            let doc = serde_json::json!({"unblocked": node});
            output::emit(ctx.format, &doc, || say!("{node} is no longer blocked"));
            Ok(())
        }
        NotificationsCmd::Inbox(InboxCmd::Remove { id }) => {
            removed(
                ctx,
                Request::NotificationsInboxRemove { id: tid(&id)? },
                "notification",
            )
            .await
        }
        NotificationsCmd::Inbox(InboxCmd::Clear) => {
            removed(ctx, Request::NotificationsInboxClear, "notifications").await
        }
        NotificationsCmd::Outbox(OutboxCmd::Read) => {
            list(ctx, Request::NotificationsOutboxRead).await
        }
        NotificationsCmd::Outbox(OutboxCmd::Remove { id }) => {
            removed(
                ctx,
                Request::NotificationsOutboxRemove { id: tid(&id)? },
                "queued notification",
            )
            .await
        }
        NotificationsCmd::Outbox(OutboxCmd::Clear) => {
            removed(
                ctx,
                Request::NotificationsOutboxClear,
                "queued notifications",
            )
            .await
        }
    }
}
