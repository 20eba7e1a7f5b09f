//! What the vault tests share: an env, a data key, deterministic noise, a
//! bounded pipe and a memory probe.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{self, Read};
use std::path::Path;
use std::sync::mpsc;

use keynode_core::{Keypair, NodeId, VaultId, VaultName};
use keynode_vaults::{Env, VaultStore};
use tempfile::TempDir;

pub fn open_env(dir: &Path) -> Env {
    keynode_core::store::open_env(dir, &key(), 1 << 30, 16).expect("env")
}

/// The data key of every store here.
pub fn key() -> keynode_core::datakey::DataKey {
    keynode_core::datakey::DataKey::from_bytes([7; 32])
}

/// A deterministic, incompressible byte stream of `left` bytes.
pub struct Noise {
    pub left: u64,
    pub state: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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

pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    Noise {
        left: len as u64,
        state: seed,
    }
    .read_to_end(&mut out)
    .unwrap();
    out
}

/// Anonymous (heap) resident memory of this process, in KiB: file-backed
/// pages, such as libgit2's mmap of a loose object, are page cache and do not
/// count. Panics where it cannot be measured: a memory test that measures
/// nothing must fail, not pass.
pub fn anon_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status is readable: memory cannot be measured here");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/self/status: memory cannot be measured here")
}

/// The reading end of a bounded pipe of chunks.
pub struct Pipe {
    pub rx: mpsc::Receiver<Vec<u8>>,
    pub chunk: Vec<u8>,
    pub at: usize,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// One node's vault store.
pub struct Node {
    pub tmp: TempDir,
    pub id: NodeId,
    pub store: VaultStore,
}

impl Node {
    pub fn new() -> Node {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("db")).unwrap();
        let env = open_env(&tmp.path().join("db"));
        let id = Keypair::generate().node_id();
        let store = VaultStore::open(&tmp.path().join("vaults"), env, id, &key()).unwrap();
        Node { tmp, id, store }
    }

    pub fn vault(&self, name: &str) -> VaultId {
        self.store
            .create(&VaultName::new(name).unwrap())
            .unwrap()
            .id
    }

    pub fn head(&self, v: VaultId) -> String {
        self.store.log(v, Some(1), None).unwrap()[0].oid.clone()
    }
}
