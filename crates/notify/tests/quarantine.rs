//! The quarantine for untrusted senders, through the store's and the actor's
//! public API.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::{Actor, Addr};
use futures_util::future::BoxFuture;
use keynode_core::{Clock, Keypair, NodeId, Signature, Tid};
use keynode_notify::messages::{
    BlockedRead, InboxRead, QuarantineAccept, QuarantineBlock, QuarantineClear, QuarantineRead,
    Receive, Unblock,
};
use keynode_notify::{
    BlockError, Deliver, DeliveryError, Env, ManagerConfig, Notification, NotificationData,
    NotificationStore, NotificationsManager, Order, QuarantineOutcome, Quarantined, ReceiveError,
    Rejection, SignedNotification, StoreConfig,
};
use tempfile::TempDir;

fn open_env(dir: &Path) -> Env {
    let key = keynode_core::datakey::DataKey::from_bytes([7; 32]);
    keynode_core::store::open_env(dir, &key, 1 << 26, 16).unwrap()
}

fn store(config: StoreConfig) -> (TempDir, NotificationStore) {
    let tmp = tempfile::tempdir().unwrap();
    let s = NotificationStore::open(open_env(tmp.path()), config).unwrap();
    (tmp, s)
}

fn caps(per_sender: usize, total: usize) -> StoreConfig {
    StoreConfig {
        quarantine_per_sender: per_sender,
        quarantine_cap: total,
        ..StoreConfig::default()
    }
}

fn tid(n: u128) -> Tid {
    Tid::from_bytes(n.to_be_bytes()).unwrap()
}

fn signed(from: &Keypair, to: NodeId, id: u128, msg: &str) -> SignedNotification {
    Notification {
        id: tid(id),
        from: from.node_id(),
        to,
        sent_ms: 1,
        data: NotificationData::general(msg).unwrap(),
    }
    .sign(from)
    .unwrap()
}

fn text(n: &Notification) -> String {
    match &n.data {
        NotificationData::General { message } => message.clone(),
        other => other.kind().to_string(),
    }
}

fn held(s: &NotificationStore) -> Vec<String> {
    let q = s.quarantine_read(None, Order::Oldest).unwrap();
    q.iter().map(|q| text(&q.notification)).collect()
}

fn held_id(outcome: QuarantineOutcome) -> Tid {
    match outcome {
        QuarantineOutcome::Held { id, .. } => id,
        other => panic!("not held: {other:?}"),
    }
}

/// Quarantines `msgs` from `from`, with ids and local ids from `base` on.
fn hold(s: &NotificationStore, from: &Keypair, me: NodeId, base: u128, msgs: &[&str]) {
    for (i, m) in msgs.iter().enumerate() {
        let n = base + i as u128;
        let outcome = s
            .quarantine_insert(tid(n), signed(from, me, n, m), n as u64)
            .unwrap();
        held_id(outcome);
    }
}

// ---- the store ---------------------------------------------------------------------

#[test]
fn the_per_sender_cap_evicts_only_that_senders_oldest() {
    let (_t, s) = store(caps(3, 10));
    let (a, b, me) = (
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate().node_id(),
    );
    hold(&s, &b, me, 1, &["b1", "b2"]);
    hold(&s, &a, me, 10, &["a1", "a2", "a3"]);
    let fourth = s
        .quarantine_insert(tid(20), signed(&a, me, 20, "a4"), 20)
        .unwrap();
    assert_eq!(
        fourth,
        QuarantineOutcome::Held {
            id: tid(20),
            evicted: 1
        }
    );
    hold(&s, &a, me, 21, &["a5"]);
    assert_eq!(held(&s), ["b1", "b2", "a3", "a4", "a5"]);
}

#[test]
fn the_total_cap_evicts_the_oldest_overall() {
    let (_t, s) = store(caps(16, 4));
    let me = Keypair::generate().node_id();
    let senders: Vec<Keypair> = (0..3).map(|_| Keypair::generate()).collect();
    hold(&s, &senders[0], me, 1, &["x1", "x2"]);
    hold(&s, &senders[1], me, 3, &["y1"]);
    hold(&s, &senders[2], me, 4, &["z1"]);
    assert_eq!(s.quarantine_len().unwrap(), 4);
    hold(&s, &senders[2], me, 5, &["z2"]);
    hold(&s, &senders[1], me, 6, &["y2"]);
    assert_eq!(held(&s), ["y1", "z1", "z2", "y2"]);
    let newest = s.quarantine_read(Some(2), Order::Newest).unwrap();
    let newest: Vec<String> = newest.iter().map(|q| text(&q.notification)).collect();
    assert_eq!(newest, ["y2", "z2"]);
}

