//! The quarantine half of the store: authentic notifications from senders we
//! do not trust, held (bounded) until the user accepts or blocks the sender;
//! and the blocked senders.

use keynode_core::Signature;

use super::*;
use crate::BlockError;
use crate::rules::{Eviction, quarantine_eviction};

/// A notification held in the quarantine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// The local id (an arrival-time [`Tid`], like the inbox's).
    pub id: Tid,
    /// The node the connection proved (always `notification.from`).
    pub sender: NodeId,
    /// When it arrived, in milliseconds since the Unix epoch.
    pub received_ms: u64,
    /// The notification, as verified when it arrived.
    pub notification: Notification,
    /// The sender's signature over it.
    pub signature: Signature,
}

impl Quarantined {
    /// The signed form, as it arrived.
    pub fn signed(&self) -> SignedNotification {
        SignedNotification {
            notification: self.notification.clone(),
            signature: self.signature,
        }
    }
}

/// What [`NotificationStore::quarantine_insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineOutcome {
    /// Held under the local id `id`; `evicted` older entries made room.
    Held {
        /// The local id.
        id: Tid,
        /// How many older entries were evicted for it.
        evicted: usize,
    },
    /// Already held (same sender, same sender's id): a retransmission.
    Duplicate,
    /// The sender is blocked: dropped.
    Blocked,
}

/// What a quarantine row holds (the local id is the key; the sender is
/// `signed.notification.from`).
#[derive(Serialize, Deserialize)]
struct Held {
    signed: SignedNotification,
    received_ms: u64,
}

impl Held {
    fn sender(&self) -> NodeId {
        self.signed.notification.from
    }
}

impl NotificationStore {
    // ---- quarantine -------------------------------------------------------------

    /// Holds `signed` (which [`rules::verdict`](crate::rules::verdict) found
    /// authentic, from an untrusted sender) under a local id: `proposed`, or
    /// just after the newest one (as [`inbox_insert`](Self::inbox_insert)
    /// does). Unless its sender is blocked or it is held already; making room,
    /// in the same transaction, by evicting the sender's oldest entries (the
    /// per-sender cap) and then the oldest overall (the total cap), as
    /// [`quarantine_eviction`] decides.
    pub fn quarantine_insert(
        &self,
        proposed: Tid,
        signed: SignedNotification,
        received_ms: u64,
    ) -> Result<QuarantineOutcome, StoreError> {
        let sender = signed.notification.from;
        let mut txn = self.env.write_txn()?;
        if self.blocked.get(&mut txn, sender.as_bytes())?.is_some() {
            return Ok(QuarantineOutcome::Blocked);
        }
        let seen = seen_key(&signed.notification);
        if self.quarantine_seen.get(&mut txn, &seen)?.is_some() {
            return Ok(QuarantineOutcome::Duplicate);
        }
        let evicted = self.make_room(&mut txn, sender)?;
        let last = self.quarantine.last(&mut txn)?.map(|(k, _)| k);
        let id = next_local_id(last, proposed, QUARANTINE_DB)?;
        let row = Held {
            signed,
            received_ms,
        };
        self.quarantine
            .put(&mut txn, id.as_bytes(), &encode(&row)?)?;
        self.quarantine_senders
            .put(&mut txn, &node_key(sender, id), &())?;
        self.quarantine_seen.put(&mut txn, &seen, id.as_bytes())?;
        txn.commit()?;
        Ok(QuarantineOutcome::Held { id, evicted })
    }

    /// Evicts what [`quarantine_eviction`] says before one more entry from
    /// `sender`; replies how many.
    fn make_room(&self, txn: &mut RwTxn<'_>, sender: NodeId) -> Result<usize, StoreError> {
        let mine = self.held_by(txn, sender)?;
        let held = self.quarantine.len(txn)? as usize;
        let Eviction {
            sender_oldest,
            oldest,
        } = quarantine_eviction(
            mine.len(),
            held,
            self.config.quarantine_per_sender,
            self.config.quarantine_cap,
        );
        for id in mine.into_iter().take(sender_oldest) {
            self.delete_held(txn, id)?;
        }
        for _ in 0..oldest {
            let Some((k, _)) = self.quarantine.first(txn)? else {
                break;
            };
            let id = tid(k, QUARANTINE_DB)?;
            self.delete_held(txn, id)?;
        }
        Ok(sender_oldest + oldest)
    }

    /// The local ids of `sender`'s quarantined entries, oldest first.
    fn held_by(&self, txn: &mut RoTxn<'_>, sender: NodeId) -> Result<Vec<Tid>, StoreError> {
        let mut ids = Vec::new();
        for row in self
            .quarantine_senders
            .prefix_iter(txn, sender.as_bytes())?
        {
            let (k, ()) = row?;
            ids.push(tid(&k[32..], QUARANTINE_SENDER_DB)?);
        }
        Ok(ids)
    }

    /// Deletes a quarantine row and its index rows; replies the row if it
    /// existed.
    fn delete_held(&self, txn: &mut RwTxn<'_>, id: Tid) -> Result<Option<Held>, StoreError> {
        let Some(v) = self.quarantine.get(txn, id.as_bytes())? else {
            return Ok(None);
        };
        let row: Held = decode(v)?;
        self.quarantine_seen
            .delete(txn, &seen_key(&row.signed.notification))?;
        self.quarantine_senders
            .delete(txn, &node_key(row.sender(), id))?;
        self.quarantine.delete(txn, id.as_bytes())?;
        Ok(Some(row))
    }

