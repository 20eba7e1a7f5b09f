//! The outbox half of the store: queued notifications, their due times and
//! retries, by peer.

use super::*;

impl NotificationStore {
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
        self.peers.put(txn, &node_key(p.to, p.id), &())?;
        Ok(())
    }

    /// Deletes an entry and its index rows; replies whether it existed.
    fn delete_pending(&self, txn: &mut RwTxn<'_>, id: Tid) -> Result<bool, StoreError> {
        let Some(p) = self.pending(txn, id)? else {
            return Ok(false);
        };
        self.outbox.delete(txn, id.as_bytes())?;
        self.due.delete(txn, &due_key(p.next_attempt_ms, id))?;
        self.peers.delete(txn, &node_key(p.to, id))?;
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

    /// Queues `signed` after a first attempt that started at `started_ms`
    /// failed (the manager's direct send): due after the first [`Backoff`]
    /// delay. Replies the next-attempt time.
    pub fn enqueue_failed(
        &self,
        signed: SignedNotification,
        started_ms: u64,
    ) -> Result<u64, StoreError> {
        let p = Pending {
            id: signed.notification.id,
            to: signed.notification.to,
            signed,
            attempts: 1,
            next_attempt_ms: started_ms.saturating_add(self.retry_delay_ms(1)),
            created_ms: started_ms,
        };
        let mut txn = self.env.write_txn()?;
        self.delete_pending(&mut txn, p.id)?;
        self.put_pending(&mut txn, &p, None)?;
        txn.commit()?;
        Ok(p.next_attempt_ms)
    }

    /// The delay before the next attempt after `attempts` failed ones
    /// (jittered if configured).
    fn retry_delay_ms(&self, attempts: u32) -> u64 {
        let mut rng = self.jitter.lock().unwrap_or_else(|e| e.into_inner());
        match rng.as_mut() {
            Some(rng) => self.config.backoff.jittered_ms(attempts, rng),
            None => self.config.backoff.delay_ms(attempts),
        }
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
        let delay = self.retry_delay_ms(p.attempts);
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

    /// Signs every queued entry from `old` anew as `key`'s node (a renewed
    /// key: its peers refuse what the old key signed). Replies how many.
    pub fn resign(&self, old: NodeId, key: &keynode_core::Keypair) -> Result<usize, StoreError> {
        let mut txn = self.env.write_txn()?;
        let mut mine = Vec::new();
        for row in self.outbox.iter(&mut txn)? {
            let (_, v) = row?;
            let p: Pending = decode(v)?;
            if p.signed.notification.from == old {
                mine.push(p);
            }
        }
        for mut p in mine.iter().cloned() {
            let mut n = p.signed.notification.clone();
            n.from = key.node_id();
            p.signed = n
                .sign(key)
                .map_err(|_| StoreError::Corrupt("outbox (cannot re-sign)"))?;
            self.outbox.put(&mut txn, p.id.as_bytes(), &encode(&p)?)?;
        }
        txn.commit()?;
        Ok(mine.len())
    }

    /// Readdresses every queued entry for `old` to `new` (a peer renewed its
    /// key), signed anew by `key` (this node). Replies how many.
    pub fn redirect(
        &self,
        old: NodeId,
        new: NodeId,
        key: &keynode_core::Keypair,
    ) -> Result<usize, StoreError> {
        let mut txn = self.env.write_txn()?;
        let mut theirs = Vec::new();
        for row in self.outbox.iter(&mut txn)? {
            let (_, v) = row?;
            let p: Pending = decode(v)?;
            if p.to == old {
                theirs.push(p);
            }
        }
        for mut p in theirs.iter().cloned() {
            self.peers.delete(&mut txn, &node_key(old, p.id))?;
            let mut n = p.signed.notification.clone();
            n.to = new;
            p.signed = n
                .sign(key)
                .map_err(|_| StoreError::Corrupt("outbox (cannot re-sign)"))?;
            p.to = new;
            self.outbox.put(&mut txn, p.id.as_bytes(), &encode(&p)?)?;
            self.peers.put(&mut txn, &node_key(new, p.id), &())?;
        }
        txn.commit()?;
        Ok(theirs.len())
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
