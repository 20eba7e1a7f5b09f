//! keynode's notifications (SPEC §7): short signed messages from one node to
//! another — a general message, a gestalt invitation, a vault shared or
//! unshared — with a persistent inbox on the recipient and a persistent,
//! retrying outbox on the sender.
//!
//! Start from [`NotificationsManager`], an actix actor over a
//! [`NotificationStore`] (LMDB) that holds the node's key and a [`Deliver`]
//! (the agent's network; anything in tests). Its [`messages`] send
//! ([`messages::Send`]), receive ([`messages::Receive`]), list and clear the
//! inbox, the quarantine and the outbox, and wake deliveries when a peer
//! appears ([`messages::PeerSeen`]). The decisions are plain functions in
//! [`rules`].
//!
//! # Notifications
//!
//! A [`Notification`] carries [`NotificationData`], the sender's time-sortable
//! id, `from`, `to` and the send time. The sender signs
//! [`SIGNING_DOMAIN`] ‖ its encoding ([`SignedNotification`]); the domain keeps
//! the signature from ever being valid for anything else. Limits: a general
//! message is at most [`MAX_MESSAGE`] (4 KiB), an encoded notification at most
//! [`MAX_NOTIFICATION`] (16 KiB). Signing enforces both; decoding refuses an
//! over-long message whatever serde path decodes it, and
//! [`SignedNotification::from_bytes`] (for raw wire bytes) and [`accept`]
//! enforce the size.
//!
//! # Acceptance
//!
//! [`accept`] takes the notification, our id, the `NodeId` the connection
//! proved and whether we trust that node (its gestalt holds `notify`; an
//! unknown node is untrusted). It accepts only if the notification is within
//! its limits, `from` is the proven sender, `to` is us, the signature is
//! `from`'s, and the sender is trusted. Every refusal gives the sender the same
//! [`Rejection`] ("notification refused") — it cannot tell an unknown sender
//! from an untrusted one or a forgery (beyond the reference); the reason
//! ([`RejectReason`]) is logged locally at debug level. A notification received
//! twice (same sender, same id: a retry whose answer was lost) is stored once.
//! [`verdict`] makes the same decision with one more outcome: accept,
//! quarantine (only trust failed) or refuse.
//!
//! # Quarantine
//!
//! A notification that passes every rule but trust — within its limits, from
//! the node the connection proved, to us, signed by its sender, from a node
//! without `notify` (say, a vault shared by someone we have not met) — is not
//! lost: [`messages::Receive`] holds it in a bounded quarantine
//! ([`Verdict::Quarantine`]), and still answers the same [`Rejection`] as for a
//! forgery, a wrong address or a blocked sender, even if the quarantine cannot
//! store it. So the answer is no oracle: a sender cannot tell whether it was
//! quarantined, dropped or refused. (It already knows its signature is good.)
//! A notification failing any other rule is never stored.
//!
//! The quarantine keeps at most [`DEFAULT_QUARANTINE_PER_SENDER`] (16)
//! notifications per sender and [`DEFAULT_QUARANTINE_CAP`] (256) in all
//! ([`StoreConfig::quarantine_per_sender`], [`StoreConfig::quarantine_cap`]):
//! one more evicts, in the same transaction, that sender's oldest if the sender
//! is at its cap, otherwise the oldest overall if the total is
//! ([`rules::quarantine_eviction`]). So a flood, from one node or many, costs at
//! most the total cap (about 4 MiB at the default) and never pushes a sender's
//! notifications out while the flooder is at its own cap. Entries keep the
//! signed notification, the sender and the arrival time, under a local arrival
//! [`Tid`](keynode_core::Tid) like the inbox's ([`Quarantined`]); a
//! retransmission is held once.
//!
//! The user decides per sender (`notifications inbox read --untrusted`,
//! `notifications accept|block NODE_ID`):
//!
//! - [`messages::QuarantineAccept`] moves the sender's entries into the inbox,
//!   oldest first, through the inbox's own insert (its cap, its duplicate
//!   check), checking each signature again, and unblocks the sender. Trusting
//!   it from now on (granting `notify` to its gestalt) is the caller's part.
//! - [`messages::QuarantineBlock`] deletes the sender's entries and blocks it:
//!   its notifications are dropped from then on, never quarantined, and
//!   answered the same way. The blocked set holds at most
//!   [`DEFAULT_BLOCKED_CAP`] (4,096) senders ([`StoreConfig::blocked_cap`]);
//!   blocking one more fails ([`BlockError::Full`]) rather than silently
//!   unblocking someone. [`messages::Unblock`] undoes it.
//! - [`messages::QuarantineRead`] lists, [`messages::QuarantineClear`] empties.
//!
//! Blocking concerns the quarantine only: a sender that is trusted is accepted
//! whether or not it is blocked. Every operation is also a
//! [`NotificationStore`] method (`quarantine_*`, `unblock`).
//!
//! # Inbox
//!
//! Keyed by a local receive [`Tid`](keynode_core::Tid) (monotonic; its text is
//! the id users see), capped at [`DEFAULT_INBOX_CAP`] entries by default:
//! receiving one more evicts the oldest in the same transaction. Reading marks
//! what it returns as read; filters are unread-only, a limit, and newest or
//! oldest first.
//!
//! # Outbox and retries
//!
//! Sending signs, queues the notification (persistently), and tries to deliver
//! it at once. The outcome decides its fate: delivered → removed; refused by
//! the recipient → removed (a refusal is final; logged); unreachable (or no
//! answer within [`DEFAULT_ATTEMPT_TIMEOUT`]) → retried after a [`Backoff`]
//! delay: 1 s after the first failure, doubling, capped at 60 s by default
//! (optionally jittered to `[delay/2, delay]` from a seeded RNG). The delay
//! counts from the start of the failed attempt, so attempts are never more than
//! the cap apart while the recipient is away; and a new connection from or to
//! the recipient ([`messages::PeerSeen`]) makes its entries due at once. So a
//! queued notification reaches a recipient within a minute of it coming back,
//! as SPEC §7 requires. The queue survives restarts: the retry loop runs when
//! the manager starts. An attempt in flight holds a lease on its entry
//! ([`NotificationStore::claim_due`]); if the process dies mid-attempt, the
//! entry is retried when the lease runs out. At most [`DEFAULT_MAX_CONCURRENT`]
//! deliveries run at once. Entries never expire on their own: `outbox remove` /
//! `outbox clear` drop them.
//!
//! Delivery is at least once (an answer lost after the recipient stored a
//! notification makes the sender retry); the recipient's duplicate check
//! makes it exactly once in its inbox while the first copy is there.
//!
//! # Example
//!
//! ```
//! use keynode_core::{Keypair, Tid};
//! use keynode_notify::{Notification, NotificationData, Rejection, Verdict, accept, verdict};
//!
//! let (alice, bob) = (Keypair::generate(), Keypair::generate());
//! let signed = Notification {
//!     id: Tid::from_bytes([1; 16]).unwrap(),
//!     from: alice.node_id(),
//!     to: bob.node_id(),
//!     sent_ms: 0,
//!     data: NotificationData::general("the deploy key is in vault ops").unwrap(),
//! }
//! .sign(&alice)
//! .unwrap();
//!
//! // Bob received it over a connection that proved alice's id.
//! let n = accept(&signed, bob.node_id(), alice.node_id(), true).unwrap();
//! assert_eq!(n.data.kind(), "general");
//! // Untrusted, or from someone else: one answer for both.
//! assert_eq!(accept(&signed, bob.node_id(), alice.node_id(), false), Err(Rejection));
//! assert_eq!(accept(&signed, bob.node_id(), bob.node_id(), true), Err(Rejection));
//! // Untrusted but authentic: quarantined, yet answered the same.
//! let v = verdict(&signed, bob.node_id(), alice.node_id(), false);
//! assert!(matches!(v, Verdict::Quarantine(_)));
//! assert_eq!(v.answer(), Err(Rejection));
//! ```
//!
//! Wiring the actor (inside an actix `System`):
//!
//! ```no_run
//! # async fn demo(
//! #     env: keynode_notify::Env,
//! #     key: std::sync::Arc<keynode_core::Keypair>,
//! #     net: std::sync::Arc<dyn keynode_notify::Deliver>,
//! #     peer: keynode_core::NodeId,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//!
//! use actix::Actor;
//! use keynode_core::SystemClock;
//! use keynode_notify::messages::{self, InboxRead, PeerSeen, QuarantineAccept, QuarantineRead};
//! use keynode_notify::{ManagerConfig, NotificationData, NotificationStore, NotificationsManager, StoreConfig};
//!
//! let store = Arc::new(NotificationStore::open(env, StoreConfig::default())?);
//! let notify =
//!     NotificationsManager::new(store, key, Arc::new(SystemClock), net, ManagerConfig::default())
//!         .start();
//! let data = NotificationData::general("hello")?;
//! let queued = notify.send(messages::Send { to: peer, data }).await??;
//! println!("queued {queued}");
//! // The network saw a connection with `peer`: retry what waits for it now.
//! notify.send(PeerSeen { node: peer }).await??;
//! for e in notify.send(InboxRead { unread_only: true, ..Default::default() }).await?? {
//!     println!("{} from {}: {:?}", e.id, e.notification.from, e.notification.data);
//! }
//! // What untrusted nodes sent; the user accepts one of them.
//! let held = notify.send(QuarantineRead::default()).await??;
//! if let Some(q) = held.first() {
//!     let moved = notify.send(QuarantineAccept { sender: q.sender }).await??;
//!     println!("{moved} notifications from {} moved to the inbox", q.sender);
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod deliver;
mod error;
mod manager;
pub mod messages;
mod model;
pub mod rules;
mod store;

pub use deliver::{Deliver, DeliveryError};
pub use error::{BlockError, ReceiveError, SendError, StoreError};
pub use manager::{
    DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_MAX_CONCURRENT, LEASE_MARGIN, ManagerConfig,
    NotificationsManager,
};
pub use model::{
    MAX_MESSAGE, MAX_NOTIFICATION, MAX_SIGNED_NOTIFICATION, Notification, NotificationData,
    NotificationError, SIGNING_DOMAIN, SignedNotification,
};
pub use rules::{Backoff, RejectReason, Rejection, Verdict, accept, check, verdict};
pub use store::{
    BLOCKED_DB, DB_NAMES, DEFAULT_BLOCKED_CAP, DEFAULT_INBOX_CAP, DEFAULT_QUARANTINE_CAP,
    DEFAULT_QUARANTINE_PER_SENDER, Env, INBOX_DB, INBOX_SEEN_DB, InboxEntry, NotificationStore,
    OUTBOX_DB, OUTBOX_DUE_DB, OUTBOX_PEER_DB, Order, Pending, QUARANTINE_DB, QUARANTINE_SEEN_DB,
    QUARANTINE_SENDER_DB, QuarantineOutcome, Quarantined, StoreConfig,
};
