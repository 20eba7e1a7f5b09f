//! [`GestaltGraph`]: nodes and identities, their links, and gestalts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use keynode_core::codec::{CodecError, decode, encode};
use keynode_core::store::heed3::types::{Bytes, Unit};
use keynode_core::store::heed3::{self, CommitOrAbort, EncryptedDatabase, RoTxn, RwTxn};
use keynode_core::{GestaltId, IdentityId, NodeId, ProviderId};
use serde::{Deserialize, Serialize};

use crate::{ClaimRef, Env};

/// LMDB database of vertices: encoded [`GestaltId`] → nothing.
pub const VERTICES_DB: &str = "gestalt.vertices";
/// LMDB database of adjacency: encoded `a` ‖ encoded `b` → encoded set of
/// [`ClaimRef`] proofs; every edge is stored in both directions. (An encoded
/// `GestaltId` is self-delimiting, so `a`'s encoding is a prefix of exactly its
/// edges.)
pub const EDGES_DB: &str = "gestalt.edges";
/// LMDB database of graph events not yet applied by their consumer (the ACL):
/// seq (8 bytes big endian) → encoded [`GestaltEvent`]. Each mutation writes
/// its events here in its own transaction; the consumer reads them with
/// [`GestaltGraph::pending`], applies them (idempotently) and removes them with
/// [`GestaltGraph::ack`]. A crash between the two leaves them here to apply
/// again, so the graph and its consumer never disagree for long, and no scan of
/// the whole graph is needed at start.
pub const PENDING_DB: &str = "gestalt.pending";
/// LMDB database of key rotations this node applied: old NodeId → new NodeId.
/// A node in it is refused as itself (its key was renewed).
pub const ROTATIONS_DB: &str = "gestalt.rotations";

/// What recording a rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RotationOutcome {
    /// Recorded now.
    Recorded,
    /// The same rotation was recorded before (a replay).
    Known,
    /// `old` was rotated before, to another node: refused.
    Conflict {
        /// The node `old` was rotated to before.
        earlier: NodeId,
    },
}

/// A graph operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Two identities cannot be linked directly.
    #[error("cannot link two identities ({0} and {1})")]
    IdentityToIdentity(GestaltId, GestaltId),
    /// A vertex cannot be linked to itself.
    #[error("cannot link {0} to itself")]
    SelfLink(GestaltId),
    /// LMDB failed.
    #[error("storage: {0}")]
    Storage(#[from] heed3::Error),
    /// A stored value could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// The blocking task running the operation failed.
    #[error("gestalt task failed: {0}")]
    Task(String),
}

/// A gestalt: a connected component of the graph.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gestalt {
    /// Its nodes.
    pub nodes: BTreeSet<NodeId>,
    /// Its identities.
    pub identities: BTreeSet<(ProviderId, IdentityId)>,
}

impl Gestalt {
    /// Every member, sorted (nodes first).
    pub fn members(&self) -> Vec<GestaltId> {
        self.nodes
            .iter()
            .map(|n| GestaltId::Node(*n))
            .chain(
                self.identities
                    .iter()
                    .map(|(p, i)| GestaltId::Identity(p.clone(), i.clone())),
            )
            .collect()
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: &GestaltId) -> bool {
        match id {
            GestaltId::Node(n) => self.nodes.contains(n),
            GestaltId::Identity(p, i) => self.identities.contains(&(p.clone(), i.clone())),
        }
    }

    fn from_members(members: impl IntoIterator<Item = GestaltId>) -> Gestalt {
        let mut g = Gestalt::default();
        for m in members {
            match m {
                GestaltId::Node(n) => {
                    g.nodes.insert(n);
                }
                GestaltId::Identity(p, i) => {
                    g.identities.insert((p, i));
                }
            }
        }
        g
    }
}

