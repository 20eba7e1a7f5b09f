//! Discovering a 100-node gestalt over the network: 100 real nodes in one
//! process on loopback, linked in a line by cross-signed claims (the deepest
//! walk: every chain is fetched one after another); a fresh node trusts the
//! first and discovers the whole gestalt.
//!
//! Run: `cargo bench -p keynode-agent --bench discovery`

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use keynode_agent::SeedNode;
use keynode_agent::api::{Request, Response};
use keynode_agent::{Client, Node, NodeConfig};

const NODES: usize = 100;

async fn call(node: &Node, req: Request) -> Response {
    Client::connect(&node.socket_path())
        .await
        .expect("connect")
        .call(req)
        .await
        .expect("call")
}

fn seed(n: &Node) -> SeedNode {
    SeedNode {
        node: n.node_id(),
        host: "127.0.0.1".into(),
        port: n.listen_addr().port(),
    }
}

fn bench(c: &mut Criterion) {
    let runner = actix_rt::System::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let start = |name: String, seeds: Vec<SeedNode>| {
        let mut cfg = NodeConfig::new(dir.path().join(name), "pw");
        cfg.seed_nodes = seeds;
        cfg.provider_dir = Some(dir.path().join("provider"));
        Node::start(cfg)
    };
    let nodes: Vec<Node> = runner.block_on(async {
        let mut nodes: Vec<Node> = Vec::new();
        for i in 0..NODES {
            let seeds = nodes.last().map(seed).into_iter().collect();
            nodes.push(start(format!("n{i}"), seeds).await.expect("start"));
        }
        // n[i] invites n[i+1]; n[i+1] claims n[i]: a line of links.
        for w in nodes.windows(2) {
            call(
                &w[0],
                Request::IdentitiesInvite {
                    node: w[1].node_id(),
                },
            )
            .await;
            call(
                &w[1],
                Request::NodesClaim {
                    node: w[0].node_id(),
                },
            )
            .await;
        }
        nodes
    });
    let seeds: Vec<SeedNode> = nodes.iter().map(seed).collect();

    let mut g = c.benchmark_group("discovery");
    g.sample_size(10);
    let mut round = 0;
    g.bench_function("discover_100_node_gestalt", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                total += runner.block_on(async {
                    let observer = start(format!("observer{round}"), seeds.clone())
                        .await
                        .expect("start");
                    let t = Instant::now();
                    let r = call(
                        &observer,
                        Request::IdentitiesDiscover {
                            gestalt: nodes[0].node_id().into(),
                        },
                    )
                    .await;
                    let elapsed = t.elapsed();
                    let Response::Discovered(d) = r else {
                        panic!("no discovery")
                    };
                    let found = d.gestalt.map(|g| g.nodes.len()).unwrap_or(0);
                    assert_eq!(found, NODES, "failures: {:?}", d.failures);
                    observer.stop().await;
                    elapsed
                });
            }
            total
        })
    });
    g.finish();
    runner.block_on(async {
        for n in nodes {
            n.stop().await;
        }
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
