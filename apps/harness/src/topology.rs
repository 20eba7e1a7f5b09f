//! Who is whom in a run: gestalts (pairs of nodes linked by claims), the peers
//! each node talks to (trusted both ways, in each other's address books), and
//! the setup that makes it so.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use keynode_client::api::{ErrorKind, Request};
use keynode_core::NodeId;
use serde::Serialize;

use crate::cluster::{self, Cluster, futures_join};

/// Nodes per gestalt.
pub const GESTALT_SIZE: usize = 2;

/// The shape of a run, fixed at setup.
#[derive(Debug, Clone, Serialize)]
pub struct Topology {
    /// Node ids by index.
    pub ids: Vec<NodeId>,
    /// Client sockets by index.
    pub sockets: Vec<PathBuf>,
    /// Each node's gestalt (an index into `members`).
    pub gestalt: Vec<usize>,
    /// The nodes of each gestalt.
    pub members: Vec<Vec<usize>>,
    /// The nodes each node talks to (symmetric; whole gestalts).
    pub peers: Vec<Vec<usize>>,
    /// Vaults each node owns.
    pub vaults: usize,
}

impl Topology {
    /// Plans gestalts and peers for the cluster's agents: gestalts are pairs of
    /// neighbours; a node's peers are every member of the gestalts within
    /// `reach / 2` steps on the ring of gestalts (all nodes of a small cluster).
    pub fn plan(cluster: &Cluster, vaults: usize, reach: usize) -> Topology {
        let n = cluster.agents.len();
        let gestalt: Vec<usize> = (0..n).map(|i| i / GESTALT_SIZE).collect();
        let g = n.div_ceil(GESTALT_SIZE);
        let members: Vec<Vec<usize>> = (0..g)
            .map(|k| (0..n).filter(|&i| gestalt[i] == k).collect())
            .collect();
        let half = (reach / 2).max(1);
        let peers = (0..n)
            .map(|i| {
                (0..n)
                    .filter(|&j| {
                        let (a, b) = (gestalt[i], gestalt[j]);
                        let d = a.abs_diff(b);
                        j != i && d.min(g - d) <= half
                    })
                    .collect()
            })
            .collect();
        Topology {
            ids: cluster.agents.iter().map(|a| a.node_id).collect(),
            sockets: cluster.agents.iter().map(|a| a.socket.clone()).collect(),
            gestalt,
            members,
            peers,
            vaults,
        }
    }

    /// Number of nodes.
    pub fn n(&self) -> usize {
        self.ids.len()
    }

    /// Peers of `i` outside its gestalt (those it shares with).
    pub fn others(&self, i: usize) -> Vec<usize> {
        self.peers[i]
            .iter()
            .copied()
            .filter(|&j| self.gestalt[j] != self.gestalt[i])
            .collect()
    }

    /// The name of vault `k` of node `i`.
    pub fn vault(i: usize, k: usize) -> String {
        format!("v{i}-{k}")
    }

    /// Every ordered pair of peers (the links of the proxy).
    pub fn links(&self) -> Vec<(usize, usize)> {
        (0..self.n())
            .flat_map(|i| self.peers[i].iter().map(move |&j| (i, j)))
            .collect()
    }
}

/// What setup took.
#[derive(Debug, Clone, Serialize)]
pub struct SetupTimes {
    /// Address books filled, in seconds.
    pub addresses_s: f64,
    /// Gestalts formed (invite + claim), in seconds.
    pub gestalts_s: f64,
    /// Trust established (with discovery), in seconds.
    pub trust_s: f64,
    /// Vaults created and filled, in seconds.
    pub vaults_s: f64,
}

fn fail(step: &str, i: usize, e: impl std::fmt::Display) -> String {
    format!("setup: {step} on node {i}: {e}")
}

