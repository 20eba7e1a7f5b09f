//! Behaviour of `NotificationStore` through the public API.

use std::path::Path;
use std::time::Duration;

use keynode_core::{Keypair, NodeId, Tid, VaultId, VaultName};
use keynode_notify::{
    Backoff, Env, Notification, NotificationData, NotificationStore, Order, SignedNotification,
    StoreConfig,
};
use tempfile::TempDir;

fn open_env(dir: &Path) -> Env {
    let key = keynode_core::datakey::DataKey::from_bytes([7; 32]);
    keynode_core::store::open_env(dir, &key, 1 << 26, 16).unwrap()
}

/// Closes `env` (every clone must be gone) so the directory can be reopened.
fn close(env: Env) {
    assert!(
        env.prepare_for_closing()
            .expect("every clone of the env is gone")
            .wait_timeout(Duration::from_secs(10))
    );
}

fn store(config: StoreConfig) -> (TempDir, Env, NotificationStore) {
    let tmp = tempfile::tempdir().unwrap();
    let env = open_env(tmp.path());
    let s = NotificationStore::open(env.clone(), config).unwrap();
    (tmp, env, s)
}

fn tid(n: u128) -> Tid {
    Tid::from_bytes(n.to_be_bytes()).unwrap()
}

fn note(from: &Keypair, to: NodeId, id: u128, msg: &str) -> Notification {
    Notification {
        id: tid(id),
        from: from.node_id(),
        to,
        sent_ms: 1,
        data: NotificationData::general(msg).unwrap(),
    }
}

fn signed(from: &Keypair, to: NodeId, id: u128) -> SignedNotification {
    note(from, to, id, "hi").sign(from).unwrap()
}

fn messages(entries: &[keynode_notify::InboxEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| match &e.notification.data {
            NotificationData::General { message } => message.clone(),
            other => other.kind().to_string(),
        })
        .collect()
}

#[test]
fn inbox_reads_filter_order_and_mark_read() {
    let (_t, _env, s) = store(StoreConfig::default());
    let (a, me) = (Keypair::generate(), Keypair::generate().node_id());
    for (i, m) in ["one", "two", "three", "four"].iter().enumerate() {
        let id = s
            .inbox_insert(
                tid(100 + i as u128),
                note(&a, me, i as u128, m),
                10 + i as u64,
            )
            .unwrap();
        assert_eq!(id, Some(tid(100 + i as u128)));
    }
    assert_eq!(s.inbox_len().unwrap(), 4);

    // Newest first, limited: the two newest, reported unread, then marked read.
    let got = s.inbox_read(true, Some(2), Order::Newest).unwrap();
    assert_eq!(messages(&got), ["four", "three"]);
    assert!(got.iter().all(|e| !e.read));
    assert_eq!(got[0].id, tid(103));
    assert_eq!(got[0].received_ms, 13);
    assert!(s.inbox_get(tid(103)).unwrap().unwrap().read);

    // Unread only, oldest first: what is left.
    let got = s.inbox_read(true, None, Order::Oldest).unwrap();
    assert_eq!(messages(&got), ["one", "two"]);
    assert!(s.inbox_read(true, None, Order::Oldest).unwrap().is_empty());

    // Everything, oldest first, now all read.
    let got = s.inbox_read(false, None, Order::Oldest).unwrap();
    assert_eq!(messages(&got), ["one", "two", "three", "four"]);
    assert!(got.iter().all(|e| e.read));
    assert_eq!(
        messages(&s.inbox_read(false, Some(1), Order::Oldest).unwrap()),
        ["one"]
    );
    assert!(
        s.inbox_read(false, Some(0), Order::Newest)
            .unwrap()
            .is_empty()
    );

    // Remove one, then clear.
    assert!(s.inbox_remove(tid(101)).unwrap());
    assert!(!s.inbox_remove(tid(101)).unwrap());
    assert_eq!(
        messages(&s.inbox_read(false, None, Order::Newest).unwrap()),
        ["four", "three", "one"]
    );
    assert_eq!(s.inbox_clear().unwrap(), 3);
    assert_eq!(s.inbox_clear().unwrap(), 0);
    assert!(s.inbox_read(false, None, Order::Newest).unwrap().is_empty());
}

