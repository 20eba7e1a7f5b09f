//! A hostile source: a node that advertises a vault and answers a clone with a
//! pack built to exhaust the receiver. A real cloning agent refuses it within
//! its bound (anonymous memory grows by at most 64 MiB) and its node path holds
//! nothing of it afterwards. Alone in its binary, as memory is sampled
//! process-wide.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures_util::future::BoxFuture;
use keynode_agent::api::{Request, Response};
use keynode_agent::peer::{PeerRequest, PeerResponse};
use keynode_agent::testing::{TestNet, call, knows, ok, read, trust, write};
use keynode_core::{Keypair, NodeId, VaultId, VaultName};
use keynode_net::{AddressBook, Network, RpcStream, Service, TcpTransport};
use keynode_vaults::{Advert, PackStats};
use sha1::{Digest, Sha1};

/// Most the cloning process may grow while refusing, in KiB.
const BOUND_KIB: u64 = 64 * 1024;

/// Anonymous (heap) resident memory of this process, in KiB; panics where it
/// cannot be measured.
fn anon_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/self/status")
}

/// A git pack written by hand, as a hostile source would.
struct Pack {
    body: Vec<u8>,
    count: u32,
}

impl Pack {
    fn new() -> Self {
        Pack {
            body: Vec::new(),
            count: 0,
        }
    }

    fn header(&mut self, kind: u8, mut size: u64) {
        let mut b = (kind << 4) | (size & 0x0f) as u8;
        size >>= 4;
        while size > 0 {
            self.body.push(b | 0x80);
            b = (size & 0x7f) as u8;
            size >>= 7;
        }
        self.body.push(b);
    }

    /// `len` zero bytes, zlib-compressed (a few KiB on the wire per MiB).
    fn zeros(&mut self, len: usize) {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        let chunk = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            z.write_all(&chunk[..n]).expect("zlib");
            left -= n;
        }
        self.body.extend(z.finish().expect("zlib"));
        self.count += 1;
    }

    fn finish(self, good_trailer: bool) -> Vec<u8> {
        let mut pack = b"PACK\0\0\0\x02".to_vec();
        pack.extend_from_slice(&self.count.to_be_bytes());
        pack.extend(self.body);
        let mut sum = Sha1::digest(&pack).to_vec();
        if !good_trailer {
            sum[0] ^= 1;
        }
        pack.extend(sum);
        pack
    }
}

/// Deltas of 1 MiB each against a base that never comes.
fn waiting_deltas() -> Vec<u8> {
    let mut p = Pack::new();
    for _ in 0..2_000 {
        p.header(7, 1 << 20);
        p.body.extend_from_slice(&[7u8; 20]);
        p.zeros(1 << 20);
    }
    p.finish(true)
}

/// One 300 MiB blob (streamed to a file), then a bad trailer.
fn big_blob_bad_trailer() -> Vec<u8> {
    let mut p = Pack::new();
    p.header(3, 300 << 20);
    p.zeros(300 << 20);
    p.finish(false)
}

/// Serves every clone with `pack`.
struct Hostile {
    pack: Arc<Vec<u8>>,
}

impl Service for Hostile {
    fn serve(&self, _peer: NodeId, mut stream: RpcStream) -> BoxFuture<'static, ()> {
        let pack = self.pack.clone();
        Box::pin(async move {
            let Ok(Some(PeerRequest::VaultOpen { .. })) = stream.recv().await else {
                return;
            };
            let advert = Advert {
                vault: VaultId::generate(),
                name: VaultName::new("loot").expect("name"),
                head: "1".repeat(40),
            };
            if stream.send(&PeerResponse::Advert(advert)).await.is_err() {
                return;
            }
            let Ok(Some(PeerRequest::VaultWant { .. })) = stream.recv().await else {
                return;
            };
            for chunk in pack.chunks(256 << 10) {
                if stream
                    .send(&PeerResponse::PackChunk(chunk.to_vec()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let stats = PackStats {
                objects: 1,
                bytes: pack.len() as u64,
            };
            let _ = stream.send(&PeerResponse::PackEnd(stats)).await;
        })
    }
}

/// Every file under `dir`.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => out.push(e.path()),
                Err(_) => {}
            }
        }
    }
    out
}

#[actix_rt::test]
async fn a_hostile_source_is_refused_within_the_bound_and_leaves_nothing() {
    let net = TestNet::new();
    let a = net.node("a").await;
    for (what, pack) in [
        ("deltas waiting for a base", waiting_deltas()),
        ("a big blob, then a bad trailer", big_blob_bad_trailer()),
    ] {
        let tmp = tempfile::tempdir().expect("tmp");
        let key = keynode_core::datakey::DataKey::from_bytes([3; 32]);
        let env = keynode_core::store::open_env(tmp.path(), &key, 1 << 24, 4).expect("env");
        let evil = Network::start(
            Arc::new(Keypair::generate()),
            keynode_net::NetConfig {
                listen: "127.0.0.1:0".parse().expect("addr"),
                ..Default::default()
            },
            TcpTransport,
            AddressBook::open(env).expect("book"),
            Arc::new(Hostile {
                pack: Arc::new(pack),
            }),
        )
        .await
        .expect("hostile node");
        ok(
            &a,
            Request::NodesAdd {
                node: evil.node_id(),
                host: "127.0.0.1".into(),
                port: evil.local_addr().port(),
            },
        )
        .await;
        let vaults_dir = a.paths().vaults();
        let before_files = files_under(&vaults_dir);

        let before = anon_rss_kib();
        let peak = Arc::new(AtomicU64::new(before));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, done) = (peak.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    peak.fetch_max(anon_rss_kib(), Ordering::Relaxed);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            })
        };
        let r = call(
            &a,
            Request::VaultsClone {
                vault: "loot".into(),
                node: evil.node_id(),
                follow: false,
            },
        )
        .await;
        done.store(true, Ordering::Relaxed);
        sampler.join().expect("sampler");
        let grown = peak.load(Ordering::Relaxed).saturating_sub(before);
        eprintln!("{what}: {r:?}; grew {grown} KiB");
        assert!(r.is_err(), "{what}: the clone was accepted");
        assert!(grown <= BOUND_KIB, "{what}: grew by {grown} KiB");
        // Nothing of it is left: no vault, no file.
        let Response::Vaults(list) = ok(&a, Request::VaultsList).await else {
            panic!("no list")
        };
        assert!(list.is_empty(), "{what}: {list:?}");
        assert_eq!(files_under(&vaults_dir), before_files, "{what}");
        evil.shutdown().await;
    }
    // And a good source is served as before.
    let b = net.node("b").await;
    knows(&a, &b).await;
    knows(&b, &a).await;
    trust(&a, &b).await;
    trust(&b, &a).await;
    ok(
        &b,
        Request::VaultsCreate {
            name: VaultName::new("fine").expect("name"),
        },
    )
    .await;
    write(&b, "fine", "k", b"v").await.expect("write");
    ok(
        &b,
        Request::VaultsShare {
            vault: "fine".into(),
            to: a.node_id().into(),
        },
    )
    .await;
    ok(
        &a,
        Request::VaultsClone {
            vault: "fine".into(),
            node: b.node_id(),
            follow: false,
        },
    )
    .await;
    assert_eq!(read(&a, "fine", "k").await, b"v");
    a.stop().await;
    b.stop().await;
}