#[test]
fn entries_keep_the_signed_notification_and_ids_stay_monotonic() {
    let (_t, s) = store(StoreConfig::default());
    let (a, me) = (Keypair::generate(), Keypair::generate().node_id());
    let first = signed(&a, me, 1, "one");
    assert_eq!(
        held_id(s.quarantine_insert(tid(500), first.clone(), 42).unwrap()),
        tid(500)
    );
    // A clock that went back: the local id still follows the newest.
    let second = signed(&a, me, 2, "two");
    assert_eq!(
        held_id(s.quarantine_insert(tid(7), second, 43).unwrap()),
        tid(501)
    );
    let q = &s.quarantine_read(Some(1), Order::Oldest).unwrap()[0];
    let want = Quarantined {
        id: tid(500),
        sender: a.node_id(),
        received_ms: 42,
        notification: first.notification.clone(),
        signature: first.signature,
    };
    assert_eq!(*q, want);
    assert_eq!(q.signed(), first);
    assert!(q.signed().verify().is_ok());
}

#[test]
fn a_retransmission_is_held_once() {
    let (_t, s) = store(StoreConfig::default());
    let (a, b, me) = (
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate().node_id(),
    );
    let n = signed(&a, me, 1, "again");
    held_id(s.quarantine_insert(tid(10), n.clone(), 0).unwrap());
    assert_eq!(
        s.quarantine_insert(tid(11), n.clone(), 1).unwrap(),
        QuarantineOutcome::Duplicate
    );
    // Another sender may use the same id.
    held_id(
        s.quarantine_insert(tid(12), signed(&b, me, 1, "b"), 2)
            .unwrap(),
    );
    assert_eq!(s.quarantine_len().unwrap(), 2);
    // Once cleared, it is no longer a duplicate.
    assert_eq!(s.quarantine_clear().unwrap(), 2);
    assert_eq!(s.quarantine_clear().unwrap(), 0);
    held_id(s.quarantine_insert(tid(13), n, 3).unwrap());
}

#[test]
fn accept_moves_a_senders_entries_into_the_inbox_in_order() {
    let (_t, s) = store(StoreConfig::default());
    let (a, b, me) = (
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate().node_id(),
    );
    hold(&s, &a, me, 1, &["a1"]);
    hold(&s, &b, me, 2, &["b1"]);
    hold(&s, &a, me, 3, &["a2", "a3"]);
    // a2 reached the inbox already (a was trusted for a while).
    let a2 = signed(&a, me, 3, "a2").notification;
    s.inbox_insert(tid(50), a2, 3).unwrap().unwrap();

    assert_eq!(s.quarantine_accept(a.node_id(), tid(100)).unwrap(), 2);
    assert_eq!(held(&s), ["b1"]);
    let inbox = s.inbox_read(false, None, Order::Oldest).unwrap();
    let got: Vec<(Tid, String, u64)> = inbox
        .iter()
        .map(|e| (e.id, text(&e.notification), e.received_ms))
        .collect();
    let want = [
        (tid(50), "a2".to_string(), 3),
        (tid(100), "a1".to_string(), 1),
        (tid(101), "a3".to_string(), 4),
    ];
    assert_eq!(got, want);
    assert!(inbox.iter().skip(1).all(|e| !e.read));
    assert_eq!(s.quarantine_accept(a.node_id(), tid(200)).unwrap(), 0);
}

#[test]
fn accept_respects_the_inbox_cap() {
    let config = StoreConfig {
        inbox_cap: 2,
        ..StoreConfig::default()
    };
    let (_t, s) = store(config);
    let (a, me) = (Keypair::generate(), Keypair::generate().node_id());
    hold(&s, &a, me, 1, &["a1", "a2", "a3"]);
    assert_eq!(s.quarantine_accept(a.node_id(), tid(100)).unwrap(), 3);
    let inbox = s.inbox_read(false, None, Order::Oldest).unwrap();
    let got: Vec<String> = inbox.iter().map(|e| text(&e.notification)).collect();
    assert_eq!(got, ["a2", "a3"]);
    assert_eq!(s.quarantine_len().unwrap(), 0);
}

