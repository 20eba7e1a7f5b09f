//! Network benchmarks, side by side: handshakes per second; stream throughput
//! over one encrypted connection against raw loopback TCP and one core's raw
//! ChaCha20-Poly1305; unary request round trip (criterion's mean, plus p50/p99
//! from a sample of 10,000 calls).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::future::BoxFuture;
use keynode_core::{Keypair, NodeId};
use keynode_net::noise::{self, HANDSHAKE_TIMEOUT, Identity, MAX_PLAINTEXT, OsEntropy, Role};
use keynode_net::{AddressBook, NetConfig, Network, PeerAddress, RpcStream, Service, TcpTransport};
use serde_bytes::ByteBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const CHUNK: usize = 256 << 10;
const TRANSFER: usize = 64 << 20;

/// Unary: answers each request with the same value. Streaming: counts bytes.
struct Bench;

impl Service for Bench {
    fn serve(&self, _peer: NodeId, mut stream: RpcStream) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            match stream.recv::<Req>().await {
                Ok(Some(Req::Echo(v))) => {
                    let _ = stream.send(&v).await;
                }
                Ok(Some(Req::Upload)) => {
                    let mut total = 0u64;
                    while let Ok(Some(chunk)) = stream.recv::<ByteBuf>().await {
                        total += chunk.len() as u64;
                    }
                    let _ = stream.send(&total).await;
                }
                _ => {}
            }
            let _ = stream.finish().await;
        })
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
enum Req {
    Echo(u64),
    Upload,
}

fn env() -> (tempfile::TempDir, keynode_net::book::Env) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = keynode_core::datakey::DataKey::from_bytes([7; 32]);
    let env = keynode_core::store::open_env(tmp.path(), &key, 1 << 22, 4).expect("env");
    (tmp, env)
}

async fn node() -> (tempfile::TempDir, Network) {
    let (tmp, env) = env();
    let cfg = NetConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..NetConfig::default()
    };
    let net = Network::start(
        Arc::new(Keypair::generate()),
        cfg,
        TcpTransport,
        AddressBook::open(env).expect("book"),
        Arc::new(Bench),
    )
    .await
    .expect("start");
    (tmp, net)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A runtime that runs everything on the calling thread.
fn single_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `task` on a new thread with its own single-thread runtime.
fn on_own_thread(task: impl std::future::Future<Output = ()> + Send + 'static) {
    std::thread::spawn(move || single_thread().block_on(task));
}

