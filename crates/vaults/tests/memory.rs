//! Secrets of any size stream through the store with bounded memory.

use std::io::Read;
use std::path::Path;

use keynode_core::{Keypair, SecretPath, VaultName};
use keynode_vaults::{Env, Op, PutPolicy, VaultStore};

fn open_env(dir: &Path) -> Env {
    keynode_core::store::open_env(dir, &key(), 1 << 30, 16).expect("env")
}

/// The data key of every store here.
fn key() -> keynode_core::datakey::DataKey {
    keynode_core::datakey::DataKey::from_bytes([7; 32])
}

fn store() -> (tempfile::TempDir, VaultStore) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("db")).unwrap();
    let env = open_env(&tmp.path().join("db"));
    let store = VaultStore::open(
        &tmp.path().join("vaults"),
        env,
        Keypair::generate().node_id(),
        &key(),
    )
    .unwrap();
    (tmp, store)
}

/// Anonymous (heap) resident memory: file-backed pages, such as libgit2's mmap
/// of a loose object, are page cache and do not count.
fn anon_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// An endless-looking reader of `left` pseudo-random bytes that holds no buffer.
struct Noise {
    left: u64,
    state: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left as usize);
        for b in &mut buf[..n] {
            self.state = self
                .state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (self.state >> 56) as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[test]
fn fifty_mib_streams_with_bounded_memory() {
    let (_tmp, store) = store();
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
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.calls += 1;
        if self.calls.is_multiple_of(16) {
            *self.peak = (*self.peak).max(anon_rss_kib());
        }
        self.inner.read(buf)
    }
}