#[test]
fn block_drops_a_senders_entries_and_what_it_sends_next() {
    let (_t, s) = store(StoreConfig::default());
    let (a, b, me) = (
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate().node_id(),
    );
    hold(&s, &a, me, 1, &["a1", "a2"]);
    hold(&s, &b, me, 3, &["b1"]);
    assert_eq!(s.quarantine_block(a.node_id()).unwrap(), 2);
    assert_eq!(held(&s), ["b1"]);
    assert!(s.is_blocked(a.node_id()).unwrap());
    assert!(!s.is_blocked(b.node_id()).unwrap());
    assert_eq!(s.blocked().unwrap(), [a.node_id()]);
    assert_eq!(
        s.quarantine_insert(tid(10), signed(&a, me, 10, "a3"), 10)
            .unwrap(),
        QuarantineOutcome::Blocked
    );
    assert_eq!(held(&s), ["b1"]);
    // Blocking again changes nothing; clearing leaves the blocked set.
    assert_eq!(s.quarantine_block(a.node_id()).unwrap(), 0);
    s.quarantine_clear().unwrap();
    assert!(s.is_blocked(a.node_id()).unwrap());
    // Unblocked, it is quarantined again.
    assert!(s.unblock(a.node_id()).unwrap());
    assert!(!s.unblock(a.node_id()).unwrap());
    hold(&s, &a, me, 11, &["a4"]);
    assert_eq!(held(&s), ["a4"]);
}

#[test]
fn accept_after_block_unblocks() {
    let (_t, s) = store(StoreConfig::default());
    let (a, me) = (Keypair::generate(), Keypair::generate().node_id());
    hold(&s, &a, me, 1, &["a1"]);
    assert_eq!(s.quarantine_block(a.node_id()).unwrap(), 1);
    assert_eq!(s.quarantine_accept(a.node_id(), tid(100)).unwrap(), 0);
    assert!(!s.is_blocked(a.node_id()).unwrap());
    assert!(s.blocked().unwrap().is_empty());
    hold(&s, &a, me, 2, &["a2"]);
    assert_eq!(s.quarantine_accept(a.node_id(), tid(101)).unwrap(), 1);
    let inbox = s.inbox_read(false, None, Order::Oldest).unwrap();
    assert_eq!(text(&inbox[0].notification), "a2");
}

#[test]
fn the_blocked_set_is_capped_and_a_full_one_changes_nothing() {
    let config = StoreConfig {
        blocked_cap: 2,
        ..StoreConfig::default()
    };
    let (_t, s) = store(config);
    let me = Keypair::generate().node_id();
    let [a, b, c] = [(); 3].map(|()| Keypair::generate());
    hold(&s, &c, me, 1, &["c1"]);
    s.quarantine_block(a.node_id()).unwrap();
    s.quarantine_block(b.node_id()).unwrap();
    let err = s.quarantine_block(c.node_id()).unwrap_err();
    assert!(
        matches!(err, BlockError::Full { sender, cap: 2 } if sender == c.node_id()),
        "{err}"
    );
    assert_eq!(held(&s), ["c1"]);
    assert!(!s.is_blocked(c.node_id()).unwrap());
    // One already blocked may be blocked again.
    assert_eq!(s.quarantine_block(a.node_id()).unwrap(), 0);
    assert!(s.unblock(b.node_id()).unwrap());
    assert_eq!(s.quarantine_block(c.node_id()).unwrap(), 1);
}

#[test]
fn the_quarantine_and_the_blocked_set_survive_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, me) = (
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate().node_id(),
    );
    let config = caps(2, 8);
    {
        let env = open_env(tmp.path());
        let s = NotificationStore::open(env.clone(), config.clone()).unwrap();
        hold(&s, &a, me, 1, &["a1", "a2"]);
        s.quarantine_block(b.node_id()).unwrap();
        drop(s);
        assert!(
            env.prepare_for_closing()
                .expect("every clone of the env is gone")
                .wait_timeout(Duration::from_secs(10))
        );
    }
    let s = NotificationStore::open(open_env(tmp.path()), config).unwrap();
    assert_eq!(held(&s), ["a1", "a2"]);
    assert!(s.is_blocked(b.node_id()).unwrap());
    // The duplicate and per-sender indexes survived too.
    assert_eq!(
        s.quarantine_insert(tid(9), signed(&a, me, 1, "a1"), 9)
            .unwrap(),
        QuarantineOutcome::Duplicate
    );
    hold(&s, &a, me, 10, &["a3"]);
    assert_eq!(held(&s), ["a2", "a3"]);
    assert_eq!(s.quarantine_accept(a.node_id(), tid(100)).unwrap(), 2);
}

// ---- the actor ---------------------------------------------------------------------

/// A clock the test sets.
struct Manual(AtomicU64);

