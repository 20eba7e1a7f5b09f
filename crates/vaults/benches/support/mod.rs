//! What the vault benchmarks share: secret contents and a clone streamed from
//! one thread into another.

use std::io::{self, Read};
use std::sync::mpsc;

use keynode_core::{NodeId, VaultId};
use keynode_vaults::{Remote, VaultStore};

/// A secret's content: a key=value line and some pseudo-random hex (~130 B).
pub fn value(i: usize, version: usize) -> Vec<u8> {
    let mut state = (i as u64) << 20 | version as u64;
    let mut out = format!("secret {i} version {version}\n").into_bytes();
    for _ in 0..48 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(format!("{:02x}", (state >> 56) as u8).as_bytes());
    }
    out
}

/// The reading end of a bounded pipe of chunks.
struct Pipe {
    rx: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => (self.chunk, self.at) = (chunk, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A whole clone, as the agent does it: advert, then the pack streamed from a
/// sending thread into the receiving store. Returns the clone's id.
pub fn clone(server: &VaultStore, node: NodeId, v: VaultId, client: &VaultStore) -> VaultId {
    let advert = server.advertise(v).expect("advert");
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(16);
    std::thread::scope(|s| {
        let sender = s.spawn(|| {
            server.send_pack(v, &advert.head, &[], &mut move |chunk| {
                tx.send(chunk.to_vec()).map_err(io::Error::other)
            })
        });
        let mut pipe = Pipe {
            rx,
            chunk: Vec::new(),
            at: 0,
        };
        let remote = Remote { node, vault: v };
        let meta = client.receive_clone(&advert.name, remote, &advert.head, &mut pipe);
        drop(pipe);
        let meta = meta.expect("clone");
        sender.join().expect("sender").expect("send");
        meta.id
    })
}
