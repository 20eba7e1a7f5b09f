//! [`AuditStore`]: the log in LMDB.

use std::sync::Arc;

use keynode_core::codec::{decode, encode};
use keynode_core::store::heed3::types::Bytes;
use keynode_core::store::heed3::{self, CommitOrAbort, EncryptedDatabase, RoTxn};
use keynode_core::{Clock, Keypair, NodeId};
use serde::{Deserialize, Serialize};

use crate::AuditError;
use crate::model::{AuditEntry, AuditEvent, entry_hash, signed_bytes};

/// The LMDB environment the store lives in: the node's one encrypted
/// environment ([`keynode_core::store::open_env`], `max_dbs` leaving room for
/// [`DB_NAMES`]).
pub use keynode_core::store::Env;

/// LMDB database: [`seq_key`] (8 bytes, big endian) → encoded [`AuditEntry`].
pub const LOG_DB: &str = "audit.log";
/// LMDB database: [`HEAD_KEY`] → encoded head (last seq and its hash), written
/// in the same transaction as each entry.
pub const HEAD_DB: &str = "audit.head";
/// The one key of [`HEAD_DB`].
pub const HEAD_KEY: &[u8] = b"head";
/// Every database the store uses.
pub const DB_NAMES: [&str; 2] = [LOG_DB, HEAD_DB];

type Db = EncryptedDatabase<'static, Bytes, Bytes>;

/// The key of entry `seq` in [`LOG_DB`] (big endian, so keys sort by seq).
pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: [u8; 32],
}

/// The node's audit log: append-only, hash-chained, signed by the node.
///
/// Every method runs in one LMDB transaction, blocks, and takes `&self`: share
/// the store in an `Arc` and call it from blocking threads.
pub struct AuditStore {
    env: Env,
    key: Arc<Keypair>,
    clock: Arc<dyn Clock>,
    log: Db,
    head: Db,
}

const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<AuditStore>();
};

impl std::fmt::Debug for AuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditStore").finish_non_exhaustive()
    }
}

fn tampered(first_bad_seq: u64, reason: impl Into<String>) -> AuditError {
    AuditError::Tampered {
        first_bad_seq,
        reason: reason.into(),
    }
}

impl AuditStore {
    /// Opens the store, creating its databases ([`DB_NAMES`]) in one write
    /// transaction. Entries are signed with `key` and timed by `clock`.
    pub fn open(env: Env, key: Arc<Keypair>, clock: Arc<dyn Clock>) -> Result<Self, AuditError> {
        let wtxn = env.write_txn()?;
        let created = env.create_databases_and_commit(wtxn, |opener, wtxn| {
            let log: EncryptedDatabase<'_, Bytes, Bytes> =
                opener.create_database(wtxn, Some(LOG_DB))?;
            let head: EncryptedDatabase<'_, Bytes, Bytes> =
                opener.create_database(wtxn, Some(HEAD_DB))?;
            Ok::<_, heed3::Error>(CommitOrAbort::<_, ()>::Commit((log, head)))
        })?;
        let CommitOrAbort::Commit((log, head)) = created else {
            return Err(AuditError::Corrupt("audit databases were not created"));
        };
        Ok(Self {
            env,
            key,
            clock,
            log,
            head,
        })
    }

    /// The node whose key signs the log.
    pub fn owner(&self) -> NodeId {
        self.key.node_id()
    }

    fn stored_head(&self, txn: &mut RoTxn<'_>) -> Result<Option<Head>, AuditError> {
        Ok(self
            .head
            .get(txn, HEAD_KEY)?
            .map(decode::<Head>)
            .transpose()?)
    }

