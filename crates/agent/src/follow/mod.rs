//! Followed clones: a clone that follows its remote pulls by itself when the
//! remote announces a new head, and compares heads whenever it meets the
//! remote again, so nothing depends on one announcement arriving.
//!
//! - **The follower** (`Following::run`) keeps one `Follow` stream open to
//!   each remote that owns vaults it follows (every clone follows unless it
//!   was cloned with `--no-follow` or unfollowed). The first `Heads` answer
//!   is the comparison: a clone behind it pulls at once. A stream that breaks
//!   is opened again after a pause (1 s doubling to 60 s) or as soon as a
//!   connection to that node appears. A remote that refuses every vault is
//!   asked again only when we meet it again.
//! - **Pulls** run one at a time per clone, fast-forward only, as `vaults pull`
//!   does, each after a 100 ms settle ([`FOLLOW_SETTLE`]) so a burst of
//!   writes is one pull; announcements that arrive meanwhile coalesce into one more pull to
//!   the newest head. A pull that fails for a passing reason is retried after
//!   a pause; a divergent history stops following (`Diverged`), never a
//!   rewrite.
//! - **The owner** (`serve.rs`) announces to a follower only vaults it may
//!   pull, checked at every announcement.

mod serve;

pub(crate) use serve::Announcing;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keynode_core::{NodeId, VaultId};
use keynode_net::RpcStream;
use keynode_vaults::Follow;
use keynode_vaults::messages as v;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::api::{ApiError, ErrorKind, FollowStatus};
use crate::ctx::Ctx;
use crate::errors::{Ask, Failure, rpc_failure};
use crate::protocol::{FollowedHead, PeerRequest, PeerResponse};

/// First pause before a broken `Follow` stream or a failed pull is retried.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest pause between retries.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// What the follower knows of one clone while the agent runs.
#[derive(Debug, Clone, Default)]
struct Runtime {
    /// The last head the remote announced.
    remote_head: Option<String>,
    /// Why the last pull failed.
    error: Option<String>,
    /// The remote no longer serves the vault to us.
    refused: bool,
}

/// The follower's state: per clone, what the remote last said; and the signal
/// that the set of followed clones changed.
#[derive(Debug, Default)]
pub(crate) struct Following {
    runtime: Mutex<HashMap<VaultId, Runtime>>,
    /// Remote nodes whose subscription should start over (a new share from
    /// one: a vault it refused may be served again).
    again: Mutex<std::collections::HashSet<NodeId>>,
    changed: Notify,
}

impl Following {
    /// The set of followed clones may have changed (a clone, follow,
    /// unfollow, delete, a new remote): the follower looks again.
    pub(crate) fn changed(&self) {
        self.changed.notify_one();
    }

    /// `node` shared something with us again: its subscription starts over,
    /// so vaults it had refused are asked for anew.
    pub(crate) fn resubscribe(&self, node: NodeId) {
        self.again
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node);
        self.changed.notify_one();
    }

    fn update(&self, vault: VaultId, f: impl FnOnce(&mut Runtime)) {
        let mut map = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(vault).or_default());
    }

    /// Where clone `vault` stands, given its stored follow state and its head.
    pub(crate) fn status(&self, vault: VaultId, follow: &Follow, head: &str) -> FollowStatus {
        match follow {
            Follow::Off => FollowStatus::Off,
            Follow::Diverged { remote_head } => FollowStatus::Diverged {
                remote_head: remote_head.clone(),
            },
            Follow::On => {
                let map = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
                match map.get(&vault) {
                    Some(rt) if rt.refused => FollowStatus::Refused,
                    Some(Runtime {
                        remote_head: Some(remote_head),
                        error,
                        ..
                    }) if remote_head != head => FollowStatus::Behind {
                        remote_head: remote_head.clone(),
                        error: error.clone(),
                    },
                    _ => FollowStatus::Following,
                }
            }
        }
    }

    /// Runs the follower until the agent stops: one subscription per remote
    /// node, restarted when the set of clones it follows changes.
    pub(crate) async fn run(ctx: Arc<Ctx>) {
        let mut running: HashMap<NodeId, (Vec<Pair>, tokio::task::AbortHandle)> = HashMap::new();
        let mut tasks = JoinSet::new();
        loop {
            match followed(&ctx).await {
                Ok(wanted) => {
                    let again = std::mem::take(
                        &mut *ctx.follow.again.lock().unwrap_or_else(|p| p.into_inner()),
                    );
                    running.retain(|node, (pairs, handle)| {
                        let keep = wanted.get(node) == Some(pairs) && !again.contains(node);
                        if !keep {
                            handle.abort();
                        }
                        keep
                    });
                    for (node, pairs) in wanted {
                        if running.contains_key(&node) {
                            continue;
                        }
                        let handle = tasks.spawn(subscribe(ctx.clone(), node, pairs.clone()));
                        running.insert(node, (pairs, handle));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read which clones follow"),
            }
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                _ = ctx.follow.changed.notified() => {}
                Some(_) = tasks.join_next() => {}
            }
        }
        tasks.shutdown().await;
    }
}

