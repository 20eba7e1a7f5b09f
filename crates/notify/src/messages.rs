//! The messages [`NotificationsManager`] answers.
//!
//! One of them is called [`Send`]: import this module's items by name (or write
//! `messages::Send`), since a glob import would shadow the `Send` trait.
//!
//! [`NotificationsManager`]: crate::NotificationsManager

use actix::{
    ActorContext, ActorFutureExt, Handler, Message, ResponseActFuture, ResponseFuture, WrapFuture,
};
use keynode_core::{NodeId, Tid};

use crate::rules::{RejectReason, Verdict, verdict};
use crate::{
    BlockError, InboxEntry, Notification, NotificationData, NotificationStore,
    NotificationsManager, Order, Pending, QuarantineOutcome, Quarantined, ReceiveError, Rejection,
    SendError, SignedNotification, StoreError,
};

/// Declares a message and its `NotificationsManager` handler (see `keynode_core::store_message!`).
macro_rules! store_message {
    ($($t:tt)*) => {
        keynode_core::store_message!(NotificationsManager, StoreError; $($t)*);
    };
}

/// Signs a notification to `to`, queues it in the outbox and starts delivering
/// it in the background; replies its outbox id once it is queued (delivery
/// may still be pending: see [`OutboxRead`]).
#[derive(Debug, Clone)]
pub struct Send {
    /// The addressee.
    pub to: NodeId,
    /// What to say.
    pub data: NotificationData,
}

impl Message for Send {
    type Result = Result<Tid, SendError>;
}

impl Handler<Send> for NotificationsManager {
    type Result = ResponseActFuture<Self, Result<Tid, SendError>>;

    fn handle(&mut self, msg: Send, _: &mut Self::Context) -> Self::Result {
        let now = self.now_ms();
        let notification = Notification {
            id: self.next_tid(),
            from: self.node_id(),
            to: msg.to,
            sent_ms: now,
            data: msg.data,
        };
        // Signing costs tens of microseconds (the encoding is at most 16 KiB).
        let signed = match notification.sign(self.keypair()) {
            Ok(signed) => signed,
            Err(e) => return Box::pin(actix::fut::ready(Err(SendError::Invalid(e)))),
        };
        if self.can_deliver_now(msg.to) {
            return self.send_now(signed, now);
        }
        let queue = self.blocking(move |store| store.enqueue(signed, now));
        Box::pin(queue.into_actor(self).map(|res, act, ctx| {
            let pending = res?;
            act.run_due(ctx);
            Ok(pending.id)
        }))
    }
}

/// A notification arrived over a connection that proved `sender`; `trusted`
/// says whether `sender`'s gestalt holds `notify` (false for an unknown node).
/// Replies the local inbox id, or `None` if the inbox already holds it (a
/// retransmission: answer the sender as for a success). A refusal is the
/// uniform [`Rejection`], whatever the reason.
///
/// An authentic notification from an untrusted sender (see
/// [`rules::verdict`](crate::rules::verdict)) is held in the quarantine, unless
/// its sender is blocked, and answered with the same [`Rejection`] (even if
/// the quarantine cannot store it), so the sender cannot tell.
#[derive(Debug, Clone)]
pub struct Receive {
    /// What arrived.
    pub signed: SignedNotification,
    /// The node the connection proved.
    pub sender: NodeId,
    /// Whether we trust `sender` (`notify`).
    pub trusted: bool,
}

impl Message for Receive {
    type Result = Result<Option<Tid>, ReceiveError>;
}

impl Handler<Receive> for NotificationsManager {
    type Result = ResponseFuture<Result<Option<Tid>, ReceiveError>>;

    fn handle(&mut self, msg: Receive, _: &mut Self::Context) -> Self::Result {
        let me = self.node_id();
        let (proposed, now) = (self.next_tid(), self.now_ms());
        let store = self.blocking(move |store| {
            // Verifying a signature is CPU work: do it on the blocking pool too.
            Ok(match verdict(&msg.signed, me, msg.sender, msg.trusted) {
                Verdict::Accept(n) => Ok(store_accepted(store, proposed, n, now)?),
                Verdict::Quarantine(_) => {
                    quarantine(store, proposed, msg.signed, now);
                    Err(Rejection)
                }
                Verdict::Refuse(reason) => {
                    log_refused(&msg.signed, msg.sender, reason);
                    Err(Rejection)
                }
            })
        });
        Box::pin(async move { Ok(store.await??) })
    }
}

