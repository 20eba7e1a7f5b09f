//! Discovery over an in-memory network of sigchains and the offline provider.

use std::collections::HashMap;
use std::sync::Mutex;

use keynode_core::{
    GestaltId, IdentityId, Keypair, NodeId, ProviderId, SystemClock, Tid, TidGenerator,
};
use keynode_gestalt::{
    ChainHead, ChainSource, Discovery, Env, GestaltEvent, GestaltGraph, IdentityProvider,
    OfflineProvider, ProviderError, SignedClaim, SourceError, VertexFailure, accept_countersigned,
    claim_identity, countersign, propose_link,
};

fn open_env(dir: &std::path::Path) -> Env {
    let key = keynode_core::datakey::DataKey::from_bytes([7; 32]);
    keynode_core::store::open_env(dir, &key, 1 << 28, 16).unwrap()
}

fn tid() -> Tid {
    static TIDS: std::sync::OnceLock<TidGenerator<SystemClock>> = std::sync::OnceLock::new();
    TIDS.get_or_init(|| TidGenerator::new(SystemClock))
        .next_id()
}

/// Every node's chain, served from memory; records every fetch.
#[derive(Default)]
struct Net {
    chains: Mutex<HashMap<NodeId, Vec<SignedClaim>>>,
    fetches: Mutex<Vec<(NodeId, Option<u64>)>>,
    down: Mutex<Vec<NodeId>>,
}

impl Net {
    fn head(&self, n: NodeId) -> Option<ChainHead> {
        self.chains
            .lock()
            .unwrap()
            .get(&n)
            .and_then(|c| c.last())
            .map(|c| c.head().unwrap())
    }

    fn push(&self, n: NodeId, c: SignedClaim) {
        self.chains.lock().unwrap().entry(n).or_default().push(c);
    }

    /// The full exchange; `both` puts the claim in both chains, else only in a's.
    fn link(&self, a: &Keypair, b: &Keypair, both: bool) {
        let half = propose_link(self.head(a.node_id()).as_ref(), a, b.node_id(), tid()).unwrap();
        let full = accept_countersigned(&half, countersign(half.clone(), b).unwrap()).unwrap();
        self.push(a.node_id(), full);
        if both {
            let half =
                propose_link(self.head(b.node_id()).as_ref(), b, a.node_id(), tid()).unwrap();
            let full = accept_countersigned(&half, countersign(half.clone(), a).unwrap()).unwrap();
            self.push(b.node_id(), full);
        }
    }

    fn claim_identity(&self, key: &Keypair, identity: &str) -> SignedClaim {
        let c = claim_identity(
            self.head(key.node_id()).as_ref(),
            key,
            ProviderId::new("offline").unwrap(),
            IdentityId::new(identity).unwrap(),
            tid(),
        )
        .unwrap();
        self.push(key.node_id(), c.clone());
        c
    }
}

impl ChainSource for Net {
    async fn claims(
        &self,
        node: NodeId,
        after: Option<u64>,
    ) -> Result<Vec<SignedClaim>, SourceError> {
        self.fetches.lock().unwrap().push((node, after));
        if self.down.lock().unwrap().contains(&node) {
            return Err(SourceError::Unreachable(node));
        }
        let chains = self.chains.lock().unwrap();
        let chain = chains.get(&node).cloned().unwrap_or_default();
        // Serve at most two entries per call, to exercise incremental fetching.
        Ok(chain
            .into_iter()
            .filter(|c| after.is_none_or(|a| c.claim.seq > a))
            .take(2)
            .collect())
    }
}

struct World {
    _tmp: tempfile::TempDir,
    graph: GestaltGraph,
    discovery: Discovery,
    provider: OfflineProvider,
    net: Net,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("db")).unwrap();
    let env = open_env(&tmp.path().join("db"));
    let provider = OfflineProvider::new(
        ProviderId::new("offline").unwrap(),
        tmp.path().join("provider"),
    );
    World {
        graph: GestaltGraph::open(env.clone()).unwrap(),
        discovery: Discovery::open(env).unwrap(),
        provider,
        net: Net::default(),
        _tmp: tmp,
    }
}

fn ident(name: &str) -> GestaltId {
    format!("offline:{name}").parse().unwrap()
}

fn id(k: &Keypair) -> GestaltId {
    GestaltId::Node(k.node_id())
}

