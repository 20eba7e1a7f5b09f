//! The invariants, checked against the history and the healed cluster.
//!
//! - (a) `a-no-data-without-permission`: no clone or pull succeeded while the
//!   puller's gestalt could not have held the permission, judged from the
//!   history of shares and unshares (the owner's check is the truth; the
//!   history only bounds when a grant could have been in force); and after
//!   healing, a clone whose permission the owner no longer grants is refused.
//! - (b) `b-acknowledged-write-present`: every acknowledged write reads back
//!   from its owner with the value written.
//! - (c) `c-permitted-clone-converges`: after healing, every clone its owner
//!   still grants pulls to the owner's head; and the owner's grants agree with
//!   the last acknowledged share or unshare.
//! - (d) `d-notification-delivered`: every acknowledged notification to a
//!   recipient that trusts the sender is in the recipient's inbox within the
//!   settle time after healing.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keynode_client::api::{Request, Response};

use crate::cluster::{self, futures_join};
use crate::metrics::Event;
use crate::topology::Topology;
use crate::workload::{CloneRec, Violation, Write};

/// Requests the checker makes at once.
const PARALLEL: usize = 16;

/// How often a failing check is retried while the cluster settles.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// Checks (a) over the history: every successful clone or pull `[s, e]` of
/// (owner, vault) by node `i` needs a share S to `i`'s gestalt that may have
/// taken effect (acknowledged, or failed in a way that may have applied it)
/// with `S.start < e`, and not revoked before `s` by an acknowledged unshare U
/// (`U.start > S.end`, `U.end < s`).
pub fn check_history(topo: &Topology, history: &[Event]) -> Vec<Violation> {
    type Key = (usize, String, usize);
    let mut grants: HashMap<Key, Vec<&Event>> = HashMap::new();
    for e in history {
        if matches!(e.op, "share" | "unshare") {
            let vault = e.args["vault"].as_str().unwrap_or_default().to_owned();
            let g = e.args["gestalt"].as_u64().unwrap_or(u64::MAX) as usize;
            grants.entry((e.node, vault, g)).or_default().push(e);
        }
    }
    let mut out = Vec::new();
    for e in history {
        if !matches!(e.op, "clone" | "pull") || e.ok.is_none() {
            continue;
        }
        let owner = e.args["owner"].as_u64().unwrap_or(u64::MAX) as usize;
        let vault = e.args["vault"].as_str().unwrap_or_default().to_owned();
        let key = (owner, vault.clone(), topo.gestalt[e.node]);
        let ops = grants.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        let may_apply =
            |x: &Event| x.ok.is_some() || x.error.as_ref().is_some_and(|er| !er.definite);
        let permitted = ops.iter().any(|s| {
            s.op == "share"
                && may_apply(s)
                && s.start_ms < e.end_ms
                && !ops.iter().any(|u| {
                    u.op == "unshare"
                        && u.ok.is_some()
                        && u.start_ms > s.end_ms
                        && u.end_ms < e.start_ms
                })
        });
        if !permitted {
            out.push(Violation::new(
                "a-no-data-without-permission",
                format!(
                    "op #{} node {} {} of {vault} from node {owner} succeeded at {:.0}-{:.0} ms \
                     without a share in force",
                    e.id, e.node, e.op, e.start_ms, e.end_ms
                ),
            ));
        }
    }
    out
}

/// Runs `f` on every item, `PARALLEL` at a time.
async fn each<T, F, Fut, R>(items: Vec<T>, f: F) -> Vec<R>
where
    T: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let mut out = Vec::with_capacity(items.len());
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let batch: Vec<Fut> = items.by_ref().take(PARALLEL).map(&f).collect();
        out.extend(futures_join(batch).await);
    }
    out
}