/// What a graph mutation did. The agent feeds these to the ACL
/// (`keynode_agent::gestalts::Gestalts::route`): permission propagation is this
/// fan-out. Each is also journaled in [`PENDING_DB`] until acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GestaltEvent {
    /// A vertex was added (alone in its own gestalt).
    VertexAdded(GestaltId),
    /// A vertex was removed (its edges were removed first, each with its own
    /// [`Unlinked`](GestaltEvent::Unlinked) event).
    VertexRemoved(GestaltId),
    /// A new edge `a`–`b`; `members` is the (possibly merged) gestalt, sorted.
    Linked {
        /// One end.
        a: GestaltId,
        /// The other end.
        b: GestaltId,
        /// Every member of the gestalt after the link.
        members: Vec<GestaltId>,
    },
    /// The edge `a`–`b` was removed. If the gestalt fell apart, `left` is `a`'s
    /// part and `right` is `b`'s; otherwise `left` is the whole gestalt and
    /// `right` is empty.
    Unlinked {
        /// One end.
        a: GestaltId,
        /// The other end.
        b: GestaltId,
        /// `a`'s gestalt after the unlink.
        left: Vec<GestaltId>,
        /// `b`'s gestalt after the unlink if it split off, else empty.
        right: Vec<GestaltId>,
    },
}

/// The gestalt graph of one node's view of the world, in LMDB. Every method is
/// one LMDB transaction, blocks, and takes `&self`; every mutation returns the
/// [`GestaltEvent`]s it caused, in order.
pub struct GestaltGraph {
    env: Env,
    vertices: EncryptedDatabase<'static, Bytes, Unit>,
    edges: EncryptedDatabase<'static, Bytes, Bytes>,
    pending: EncryptedDatabase<'static, Bytes, Bytes>,
    rotations: EncryptedDatabase<'static, Bytes, Bytes>,
}

const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<GestaltGraph>();
};

impl std::fmt::Debug for GestaltGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GestaltGraph").finish_non_exhaustive()
    }
}

/// The claims proving one edge.
type Proofs = BTreeSet<ClaimRef>;

fn seq_of(key: &[u8]) -> Result<u64, GraphError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| GraphError::Task("a pending event key is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(bytes))
}

fn node_from(bytes: &[u8]) -> Result<NodeId, GraphError> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| GraphError::Task("a rotation record is not 32 bytes".into()))?;
    NodeId::from_bytes(bytes).map_err(|e| GraphError::Task(e.to_string()))
}

fn edge_key(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len());
    k.extend_from_slice(a);
    k.extend_from_slice(b);
    k
}

impl GestaltGraph {
    /// Opens the graph, creating [`VERTICES_DB`], [`EDGES_DB`] and
    /// [`PENDING_DB`] in one write transaction.
    pub fn open(env: Env) -> Result<GestaltGraph, GraphError> {
        let wtxn = env.write_txn()?;
        let created = env.create_databases_and_commit(wtxn, |opener, wtxn| {
            let vertices: EncryptedDatabase<'_, Bytes, Unit> =
                opener.create_database(wtxn, Some(VERTICES_DB))?;
            let edges: EncryptedDatabase<'_, Bytes, Bytes> =
                opener.create_database(wtxn, Some(EDGES_DB))?;
            let pending: EncryptedDatabase<'_, Bytes, Bytes> =
                opener.create_database(wtxn, Some(PENDING_DB))?;
            let rotations: EncryptedDatabase<'_, Bytes, Bytes> =
                opener.create_database(wtxn, Some(ROTATIONS_DB))?;
            Ok::<_, heed3::Error>(CommitOrAbort::<_, ()>::Commit((
                vertices, edges, pending, rotations,
            )))
        })?;
        let CommitOrAbort::Commit((vertices, edges, pending, rotations)) = created else {
            return Err(GraphError::Task(
                "gestalt databases were not created".into(),
            ));
        };
        Ok(GestaltGraph {
            env,
            vertices,
            edges,
            pending,
            rotations,
        })
    }

    /// Journals `events` in [`PENDING_DB`] within the mutation's transaction.
    fn journal(&self, txn: &mut RwTxn<'_>, events: &[GestaltEvent]) -> Result<(), GraphError> {
        if events.is_empty() {
            return Ok(());
        }
        let first = match self.pending.last(txn)? {
            Some((k, _)) => seq_of(k)? + 1,
            None => 0,
        };
        for (seq, e) in (first..).zip(events) {
            self.pending.put(txn, &seq.to_be_bytes(), &encode(e)?)?;
        }
        Ok(())
    }

