//! [`NotificationStore`]: the inbox, the quarantine and the outbox in LMDB.

use std::sync::Mutex;

use keynode_core::codec::{decode, encode};
use keynode_core::store::heed3::types::{Bytes, Unit};
use keynode_core::store::heed3::{self, CommitOrAbort, EncryptedDatabase, RoTxn, RwTxn};
use keynode_core::{NodeId, Tid};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::{Backoff, Notification, SignedNotification, StoreError};

pub use quarantine::{QuarantineOutcome, Quarantined};

/// The LMDB environment the store lives in: the node's one encrypted
/// environment ([`keynode_core::store::open_env`], `max_dbs` leaving room for
/// [`DB_NAMES`]).
pub use keynode_core::store::Env;

/// LMDB database: local receive [`Tid`] → inbox entry (notification, read flag,
/// receive time).
pub const INBOX_DB: &str = "notify.inbox";
/// LMDB database: sender ‖ the sender's notification id (48 bytes) → local
/// [`Tid`]; recognises a notification delivered twice.
pub const INBOX_SEEN_DB: &str = "notify.inbox.seen";
/// LMDB database: outbox [`Tid`] → [`Pending`].
pub const OUTBOX_DB: &str = "notify.outbox";
/// LMDB database: next attempt (ms, big endian) ‖ outbox id (24 bytes) →
/// nothing; the retry schedule.
pub const OUTBOX_DUE_DB: &str = "notify.outbox.due";
/// LMDB database: recipient ‖ outbox id (48 bytes) → nothing; what waits for
/// whom.
pub const OUTBOX_PEER_DB: &str = "notify.outbox.peer";
/// LMDB database: local arrival [`Tid`] → quarantined notification (signed,
/// with its receive time).
pub const QUARANTINE_DB: &str = "notify.quarantine";
/// LMDB database: sender ‖ local [`Tid`] (48 bytes) → nothing; each sender's
/// quarantined entries, oldest first.
pub const QUARANTINE_SENDER_DB: &str = "notify.quarantine.sender";
/// LMDB database: sender ‖ the sender's notification id (48 bytes) → local
/// [`Tid`]; recognises a quarantined notification delivered twice.
pub const QUARANTINE_SEEN_DB: &str = "notify.quarantine.seen";
/// LMDB database: blocked sender (32 bytes) → nothing.
pub const BLOCKED_DB: &str = "notify.blocked";
/// Every database the store uses.
pub const DB_NAMES: [&str; 9] = [
    INBOX_DB,
    INBOX_SEEN_DB,
    OUTBOX_DB,
    OUTBOX_DUE_DB,
    OUTBOX_PEER_DB,
    QUARANTINE_DB,
    QUARANTINE_SENDER_DB,
    QUARANTINE_SEEN_DB,
    BLOCKED_DB,
];

/// Default inbox capacity, in notifications.
pub const DEFAULT_INBOX_CAP: usize = 10_000;
/// Default most notifications the quarantine holds from one sender.
pub const DEFAULT_QUARANTINE_PER_SENDER: usize = 16;
/// Default most notifications the quarantine holds in all (at most
/// [`MAX_SIGNED_NOTIFICATION`](crate::MAX_SIGNED_NOTIFICATION) bytes each: about
/// 4 MiB).
pub const DEFAULT_QUARANTINE_CAP: usize = 256;
/// Default most senders the blocked set holds.
pub const DEFAULT_BLOCKED_CAP: usize = 4_096;

type Db = EncryptedDatabase<'static, Bytes, Bytes>;
type Index = EncryptedDatabase<'static, Bytes, Unit>;
type Rows<'t> = Box<dyn Iterator<Item = heed3::Result<(&'t [u8], &'t [u8])>> + 't>;

/// How the store behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Most notifications the inbox keeps; receiving one more evicts the
    /// oldest. At least 1.
    pub inbox_cap: usize,
    /// Most notifications the quarantine keeps from one sender; one more
    /// evicts that sender's oldest. At least 1.
    pub quarantine_per_sender: usize,
    /// Most notifications the quarantine keeps in all; one more evicts the
    /// oldest. At least 1.
    pub quarantine_cap: usize,
    /// Most senders that can be blocked at once; blocking one more fails
    /// ([`BlockError::Full`](crate::BlockError::Full)).
    pub blocked_cap: usize,
    /// When a failed delivery is retried.
    pub backoff: Backoff,
    /// Seed of the RNG that jitters retry delays; `None` for no jitter.
    pub jitter_seed: Option<u64>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            inbox_cap: DEFAULT_INBOX_CAP,
            quarantine_per_sender: DEFAULT_QUARANTINE_PER_SENDER,
            quarantine_cap: DEFAULT_QUARANTINE_CAP,
            blocked_cap: DEFAULT_BLOCKED_CAP,
            backoff: Backoff::default(),
            jitter_seed: None,
        }
    }
}

