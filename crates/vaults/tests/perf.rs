//! Performance checks against the targets (run with `--ignored --test-threads=1`;
//! numbers printed with `--nocapture`). Debug builds understate throughput.

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use keynode_core::{Keypair, SecretPath, VaultName};
use keynode_vaults::{Env, Op, PutPolicy, VaultStore};

#[allow(unsafe_code)]
fn open_env(dir: &Path) -> Env {
    let mut opts = heed::EnvOpenOptions::new().read_txn_without_tls();
    opts.max_dbs(16).map_size(1 << 30);
    // SAFETY: a fresh directory, opened once, private to this test.
    unsafe { opts.open(dir).unwrap() }
}

fn store() -> (tempfile::TempDir, VaultStore) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("db")).unwrap();
    let env = open_env(&tmp.path().join("db"));
    let store = VaultStore::open(
        &tmp.path().join("vaults"),
        env,
        Keypair::generate().node_id(),
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
#[ignore = "performance check"]
fn single_secret_commits_per_second() {
    let (_tmp, store) = store();
    let v = store.create(&VaultName::new("v").unwrap()).unwrap().id;
    let n = 500;
    let start = Instant::now();
    for i in 0..n {
        let blob = store
            .write_blob(v, &mut format!("secret {i}").as_bytes())
            .unwrap();
        let path = SecretPath::new(&format!("s{}", i % 50)).unwrap();
        store
            .commit(
                v,
                vec![Op::Put {
                    path,
                    blob,
                    policy: PutPolicy::Overwrite,
                }],
            )
            .unwrap();
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    println!("{rate:.0} commits/s");
}

#[test]
#[ignore = "performance check"]
fn list_a_directory_of_ten_thousand_secrets() {
    let (_tmp, store) = store();
    let v = store.create(&VaultName::new("v").unwrap()).unwrap().id;
    let start = Instant::now();
    let ops: Vec<Op> = (0..10_000)
        .map(|i| Op::Put {
            path: SecretPath::new(&format!("big/secret-{i:05}")).unwrap(),
            blob: store
                .write_blob(v, &mut format!("value {i}").as_bytes())
                .unwrap(),
            policy: PutPolicy::CreateNew,
        })
        .collect();
    store.commit(v, ops).unwrap();
    println!(
        "import of 10,000 secrets in one commit: {:?}",
        start.elapsed()
    );
    let dir = SecretPath::new("big").unwrap();
    for _ in 0..3 {
        let start = Instant::now();
        let entries = store.list_secrets(v, Some(&dir), None).unwrap();
        println!("list 10,000: {:?}", start.elapsed());
        assert_eq!(entries.len(), 10_000);
    }
    let start = Instant::now();
    for i in 0..50 {
        let blob = store.write_blob(v, &mut &b"x"[..]).unwrap();
        let path = SecretPath::new(&format!("big/secret-{i:05}")).unwrap();
        store
            .commit(
                v,
                vec![Op::Put {
                    path,
                    blob,
                    policy: PutPolicy::Overwrite,
                }],
            )
            .unwrap();
    }
    println!(
        "commit into the 10,000 dir: {:?} each",
        start.elapsed() / 50
    );
}

#[test]
#[ignore = "performance check"]
fn fifty_mib_streams_with_bounded_memory() {
    let (_tmp, store) = store();
    let v = store.create(&VaultName::new("v").unwrap()).unwrap().id;
    let size = 50 * 1024 * 1024;
    let before = anon_rss_kib();
    let mut peak = before;
    let start = Instant::now();
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
    println!(
        "write 50 MiB: {:?}, peak anon RSS +{} KiB",
        start.elapsed(),
        peak - before
    );
    let start = Instant::now();
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
    println!("read 50 MiB: {:?}", start.elapsed());
    assert_eq!(read, size);
    let grown = peak.saturating_sub(before);
    println!("peak anon RSS grew by {grown} KiB");
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
