//! Discovery: walking from a vertex, fetching and verifying sigchains and
//! identity claims, and linking what they prove into the graph.
//!
//! The decisions are plain functions and a plain [`Walk`] (what to visit next,
//! what a verified chain lets us link); [`Discovery::run`] is the async driver
//! that does the fetching through a [`ChainSource`] and the
//! [`IdentityProvider`]s, so a simulator can drive either.
//!
//! Rules:
//! - Nothing unverified enters the graph. A node–node link enters when a claim
//!   in a node's chain verifies ([`verify_chain`]: signed by both, in the right
//!   chain, hash-linked). A node–identity link enters when the identity's
//!   provider shows a claim signed by the node naming that identity (the node's
//!   signature proves the node's consent, publication the identity's); a claim
//!   in the node's chain only makes the identity worth visiting (a *hint*, kept
//!   in [`HINTS_DB`] so reruns look again).
//! - Chains are fetched incrementally: per node, the last verified entry
//!   ([`ChainHead`]) is kept in [`HEADS_DB`] and only later entries are fetched.
//!   A batch that fails verification is dropped whole and the head stays.
//! - The walk follows links transitively, including those already in the graph,
//!   up to a bound ([`MAX_DISCOVERY_VERTICES`]) on the vertices visited.
//! - Links are written before the head moves, so a crash in between only makes
//!   the next run re-verify (re-linking is idempotent).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;

use keynode_core::codec::{CodecError, decode, encode};
use keynode_core::store::heed3::types::{Bytes, Unit};
use keynode_core::store::heed3::{self, CommitOrAbort, EncryptedDatabase};
use keynode_core::{GestaltId, IdentityId, NodeId, ProviderId};

use crate::claims::{ChainHead, ClaimBody, SignedClaim, verify_claim};
use crate::provider::{IdentityProvider, ProviderError};
use crate::verify::{ChainError, ClaimRef, VerifiedLink, verify_chain};
use crate::{Env, GestaltEvent, GestaltGraph, GraphError};

/// Most vertices one discovery run visits.
pub const MAX_DISCOVERY_VERTICES: usize = 1_000;
/// Most fetches of one node's chain in one run (each returns a batch of
/// entries after the last verified one).
pub const MAX_FETCHES_PER_NODE: usize = 64;

/// LMDB database: [`NodeId`] bytes → encoded [`ChainHead`], the last verified
/// entry of that node's chain.
pub const HEADS_DB: &str = "discovery.heads";
/// LMDB database: [`NodeId`] bytes ‖ encoded identity [`GestaltId`] → nothing;
/// identities a node's chain claims, to check on their provider.
pub const HINTS_DB: &str = "discovery.hints";

/// Where sigchains come from (the network, or a simulator).
pub trait ChainSource: Send + Sync {
    /// `node`'s chain entries after seq `after` (all for `None`), in order. May
    /// return fewer than exist; an empty answer means no more.
    fn claims(
        &self,
        node: NodeId,
        after: Option<u64>,
    ) -> impl Future<Output = Result<Vec<SignedClaim>, SourceError>> + Send;
}

/// A chain could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The node cannot be reached now.
    #[error("{0} is unreachable")]
    Unreachable(NodeId),
    /// The node answered with an error.
    #[error("{node} refused to send its sigchain: {reason}")]
    Refused {
        /// The node.
        node: NodeId,
        /// What it said.
        reason: String,
    },
}

/// Why one vertex could not be (fully) discovered; the run goes on.
#[derive(Debug, thiserror::Error)]
pub enum VertexFailure {
    /// Fetching the chain failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The fetched chain did not verify.
    #[error("sigchain rejected: {0}")]
    Chain(#[from] ChainError),
    /// The identity provider failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// No provider with this id is configured.
    #[error("unknown identity provider {0}")]
    UnknownProvider(ProviderId),
}

/// Discovery itself failed (local storage).
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The graph failed.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// LMDB failed.
    #[error("storage: {0}")]
    Storage(#[from] heed3::Error),
    /// A stored value could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
}

/// What a run did.
#[derive(Debug, Default)]
pub struct DiscoveryReport {
    /// Graph events caused, in order (feed them to the ACL).
    pub events: Vec<GestaltEvent>,
    /// Vertices visited, in order.
    pub visited: Vec<GestaltId>,
    /// Vertices that failed, and why.
    pub failures: Vec<(GestaltId, VertexFailure)>,
    /// Whether the bound stopped the walk before it ran out of vertices.
    pub truncated: bool,
}

/// The walk's frontier: breadth first, each vertex once, at most `max` vertices.
#[derive(Debug, Clone)]
pub struct Walk {
    queue: VecDeque<GestaltId>,
    seen: BTreeSet<GestaltId>,
    max: usize,
    truncated: bool,
}

impl Walk {
    /// A walk from `start` visiting at most `max` vertices.
    pub fn new(start: GestaltId, max: usize) -> Walk {
        let mut w = Walk {
            queue: VecDeque::new(),
            seen: BTreeSet::new(),
            max,
            truncated: false,
        };
        w.push(start);
        w
    }

