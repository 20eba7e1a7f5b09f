//! Two `NotificationsManager`s wired through an in-memory `Deliver`.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, Addr, Arbiter};
use futures_util::future::BoxFuture;
use keynode_core::{Clock, Keypair, NodeId, SystemClock, Tid};
use keynode_notify::messages::{
    InboxClear, InboxRead, InboxRemove, OutboxClear, OutboxRead, OutboxRemove, PeerSeen,
    QuarantineRead, Receive,
};
use keynode_notify::{
    Backoff, Deliver, DeliveryError, Env, ManagerConfig, Notification, NotificationData,
    NotificationStore, NotificationsManager, Order, ReceiveError, Rejection, SendError,
    SignedNotification, StoreConfig, messages,
};
use tempfile::TempDir;
use tokio::time::Instant;

fn open_env(dir: &Path) -> Env {
    let key = keynode_core::datakey::DataKey::from_bytes([7; 32]);
    keynode_core::store::open_env(dir, &key, 1 << 26, 16).unwrap()
}

/// Wall-clock milliseconds that advance with tokio's clock, so paused time
/// drives both the retry timer and the outbox schedule.
struct TokioClock {
    base_ms: u64,
    start: Instant,
}

impl TokioClock {
    fn shared() -> Arc<dyn Clock> {
        Arc::new(TokioClock {
            base_ms: 1_700_000_000_000,
            start: Instant::now(),
        })
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.base_ms + self.start.elapsed().as_millis() as u64
    }
}

/// The network between two managers: delivers to `target`'s `Receive` as
/// `from` (the id a handshake would prove), while `online`, with the trust
/// flag the recipient would have looked up.
struct Link {
    from: NodeId,
    target: Mutex<Option<Addr<NotificationsManager>>>,
    online: AtomicBool,
    trusted: AtomicBool,
    /// What `Deliver::connected` says (a live connection).
    connected: AtomicBool,
    attempts: Mutex<Vec<(Instant, Result<(), DeliveryError>)>>,
}

impl Link {
    fn new(from: NodeId, online: bool, trusted: bool) -> Arc<Link> {
        Arc::new(Link {
            from,
            target: Mutex::new(None),
            online: AtomicBool::new(online),
            trusted: AtomicBool::new(trusted),
            connected: AtomicBool::new(false),
            attempts: Mutex::new(Vec::new()),
        })
    }

    fn connect(&self, to: &Addr<NotificationsManager>) {
        *self.target.lock().unwrap() = Some(to.clone());
    }

    fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::SeqCst);
    }

    fn attempts(&self) -> Vec<(Instant, Result<(), DeliveryError>)> {
        self.attempts.lock().unwrap().clone()
    }
}

struct Wire(Arc<Link>);

impl Deliver for Wire {
    fn deliver(
        &self,
        _to: NodeId,
        n: SignedNotification,
    ) -> BoxFuture<'static, Result<(), DeliveryError>> {
        let link = Arc::clone(&self.0);
        Box::pin(async move {
            let target = link.target.lock().unwrap().clone();
            let outcome = match target {
                Some(addr) if link.online.load(Ordering::SeqCst) => {
                    let receive = Receive {
                        signed: n,
                        sender: link.from,
                        trusted: link.trusted.load(Ordering::SeqCst),
                    };
                    match addr.send(receive).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(ReceiveError::Refused(r))) => {
                            Err(DeliveryError::Rejected(r.to_string()))
                        }
                        Ok(Err(e)) => Err(DeliveryError::Unreachable(e.to_string())),
                        Err(e) => Err(DeliveryError::Unreachable(e.to_string())),
                    }
                }
                _ => Err(DeliveryError::Unreachable("offline".into())),
            };
            link.attempts
                .lock()
                .unwrap()
                .push((Instant::now(), outcome.clone()));
            outcome
        })
    }

    fn connected(&self, _to: NodeId) -> bool {
        self.0.connected.load(Ordering::SeqCst)
    }
}

struct Node {
    key: Arc<Keypair>,
    addr: Addr<NotificationsManager>,
    link: Arc<Link>,
    _tmp: TempDir,
}

impl Node {
    fn id(&self) -> NodeId {
        self.key.node_id()
    }
}

fn manager(
    env: Env,
    key: Arc<Keypair>,
    clock: Arc<dyn Clock>,
    link: Arc<Link>,
    store: StoreConfig,
) -> NotificationsManager {
    let store = Arc::new(NotificationStore::open(env, store).unwrap());
    NotificationsManager::new(
        store,
        key,
        clock,
        Arc::new(Wire(link)),
        ManagerConfig::default(),
    )
}

