//! The messages [`GestaltManager`] answers, one per [`GestaltGraph`] method, each
//! replying `Result<_, GraphError>` once the blocking call is done.
//!
//! [`GestaltGraph`]: crate::GestaltGraph

use std::collections::{BTreeMap, BTreeSet};

use keynode_core::{GestaltId, IdentityId, NodeId, ProviderId};

use crate::{ClaimRef, Gestalt, GestaltEvent, GestaltManager, GraphError};

/// Declares a message and its `GestaltManager` handler (see `keynode_core::store_message!`).
macro_rules! graph_message {
    ($($t:tt)*) => {
        keynode_core::store_message!(GestaltManager, GraphError; $($t)*);
    };
}

graph_message! {
    /// Adds a vertex.
    #[derive(Debug, Clone)]
    pub struct AddVertex {
        /// The vertex.
        pub id: GestaltId,
    } -> Vec<GestaltEvent>;
    |graph, msg| graph.add_vertex(&msg.id)
}

graph_message! {
    /// Removes a vertex and its edges.
    #[derive(Debug, Clone)]
    pub struct RemoveVertex {
        /// The vertex.
        pub id: GestaltId,
    } -> Vec<GestaltEvent>;
    |graph, msg| graph.remove_vertex(&msg.id)
}

graph_message! {
    /// Links two nodes.
    #[derive(Debug, Clone)]
    pub struct LinkNodes {
        /// One node.
        pub a: NodeId,
        /// The other.
        pub b: NodeId,
        /// The claim that proves it.
        pub proof: ClaimRef,
    } -> Vec<GestaltEvent>;
    |graph, msg| graph.link_nodes(msg.a, msg.b, msg.proof)
}

graph_message! {
    /// Links a node and an identity.
    #[derive(Debug, Clone)]
    pub struct LinkIdentity {
        /// The node.
        pub node: NodeId,
        /// The provider.
        pub provider: ProviderId,
        /// The identity.
        pub identity: IdentityId,
        /// The claim that proves it.
        pub proof: ClaimRef,
    } -> Vec<GestaltEvent>;
    |graph, msg| graph.link_identity(msg.node, msg.provider, msg.identity, msg.proof)
}

graph_message! {
    /// Removes an edge.
    #[derive(Debug, Clone)]
    pub struct Unlink {
        /// One end.
        pub a: GestaltId,
        /// The other end.
        pub b: GestaltId,
    } -> Vec<GestaltEvent>;
    |graph, msg| graph.unlink(&msg.a, &msg.b)
}

graph_message! {
    /// The gestalt of a vertex.
    #[derive(Debug, Clone)]
    pub struct GestaltOf {
        /// The vertex.
        pub id: GestaltId,
    } -> Option<Gestalt>;
    |graph, msg| graph.gestalt_of(&msg.id)
}

graph_message! {
    /// Every gestalt.
    #[derive(Debug, Clone)]
    pub struct Gestalts {} -> Vec<Gestalt>;
    |graph, _msg| graph.gestalts()
}

graph_message! {
    /// A vertex's neighbors and the proofs of each edge.
    #[derive(Debug, Clone)]
    pub struct Neighbors {
        /// The vertex.
        pub id: GestaltId,
    } -> BTreeMap<GestaltId, BTreeSet<ClaimRef>>;
    |graph, msg| graph.neighbors(&msg.id)
}

graph_message! {
    /// The journaled events not yet acknowledged, oldest first, with their seqs.
    #[derive(Debug, Clone)]
    pub struct Pending {} -> Vec<(u64, GestaltEvent)>;
    |graph, _msg| graph.pending()
}

graph_message! {
    /// Acknowledges journaled events up to and including `upto`.
    #[derive(Debug, Clone)]
    pub struct Ack {
        /// The last seq applied.
        pub upto: u64,
    } -> usize;
    |graph, msg| graph.ack(msg.upto)
}

graph_message! {
    /// Records a key rotation ([`GestaltGraph::record_rotation`](crate::GestaltGraph::record_rotation)).
    #[derive(Debug, Clone, Copy)]
    pub struct RecordRotation {
        /// The renewed key's node.
        pub old: NodeId,
        /// Its new key's node.
        pub new: NodeId,
    } -> crate::RotationOutcome;
    |graph, msg| graph.record_rotation(msg.old, msg.new)
}

graph_message! {
    /// What `node`'s key was renewed as, if it was.
    #[derive(Debug, Clone, Copy)]
    pub struct RotatedTo {
        /// The node.
        pub node: NodeId,
    } -> Option<NodeId>;
    |graph, msg| graph.rotated_to(msg.node)
}

graph_message! {
    /// Revokes a key without a successor ([`GestaltGraph::revoke`](crate::GestaltGraph::revoke)).
    #[derive(Debug, Clone, Copy)]
    pub struct Revoke {
        /// The node.
        pub node: NodeId,
    } -> crate::RotationOutcome;
    |graph, msg| graph.revoke(msg.node)
}