impl Clock for Manual {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Sends go nowhere: these tests only receive.
struct Nowhere;

impl Deliver for Nowhere {
    fn deliver(
        &self,
        _to: NodeId,
        _n: SignedNotification,
    ) -> BoxFuture<'static, Result<(), DeliveryError>> {
        Box::pin(async { Err(DeliveryError::Unreachable("nowhere".into())) })
    }
}

struct Node {
    key: Arc<Keypair>,
    clock: Arc<Manual>,
    addr: Addr<NotificationsManager>,
    _tmp: TempDir,
}

impl Node {
    fn start(config: StoreConfig) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(NotificationStore::open(open_env(tmp.path()), config).unwrap());
        let key = Arc::new(Keypair::generate());
        let clock = Arc::new(Manual(AtomicU64::new(1_700_000_000_000)));
        let addr = NotificationsManager::new(
            store,
            key.clone(),
            clock.clone(),
            Arc::new(Nowhere),
            ManagerConfig::default(),
        )
        .start();
        Node {
            key,
            clock,
            addr,
            _tmp: tmp,
        }
    }

    fn id(&self) -> NodeId {
        self.key.node_id()
    }

    async fn receive(
        &self,
        signed: SignedNotification,
        sender: NodeId,
        trusted: bool,
    ) -> Result<Option<Tid>, ReceiveError> {
        let msg = Receive {
            signed,
            sender,
            trusted,
        };
        self.addr.send(msg).await.unwrap()
    }

    /// Receives from an untrusted `from`, which must be refused.
    async fn refused(&self, signed: SignedNotification, from: NodeId) -> ReceiveError {
        self.receive(signed, from, false).await.unwrap_err()
    }

    async fn quarantine(&self) -> Vec<Quarantined> {
        let read = QuarantineRead {
            limit: None,
            order: Order::Oldest,
        };
        self.addr.send(read).await.unwrap().unwrap()
    }

    async fn inbox(&self) -> Vec<String> {
        let read = InboxRead {
            order: Order::Oldest,
            ..InboxRead::default()
        };
        let inbox = self.addr.send(read).await.unwrap().unwrap();
        inbox.iter().map(|e| text(&e.notification)).collect()
    }
}

/// The one refusal, as the sender would see it.
fn is_the_uniform_refusal(e: &ReceiveError) -> bool {
    matches!(e, ReceiveError::Refused(Rejection)) && e.to_string() == "notification refused"
}

#[actix_rt::test]
async fn an_untrusted_sender_is_quarantined_and_refused_like_a_forger() {
    let me = Node::start(StoreConfig::default());
    let a = Keypair::generate();
    let good = signed(&a, me.id(), 1, "a vault for you");
    let mut forged = good.clone();
    forged.signature = Signature::from_bytes([3; 64]);

    let quarantined = me.refused(good.clone(), a.node_id()).await;
    let forgery = me.refused(forged, a.node_id()).await;
    assert!(is_the_uniform_refusal(&quarantined), "{quarantined}");
    assert!(is_the_uniform_refusal(&forgery), "{forgery}");
    assert_eq!(quarantined.to_string(), forgery.to_string());
    assert_eq!(format!("{quarantined:?}"), format!("{forgery:?}"));

    let q = me.quarantine().await;
    assert_eq!(q.len(), 1);
    assert_eq!(
        (q[0].sender, q[0].received_ms),
        (a.node_id(), 1_700_000_000_000)
    );
    assert_eq!(q[0].signed(), good);
    assert!(me.inbox().await.is_empty());
    // A retransmission (its answer was lost) is held once, refused again.
    let again = me.refused(good, a.node_id()).await;
    assert!(is_the_uniform_refusal(&again));
    assert_eq!(me.quarantine().await.len(), 1);
}

#[actix_rt::test]
async fn a_notification_failing_another_rule_is_never_quarantined() {
    let me = Node::start(StoreConfig::default());
    let (a, c) = (Keypair::generate(), Keypair::generate());
    let good = signed(&a, me.id(), 1, "hi");
    let mut bad_sig = good.clone();
    bad_sig.signature = c.sign(&good.notification.signing_bytes().unwrap());
    let to_other = signed(&a, c.node_id(), 2, "not yours");
    let mut oversized = good.clone();
    oversized.notification.data = NotificationData::General {
        message: "x".repeat(keynode_notify::MAX_MESSAGE + 1),
    };
    let cases = [
        (bad_sig, a.node_id()),
        (to_other, a.node_id()),
        // The connection proved c, the notification says a.
        (good.clone(), c.node_id()),
        (oversized, a.node_id()),
    ];
    for (s, sender) in cases {
        let e = me.refused(s, sender).await;
        assert!(is_the_uniform_refusal(&e), "{e}");
    }
    assert!(me.quarantine().await.is_empty());
    assert!(me.inbox().await.is_empty());
}