fn start(clock: Arc<dyn Clock>, store: StoreConfig) -> Node {
    let tmp = tempfile::tempdir().unwrap();
    let key = Arc::new(Keypair::generate());
    let link = Link::new(key.node_id(), true, true);
    let addr = manager(
        open_env(tmp.path()),
        key.clone(),
        clock,
        link.clone(),
        store,
    )
    .start();
    Node {
        key,
        addr,
        link,
        _tmp: tmp,
    }
}

/// Two nodes whose links point at each other.
fn pair(clock: Arc<dyn Clock>, store: StoreConfig) -> (Node, Node) {
    let a = start(clock.clone(), store.clone());
    let b = start(clock, store);
    a.link.connect(&b.addr);
    b.link.connect(&a.addr);
    (a, b)
}

fn general(msg: &str) -> NotificationData {
    NotificationData::general(msg).unwrap()
}

async fn send(from: &Node, to: NodeId, msg: &str) -> Tid {
    from.addr
        .send(messages::Send {
            to,
            data: general(msg),
        })
        .await
        .unwrap()
        .unwrap()
}

async fn inbox(node: &Node) -> Vec<keynode_notify::InboxEntry> {
    node.addr
        .send(InboxRead {
            unread_only: false,
            limit: None,
            order: Order::Oldest,
        })
        .await
        .unwrap()
        .unwrap()
}

async fn outbox(node: &Node) -> Vec<keynode_notify::Pending> {
    node.addr.send(OutboxRead {}).await.unwrap().unwrap()
}

/// Polls `f` every 5 ms (tokio time) until it holds or `within` has passed.
async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[actix_rt::test]
async fn a_general_notification_arrives_and_is_readable() {
    let (a, b) = pair(Arc::new(SystemClock), StoreConfig::default());
    let sent = send(&a, b.id(), "hello b").await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            outbox(&a).await.is_empty()
        })
        .await
    );

    let got = b
        .addr
        .send(InboxRead {
            unread_only: true,
            limit: None,
            order: Order::Newest,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 1);
    let n = &got[0].notification;
    assert_eq!((n.id, n.from, n.to), (sent, a.id(), b.id()));
    assert_eq!(n.data, general("hello b"));
    assert!(!got[0].read);
    assert!(
        b.addr
            .send(InboxRead {
                unread_only: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .unwrap()
            .is_empty()
    );
    assert_eq!(a.link.attempts().len(), 1);

    // Remove and clear go through the actor too.
    send(&a, b.id(), "second").await;
    send(&a, b.id(), "third").await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            inbox(&b).await.len() == 3
        })
        .await
    );
    let first = got[0].id;
    assert!(
        b.addr
            .send(InboxRemove { id: first })
            .await
            .unwrap()
            .unwrap()
    );
    assert!(
        !b.addr
            .send(InboxRemove { id: first })
            .await
            .unwrap()
            .unwrap()
    );
    assert_eq!(b.addr.send(InboxClear {}).await.unwrap().unwrap(), 2);
    assert!(inbox(&b).await.is_empty());
    assert!(inbox(&a).await.is_empty());
}

#[actix_rt::test]
async fn an_oversized_message_is_refused_before_queueing() {
    let (a, b) = pair(Arc::new(SystemClock), StoreConfig::default());
    let err = a
        .addr
        .send(messages::Send {
            to: b.id(),
            data: NotificationData::General {
                message: "x".repeat(keynode_notify::MAX_MESSAGE + 1),
            },
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, SendError::Invalid(_)), "{err}");
    assert!(outbox(&a).await.is_empty());
}

#[actix_rt::test]
async fn an_offline_recipient_gets_it_at_once_when_seen_again() {
    // A first retry 30 s away: only PeerSeen can deliver within the test.
    let store = StoreConfig {
        backoff: Backoff {
            initial: Duration::from_secs(30),
            max: Duration::from_secs(60),
        },
        ..StoreConfig::default()
    };
    let (a, b) = pair(Arc::new(SystemClock), store);
    a.link.set_online(false);
    let id = send(&a, b.id(), "are you there").await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            outbox(&a).await.first().is_some_and(|p| p.attempts == 1)
        })
        .await
    );
    let queued = outbox(&a).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(
        (queued[0].id, queued[0].to, queued[0].attempts),
        (id, b.id(), 1)
    );
    assert!(inbox(&b).await.is_empty());

    a.link.set_online(true);
    // Another peer appearing changes nothing.
    let other = Keypair::generate().node_id();
    assert_eq!(
        a.addr
            .send(PeerSeen { node: other })
            .await
            .unwrap()
            .unwrap(),
        0
    );
    assert_eq!(
        a.addr
            .send(PeerSeen { node: b.id() })
            .await
            .unwrap()
            .unwrap(),
        1
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            inbox(&b).await.len() == 1
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            outbox(&a).await.is_empty()
        })
        .await
    );
    assert_eq!(a.link.attempts().len(), 2);
}