fn handshakes(c: &mut Criterion) {
    let rt = runtime();
    let a = Arc::new(Identity::new(&Keypair::generate(), Arc::new(OsEntropy)).expect("id"));
    let b = Arc::new(Identity::new(&Keypair::generate(), Arc::new(OsEntropy)).expect("id"));
    let b_id = b.node_id();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let b = b.clone();
            tokio::spawn(async move {
                let _ = sock.set_nodelay(true);
                let _ = noise::handshake(sock, &b, Role::Responder, HANDSHAKE_TIMEOUT).await;
            });
        }
    });
    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    g.bench_function("tcp_connect_plus_xx", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                let sock = TcpStream::connect(addr).await.expect("connect");
                sock.set_nodelay(true).expect("nodelay");
                noise::handshake(sock, &a, Role::Initiator(Some(b_id)), HANDSHAKE_TIMEOUT)
                    .await
                    .expect("handshake")
            })
        })
    });
    g.finish();
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("throughput");
    g.throughput(Throughput::Bytes(TRANSFER as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));

    // One core's raw cipher: snow's ChaCha20-Poly1305 (ring), 65,519-byte messages.
    let params: snow::params::NoiseParams = noise::NOISE_PATTERN.parse().expect("params");
    let (mut ta, _tb) = {
        let mk = || snow::Builder::new(params.clone());
        let (ka, kb) = (
            mk().generate_keypair().expect("k"),
            mk().generate_keypair().expect("k"),
        );
        let mut i = mk()
            .local_private_key(&ka.private)
            .expect("k")
            .build_initiator()
            .expect("i");
        let mut r = mk()
            .local_private_key(&kb.private)
            .expect("k")
            .build_responder()
            .expect("r");
        let (mut m, mut p) = (vec![0u8; 1024], vec![0u8; 1024]);
        let n = i.write_message(&[], &mut m).expect("m1");
        r.read_message(&m[..n], &mut p).expect("m1");
        let n = r.write_message(&[], &mut m).expect("m2");
        i.read_message(&m[..n], &mut p).expect("m2");
        let n = i.write_message(&[], &mut m).expect("m3");
        r.read_message(&m[..n], &mut p).expect("m3");
        (
            i.into_transport_mode().expect("t"),
            r.into_transport_mode().expect("t"),
        )
    };
    let plain = vec![0x42u8; MAX_PLAINTEXT];
    let mut sealed = vec![0u8; MAX_PLAINTEXT + 16];
    g.bench_function("cipher_snow_chachapoly_one_core", |bench| {
        bench.iter(|| {
            for _ in 0..TRANSFER / MAX_PLAINTEXT {
                ta.write_message(&plain, &mut sealed).expect("seal");
            }
        })
    });
    {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&[7u8; 32].into());
        let mut buf = vec![0x42u8; MAX_PLAINTEXT];
        g.bench_function("cipher_rustcrypto_chachapoly_one_core", |bench| {
            bench.iter(|| {
                for i in 0..TRANSFER / MAX_PLAINTEXT {
                    let mut nonce = [0u8; 12];
                    nonce[4..].copy_from_slice(&(i as u64).to_le_bytes());
                    let tag = cipher
                        .encrypt_in_place_detached(&nonce.into(), &[], &mut buf)
                        .expect("seal");
                    std::hint::black_box(tag);
                }
            })
        });
    }

    // Stream benchmarks: the receiver runs alone on its own thread (a
    // current-thread runtime), the sender on this one, so each can have a core.
    let sender = single_thread();

    // Raw loopback TCP.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    on_own_thread(async move {
        let listener = TcpListener::from_std(listener).expect("listener");
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0usize;
        while let Ok(n) = sock.read(&mut buf).await {
            if n == 0 {
                break;
            }
            total += n;
            if total == TRANSFER {
                total = 0;
                let _ = sock.write_all(&[1]).await;
            }
        }
    });
    let mut raw = sender.block_on(TcpStream::connect(addr)).expect("connect");
    raw.set_nodelay(true).expect("nodelay");
    let chunk = vec![0x5au8; CHUNK];
    g.bench_function("raw_loopback_tcp", |bench| {
        bench.iter(|| {
            sender.block_on(async {
                for _ in 0..TRANSFER / CHUNK {
                    raw.write_all(&chunk).await.expect("write");
                }
                let mut ack = [0u8; 1];
                raw.read_exact(&mut ack).await.expect("ack");
            })
        })
    });

    // Noise only (no yamux, no RPC frames): NoiseStream over loopback TCP.
    let ida = Identity::new(&Keypair::generate(), Arc::new(OsEntropy)).expect("id");
    let idb = Arc::new(Identity::new(&Keypair::generate(), Arc::new(OsEntropy)).expect("id"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    {
        let idb = idb.clone();
        on_own_thread(async move {
            let listener = TcpListener::from_std(listener).expect("listener");
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            sock.set_nodelay(true).expect("nodelay");
            let (mut s, _) = noise::handshake(sock, &idb, Role::Responder, HANDSHAKE_TIMEOUT)
                .await
                .expect("handshake");
            let mut buf = vec![0u8; CHUNK];
            let mut total = 0usize;
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                total += n;
                if total == TRANSFER {
                    total = 0;
                    let _ = s.write_all(&[1]).await;
                    let _ = s.flush().await;
                }
            }
        });
    }
    let mut ns = sender.block_on(async {
        let sock = TcpStream::connect(addr).await.expect("connect");
        sock.set_nodelay(true).expect("nodelay");
        noise::handshake(sock, &ida, Role::Initiator(None), HANDSHAKE_TIMEOUT)
            .await
            .expect("handshake")
            .0
    });
    g.bench_function("noise_stream_loopback", |bench| {
        bench.iter(|| {
            sender.block_on(async {
                for _ in 0..TRANSFER / CHUNK {
                    ns.write_all(&chunk).await.expect("write");
                }
                ns.flush().await.expect("flush");
                let mut ack = [0u8; 1];
                ns.read_exact(&mut ack).await.expect("ack");
            })
        })
    });

    // The full stack: Network, one connection, one RPC stream of 256 KiB frames.
    let ((_ta, a), (_tb, b)) = rt.block_on(async { (node().await, node().await) });
    a.book()
        .add(b.node_id(), PeerAddress::from(b.local_addr()))
        .expect("book");
    let peer = b.node_id();
    rt.block_on(a.ping(peer)).expect("ping");
    g.bench_function("network_rpc_stream_one_connection", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                let mut s = a.open(peer).await.expect("open");
                s.send(&Req::Upload).await.expect("send");
                for _ in 0..TRANSFER / CHUNK {
                    s.send(serde_bytes::Bytes::new(&chunk)).await.expect("send");
                }
                s.finish().await.expect("finish");
                let total: u64 = s.recv().await.expect("recv").expect("total");
                assert_eq!(total, TRANSFER as u64);
            })
        })
    });
    g.finish();
}

