//! [`NotificationsManager`]: the actor that signs, delivers, retries and
//! receives notifications.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, SpawnHandle, WrapFuture};
use keynode_core::{Clock, Keypair, NodeId, Tid, TidGenerator};

use crate::{Deliver, DeliveryError, NotificationStore, Pending, SignedNotification, StoreError};

/// Default most deliveries in flight at once.
pub const DEFAULT_MAX_CONCURRENT: usize = 16;
/// Default longest a delivery attempt may take before it counts as failed
/// (unreachable).
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// How much longer than the attempt timeout an entry stays claimed by an
/// attempt; after a crash mid-attempt, the entry is due again this much later.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// How soon the retry loop tries again after the store failed.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// How the manager delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerConfig {
    /// Most deliveries in flight at once (at least 1).
    pub max_concurrent: usize,
    /// Longest one delivery attempt may take.
    pub attempt_timeout: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
        }
    }
}

/// Lets a shared `dyn Clock` drive a [`TidGenerator`].
pub(crate) struct SharedClock(pub(crate) Arc<dyn Clock>);

impl Clock for SharedClock {
    fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The node's notifications: an actor over a [`NotificationStore`] that signs
/// what it sends with the node's key, queues it in the outbox and delivers it
/// through a [`Deliver`], retrying with backoff; and that accepts (see
/// [`accept`](crate::accept)) and stores what it receives.
///
/// Store calls run on tokio's blocking pool, never on the actor's event loop.
/// The retry loop runs once when the actor starts (so what was queued before a
/// restart goes out), then sleeps until the soonest entry is due (tokio time,
/// so a paused or simulated clock drives it); [`PeerSeen`](crate::messages::PeerSeen)
/// and [`Send`](crate::messages::Send) wake it at once. Each run claims due
/// entries ([`NotificationStore::claim_due`]) up to the free delivery slots.
pub struct NotificationsManager {
    store: Arc<NotificationStore>,
    keypair: Arc<Keypair>,
    clock: Arc<dyn Clock>,
    tids: Arc<TidGenerator<SharedClock>>,
    deliver: Arc<dyn Deliver>,
    config: ManagerConfig,
    exec: keynode_core::exec::Exec,
    /// Entries with an attempt running.
    in_flight: HashSet<Tid>,
    /// A claim is running; another run waits for it.
    claiming: bool,
    /// Run again when the current claim is done.
    rerun: bool,
    /// The last claim filled every free slot: more may be due.
    backlog: bool,
    /// When the retry timer fires, and its handle.
    timer: Option<(u64, SpawnHandle)>,
}

impl std::fmt::Debug for NotificationsManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationsManager")
            .field("node", &self.keypair.node_id())
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl NotificationsManager {
    /// A manager for the node whose key is `keypair`, reading time from
    /// `clock` and delivering through `deliver`. Start it with
    /// [`Actor::start`].
    pub fn new(
        store: Arc<NotificationStore>,
        keypair: Arc<Keypair>,
        clock: Arc<dyn Clock>,
        deliver: Arc<dyn Deliver>,
        config: ManagerConfig,
    ) -> Self {
        let tids = Arc::new(TidGenerator::new(SharedClock(Arc::clone(&clock))));
        let config = ManagerConfig {
            max_concurrent: config.max_concurrent.max(1),
            ..config
        };
        NotificationsManager {
            store,
            keypair,
            clock,
            tids,
            deliver,
            config,
            exec: keynode_core::exec::threads(),
            in_flight: HashSet::new(),
            claiming: false,
            rerun: false,
            backlog: false,
            timer: None,
        }
    }

    /// Runs store calls through `exec` instead of tokio's blocking pool (e.g.
    /// [`Inline`](keynode_core::exec::Inline) in a deterministic simulation).
    pub fn with_executor(mut self, exec: keynode_core::exec::Exec) -> Self {
        self.exec = exec;
        self
    }

    /// The store, for callers that want to call it directly.
    pub fn store(&self) -> &Arc<NotificationStore> {
        &self.store
    }

    /// This node's id (the `from` of what it sends).
    pub fn node_id(&self) -> NodeId {
        self.keypair.node_id()
    }

    pub(crate) fn keypair(&self) -> &Arc<Keypair> {
        &self.keypair
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub(crate) fn next_tid(&self) -> Tid {
        self.tids.next_id()
    }

    /// Runs `f` with the store on the blocking pool.
    pub(crate) fn blocking<T, F>(
        &self,
        f: F,
    ) -> impl Future<Output = Result<T, StoreError>> + 'static + use<T, F>
    where
        T: std::marker::Send + 'static,
        F: FnOnce(&NotificationStore) -> Result<T, StoreError> + std::marker::Send + 'static,
    {
        let store = Arc::clone(&self.store);
        let exec = self.exec.clone();
        async move {
            keynode_core::exec::blocking(exec.as_ref(), move || f(&store))
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?
        }
    }

    /// Claims what is due and starts an attempt for each claimed entry, then
    /// sets the timer for the next due entry.
    pub(crate) fn run_due(&mut self, ctx: &mut Context<Self>) {
        if self.claiming {
            self.rerun = true;
            return;
        }
        let free = self
            .config
            .max_concurrent
            .saturating_sub(self.in_flight.len());
        if free == 0 {
            // A finishing attempt runs the loop again.
            self.backlog = true;
            return;
        }
        self.claiming = true;
        self.rerun = false;
        let now = self.now_ms();
        let lease = ms(self.config.attempt_timeout + LEASE_MARGIN);
        let claim = self.blocking(move |store| {
            let claimed = store.claim_due(now, lease, free)?;
            Ok((claimed, store.next_due()?))
        });
        ctx.spawn(claim.into_actor(self).map(move |res, act, ctx| {
            act.claiming = false;
            match res {
                Ok((claimed, next)) => {
                    act.backlog = claimed.len() >= free;
                    for p in claimed {
                        if act.in_flight.insert(p.id) {
                            act.attempt(p, now, ctx);
                        }
                    }
                    if let Some(at) = next {
                        act.arm(at, ctx);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the notification outbox");
                    act.arm(now.saturating_add(ms(STORE_RETRY)), ctx);
                }
            }
            if act.rerun || act.backlog {
                act.run_due(ctx);
            }
        }));
    }

    /// Makes sure the retry loop runs at `at_ms` (wall-clock milliseconds) or
    /// sooner. The sleep itself is tokio time, never longer than the backoff
    /// cap, so a wall clock that jumps cannot stall the loop for long.
    fn arm(&mut self, at_ms: u64, ctx: &mut Context<Self>) {
        if let Some((current, handle)) = self.timer {
            if current <= at_ms {
                return;
            }
            ctx.cancel_future(handle);
        }
        let cap = ms(self.store.config().backoff.max).max(1);
        let delay = at_ms.saturating_sub(self.now_ms()).min(cap);
        let handle = ctx.run_later(Duration::from_millis(delay), |act, ctx| {
            act.timer = None;
            act.run_due(ctx);
        });
        self.timer = Some((at_ms, handle));
    }

    /// Whether a new notification to `to` is tried at once rather than
    /// queued first: `to` has a live connection and a delivery slot is free.
    pub(crate) fn can_deliver_now(&self, to: NodeId) -> bool {
        self.in_flight.len() < self.config.max_concurrent && self.deliver.connected(to)
    }

    /// Sends `signed` straight away (see
    /// [`can_deliver_now`](Self::can_deliver_now)), and replies once it is
    /// delivered or, if that fails, durably in the outbox: the reply means
    /// "delivered or queued", as for a queued send. A delivered notification
    /// never touches the outbox (it had cost three state commits: queued,
    /// claimed, removed). A refusal is final, as in the outbox: logged,
    /// dropped, and the send still answers with its id. An attempt that
    /// times out may still have arrived; the queued copy then reaches the
    /// recipient once more, which its duplicate check absorbs.
    pub(crate) fn send_now(
        &mut self,
        signed: SignedNotification,
        now: u64,
    ) -> actix::ResponseActFuture<Self, Result<Tid, crate::SendError>> {
        let (id, to) = (signed.notification.id, signed.notification.to);
        self.in_flight.insert(id);
        let deliver = Arc::clone(&self.deliver);
        let timeout = self.config.attempt_timeout;
        let store = Arc::clone(&self.store);
        let exec = self.exec.clone();
        let run = async move {
            let outcome =
                match tokio::time::timeout(timeout, deliver.deliver(to, signed.clone())).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(DeliveryError::Unreachable("delivery timed out".into())),
                };
            let queued = match &outcome {
                Err(DeliveryError::Unreachable(_)) => Some(
                    keynode_core::exec::blocking(exec.as_ref(), move || {
                        store.enqueue_failed(signed, now)
                    })
                    .await
                    .map_err(|e| StoreError::Task(e.to_string()))
                    .and_then(|r| r),
                ),
                _ => None,
            };
            (outcome, queued)
        };
        Box::pin(run.into_actor(self).map(move |(outcome, queued), act, ctx| {
            act.in_flight.remove(&id);
            let reply = match (&outcome, queued) {
                (Ok(()), _) => {
                    tracing::debug!(%id, %to, "notification delivered");
                    Ok(id)
                }
                (Err(DeliveryError::Rejected(why)), _) => {
                    tracing::warn!(%id, %to, %why, "notification rejected by its recipient; dropped");
                    Ok(id)
                }
                (Err(DeliveryError::Unreachable(why)), Some(Ok(at))) => {
                    tracing::debug!(%id, %to, %why, "notification not delivered; queued");
                    act.arm(at, ctx);
                    Ok(id)
                }
                (Err(DeliveryError::Unreachable(_)), Some(Err(e))) => {
                    Err(crate::SendError::Store(e))
                }
                (Err(DeliveryError::Unreachable(_)), None) => Err(crate::SendError::Store(
                    StoreError::Task("an unreachable notification was not queued".into()),
                )),
            };
            if act.backlog {
                act.backlog = false;
                act.run_due(ctx);
            }
            reply
        }))
    }

    /// Delivers one claimed entry and records the outcome.
    fn attempt(&mut self, p: Pending, started_ms: u64, ctx: &mut Context<Self>) {
        let deliver = Arc::clone(&self.deliver);
        let store = Arc::clone(&self.store);
        let timeout = self.config.attempt_timeout;
        let exec = self.exec.clone();
        let (id, to, attempts) = (p.id, p.to, p.attempts);
        let run = async move {
            let outcome = match tokio::time::timeout(timeout, deliver.deliver(p.to, p.signed)).await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(DeliveryError::Unreachable("delivery timed out".into())),
            };
            let record = outcome.clone();
            let next = keynode_core::exec::blocking(exec.as_ref(), move || match record {
                Ok(()) => store.delivered(id).map(|_| None),
                Err(DeliveryError::Rejected(_)) => store.rejected(id).map(|_| None),
                Err(DeliveryError::Unreachable(_)) => store.failed(id, started_ms),
            })
            .await
            .map_err(|e| StoreError::Task(e.to_string()))
            .and_then(|r| r);
            (outcome, next)
        };
        ctx.spawn(run.into_actor(self).map(move |(outcome, next), act, ctx| {
            act.in_flight.remove(&id);
            match &outcome {
                Ok(()) => tracing::debug!(%id, %to, "notification delivered"),
                Err(DeliveryError::Rejected(why)) => {
                    tracing::warn!(%id, %to, %why, "notification rejected by its recipient; dropped")
                }
                Err(DeliveryError::Unreachable(why)) => {
                    tracing::debug!(%id, %to, %why, attempts = attempts + 1, "notification not delivered; will retry")
                }
            }
            match next {
                Ok(Some(at)) => act.arm(at, ctx),
                Ok(None) => {}
                Err(e) => {
                    // The entry keeps its lease and is retried when it expires.
                    tracing::warn!(%id, error = %e, "cannot record a delivery outcome");
                }
            }
            if act.backlog {
                act.backlog = false;
                act.run_due(ctx);
            }
        }));
    }
}

impl Actor for NotificationsManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.run_due(ctx);
    }
}
