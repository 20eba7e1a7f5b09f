//! A 256 MiB stream through a slow service: flow control keeps both ends'
//! memory flat. Alone in its binary so other tests do not disturb the samples.

#[path = "support/cluster.rs"]
mod cluster;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cluster::{Node, config, rss_anon};
use futures::future::BoxFuture;
use keynode_core::NodeId;
use keynode_net::{RpcStream, Service};
use serde_bytes::ByteBuf;

const TOTAL: usize = 256 << 20;
const CHUNK: usize = 256 << 10;

/// Counts the bytes of every chunk, pausing now and then like a slow disk.
struct SlowSink;

impl Service for SlowSink {
    fn serve(&self, _peer: NodeId, mut stream: RpcStream) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut total = 0u64;
            let mut chunks = 0u64;
            loop {
                match stream.recv::<ByteBuf>().await {
                    Ok(Some(chunk)) => {
                        total += chunk.len() as u64;
                        chunks += 1;
                        if chunks.is_multiple_of(8) {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            let _ = stream.send(&total).await;
            let _ = stream.finish().await;
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_stream_with_flat_memory() {
    let a = Node::start(config(), Arc::new(SlowSink)).await;
    let b = Node::start(config(), Arc::new(SlowSink)).await;
    a.learn(&b);
    a.net.ping(b.id()).await.unwrap();

    let baseline = rss_anon();
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_anon(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let start = Instant::now();
    let mut stream = a.net.open(b.id()).await.unwrap();
    let chunk = vec![0x5au8; CHUNK];
    for _ in 0..TOTAL / CHUNK {
        stream.send(serde_bytes::Bytes::new(&chunk)).await.unwrap();
    }
    stream.finish().await.unwrap();
    let received: u64 = stream.recv().await.unwrap().unwrap();
    let elapsed = start.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();

    assert_eq!(received, TOTAL as u64);
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!(
        "256 MiB in {elapsed:?} ({:.0} MiB/s), RssAnon growth {:.1} MiB",
        256.0 / elapsed.as_secs_f64(),
        growth as f64 / (1 << 20) as f64
    );
    assert!(growth < 64 << 20, "memory grew by {growth} bytes");
}