#[tokio::test]
async fn discovers_transitively_incrementally_and_only_what_verifies() {
    let w = world();
    let (a, b, c, d) = (
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate(),
    );
    w.net.link(&a, &b, true);
    w.net.link(&b, &c, false); // only in b's chain
    w.net.link(&a, &d, false);
    w.net.claim_identity(&a, "alice"); // not published (yet)
    let carol = w.net.claim_identity(&c, "carol");
    w.provider
        .publish(&IdentityId::new("carol").unwrap(), &carol)
        .await
        .unwrap();
    w.net.down.lock().unwrap().push(d.node_id());

    let providers = [w.provider.clone()];
    let report = w
        .discovery
        .run(&id(&a), &w.graph, &w.net, &providers, 100)
        .await
        .unwrap();
    let gestalt = w.graph.gestalt_of(&id(&a)).unwrap().unwrap();
    let mut want = vec![id(&a), id(&b), id(&c), id(&d), ident("carol")];
    want.sort();
    assert_eq!(gestalt.members(), want);
    assert!(
        !w.graph.contains(&ident("alice")).unwrap(),
        "unpublished identity claims are not links"
    );
    assert!(report.visited.contains(&ident("alice")));
    assert!(
        report
            .events
            .iter()
            .any(|e| matches!(e, GestaltEvent::Linked { members, .. } if members.len() == 5))
    );
    // d's chain could not be fetched, but its link (proven by a's chain) stands.
    assert!(matches!(&report.failures[..], [(v, VertexFailure::Source(_))] if *v == id(&d)));
    assert!(!report.truncated);
    // a's chain (3 entries) came in batches of two.
    let fetched_a: Vec<_> = w
        .net
        .fetches
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, _)| *n == a.node_id())
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(fetched_a, vec![None, Some(1), Some(2)]);
    assert_eq!(
        w.discovery.head(&a.node_id()).unwrap(),
        w.net.head(a.node_id())
    );

    // Alice publishes; a rerun links her (from the stored hint) and fetches only
    // what is new.
    let alice_claim = w.net.chains.lock().unwrap()[&a.node_id()][2].clone();
    w.provider
        .publish(&IdentityId::new("alice").unwrap(), &alice_claim)
        .await
        .unwrap();
    w.net.fetches.lock().unwrap().clear();
    let report = w
        .discovery
        .run(&id(&b), &w.graph, &w.net, &providers, 100)
        .await
        .unwrap();
    assert!(
        w.graph
            .gestalt_of(&id(&a))
            .unwrap()
            .unwrap()
            .contains(&ident("alice"))
    );
    assert!(
        report
            .events
            .iter()
            .any(|e| matches!(e, GestaltEvent::Linked { b, .. } if *b == ident("alice")))
    );
    let fetched_a: Vec<_> = w
        .net
        .fetches
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, _)| *n == a.node_id())
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(fetched_a, vec![Some(2)]);

    // Starting from an identity works too (on a fresh observer). c's chain holds
    // only the identity claim (the b–c link is in b's chain), so b stays unknown.
    let w2 = world();
    let report = w2
        .discovery
        .run(&ident("carol"), &w2.graph, &w.net, &providers, 100)
        .await
        .unwrap();
    assert!(report.failures.is_empty());
    let gestalt = w2.graph.gestalt_of(&ident("carol")).unwrap().unwrap();
    assert_eq!(gestalt.members(), vec![id(&c), ident("carol")]);
}

#[tokio::test]
async fn a_forged_chain_links_nothing() {
    let w = world();
    let (e, a) = (Keypair::generate(), Keypair::generate());
    // e claims a link to a that a never signed: e signs twice.
    let mut forged = propose_link(None, &e, a.node_id(), tid()).unwrap();
    let msg = forged.claim.signing_bytes().unwrap();
    forged.signatures.push((a.node_id(), e.sign(&msg)));
    w.net.push(e.node_id(), forged);
    let report = w
        .discovery
        .run(
            &id(&e),
            &w.graph,
            &w.net,
            std::slice::from_ref(&w.provider),
            100,
        )
        .await
        .unwrap();
    assert!(matches!(
        &report.failures[..],
        [(_, VertexFailure::Chain(_))]
    ));
    assert!(report.events.is_empty());
    assert!(w.graph.vertices().unwrap().is_empty());
    assert_eq!(w.discovery.head(&e.node_id()).unwrap(), None);

    // A published identity claim signed by someone else is ignored.
    let mallory = Keypair::generate();
    let mut fake = claim_identity(
        None,
        &mallory,
        ProviderId::new("offline").unwrap(),
        IdentityId::new("bob").unwrap(),
        tid(),
    )
    .unwrap();
    // Claims to be a's, but carries mallory's signature: the provider refuses it.
    if let keynode_gestalt::ClaimBody::LinkIdentity { node, .. } = &mut fake.claim.body {
        *node = a.node_id();
    }
    fake.signatures = vec![(
        a.node_id(),
        mallory.sign(&fake.claim.signing_bytes().unwrap()),
    )];
    assert!(matches!(
        w.provider
            .publish(&IdentityId::new("bob").unwrap(), &fake)
            .await,
        Err(ProviderError::Refused(_))
    ));
}

#[tokio::test]
async fn the_walk_is_bounded() {
    let w = world();
    let keys: Vec<Keypair> = (0..6).map(|_| Keypair::generate()).collect();
    for pair in keys.windows(2) {
        w.net.link(&pair[0], &pair[1], true);
    }
    let report = w
        .discovery
        .run(
            &id(&keys[0]),
            &w.graph,
            &w.net,
            std::slice::from_ref(&w.provider),
            3,
        )
        .await
        .unwrap();
    assert!(report.truncated);
    assert_eq!(report.visited.len(), 3);
    // The third vertex's chain proves a link to the fourth, which is linked but
    // not visited.
    assert_eq!(w.graph.vertices().unwrap().len(), 4);
}

#[tokio::test]
async fn the_offline_provider_is_shared_through_its_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let p = ProviderId::new("offline").unwrap();
    let one = OfflineProvider::new(p.clone(), tmp.path());
    let two = OfflineProvider::new(p.clone(), tmp.path());
    let k = Keypair::generate();
    let who = IdentityId::new("some:one/with odd chars").unwrap();
    let claim = claim_identity(None, &k, p.clone(), who.clone(), tid()).unwrap();
    one.authenticate(&who).await.unwrap();
    assert!(two.claims(&who).await.unwrap().is_empty());
    one.publish(&who, &claim).await.unwrap();
    one.publish(&who, &claim).await.unwrap(); // idempotent
    assert_eq!(two.claims(&who).await.unwrap(), vec![claim.clone()]);
    // Wrong identity or provider: refused.
    let other = IdentityId::new("other").unwrap();
    assert!(matches!(
        two.publish(&other, &claim).await,
        Err(ProviderError::WrongIdentity(_))
    ));
    let elsewhere = OfflineProvider::new(ProviderId::new("elsewhere").unwrap(), tmp.path());
    assert!(elsewhere.publish(&who, &claim).await.is_err());
}
