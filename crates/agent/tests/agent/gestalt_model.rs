//! Model-based test of permission propagation: random sequences of graph and
//! permission operations, applied to the real `GestaltGraph` + `AclStore`
//! through the agent's production path (graph events routed to the ACL actor
//! by `Gestalts::route`, grants through `Gestalts::allow` and friends) and to a
//! plain reference model, compared after every step.

use std::collections::{BTreeMap, BTreeSet};

use std::sync::Arc;

use actix::Actor;
use keynode_acl::{AclManager, AclStore, GestaltAction, Permission, VaultAction, rules};
use keynode_agent::gestalts::Gestalts;
use keynode_core::{GestaltId, Keypair, ProviderId, Tid, VaultId};
use keynode_gestalt::{
    ClaimRef, Discovery, GestaltEvent, GestaltGraph, GestaltManager, OfflineProvider, Sigchain,
};
use proptest::prelude::*;

/// Vertices 0..NODES are nodes, NODES..VERTICES identities.
const NODES: usize = 14;
const VERTICES: usize = 20;
const VAULTS: u8 = 3;

fn open_env(dir: &std::path::Path) -> keynode_core::store::Env {
    let key = keynode_core::datakey::DataKey::from_bytes([7; 32]);
    keynode_core::store::open_env(dir, &key, 1 << 26, 16).unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Add(usize),
    Remove(usize),
    Link(usize, usize),
    Unlink(usize, usize),
    SetGestalt(usize, GestaltAction),
    UnsetGestalt(usize, GestaltAction),
    SetVault(usize, u8, VaultAction),
    UnsetVault(usize, u8, VaultAction),
    Purge(u8),
    /// `vaults share` (grant) or `unshare` from a node vertex.
    Share(usize, u8, bool),
}

fn op() -> impl Strategy<Value = Op> {
    let v = 0..VERTICES;
    let g = proptest::sample::select(GestaltAction::ALL);
    let a = proptest::sample::select(VaultAction::ALL);
    prop_oneof![
        2 => v.clone().prop_map(Op::Add),
        1 => v.clone().prop_map(Op::Remove),
        5 => (v.clone(), v.clone()).prop_map(|(x, y)| Op::Link(x, y)),
        2 => (v.clone(), v.clone()).prop_map(|(x, y)| Op::Unlink(x, y)),
        2 => (v.clone(), g.clone()).prop_map(|(x, g)| Op::SetGestalt(x, g)),
        1 => (v.clone(), g).prop_map(|(x, g)| Op::UnsetGestalt(x, g)),
        3 => (v.clone(), 0..VAULTS, a.clone()).prop_map(|(x, w, a)| Op::SetVault(x, w, a)),
        1 => (v, 0..VAULTS, a).prop_map(|(x, w, a)| Op::UnsetVault(x, w, a)),
        1 => (0..VAULTS).prop_map(Op::Purge),
        3 => (0..NODES, 0..VAULTS, any::<bool>()).prop_map(|(x, w, g)| Op::Share(x, w, g)),
    ]
}

/// The reference: per-vertex permissions, edges, and connected components by
/// brute force.
#[derive(Default)]
struct Model {
    perms: BTreeMap<usize, Permission>,
    edges: BTreeSet<(usize, usize)>,
}

impl Model {
    fn component(&self, v: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::from([v]);
        let mut stack = vec![v];
        while let Some(x) = stack.pop() {
            for &(a, b) in &self.edges {
                let n = if a == x {
                    b
                } else if b == x {
                    a
                } else {
                    continue;
                };
                if seen.insert(n) {
                    stack.push(n);
                }
            }
        }
        seen
    }

    fn add(&mut self, v: usize) {
        self.perms.entry(v).or_default();
    }

    fn update(&mut self, v: usize, f: impl Fn(&mut Permission)) {
        self.add(v);
        for m in self.component(v) {
            f(self.perms.get_mut(&m).unwrap());
        }
    }
}

struct Real {
    _tmp: tempfile::TempDir,
    graph: Arc<GestaltGraph>,
    acl: Arc<AclStore>,
    /// The agent's own wiring of the graph and ACL actors.
    gestalts: Gestalts,
    ids: Vec<GestaltId>,
    vaults: Vec<VaultId>,
}