#[actix_rt::test]
async fn the_retry_timer_reaches_a_returning_recipient_within_a_minute() {
    tokio::time::pause();
    let clock = TokioClock::shared();
    let (a, b) = pair(clock, StoreConfig::default());
    a.link.set_online(false);
    let t0 = Instant::now();
    send(&a, b.id(), "queued").await;

    // Ten (virtual) minutes offline: retries back off 1, 2, 4 … 32 s, then
    // every 60 s.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let tried: Vec<Duration> = a.link.attempts().iter().map(|(t, _)| *t - t0).collect();
    let gaps: Vec<u64> = tried
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis() as u64)
        .collect();
    let expected = [
        1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000,
    ];
    assert!(gaps.len() >= expected.len() + 3, "{gaps:?}");
    for (i, gap) in gaps.iter().enumerate() {
        let want = expected.get(i).copied().unwrap_or(60_000);
        assert!(
            gap.abs_diff(want) <= 20,
            "gap {i}: {gap} ms, expected {want}: {gaps:?}"
        );
    }
    assert_eq!(outbox(&a).await[0].attempts as usize, tried.len());

    // Back online, with no PeerSeen: the timer alone delivers it in time.
    a.link.set_online(true);
    let back = Instant::now();
    assert!(
        eventually(Duration::from_secs(61), || async {
            inbox(&b).await.len() == 1
        })
        .await
    );
    assert!(
        back.elapsed() <= Duration::from_secs(60),
        "{:?}",
        back.elapsed()
    );
    assert!(
        eventually(Duration::from_secs(1), || async {
            outbox(&a).await.is_empty()
        })
        .await
    );
}

#[actix_rt::test]
async fn an_untrusted_sender_is_refused_the_entry_dropped_and_the_recipient_quarantines_it() {
    let (a, b) = pair(Arc::new(SystemClock), StoreConfig::default());
    a.link.trusted.store(false, Ordering::SeqCst);
    send(&a, b.id(), "let me in").await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            outbox(&a).await.is_empty()
        })
        .await
    );
    assert_eq!(
        a.link
            .attempts()
            .into_iter()
            .map(|(_, r)| r)
            .collect::<Vec<_>>(),
        [Err(DeliveryError::Rejected("notification refused".into()))]
    );
    assert!(inbox(&b).await.is_empty());
    // The recipient quarantined it: the sender could not tell.
    let held = b
        .addr
        .send(QuarantineRead::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].sender, a.id());
    assert_eq!(held[0].notification.data, general("let me in"));
}

#[actix_rt::test]
async fn receive_refuses_uniformly_and_stores_a_retransmission_once() {
    let (a, b) = pair(Arc::new(SystemClock), StoreConfig::default());
    let stranger = Keypair::generate();
    let signed = Notification {
        id: Tid::from_bytes([9; 16]).unwrap(),
        from: a.id(),
        to: b.id(),
        sent_ms: 0,
        data: general("hi"),
    }
    .sign(&a.key)
    .unwrap();
    let receive = |signed: SignedNotification, sender: NodeId, trusted: bool| {
        b.addr.send(Receive {
            signed,
            sender,
            trusted,
        })
    };

    let mut forged = signed.clone();
    forged.notification.data = general("hi!");
    let to_a = Notification {
        to: a.id(),
        ..signed.notification.clone()
    }
    .sign(&a.key)
    .unwrap();
    for (s, sender, trusted) in [
        (signed.clone(), a.id(), false),
        (signed.clone(), stranger.node_id(), true),
        (forged, a.id(), true),
        (to_a, a.id(), true),
    ] {
        let err = receive(s, sender, trusted).await.unwrap().unwrap_err();
        assert!(matches!(err, ReceiveError::Refused(Rejection)));
        assert_eq!(err.to_string(), "notification refused");
    }
    assert!(inbox(&b).await.is_empty());

    let first = receive(signed.clone(), a.id(), true)
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_some());
    assert_eq!(receive(signed, a.id(), true).await.unwrap().unwrap(), None);
    assert_eq!(inbox(&b).await.len(), 1);
}