/// A followed clone: its local id and the remote's id of the vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pair {
    local: VaultId,
    remote: VaultId,
}

/// The clones that follow, by remote node, in a stable order.
async fn followed(ctx: &Ctx) -> Result<HashMap<NodeId, Vec<Pair>>, ApiError> {
    let mut out: HashMap<NodeId, BTreeMap<VaultId, Pair>> = HashMap::new();
    for (meta, follow) in ctx.vaults.ask(v::Follows {}).await? {
        let (Follow::On, Some(remote)) = (follow, meta.remote) else {
            continue;
        };
        // Two clones of one remote vault: both follow, the remote sees it once.
        out.entry(remote.node).or_default().insert(
            meta.id,
            Pair {
                local: meta.id,
                remote: remote.vault,
            },
        );
    }
    Ok(out
        .into_iter()
        .map(|(node, pairs)| (node, pairs.into_values().collect()))
        .collect())
}

/// Keeps a `Follow` stream open to `node` for `pairs` until aborted, and a
/// puller per clone.
async fn subscribe(ctx: Arc<Ctx>, node: NodeId, pairs: Vec<Pair>) {
    let mut pullers = JoinSet::new();
    let mut announce: HashMap<VaultId, Vec<watch::Sender<Option<String>>>> = HashMap::new();
    for pair in &pairs {
        let (tx, rx) = watch::channel(None);
        announce.entry(pair.remote).or_default().push(tx);
        pullers.spawn(puller(ctx.clone(), pair.local, rx));
    }
    let mut events = match ctx.gestalts.network() {
        Ok(net) => net.connection_events(),
        Err(_) => return,
    };
    let mut pause = RETRY_FIRST;
    loop {
        let outcome = follow_once(&ctx, node, &pairs, &announce).await;
        let wait = match outcome {
            // Served, then ended: every vault was refused.
            Ok(true) => None,
            Ok(false) => {
                pause = RETRY_FIRST;
                Some(pause)
            }
            Err(e) => {
                tracing::debug!(%node, error = %e.message, "follow stream broke");
                let p = pause;
                pause = (pause * 2).min(RETRY_MAX);
                Some(p)
            }
        };
        let timer = async {
            match wait {
                Some(p) => tokio::time::sleep(p).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(timer);
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                _ = &mut timer => break,
                e = events.recv() => match e {
                    Ok(n) if n == node => break,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                },
            }
        }
    }
}