    /// The journaled events not yet acknowledged, oldest first, with their seqs.
    pub fn pending(&self) -> Result<Vec<(u64, GestaltEvent)>, GraphError> {
        let mut txn = self.env.read_txn()?;
        let mut out = Vec::new();
        for item in self.pending.iter(&mut txn)? {
            let (k, v) = item?;
            out.push((seq_of(k)?, decode(v)?));
        }
        Ok(out)
    }

    /// Removes the journaled events up to and including `upto`; returns how
    /// many went.
    pub fn ack(&self, upto: u64) -> Result<usize, GraphError> {
        let mut txn = self.env.write_txn()?;
        let end = upto.to_be_bytes();
        let range = (
            std::ops::Bound::Unbounded,
            std::ops::Bound::Included(&end[..]),
        );
        let n = self.pending.delete_range(&mut txn, &range)?;
        txn.commit()?;
        Ok(n)
    }

    fn neighbors_in(
        &self,
        txn: &mut RoTxn<'_>,
        key: &[u8],
    ) -> Result<Vec<(Vec<u8>, Proofs)>, GraphError> {
        let mut out = Vec::new();
        for item in self.edges.prefix_iter(txn, key)? {
            let (k, v) = item?;
            out.push((k[key.len()..].to_vec(), decode(v)?));
        }
        Ok(out)
    }

    /// The encoded members of `key`'s component.
    fn component_in(
        &self,
        txn: &mut RoTxn<'_>,
        key: &[u8],
    ) -> Result<BTreeSet<Vec<u8>>, GraphError> {
        let mut seen = BTreeSet::from([key.to_vec()]);
        let mut queue = VecDeque::from([key.to_vec()]);
        while let Some(v) = queue.pop_front() {
            for item in self.edges.prefix_iter(txn, &v)? {
                let (k, _) = item?;
                let n = k[v.len()..].to_vec();
                if seen.insert(n.clone()) {
                    queue.push_back(n);
                }
            }
        }
        Ok(seen)
    }

    fn members_of(set: &BTreeSet<Vec<u8>>) -> Result<Vec<GestaltId>, GraphError> {
        let mut out = set
            .iter()
            .map(|k| decode(k))
            .collect::<Result<Vec<GestaltId>, _>>()?;
        out.sort();
        Ok(out)
    }

    fn add_in(
        &self,
        txn: &mut RwTxn<'_>,
        id: &GestaltId,
        key: &[u8],
        events: &mut Vec<GestaltEvent>,
    ) -> Result<(), GraphError> {
        if self.vertices.get(txn, key)?.is_none() {
            self.vertices.put(txn, key, &())?;
            events.push(GestaltEvent::VertexAdded(id.clone()));
        }
        Ok(())
    }

    fn link(
        &self,
        a: &GestaltId,
        b: &GestaltId,
        proof: ClaimRef,
    ) -> Result<Vec<GestaltEvent>, GraphError> {
        if a == b {
            return Err(GraphError::SelfLink(a.clone()));
        }
        if a.node().is_none() && b.node().is_none() {
            return Err(GraphError::IdentityToIdentity(a.clone(), b.clone()));
        }
        let (ka, kb) = (encode(a)?, encode(b)?);
        let mut txn = self.env.write_txn()?;
        let mut events = Vec::new();
        self.add_in(&mut txn, a, &ka, &mut events)?;
        self.add_in(&mut txn, b, &kb, &mut events)?;
        let ab = edge_key(&ka, &kb);
        let mut proofs: BTreeSet<ClaimRef> = match self.edges.get(&mut txn, &ab)? {
            Some(v) => decode(v)?,
            None => BTreeSet::new(),
        };
        let new_edge = proofs.is_empty();
        if proofs.insert(proof) {
            let v = encode(&proofs)?;
            self.edges.put(&mut txn, &ab, &v)?;
            self.edges.put(&mut txn, &edge_key(&kb, &ka), &v)?;
        }
        if new_edge {
            let members = Self::members_of(&self.component_in(&mut txn, &ka)?)?;
            events.push(GestaltEvent::Linked {
                a: a.clone(),
                b: b.clone(),
                members,
            });
        }
        self.journal(&mut txn, &events)?;
        txn.commit()?;
        Ok(events)
    }