    /// Appends `event` in one write transaction: seq = last + 1, prev = the
    /// hash of the last entry. Returns the entry.
    pub fn append(&self, event: AuditEvent) -> Result<AuditEntry, AuditError> {
        let mut wtxn = self.env.write_txn()?;
        let (seq, prev) = match self.stored_head(&mut wtxn)? {
            Some(h) => (h.seq + 1, h.hash),
            None => (0, [0; 32]),
        };
        let time_ms = self.clock.now_ms();
        let signature = self.key.sign(&signed_bytes(seq, &prev, time_ms, &event)?);
        let entry = AuditEntry {
            seq,
            prev,
            time_ms,
            event,
            signature,
        };
        let hash = entry_hash(&entry)?;
        self.log.put(&mut wtxn, &seq_key(seq), &encode(&entry)?)?;
        self.head
            .put(&mut wtxn, HEAD_KEY, &encode(&Head { seq, hash })?)?;
        wtxn.commit()?;
        Ok(entry)
    }

    /// At most `limit` entries (all without one), newest or oldest first.
    pub fn read(
        &self,
        limit: Option<usize>,
        newest_first: bool,
    ) -> Result<Vec<AuditEntry>, AuditError> {
        let mut rtxn = self.env.read_txn()?;
        let limit = limit.unwrap_or(usize::MAX);
        let decode_entry = |item: heed3::Result<(&[u8], &[u8])>| -> Result<AuditEntry, AuditError> {
            Ok(decode(item?.1)?)
        };
        if newest_first {
            self.log
                .rev_iter(&mut rtxn)?
                .take(limit)
                .map(decode_entry)
                .collect()
        } else {
            self.log
                .iter(&mut rtxn)?
                .take(limit)
                .map(decode_entry)
                .collect()
        }
    }

    /// How many entries the log holds.
    pub fn len(&self) -> Result<u64, AuditError> {
        let rtxn = self.env.read_txn()?;
        Ok(self.log.len(&rtxn)?)
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> Result<bool, AuditError> {
        Ok(self.len()? == 0)
    }

    /// Checks the whole log against `owner`'s key: seqs contiguous from 0,
    /// every entry stored under its own seq, every `prev` the hash of the entry
    /// before, every signature valid, and the last entry matching the head.
    /// Returns the number of entries, or [`AuditError::Tampered`] naming the
    /// first bad entry.
    pub fn verify(&self, owner: &NodeId) -> Result<u64, AuditError> {
        let mut rtxn = self.env.read_txn()?;
        let mut expected: u64 = 0;
        let mut prev = [0u8; 32];
        for item in self.log.iter(&mut rtxn)? {
            let (k, v) = item?;
            let key_seq = <[u8; 8]>::try_from(k)
                .map(u64::from_be_bytes)
                .map_err(|_| tampered(expected, "malformed key"))?;
            if key_seq != expected {
                return Err(tampered(
                    expected,
                    format!("missing (the next entry stored is {key_seq})"),
                ));
            }
            let entry: AuditEntry =
                decode(v).map_err(|e| tampered(expected, format!("cannot be decoded: {e}")))?;
            if entry.seq != expected {
                return Err(tampered(
                    expected,
                    format!("holds entry {} (reordered or moved)", entry.seq),
                ));
            }
            if entry.prev != prev {
                return Err(tampered(
                    expected,
                    "does not link to the previous entry (an entry before it was altered, removed or reordered)",
                ));
            }
            if !entry.verify_signature(owner) {
                return Err(tampered(expected, "signature does not verify (altered)"));
            }
            prev = entry_hash(&entry)?;
            expected += 1;
        }
        let head = self
            .stored_head(&mut rtxn)
            .map_err(|e| tampered(expected, format!("head cannot be read: {e}")))?;
        match head {
            None if expected == 0 => {}
            None => {
                return Err(tampered(expected, "the head record is missing"));
            }
            Some(h) if expected == 0 || h.seq != expected - 1 => {
                let first = expected.min(h.seq.saturating_add(1));
                return Err(tampered(
                    first,
                    format!(
                        "log ends before the recorded head {} (entries removed at the end)",
                        h.seq
                    ),
                ));
            }
            Some(h) if h.hash != prev => {
                return Err(tampered(
                    expected - 1,
                    "does not match the recorded head hash",
                ));
            }
            Some(_) => {}
        }
        Ok(expected)
    }
}