#[test]
fn inbox_cap_evicts_the_oldest() {
    let config = StoreConfig {
        inbox_cap: 3,
        ..StoreConfig::default()
    };
    let (_t, _env, s) = store(config);
    let (a, me) = (Keypair::generate(), Keypair::generate().node_id());
    for i in 0..5u128 {
        s.inbox_insert(tid(100 + i), note(&a, me, i, &format!("m{i}")), 0)
            .unwrap()
            .unwrap();
    }
    assert_eq!(s.inbox_len().unwrap(), 3);
    assert_eq!(
        messages(&s.inbox_read(false, None, Order::Oldest).unwrap()),
        ["m2", "m3", "m4"]
    );
    // An evicted notification is forgotten entirely (it may arrive again).
    assert!(
        s.inbox_insert(tid(200), note(&a, me, 0, "m0"), 0)
            .unwrap()
            .is_some()
    );
    assert_eq!(
        messages(&s.inbox_read(false, None, Order::Oldest).unwrap()),
        ["m3", "m4", "m0"]
    );
}

#[test]
fn inbox_ids_are_monotonic_and_duplicates_are_stored_once() {
    let (_t, _env, s) = store(StoreConfig::default());
    let (a, b, me) = (
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate().node_id(),
    );
    assert_eq!(
        s.inbox_insert(tid(500), note(&a, me, 1, "x"), 0).unwrap(),
        Some(tid(500))
    );
    // The same sender and id again: a retransmission.
    assert_eq!(
        s.inbox_insert(tid(600), note(&a, me, 1, "x"), 0).unwrap(),
        None
    );
    // Another sender may use the same id; a proposed id from a clock that went
    // back is moved after the newest.
    assert_eq!(
        s.inbox_insert(tid(7), note(&b, me, 1, "y"), 0).unwrap(),
        Some(tid(501))
    );
    assert_eq!(s.inbox_len().unwrap(), 2);
    // Once removed, it is no longer a duplicate.
    assert!(s.inbox_remove(tid(500)).unwrap());
    assert_eq!(
        s.inbox_insert(tid(900), note(&a, me, 1, "x"), 0).unwrap(),
        Some(tid(900))
    );
    s.inbox_clear().unwrap();
    assert!(
        s.inbox_insert(tid(901), note(&b, me, 1, "y"), 0)
            .unwrap()
            .is_some()
    );
}

#[test]
fn outbox_schedules_retries_and_settles_outcomes() {
    let config = StoreConfig {
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(300),
        },
        ..StoreConfig::default()
    };
    let (_t, _env, s) = store(config);
    let me = Keypair::generate();
    let (b, c) = (Keypair::generate().node_id(), Keypair::generate().node_id());
    assert_eq!(s.next_due().unwrap(), None);

    let p1 = s.enqueue(signed(&me, b, 1), 1_000).unwrap();
    let p2 = s.enqueue(signed(&me, c, 2), 1_000).unwrap();
    let p3 = s.enqueue(signed(&me, b, 3), 1_001).unwrap();
    assert_eq!((p1.id, p1.to, p1.attempts), (tid(1), b, 0));
    assert_eq!((p1.next_attempt_ms, p1.created_ms), (1_000, 1_000));
    assert_eq!(s.next_due().unwrap(), Some(1_000));
    assert_eq!(s.due(999).unwrap(), []);
    assert_eq!(s.due(1_000).unwrap(), [p1.clone(), p2.clone()]);
    assert_eq!(s.due(5_000).unwrap().len(), 3);

    // Failures back off: 100, 200, 300, 300 ms after the attempt.
    assert_eq!(s.failed(p1.id, 1_000).unwrap(), Some(1_100));
    assert_eq!(s.failed(p1.id, 1_100).unwrap(), Some(1_300));
    assert_eq!(s.failed(p1.id, 1_300).unwrap(), Some(1_600));
    assert_eq!(s.failed(p1.id, 1_600).unwrap(), Some(1_900));
    let read = s.outbox_read().unwrap();
    assert_eq!(read[0].attempts, 4);
    assert_eq!(read[0].next_attempt_ms, 1_900);
    assert_eq!(s.due(1_899).unwrap(), [p2.clone(), p3.clone()]);

    // A connection with b makes b's entries due now, not c's.
    s.failed(p3.id, 1_001).unwrap();
    assert_eq!(s.trigger(b, 1_050).unwrap(), 2);
    assert_eq!(s.trigger(b, 1_050).unwrap(), 0);
    let due: Vec<Tid> = s.due(1_050).unwrap().iter().map(|p| p.id).collect();
    assert_eq!(due, [p2.id, p1.id, p3.id]);
    assert_eq!(s.next_due().unwrap(), Some(1_000));

    // Outcomes.
    assert!(s.delivered(p2.id).unwrap());
    assert!(!s.delivered(p2.id).unwrap());
    assert!(s.rejected(p3.id).unwrap());
    assert_eq!(s.failed(p3.id, 2_000).unwrap(), None);
    assert_eq!(s.next_due().unwrap(), Some(1_050));
    assert_eq!(s.outbox_read().unwrap().len(), 1);
    assert!(s.outbox_remove(p1.id).unwrap());
    assert!(!s.outbox_remove(p1.id).unwrap());
    assert_eq!(s.next_due().unwrap(), None);
    assert_eq!(s.trigger(b, 9_000).unwrap(), 0);

    s.enqueue(signed(&me, b, 4), 0).unwrap();
    s.enqueue(signed(&me, c, 5), 0).unwrap();
    assert_eq!(s.outbox_clear().unwrap(), 2);
    assert_eq!(s.outbox_clear().unwrap(), 0);
    assert_eq!(
        (s.next_due().unwrap(), s.due(u64::MAX).unwrap()),
        (None, vec![])
    );
    assert_eq!(s.trigger(b, 0).unwrap(), 0);
}

