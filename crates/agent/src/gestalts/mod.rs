//! The node's gestalts and permissions: the graph, the ACL, the sigchain, claims
//! and discovery, wired together.
//!
//! Permission propagation is an event fan-out: every graph mutation journals
//! its [`GestaltEvent`]s in its own transaction, and [`Gestalts::route`] sends
//! each to the ACL actor (a new vertex gets its own record, a link shares the
//! union, a split copies) and then acknowledges them. What a crash between the
//! two transactions leaves journaled is applied at the next start
//! ([`Gestalts::recover`]), so the graph and the ACL never disagree about who
//! exists.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::AgentNetwork;
use actix::Addr;
use keynode_acl::messages as acl;
use keynode_acl::{AclManager, GestaltAction, Permission, VaultAction};
use keynode_core::exec::Exec;
use keynode_core::{Clock, GestaltId, Keypair, NodeId, SystemClock, TidGenerator, VaultId};
use keynode_gestalt::messages as graph;
use keynode_gestalt::{
    ChainSource, Discovery, DiscoveryReport, GestaltEvent, GestaltGraph, GestaltManager,
    MAX_DISCOVERY_VERTICES, OfflineProvider, Sigchain, SignedClaim, SourceError,
};
use keynode_net::{NetError, WireError, WireErrorKind};

use crate::api::{ApiError, ErrorKind, GestaltView, VaultGrant};
use crate::errors::{Ask, Failure, to_peer};
use crate::protocol::{PeerRequest, PeerResponse};

mod claims;
mod refusals;
mod rotation;
mod views;

pub use refusals::{MAX_REFUSING_PEERS, REFUSAL_WINDOW, Refusals};

pub use views::permission_view;
use views::{gestalt_view, identity_text};

/// Name of the identity provider that ships with keynode.
pub const OFFLINE_PROVIDER: &str = "offline";
/// How often known gestalts are discovered again.
pub const REDISCOVER_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Everything the node knows about gestalts, and the operations on it.
pub struct Gestalts {
    me: NodeId,
    key: Arc<Keypair>,
    tids: TidGenerator<Arc<dyn Clock>>,
    clock: Arc<dyn Clock>,
    /// Refusals being gathered (see [`Refusals`]).
    refusals: std::sync::Mutex<Refusals>,
    graph_store: Arc<GestaltGraph>,
    graph: Addr<GestaltManager>,
    acl: Addr<AclManager>,
    sigchain: Arc<Sigchain>,
    discovery: Arc<Discovery>,
    provider: OfflineProvider,
    /// One claim exchange at a time: each appends to our chain at its head.
    claim_lock: tokio::sync::Mutex<()>,
    /// One graph mutation (with the routing of its events to the ACL) at a
    /// time, so a reader never sees the graph ahead of the ACL.
    mutations: tokio::sync::Mutex<()>,
    net: OnceLock<AgentNetwork>,
    audit: OnceLock<Addr<keynode_audit::AuditManager>>,
    exec: Exec,
    /// When nodes last made us re-discover their gestalt (`GestaltGrew`).
    hints: crate::growth::Hints,
}

/// Chains come from the network (ours from disk).
struct NetSource {
    me: NodeId,
    sigchain: Arc<Sigchain>,
    net: AgentNetwork,
}

impl ChainSource for NetSource {
    async fn claims(
        &self,
        node: NodeId,
        after: Option<u64>,
    ) -> Result<Vec<SignedClaim>, SourceError> {
        if node == self.me {
            return self
                .sigchain
                .claims_after(after)
                .map_err(|e| SourceError::Refused {
                    node,
                    reason: e.to_string(),
                });
        }
        match self
            .net
            .call::<_, PeerResponse>(node, &PeerRequest::Chain { after })
            .await
        {
            Ok(PeerResponse::Chain(claims)) => Ok(claims),
            Ok(_) => Err(SourceError::Refused {
                node,
                reason: "unexpected answer".into(),
            }),
            Err(NetError::Remote(w)) => Err(SourceError::Refused {
                node,
                reason: w.message,
            }),
            Err(_) => Err(SourceError::Unreachable(node)),
        }
    }
}