    fn unlink_in(
        &self,
        txn: &mut RwTxn<'_>,
        a: &GestaltId,
        b: &GestaltId,
    ) -> Result<Option<GestaltEvent>, GraphError> {
        let (ka, kb) = (encode(a)?, encode(b)?);
        if !self.edges.delete(txn, &edge_key(&ka, &kb))? {
            return Ok(None);
        }
        self.edges.delete(txn, &edge_key(&kb, &ka))?;
        let left = self.component_in(txn, &ka)?;
        let right = if left.contains(&kb) {
            Vec::new()
        } else {
            Self::members_of(&self.component_in(txn, &kb)?)?
        };
        Ok(Some(GestaltEvent::Unlinked {
            a: a.clone(),
            b: b.clone(),
            left: Self::members_of(&left)?,
            right,
        }))
    }

    /// Adds a vertex (alone in its gestalt). No event if it exists.
    pub fn add_vertex(&self, id: &GestaltId) -> Result<Vec<GestaltEvent>, GraphError> {
        let key = encode(id)?;
        let mut txn = self.env.write_txn()?;
        let mut events = Vec::new();
        self.add_in(&mut txn, id, &key, &mut events)?;
        self.journal(&mut txn, &events)?;
        txn.commit()?;
        Ok(events)
    }

    /// Removes a vertex: first each of its edges (an
    /// [`Unlinked`](GestaltEvent::Unlinked) each, in neighbor order), then the
    /// vertex. No event if it does not exist.
    pub fn remove_vertex(&self, id: &GestaltId) -> Result<Vec<GestaltEvent>, GraphError> {
        let key = encode(id)?;
        let mut txn = self.env.write_txn()?;
        if self.vertices.get(&mut txn, &key)?.is_none() {
            return Ok(Vec::new());
        }
        let mut events = Vec::new();
        let mut neighbors = self
            .neighbors_in(&mut txn, &key)?
            .into_iter()
            .map(|(k, _)| decode::<GestaltId>(&k))
            .collect::<Result<Vec<_>, _>>()?;
        neighbors.sort();
        for n in &neighbors {
            events.extend(self.unlink_in(&mut txn, id, n)?);
        }
        self.vertices.delete(&mut txn, &key)?;
        events.push(GestaltEvent::VertexRemoved(id.clone()));
        self.journal(&mut txn, &events)?;
        txn.commit()?;
        Ok(events)
    }

    /// Links two nodes (adding missing vertices) with the claim that proves it;
    /// a further proof of an existing edge is recorded without an event.
    pub fn link_nodes(
        &self,
        a: NodeId,
        b: NodeId,
        proof: ClaimRef,
    ) -> Result<Vec<GestaltEvent>, GraphError> {
        self.link(&GestaltId::Node(a), &GestaltId::Node(b), proof)
    }

    /// Links a node and an identity (adding missing vertices) with the claim that
    /// proves it.
    pub fn link_identity(
        &self,
        node: NodeId,
        provider: ProviderId,
        identity: IdentityId,
        proof: ClaimRef,
    ) -> Result<Vec<GestaltEvent>, GraphError> {
        self.link(
            &GestaltId::Node(node),
            &GestaltId::Identity(provider, identity),
            proof,
        )
    }

    /// Removes the edge `a`–`b`. No event if there is none.
    pub fn unlink(&self, a: &GestaltId, b: &GestaltId) -> Result<Vec<GestaltEvent>, GraphError> {
        let mut txn = self.env.write_txn()?;
        let events: Vec<GestaltEvent> = self.unlink_in(&mut txn, a, b)?.into_iter().collect();
        self.journal(&mut txn, &events)?;
        txn.commit()?;
        Ok(events)
    }

    /// Whether `id` is a vertex.
    pub fn contains(&self, id: &GestaltId) -> Result<bool, GraphError> {
        let mut txn = self.env.read_txn()?;
        Ok(self.vertices.get(&mut txn, &encode(id)?)?.is_some())
    }