/// Measures `a`'s unary calls to `peer`: criterion's mean under `group`, then
/// p50/p90/p99 from a sample of 10,000 calls.
fn round_trips(c: &mut Criterion, group: &str, rt: &Runtime, a: &Network, peer: NodeId) {
    rt.block_on(a.ping(peer)).expect("ping");
    let mut g = c.benchmark_group(group);
    g.bench_function("call_round_trip", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                let v: u64 = a.call(peer, &Req::Echo(7)).await.expect("call");
                v
            })
        })
    });
    g.finish();

    let mut sample: Vec<Duration> = rt.block_on(async {
        let mut out = Vec::with_capacity(10_000);
        for i in 0..10_000u64 {
            let start = Instant::now();
            let v: u64 = a.call(peer, &Req::Echo(i)).await.expect("call");
            out.push(start.elapsed());
            assert_eq!(v, i);
        }
        out
    });
    sample.sort();
    let pct = |p: f64| sample[((sample.len() as f64 * p) as usize).min(sample.len() - 1)];
    println!(
        "{group}/call_round_trip sample of {} calls: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        sample.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        sample[sample.len() - 1]
    );
}

/// Both nodes in one 2-worker runtime.
fn unary(c: &mut Criterion) {
    let rt = runtime();
    let ((_ta, a), (_tb, b)) = rt.block_on(async { (node().await, node().await) });
    a.book()
        .add(b.node_id(), PeerAddress::from(b.local_addr()))
        .expect("book");
    round_trips(c, "unary", &rt, &a, b.node_id());
}

/// The round trip between two nodes that each run on their own thread and
/// runtime, as two machines would: the caller's node on the bench thread, the
/// serving node on another thread.
fn unary_two_nodes(c: &mut Criterion) {
    let rt = single_thread();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        single_thread().block_on(async move {
            let (tmp, b) = node().await;
            tx.send((b.node_id(), b.local_addr())).expect("send");
            let _keep = (tmp, b);
            std::future::pending::<()>().await;
        })
    });
    let (peer, addr) = rx.recv().expect("serving node");
    let (_ta, a) = rt.block_on(node());
    a.book().add(peer, PeerAddress::from(addr)).expect("book");
    round_trips(c, "unary_two_nodes", &rt, &a, peer);
}

/// The floor under a unary call, measured the same way: a 16-byte ping-pong
/// over raw loopback TCP (no Noise, no yamux, no frames), in the two
/// topologies of `unary` and `unary_two_nodes`.
fn unary_reference(c: &mut Criterion) {
    async fn echo_server(listener: std::net::TcpListener) {
        listener.set_nonblocking(true).expect("nonblocking");
        let listener = TcpListener::from_std(listener).expect("listener");
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        sock.set_nodelay(true).expect("nodelay");
        let mut buf = [0u8; 16];
        while sock.read_exact(&mut buf).await.is_ok() {
            if sock.write_all(&buf).await.is_err() {
                break;
            }
        }
    }
    let mut run = |name: &str, rt: &Runtime, own_thread: bool| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        if own_thread {
            on_own_thread(echo_server(listener));
        } else {
            rt.spawn(echo_server(listener));
        }
        let mut sock = rt.block_on(TcpStream::connect(addr)).expect("connect");
        sock.set_nodelay(true).expect("nodelay");
        let mut g = c.benchmark_group("unary_reference");
        let ping = |sock: &mut TcpStream, i: u64| {
            rt.block_on(async {
                let mut msg = [0u8; 16];
                msg[..8].copy_from_slice(&i.to_le_bytes());
                sock.write_all(&msg).await.expect("write");
                sock.read_exact(&mut msg).await.expect("read");
                u64::from_le_bytes(msg[..8].try_into().expect("8 bytes"))
            })
        };
        g.bench_function(name, |bench| bench.iter(|| ping(&mut sock, 7)));
        g.finish();
        let mut sample = Vec::with_capacity(10_000);
        for i in 0..10_000u64 {
            let start = Instant::now();
            assert_eq!(ping(&mut sock, i), i);
            sample.push(start.elapsed());
        }
        sample.sort();
        let pct = |p: f64| sample[((sample.len() as f64 * p) as usize).min(sample.len() - 1)];
        println!(
            "unary_reference/{name} sample of {} calls: p50 {:?}, p90 {:?}, p99 {:?}",
            sample.len(),
            pct(0.50),
            pct(0.90),
            pct(0.99)
        );
    };
    run("raw_tcp_ping_pong_one_runtime", &runtime(), false);
    run("raw_tcp_ping_pong_two_threads", &single_thread(), true);
}

criterion_group!(
    benches,
    handshakes,
    throughput,
    unary,
    unary_two_nodes,
    unary_reference
);
criterion_main!(benches);
