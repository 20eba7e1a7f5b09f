//! Secrets of any size stream through the store, and big vaults clone, with
//! bounded memory. Alone in their binary (and one at a time) so that nothing
//! else in the process disturbs the samples.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use keynode_core::{SecretPath, VaultName};
use keynode_vaults::{Op, PutPolicy, Remote};
use support::{Node, Noise, Pipe, anon_rss_kib, noise};

mod support;

/// Held by each measurement, so the two never run side by side.
static ALONE: Mutex<()> = Mutex::new(());

#[test]
fn fifty_mib_streams_with_bounded_memory() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let node = Node::new();
    let store = &node.store;
    let v = store.create(&VaultName::new("v").unwrap()).unwrap().id;
    let size = 50 * 1024 * 1024;
    let before = anon_rss_kib();
    let mut peak = before;
    let mut source = Noise {
        left: size,
        state: 7,
    };
    let mut probe = Probe {
        inner: &mut source,
        peak: &mut peak,
        calls: 0,
    };
    let blob = store.write_blob(v, &mut probe).unwrap();
    let path = SecretPath::new("big").unwrap();
    store
        .commit(
            v,
            vec![Op::Put {
                path: path.clone(),
                blob,
                policy: PutPolicy::CreateNew,
            }],
        )
        .unwrap();
    let mut check = Noise {
        left: size,
        state: 7,
    };
    let mut expect = vec![0u8; keynode_vaults::READ_CHUNK];
    let read = store
        .read_secret(v, &path, None, &mut |chunk| {
            peak = peak.max(anon_rss_kib());
            check.read_exact(&mut expect[..chunk.len()])?;
            assert_eq!(chunk, &expect[..chunk.len()]);
            Ok(())
        })
        .unwrap();
    assert_eq!(read, size);
    let grown = peak.saturating_sub(before);
    assert!(grown < 16 * 1024, "peak memory grew by {grown} KiB");
}

/// Samples anonymous memory while the store pulls from a reader.
struct Probe<'a, R> {
    inner: &'a mut R,
    peak: &'a mut u64,
    calls: u64,
}

impl<R: Read> Read for Probe<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls.is_multiple_of(16) {
            *self.peak = (*self.peak).max(anon_rss_kib());
        }
        self.inner.read(buf)
    }
}

/// Size of the vault the memory test clones, in MiB.
const BIG_VAULT_MIB: u64 = 200;

#[test]
fn cloning_a_big_vault_keeps_memory_bounded() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let (owner, client) = (Node::new(), Node::new());
    let v = owner.vault("big");
    // Incompressible secrets, written in a few commits: 1 MiB ones (sent
    // whole) and, for the last 40 MiB, 256 KiB ones (which go through the delta
    // search and its window).
    let mut written = 0u64;
    let mut batch = 0u64;
    while written < BIG_VAULT_MIB << 20 {
        let size: u64 = if written < (BIG_VAULT_MIB - 40) << 20 {
            1 << 20
        } else {
            256 << 10
        };
        let ops = (0..40)
            .map(|i| {
                let mut data = Noise {
                    left: size,
                    state: batch * 1000 + i,
                };
                Op::Put {
                    path: SecretPath::new(&format!("d{batch}/s{i:03}")).unwrap(),
                    blob: owner.store.write_blob(v, &mut data).unwrap(),
                    policy: PutPolicy::CreateNew,
                }
            })
            .collect();
        owner.store.commit(v, ops).unwrap();
        written += 40 * size;
        batch += 1;
    }
    let advert = owner.store.advertise(v).unwrap();
    let t0 = std::time::Instant::now();

    let before = anon_rss_kib();
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(anon_rss_kib(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(8);
    let meta = std::thread::scope(|s| {
        let sender = s.spawn(|| {
            owner
                .store
                .send_pack(v, &advert.head, &[], &mut move |chunk| {
                    tx.send(chunk.to_vec()).map_err(io::Error::other)
                })
        });
        let remote = Remote {
            node: owner.id,
            vault: v,
        };
        let mut pipe = Pipe {
            rx,
            chunk: Vec::new(),
            at: 0,
        };
        let meta = client
            .store
            .receive_clone(&advert.name, remote, &advert.head, &mut pipe);
        // A receiver that failed stops reading: close the pipe so the sender
        // fails too instead of waiting forever.
        drop(pipe);
        let meta = meta.unwrap();
        let stats = sender.join().unwrap().unwrap();
        assert!(stats.bytes > BIG_VAULT_MIB << 20);
        meta
    });
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let grown = peak.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!(
        "cloning {BIG_VAULT_MIB} MiB grew anonymous memory by {grown} KiB in {:?}",
        t0.elapsed()
    );
    assert!(grown < 64 * 1024, "anonymous memory grew by {grown} KiB");
    assert_eq!(client.head(meta.id), advert.head);
    let path = SecretPath::new("d3/s039").unwrap();
    let mut got = Vec::new();
    client
        .store
        .read_secret(meta.id, &path, None, &mut |c| {
            got.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
    assert_eq!(got, noise(1 << 20, 3 * 1000 + 39));
}
