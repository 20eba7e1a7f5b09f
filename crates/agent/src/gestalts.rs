//! The node's gestalts and permissions: the graph, the ACL, the sigchain, claims
//! and discovery, wired together.
//!
//! Permission propagation is an event fan-out: every graph mutation returns
//! [`GestaltEvent`]s, and [`Gestalts::route`] sends each to the ACL actor (a new
//! vertex gets its own record, a link shares the union, a split copies). At start
//! [`Gestalts::reconcile`] repairs what a crash between the two transactions
//! could leave, so the graph and the ACL never disagree about who exists.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::AgentNetwork;
use actix::Addr;
use keynode_acl::messages as acl;
use keynode_acl::{AclManager, GestaltAction, Permission, VaultAction};
use keynode_core::{
    Clock, GestaltId, IdentityId, Keypair, NodeId, ProviderId, SystemClock, TidGenerator, VaultId,
};
use keynode_gestalt::messages as graph;
use keynode_gestalt::{
    ChainSource, ClaimBody, ClaimRef, Discovery, DiscoveryReport, Gestalt, GestaltEvent,
    GestaltGraph, GestaltManager, IdentityProvider, MAX_DISCOVERY_VERTICES, OfflineProvider,
    Sigchain, SignedClaim, SourceError, accept_countersigned, claim_identity, countersign,
    propose_link,
};
use keynode_net::{NetError, RpcStream, WireError, WireErrorKind};

use crate::api::{ApiError, ErrorKind, GestaltView, PermissionView, VaultGrant};
use crate::peer::{PeerRequest, PeerResponse};

/// Name of the identity provider that ships with keynode.
pub const OFFLINE_PROVIDER: &str = "offline";
/// How often known gestalts are discovered again.
pub const REDISCOVER_INTERVAL: Duration = Duration::from_secs(10 * 60);

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorKind::Internal, e.to_string())
}

fn mailbox(e: actix::MailboxError) -> ApiError {
    ApiError::new(ErrorKind::Unavailable, format!("gestalt service: {e}"))
}

/// Sends `msg` to a store actor and flattens its two failure layers (the
/// mailbox, the store) into an [`ApiError`].
async fn ask<A, M, T, E>(addr: &Addr<A>, msg: M) -> Result<T, ApiError>
where
    A: actix::Actor<Context = actix::Context<A>> + actix::Handler<M>,
    M: actix::Message<Result = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    addr.send(msg).await.map_err(mailbox)?.map_err(internal)
}

fn wire(kind: WireErrorKind, msg: impl Into<String>) -> WireError {
    WireError::new(kind, msg)
}