    /// Deletes every entry of `sender`; replies them, oldest first.
    fn take_held_by(&self, txn: &mut RwTxn<'_>, sender: NodeId) -> Result<Vec<Held>, StoreError> {
        let mut rows = Vec::new();
        for id in self.held_by(txn, sender)? {
            let row = self
                .delete_held(txn, id)?
                .ok_or(StoreError::Corrupt(QUARANTINE_SENDER_DB))?;
            rows.push(row);
        }
        Ok(rows)
    }

    fn quarantined(k: &[u8], v: &[u8]) -> Result<Quarantined, StoreError> {
        let row: Held = decode(v)?;
        Ok(Quarantined {
            id: tid(k, QUARANTINE_DB)?,
            sender: row.sender(),
            received_ms: row.received_ms,
            notification: row.signed.notification,
            signature: row.signed.signature,
        })
    }

    /// Reads up to `limit` quarantined entries (all if `None`) from the end
    /// `order` names. Reading changes nothing.
    pub fn quarantine_read(
        &self,
        limit: Option<usize>,
        order: Order,
    ) -> Result<Vec<Quarantined>, StoreError> {
        let mut txn = self.env.read_txn()?;
        let rows: Rows<'_> = match order {
            Order::Newest => Box::new(self.quarantine.rev_iter(&mut txn)?),
            Order::Oldest => Box::new(self.quarantine.iter(&mut txn)?),
        };
        rows.take(limit.unwrap_or(usize::MAX))
            .map(|row| {
                let (k, v) = row?;
                Self::quarantined(k, v)
            })
            .collect()
    }

    /// How many notifications the quarantine holds.
    pub fn quarantine_len(&self) -> Result<usize, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self.quarantine.len(&txn)? as usize)
    }

    /// Accepts `sender`: moves every entry it has in the quarantine into the
    /// inbox, oldest first, through the inbox's insert (its cap, its duplicate
    /// check, local ids from `proposed` on), and unblocks it, in one
    /// transaction. Each entry's signature is checked again; one that fails (a
    /// bug, never expected) is dropped with a warning. Replies how many entered
    /// the inbox (one the inbox holds already leaves the quarantine
    /// uncounted).
    pub fn quarantine_accept(&self, sender: NodeId, proposed: Tid) -> Result<usize, StoreError> {
        let mut txn = self.env.write_txn()?;
        let mut moved = 0;
        for row in self.take_held_by(&mut txn, sender)? {
            if row.signed.verify().is_err() {
                tracing::warn!(%sender, id = %row.signed.notification.id, "quarantined notification no longer verifies; dropped");
                continue;
            }
            let n = row.signed.notification;
            if self
                .insert_entry(&mut txn, proposed, n, row.received_ms)?
                .is_some()
            {
                moved += 1;
            }
        }
        self.blocked.delete(&mut txn, sender.as_bytes())?;
        txn.commit()?;
        Ok(moved)
    }

    /// Blocks `sender`: deletes its quarantined entries and adds it to the
    /// blocked set (whose notifications are dropped from then on), in one
    /// transaction. Replies how many entries it deleted. Fails, changing
    /// nothing, if the blocked set is at its cap and `sender` is not in it.
    pub fn quarantine_block(&self, sender: NodeId) -> Result<usize, BlockError> {
        let mut txn = self.env.write_txn().map_err(StoreError::from)?;
        if !self.may_block(&mut txn, sender)? {
            let cap = self.config.blocked_cap;
            return Err(BlockError::Full { sender, cap });
        }
        let removed = self.take_held_by(&mut txn, sender)?.len();
        self.blocked
            .put(&mut txn, sender.as_bytes(), &())
            .map_err(StoreError::from)?;
        txn.commit().map_err(StoreError::from)?;
        Ok(removed)
    }

    /// Whether `sender` is blocked already or there is room to block it.
    fn may_block(&self, txn: &mut RoTxn<'_>, sender: NodeId) -> Result<bool, StoreError> {
        if self.blocked.get(txn, sender.as_bytes())?.is_some() {
            return Ok(true);
        }
        Ok((self.blocked.len(txn)? as usize) < self.config.blocked_cap)
    }

    /// Removes `sender` from the blocked set; replies whether it was in it.
    /// Its later notifications are quarantined again (if it is not trusted).
    pub fn unblock(&self, sender: NodeId) -> Result<bool, StoreError> {
        let mut txn = self.env.write_txn()?;
        let existed = self.blocked.delete(&mut txn, sender.as_bytes())?;
        if existed {
            txn.commit()?;
        }
        Ok(existed)
    }

    /// Whether `sender` is blocked.
    pub fn is_blocked(&self, sender: NodeId) -> Result<bool, StoreError> {
        let mut txn = self.env.read_txn()?;
        Ok(self.blocked.get(&mut txn, sender.as_bytes())?.is_some())
    }

    /// Every blocked sender, in id order.
    pub fn blocked(&self) -> Result<Vec<NodeId>, StoreError> {
        let mut txn = self.env.read_txn()?;
        let mut out = Vec::new();
        for row in self.blocked.iter(&mut txn)? {
            let (k, ()) = row?;
            let bytes: [u8; 32] = k.try_into().map_err(|_| StoreError::Corrupt(BLOCKED_DB))?;
            out.push(NodeId::from_bytes(bytes).map_err(|_| StoreError::Corrupt(BLOCKED_DB))?);
        }
        Ok(out)
    }

    /// Empties the quarantine (the blocked set stays); replies how many
    /// entries it held.
    pub fn quarantine_clear(&self) -> Result<usize, StoreError> {
        let mut txn = self.env.write_txn()?;
        let n = self.quarantine.len(&txn)? as usize;
        self.quarantine.clear(&mut txn)?;
        self.quarantine_senders.clear(&mut txn)?;
        self.quarantine_seen.clear(&mut txn)?;
        txn.commit()?;
        Ok(n)
    }
}