#[actix_rt::test]
async fn outbox_entries_survive_a_restart_and_go_out_after_it() {
    let store = StoreConfig {
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
        },
        ..StoreConfig::default()
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let b = start(clock.clone(), store.clone());

    // a runs on its own arbiter (thread), so it can die like a process.
    let tmp = tempfile::tempdir().unwrap();
    let key = Arc::new(Keypair::generate());
    let link = Link::new(key.node_id(), false, true);
    link.connect(&b.addr);
    let env = open_env(tmp.path());
    let arbiter = Arbiter::new();
    let first = manager(
        env.clone(),
        key.clone(),
        clock.clone(),
        link.clone(),
        store.clone(),
    );
    let a = NotificationsManager::start_in_arbiter(&arbiter.handle(), move |_| first);
    let mut ids = Vec::new();
    for msg in ["one", "two"] {
        let data = general(msg);
        ids.push(
            a.send(messages::Send { to: b.id(), data })
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            link.attempts().len() >= 4
        })
        .await
    );

    // Kill a: its thread, actor and store go away; close its environment.
    arbiter.stop();
    tokio::task::spawn_blocking(move || arbiter.join())
        .await
        .unwrap()
        .unwrap();
    drop(a);
    let closing = env
        .prepare_for_closing()
        .expect("every clone of the env is gone");
    assert!(
        tokio::task::spawn_blocking(move || closing.wait_timeout(Duration::from_secs(10)))
            .await
            .unwrap()
    );
    assert!(inbox(&b).await.is_empty());

    // b comes online; a restarts on the same directory and delivers the queue.
    link.set_online(true);
    let attempts_before = link.attempts().len();
    let env = open_env(tmp.path());
    let restarted = manager(env, key, clock, link.clone(), store).start();
    let queued = restarted.send(OutboxRead {}).await.unwrap().unwrap();
    assert_eq!(queued.len(), 2);
    assert!(
        eventually(Duration::from_secs(5), || async {
            inbox(&b).await.len() == 2
        })
        .await
    );
    // Deliveries run concurrently: order is not guaranteed.
    let mut got: Vec<Tid> = inbox(&b).await.iter().map(|e| e.notification.id).collect();
    got.sort();
    assert_eq!(got, ids);
    assert!(
        eventually(Duration::from_secs(5), || async {
            restarted
                .send(OutboxRead {})
                .await
                .unwrap()
                .unwrap()
                .is_empty()
        })
        .await
    );
    assert_eq!(link.attempts().len(), attempts_before + 2);
}

#[actix_rt::test]
async fn outbox_remove_and_clear_cancel_deliveries() {
    let store = StoreConfig {
        backoff: Backoff {
            initial: Duration::from_secs(30),
            max: Duration::from_secs(60),
        },
        ..StoreConfig::default()
    };
    let (a, b) = pair(Arc::new(SystemClock), store);
    a.link.set_online(false);
    let one = send(&a, b.id(), "one").await;
    send(&a, b.id(), "two").await;
    send(&a, b.id(), "three").await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            a.link.attempts().len() == 3
        })
        .await
    );
    assert!(
        a.addr
            .send(OutboxRemove { id: one })
            .await
            .unwrap()
            .unwrap()
    );
    assert!(
        !a.addr
            .send(OutboxRemove { id: one })
            .await
            .unwrap()
            .unwrap()
    );
    assert_eq!(outbox(&a).await.len(), 2);
    assert_eq!(a.addr.send(OutboxClear {}).await.unwrap().unwrap(), 2);
    a.link.set_online(true);
    assert_eq!(
        a.addr
            .send(PeerSeen { node: b.id() })
            .await
            .unwrap()
            .unwrap(),
        0
    );
    // A later notification goes out: had the removed ones been still queued,
    // they would have gone with it (or before it).
    let four = send(&a, b.id(), "four").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            outbox(&a).await.is_empty() && !inbox(&b).await.is_empty()
        })
        .await
    );
    let got: Vec<Tid> = inbox(&b).await.iter().map(|e| e.notification.id).collect();
    assert_eq!(got, vec![four]);
    assert_eq!(a.link.attempts().len(), 4);
}

/// A sink that holds every delivery until the test opens its gate, and counts
/// how many overlap.
struct SlowState {
    current: AtomicUsize,
    peak: AtomicUsize,
    done: AtomicUsize,
    gate: tokio::sync::Semaphore,
}

