//! [`NotificationStore`]: the inbox and the outbox in LMDB.

use std::sync::Mutex;

use keynode_core::codec::{decode, encode};
use keynode_core::store::heed3::types::{Bytes, Unit};
use keynode_core::store::heed3::{self, CommitOrAbort, EncryptedDatabase, RoTxn, RwTxn};
use keynode_core::{NodeId, Tid};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::{Backoff, Notification, SignedNotification, StoreError};

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
/// Every database the store uses.
pub const DB_NAMES: [&str; 5] = [
    INBOX_DB,
    INBOX_SEEN_DB,
    OUTBOX_DB,
    OUTBOX_DUE_DB,
    OUTBOX_PEER_DB,
];

/// Default inbox capacity, in notifications.
pub const DEFAULT_INBOX_CAP: usize = 10_000;

type Db = EncryptedDatabase<'static, Bytes, Bytes>;
type Index = EncryptedDatabase<'static, Bytes, Unit>;
type Rows<'t> = Box<dyn Iterator<Item = heed3::Result<(&'t [u8], &'t [u8])>> + 't>;

/// How the store behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Most notifications the inbox keeps; receiving one more evicts the
    /// oldest. At least 1.
    pub inbox_cap: usize,
    /// When a failed delivery is retried.
    pub backoff: Backoff,
    /// Seed of the RNG that jitters retry delays; `None` for no jitter.
    pub jitter_seed: Option<u64>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            inbox_cap: DEFAULT_INBOX_CAP,
            backoff: Backoff::default(),
            jitter_seed: None,
        }
    }
}

/// Which end of the inbox to read from.
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

fn peer_key(to: NodeId, id: Tid) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..32].copy_from_slice(to.as_bytes());
    k[32..].copy_from_slice(id.as_bytes());
    k
}

fn due_ms(key: &[u8]) -> Result<u64, StoreError> {
    key.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or(StoreError::Corrupt(OUTBOX_DUE_DB))
}

