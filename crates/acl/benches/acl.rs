//! ACL figures: the serving-side check and a big merge.
//! Run: `cargo bench -p keynode-acl --bench acl`
//!
//! - `acl/may_vault`: "may node N pull vault V" on a store of 10,000 nodes in
//!   1,000 gestalts of 10, each gestalt holding 10 vault grants (target p50 ≤ 5 µs);
//!   p50/p99 of single calls are printed too.
//! - `acl/merge_two_1000_node_gestalts`: two gestalts of 1,000 nodes, each holding
//!   1,000 vault grants (half of them on the same vaults), merged (target ≤ 1 s).

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use keynode_acl::{AclStore, Env, GestaltAction, VaultAction};
use keynode_core::datakey::DataKey;
use keynode_core::{GestaltId, Keypair, NodeId, VaultId};

fn open_env(dir: &Path) -> Env {
    let key = DataKey::from_bytes([7; 32]);
    keynode_core::store::open_env(dir, &key, 1 << 30, 16).expect("env")
}

fn store() -> (tempfile::TempDir, AclStore) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let env = open_env(tmp.path());
    (tmp, AclStore::open(env).expect("open"))
}

fn node(i: u32) -> NodeId {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    Keypair::from_secret_bytes(seed).node_id()
}

fn vault(i: u32) -> VaultId {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&i.to_le_bytes());
    VaultId::from_bytes(b).expect("vault")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn check(c: &mut Criterion) {
    let (_tmp, acl) = store();
    let nodes: Vec<NodeId> = (0..10_000).map(node).collect();
    for (g, members) in nodes.chunks(10).enumerate() {
        let members: Vec<GestaltId> = members.iter().map(|n| GestaltId::Node(*n)).collect();
        acl.join(&members).expect("join");
        for v in 0..10 {
            let vid = vault((g as u32 * 7 + v) % 2_000);
            acl.set_vault_action(&members[0], vid, VaultAction::Pull)
                .expect("grant");
        }
        acl.set_gestalt_action(&members[0], GestaltAction::Scan)
            .expect("grant");
    }
    // Node 4_321 is in gestalt 432, which holds vault (432*7+3) % 2000.
    let (n, v) = (nodes[4_321], vault((432 * 7 + 3) % 2_000));
    assert!(acl.may_vault(&n, v, VaultAction::Pull).expect("check"));
    assert!(
        !acl.may_vault(&n, vault(1_999), VaultAction::Clone)
            .expect("check")
    );

    let mut samples: Vec<Duration> = (0..100_000)
        .map(|i| {
            let n = &nodes[(i * 7_919) % nodes.len()];
            let t = Instant::now();
            let _ = std::hint::black_box(acl.may_vault(n, v, VaultAction::Pull));
            t.elapsed()
        })
        .collect();
    samples.sort();
    println!(
        "acl/may_vault single calls over 10,000 nodes: p50 {:?}, p99 {:?}",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99)
    );

    c.bench_function("acl/may_vault", |b| {
        b.iter(|| acl.may_vault(&n, v, VaultAction::Pull).expect("check"))
    });
    c.bench_function("acl/has_gestalt_action", |b| {
        b.iter(|| {
            acl.has_gestalt_action(&n, GestaltAction::Scan)
                .expect("check")
        })
    });
}

fn merge(c: &mut Criterion) {
    let mut times = Vec::new();
    for round in 0..5u32 {
        let (_tmp, acl) = store();
        let base = round * 10_000;
        let a: Vec<GestaltId> = (0..1_000)
            .map(|i| GestaltId::Node(node(base + i)))
            .collect();
        let b: Vec<GestaltId> = (1_000..2_000)
            .map(|i| GestaltId::Node(node(base + i)))
            .collect();
        acl.join(&a).expect("join");
        acl.join(&b).expect("join");
        for i in 0..1_000 {
            acl.set_vault_action(&a[0], vault(i), VaultAction::Pull)
                .expect("grant");
            acl.set_vault_action(&b[0], vault(i + 500), VaultAction::Clone)
                .expect("grant");
        }
        let t = Instant::now();
        acl.merge(&a, &b).expect("merge");
        times.push(t.elapsed());
        let p = acl.permission(&a[999]).expect("read").expect("member");
        assert_eq!(p.vaults.len(), 1_500);
        assert_eq!(acl.all().expect("all").len(), 1);
    }
    times.sort();
    println!(
        "acl/merge_two_1000_node_gestalts (1,000 grants each): median {:?}, max {:?}",
        percentile(&times, 0.5),
        times[times.len() - 1]
    );
    let _ = c;
}

criterion_group!(benches, check, merge);
criterion_main!(benches);
