//! The seeded workload: concurrent client tasks, each with its own ChaCha RNG
//! derived from the seed, choosing operations from a fixed mix: secret writes
//! (unique paths, so every acknowledged write can be checked), reads of
//! acknowledged writes, shares and unshares, scans, clones, pulls and
//! notifications.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keynode_client::api::{Request, Response};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{Value, json};

use crate::cluster;
use crate::metrics::{OpError, Recorder};
use crate::topology::Topology;

/// Longest the harness waits for one operation.
pub const OP_TIMEOUT: Duration = Duration::from_secs(60);

/// The operation mix: name and relative weight.
pub const MIX: [(&str, u32); 8] = [
    ("write", 30),
    ("get", 10),
    ("share", 8),
    ("unshare", 5),
    ("scan", 10),
    ("clone", 7),
    ("pull", 15),
    ("notify", 15),
];

/// An acknowledged secret write.
#[derive(Debug, Clone, Serialize)]
pub struct Write {
    /// The owner.
    pub node: usize,
    /// The vault's name.
    pub vault: String,
    /// The secret's path.
    pub path: String,
    /// What was written.
    #[serde(skip)]
    pub value: Vec<u8>,
}

/// A clone made by the workload.
#[derive(Debug, Clone, Serialize)]
pub struct CloneRec {
    /// The node holding the clone.
    pub node: usize,
    /// The node owning the original.
    pub owner: usize,
    /// The original's name on the owner.
    pub vault: String,
    /// The clone's local id.
    pub local: String,
}

/// An invariant that did not hold.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// Which invariant.
    pub invariant: String,
    /// What was seen.
    pub detail: String,
}

impl Violation {
    /// A violation of `invariant`.
    pub fn new(invariant: &str, detail: impl Into<String>) -> Violation {
        Violation {
            invariant: invariant.into(),
            detail: detail.into(),
        }
    }
}

/// What the workload knows about the cluster's state.
#[derive(Default)]
pub struct World {
    /// Acknowledged writes.
    pub writes: Vec<Write>,
    /// Indices into `writes`, by owner.
    pub writes_by_node: HashMap<usize, Vec<usize>>,
    /// Clones made.
    pub clones: Vec<CloneRec>,
    /// Expected share state by (owner, vault, grantee gestalt).
    pub shared: HashMap<(usize, String, usize), bool>,
    /// Share keys with a share or unshare in flight (never two at once, so
    /// their order in the history is their order on the owner).
    pub busy: HashSet<(usize, String, usize)>,
    /// (node, owner, vault) being cloned now.
    pub cloning: HashSet<(usize, usize, String)>,
    /// Violations seen while the workload ran.
    pub violations: Vec<Violation>,
}

impl World {
    /// Adds an acknowledged write.
    pub fn add_write(&mut self, w: Write) {
        self.writes_by_node
            .entry(w.node)
            .or_default()
            .push(self.writes.len());
        self.writes.push(w);
    }
}

/// What every client task shares.
pub struct Shared {
    /// The cluster's shape.
    pub topo: Arc<Topology>,
    /// The model.
    pub world: Mutex<World>,
    /// Metrics and history.
    pub rec: Mutex<Recorder>,
    /// The run's seed.
    pub seed: u64,
}

/// Runs client task `worker` until `deadline`.
pub async fn worker(shared: Arc<Shared>, worker: usize, deadline: Instant) {
    let mut rng = ChaCha8Rng::seed_from_u64(
        shared
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(worker as u64 + 1),
    );
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let n = shared.topo.n();
    let mut seq = 0u64;
    while Instant::now() < deadline {
        seq += 1;
        let mut pick = rng.gen_range(0..total);
        let mut op = MIX[0].0;
        for (name, w) in MIX {
            if pick < w {
                op = name;
                break;
            }
            pick -= w;
        }
        let node = rng.gen_range(0..n);
        run_op(&shared, &mut rng, worker, seq, node, op).await;
    }
}

/// Sends one request with the harness's timeout.
async fn timed<F, T>(f: F) -> Result<T, OpError>
where
    F: std::future::Future<Output = Result<T, keynode_client::ClientError>>,
{
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(OpError::from_client(&e)),
        Err(_) => Err(OpError::timeout(OP_TIMEOUT)),
    }
}