/// Everything the node knows about gestalts, and the operations on it.
pub struct Gestalts {
    me: NodeId,
    key: Arc<Keypair>,
    tids: TidGenerator<Arc<dyn Clock>>,
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
    /// Wires the stores and actors of one node.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        key: Arc<Keypair>,
        graph_store: Arc<GestaltGraph>,
        graph: Addr<GestaltManager>,
        acl: Addr<AclManager>,
        sigchain: Arc<Sigchain>,
        discovery: Arc<Discovery>,
        provider: OfflineProvider,
    ) -> Self {
        Self {
            me: key.node_id(),
            key,
            tids: TidGenerator::new(Arc::new(SystemClock)),
            graph_store,
            graph,
            acl,
            sigchain,
            discovery,
            provider,
            claim_lock: tokio::sync::Mutex::new(()),
            mutations: tokio::sync::Mutex::new(()),
            net: OnceLock::new(),
            audit: OnceLock::new(),
        }
    }

    /// Dates claim ids by `clock` instead of the system clock.
    pub(crate) fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.tids = TidGenerator::new(clock);
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
        let Some(audit) = self.audit.get() else {
            tracing::warn!(?event, "no audit log to record to");
            return;
        };
        match audit.send(keynode_audit::Append { event }).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot append to the audit log"),
            Err(e) => tracing::warn!(error = %e, "the audit log is gone"),
        }
    }

    /// The network, once it runs.
    pub fn network(&self) -> Result<&AgentNetwork, ApiError> {
        self.net()
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

    /// Sends graph events to the ACL actor, in order.
    pub async fn route(&self, events: Vec<GestaltEvent>) -> Result<(), ApiError> {
        for event in events {
            let r = match event {
                GestaltEvent::VertexAdded(member) => self
                    .acl
                    .send(acl::AddMember { member })
                    .await
                    .map(|r| r.map(drop)),
                GestaltEvent::VertexRemoved(member) => self
                    .acl
                    .send(acl::RemoveMember { member })
                    .await
                    .map(|r| r.map(drop)),
                GestaltEvent::Linked { members, .. } => self.acl.send(acl::Join { members }).await,
                GestaltEvent::Unlinked { left, right, .. } if !right.is_empty() => {
                    self.acl.send(acl::Split { left, right }).await
                }
                GestaltEvent::Unlinked { .. } => continue,
            };
            r.map_err(mailbox)?.map_err(internal)?;
        }
        Ok(())
    }

    /// Makes `id` a vertex (and an ACL member) if it is not one yet.
    pub async fn ensure_vertex(&self, id: &GestaltId) -> Result<(), ApiError> {
        let _one = self.mutations.lock().await;
        let events = ask(&self.graph, graph::AddVertex { id: id.clone() }).await?;
        self.route(events).await
    }

    /// Repairs what a crash between a graph and an ACL transaction can leave:
    /// every vertex is a member, every member a vertex, every gestalt shares one
    /// record. Also makes this node a vertex.
    pub async fn reconcile(&self) -> Result<(), ApiError> {
        self.ensure_vertex(&GestaltId::Node(self.me)).await?;
        let _one = self.mutations.lock().await;
        let gestalts = ask(&self.graph, graph::Gestalts {}).await?;
        let members = ask(&self.acl, acl::Members {}).await?;
        let vertices: std::collections::BTreeSet<GestaltId> =
            gestalts.iter().flat_map(Gestalt::members).collect();
        for m in members.into_iter().filter(|m| !vertices.contains(m)) {
            ask(&self.acl, acl::RemoveMember { member: m }).await?;
        }
        for g in gestalts {
            let members = g.members();
            for m in &members {
                ask(&self.acl, acl::AddMember { member: m.clone() }).await?;
            }
            if members.len() > 1 {
                ask(&self.acl, acl::Join { members }).await?;
            }
        }
        Ok(())
    }

    /// Grants a gestalt action (adding the vertex if unknown).
    pub async fn allow(&self, id: &GestaltId, action: GestaltAction) -> Result<(), ApiError> {
        self.ensure_vertex(id).await?;
        ask(
            &self.acl,
            acl::SetGestaltAction {
                member: id.clone(),
                action,
            },
        )
        .await?;
        Ok(())
    }

    /// Revokes a gestalt action.
    pub async fn disallow(&self, id: &GestaltId, action: GestaltAction) -> Result<(), ApiError> {
        ask(
            &self.acl,
            acl::UnsetGestaltAction {
                member: id.clone(),
                action,
            },
        )
        .await?;
        Ok(())
    }

    /// Whether `node`'s gestalt holds `action`.
    pub async fn has_action(&self, node: NodeId, action: GestaltAction) -> Result<bool, ApiError> {
        ask(&self.acl, acl::HasGestaltAction { node, action }).await
    }

    /// The nodes of `node`'s gestalt (just `node` if it is in none).
    pub async fn gestalt_nodes(&self, node: NodeId) -> Result<Vec<NodeId>, ApiError> {
        let g = ask(
            &self.graph,
            graph::GestaltOf {
                id: GestaltId::Node(node),
            },
        )
        .await?;
        Ok(g.map(|g| g.nodes.into_iter().collect())
            .unwrap_or_else(|| vec![node]))
    }

    /// Whether `id` is a vertex of the graph.
    pub async fn knows(&self, id: &GestaltId) -> Result<bool, ApiError> {
        Ok(ask(&self.graph, graph::GestaltOf { id: id.clone() })
            .await?
            .is_some())
    }

    /// Shares (or unshares) `vault` with `member`'s gestalt in one ACL
    /// transaction.
    pub async fn share_vault(
        &self,
        member: &GestaltId,
        vault: VaultId,
        grant: bool,
    ) -> Result<(), ApiError> {
        let r = if grant {
            self.acl
                .send(acl::ShareVault {
                    member: member.clone(),
                    vault,
                })
                .await
        } else {
            self.acl
                .send(acl::UnshareVault {
                    member: member.clone(),
                    vault,
                })
                .await
        };
        r.map_err(mailbox)?.map_err(internal)?;
        Ok(())
    }

    /// Drops every grant on a deleted vault.
    pub async fn purge_vault(&self, vault: VaultId) -> Result<(), ApiError> {
        ask(&self.acl, acl::PurgeVault { vault }).await?;
        Ok(())
    }

    /// Whether `node`'s gestalt may `action` the vault.
    pub async fn may_vault(
        &self,
        node: NodeId,
        vault: VaultId,
        action: VaultAction,
    ) -> Result<bool, ApiError> {
        ask(
            &self.acl,
            acl::MayVault {
                node,
                vault,
                action,
            },
        )
        .await
    }

    /// Who holds which actions on `vault`, one entry per gestalt.
    pub async fn vault_grants(&self, vault: VaultId) -> Result<Vec<VaultGrant>, ApiError> {
        let grants = ask(&self.acl, acl::VaultPermissions { vault }).await?;
        let mut out: Vec<VaultGrant> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (member, actions) in grants {
            if seen.contains(&member) {
                continue;
            }
            let g = ask(&self.graph, graph::GestaltOf { id: member.clone() }).await?;
            let (nodes, identities): (Vec<NodeId>, Vec<String>) = match &g {
                Some(g) => (
                    g.nodes.iter().copied().collect(),
                    g.identities
                        .iter()
                        .map(|(p, i)| format!("{}:{}", p.as_str(), i.as_str()))
                        .collect(),
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
        Ok(ask(&self.acl, acl::GetPermission { member: id.clone() })
            .await?
            .unwrap_or_default())
    }

    /// `id`'s gestalt with its permissions.
    pub async fn view(&self, id: &GestaltId) -> Result<GestaltView, ApiError> {
        let g = ask(&self.graph, graph::GestaltOf { id: id.clone() })
            .await?
            .ok_or_else(|| {
                ApiError::new(ErrorKind::NotFound, format!("{id} is not a known gestalt"))
            })?;
        let perm = self.permission(id).await?;
        Ok(gestalt_view(&g, &perm))
    }

    /// Every gestalt with its permissions.
    pub async fn list(&self) -> Result<Vec<GestaltView>, ApiError> {
        let gs = ask(&self.graph, graph::Gestalts {}).await?;
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
        let report = if keynode_core::sim::inline_blocking() {
            // Deterministic simulation: everything runs on the one simulated
            // thread, in order.
            discovery
                .run(
                    &start,
                    &graph_store,
                    &source,
                    &[provider],
                    MAX_DISCOVERY_VERTICES,
                )
                .await
                .map_err(internal)?
        } else {
            self.discover_blocking(start, source, discovery, graph_store, provider)
                .await?
        };
        self.route(report.events.clone()).await?;
        Ok(report)
    }

    async fn discover_blocking(
        &self,
        start: GestaltId,
        source: NetSource,
        discovery: Arc<Discovery>,
        graph_store: Arc<GestaltGraph>,
        provider: OfflineProvider,
    ) -> Result<DiscoveryReport, ApiError> {
        let handle = tokio::runtime::Handle::current();
        // Discovery makes short blocking LMDB writes: keep it off async workers.
        let report = tokio::task::spawn_blocking(move || {
            handle.block_on(discovery.run(
                &start,
                &graph_store,
                &source,
                &[provider],
                MAX_DISCOVERY_VERTICES,
            ))
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
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

    async fn append_and_link(&self, claim: &SignedClaim, other: NodeId) -> Result<(), ApiError> {
        let _one = self.mutations.lock().await;
        let sigchain = self.sigchain.clone();
        let c = claim.clone();
        let head = keynode_core::sim::blocking(move || sigchain.append(&c))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        let proof = ClaimRef {
            chain: self.me,
            seq: head.seq,
            id: claim.claim.id,
        };
        let events = ask(
            &self.graph,
            graph::LinkNodes {
                a: self.me,
                b: other,
                proof,
            },
        )
        .await?;
        self.route(events).await
    }

    fn head(&self) -> Result<Option<keynode_gestalt::ChainHead>, ApiError> {
        self.sigchain.head().map_err(internal)
    }

    /// `nodes claim NODE`: the cross-signing exchange with `target` (which must
    /// have granted us `claim`). Both chains end with a claim signed by both,
    /// and both graphs link the two nodes.
    pub async fn claim_node(&self, target: NodeId) -> Result<SignedClaim, ApiError> {
        if target == self.me {
            return Err(ApiError::new(
                ErrorKind::BadData,
                "a node cannot claim itself",
            ));
        }
        let _guard = self.claim_lock.lock().await;
        let half = propose_link(
            self.head()?.as_ref(),
            &self.key,
            target,
            self.tids.next_id(),
        )
        .map_err(internal)?;
        let net = self.net()?;
        let mut stream = net.open(target).await.map_err(crate::server::net_err)?;
        let remote = |e: keynode_net::RpcError| {
            crate::server::net_err(NetError::Rpc {
                node: target,
                source: e,
            })
        };
        stream
            .send(&PeerRequest::LinkPropose { half: half.clone() })
            .await
            .map_err(remote)?;
        let (countersigned, proposal) = match stream.recv::<PeerResponse>().await {
            Ok(Some(PeerResponse::LinkProposed {
                countersigned,
                proposal,
            })) => (countersigned, proposal),
            Ok(_) => {
                return Err(ApiError::new(
                    ErrorKind::Protocol,
                    format!("{target} answered the claim oddly"),
                ));
            }
            Err(keynode_net::RpcError::Remote(w)) => {
                return Err(crate::server::net_err(NetError::Remote(w)));
            }
            Err(e) => return Err(remote(e)),
        };
        let full = accept_countersigned(&half, countersigned).map_err(|e| {
            ApiError::new(
                ErrorKind::Protocol,
                format!("{target} returned a bad countersignature: {e}"),
            )
        })?;
        match &proposal.claim.body {
            ClaimBody::LinkNode { node1, .. } if *node1 == target => {}
            _ => {
                return Err(ApiError::new(
                    ErrorKind::Protocol,
                    format!("{target} proposed a claim for another node"),
                ));
            }
        }
        let theirs = countersign(proposal, &self.key).map_err(|e| {
            ApiError::new(
                ErrorKind::Protocol,
                format!("{target}'s proposal is invalid: {e}"),
            )
        })?;
        self.append_and_link(&full, target).await?;
        stream
            .send(&PeerRequest::LinkFinish { full: theirs })
            .await
            .map_err(remote)?;
        match stream.recv::<PeerResponse>().await {
            Ok(Some(PeerResponse::LinkFinished)) => {
                self.record(keynode_audit::AuditEvent::Claimed { node: target })
                    .await;
                Ok(full)
            }
            Err(keynode_net::RpcError::Remote(w)) => {
                Err(crate::server::net_err(NetError::Remote(w)))
            }
            Err(e) => Err(remote(e)),
            Ok(_) => Err(ApiError::new(
                ErrorKind::Protocol,
                format!("{target} did not finish the claim"),
            )),
        }
    }

    /// Serves a peer's `LinkPropose`: only a gestalt we granted `claim` may link
    /// itself to us.
    pub(crate) async fn serve_link(
        &self,
        peer: NodeId,
        half: SignedClaim,
        stream: &mut RpcStream,
    ) -> Result<PeerResponse, WireError> {
        let invited = self
            .acl
            .send(acl::HasGestaltAction {
                node: peer,
                action: GestaltAction::Claim,
            })
            .await
            .map_err(|e| wire(WireErrorKind::Unavailable, e.to_string()))?
            .map_err(|e| wire(WireErrorKind::Internal, e.to_string()))?;
        if !invited {
            self.record(keynode_audit::AuditEvent::Refused {
                peer,
                op: "claim".into(),
                reason: "not invited".into(),
            })
            .await;
            return Err(wire(
                WireErrorKind::PermissionDenied,
                format!("{} has not invited {peer} to claim it", self.me),
            ));
        }
        match &half.claim.body {
            ClaimBody::LinkNode { node1, .. } if *node1 == peer => {}
            _ => {
                return Err(wire(
                    WireErrorKind::BadRequest,
                    "the claim must be the caller's",
                ));
            }
        }
        let _guard = self.claim_lock.lock().await;
        let countersigned = countersign(half, &self.key)
            .map_err(|e| wire(WireErrorKind::BadRequest, e.to_string()))?;
        let head = self
            .sigchain
            .head()
            .map_err(|e| wire(WireErrorKind::Internal, e.to_string()))?;
        let proposal = propose_link(head.as_ref(), &self.key, peer, self.tids.next_id())
            .map_err(|e| wire(WireErrorKind::Internal, e.to_string()))?;
        stream
            .send(&PeerResponse::LinkProposed {
                countersigned,
                proposal: proposal.clone(),
            })
            .await
            .map_err(|e| wire(WireErrorKind::BadRequest, e.to_string()))?;
        let full = match stream.recv::<PeerRequest>().await {
            Ok(Some(PeerRequest::LinkFinish { full })) => full,
            _ => return Err(wire(WireErrorKind::BadRequest, "expected LinkFinish")),
        };
        let full = accept_countersigned(&proposal, full)
            .map_err(|e| wire(WireErrorKind::BadRequest, e.to_string()))?;
        self.append_and_link(&full, peer)
            .await
            .map_err(|e| wire(WireErrorKind::Internal, e.message))?;
        self.record(keynode_audit::AuditEvent::Claimed { node: peer })
            .await;
        Ok(PeerResponse::LinkFinished)
    }

    /// Serves a peer's `Chain` request.
    pub(crate) async fn serve_chain(
        &self,
        after: Option<u64>,
    ) -> Result<Vec<SignedClaim>, WireError> {
        let sigchain = self.sigchain.clone();
        keynode_core::sim::blocking(move || sigchain.claims_after(after))
            .await
            .map_err(|e| wire(WireErrorKind::Internal, e.to_string()))?
            .map_err(|e| wire(WireErrorKind::Internal, e.to_string()))
    }

    /// The identity provider called `provider`.
    pub fn provider(&self, provider: &ProviderId) -> Result<&OfflineProvider, ApiError> {
        if provider.as_str() == OFFLINE_PROVIDER {
            Ok(&self.provider)
        } else {
            Err(ApiError::new(
                ErrorKind::NotFound,
                format!("unknown identity provider {provider}; available: {OFFLINE_PROVIDER}"),
            ))
        }
    }

    /// `identities claim PROVIDER:IDENTITY`: a claim in our chain, published on
    /// the provider, and the link in our graph.
    pub async fn claim_identity(
        &self,
        provider: ProviderId,
        identity: IdentityId,
    ) -> Result<SignedClaim, ApiError> {
        let p = self.provider(&provider)?.clone();
        p.authenticate(&identity)
            .await
            .map_err(|e| ApiError::new(ErrorKind::Unavailable, e.to_string()))?;
        let _guard = self.claim_lock.lock().await;
        let claim = claim_identity(
            self.head()?.as_ref(),
            &self.key,
            provider.clone(),
            identity.clone(),
            self.tids.next_id(),
        )
        .map_err(internal)?;
        let sigchain = self.sigchain.clone();
        let c = claim.clone();
        let head = keynode_core::sim::blocking(move || sigchain.append(&c))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        p.publish(&identity, &claim)
            .await
            .map_err(|e| ApiError::new(ErrorKind::Unavailable, e.to_string()))?;
        let proof = ClaimRef {
            chain: self.me,
            seq: head.seq,
            id: claim.claim.id,
        };
        let _one = self.mutations.lock().await;
        let events = ask(
            &self.graph,
            graph::LinkIdentity {
                node: self.me,
                provider,
                identity,
                proof,
            },
        )
        .await?;
        self.route(events).await?;
        Ok(claim)
    }
}

/// The text form of a permission record.
pub fn permission_view(p: &Permission) -> PermissionView {
    PermissionView {
        gestalt: p.gestalt.iter().map(ToString::to_string).collect(),
        vaults: p
            .vaults
            .iter()
            .map(|(v, a)| (v.to_string(), a.iter().map(ToString::to_string).collect()))
            .collect(),
    }
}

fn gestalt_view(g: &Gestalt, p: &Permission) -> GestaltView {
    GestaltView {
        nodes: g.nodes.iter().copied().collect(),
        identities: g
            .identities
            .iter()
            .map(|(p, i)| format!("{}:{}", p.as_str(), i.as_str()))
            .collect(),
        permissions: permission_view(p),
    }
}