/// Stores an accepted notification in the inbox.
fn store_accepted(
    store: &NotificationStore,
    proposed: Tid,
    n: Notification,
    now: u64,
) -> Result<Option<Tid>, StoreError> {
    let (from, kind) = (n.from, n.data.kind());
    let id = store.inbox_insert(proposed, n, now)?;
    match id {
        Some(id) => tracing::info!(%id, %from, kind, "notification received"),
        None => tracing::debug!(%from, kind, "notification received again"),
    }
    Ok(id)
}

/// Holds an untrusted sender's notification in the quarantine. Never fails:
/// the sender is refused whatever happens here, and a store error (which would
/// otherwise tell it that it got this far) is only logged.
fn quarantine(store: &NotificationStore, proposed: Tid, signed: SignedNotification, now: u64) {
    let (from, id, kind) = (
        signed.notification.from,
        signed.notification.id,
        signed.notification.data.kind(),
    );
    match store.quarantine_insert(proposed, signed, now) {
        Ok(QuarantineOutcome::Held { id: local, evicted }) => {
            tracing::info!(id = %local, %from, kind, evicted, "notification from an untrusted sender quarantined")
        }
        Ok(QuarantineOutcome::Duplicate) => {
            tracing::debug!(%from, %id, kind, "quarantined notification received again")
        }
        Ok(QuarantineOutcome::Blocked) => {
            tracing::debug!(%from, %id, kind, "notification from a blocked sender dropped")
        }
        Err(e) => {
            tracing::warn!(%from, %id, error = %e, "cannot quarantine a notification; dropped")
        }
    }
}

fn log_refused(signed: &SignedNotification, sender: NodeId, reason: RejectReason) {
    tracing::debug!(
        from = %sender,
        id = %signed.notification.id,
        %reason,
        "notification refused"
    );
}

/// A connection from or to `node` just appeared: makes everything queued for
/// it due now and runs the retry loop. Replies how many entries moved forward.
#[derive(Debug, Clone, Copy)]
pub struct PeerSeen {
    /// The peer.
    pub node: NodeId,
}

impl Message for PeerSeen {
    type Result = Result<usize, StoreError>;
}

impl Handler<PeerSeen> for NotificationsManager {
    type Result = ResponseActFuture<Self, Result<usize, StoreError>>;

    fn handle(&mut self, msg: PeerSeen, _: &mut Self::Context) -> Self::Result {
        let now = self.now_ms();
        let trigger = self.blocking(move |store| store.trigger(msg.node, now));
        Box::pin(trigger.into_actor(self).map(|res, act, ctx| {
            let moved = res?;
            if moved > 0 {
                act.run_due(ctx);
            }
            Ok(moved)
        }))
    }
}

/// Stops the manager now: its retry timer and in-flight attempts are dropped
/// (an entry whose attempt is cut keeps its lease and is retried after it
/// expires, by the next manager on the same store), and with them its hold on
/// the store. Without it, a pending timer keeps the actor, and its store,
/// alive until the timer fires.
#[derive(Debug, Clone, Copy)]
pub struct Stop;

impl Message for Stop {
    type Result = ();
}

impl Handler<Stop> for NotificationsManager {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

store_message! {
    /// Reads the inbox and marks what it returns read (one transaction).
    /// Each entry's `read` is its state before this read.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct InboxRead {
        /// Only entries not read before.
        pub unread_only: bool,
        /// At most this many (all if `None`).
        pub limit: Option<usize>,
        /// Newest or oldest first.
        pub order: Order,
    } -> Vec<InboxEntry>;
    |store, msg| store.inbox_read(msg.unread_only, msg.limit, msg.order)
}

store_message! {
    /// The senders of the inbox's notifications of one kind (nothing is
    /// marked read).
    pub struct InboxSenders {
        /// The kind, as [`NotificationData::kind`] names it (`vault-share`, ...).
        pub kind: &'static str,
    } -> std::collections::BTreeSet<NodeId>;
    |store, msg| store.inbox_senders(msg.kind)
}

store_message! {
    /// Removes one inbox entry; replies whether it existed.
    #[derive(Debug, Clone, Copy)]
    pub struct InboxRemove {
        /// The local inbox id.
        pub id: Tid,
    } -> bool;
    |store, msg| store.inbox_remove(msg.id)
}

store_message! {
    /// Empties the inbox; replies how many entries it held.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct InboxClear {} -> usize;
    |store, _msg| store.inbox_clear()
}

store_message! {
    /// How many entries the inbox and the outbox hold, in that order (what
    /// an operator's metrics show).
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Sizes {} -> (usize, usize);
    |store, _msg| Ok((store.inbox_len()?, store.outbox_len()?))
}

store_message! {
    /// Everything waiting in the outbox, oldest first.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct OutboxRead {} -> Vec<Pending>;
    |store, _msg| store.outbox_read()
}