/// Waits until every node finds each of its peers' records on the DHT (the
/// agents publish at start; nothing else tells them where the others are).
pub async fn find_all(topo: &Arc<Topology>) -> Result<(), String> {
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    for i in 0..topo.n() {
        for &j in &topo.peers[i] {
            loop {
                let found =
                    cluster::call(&topo.sockets[i], Request::NodesFind { node: topo.ids[j] }).await;
                if let Ok(keynode_client::api::Response::Found(f)) = found
                    && f.dht == "found"
                {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("node {i} never found node {j} on the DHT"));
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    Ok(())
}

/// Fills address books (`addr(i, j)`: where `i` reaches `j`), forms the
/// gestalts, makes peers trust each other, and creates `vaults` vaults per
/// node with `secrets` secrets each (returned as `(node, vault, path, value)`).
pub async fn setup(
    topo: &Arc<Topology>,
    books: bool,
    addr: impl Fn(usize, usize) -> (String, u16),
    secrets: usize,
) -> Result<(SetupTimes, Vec<(usize, String, String, Vec<u8>)>), String> {
    let n = topo.n();
    let t = Instant::now();
    let books = futures_join((0..n).map(|i| {
        let topo = topo.clone();
        let entries: Vec<(NodeId, String, u16)> = topo.peers[i]
            .iter()
            .filter(|_| books)
            .map(|&j| {
                let (h, p) = addr(i, j);
                (topo.ids[j], h, p)
            })
            .collect();
        async move {
            for (node, host, port) in entries {
                cluster::call(&topo.sockets[i], Request::NodesAdd { node, host, port })
                    .await
                    .map_err(|e| fail("nodes add", i, e))?;
            }
            Ok::<_, String>(())
        }
    }))
    .await;
    books.into_iter().collect::<Result<Vec<_>, _>>()?;
    let addresses_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let claims = futures_join(topo.members.iter().cloned().map(|m| {
        let topo = topo.clone();
        async move {
            let (first, rest) = m.split_first().ok_or("empty gestalt")?;
            for &other in rest {
                cluster::call(
                    &topo.sockets[other],
                    Request::IdentitiesInvite {
                        node: topo.ids[*first],
                    },
                )
                .await
                .map_err(|e| fail("identities invite", other, e))?;
                cluster::call(
                    &topo.sockets[*first],
                    Request::NodesClaim {
                        node: topo.ids[other],
                    },
                )
                .await
                .map_err(|e| fail("nodes claim", *first, e))?;
            }
            Ok::<_, String>(())
        }
    }))
    .await;
    claims.into_iter().collect::<Result<Vec<_>, _>>()?;
    let gestalts_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let trust = futures_join((0..n).map(|i| {
        let topo = topo.clone();
        async move {
            for j in topo.others(i) {
                cluster::call(
                    &topo.sockets[i],
                    Request::IdentitiesTrust {
                        gestalt: topo.ids[j].into(),
                    },
                )
                .await
                .map_err(|e| fail("identities trust", i, e))?;
            }
            Ok::<_, String>(())
        }
    }))
    .await;
    trust.into_iter().collect::<Result<Vec<_>, _>>()?;
    let trust_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let made = futures_join((0..n).map(|i| {
        let topo = topo.clone();
        async move {
            let mut written = Vec::new();
            for k in 0..topo.vaults {
                let name = Topology::vault(i, k);
                match cluster::call(
                    &topo.sockets[i],
                    Request::VaultsCreate {
                        name: cluster::vault_name(&name)
                            .map_err(|e| fail("vaults create", i, e))?,
                    },
                )
                .await
                {
                    // An attached deployment keeps its vaults from an earlier run.
                    Err(keynode_client::ClientError::Api(e)) if e.kind == ErrorKind::Exists => {}
                    r => {
                        r.map_err(|e| fail("vaults create", i, e))?;
                    }
                }
                for s in 0..secrets {
                    let path = format!("seed/s{s}");
                    let value = format!("{name}/{s}").into_bytes();
                    cluster::write(&topo.sockets[i], &name, &path, &value)
                        .await
                        .map_err(|e| fail("secrets write", i, e))?;
                    written.push((i, name.clone(), path, value));
                }
            }
            Ok::<_, String>(written)
        }
    }))
    .await;
    let mut writes = Vec::new();
    for m in made {
        writes.extend(m?);
    }
    let vaults_s = t.elapsed().as_secs_f64();
    Ok((
        SetupTimes {
            addresses_s,
            gestalts_s,
            trust_s,
            vaults_s,
        },
        writes,
    ))
}
