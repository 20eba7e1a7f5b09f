//! The nemesis: a fault schedule that is a pure function of the seed, the
//! number of nodes, the links and the duration (same inputs, same schedule),
//! and the executor that applies it to the cluster and the proxy.

use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::proxy::{Mode, Proxy};

/// No fault starts in the first this many milliseconds of the workload.
const QUIET_START_MS: u64 = 1_000;

/// One fault action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL the agent.
    Kill {
        /// Which.
        node: usize,
    },
    /// Start it again on its node path and port.
    Restart {
        /// Which.
        node: usize,
    },
    /// Start it again on its node path on another port: its peers must find
    /// it again (the DHT, or its `ListenAt`).
    Move {
        /// Which.
        node: usize,
    },
    /// Close every connection open on these links (new ones may follow).
    Cut {
        /// `(from, to)` links.
        links: Vec<(usize, usize)>,
    },
    /// Start a link fault.
    Start {
        /// Fault id (matched by its `End`).
        id: u64,
        /// What the links do.
        mode: Mode,
        /// `(from, to)` links.
        links: Vec<(usize, usize)>,
        /// What kind of fault, for people.
        kind: String,
    },
    /// End a link fault.
    End {
        /// Fault id.
        id: u64,
    },
}

/// A fault at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scheduled {
    /// Milliseconds after the workload starts.
    pub at_ms: u64,
    /// What happens.
    #[serde(flatten)]
    pub fault: Fault,
}

/// The fault schedule for a run: kills and restarts, connection cuts, delays,
/// black holes and partitions, every fault healed by `duration`.
pub fn schedule(
    seed: u64,
    n: usize,
    links: &[(usize, usize)],
    duration: Duration,
) -> Vec<Scheduled> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x006e_656d_6573_6973);
    let end = duration.as_millis() as u64;
    let max_down = (n / 4).max(1);
    let mut out = Vec::new();
    let mut down_until = vec![0u64; n];
    let mut next_id = 0u64;
    let mut t = QUIET_START_MS;
    let pair_links = |a: usize, b: usize| -> Vec<(usize, usize)> {
        links
            .iter()
            .copied()
            .filter(|&(x, y)| (x == a && y == b) || (x == b && y == a))
            .collect()
    };
    while t + 500 < end {
        let len = rng.gen_range(1_500..=5_000u64).min(end - t);
        match rng.gen_range(0..100u32) {
            0..25 => {
                let down = down_until.iter().filter(|&&u| u > t).count();
                let up: Vec<usize> = (0..n).filter(|&i| down_until[i] <= t).collect();
                if down < max_down
                    && let Some(&node) = up.choose(&mut rng)
                {
                    out.push(Scheduled {
                        at_ms: t,
                        fault: Fault::Kill { node },
                    });
                    out.push(Scheduled {
                        at_ms: t + len,
                        fault: Fault::Restart { node },
                    });
                    down_until[node] = t + len;
                }
            }
            25..45 => {
                // A partition: a random minority against the rest.
                let mut nodes: Vec<usize> = (0..n).collect();
                nodes.shuffle(&mut rng);
                let k = rng.gen_range(1..=(n / 2).max(1));
                let side: Vec<usize> = nodes[..k].to_vec();
                let crossing: Vec<(usize, usize)> = links
                    .iter()
                    .copied()
                    .filter(|(a, b)| side.contains(a) != side.contains(b))
                    .collect();
                let mut side = side;
                side.sort();
                out.push(Scheduled {
                    at_ms: t,
                    fault: Fault::Start {
                        id: next_id,
                        mode: Mode::Refuse,
                        links: crossing,
                        kind: format!("partition {side:?} | rest"),
                    },
                });
                out.push(Scheduled {
                    at_ms: t + len,
                    fault: Fault::End { id: next_id },
                });
                next_id += 1;
            }
            45..85 => {
                let Some(&(a, b)) = links.choose(&mut rng) else {
                    continue;
                };
                let (mode, kind) = match rng.gen_range(0..3u32) {
                    0 => (Mode::Blackhole, "black hole"),
                    _ => {
                        let ms = rng.gen_range(20..=400u64);
                        (Mode::Delay(ms), "delay")
                    }
                };
                out.push(Scheduled {
                    at_ms: t,
                    fault: Fault::Start {
                        id: next_id,
                        mode,
                        links: pair_links(a, b),
                        kind: format!("{kind} {a}<->{b}"),
                    },
                });
                out.push(Scheduled {
                    at_ms: t + len,
                    fault: Fault::End { id: next_id },
                });
                next_id += 1;
            }
            _ => {
                if let Some(&(a, b)) = links.choose(&mut rng) {
                    out.push(Scheduled {
                        at_ms: t,
                        fault: Fault::Cut {
                            links: pair_links(a, b),
                        },
                    });
                }
            }
        }
        t += rng.gen_range(500..=2_500u64);
    }
    // Stable by time: an end scheduled at the same instant as a start stays after it.
    out.sort_by_key(|s| s.at_ms);
    out
}

