//! `keynode-harness dht`: a local Mainline testnet for agents to join
//! (`--serve`), and the measurements of finding and reaching nodes by
//! NodeId (`--measure`): lookups on an N-node testnet, a moved node reached
//! by a peer that knew only its old address, and connections through a
//! relay beside direct ones (set-up time, stream throughput), all in one run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use keynode_core::{Keypair, NodeId};
use keynode_net::book::Env;
use keynode_net::{
    AddressBook, Discovery, MemoryDirectory, NetConfig, NetContext, Network, NodeRecord,
    PeerAddress, RelayAddress, RelayLimits, RpcStream, Service, TcpTransport,
};
use serde_json::json;

/// Starts a local testnet of `nodes` DHT nodes on 127.0.0.1, prints one
/// line `bootstrap: HOST:PORT,…` and serves until interrupted.
pub async fn serve(nodes: usize) -> Result<bool, String> {
    let testnet = testnet(nodes).await?;
    println!("bootstrap: {}", testnet.bootstrap.join(","));
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    drop(testnet);
    Ok(true)
}

async fn testnet(nodes: usize) -> Result<mainline::Testnet, String> {
    let n = nodes.max(1);
    tokio::task::spawn_blocking(move || mainline::Testnet::builder(n).build())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot start the DHT testnet: {e}"))
}

/// A sink: reads byte frames until the end, answers how many bytes came.
struct Sink;

impl Service for Sink {
    fn serve(&self, _peer: NodeId, mut stream: RpcStream) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut total = 0u64;
            loop {
                match stream.recv::<serde_bytes::ByteBuf>().await {
                    Ok(Some(b)) if b.is_empty() => break,
                    Ok(Some(b)) => total += b.len() as u64,
                    _ => return,
                }
            }
            let _ = stream.send(&total).await;
            let _ = stream.finish().await;
        })
    }
}

struct Peer {
    net: Network,
    _tmp: tempfile::TempDir,
}

fn env() -> Result<(tempfile::TempDir, Env), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let key = keynode_core::datakey::DataKey::from_bytes([7; 32]);
    let env =
        keynode_core::store::open_env(tmp.path(), &key, 1 << 24, 16).map_err(|e| e.to_string())?;
    Ok((tmp, env))
}

fn config() -> NetConfig {
    NetConfig {
        listen: "127.0.0.1:0".parse().expect("an address"),
        ..NetConfig::default()
    }
}

async fn peer(
    key: Arc<Keypair>,
    config: NetConfig,
    discovery: Option<Arc<dyn Discovery>>,
    env: Option<(tempfile::TempDir, Env)>,
) -> Result<Peer, String> {
    let (tmp, env) = match env {
        Some(e) => e,
        None => self::env()?,
    };
    let book = AddressBook::open(env).map_err(|e| e.to_string())?;
    let context = NetContext {
        discovery,
        ..NetContext::default()
    };
    let net = Network::start_with(key, config, TcpTransport, book, Arc::new(Sink), context)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Peer { net, _tmp: tmp })
}