/// One `Follow` stream: opens it, hands each announced head to the clone's
/// puller, returns when it ends (`true` if every vault was refused).
async fn follow_once(
    ctx: &Ctx,
    node: NodeId,
    pairs: &[Pair],
    announce: &HashMap<VaultId, Vec<watch::Sender<Option<String>>>>,
) -> Result<bool, ApiError> {
    let net = ctx.gestalts.network()?;
    let mut stream: RpcStream = net.open(node).await.map_err(Failure::api)?;
    let vaults = announce.keys().copied().collect();
    stream
        .send(&PeerRequest::Follow { vaults })
        .await
        .map_err(|e| rpc_failure(node, e))?;
    // Silent until a head moves: keep-alives alone watch the connection.
    stream.quiet();
    let mut permitted = announce.len();
    loop {
        let heads = match stream.recv::<PeerResponse>().await {
            Ok(Some(PeerResponse::Heads(heads))) => heads,
            Ok(Some(other)) => {
                return Err(ApiError::new(
                    ErrorKind::Protocol,
                    format!("{node} answered {} to Follow", other.name()),
                ));
            }
            Ok(None) => return Ok(permitted == 0),
            Err(e) => return Err(rpc_failure(node, e)),
        };
        for FollowedHead { vault, head } in heads {
            // Only vaults we asked for; anything else is ignored.
            let Some(senders) = announce.get(&vault) else {
                continue;
            };
            let locals = pairs.iter().filter(|p| p.remote == vault).map(|p| p.local);
            for local in locals {
                ctx.follow.update(local, |rt| {
                    rt.refused = head.is_none();
                    if head.is_some() {
                        rt.remote_head.clone_from(&head);
                    }
                });
            }
            match head {
                Some(head) if is_commit_id(&head) => {
                    for tx in senders {
                        tx.send_replace(Some(head.clone()));
                    }
                }
                Some(_) => {
                    return Err(ApiError::new(
                        ErrorKind::Protocol,
                        format!("{node} announced a head that is no commit id"),
                    ));
                }
                None => permitted = permitted.saturating_sub(1),
            }
        }
    }
}

/// How long a follower lets announcements settle before it pulls: writes in
/// a burst on the owner (an import, a script setting ten secrets) become one
/// pull instead of one each, for every follower. Measured (docs/PERFORMANCE.md,
/// issue 18, an interleaved A/B against no settle): +15 % load at 4 nodes,
/// +10 % at 8, for a write reaching 100 followers at p99 307 ms (255 ms
/// without; the target is 1 s).
pub const FOLLOW_SETTLE: Duration = Duration::from_millis(100);

/// Pulls clone `local` each time its remote announces a head it lacks, one
/// pull at a time, each after [`FOLLOW_SETTLE`]; stops when the history
/// diverges.
async fn puller(ctx: Arc<Ctx>, local: VaultId, mut announced: watch::Receiver<Option<String>>) {
    let mut pause = RETRY_FIRST;
    loop {
        if announced.changed().await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(FOLLOW_SETTLE).await;
            let Some(target) = announced.borrow_and_update().clone() else {
                break;
            };
            let head = match ctx.vaults.ask(v::Advertise { vault: local }).await {
                Ok(advert) => advert.head,
                Err(_) => return, // deleted
            };
            if head == target {
                ctx.follow.update(local, |rt| rt.error = None);
                break;
            }
            match crate::transfer::pull(&ctx, &local.to_string(), None, None).await {
                Ok(_) => {
                    pause = RETRY_FIRST;
                    ctx.follow.update(local, |rt| rt.error = None);
                    // Announced again meanwhile? Then once more.
                    if !announced.has_changed().unwrap_or(false) {
                        break;
                    }
                }
                Err(e) if e.kind == ErrorKind::Conflict => {
                    tracing::warn!(vault = %local, "a followed vault's history diverged from its remote; following stopped");
                    let diverged = Follow::Diverged {
                        remote_head: target,
                    };
                    let set = ctx.vaults.ask(v::SetFollow {
                        vault: local,
                        follow: diverged,
                    });
                    if let Err(e) = set.await {
                        tracing::warn!(vault = %local, error = %e.message, "cannot record a diverged follow");
                    }
                    ctx.follow.changed();
                    return;
                }
                Err(e) if e.kind == ErrorKind::PermissionDenied => {
                    // Unshared: no retries; the next announcement (after a
                    // new share) or meeting the remote again tries again.
                    ctx.follow.update(local, |rt| rt.refused = true);
                    break;
                }
                Err(e) => {
                    tracing::debug!(vault = %local, error = %e.message, "a followed vault's pull failed");
                    ctx.follow
                        .update(local, |rt| rt.error = Some(e.message.clone()));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        r = announced.changed() => if r.is_err() { return },
                    }
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

/// Whether `s` is a commit id as announcements carry them: 40 hex digits.
fn is_commit_id(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}