/// The fault schedule of a run on the DHT (no proxy between the nodes, so
/// no link faults): kills, each followed by a restart on the same port or a
/// move to another, every node back by `duration`.
pub fn schedule_moves(seed: u64, n: usize, duration: Duration) -> Vec<Scheduled> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x006d_6f76_6573);
    let end = duration.as_millis() as u64;
    let max_down = (n / 4).max(1);
    let mut out = Vec::new();
    let mut down_until = vec![0u64; n];
    let mut t = QUIET_START_MS;
    while t + 500 < end {
        let len = rng.gen_range(1_500..=5_000u64).min(end - t);
        let down = down_until.iter().filter(|&&u| u > t).count();
        let up: Vec<usize> = (0..n).filter(|&i| down_until[i] <= t).collect();
        if down < max_down
            && let Some(&node) = up.choose(&mut rng)
        {
            out.push(Scheduled {
                at_ms: t,
                fault: Fault::Kill { node },
            });
            let back = if rng.gen_bool(0.6) {
                Fault::Move { node }
            } else {
                Fault::Restart { node }
            };
            out.push(Scheduled {
                at_ms: t + len,
                fault: back,
            });
            down_until[node] = t + len;
        }
        t += rng.gen_range(1_000..=3_000u64);
    }
    out.sort_by_key(|s| s.at_ms);
    out
}

/// A fault as it was applied.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// When it was applied, in ms since the workload started.
    pub at_ms: f64,
    /// What was applied.
    #[serde(flatten)]
    pub fault: Fault,
    /// Whether it worked (a restart can fail).
    pub error: Option<String>,
}

/// Applies one fault (a link fault needs the proxy).
pub async fn apply(
    cluster: &mut Cluster,
    proxy: Option<&Proxy>,
    fault: &Fault,
) -> Result<(), String> {
    let no_proxy = || Err("a link fault without a proxy".to_owned());
    match fault {
        Fault::Kill { node } => {
            cluster.kill(*node).await;
            Ok(())
        }
        Fault::Restart { node } => cluster.restart(*node).await,
        Fault::Move { node } => cluster.restart_elsewhere(*node).await,
        Fault::Cut { links } => {
            let Some(proxy) = proxy else {
                return no_proxy();
            };
            proxy.cut(links);
            Ok(())
        }
        Fault::Start {
            id, mode, links, ..
        } => {
            let Some(proxy) = proxy else {
                return no_proxy();
            };
            proxy.start_fault(*id, links, *mode);
            Ok(())
        }
        Fault::End { id } => {
            let Some(proxy) = proxy else {
                return no_proxy();
            };
            proxy.end_fault(*id);
            Ok(())
        }
    }
}

/// One line per fault, for people.
pub fn describe(s: &Scheduled) -> String {
    let t = s.at_ms as f64 / 1000.0;
    match &s.fault {
        Fault::Kill { node } => format!("{t:>7.2}s  kill -9 node {node}"),
        Fault::Restart { node } => format!("{t:>7.2}s  restart node {node}"),
        Fault::Move { node } => format!("{t:>7.2}s  restart node {node} on another port"),
        Fault::Cut { links } => format!("{t:>7.2}s  cut connections on {links:?}"),
        Fault::Start {
            id,
            kind,
            mode,
            links,
        } => {
            format!(
                "{t:>7.2}s  start #{id} {kind} ({mode:?}, {} links)",
                links.len()
            )
        }
        Fault::End { id } => format!("{t:>7.2}s  heal #{id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(n: usize) -> Vec<(usize, usize)> {
        (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .collect()
    }

    #[test]
    fn moves_are_seeded_and_every_node_comes_back() {
        let d = Duration::from_secs(30);
        assert_eq!(schedule_moves(3, 4, d), schedule_moves(3, 4, d));
        for seed in 0..50 {
            let s = schedule_moves(seed, 4, d);
            let mut down = std::collections::HashSet::new();
            for e in &s {
                match &e.fault {
                    Fault::Kill { node } => assert!(down.insert(*node)),
                    Fault::Restart { node } | Fault::Move { node } => assert!(down.remove(node)),
                    other => panic!("seed {seed}: a link fault {other:?} on the DHT"),
                }
                assert!(down.len() <= 1);
            }
            assert!(down.is_empty(), "seed {seed}");
        }
        assert!((0..20).any(|seed| {
            schedule_moves(seed, 4, d)
                .iter()
                .any(|e| matches!(e.fault, Fault::Move { .. }))
        }));
    }

    #[test]
    fn same_seed_same_schedule() {
        let l = links(4);
        let d = Duration::from_secs(30);
        assert_eq!(schedule(1, 4, &l, d), schedule(1, 4, &l, d));
        assert_ne!(schedule(1, 4, &l, d), schedule(2, 4, &l, d));
    }

    #[test]
    fn every_fault_is_healed_in_time() {
        let l = links(6);
        for seed in 0..50 {
            let d = Duration::from_secs(20);
            let s = schedule(seed, 6, &l, d);
            let mut down = std::collections::HashSet::new();
            let mut open = std::collections::HashSet::new();
            for e in &s {
                assert!(e.at_ms <= 20_000);
                match &e.fault {
                    Fault::Kill { node } => assert!(down.insert(*node)),
                    Fault::Restart { node } | Fault::Move { node } => assert!(down.remove(node)),
                    Fault::Start { id, .. } => assert!(open.insert(*id)),
                    Fault::End { id } => assert!(open.remove(id)),
                    Fault::Cut { .. } => {}
                }
                assert!(down.len() <= 1, "seed {seed}: at most n/4 nodes down");
            }
            assert!(down.is_empty() && open.is_empty(), "seed {seed}");
        }
    }
}