    /// Queues `v` unless it was seen or the bound is reached. Returns whether
    /// it was queued.
    pub fn push(&mut self, v: GestaltId) -> bool {
        if self.seen.contains(&v) {
            return false;
        }
        if self.seen.len() >= self.max {
            self.truncated = true;
            return false;
        }
        self.seen.insert(v.clone());
        self.queue.push_back(v);
        true
    }

    /// The next vertex to visit.
    pub fn next_vertex(&mut self) -> Option<GestaltId> {
        self.queue.pop_front()
    }

    /// Whether the bound refused a vertex.
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

/// What a node's verified chain entries lead to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainPlan {
    /// Node–node links to add to the graph.
    pub node_links: Vec<(NodeId, NodeId, ClaimRef)>,
    /// Identities to check on their providers (not linked yet).
    pub identity_hints: Vec<GestaltId>,
}

/// Decides what verified chain entries let us link: node links at once (both
/// signatures are in hand), identity claims only as hints.
pub fn plan_chain(links: &[VerifiedLink]) -> ChainPlan {
    let mut plan = ChainPlan::default();
    for link in links {
        match link {
            VerifiedLink::Node {
                owner,
                other,
                claim,
            } => plan.node_links.push((*owner, *other, *claim)),
            // A renewed key links to the one it renews; refusing the old key
            // afterwards is the agent's, when it applies the rotation.
            VerifiedLink::Rotation { old, new, claim } => {
                plan.node_links.push((*old, *new, *claim))
            }
            VerifiedLink::Identity {
                provider, identity, ..
            } => {
                let id = GestaltId::Identity(provider.clone(), identity.clone());
                if !plan.identity_hints.contains(&id) {
                    plan.identity_hints.push(id);
                }
            }
        }
    }
    plan
}

/// The node–identity links the claims published under `provider:identity`
/// prove: each a [`LinkIdentity`](ClaimBody::LinkIdentity) claim naming exactly
/// this provider and identity, validly signed by its node. Anything else is
/// ignored.
pub fn identity_links(
    provider: &ProviderId,
    identity: &IdentityId,
    published: &[SignedClaim],
) -> Vec<(NodeId, ClaimRef)> {
    let mut out = Vec::new();
    for c in published {
        if let ClaimBody::LinkIdentity {
            node,
            provider: p,
            identity: i,
        } = &c.claim.body
            && p == provider
            && i == identity
            && verify_claim(*node, c).is_ok()
        {
            out.push((*node, ClaimRef::of(*node, c)));
        }
    }
    out
}

/// Discovery's own state (per-node chain heads and identity hints) and its
/// driver.
pub struct Discovery {
    env: Env,
    heads: EncryptedDatabase<'static, Bytes, Bytes>,
    hints: EncryptedDatabase<'static, Bytes, Unit>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery").finish_non_exhaustive()
    }
}

impl Discovery {
    /// Opens discovery's state, creating [`HEADS_DB`] and [`HINTS_DB`].
    pub fn open(env: Env) -> Result<Discovery, DiscoveryError> {
        let wtxn = env.write_txn()?;
        let created = env.create_databases_and_commit(wtxn, |opener, wtxn| {
            let heads: EncryptedDatabase<'_, Bytes, Bytes> =
                opener.create_database(wtxn, Some(HEADS_DB))?;
            let hints: EncryptedDatabase<'_, Bytes, Unit> =
                opener.create_database(wtxn, Some(HINTS_DB))?;
            Ok::<_, heed3::Error>(CommitOrAbort::<_, ()>::Commit((heads, hints)))
        })?;
        let CommitOrAbort::Commit((heads, hints)) = created else {
            return Err(GraphError::Task("discovery databases were not created".into()).into());
        };
        Ok(Discovery { env, heads, hints })
    }

    /// The last verified entry of `node`'s chain.
    pub fn head(&self, node: &NodeId) -> Result<Option<ChainHead>, DiscoveryError> {
        let mut txn = self.env.read_txn()?;
        Ok(self
            .heads
            .get(&mut txn, node.as_bytes())?
            .map(decode)
            .transpose()?)
    }