impl Real {
    /// Needs a running actix system.
    fn new() -> Real {
        let tmp = tempfile::tempdir().unwrap();
        let env = open_env(tmp.path());
        let ids = (0..VERTICES)
            .map(|i| {
                if i < NODES {
                    GestaltId::Node(Keypair::from_secret_bytes([i as u8 + 1; 32]).node_id())
                } else {
                    format!("offline:user{i}").parse().unwrap()
                }
            })
            .collect();
        let key = Arc::new(Keypair::from_secret_bytes([99; 32]));
        let graph = Arc::new(GestaltGraph::open(env.clone()).unwrap());
        let acl = Arc::new(AclStore::open(env.clone()).unwrap());
        let gestalts = Gestalts::new(
            key.clone(),
            graph.clone(),
            GestaltManager::new(graph.clone()).start(),
            AclManager::new(acl.clone()).start(),
            Arc::new(Sigchain::open(env.clone(), key.node_id()).unwrap()),
            Arc::new(Discovery::open(env).unwrap()),
            OfflineProvider::new(ProviderId::new("offline").unwrap(), tmp.path().join("p")),
            keynode_core::exec::threads(),
        );
        Real {
            graph,
            acl,
            gestalts,
            ids,
            vaults: (0..VAULTS)
                .map(|i| VaultId::from_bytes([i; 16]).unwrap())
                .collect(),
            _tmp: tmp,
        }
    }

    /// Routes a graph mutation's events as the agent does (from the graph's
    /// journal), and returns them.
    async fn route(&self, events: Vec<GestaltEvent>) -> Vec<GestaltEvent> {
        let journaled: Vec<GestaltEvent> = self
            .graph
            .pending()
            .unwrap()
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        assert_eq!(journaled, events, "the graph journals what it returns");
        self.gestalts.route().await.unwrap();
        events
    }

    async fn ensure(&self, v: usize) {
        self.gestalts.ensure_vertex(&self.ids[v]).await.unwrap();
    }
}

fn proof(id: &GestaltId, seq: usize) -> ClaimRef {
    ClaimRef {
        chain: id.node().unwrap(),
        seq: seq as u64,
        id: Tid::from_bytes([seq as u8; 16]).unwrap(),
    }
}

