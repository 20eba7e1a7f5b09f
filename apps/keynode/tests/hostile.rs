//! Strangers attack a real agent process on its peer port, speaking the
//! protocol of `docs/PROTOCOL.md` with keynode-net's own Noise handshake and
//! yamux: a throwaway key each, a valid handshake, then streams that announce
//! the largest frame and never send it. The agent's memory stays within its
//! bound and a good peer is served while the attack holds. Alone in its binary,
//! so nothing else shares the machine's attention while the agent is sampled.

#[path = "cli/support.rs"]
#[allow(dead_code)]
mod support;

use std::future::poll_fn;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::io::{AsyncReadExt, AsyncWriteExt};
use keynode_core::{Keypair, NodeId};
use keynode_net::noise::{self, Identity, OsEntropy, Role};
use keynode_net::rpc::{FrameKind, PROTOCOL_VERSION, StreamHeader, StreamKind, encode_frame};
use support::{Agent, bin, peak_anon_during, rss_anon_kib};
use tokio_util::compat::TokioAsyncReadCompatExt;

/// Connections the attacker opens (the agent's whole inbound limit).
const CONNECTIONS: usize = 512;
/// Streams it opens on each.
const STREAMS: usize = 256;
/// Most the agent's anonymous memory may grow under the attack, in KiB.
const BOUND_KIB: u64 = 64 * 1024;
/// How long the test waits for each answer before failing: a bound on the
/// test, not on the agent.
const PATIENCE: Duration = Duration::from_secs(120);

/// What became of one stalled stream.
#[derive(Debug, Default)]
struct Tally {
    /// Connections the agent took (the others it closed after the handshake).
    connections: usize,
    /// Streams it answered (busy, or timed out waiting for the body).
    answered: usize,
    /// Streams it refused or reset.
    refused: usize,
}

/// One stranger: a connection with `STREAMS` stalled streams; returns, for each
/// stream, whether the agent answered it (`None` when the connection was
/// closed before it carried anything).
async fn stranger(port: u16, node: NodeId, settled: Arc<AtomicUsize>) -> Option<Vec<bool>> {
    // Counts this stranger as settled (stalled, or turned away) when it goes.
    struct Settle(Arc<AtomicUsize>, bool);
    impl Settle {
        fn now(&mut self) {
            if !self.1 {
                self.1 = true;
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    impl Drop for Settle {
        fn drop(&mut self) {
            self.now();
        }
    }
    let mut settle = Settle(settled, false);
    let io = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let identity = Identity::new(&Keypair::generate(), Arc::new(OsEntropy)).ok()?;
    let role = Role::Initiator(Some(node));
    let (noise, _) = noise::handshake(io, &identity, role, PATIENCE).await.ok()?;
    let mut conn = yamux::Connection::new(
        noise.compat(),
        yamux::Config::default(),
        yamux::Mode::Client,
    );
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        match poll_fn(|cx| conn.poll_new_outbound(cx)).await {
            Ok(s) => streams.push(s),
            Err(_) => break,
        }
    }
    let driver = tokio::spawn(async move {
        while let Some(Ok(_)) = poll_fn(|cx| conn.poll_next_inbound(cx)).await {}
    });
    let header = StreamHeader {
        version: PROTOCOL_VERSION,
        kind: StreamKind::Service,
    };
    let mut frame = encode_frame(FrameKind::Data, &header).expect("header");
    // The largest body the protocol allows, announced and never sent.
    frame.extend_from_slice(&(keynode_net::MAX_MESSAGE as u32).to_be_bytes());
    frame.push(FrameKind::Data as u8);
    let mut written = Vec::new();
    for mut s in streams {
        if s.write_all(&frame).await.is_ok() && s.flush().await.is_ok() {
            written.push(Some(s));
        } else {
            written.push(None);
        }
    }
    settle.now();
    let outcomes = futures::future::join_all(written.into_iter().map(|s| async move {
        let Some(mut s) = s else {
            return false;
        };
        let mut answer = Vec::new();
        let read = tokio::time::timeout(PATIENCE, s.read_to_end(&mut answer)).await;
        matches!(read, Ok(Ok(_)) if !answer.is_empty())
    }))
    .await;
    driver.abort();
    Some(outcomes)
}

#[test]
fn strangers_with_stalled_frames_stay_within_the_budget_and_a_good_peer_is_served() {
    let a = Agent::started();
    let b = Agent::started();
    let (a_id, a_port) = a.id_and_port();
    let (b_id, b_port) = b.id_and_port();
    a.run(&["nodes", "add", &b_id, "127.0.0.1", &b_port])
        .success();
    b.run(&["nodes", "add", &a_id, "127.0.0.1", &a_port])
        .success();
    let node: NodeId = a_id.parse().expect("node id");
    let port: u16 = a_port.parse().expect("port");
    let pid = a.pid();
    let b_node = b.node.clone();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let before = rss_anon_kib(pid);
    let ((tally, pinged), peak) = peak_anon_during(pid, || {
        rt.block_on(async {
            let settled = Arc::new(AtomicUsize::new(0));
            let counter = settled.clone();
            let attack = tokio::spawn(async move {
                let runs =
                    (0..CONNECTIONS).map(|_| tokio::spawn(stranger(port, node, counter.clone())));
                let mut tally = Tally::default();
                for run in futures::future::join_all(runs).await {
                    if let Ok(Some(outcomes)) = run {
                        tally.connections += 1;
                        for answered in outcomes {
                            if answered {
                                tally.answered += 1;
                            } else {
                                tally.refused += 1;
                            }
                        }
                    }
                }
                tally
            });
            // Once every stranger has its streams hanging (or was turned
            // away), a good peer pings the agent.
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while settled.load(Ordering::SeqCst) < CONNECTIONS {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the attack never settled"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let ping = tokio::task::spawn_blocking(move || {
                Command::new(bin())
                    .arg("--node-path")
                    .arg(&b_node)
                    .args(["nodes", "ping", &a_id])
                    .output()
                    .expect("ping")
            });
            let pinged = ping.await.expect("ping task");
            (attack.await.expect("attack"), pinged)
        })
    });
    let grown = peak.saturating_sub(before);
    eprintln!("{tally:?}; anonymous memory {before} KiB before, peak {peak} KiB (+{grown} KiB)");
    assert!(
        pinged.status.success(),
        "the good peer was not served: {}",
        String::from_utf8_lossy(&pinged.stderr)
    );
    assert!(tally.connections > 0, "no stranger got a connection");
    // Every stream was opened and written to (a stranger past its four
    // streams loses its connection, so most are cut rather than answered).
    assert_eq!(tally.answered + tally.refused, tally.connections * STREAMS);
    assert!(
        grown <= BOUND_KIB,
        "the agent grew by {grown} KiB under the attack (bound {BOUND_KIB} KiB)"
    );
    // And it still serves its own user.
    a.run(&["vaults", "list"]).success();
}