impl Default for SlowState {
    fn default() -> Self {
        SlowState {
            current: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(0),
        }
    }
}

struct Slow(Arc<SlowState>);

impl Deliver for Slow {
    fn deliver(
        &self,
        _to: NodeId,
        _n: SignedNotification,
    ) -> BoxFuture<'static, Result<(), DeliveryError>> {
        let s = Arc::clone(&self.0);
        Box::pin(async move {
            let now = s.current.fetch_add(1, Ordering::SeqCst) + 1;
            s.peak.fetch_max(now, Ordering::SeqCst);
            drop(s.gate.acquire().await);
            s.current.fetch_sub(1, Ordering::SeqCst);
            s.done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

#[actix_rt::test]
async fn concurrent_deliveries_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let store =
        Arc::new(NotificationStore::open(open_env(tmp.path()), StoreConfig::default()).unwrap());
    let sink = Arc::new(SlowState::default());
    let config = ManagerConfig {
        max_concurrent: 3,
        ..ManagerConfig::default()
    };
    let a = NotificationsManager::new(
        store,
        Arc::new(Keypair::generate()),
        Arc::new(SystemClock),
        Arc::new(Slow(sink.clone())),
        config,
    )
    .start();
    let to = Keypair::generate().node_id();
    for i in 0..12 {
        let data = general(&format!("n{i}"));
        a.send(messages::Send { to, data }).await.unwrap().unwrap();
    }
    // Twelve are queued and none can finish: exactly the bound is in flight
    // (an unbounded manager would have all twelve in the sink by now).
    assert!(
        eventually(Duration::from_secs(10), || async {
            sink.current.load(Ordering::SeqCst) == 3
        })
        .await
    );
    sink.gate.add_permits(12);
    assert!(
        eventually(Duration::from_secs(10), || async {
            sink.done.load(Ordering::SeqCst) == 12
        })
        .await
    );
    assert_eq!(sink.peak.load(Ordering::SeqCst), 3);
    assert!(
        eventually(Duration::from_secs(5), || async {
            a.send(OutboxRead {}).await.unwrap().unwrap().is_empty()
        })
        .await
    );
}

#[actix_rt::test]
async fn a_connected_recipient_has_it_when_the_send_returns_and_the_outbox_is_skipped() {
    let (a, b) = pair(Arc::new(SystemClock), StoreConfig::default());
    a.link.connected.store(true, Ordering::SeqCst);
    let sent = send(&a, b.id(), "direct").await;
    // Delivered before the reply: no wait, and never queued.
    let got = inbox(&b).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].notification.id, sent);
    assert!(outbox(&a).await.is_empty());
    assert_eq!(a.link.attempts().len(), 1);
}

#[actix_rt::test]
async fn a_connected_recipient_that_fails_gets_it_from_the_outbox_later() {
    let (a, b) = pair(Arc::new(SystemClock), StoreConfig::default());
    a.link.connected.store(true, Ordering::SeqCst);
    a.link.set_online(false);
    let sent = send(&a, b.id(), "later").await;
    // The failed first attempt is counted, and the entry waits its backoff.
    let queued = outbox(&a).await;
    assert_eq!(queued.len(), 1);
    assert_eq!((queued[0].id, queued[0].attempts), (sent, 1));
    assert!(queued[0].next_attempt_ms > queued[0].created_ms);
    assert!(inbox(&b).await.is_empty());
    a.link.set_online(true);
    assert!(
        eventually(Duration::from_secs(10), || async {
            inbox(&b).await.len() == 1 && outbox(&a).await.is_empty()
        })
        .await,
        "the retry delivers it"
    );
    assert_eq!(inbox(&b).await[0].notification.id, sent);
}

#[actix_rt::test]
async fn a_connected_recipient_that_refuses_drops_it_as_the_outbox_would() {
    let (a, b) = pair(Arc::new(SystemClock), StoreConfig::default());
    a.link.connected.store(true, Ordering::SeqCst);
    // b does not trust a: a refusal, final.
    a.link.trusted.store(false, Ordering::SeqCst);
    send(&a, b.id(), "unwanted").await;
    assert!(outbox(&a).await.is_empty());
    assert!(inbox(&b).await.is_empty());
    let attempts = a.link.attempts();
    assert_eq!(attempts.len(), 1);
    assert!(matches!(attempts[0].1, Err(DeliveryError::Rejected(_))));
}
