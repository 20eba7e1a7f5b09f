//! The audit log catches tampering: edits, deletions, reordering, truncation.

use std::sync::Arc;

use keynode_audit::{
    AuditEntry, AuditError, AuditEvent, AuditStore, Env, HEAD_DB, LOG_DB, TransferOp, seq_key,
};
use keynode_core::codec::{decode, encode};
use keynode_core::datakey::DataKey;
use keynode_core::store::heed3::{self, types::Bytes};
use keynode_core::{Keypair, NodeId, SystemClock, VaultId};
use tempfile::TempDir;

fn open_env(dir: &std::path::Path) -> Env {
    keynode_core::store::open_env(dir, &DataKey::from_bytes([7; 32]), 1 << 26, 16).unwrap()
}

struct Fixture {
    _tmp: TempDir,
    env: Env,
    store: AuditStore,
    owner: NodeId,
}

/// A log of `n` entries of varied kinds.
fn log(n: u64) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let env = open_env(tmp.path());
    let key = Arc::new(Keypair::generate());
    let owner = key.node_id();
    let store = AuditStore::open(env.clone(), key, Arc::new(SystemClock)).unwrap();
    let peer = Keypair::generate().node_id();
    for i in 0..n {
        let event = match i % 3 {
            0 => AuditEvent::VaultShared {
                vault: VaultId::generate(),
                node: peer,
            },
            1 => AuditEvent::Served {
                peer,
                op: TransferOp::Clone,
                vault: Some(VaultId::generate()),
            },
            _ => AuditEvent::Refused {
                peer,
                op: "pull".into(),
                reason: format!("not shared {i}"),
            },
        };
        assert_eq!(store.append(event).unwrap().seq, i);
    }
    Fixture {
        _tmp: tmp,
        env,
        store,
        owner,
    }
}

fn db(env: &Env, name: &str) -> heed3::EncryptedDatabase<'static, Bytes, Bytes> {
    let rtxn = env.read_txn().unwrap();
    let opened = env
        .open_databases_and_commit(rtxn, |opener, rtxn| {
            let db: Option<heed3::EncryptedDatabase<'_, Bytes, Bytes>> =
                opener.open_database(rtxn, Some(name))?;
            Ok::<_, heed3::Error>(heed3::CommitOrAbort::<_, ()>::Commit(db.unwrap()))
        })
        .unwrap();
    match opened {
        heed3::CommitOrAbort::Commit(db) => db,
        heed3::CommitOrAbort::Abort(()) => unreachable!(),
    }
}

fn raw(f: &Fixture, seq: u64) -> Vec<u8> {
    let log = db(&f.env, LOG_DB);
    let mut rtxn = f.env.read_txn().unwrap();
    log.get(&mut rtxn, &seq_key(seq)).unwrap().unwrap().to_vec()
}

fn put(f: &Fixture, seq: u64, bytes: &[u8]) {
    let log = db(&f.env, LOG_DB);
    let mut w = f.env.write_txn().unwrap();
    log.put(&mut w, &seq_key(seq), bytes).unwrap();
    w.commit().unwrap();
}

fn delete(f: &Fixture, seqs: impl IntoIterator<Item = u64>) {
    let log = db(&f.env, LOG_DB);
    let mut w = f.env.write_txn().unwrap();
    for s in seqs {
        assert!(log.delete(&mut w, &seq_key(s)).unwrap());
    }
    w.commit().unwrap();
}

fn first_bad(f: &Fixture) -> (u64, String) {
    match f.store.verify(&f.owner) {
        Err(AuditError::Tampered {
            first_bad_seq,
            reason,
        }) => (first_bad_seq, reason),
        other => panic!("expected tampering, got {other:?}"),
    }
}

#[test]
fn a_clean_log_verifies() {
    let f = log(0);
    assert_eq!(f.store.verify(&f.owner).unwrap(), 0);
    let f = log(10);
    assert_eq!(f.store.verify(&f.owner).unwrap(), 10);
    // Links and order as written.
    let entries = f.store.read(None, false).unwrap();
    assert_eq!(entries.len(), 10);
    assert_eq!(entries[0].prev, [0; 32]);
    for w in entries.windows(2) {
        assert_eq!(w[1].prev, keynode_audit::entry_hash(&w[0]).unwrap());
    }
    let newest = f.store.read(Some(3), true).unwrap();
    assert_eq!(
        newest.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![9, 8, 7]
    );
}

#[test]
fn another_nodes_key_does_not_verify() {
    let f = log(3);
    let stranger = Keypair::generate().node_id();
    let (seq, reason) = match f.store.verify(&stranger) {
        Err(AuditError::Tampered {
            first_bad_seq,
            reason,
        }) => (first_bad_seq, reason),
        other => panic!("{other:?}"),
    };
    assert_eq!(seq, 0);
    assert!(reason.contains("signature"), "{reason}");
}