/// The inbox and the outbox of one node.
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
    /// transaction. An `inbox_cap` of 0 counts as 1.
    pub fn open(env: Env, mut config: StoreConfig) -> Result<NotificationStore, StoreError> {
        config.inbox_cap = config.inbox_cap.max(1);
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
            Ok::<_, heed3::Error>(CommitOrAbort::<_, ()>::Commit((
                inbox, seen, outbox, due, peers,
            )))
        })?;
        let CommitOrAbort::Commit((inbox, seen, outbox, due, peers)) = created else {
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
        let seen = seen_key(&notification);
        if self.seen.get(&mut txn, &seen)?.is_some() {
            return Ok(None);
        }
        let id = match self.inbox.last(&mut txn)? {
            Some((k, _)) => {
                let last =
                    u128::from_be_bytes(k.try_into().map_err(|_| StoreError::Corrupt(INBOX_DB))?);
                if u128::from_be_bytes(*proposed.as_bytes()) > last {
                    proposed
                } else {
                    Tid::from_bytes(last.wrapping_add(1).to_be_bytes())
                        .map_err(|_| StoreError::Corrupt(INBOX_DB))?
                }
            }
            None => proposed,
        };
        let mut len = self.inbox.len(&txn)?;
        while len >= self.config.inbox_cap as u64 {
            let Some((k, _)) = self.inbox.first(&mut txn)? else {
                break;
            };
            let oldest = tid(k, INBOX_DB)?;
            self.delete_entry(&mut txn, oldest)?;
            len -= 1;
        }
        let row = Stored {
            notification,
            read: false,
            received_ms,
        };
        self.inbox.put(&mut txn, id.as_bytes(), &encode(&row)?)?;
        self.seen.put(&mut txn, &seen, id.as_bytes())?;
        txn.commit()?;
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

    // ---- outbox ---------------------------------------------------------------------

    fn pending(&self, txn: &mut RoTxn<'_>, id: Tid) -> Result<Option<Pending>, StoreError> {
        self.outbox
            .get(txn, id.as_bytes())?
            .map(decode)
            .transpose()
            .map_err(Into::into)
    }

    /// Writes `p`, moving its schedule row from `old_next` (if it had one).
    fn put_pending(
        &self,
        txn: &mut RwTxn<'_>,
        p: &Pending,
        old_next: Option<u64>,
    ) -> Result<(), StoreError> {
        if let Some(old) = old_next {
            self.due.delete(txn, &due_key(old, p.id))?;
        }
        self.outbox.put(txn, p.id.as_bytes(), &encode(p)?)?;
        self.due.put(txn, &due_key(p.next_attempt_ms, p.id), &())?;
        self.peers.put(txn, &peer_key(p.to, p.id), &())?;
        Ok(())
    }

    /// Deletes an entry and its index rows; replies whether it existed.
    fn delete_pending(&self, txn: &mut RwTxn<'_>, id: Tid) -> Result<bool, StoreError> {
        let Some(p) = self.pending(txn, id)? else {
            return Ok(false);
        };
        self.outbox.delete(txn, id.as_bytes())?;
        self.due.delete(txn, &due_key(p.next_attempt_ms, id))?;
        self.peers.delete(txn, &peer_key(p.to, id))?;
        Ok(true)
    }

    /// Like [`delete_pending`](Self::delete_pending), committing if it existed.
    fn remove_pending(&self, id: Tid) -> Result<bool, StoreError> {
        let mut txn = self.env.write_txn()?;
        let existed = self.delete_pending(&mut txn, id)?;
        if existed {
            txn.commit()?;
        }
        Ok(existed)
    }

    /// Queues `signed` for delivery to its addressee, due at once. Its id is the
    /// notification's id.
    pub fn enqueue(&self, signed: SignedNotification, now_ms: u64) -> Result<Pending, StoreError> {
        let p = Pending {
            id: signed.notification.id,
            to: signed.notification.to,
            signed,
            attempts: 0,
            next_attempt_ms: now_ms,
            created_ms: now_ms,
        };
        let mut txn = self.env.write_txn()?;
        // A reused id replaces the old entry rather than orphaning its index rows.
        self.delete_pending(&mut txn, p.id)?;
        self.put_pending(&mut txn, &p, None)?;
        txn.commit()?;
        Ok(p)
    }

    /// The ids of entries due at `now_ms`, soonest first.
    fn due_ids(
        &self,
        txn: &mut RoTxn<'_>,
        now_ms: u64,
        max: usize,
    ) -> Result<Vec<Tid>, StoreError> {
        let mut ids = Vec::new();
        for row in self.due.iter(txn)? {
            let (k, ()) = row?;
            if ids.len() >= max || due_ms(k)? > now_ms {
                break;
            }
            ids.push(tid(&k[8..], OUTBOX_DUE_DB)?);
        }
        Ok(ids)
    }

    /// Every entry due at `now_ms` (next attempt at or before it), soonest
    /// first.
    pub fn due(&self, now_ms: u64) -> Result<Vec<Pending>, StoreError> {
        let mut txn = self.env.read_txn()?;
        let mut out = Vec::new();
        for id in self.due_ids(&mut txn, now_ms, usize::MAX)? {
            out.push(
                self.pending(&mut txn, id)?
                    .ok_or(StoreError::Corrupt(OUTBOX_DUE_DB))?,
            );
        }
        Ok(out)
    }

    /// Takes up to `max` due entries for an attempt: like [`due`](Self::due),
    /// but in the same transaction moves each one's next attempt to
    /// `now_ms + lease_ms`, so it is not handed out again while the attempt
    /// runs, and is retried if the process dies before reporting an outcome
    /// ([`delivered`](Self::delivered), [`failed`](Self::failed),
    /// [`rejected`](Self::rejected)). Does not count as a failed attempt.
    pub fn claim_due(
        &self,
        now_ms: u64,
        lease_ms: u64,
        max: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        let mut txn = self.env.write_txn()?;
        let ids = self.due_ids(&mut txn, now_ms, max)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let mut p = self
                .pending(&mut txn, id)?
                .ok_or(StoreError::Corrupt(OUTBOX_DUE_DB))?;
            let old = p.next_attempt_ms;
            p.next_attempt_ms = now_ms.saturating_add(lease_ms);
            self.put_pending(&mut txn, &p, Some(old))?;
            out.push(p);
        }
        txn.commit()?;
        Ok(out)
    }

    /// The entry was delivered: removes it; replies whether it was queued.
    pub fn delivered(&self, id: Tid) -> Result<bool, StoreError> {
        self.remove_pending(id)
    }

    /// An attempt that started at `now_ms` failed: counts it and schedules the
    /// next one after the [`Backoff`] delay (jittered if configured). Replies the
    /// new next-attempt time, or `None` if the entry is no longer queued.
    ///
    /// Passing the time the attempt *started* (as the manager does) keeps the
    /// gap between two attempts within the backoff cap even when an attempt
    /// itself takes long to fail.
    pub fn failed(&self, id: Tid, now_ms: u64) -> Result<Option<u64>, StoreError> {
        let mut txn = self.env.write_txn()?;
        let Some(mut p) = self.pending(&mut txn, id)? else {
            return Ok(None);
        };
        let old = p.next_attempt_ms;
        p.attempts = p.attempts.saturating_add(1);
        let delay = {
            let mut rng = self.jitter.lock().unwrap_or_else(|e| e.into_inner());
            match rng.as_mut() {
                Some(rng) => self.config.backoff.jittered_ms(p.attempts, rng),
                None => self.config.backoff.delay_ms(p.attempts),
            }
        };
        p.next_attempt_ms = now_ms.saturating_add(delay);
        self.put_pending(&mut txn, &p, Some(old))?;
        txn.commit()?;
        Ok(Some(p.next_attempt_ms))
    }

    /// The recipient refused the entry: a refusal is final, so it is removed.
    /// Replies whether it was queued.
    pub fn rejected(&self, id: Tid) -> Result<bool, StoreError> {
        self.remove_pending(id)
    }

    /// Makes every entry for `node` due at `now_ms` (a connection from or to
    /// it just appeared); replies how many it moved forward. Entries already due
    /// are left alone.
    pub fn trigger(&self, node: NodeId, now_ms: u64) -> Result<usize, StoreError> {
        let mut txn = self.env.write_txn()?;
        let mut ids = Vec::new();
        for row in self.peers.prefix_iter(&mut txn, node.as_bytes())? {
            let (k, ()) = row?;
            ids.push(tid(&k[32..], OUTBOX_PEER_DB)?);
        }
        let mut moved = 0;
        for id in ids {
            let mut p = self
                .pending(&mut txn, id)?
                .ok_or(StoreError::Corrupt(OUTBOX_PEER_DB))?;
            if p.next_attempt_ms > now_ms {
                let old = p.next_attempt_ms;
                p.next_attempt_ms = now_ms;
                self.put_pending(&mut txn, &p, Some(old))?;
                moved += 1;
            }
        }
        if moved > 0 {
            txn.commit()?;
        }
        Ok(moved)
    }

    /// Every queued entry, oldest first.
    pub fn outbox_read(&self) -> Result<Vec<Pending>, StoreError> {
        let mut txn = self.env.read_txn()?;
        let mut out = Vec::new();
        for row in self.outbox.iter(&mut txn)? {
            let (_, v) = row?;
            out.push(decode(v)?);
        }
        Ok(out)
    }

    /// Removes one entry (it will not be delivered); replies whether it was
    /// queued.
    pub fn outbox_remove(&self, id: Tid) -> Result<bool, StoreError> {
        self.remove_pending(id)
    }

    /// Empties the outbox; replies how many entries it held.
    pub fn outbox_clear(&self) -> Result<usize, StoreError> {
        let mut txn = self.env.write_txn()?;
        let n = self.outbox.len(&txn)? as usize;
        self.outbox.clear(&mut txn)?;
        self.due.clear(&mut txn)?;
        self.peers.clear(&mut txn)?;
        txn.commit()?;
        Ok(n)
    }

    /// When the soonest entry is due (it may be in the past), or `None` if the
    /// outbox is empty.
    pub fn next_due(&self) -> Result<Option<u64>, StoreError> {
        let mut txn = self.env.read_txn()?;
        self.due
            .first(&mut txn)?
            .map(|(k, ())| due_ms(k))
            .transpose()
    }
}