fn check(real: &Real, model: &Model) -> Result<(), TestCaseError> {
    let vertices: Vec<GestaltId> = model
        .perms
        .keys()
        .map(|v| real.ids[*v].clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    prop_assert_eq!(&real.graph.vertices().unwrap(), &vertices);
    prop_assert!(
        real.graph.pending().unwrap().is_empty(),
        "every event applied"
    );
    prop_assert_eq!(
        &real.acl.members().unwrap(),
        &vertices,
        "acl members = graph vertices"
    );
    for (v, want) in &model.perms {
        let got = real.acl.permission(&real.ids[*v]).unwrap();
        prop_assert_eq!(got.as_ref(), Some(want), "permission of vertex {}", v);
        // Gestalts agree, and every member of one holds the same record.
        let gestalt = real.graph.gestalt_of(&real.ids[*v]).unwrap().unwrap();
        let members: BTreeSet<GestaltId> = model
            .component(*v)
            .iter()
            .map(|m| real.ids[*m].clone())
            .collect();
        prop_assert_eq!(
            gestalt.members().into_iter().collect::<BTreeSet<_>>(),
            members.clone()
        );
        for m in &members {
            prop_assert_eq!(real.acl.permission(m).unwrap(), Some(want.clone()));
        }
        // The fast checks agree with the record.
        if let GestaltId::Node(n) = &real.ids[*v] {
            for g in GestaltAction::ALL {
                prop_assert_eq!(
                    real.acl.has_gestalt_action(n, *g).unwrap(),
                    want.gestalt.contains(g)
                );
            }
            for (i, vault) in real.vaults.iter().enumerate() {
                for a in VaultAction::ALL {
                    let granted = want.vaults.get(vault).is_some_and(|s| s.contains(a));
                    prop_assert_eq!(
                        real.acl.may_vault(n, *vault, *a).unwrap(),
                        granted,
                        "vault {} {}",
                        i,
                        a
                    );
                }
            }
        }
    }
    // One record per gestalt: the ACL holds exactly as many records as gestalts.
    prop_assert_eq!(
        real.acl.all().unwrap().len(),
        real.graph.gestalts().unwrap().len()
    );
    Ok(())
}

async fn step(real: &Real, model: &mut Model, op: &Op, n: usize) -> Result<(), TestCaseError> {
    match *op {
        Op::Add(v) => {
            real.route(real.graph.add_vertex(&real.ids[v]).unwrap())
                .await;
            model.add(v);
        }
        Op::Remove(v) => {
            real.route(real.graph.remove_vertex(&real.ids[v]).unwrap())
                .await;
            model.perms.remove(&v);
            model.edges.retain(|(a, b)| *a != v && *b != v);
        }
        Op::Link(x, y) => {
            if x == y || (x >= NODES && y >= NODES) {
                return Ok(());
            }
            let (node, other) = if x < NODES { (x, y) } else { (y, x) };
            model.add(x);
            model.add(y);
            let before_x = model.perms[&x].clone();
            let before_y = model.perms[&y].clone();
            let (ni, oi) = (&real.ids[node], &real.ids[other]);
            let events = match oi {
                GestaltId::Node(o) => real
                    .graph
                    .link_nodes(ni.node().unwrap(), *o, proof(ni, n))
                    .unwrap(),
                GestaltId::Identity(p, i) => real
                    .graph
                    .link_identity(ni.node().unwrap(), p.clone(), i.clone(), proof(ni, n))
                    .unwrap(),
            };
            real.route(events).await;
            model.edges.insert((x.min(y), x.max(y)));
            let merged = rules::merge(model.component(x).iter().map(|m| &model.perms[m]));
            for m in model.component(x) {
                model.perms.insert(m, merged.clone());
            }
            // Merge is the union, on both sides.
            let union = rules::merge([&before_x, &before_y]);
            let px = real.acl.permission(&real.ids[x]).unwrap().unwrap();
            let py = real.acl.permission(&real.ids[y]).unwrap().unwrap();
            prop_assert_eq!(&px, &union);
            prop_assert_eq!(&py, &union);
        }
        Op::Unlink(x, y) => {
            let before = model.perms.get(&x).cloned();
            let events = real
                .route(real.graph.unlink(&real.ids[x], &real.ids[y]).unwrap())
                .await;
            model.edges.remove(&(x.min(y), x.max(y)));
            // Split copies: both halves keep the record held before.
            if let Some(GestaltEvent::Unlinked { left, right, .. }) = events.first()
                && !right.is_empty()
            {
                let before = before.unwrap();
                for m in left.iter().chain(right) {
                    prop_assert_eq!(real.acl.permission(m).unwrap(), Some(before.clone()));
                }
            }
        }
        Op::SetGestalt(v, g) => {
            real.gestalts.allow(&real.ids[v], g).await.unwrap();
            model.update(v, |p| {
                rules::set_gestalt_action(p, g);
            });
        }
        Op::UnsetGestalt(v, g) => {
            real.ensure(v).await;
            real.gestalts.disallow(&real.ids[v], g).await.unwrap();
            model.update(v, |p| {
                rules::unset_gestalt_action(p, g);
            });
        }
        Op::SetVault(v, w, a) => {
            real.ensure(v).await;
            let vault = real.vaults[w as usize];
            real.acl.set_vault_action(&real.ids[v], vault, a).unwrap();
            model.update(v, |p| {
                rules::set_vault_action(p, vault, a);
            });
        }
        Op::UnsetVault(v, w, a) => {
            real.ensure(v).await;
            let vault = real.vaults[w as usize];
            real.acl.unset_vault_action(&real.ids[v], vault, a).unwrap();
            model.update(v, |p| {
                rules::unset_vault_action(p, vault, a);
            });
        }
        Op::Share(v, w, grant) => {
            let vault = real.vaults[w as usize];
            let node = real.ids[v].node().unwrap();
            let known = model.perms.contains_key(&v);
            let told = std::cell::RefCell::new(None);
            let r = real
                .gestalts
                .share_vault(node.into(), vault, grant, async |nodes| {
                    *told.borrow_mut() = Some(nodes);
                    Ok(())
                })
                .await;
            if !known {
                // An unknown node is refused, and nothing changes.
                prop_assert!(r.is_err());
                prop_assert!(told.borrow().is_none());
                return Ok(());
            }
            r.unwrap();
            model.update(v, |p| {
                if grant {
                    rules::share_vault(p, vault);
                } else {
                    rules::unshare_vault(p, vault);
                }
            });
            // The notifications go to exactly the nodes of the gestalt.
            let want: BTreeSet<_> = model
                .component(v)
                .into_iter()
                .filter_map(|m| real.ids[m].node())
                .collect();
            let got: BTreeSet<_> = told.take().unwrap().into_iter().collect();
            prop_assert_eq!(got, want);
        }
        Op::Purge(w) => {
            let vault = real.vaults[w as usize];
            real.gestalts.purge_vault(vault).await.unwrap();
            for p in model.perms.values_mut() {
                rules::purge_vault(p, vault);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn acl_follows_the_graph(ops in proptest::collection::vec(op(), 1..40)) {
        actix::System::new().block_on(async {
            let real = Real::new();
            let mut model = Model::default();
            for (n, op) in ops.iter().enumerate() {
                step(&real, &mut model, op, n).await?;
                check(&real, &model)?;
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}