#[actix_rt::test]
async fn accept_moves_the_senders_notifications_into_the_inbox() {
    let me = Node::start(StoreConfig::default());
    let (a, b) = (Keypair::generate(), Keypair::generate());
    for (i, m) in ["a1", "a2"].iter().enumerate() {
        me.refused(signed(&a, me.id(), i as u128, m), a.node_id())
            .await;
        me.clock.0.fetch_add(10, Ordering::SeqCst);
    }
    me.refused(signed(&b, me.id(), 9, "b1"), b.node_id()).await;
    let sender = a.node_id();
    let moved = me.addr.send(QuarantineAccept { sender }).await.unwrap();
    assert_eq!(moved.unwrap(), 2);
    assert_eq!(me.inbox().await, ["a1", "a2"]);
    let q = me.quarantine().await;
    assert_eq!(
        q.iter().map(|q| q.sender).collect::<Vec<_>>(),
        [b.node_id()]
    );
    // Once trusted (the agent's part), a's notifications go to the inbox.
    let next = me.receive(signed(&a, me.id(), 5, "a3"), sender, true).await;
    assert!(next.unwrap().is_some());
    assert_eq!(me.inbox().await, ["a1", "a2", "a3"]);
    let cleared = me.addr.send(QuarantineClear {}).await.unwrap();
    assert_eq!(cleared.unwrap(), 1);
    assert!(me.quarantine().await.is_empty());
}

#[actix_rt::test]
async fn a_blocked_sender_is_dropped_with_the_same_answer() {
    let me = Node::start(StoreConfig::default());
    let a = Keypair::generate();
    let sender = a.node_id();
    me.refused(signed(&a, me.id(), 1, "a1"), sender).await;
    let removed = me.addr.send(QuarantineBlock { sender }).await.unwrap();
    assert_eq!(removed.unwrap(), 1);
    let blocked = me.addr.send(BlockedRead {}).await.unwrap().unwrap();
    assert_eq!(blocked, [sender]);

    let e = me.refused(signed(&a, me.id(), 2, "a2"), sender).await;
    assert!(is_the_uniform_refusal(&e), "{e}");
    assert!(me.quarantine().await.is_empty());

    // Accepting a blocked sender unblocks it.
    let moved = me.addr.send(QuarantineAccept { sender }).await.unwrap();
    assert_eq!(moved.unwrap(), 0);
    assert!(
        me.addr
            .send(BlockedRead {})
            .await
            .unwrap()
            .unwrap()
            .is_empty()
    );
    me.refused(signed(&a, me.id(), 3, "a3"), sender).await;
    assert_eq!(me.quarantine().await.len(), 1);

    // Block, then unblock through the actor.
    me.addr
        .send(QuarantineBlock { sender })
        .await
        .unwrap()
        .unwrap();
    assert!(me.addr.send(Unblock { sender }).await.unwrap().unwrap());
    assert!(!me.addr.send(Unblock { sender }).await.unwrap().unwrap());
}

#[actix_rt::test]
async fn a_flood_from_many_senders_stays_within_the_caps() {
    let me = Node::start(StoreConfig::default());
    let cap = keynode_notify::DEFAULT_QUARANTINE_CAP;
    let per_sender = keynode_notify::DEFAULT_QUARANTINE_PER_SENDER;
    // One node sends many; then many nodes send one each.
    let loud = Keypair::generate();
    for i in 0..40 {
        let n = signed(&loud, me.id(), i, &format!("loud{i}"));
        me.refused(n, loud.node_id()).await;
    }
    let q = me.quarantine().await;
    assert_eq!(q.len(), per_sender);
    assert_eq!(text(&q[0].notification), format!("loud{}", 40 - per_sender));

    let crowd: Vec<Keypair> = (0..cap + 100).map(|_| Keypair::generate()).collect();
    for (i, k) in crowd.iter().enumerate() {
        let n = signed(k, me.id(), 1, &format!("crowd{i}"));
        let e = me.refused(n, k.node_id()).await;
        assert!(is_the_uniform_refusal(&e));
    }
    let q = me.quarantine().await;
    assert_eq!(q.len(), cap);
    // The oldest went first: what is left is the newest `cap`, in order.
    let want: Vec<String> = (100..cap + 100).map(|i| format!("crowd{i}")).collect();
    let got: Vec<String> = q.iter().map(|q| text(&q.notification)).collect();
    assert_eq!(got, want);
    assert!(q.windows(2).all(|w| w[0].id < w[1].id));
}