/// Which end of the inbox (or the quarantine) to read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Order {
    /// Most recently received first.
    #[default]
    Newest,
    /// Least recently received first.
    Oldest,
}

/// A received notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxEntry {
    /// The local id (a receive-time [`Tid`]; its text is what users see).
    pub id: Tid,
    /// The notification.
    pub notification: Notification,
    /// Whether it had been read before the call that returned it.
    pub read: bool,
    /// When it arrived, in milliseconds since the Unix epoch.
    pub received_ms: u64,
}

/// What an inbox row holds (the id is the key).
#[derive(Serialize, Deserialize)]
struct Stored {
    notification: Notification,
    read: bool,
    received_ms: u64,
}

/// A notification waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The outbox id (the notification's own id).
    pub id: Tid,
    /// What to deliver.
    pub signed: SignedNotification,
    /// To whom.
    pub to: NodeId,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When to try next, in milliseconds since the Unix epoch.
    pub next_attempt_ms: u64,
    /// When it was queued.
    pub created_ms: u64,
}

fn tid(bytes: &[u8], db: &'static str) -> Result<Tid, StoreError> {
    let b: [u8; 16] = bytes.try_into().map_err(|_| StoreError::Corrupt(db))?;
    Tid::from_bytes(b).map_err(|_| StoreError::Corrupt(db))
}

fn seen_key(n: &Notification) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..32].copy_from_slice(n.from.as_bytes());
    k[32..].copy_from_slice(n.id.as_bytes());
    k
}

fn due_key(at_ms: u64, id: Tid) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&at_ms.to_be_bytes());
    k[8..].copy_from_slice(id.as_bytes());
    k
}

/// A node ‖ a local id: the key of the per-node indexes (the outbox's
/// recipients, the quarantine's senders).
fn node_key(node: NodeId, id: Tid) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..32].copy_from_slice(node.as_bytes());
    k[32..].copy_from_slice(id.as_bytes());
    k
}

/// `proposed`, or just after `last` if `proposed` is not greater: local ids
/// stay monotonic even if the clock went back across a restart.
fn next_local_id(last: Option<&[u8]>, proposed: Tid, db: &'static str) -> Result<Tid, StoreError> {
    let Some(last) = last else {
        return Ok(proposed);
    };
    let last = u128::from_be_bytes(*tid(last, db)?.as_bytes());
    if u128::from_be_bytes(*proposed.as_bytes()) > last {
        return Ok(proposed);
    }
    Tid::from_bytes(last.wrapping_add(1).to_be_bytes()).map_err(|_| StoreError::Corrupt(db))
}

fn due_ms(key: &[u8]) -> Result<u64, StoreError> {
    key.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or(StoreError::Corrupt(OUTBOX_DUE_DB))
}

/// The inbox, the quarantine and the outbox of one node.
///
/// Every method runs in one LMDB transaction (writes in one write
/// transaction), blocks, and takes `&self`: share the store in an `Arc` and call
/// it from blocking threads. Times are passed in (milliseconds since the Unix
/// epoch), so tests and simulations decide what "now" is.
pub struct NotificationStore {
    env: Env,
    config: StoreConfig,
    jitter: Mutex<Option<StdRng>>,
    inbox: Db,
    seen: Db,
    outbox: Db,
    due: Index,
    peers: Index,
    quarantine: Db,
    quarantine_senders: Index,
    quarantine_seen: Db,
    blocked: Index,
}

const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<NotificationStore>();
};