#[test]
fn claims_lease_entries_until_an_outcome() {
    let (_t, _env, s) = store(StoreConfig::default());
    let me = Keypair::generate();
    let b = Keypair::generate().node_id();
    for i in 1..=3 {
        s.enqueue(signed(&me, b, i), 100).unwrap();
    }
    let claimed = s.claim_due(100, 30_000, 2).unwrap();
    assert_eq!(
        claimed.iter().map(|p| p.id).collect::<Vec<_>>(),
        [tid(1), tid(2)]
    );
    assert!(
        claimed
            .iter()
            .all(|p| p.next_attempt_ms == 30_100 && p.attempts == 0)
    );
    // Claimed entries are not due again until the lease runs out.
    assert_eq!(s.claim_due(100, 30_000, 16).unwrap()[0].id, tid(3));
    assert!(s.claim_due(200, 30_000, 16).unwrap().is_empty());
    assert_eq!(s.next_due().unwrap(), Some(30_100));
    assert_eq!(s.claim_due(30_100, 30_000, 16).unwrap().len(), 3);
    // A failure counts from the attempt's start.
    assert_eq!(s.failed(tid(1), 100).unwrap(), Some(1_100));
    assert_eq!(s.next_due().unwrap(), Some(1_100));
}

#[test]
fn jitter_is_seeded_and_within_the_cap() {
    let run = |seed| {
        let config = StoreConfig {
            jitter_seed: Some(seed),
            ..StoreConfig::default()
        };
        let (_t, _env, s) = store(config);
        let me = Keypair::generate();
        s.enqueue(signed(&me, Keypair::generate().node_id(), 1), 0)
            .unwrap();
        (1..=10)
            .map(|_| s.failed(tid(1), 0).unwrap().unwrap())
            .collect::<Vec<_>>()
    };
    let a = run(42);
    assert_eq!(a, run(42));
    let plain = Backoff::default();
    for (i, d) in a.iter().enumerate() {
        let full = plain.delay_ms(i as u32 + 1);
        assert!(full / 2 <= *d && *d <= full, "{i}: {d}");
    }
}

#[test]
fn inbox_and_outbox_survive_reopening_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, me) = (Keypair::generate(), Keypair::generate());
    let share = NotificationData::VaultShare {
        vault: VaultId::generate(),
        name: VaultName::new("ops").unwrap(),
        actions: vec!["clone".into(), "pull".into()],
    };
    let mut n = note(&a, me.node_id(), 9, "");
    n.data = share.clone();
    let out = signed(&me, a.node_id(), 77);
    {
        let env = open_env(tmp.path());
        let s = NotificationStore::open(env.clone(), StoreConfig::default()).unwrap();
        s.inbox_insert(tid(10), n.clone(), 5).unwrap();
        s.inbox_insert(tid(11), note(&a, me.node_id(), 10, "hello"), 6)
            .unwrap();
        s.inbox_read(false, Some(1), Order::Oldest).unwrap();
        s.enqueue(out.clone(), 1_000).unwrap();
        s.failed(tid(77), 1_000).unwrap();
        drop(s);
        close(env);
    }
    let env = open_env(tmp.path());
    let s = NotificationStore::open(env, StoreConfig::default()).unwrap();
    let inbox = s.inbox_read(false, None, Order::Oldest).unwrap();
    assert_eq!(inbox.len(), 2);
    assert_eq!(
        (inbox[0].id, inbox[0].read, inbox[0].received_ms),
        (tid(10), true, 5)
    );
    assert_eq!(inbox[0].notification, n);
    assert_eq!((inbox[1].id, inbox[1].read), (tid(11), false));
    // The duplicate index survived too.
    assert_eq!(s.inbox_insert(tid(12), n, 7).unwrap(), None);
    let outbox = s.outbox_read().unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].signed, out);
    assert_eq!((outbox[0].attempts, outbox[0].next_attempt_ms), (1, 2_000));
    assert_eq!(s.next_due().unwrap(), Some(2_000));
    assert_eq!(s.due(2_000).unwrap(), outbox);
}
