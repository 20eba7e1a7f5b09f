//! The gestalt graph: components and the events every mutation returns.

use std::sync::Arc;

use keynode_core::{GestaltId, IdentityId, Keypair, NodeId, ProviderId, Tid};
use keynode_gestalt::{
    ClaimRef, Env, GestaltEvent, GestaltGraph, GestaltManager, GraphError, messages,
};

fn open_env(dir: &std::path::Path) -> Env {
    let key = keynode_core::datakey::DataKey::from_bytes([7; 32]);
    keynode_core::store::open_env(dir, &key, 1 << 28, 16).unwrap()
}

fn graph() -> (tempfile::TempDir, GestaltGraph) {
    let tmp = tempfile::tempdir().unwrap();
    let g = GestaltGraph::open(open_env(tmp.path())).unwrap();
    (tmp, g)
}

fn nodes(n: usize) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = (0..n).map(|_| Keypair::generate().node_id()).collect();
    v.sort();
    v
}

fn proof(chain: NodeId, seq: u64) -> ClaimRef {
    ClaimRef {
        chain,
        seq,
        id: Tid::from_bytes([seq as u8; 16]).unwrap(),
    }
}

fn g(n: NodeId) -> GestaltId {
    GestaltId::Node(n)
}

#[test]
fn linking_merges_components_and_reports_them() {
    let (_t, graph) = graph();
    let n = nodes(3);
    let (p, i) = (
        ProviderId::new("offline").unwrap(),
        IdentityId::new("alice").unwrap(),
    );
    let alice = GestaltId::Identity(p.clone(), i.clone());

    assert_eq!(
        graph.add_vertex(&g(n[0])).unwrap(),
        vec![GestaltEvent::VertexAdded(g(n[0]))]
    );
    assert!(graph.add_vertex(&g(n[0])).unwrap().is_empty());

    let ev = graph.link_nodes(n[0], n[1], proof(n[0], 0)).unwrap();
    assert_eq!(
        ev,
        vec![
            GestaltEvent::VertexAdded(g(n[1])),
            GestaltEvent::Linked {
                a: g(n[0]),
                b: g(n[1]),
                members: vec![g(n[0]), g(n[1])]
            },
        ]
    );
    // A second proof of the same edge: recorded, no event.
    assert!(
        graph
            .link_nodes(n[1], n[0], proof(n[1], 0))
            .unwrap()
            .is_empty()
    );
    assert_eq!(graph.neighbors(&g(n[0])).unwrap()[&g(n[1])].len(), 2);

    let ev = graph
        .link_identity(n[2], p.clone(), i.clone(), proof(n[2], 0))
        .unwrap();
    assert_eq!(ev.len(), 3);
    let ev = graph.link_nodes(n[1], n[2], proof(n[1], 1)).unwrap();
    let all = vec![g(n[0]), g(n[1]), g(n[2]), alice.clone()];
    assert_eq!(
        ev,
        vec![GestaltEvent::Linked {
            a: g(n[1]),
            b: g(n[2]),
            members: all.clone()
        }]
    );

    let gestalt = graph.gestalt_of(&g(n[0])).unwrap().unwrap();
    assert_eq!(gestalt.members(), all);
    assert!(gestalt.contains(&alice));
    assert_eq!(graph.gestalts().unwrap().len(), 1);
    assert_eq!(graph.vertices().unwrap(), all);
    assert!(graph.gestalt_of(&g(nodes(1)[0])).unwrap().is_none());

    assert!(matches!(
        graph.link_nodes(n[0], n[0], proof(n[0], 9)),
        Err(GraphError::SelfLink(_))
    ));
    let bob = GestaltId::Identity(p, IdentityId::new("bob").unwrap());
    assert!(graph.add_vertex(&bob).is_ok());
}