#[test]
fn an_edited_entry_is_caught() {
    let f = log(8);
    // Re-encode entry 4 with a changed field.
    let mut e: AuditEntry = decode(&raw(&f, 4)).unwrap();
    e.event = AuditEvent::Refused {
        peer: Keypair::generate().node_id(),
        op: "pull".into(),
        reason: "edited".into(),
    };
    put(&f, 4, &encode(&e).unwrap());
    let (seq, reason) = first_bad(&f);
    assert_eq!(seq, 4);
    assert!(reason.contains("signature"), "{reason}");
}

#[test]
fn an_edited_time_is_caught() {
    let f = log(5);
    let mut e: AuditEntry = decode(&raw(&f, 2)).unwrap();
    e.time_ms += 1;
    put(&f, 2, &encode(&e).unwrap());
    assert_eq!(first_bad(&f).0, 2);
}

#[test]
fn flipped_bytes_are_caught() {
    let f = log(6);
    let mut bytes = raw(&f, 3);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01; // inside the signature
    put(&f, 3, &bytes);
    assert_eq!(first_bad(&f).0, 3);
    // Garbage that does not even decode.
    put(&f, 3, b"\xff\xff\xff");
    let (seq, reason) = first_bad(&f);
    assert_eq!(seq, 3);
    assert!(reason.contains("decode"), "{reason}");
}

#[test]
fn a_deleted_middle_entry_is_caught() {
    let f = log(8);
    delete(&f, [5]);
    let (seq, reason) = first_bad(&f);
    assert_eq!(seq, 5);
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn a_deleted_entry_with_the_rest_renumbered_is_caught() {
    let f = log(6);
    // Remove entry 2 and shift 3..6 down one key, rewriting their seq: the
    // signatures (and links) no longer hold.
    let entries: Vec<Vec<u8>> = (0..6).map(|s| raw(&f, s)).collect();
    delete(&f, [5]);
    for s in 3..6u64 {
        let mut e: AuditEntry = decode(&entries[s as usize]).unwrap();
        e.seq = s - 1;
        put(&f, s - 1, &encode(&e).unwrap());
    }
    // The head still says 5, but the first bad entry is where the chain breaks.
    assert_eq!(first_bad(&f).0, 2);
}

#[test]
fn reordered_entries_are_caught() {
    let f = log(8);
    let (a, b) = (raw(&f, 3), raw(&f, 4));
    put(&f, 3, &b);
    put(&f, 4, &a);
    let (seq, reason) = first_bad(&f);
    assert_eq!(seq, 3);
    assert!(reason.contains("reordered"), "{reason}");
}

#[test]
fn reordered_entries_relabelled_are_caught() {
    let f = log(8);
    // Swap entries 3 and 4 and also swap their seq fields so keys match.
    let mut a: AuditEntry = decode(&raw(&f, 3)).unwrap();
    let mut b: AuditEntry = decode(&raw(&f, 4)).unwrap();
    std::mem::swap(&mut a.seq, &mut b.seq);
    put(&f, 3, &encode(&b).unwrap());
    put(&f, 4, &encode(&a).unwrap());
    assert_eq!(first_bad(&f).0, 3);
}

#[test]
fn truncation_in_the_middle_is_caught() {
    let f = log(10);
    delete(&f, [3, 4, 5, 6]);
    let (seq, reason) = first_bad(&f);
    assert_eq!(seq, 3);
    assert!(reason.contains("missing"), "{reason}");
    // Also from the start.
    let f = log(4);
    delete(&f, [0, 1]);
    assert_eq!(first_bad(&f).0, 0);
}

#[test]
fn dropping_the_last_entries_is_caught_by_the_head() {
    let f = log(10);
    delete(&f, [7, 8, 9]);
    let (seq, reason) = first_bad(&f);
    assert_eq!(seq, 7);
    assert!(reason.contains("head"), "{reason}");
    // Every entry dropped.
    let f = log(3);
    delete(&f, [0, 1, 2]);
    assert_eq!(first_bad(&f).0, 0);
}

#[test]
fn a_removed_head_is_caught() {
    let f = log(3);
    let head = db(&f.env, HEAD_DB);
    let mut w = f.env.write_txn().unwrap();
    head.clear(&mut w).unwrap();
    w.commit().unwrap();
    let (seq, reason) = first_bad(&f);
    assert_eq!(seq, 3);
    assert!(reason.contains("head"), "{reason}");
}

#[test]
fn appending_after_verification_continues_the_chain() {
    let f = log(4);
    let e = f
        .store
        .append(AuditEvent::Trusted {
            gestalt: "offline:alice".into(),
        })
        .unwrap();
    assert_eq!(e.seq, 4);
    assert_eq!(f.store.verify(&f.owner).unwrap(), 5);
}

#[actix_rt::test]
async fn the_actor_appends_reads_and_verifies() {
    use actix::Actor;
    let f = log(0);
    let store = Arc::new(f.store);
    let addr = keynode_audit::AuditManager::new(store.clone()).start();
    for g in ["a", "b"] {
        addr.send(keynode_audit::Append {
            event: AuditEvent::Untrusted { gestalt: g.into() },
        })
        .await
        .unwrap()
        .unwrap();
    }
    let read = addr
        .send(keynode_audit::Read {
            limit: Some(1),
            newest_first: true,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].seq, 1);
    let n = addr
        .send(keynode_audit::Verify { owner: f.owner })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 2);
}