/// Retries `f` until it returns `Ok` or `until` passes; returns the last result.
async fn settle<T, Fut>(until: Instant, mut f: impl FnMut() -> Fut) -> Result<T, String>
where
    Fut: std::future::Future<Output = Result<T, String>>,
{
    loop {
        let r = f().await;
        if r.is_ok() || Instant::now() >= until {
            return r;
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// `Ok` when the clone `local` on `mine` has the head of `vault` on `owner`.
async fn same_head(owner: &Path, vault: &str, mine: &Path, local: &str) -> Result<(), String> {
    let theirs = cluster::head(owner, vault)
        .await
        .map_err(|e| e.to_string())?;
    let ours = cluster::head(mine, local)
        .await
        .map_err(|e| e.to_string())?;
    if theirs == ours {
        Ok(())
    } else {
        Err(format!("head {ours:?}, owner's {theirs:?}"))
    }
}

/// Checks (b): every acknowledged write is on its owner.
pub async fn check_writes(
    topo: &Arc<Topology>,
    writes: Vec<Write>,
    settle_for: Duration,
) -> Vec<Violation> {
    let until = Instant::now() + settle_for;
    let results = each(writes, |w| {
        let sock = topo.sockets[w.node].clone();
        async move {
            let r = settle(until, || async {
                match cluster::get(&sock, &w.vault, &w.path).await {
                    Ok(v) if v == w.value => Ok(()),
                    Ok(v) => Err(format!("reads {:?}", String::from_utf8_lossy(&v))),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
            r.err().map(|why| {
                Violation::new(
                    "b-acknowledged-write-present",
                    format!("node {} {}:{} {why}", w.node, w.vault, w.path),
                )
            })
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

/// The last share or unshare of (owner, vault, gestalt) if it is known to
/// have taken effect and nothing after it may have: `Some(true)` shared,
/// `Some(false)` unshared; `None` when unknown.
fn last_known(history: &[Event], owner: usize, vault: &str, gestalt: usize) -> Option<bool> {
    let mut ops: Vec<&Event> = history
        .iter()
        .filter(|e| {
            matches!(e.op, "share" | "unshare")
                && e.node == owner
                && e.args["vault"].as_str() == Some(vault)
                && e.args["gestalt"].as_u64() == Some(gestalt as u64)
        })
        .collect();
    ops.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
    let mut state = Some(false);
    for e in ops {
        match (&e.ok, &e.error) {
            (Some(_), _) => state = Some(e.op == "share"),
            (None, Some(er)) if er.definite => {}
            _ => state = None,
        }
    }
    state
}

/// Checks (c), (f) and (a) after healing: each clone the owner grants reaches
/// its owner's head by itself (it follows) and pulls to it; a clone the owner
/// does not grant is refused.
pub async fn check_clones(
    topo: &Arc<Topology>,
    clones: Vec<CloneRec>,
    history: Arc<Vec<Event>>,
    settle_for: Duration,
) -> Vec<Violation> {
    let until = Instant::now() + settle_for;
    let results = each(clones, |c| {
        let topo = topo.clone();
        let history = history.clone();
        async move {
            let mut out = Vec::new();
            let owner = topo.sockets[c.owner].clone();
            let mine = topo.sockets[c.node].clone();
            let grants = settle(until, || async {
                match cluster::call(
                    &owner,
                    Request::VaultsPermissions {
                        vault: c.vault.clone(),
                    },
                )
                .await
                {
                    Ok(Response::VaultPermissions(g)) => Ok(g),
                    Ok(other) => Err(format!("unexpected {other:?}")),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
            let grants = match grants {
                Ok(g) => g,
                Err(e) => {
                    out.push(Violation::new(
                        "c-permitted-clone-converges",
                        format!(
                            "node {} cannot read the grants of {}: {e}",
                            c.owner, c.vault
                        ),
                    ));
                    return out;
                }
            };
            let id = topo.ids[c.node];
            let permitted = grants
                .iter()
                .any(|g| g.nodes.contains(&id) && g.actions.iter().any(|a| a == "pull"));
            if let Some(expected) = last_known(&history, c.owner, &c.vault, topo.gestalt[c.node])
                && expected != permitted
            {
                out.push(Violation::new(
                    "c-permitted-clone-converges",
                    format!(
                        "node {} grants {} to gestalt {}: {permitted}, but the last acknowledged \
                         {} says {expected}",
                        c.owner,
                        c.vault,
                        topo.gestalt[c.node],
                        if expected { "share" } else { "unshare" }
                    ),
                ));
            }
            let pull = Request::VaultsPull {
                vault: c.local.clone(),
                node: None,
                pull_vault: None,
            };
            if permitted {
                // (f) A clone follows its remote: it reaches the owner's head
                // without being asked to pull.
                let followed =
                    settle(until, || same_head(&owner, &c.vault, &mine, &c.local)).await;
                if let Err(e) = followed {
                    out.push(Violation::new(
                        "f-follower-converges",
                        format!(
                            "node {}'s following clone of {} (node {}) did not reach the owner's head by itself: {e}",
                            c.node, c.vault, c.owner
                        ),
                    ));
                }
                let r = settle(until, || async {
                    cluster::call(&mine, pull.clone())
                        .await
                        .map_err(|e| e.to_string())?;
                    same_head(&owner, &c.vault, &mine, &c.local).await
                })
                .await;
                if let Err(e) = r {
                    out.push(Violation::new(
                        "c-permitted-clone-converges",
                        format!(
                            "node {}'s clone of {} (node {}): {e}",
                            c.node, c.vault, c.owner
                        ),
                    ));
                }
            } else {
                let r = settle(until, || async {
                    match cluster::call(&mine, pull.clone()).await {
                        Ok(_) => Ok(Some("succeeded".to_string())),
                        Err(keynode_client::ClientError::Api(e))
                            if e.kind == keynode_client::api::ErrorKind::PermissionDenied =>
                        {
                            Ok(None)
                        }
                        Err(e) => Err(e.to_string()),
                    }
                })
                .await;
                if let Ok(Some(what)) = r {
                    out.push(Violation::new(
                        "a-no-data-without-permission",
                        format!(
                            "after healing, node {}'s pull of {} from node {} {what} though the \
                             owner does not grant it",
                            c.node, c.vault, c.owner
                        ),
                    ));
                }
            }
            out
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

/// Checks (d): every acknowledged General notification is in its recipient's
/// inbox by `deadline` (all peers trust each other). Returns the violations
/// and how long the last one took to arrive.
pub async fn check_notifications(
    topo: &Arc<Topology>,
    history: &[Event],
    deadline: Instant,
) -> (Vec<Violation>, Duration) {
    let t0 = Instant::now();
    let mut pending: HashMap<usize, HashSet<String>> = HashMap::new();
    for e in history {
        if e.op == "notify" && e.ok.is_some() {
            let to = e.args["to"].as_u64().unwrap_or(u64::MAX) as usize;
            let msg = e.args["message"].as_str().unwrap_or_default().to_owned();
            pending.entry(to).or_default().insert(msg);
        }
    }
    loop {
        let nodes: Vec<usize> = pending
            .iter()
            .filter(|(_, m)| !m.is_empty())
            .map(|(n, _)| *n)
            .collect();
        let inboxes = each(nodes, |n| {
            let sock = topo.sockets[n].clone();
            async move {
                let r = cluster::call(
                    &sock,
                    Request::NotificationsInboxRead {
                        unread: false,
                        limit: None,
                        newest_first: false,
                    },
                )
                .await;
                (n, r)
            }
        })
        .await;
        for (n, r) in inboxes {
            if let Ok(Response::Notifications(list)) = r
                && let Some(want) = pending.get_mut(&n)
            {
                for v in list.iter().filter(|v| v.kind == "general") {
                    for token in v.data.split('"') {
                        want.remove(token);
                    }
                }
            }
        }
        let left: usize = pending.values().map(HashSet::len).sum();
        if left == 0 {
            return (Vec::new(), t0.elapsed());
        }
        if Instant::now() >= deadline {
            let mut out = Vec::new();
            for (n, msgs) in &pending {
                let mut msgs: Vec<&String> = msgs.iter().collect();
                msgs.sort();
                for m in msgs {
                    out.push(Violation::new(
                        "d-notification-delivered",
                        format!("node {n} never received {m}"),
                    ));
                }
            }
            return (out, t0.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