#[test]
fn unlinking_splits_or_not_and_removing_a_vertex_unlinks_first() {
    let (_t, graph) = graph();
    let n = nodes(4);
    // A cycle 0-1-2-0 and a tail 2-3.
    graph.link_nodes(n[0], n[1], proof(n[0], 0)).unwrap();
    graph.link_nodes(n[1], n[2], proof(n[1], 0)).unwrap();
    graph.link_nodes(n[2], n[0], proof(n[2], 0)).unwrap();
    graph.link_nodes(n[2], n[3], proof(n[2], 1)).unwrap();

    // Breaking the cycle does not split.
    let ev = graph.unlink(&g(n[0]), &g(n[1])).unwrap();
    assert_eq!(
        ev,
        vec![GestaltEvent::Unlinked {
            a: g(n[0]),
            b: g(n[1]),
            left: n.iter().map(|x| g(*x)).collect(),
            right: vec![]
        }]
    );
    assert!(graph.unlink(&g(n[0]), &g(n[1])).unwrap().is_empty());

    // Cutting the tail does.
    let ev = graph.unlink(&g(n[3]), &g(n[2])).unwrap();
    assert_eq!(
        ev,
        vec![GestaltEvent::Unlinked {
            a: g(n[3]),
            b: g(n[2]),
            left: vec![g(n[3])],
            right: vec![g(n[0]), g(n[1]), g(n[2])],
        }]
    );
    assert_eq!(graph.gestalts().unwrap().len(), 2);

    // Removing 2 (the hub of 0-2-1) leaves 0 and 1 apart.
    let ev = graph.remove_vertex(&g(n[2])).unwrap();
    assert_eq!(ev.len(), 3);
    assert!(matches!(&ev[0], GestaltEvent::Unlinked { right, .. } if right.len() == 1));
    assert!(matches!(&ev[1], GestaltEvent::Unlinked { right, .. } if right.len() == 1));
    assert_eq!(ev[2], GestaltEvent::VertexRemoved(g(n[2])));
    assert_eq!(graph.gestalts().unwrap().len(), 3);
    assert!(graph.remove_vertex(&g(n[2])).unwrap().is_empty());
    assert!(graph.neighbors(&g(n[0])).unwrap().is_empty());
}

#[test]
fn identities_are_never_linked_to_each_other() {
    let (_t, graph) = graph();
    let a: GestaltId = "p:a".parse().unwrap();
    let b: GestaltId = "p:b".parse().unwrap();
    graph.add_vertex(&a).unwrap();
    graph.add_vertex(&b).unwrap();
    assert!(graph.unlink(&a, &b).unwrap().is_empty());
}

#[actix_rt::test]
async fn the_actor_runs_graph_calls() {
    use actix::Actor;
    let (_t, graph) = graph();
    let addr = GestaltManager::new(Arc::new(graph)).start();
    let n = nodes(2);
    let ev = addr
        .send(messages::LinkNodes {
            a: n[0],
            b: n[1],
            proof: proof(n[0], 0),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.len(), 3);
    let gestalt = addr
        .send(messages::GestaltOf { id: g(n[1]) })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(gestalt.nodes.len(), 2);
    let ev = addr
        .send(messages::RemoveVertex { id: g(n[0]) })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.last(), Some(&GestaltEvent::VertexRemoved(g(n[0]))));
    assert_eq!(
        addr.send(messages::Gestalts {})
            .await
            .unwrap()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn every_mutation_journals_its_events_until_acknowledged() {
    let (_tmp, graph) = graph();
    let n = nodes(3);
    let mut all = Vec::new();
    all.extend(graph.add_vertex(&g(n[0])).unwrap());
    all.extend(graph.link_nodes(n[0], n[1], proof(n[0], 1)).unwrap());
    all.extend(graph.link_nodes(n[1], n[2], proof(n[1], 1)).unwrap());
    // No change, no event, nothing journaled.
    assert!(graph.add_vertex(&g(n[0])).unwrap().is_empty());
    all.extend(graph.unlink(&g(n[0]), &g(n[1])).unwrap());
    all.extend(graph.remove_vertex(&g(n[2])).unwrap());
    let pending = graph.pending().unwrap();
    let seqs: Vec<u64> = pending.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (0..all.len() as u64).collect::<Vec<_>>());
    let events: Vec<GestaltEvent> = pending.into_iter().map(|(_, e)| e).collect();
    assert_eq!(events, all);
    // Acknowledging a prefix leaves the rest, in order; seqs keep counting.
    assert_eq!(graph.ack(2).unwrap(), 3);
    let rest: Vec<GestaltEvent> = graph
        .pending()
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(rest, all[3..]);
    assert_eq!(graph.ack(u64::MAX).unwrap(), all.len() - 3);
    assert!(graph.pending().unwrap().is_empty());
    let more = graph.add_vertex(&g(n[2])).unwrap();
    assert_eq!(graph.pending().unwrap(), vec![(0, more[0].clone())]);
}