impl std::fmt::Debug for NotificationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl NotificationStore {
    /// Opens the store, creating its databases ([`DB_NAMES`]) in one write
    /// transaction. An `inbox_cap`, `quarantine_per_sender` or
    /// `quarantine_cap` of 0 counts as 1.
    pub fn open(env: Env, mut config: StoreConfig) -> Result<NotificationStore, StoreError> {
        config.inbox_cap = config.inbox_cap.max(1);
        config.quarantine_per_sender = config.quarantine_per_sender.max(1);
        config.quarantine_cap = config.quarantine_cap.max(1);
        let wtxn = env.write_txn()?;
        let created = env.create_databases_and_commit(wtxn, |opener, wtxn| {
            let inbox: EncryptedDatabase<'_, Bytes, Bytes> =
                opener.create_database(wtxn, Some(INBOX_DB))?;
            let seen: EncryptedDatabase<'_, Bytes, Bytes> =
                opener.create_database(wtxn, Some(INBOX_SEEN_DB))?;
            let outbox: EncryptedDatabase<'_, Bytes, Bytes> =
                opener.create_database(wtxn, Some(OUTBOX_DB))?;
            let due: EncryptedDatabase<'_, Bytes, Unit> =
                opener.create_database(wtxn, Some(OUTBOX_DUE_DB))?;
            let peers: EncryptedDatabase<'_, Bytes, Unit> =
                opener.create_database(wtxn, Some(OUTBOX_PEER_DB))?;
            let quarantine: EncryptedDatabase<'_, Bytes, Bytes> =
                opener.create_database(wtxn, Some(QUARANTINE_DB))?;
            let quarantine_senders: EncryptedDatabase<'_, Bytes, Unit> =
                opener.create_database(wtxn, Some(QUARANTINE_SENDER_DB))?;
            let quarantine_seen: EncryptedDatabase<'_, Bytes, Bytes> =
                opener.create_database(wtxn, Some(QUARANTINE_SEEN_DB))?;
            let blocked: EncryptedDatabase<'_, Bytes, Unit> =
                opener.create_database(wtxn, Some(BLOCKED_DB))?;
            Ok::<_, heed3::Error>(CommitOrAbort::<_, ()>::Commit((
                (inbox, seen, outbox, due, peers),
                (quarantine, quarantine_senders, quarantine_seen, blocked),
            )))
        })?;
        let CommitOrAbort::Commit((
            (inbox, seen, outbox, due, peers),
            (quarantine, quarantine_senders, quarantine_seen, blocked),
        )) = created
        else {
            return Err(StoreError::Corrupt(
                "notification databases were not created",
            ));
        };
        let jitter = Mutex::new(config.jitter_seed.map(StdRng::seed_from_u64));
        Ok(NotificationStore {
            env,
            config,
            jitter,
            inbox,
            seen,
            outbox,
            due,
            peers,
            quarantine,
            quarantine_senders,
            quarantine_seen,
            blocked,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    // ---- inbox ----------------------------------------------------------------------

    /// Stores an accepted notification under a local id: `proposed`, or just
    /// after the newest id if `proposed` is not greater (so ids stay monotonic
    /// even if the clock went back across a restart). If the inbox is full, the
    /// oldest entries are evicted in the same transaction.
    ///
    /// Replies the local id, or `None` if this notification (same sender, same
    /// sender's id) is already in the inbox: a retransmission.
    pub fn inbox_insert(
        &self,
        proposed: Tid,
        notification: Notification,
        received_ms: u64,
    ) -> Result<Option<Tid>, StoreError> {
        let mut txn = self.env.write_txn()?;
        let id = self.insert_entry(&mut txn, proposed, notification, received_ms)?;
        if id.is_some() {
            txn.commit()?;
        }
        Ok(id)
    }

    /// [`inbox_insert`](Self::inbox_insert) inside `txn`, without committing.
    fn insert_entry(
        &self,
        txn: &mut RwTxn<'_>,
        proposed: Tid,
        notification: Notification,
        received_ms: u64,
    ) -> Result<Option<Tid>, StoreError> {
        let seen = seen_key(&notification);
        if self.seen.get(txn, &seen)?.is_some() {
            return Ok(None);
        }
        let id = next_local_id(self.inbox.last(txn)?.map(|(k, _)| k), proposed, INBOX_DB)?;
        let mut len = self.inbox.len(txn)?;
        while len >= self.config.inbox_cap as u64 {
            let Some((k, _)) = self.inbox.first(txn)? else {
                break;
            };
            let oldest = tid(k, INBOX_DB)?;
            self.delete_entry(txn, oldest)?;
            len -= 1;
        }
        let row = Stored {
            notification,
            read: false,
            received_ms,
        };
        self.inbox.put(txn, id.as_bytes(), &encode(&row)?)?;
        self.seen.put(txn, &seen, id.as_bytes())?;
        Ok(Some(id))
    }

    fn entry(&self, k: &[u8], v: &[u8]) -> Result<InboxEntry, StoreError> {
        let row: Stored = decode(v)?;
        Ok(InboxEntry {
            id: tid(k, INBOX_DB)?,
            notification: row.notification,
            read: row.read,
            received_ms: row.received_ms,
        })
    }

    /// Deletes an inbox row and its duplicate-detection row; replies whether it
    /// existed.
    fn delete_entry(&self, txn: &mut RwTxn<'_>, id: Tid) -> Result<bool, StoreError> {
        let Some(v) = self.inbox.get(txn, id.as_bytes())? else {
            return Ok(false);
        };
        let row: Stored = decode(v)?;
        self.seen.delete(txn, &seen_key(&row.notification))?;
        self.inbox.delete(txn, id.as_bytes())?;
        Ok(true)
    }

    /// Reads up to `limit` entries (all if `None`), only unread ones if
    /// `unread_only`, from the end `order` names, and marks them read, in one
    /// transaction. Each returned entry's `read` is its state before the call.
    /// The senders of the inbox's notifications of `kind`
    /// ([`NotificationData::kind`](crate::NotificationData::kind)), without
    /// marking anything read.
    pub fn inbox_senders(
        &self,
        kind: &str,
    ) -> Result<std::collections::BTreeSet<NodeId>, StoreError> {
        let mut txn = self.env.read_txn()?;
        let mut out = std::collections::BTreeSet::new();
        for row in self.inbox.iter(&mut txn)? {
            let (_, v) = row?;
            let row: Stored = decode(v)?;
            if row.notification.data.kind() == kind {
                out.insert(row.notification.from);
            }
        }
        Ok(out)
    }

    /// The inbox's entries (see [`inbox_read`](Self::inbox_read), which
    /// also marks them read).
    pub fn inbox_read(
        &self,
        unread_only: bool,
        limit: Option<usize>,
        order: Order,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        let mut txn = self.env.write_txn()?;
        let limit = limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        {
            let rows: Rows<'_> = match order {
                Order::Newest => Box::new(self.inbox.rev_iter(&mut txn)?),
                Order::Oldest => Box::new(self.inbox.iter(&mut txn)?),
            };
            for row in rows {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = row?;
                let e = self.entry(k, v)?;
                if !(unread_only && e.read) {
                    out.push(e);
                }
            }
        }
        let mut changed = false;
        for e in out.iter().filter(|e| !e.read) {
            let row = Stored {
                notification: e.notification.clone(),
                read: true,
                received_ms: e.received_ms,
            };
            self.inbox.put(&mut txn, e.id.as_bytes(), &encode(&row)?)?;
            changed = true;
        }
        if changed {
            txn.commit()?;
        }
        Ok(out)
    }

    /// One entry, without marking it read.
    pub fn inbox_get(&self, id: Tid) -> Result<Option<InboxEntry>, StoreError> {
        let mut txn = self.env.read_txn()?;
        self.inbox
            .get(&mut txn, id.as_bytes())?
            .map(|v| self.entry(id.as_bytes(), v))
            .transpose()
    }

    /// How many entries the inbox holds.
    pub fn inbox_len(&self) -> Result<usize, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self.inbox.len(&txn)? as usize)
    }

    /// How many notifications wait in the outbox.
    pub fn outbox_len(&self) -> Result<usize, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self.outbox.len(&txn)? as usize)
    }

    /// Removes one entry; replies whether it existed.
    pub fn inbox_remove(&self, id: Tid) -> Result<bool, StoreError> {
        let mut txn = self.env.write_txn()?;
        let existed = self.delete_entry(&mut txn, id)?;
        if existed {
            txn.commit()?;
        }
        Ok(existed)
    }

    /// Empties the inbox; replies how many entries it held.
    pub fn inbox_clear(&self) -> Result<usize, StoreError> {
        let mut txn = self.env.write_txn()?;
        let n = self.inbox.len(&txn)? as usize;
        self.inbox.clear(&mut txn)?;
        self.seen.clear(&mut txn)?;
        txn.commit()?;
        Ok(n)
    }
}

// The outbox half of the store.
mod outbox;
// The quarantine: notifications from untrusted senders, and blocked senders.
mod quarantine;