fn dht_of(key: &Arc<Keypair>, bootstrap: &[String]) -> Arc<dyn Discovery> {
    keynode_net::dht::join_in_background(
        key.clone(),
        keynode_net::DhtSettings {
            bootstrap: Some(bootstrap.to_vec()),
            port: None,
        },
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sends `bytes` over one stream to `to`; returns the elapsed time.
async fn push(from: &Network, to: NodeId, bytes: usize) -> Result<Duration, String> {
    let chunk = serde_bytes::ByteBuf::from(vec![0x5a; 256 * 1024]);
    let start = Instant::now();
    let mut s = from.open(to).await.map_err(|e| e.to_string())?;
    let mut sent = 0;
    while sent < bytes {
        s.send(&chunk).await.map_err(|e| e.to_string())?;
        sent += chunk.len();
    }
    s.send(&serde_bytes::ByteBuf::new())
        .await
        .map_err(|e| e.to_string())?;
    let got: u64 = s
        .recv()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no count")?;
    if got as usize != sent {
        return Err(format!("sent {sent}, the sink counted {got}"));
    }
    Ok(start.elapsed())
}

/// Connection set-up times to `to` (ping after a disconnect), in ms, sorted.
async fn setups(from: &Network, to: &Network, rounds: usize) -> Result<Vec<f64>, String> {
    let mut out = Vec::new();
    for _ in 0..rounds {
        from.disconnect(to.node_id());
        to.disconnect(from.node_id());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        from.ping(to.node_id()).await.map_err(|e| e.to_string())?;
        out.push(ms(t.elapsed()));
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// Runs the measurements; writes `dht.json` under `report`.
pub async fn measure(nodes: usize, lookups: usize, report: PathBuf) -> Result<bool, String> {
    let started = Instant::now();
    let testnet = testnet(nodes).await?;
    eprintln!(
        "dht: a testnet of {nodes} nodes is up ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    let boot = testnet.bootstrap.clone();

    // 1. Lookups: `lookups` nodes publish; one resolves each, cold.
    let mut published = Vec::new();
    let joined: Vec<_> = (0..lookups.max(1))
        .map(|_| {
            let key = Arc::new(Keypair::generate());
            let d = dht_of(&key, &boot);
            (key, d)
        })
        .collect();
    for (key, d) in joined {
        let record = NodeRecord {
            addresses: vec![PeerAddress::new("127.0.0.1", 4400)],
            ..NodeRecord::default()
        };
        d.publish(record).await.map_err(|e| e.to_string())?;
        published.push((key.node_id(), d));
    }
    let resolver = dht_of(&Arc::new(Keypair::generate()), &boot);
    let mut resolve_ms = Vec::new();
    let mut missing = 0;
    for (node, _) in &published {
        let t = Instant::now();
        match resolver.resolve(*node, false).await {
            Ok(Some(_)) => resolve_ms.push(ms(t.elapsed())),
            other => {
                missing += 1;
                eprintln!(
                    "dht: {node} not resolved after {:.0} ms: {other:?}",
                    ms(t.elapsed())
                );
            }
        }
    }
    resolve_ms.sort_by(f64::total_cmp);
    eprintln!(
        "dht: resolve p50 {:.1} ms, p99 {:.1} ms, {missing} of {} not found",
        percentile(&resolve_ms, 0.5),
        percentile(&resolve_ms, 0.99),
        published.len()
    );
    drop(published);

    // 2. A moved node: B knows A's old address only; A comes back on
    // another port (same key and state) and the clock runs from A being up
    // to B's first successful ping.
    let a_key = Arc::new(Keypair::generate());
    let a_env = env()?;
    let a_book_env = (
        tempfile::tempdir().map_err(|e| e.to_string())?,
        a_env.1.clone(),
    );
    let a = peer(
        a_key.clone(),
        config(),
        Some(dht_of(&a_key, &boot)),
        Some(a_env),
    )
    .await?;
    let b_key = Arc::new(Keypair::generate());
    let b = peer(b_key.clone(), config(), Some(dht_of(&b_key, &boot)), None).await?;
    b.net
        .book()
        .add(a_key.node_id(), PeerAddress::from(a.net.local_addr()))
        .map_err(|e| e.to_string())?;
    b.net
        .ping(a_key.node_id())
        .await
        .map_err(|e| e.to_string())?;
    let old: SocketAddr = a.net.local_addr();
    a.net.shutdown().await;
    b.net.disconnect(a_key.node_id());
    let a2 = peer(
        a_key.clone(),
        config(),
        Some(dht_of(&a_key, &boot)),
        Some(a_book_env),
    )
    .await?;
    let up = Instant::now();
    let moved = loop {
        if b.net.ping(a_key.node_id()).await.is_ok() {
            break up.elapsed();
        }
        if up.elapsed() > Duration::from_secs(60) {
            return Err("the moved node was not reached in 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "dht: moved node ({old} -> {}) reached {:.0} ms after it was up",
        a2.net.local_addr(),
        ms(moved)
    );
    a2.net.shutdown().await;
    b.net.shutdown().await;

    // 3. Through a relay beside direct, on loopback, one run.
    let dir = MemoryDirectory::new();
    let listed = |key: &Arc<Keypair>| Some(dir.discovery(key.node_id()));
    let r_key = Arc::new(Keypair::generate());
    let relay_cfg = NetConfig {
        relay_serve: Some(RelayLimits::default()),
        ..config()
    };
    let relay = peer(r_key.clone(), relay_cfg, None, None).await?;
    let h_key = Arc::new(Keypair::generate());
    let hidden_cfg = NetConfig {
        no_listen: true,
        relays: vec![RelayAddress {
            node: r_key.node_id(),
            address: PeerAddress::from(relay.net.local_addr()),
        }],
        ..config()
    };
    let hidden = peer(h_key.clone(), hidden_cfg, listed(&h_key), None).await?;
    let x_key = Arc::new(Keypair::generate());
    let direct = peer(x_key.clone(), config(), listed(&x_key), None).await?;
    let d_key = Arc::new(Keypair::generate());
    let dialer = peer(d_key.clone(), config(), listed(&d_key), None).await?;
    let wait = Instant::now();
    while hidden.net.reserved_relays().is_empty() {
        if wait.elapsed() > Duration::from_secs(10) {
            return Err("no relay reservation".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Warm both paths (the directory lookup, the relay connection).
    dialer
        .net
        .ping(h_key.node_id())
        .await
        .map_err(|e| e.to_string())?;
    dialer
        .net
        .ping(x_key.node_id())
        .await
        .map_err(|e| e.to_string())?;
    let rounds = 30;
    let direct_setup = setups(&dialer.net, &direct.net, rounds).await?;
    let relay_setup = setups(&dialer.net, &hidden.net, rounds).await?;
    let through = dialer
        .net
        .connections()
        .into_iter()
        .any(|c| c.node_id == h_key.node_id() && c.relay == Some(r_key.node_id()));
    if !through {
        return Err("the hidden node was not reached through the relay".into());
    }
    let bytes = 64 << 20;
    let mut direct_mbps = Vec::new();
    let mut relay_mbps = Vec::new();
    for _ in 0..3 {
        let d = push(&dialer.net, x_key.node_id(), bytes).await?;
        direct_mbps.push(bytes as f64 / d.as_secs_f64() / 1e6);
        let r = push(&dialer.net, h_key.node_id(), bytes).await?;
        relay_mbps.push(bytes as f64 / r.as_secs_f64() / 1e6);
    }
    direct_mbps.sort_by(f64::total_cmp);
    relay_mbps.sort_by(f64::total_cmp);
    let (ds, rs) = (
        percentile(&direct_setup, 0.5),
        percentile(&relay_setup, 0.5),
    );
    let (dm, rm) = (percentile(&direct_mbps, 0.5), percentile(&relay_mbps, 0.5));
    eprintln!(
        "relay: set-up p50 direct {ds:.2} ms, relayed {rs:.2} ms ({:.2}x); throughput direct {dm:.0} MB/s, relayed {rm:.0} MB/s ({:.0} %)",
        rs / ds,
        100.0 * rm / dm
    );
    for p in [&relay, &hidden, &direct, &dialer] {
        p.net.shutdown().await;
    }

    let doc = json!({
        "testnet_nodes": nodes,
        "resolve_ms": {
            "count": resolve_ms.len(),
            "missing": missing,
            "p50": percentile(&resolve_ms, 0.5),
            "p99": percentile(&resolve_ms, 0.99),
            "max": resolve_ms.last().copied(),
        },
        "moved_node_reached_ms": ms(moved),
        "relay": {
            "setup_ms_p50": { "direct": ds, "relayed": rs, "ratio": rs / ds },
            "throughput_mb_s_p50": { "direct": dm, "relayed": rm, "share": rm / dm },
            "bytes_per_transfer": bytes,
        },
    });
    std::fs::create_dir_all(&report).map_err(|e| e.to_string())?;
    let path = report.join("dht.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    eprintln!("dht: report in {}", path.display());
    let met = percentile(&resolve_ms, 0.5) <= 1000.0
        && missing == 0
        && moved <= Duration::from_secs(10)
        && rs / ds <= 3.0
        && rm / dm >= 0.5;
    Ok(met)
}