impl Gestalts {
    /// Wires the stores and actors of one node (the agent does this at start;
    /// embedders and tests may too). `graph` must be the actor over
    /// `graph_store`; the network and audit log are plugged in later.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: Arc<Keypair>,
        graph_store: Arc<GestaltGraph>,
        graph: Addr<GestaltManager>,
        acl: Addr<AclManager>,
        sigchain: Arc<Sigchain>,
        discovery: Arc<Discovery>,
        provider: OfflineProvider,
        exec: Exec,
    ) -> Self {
        Self {
            me: key.node_id(),
            key,
            tids: TidGenerator::new(Arc::new(SystemClock)),
            clock: Arc::new(SystemClock),
            refusals: std::sync::Mutex::new(Refusals::default()),
            graph_store,
            graph,
            acl,
            sigchain,
            discovery,
            provider,
            claim_lock: tokio::sync::Mutex::new(()),
            mutations: tokio::sync::Mutex::new(()),
            hints: crate::growth::Hints::default(),
            net: OnceLock::new(),
            audit: OnceLock::new(),
            exec,
        }
    }

    /// Dates claim ids by `clock` instead of the system clock.
    pub(crate) fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.tids = TidGenerator::new(clock.clone());
        self.clock = clock;
        self
    }

    pub(crate) fn set_network(&self, net: AgentNetwork) {
        let _ = self.net.set(net);
    }

    pub(crate) fn set_audit(&self, audit: Addr<keynode_audit::AuditManager>) {
        let _ = self.audit.set(audit);
    }

    /// The audit log actor, once it runs.
    pub fn audit(&self) -> Option<&Addr<keynode_audit::AuditManager>> {
        self.audit.get()
    }

    /// Appends `event` to the audit log. Never fails the operation that records
    /// it: a failed append is logged as a warning.
    pub(crate) async fn record(&self, event: keynode_audit::AuditEvent) {
        if let keynode_audit::AuditEvent::Refused { op, .. } = &event {
            crate::metrics::refusal(op);
        }
        let now = self.clock.now_ms();
        let events = self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .note(event, now);
        self.append(events).await;
    }

    /// Records the counts of refusal windows that have closed (every window
    /// when `all`, as at stop).
    pub async fn flush_refusals(&self, all: bool) {
        let now = self.clock.now_ms();
        let events = {
            let mut r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            if all { r.flush() } else { r.due(now) }
        };
        self.append(events).await;
    }

    async fn append(&self, events: Vec<keynode_audit::AuditEvent>) {
        for event in events {
            let Some(audit) = self.audit.get() else {
                tracing::warn!(kind = event.kind(), "no audit log to record to");
                return;
            };
            match audit.send(keynode_audit::Append { event }).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot append to the audit log"),
                Err(e) => tracing::warn!(error = %e, "the audit log is gone"),
            }
        }
    }

    /// Records that serving `peer` failed here and returns what the peer is
    /// told: the kind of failure and a fixed message, never the local error.
    pub(crate) async fn serve_failed(
        &self,
        peer: NodeId,
        op: &str,
        error: &(dyn std::fmt::Display + Sync),
    ) -> WireError {
        self.record(keynode_audit::AuditEvent::ServeFailed {
            peer,
            op: op.to_owned(),
            error: error.to_string(),
        })
        .await;
        to_peer(WireErrorKind::Internal, error)
    }

    /// The network, once it runs.
    pub fn network(&self) -> Result<&AgentNetwork, ApiError> {
        self.net()
    }

    /// Where blocking work runs.
    pub(crate) fn exec(&self) -> &Exec {
        &self.exec
    }

    /// Appends `claim` to this node's chain, unless it is there already (a
    /// start cut short after appending it). Blocking work on the pool.
    pub(crate) async fn append_own(
        &self,
        claim: &keynode_gestalt::SignedClaim,
    ) -> Result<(), ApiError> {
        let _guard = self.claim_lock.lock().await;
        let (sigchain, claim) = (self.sigchain.clone(), claim.clone());
        keynode_core::exec::blocking(self.exec.as_ref(), move || {
            let head = claim.head()?;
            if sigchain.head()?.as_ref() == Some(&head) {
                return Ok(());
            }
            sigchain.append(&claim).map(drop)
        })
        .await
        .map_err(Failure::api)?
        .map_err(Failure::api)
    }

    fn net(&self) -> Result<&AgentNetwork, ApiError> {
        self.net
            .get()
            .ok_or_else(|| ApiError::new(ErrorKind::Unavailable, "the network is not running"))
    }

    /// The ACL actor.
    pub fn acl(&self) -> &Addr<AclManager> {
        &self.acl
    }

    /// The gestalt graph actor.
    pub fn graph(&self) -> &Addr<GestaltManager> {
        &self.graph
    }

    /// Applies the graph's journaled events to the ACL actor, in order, then
    /// acknowledges them. The graph journals each mutation's events in the
    /// mutation's own transaction (`keynode_gestalt::PENDING_DB`), and each
    /// ACL operation is idempotent (adding a member twice, joining a joined
    /// gestalt, splitting a split one change nothing more), so events left by
    /// a crash between the graph's and the ACL's transactions are simply
    /// applied again by the next call: no scan of the graph at start.
    ///
    /// Call with the mutation lock held (every graph mutation here does), so
    /// events are applied in the order they happened.
    pub async fn route(&self) -> Result<(), ApiError> {
        let pending = self.graph.ask(graph::Pending {}).await?;
        let Some(&(last, _)) = pending.last() else {
            return Ok(());
        };
        for (_, event) in pending {
            match event {
                GestaltEvent::VertexAdded(member) => {
                    self.acl.ask(acl::AddMember { member }).await?;
                }
                GestaltEvent::VertexRemoved(member) => {
                    self.acl.ask(acl::RemoveMember { member }).await?;
                }
                GestaltEvent::Linked { members, .. } => {
                    self.acl.ask(acl::Join { members }).await?;
                }
                GestaltEvent::Unlinked { left, right, .. } if !right.is_empty() => {
                    self.acl.ask(acl::Split { left, right }).await?;
                }
                GestaltEvent::Unlinked { .. } => {}
            }
        }
        self.graph.ask(graph::Ack { upto: last }).await?;
        Ok(())
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// The nodes of `id`'s gestalt (empty if unknown).
    pub async fn gestalt_nodes(&self, id: &GestaltId) -> std::collections::BTreeSet<NodeId> {
        match self.graph.ask(graph::GestaltOf { id: id.clone() }).await {
            Ok(Some(g)) => g.nodes.into_iter().collect(),
            _ => Default::default(),
        }
    }

    pub(crate) fn hints(&self) -> &crate::growth::Hints {
        &self.hints
    }

    /// Whether `node` is a vertex of our graph: a node we added, trust,
    /// invited, share with or discovered. Anyone else is a stranger.
    pub async fn knows(&self, node: NodeId) -> bool {
        if self.is_renewed(node).await {
            return false;
        }
        let id = GestaltId::Node(node);
        matches!(self.graph.ask(graph::GestaltOf { id }).await, Ok(Some(_)))
    }

    /// Makes `id` a vertex (and an ACL member) if it is not one yet.
    pub async fn ensure_vertex(&self, id: &GestaltId) -> Result<(), ApiError> {
        let _one = self.mutations.lock().await;
        self.graph.ask(graph::AddVertex { id: id.clone() }).await?;
        self.route().await
    }

    /// Forgets the link between `a` and `b` in this node's graph (a gestalt
    /// that falls apart splits its permission record: both halves keep a
    /// copy) and routes the events. The claim stays in the sigchains it is in,
    /// so a later discovery may link the two again.
    pub async fn unlink(&self, a: &GestaltId, b: &GestaltId) -> Result<(), ApiError> {
        let _one = self.mutations.lock().await;
        self.graph
            .ask(graph::Unlink {
                a: a.clone(),
                b: b.clone(),
            })
            .await?;
        self.route().await
    }

    /// At start: applies what a crash left journaled, and makes this node a
    /// vertex.
    pub async fn recover(&self) -> Result<(), ApiError> {
        {
            let _one = self.mutations.lock().await;
            self.route().await?;
        }
        self.ensure_vertex(&GestaltId::Node(self.me)).await
    }

    /// Grants a gestalt action (adding the vertex if unknown).
    pub async fn allow(&self, id: &GestaltId, action: GestaltAction) -> Result<(), ApiError> {
        self.ensure_vertex(id).await?;
        self.acl
            .ask(acl::SetGestaltAction {
                member: id.clone(),
                action,
            })
            .await?;
        Ok(())
    }

    /// Revokes a gestalt action.
    pub async fn disallow(&self, id: &GestaltId, action: GestaltAction) -> Result<(), ApiError> {
        self.acl
            .ask(acl::UnsetGestaltAction {
                member: id.clone(),
                action,
            })
            .await?;
        Ok(())
    }

    /// Whether `node`'s gestalt holds `action`.
    pub async fn has_action(&self, node: NodeId, action: GestaltAction) -> Result<bool, ApiError> {
        if self.is_renewed(node).await {
            return Ok(false);
        }
        self.acl.ask(acl::HasGestaltAction { node, action }).await
    }

    /// `vaults share` / `unshare` (SPEC §6.1–2) for `node`'s gestalt, under the
    /// same serialisation as links and unlinks: the gestalt is read once, its
    /// record changed in one ACL transaction, and `then` runs (queueing the
    /// notifications) for exactly the nodes that were granted, before any link
    /// can change the gestalt. `NotFound` if `node` is not a known vertex.
    pub async fn share_vault<F, Fut>(
        &self,
        member: GestaltId,
        vault: VaultId,
        grant: bool,
        then: F,
    ) -> Result<(), ApiError>
    where
        F: FnOnce(Vec<NodeId>) -> Fut,
        Fut: std::future::Future<Output = Result<(), ApiError>>,
    {
        let _one = self.mutations.lock().await;
        let Some(gestalt) = self
            .graph
            .ask(graph::GestaltOf { id: member.clone() })
            .await?
        else {
            return Err(unknown_grantee(&member));
        };
        if gestalt.nodes.is_empty() {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!(
                    "no node is proven to belong to {member} yet: each of its nodes runs \
                     `keynode identities claim {member}`, then share again"
                ),
            ));
        }
        if grant {
            self.acl.ask(acl::ShareVault { member, vault }).await?;
        } else {
            self.acl.ask(acl::UnshareVault { member, vault }).await?;
        }
        then(gestalt.nodes.into_iter().collect()).await
    }

    /// Drops every grant on a deleted vault.
    pub async fn purge_vault(&self, vault: VaultId) -> Result<(), ApiError> {
        self.acl.ask(acl::PurgeVault { vault }).await?;
        Ok(())
    }

    /// Whether `node`'s gestalt may `action` the vault.
    pub async fn may_vault(
        &self,
        node: NodeId,
        vault: VaultId,
        action: VaultAction,
    ) -> Result<bool, ApiError> {
        if self.is_renewed(node).await {
            return Ok(false);
        }
        self.acl
            .ask(acl::MayVault {
                node,
                vault,
                action,
            })
            .await
    }

    /// Who holds which actions on `vault`, one entry per gestalt.
    pub async fn vault_grants(&self, vault: VaultId) -> Result<Vec<VaultGrant>, ApiError> {
        let grants = self.acl.ask(acl::VaultPermissions { vault }).await?;
        let mut out: Vec<VaultGrant> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (member, actions) in grants {
            if seen.contains(&member) {
                continue;
            }
            let g = self
                .graph
                .ask(graph::GestaltOf { id: member.clone() })
                .await?;
            let (nodes, identities): (Vec<NodeId>, Vec<String>) = match &g {
                Some(g) => (
                    g.nodes.iter().copied().collect(),
                    g.identities.iter().map(identity_text).collect(),
                ),
                None => (member.node().into_iter().collect(), Vec::new()),
            };
            match &g {
                Some(g) => seen.extend(g.members()),
                None => {
                    seen.insert(member);
                }
            }
            out.push(VaultGrant {
                nodes,
                identities,
                actions: actions.iter().map(ToString::to_string).collect(),
            });
        }
        Ok(out)
    }

    /// The permission record of `id`'s gestalt.
    pub async fn permission(&self, id: &GestaltId) -> Result<Permission, ApiError> {
        Ok(self
            .acl
            .ask(acl::GetPermission { member: id.clone() })
            .await?
            .unwrap_or_default())
    }

    /// `id`'s gestalt with its permissions.
    pub async fn view(&self, id: &GestaltId) -> Result<GestaltView, ApiError> {
        let g = self
            .graph
            .ask(graph::GestaltOf { id: id.clone() })
            .await?
            .ok_or_else(|| {
                ApiError::new(ErrorKind::NotFound, format!("{id} is not a known gestalt"))
            })?;
        let perm = self.permission(id).await?;
        Ok(gestalt_view(&g, &perm))
    }

    /// Every gestalt with its permissions.
    pub async fn list(&self) -> Result<Vec<GestaltView>, ApiError> {
        let gs = self.graph.ask(graph::Gestalts {}).await?;
        let mut out = Vec::with_capacity(gs.len());
        for g in gs {
            let Some(first) = g.members().into_iter().next() else {
                continue;
            };
            let perm = self.permission(&first).await?;
            out.push(gestalt_view(&g, &perm));
        }
        Ok(out)
    }

    /// Runs discovery from `start` now: fetches and verifies chains over the
    /// network, links what they prove, routes the events to the ACL.
    pub async fn discover(&self, start: GestaltId) -> Result<DiscoveryReport, ApiError> {
        let _one = self.mutations.lock().await;
        let source = NetSource {
            me: self.me,
            sigchain: self.sigchain.clone(),
            net: self.net()?.clone(),
        };
        let (discovery, graph_store, provider) = (
            self.discovery.clone(),
            self.graph_store.clone(),
            self.provider.clone(),
        );
        // Discovery makes short blocking LMDB writes between its network
        // calls: it runs where blocking is allowed.
        let run = async move {
            discovery
                .run(
                    &start,
                    &graph_store,
                    &source,
                    &[provider],
                    MAX_DISCOVERY_VERTICES,
                )
                .await
        };
        let report = keynode_core::exec::blocking_future(self.exec.as_ref(), run)
            .await
            .map_err(Failure::api)?
            .map_err(Failure::api)?;
        self.route().await?;
        Ok(report)
    }

    /// Rediscovers every known gestalt but our own, forever.
    pub(crate) async fn rediscover_loop(self: Arc<Self>, every: Duration) {
        let mut ticker = tokio::time::interval(every);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let Ok(Ok(gestalts)) = self.graph.send(graph::Gestalts {}).await else {
                continue;
            };
            let me = GestaltId::Node(self.me);
            for g in gestalts {
                if g.contains(&me) {
                    continue;
                }
                let Some(start) = g.members().into_iter().next() else {
                    continue;
                };
                if let Err(e) = self.discover(start.clone()).await {
                    tracing::debug!(%start, error = %e, "rediscovery failed");
                }
            }
        }
    }
}

/// The error for sharing with a gestalt this node has never seen.
fn unknown_grantee(member: &GestaltId) -> ApiError {
    let hint = match member {
        GestaltId::Node(node) => format!(
            "{node} is not a known node; add it with `keynode nodes add {node} HOST PORT` \
             and `keynode identities trust {node}` first"
        ),
        GestaltId::Identity(..) => format!(
            "{member} is not a known identity: no node has proven it (its provider shows no \
             claim); each of its nodes runs `keynode identities claim {member}` first"
        ),
    };
    ApiError::new(ErrorKind::NotFound, hint)
}