store_message! {
    /// Removes one outbox entry (it will not be delivered); replies whether it
    /// was queued.
    #[derive(Debug, Clone, Copy)]
    pub struct OutboxRemove {
        /// The outbox id.
        pub id: Tid,
    } -> bool;
    |store, msg| store.outbox_remove(msg.id)
}

store_message! {
    /// Empties the outbox; replies how many entries it held.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct OutboxClear {} -> usize;
    |store, _msg| store.outbox_clear()
}

store_message! {
    /// Reads the quarantine (notifications from untrusted senders; reading
    /// changes nothing).
    #[derive(Debug, Clone, Copy, Default)]
    pub struct QuarantineRead {
        /// At most this many (all if `None`).
        pub limit: Option<usize>,
        /// Newest or oldest first.
        pub order: Order,
    } -> Vec<Quarantined>;
    |store, msg| store.quarantine_read(msg.limit, msg.order)
}

/// Moves every quarantined notification from `sender` into the inbox (oldest
/// first, through the inbox's cap and duplicate check) and unblocks `sender`
/// ([`NotificationStore::quarantine_accept`]). Replies how many entered the
/// inbox. Trusting `sender` from now on (granting `notify`) is the caller's
/// part.
#[derive(Debug, Clone, Copy)]
pub struct QuarantineAccept {
    /// The sender to accept.
    pub sender: NodeId,
}

impl Message for QuarantineAccept {
    type Result = Result<usize, StoreError>;
}

impl Handler<QuarantineAccept> for NotificationsManager {
    type Result = ResponseFuture<Result<usize, StoreError>>;

    fn handle(&mut self, msg: QuarantineAccept, _: &mut Self::Context) -> Self::Result {
        let proposed = self.next_tid();
        Box::pin(self.blocking(move |store| store.quarantine_accept(msg.sender, proposed)))
    }
}

/// Deletes every quarantined notification from `sender` and blocks it: what it
/// sends from now on is dropped, still answered with the uniform refusal
/// ([`NotificationStore::quarantine_block`]). Replies how many were deleted.
#[derive(Debug, Clone, Copy)]
pub struct QuarantineBlock {
    /// The sender to block.
    pub sender: NodeId,
}

impl Message for QuarantineBlock {
    type Result = Result<usize, BlockError>;
}

impl Handler<QuarantineBlock> for NotificationsManager {
    type Result = ResponseFuture<Result<usize, BlockError>>;

    fn handle(&mut self, msg: QuarantineBlock, _: &mut Self::Context) -> Self::Result {
        let block = self.blocking(move |store| Ok(store.quarantine_block(msg.sender)));
        Box::pin(async move { block.await? })
    }
}

store_message! {
    /// Removes `sender` from the blocked set; replies whether it was in it.
    #[derive(Debug, Clone, Copy)]
    pub struct Unblock {
        /// The sender to unblock.
        pub sender: NodeId,
    } -> bool;
    |store, msg| store.unblock(msg.sender)
}

store_message! {
    /// Every blocked sender, in id order.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct BlockedRead {} -> Vec<NodeId>;
    |store, _msg| store.blocked()
}

store_message! {
    /// Empties the quarantine (blocked senders stay blocked); replies how many
    /// entries it held.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct QuarantineClear {} -> usize;
    |store, _msg| store.quarantine_clear()
}

/// Signs every queued notification from `old` anew with this node's key (its
/// key was renewed). Replies how many.
#[derive(Debug, Clone, Copy)]
pub struct Resign {
    /// The renewed key's node.
    pub old: NodeId,
}

impl Message for Resign {
    type Result = Result<usize, StoreError>;
}

impl Handler<Resign> for NotificationsManager {
    type Result = ResponseFuture<Result<usize, StoreError>>;

    fn handle(&mut self, msg: Resign, _: &mut Self::Context) -> Self::Result {
        let key = self.keypair().clone();
        Box::pin(self.blocking(move |store| store.resign(msg.old, &key)))
    }
}

/// Readdresses every queued notification for `old` to `new` (that peer's key
/// was renewed), signed anew. Replies how many.
#[derive(Debug, Clone, Copy)]
pub struct Redirect {
    /// The renewed key's node.
    pub old: NodeId,
    /// Its new key's node.
    pub new: NodeId,
}

impl Message for Redirect {
    type Result = Result<usize, StoreError>;
}

impl Handler<Redirect> for NotificationsManager {
    type Result = ResponseFuture<Result<usize, StoreError>>;

    fn handle(&mut self, msg: Redirect, _: &mut Self::Context) -> Self::Result {
        let key = self.keypair().clone();
        Box::pin(self.blocking(move |store| store.redirect(msg.old, msg.new, &key)))
    }
}