    /// Records that `old`'s key was renewed as `new` (the caller verified the
    /// rotation claim). One `new` per `old`: a second, different one is a
    /// [`RotationOutcome::Conflict`] and changes nothing.
    pub fn record_rotation(&self, old: NodeId, new: NodeId) -> Result<RotationOutcome, GraphError> {
        let mut txn = self.env.write_txn()?;
        if let Some(bytes) = self.rotations.get(&mut txn, old.as_bytes())? {
            let earlier = node_from(bytes)?;
            return Ok(if earlier == new {
                RotationOutcome::Known
            } else {
                RotationOutcome::Conflict { earlier }
            });
        }
        self.rotations
            .put(&mut txn, old.as_bytes(), new.as_bytes())?;
        txn.commit()?;
        Ok(RotationOutcome::Recorded)
    }

    /// Revokes `node`'s key without a successor (a key that may be stolen):
    /// recorded as a rotation to itself, so it is refused from now on and a
    /// later rotation of it is a [`RotationOutcome::Conflict`].
    pub fn revoke(&self, node: NodeId) -> Result<RotationOutcome, GraphError> {
        let mut txn = self.env.write_txn()?;
        if self.rotations.get(&mut txn, node.as_bytes())?.is_some() {
            return Ok(RotationOutcome::Known);
        }
        self.rotations
            .put(&mut txn, node.as_bytes(), node.as_bytes())?;
        txn.commit()?;
        Ok(RotationOutcome::Recorded)
    }

    /// The node `node`'s key was renewed as, if it was: a node with a renewed
    /// key is refused as itself.
    pub fn rotated_to(&self, node: NodeId) -> Result<Option<NodeId>, GraphError> {
        let mut txn = self.env.read_txn()?;
        self.rotations
            .get(&mut txn, node.as_bytes())?
            .map(node_from)
            .transpose()
    }

    /// The gestalt `id` belongs to, or `None` if it is not a vertex.
    pub fn gestalt_of(&self, id: &GestaltId) -> Result<Option<Gestalt>, GraphError> {
        let key = encode(id)?;
        let mut txn = self.env.read_txn()?;
        if self.vertices.get(&mut txn, &key)?.is_none() {
            return Ok(None);
        }
        let members = Self::members_of(&self.component_in(&mut txn, &key)?)?;
        Ok(Some(Gestalt::from_members(members)))
    }

    /// Every gestalt, sorted by first member.
    pub fn gestalts(&self) -> Result<Vec<Gestalt>, GraphError> {
        let mut txn = self.env.read_txn()?;
        let vertices = self
            .vertices
            .iter(&mut txn)?
            .map(|item| Ok(item?.0.to_vec()))
            .collect::<Result<Vec<_>, GraphError>>()?;
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for k in vertices {
            if seen.contains(&k) {
                continue;
            }
            let component = self.component_in(&mut txn, &k)?;
            let members = Self::members_of(&component)?;
            seen.extend(component);
            out.push(Gestalt::from_members(members));
        }
        out.sort_by_key(|g| g.members().first().cloned());
        Ok(out)
    }

    /// Every vertex, sorted.
    pub fn vertices(&self) -> Result<Vec<GestaltId>, GraphError> {
        let mut txn = self.env.read_txn()?;
        let mut out = self
            .vertices
            .iter(&mut txn)?
            .map(|item| Ok(decode::<GestaltId>(item?.0)?))
            .collect::<Result<Vec<_>, GraphError>>()?;
        out.sort();
        Ok(out)
    }

    /// The vertices linked to `id`, with the claims that prove each edge.
    pub fn neighbors(
        &self,
        id: &GestaltId,
    ) -> Result<BTreeMap<GestaltId, BTreeSet<ClaimRef>>, GraphError> {
        let mut txn = self.env.read_txn()?;
        self.neighbors_in(&mut txn, &encode(id)?)?
            .into_iter()
            .map(|(k, proofs)| Ok((decode(&k)?, proofs)))
            .collect()
    }
}