fn pick<T: Clone>(rng: &mut ChaCha8Rng, v: &[T]) -> Option<T> {
    if v.is_empty() {
        None
    } else {
        Some(v[rng.gen_range(0..v.len())].clone())
    }
}

async fn run_op(
    shared: &Arc<Shared>,
    rng: &mut ChaCha8Rng,
    worker: usize,
    seq: u64,
    node: usize,
    op: &'static str,
) {
    let topo = &shared.topo;
    let sock = &topo.sockets[node];
    let others = topo.others(node);
    let (op, args, start, outcome): (&'static str, Value, Instant, Result<Value, OpError>) =
        match op {
            "write" => {
                let vault = Topology::vault(node, rng.gen_range(0..topo.vaults));
                let path = format!("load/w{worker}-{seq}");
                let value = format!("{}/{worker}/{seq}/{:016x}", shared.seed, rng.r#gen::<u64>())
                    .into_bytes();
                let start = Instant::now();
                let r = timed(cluster::write(sock, &vault, &path, &value)).await;
                if r.is_ok() {
                    shared
                        .world
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .add_write(Write {
                            node,
                            vault: vault.clone(),
                            path: path.clone(),
                            value,
                        });
                }
                (
                    "write",
                    json!({"vault": vault, "path": path}),
                    start,
                    r.map(|_| Value::Null),
                )
            }
            "get" => {
                let w = {
                    let world = shared.world.lock().unwrap_or_else(|p| p.into_inner());
                    world
                        .writes_by_node
                        .get(&node)
                        .and_then(|ix| pick(rng, ix))
                        .map(|i| world.writes[i].clone())
                };
                let Some(w) = w else { return };
                let start = Instant::now();
                let r = timed(cluster::get(sock, &w.vault, &w.path)).await;
                let r = match r {
                    Ok(v) if v == w.value => Ok(Value::Null),
                    Ok(v) => {
                        violation(
                            shared,
                            "b-acknowledged-write-present",
                            format!(
                                "node {node} {}:{} read {:?}, wrote {:?}",
                                w.vault,
                                w.path,
                                String::from_utf8_lossy(&v),
                                String::from_utf8_lossy(&w.value)
                            ),
                        );
                        Ok(json!("mismatch"))
                    }
                    Err(e) if e.kind == "NotFound" => {
                        violation(
                            shared,
                            "b-acknowledged-write-present",
                            format!("node {node} {}:{} is gone: {}", w.vault, w.path, e.message),
                        );
                        Err(e)
                    }
                    Err(e) => Err(e),
                };
                ("get", json!({"vault": w.vault, "path": w.path}), start, r)
            }
            "share" | "unshare" => {
                let Some(j) = pick(rng, &others) else { return };
                let vault = Topology::vault(node, rng.gen_range(0..topo.vaults));
                let key = (node, vault.clone(), topo.gestalt[j]);
                {
                    let mut world = shared.world.lock().unwrap_or_else(|p| p.into_inner());
                    if !world.busy.insert(key.clone()) {
                        return;
                    }
                }
                let grant = op == "share";
                let req = if grant {
                    Request::VaultsShare {
                        vault: vault.clone(),
                        to: topo.ids[j].into(),
                    }
                } else {
                    Request::VaultsUnshare {
                        vault: vault.clone(),
                        to: topo.ids[j].into(),
                    }
                };
                let start = Instant::now();
                let r = timed(cluster::call(sock, req)).await;
                {
                    let mut world = shared.world.lock().unwrap_or_else(|p| p.into_inner());
                    if r.is_ok() {
                        world.shared.insert(key.clone(), grant);
                    }
                    world.busy.remove(&key);
                }
                (
                    if grant { "share" } else { "unshare" },
                    json!({"vault": vault, "grantee": j, "gestalt": topo.gestalt[j]}),
                    start,
                    r.map(|_| Value::Null),
                )
            }
            "scan" => {
                let Some(j) = pick(rng, &others) else { return };
                let start = Instant::now();
                let r = timed(cluster::call(
                    sock,
                    Request::VaultsScan { node: topo.ids[j] },
                ))
                .await;
                let r = r.map(|resp| match resp {
                    Response::Scan(list) => json!(list.iter().map(|e| &e.name).collect::<Vec<_>>()),
                    _ => Value::Null,
                });
                ("scan", json!({"owner": j}), start, r)
            }
            "clone" | "pull" => {
                // Pull a clone we have; clone when there is none (or when
                // the mix says clone and a fresh vault is at hand).
                let (existing, fresh) = {
                    let world = shared.world.lock().unwrap_or_else(|p| p.into_inner());
                    let mine: Vec<CloneRec> = world
                        .clones
                        .iter()
                        .filter(|c| c.node == node)
                        .cloned()
                        .collect();
                    // Prefer vaults the model says are shared with us.
                    let shared_with_us: Vec<(usize, String)> = world
                        .shared
                        .iter()
                        .filter(|((o, v, g), on)| {
                            **on && *g == topo.gestalt[node]
                                && others.contains(o)
                                && !mine.iter().any(|c| c.owner == *o && &c.vault == v)
                        })
                        .map(|((o, v, _), _)| (*o, v.clone()))
                        .collect();
                    let fresh = if rng.gen_bool(0.7) {
                        let mut s = shared_with_us;
                        s.sort();
                        pick(rng, &s)
                    } else {
                        None
                    }
                    .or_else(|| {
                        pick(rng, &others)
                            .map(|j| (j, Topology::vault(j, rng.gen_range(0..topo.vaults))))
                    });
                    (pick(rng, &mine), fresh)
                };
                let clone_target = match (op, &existing, fresh) {
                    ("clone", _, Some(f)) => Some(f),
                    (_, None, Some(f)) => Some(f),
                    _ => None,
                };
                let clone_target = clone_target.filter(|(o, v)| {
                    let world = shared.world.lock().unwrap_or_else(|p| p.into_inner());
                    !world
                        .clones
                        .iter()
                        .any(|c| c.node == node && c.owner == *o && &c.vault == v)
                });
                if let Some((owner, vault)) = clone_target {
                    let ckey = (node, owner, vault.clone());
                    if !shared
                        .world
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .cloning
                        .insert(ckey.clone())
                    {
                        return;
                    }
                    let start = Instant::now();
                    let r = timed(cluster::call(
                        sock,
                        Request::VaultsClone {
                            vault: vault.clone(),
                            node: topo.ids[owner],
                            // Clones follow: the checks require them to
                            // reach their owner's head by themselves.
                            follow: true,
                        },
                    ))
                    .await;
                    let r = {
                        let mut world = shared.world.lock().unwrap_or_else(|p| p.into_inner());
                        world.cloning.remove(&ckey);
                        r.map(|resp| match resp {
                            Response::Vault(meta) => {
                                let local = meta.id.to_string();
                                world.clones.push(CloneRec {
                                    node,
                                    owner,
                                    vault: vault.clone(),
                                    local: local.clone(),
                                });
                                json!({"local": local, "name": meta.name.to_string()})
                            }
                            _ => Value::Null,
                        })
                    };
                    ("clone", json!({"owner": owner, "vault": vault}), start, r)
                } else if let Some(c) = existing {
                    let start = Instant::now();
                    let r = timed(cluster::call(
                        sock,
                        Request::VaultsPull {
                            vault: c.local.clone(),
                            node: None,
                            pull_vault: None,
                        },
                    ))
                    .await;
                    let r = r.map(|resp| match resp {
                        Response::Pulled { to, commits, .. } => {
                            json!({"to": to, "commits": commits})
                        }
                        _ => Value::Null,
                    });
                    (
                        "pull",
                        json!({"owner": c.owner, "vault": c.vault, "local": c.local}),
                        start,
                        r,
                    )
                } else {
                    return;
                }
            }
            _ => {
                // notify
                let Some(j) = pick(rng, &others) else { return };
                let message = format!("kh-{}-{worker}-{seq}", shared.seed);
                let start = Instant::now();
                let r = timed(cluster::call(
                    sock,
                    Request::NotificationsSend {
                        node: topo.ids[j],
                        message: message.clone(),
                    },
                ))
                .await;
                (
                    "notify",
                    json!({"to": j, "message": message}),
                    start,
                    r.map(|_| Value::Null),
                )
            }
        };
    let end = Instant::now();
    shared
        .rec
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .record(worker, node, op, args, start, end, outcome);
}

fn violation(shared: &Shared, invariant: &str, detail: String) {
    shared
        .world
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .violations
        .push(Violation::new(invariant, detail));
}