    fn save(
        &self,
        node: &NodeId,
        head: &ChainHead,
        hints: &[GestaltId],
    ) -> Result<(), DiscoveryError> {
        let mut txn = self.env.write_txn()?;
        self.heads.put(&mut txn, node.as_bytes(), &encode(head)?)?;
        for h in hints {
            let mut k = node.as_bytes().to_vec();
            k.extend(encode(h)?);
            self.hints.put(&mut txn, &k, &())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn hints_of(&self, node: &NodeId) -> Result<Vec<GestaltId>, DiscoveryError> {
        let mut txn = self.env.read_txn()?;
        let mut out = Vec::new();
        for item in self.hints.prefix_iter(&mut txn, node.as_bytes())? {
            let (k, ()) = item?;
            out.push(decode(&k[32..])?);
        }
        Ok(out)
    }

    /// Fetches, verifies and links `node`'s new chain entries.
    async fn visit_node<S: ChainSource>(
        &self,
        node: NodeId,
        graph: &GestaltGraph,
        source: &S,
        report: &mut DiscoveryReport,
    ) -> Result<Result<(), VertexFailure>, DiscoveryError> {
        let mut head = self.head(&node)?;
        for _ in 0..MAX_FETCHES_PER_NODE {
            let claims = match source.claims(node, head.map(|h| h.seq)).await {
                Ok(c) => c,
                Err(e) => return Ok(Err(e.into())),
            };
            let Some(last) = claims.last() else {
                break;
            };
            let links = match verify_chain(node, &claims, head.as_ref()) {
                Ok(l) => l,
                Err(e) => return Ok(Err(e.into())),
            };
            let new_head = match last.head() {
                Ok(h) => h,
                Err(e) => {
                    return Ok(Err(ChainError::Claim {
                        seq: last.claim.seq,
                        source: e,
                    }
                    .into()));
                }
            };
            let plan = plan_chain(&links);
            for (a, b, proof) in plan.node_links {
                report.events.extend(graph.link_nodes(a, b, proof)?);
            }
            self.save(&node, &new_head, &plan.identity_hints)?;
            head = Some(new_head);
        }
        Ok(Ok(()))
    }

    /// Checks the claims published under an identity and links what they prove.
    async fn visit_identity<P: IdentityProvider>(
        &self,
        provider: &ProviderId,
        identity: &IdentityId,
        graph: &GestaltGraph,
        providers: &[P],
        report: &mut DiscoveryReport,
    ) -> Result<Result<(), VertexFailure>, DiscoveryError> {
        let Some(p) = providers.iter().find(|p| &p.id() == provider) else {
            return Ok(Err(VertexFailure::UnknownProvider(provider.clone())));
        };
        let published = match p.claims(identity).await {
            Ok(c) => c,
            Err(e) => return Ok(Err(e.into())),
        };
        for (node, proof) in identity_links(provider, identity, &published) {
            report.events.extend(graph.link_identity(
                node,
                provider.clone(),
                identity.clone(),
                proof,
            )?);
        }
        Ok(Ok(()))
    }

    /// Walks from `start` (at most `max_vertices` vertices): fetches each node's
    /// new chain entries from `source` and each identity's published claims from
    /// its provider, verifies them, links what they prove into `graph`, and
    /// follows every link (new or already known) and identity hint. Can be re-run
    /// at any time; it only fetches what is new.
    ///
    /// Graph and state writes are short blocking LMDB transactions made inline;
    /// run it on a task that may block briefly (not on an actor's event loop).
    pub async fn run<S: ChainSource, P: IdentityProvider>(
        &self,
        start: &GestaltId,
        graph: &GestaltGraph,
        source: &S,
        providers: &[P],
        max_vertices: usize,
    ) -> Result<DiscoveryReport, DiscoveryError> {
        let mut report = DiscoveryReport::default();
        let mut walk = Walk::new(start.clone(), max_vertices);
        while let Some(v) = walk.next_vertex() {
            let outcome = match &v {
                GestaltId::Node(n) => self.visit_node(*n, graph, source, &mut report).await?,
                GestaltId::Identity(p, i) => {
                    self.visit_identity(p, i, graph, providers, &mut report)
                        .await?
                }
            };
            if let Err(e) = outcome {
                tracing::debug!(vertex = %v, error = %e, "discovery could not visit a vertex");
                report.failures.push((v.clone(), e));
            }
            let mut next: BTreeMap<GestaltId, ()> =
                graph.neighbors(&v)?.into_keys().map(|k| (k, ())).collect();
            if let GestaltId::Node(n) = &v {
                next.extend(self.hints_of(n)?.into_iter().map(|k| (k, ())));
            }
            for n in next.into_keys() {
                walk.push(n);
            }
            report.visited.push(v);
        }
        report.truncated = walk.truncated();
        Ok(report)
    }
}
