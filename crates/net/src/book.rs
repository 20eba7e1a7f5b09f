//! The address book: where each known node can be dialed, kept in LMDB.

use std::fmt;

use keynode_core::store::heed3::types::Bytes;
use keynode_core::store::heed3::{self, CommitOrAbort, EncryptedDatabase};
use keynode_core::{NodeId, codec};
use serde::{Deserialize, Serialize};

/// Name of the LMDB database holding the address book.
pub const NODES_DB: &str = "net.nodes";

/// Name of the LMDB database holding where each address came from and when
/// it last worked: NodeId → encoded `Vec<(PeerAddress, AddressInfo)>`.
pub const ADDRESS_INFO_DB: &str = "net.address_info";

/// Most addresses remembered per node; adding more forgets the oldest.
pub const MAX_ADDRESSES_PER_NODE: usize = 8;

/// Longest host name accepted, in bytes (DNS's limit).
pub const MAX_HOST_LEN: usize = 253;

/// The LMDB environment of a node: its one encrypted environment
/// ([`keynode_core::store::open_env`]).
pub use keynode_core::store::Env;

/// The address book could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BookError {
    /// LMDB failed.
    #[error("address book storage failed")]
    Storage(#[from] heed3::Error),
    /// A stored entry does not decode.
    #[error("malformed address book entry")]
    Codec(#[from] codec::CodecError),
    /// The host is empty or too long.
    #[error("invalid host {0:?}")]
    InvalidHost(String),
}

/// Where a node listens: a host name or IP literal and a TCP port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerAddress {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl PeerAddress {
    /// An address; the host is checked when it is added to the book.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }
}

impl From<std::net::SocketAddr> for PeerAddress {
    fn from(addr: std::net::SocketAddr) -> Self {
        Self::new(addr.ip().to_string(), addr.port())
    }
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where an address came from. New kinds are only ever added at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddressSource {
    /// Recorded before keynode kept sources.
    Earlier,
    /// Typed by a person (`nodes add`).
    Typed,
    /// A seed node of the configuration (`--seed-nodes`).
    Seed,
    /// Learned from another record (a peer's renewed key inherits the old
    /// key's addresses).
    Learned,
    /// Found in the node's record on the DHT, and worked.
    Dht,
}

impl AddressSource {
    /// Its name in listings: `earlier`, `typed`, `seed`, `learned`, `dht`.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressSource::Earlier => "earlier",
            AddressSource::Typed => "typed",
            AddressSource::Seed => "seed",
            AddressSource::Learned => "learned",
            AddressSource::Dht => "dht",
        }
    }
}

/// Where an address came from and when it last worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressInfo {
    /// Where it came from.
    pub source: AddressSource,
    /// When it was recorded (milliseconds since the Unix epoch; 0 if earlier).
    pub added_ms: u64,
    /// When a connection through it last completed its handshake.
    pub last_ok_ms: Option<u64>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A node and its addresses, latest first, each with its [`AddressInfo`].
pub type NodeAddresses = (NodeId, Vec<(PeerAddress, AddressInfo)>);

/// NodeId → addresses (latest first), one LMDB transaction per call.
#[derive(Clone)]
pub struct AddressBook {
    env: Env,
    db: EncryptedDatabase<'static, Bytes, Bytes>,
    info: EncryptedDatabase<'static, Bytes, Bytes>,
}

impl fmt::Debug for AddressBook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddressBook").finish_non_exhaustive()
    }
}

impl AddressBook {
    /// Opens (creating if needed) the [`NODES_DB`] and [`ADDRESS_INFO_DB`]
    /// databases in `env`.
    pub fn open(env: Env) -> Result<Self, BookError> {
        let wtxn = env.write_txn()?;
        let created = env.create_databases_and_commit(wtxn, |opener, wtxn| {
            let db: EncryptedDatabase<'_, Bytes, Bytes> =
                opener.create_database(wtxn, Some(NODES_DB))?;
            let info: EncryptedDatabase<'_, Bytes, Bytes> =
                opener.create_database(wtxn, Some(ADDRESS_INFO_DB))?;
            Ok::<_, heed3::Error>(CommitOrAbort::<_, ()>::Commit((db, info)))
        })?;
        let CommitOrAbort::Commit((db, info)) = created else {
            return Err(
                heed3::Error::Io(std::io::Error::other("address book was not created")).into(),
            );
        };
        Ok(Self { env, db, info })
    }

    /// Records `addr` for `node` as its latest address (moving it to the front if
    /// known already), typed by a person.
    pub fn add(&self, node: NodeId, addr: PeerAddress) -> Result<(), BookError> {
        self.add_from(node, addr, AddressSource::Typed)
    }

    /// Records `addr` for `node` as its latest address, from `source`. A
    /// typed or seed address keeps that source when it is learned again.
    pub fn add_from(
        &self,
        node: NodeId,
        addr: PeerAddress,
        source: AddressSource,
    ) -> Result<(), BookError> {
        if addr.host.is_empty() || addr.host.len() > MAX_HOST_LEN {
            return Err(BookError::InvalidHost(addr.host));
        }
        let mut wtxn = self.env.write_txn()?;
        let mut addrs: Vec<PeerAddress> = match self.db.get(&mut wtxn, node.as_bytes())? {
            Some(bytes) => codec::decode(bytes)?,
            None => Vec::new(),
        };
        let mut info: Vec<(PeerAddress, AddressInfo)> =
            match self.info.get(&mut wtxn, node.as_bytes())? {
                Some(bytes) => codec::decode(bytes)?,
                None => Vec::new(),
            };
        let earlier = info.iter().find(|(a, _)| a == &addr).map(|(_, i)| *i);
        let kept = match earlier {
            Some(i) if source == AddressSource::Learned => i,
            Some(i) => AddressInfo { source, ..i },
            None => AddressInfo {
                source,
                added_ms: now_ms(),
                last_ok_ms: None,
            },
        };
        addrs.retain(|a| a != &addr);
        addrs.insert(0, addr.clone());
        addrs.truncate(MAX_ADDRESSES_PER_NODE);
        info.retain(|(a, _)| a != &addr && addrs.contains(a));
        info.insert(0, (addr, kept));
        self.db
            .put(&mut wtxn, node.as_bytes(), &codec::encode(&addrs)?)?;
        self.info
            .put(&mut wtxn, node.as_bytes(), &codec::encode(&info)?)?;
        wtxn.commit()?;
        Ok(())
    }

    /// Notes that a connection to `node` through `addr` completed its
    /// handshake at `at_ms`.
    pub fn mark_ok(&self, node: NodeId, addr: &PeerAddress, at_ms: u64) -> Result<(), BookError> {
        let mut wtxn = self.env.write_txn()?;
        let addrs: Vec<PeerAddress> = match self.db.get(&mut wtxn, node.as_bytes())? {
            Some(bytes) => codec::decode(bytes)?,
            None => return Ok(()),
        };
        if !addrs.contains(addr) {
            return Ok(());
        }
        let mut info: Vec<(PeerAddress, AddressInfo)> =
            match self.info.get(&mut wtxn, node.as_bytes())? {
                Some(bytes) => codec::decode(bytes)?,
                None => Vec::new(),
            };
        match info.iter_mut().find(|(a, _)| a == addr) {
            Some((_, i)) => i.last_ok_ms = Some(at_ms),
            None => info.push((
                addr.clone(),
                AddressInfo {
                    source: AddressSource::Earlier,
                    added_ms: 0,
                    last_ok_ms: Some(at_ms),
                },
            )),
        }
        self.info
            .put(&mut wtxn, node.as_bytes(), &codec::encode(&info)?)?;
        wtxn.commit()?;
        Ok(())
    }

    /// The addresses of `node`, latest first, each with where it came from
    /// and when it last worked.
    pub fn info(&self, node: NodeId) -> Result<Vec<(PeerAddress, AddressInfo)>, BookError> {
        let addrs = self.get(node)?;
        let mut rtxn = self.env.read_txn()?;
        let info: Vec<(PeerAddress, AddressInfo)> =
            match self.info.get(&mut rtxn, node.as_bytes())? {
                Some(bytes) => codec::decode(bytes)?,
                None => Vec::new(),
            };
        Ok(addrs
            .into_iter()
            .map(|a| {
                let i = info
                    .iter()
                    .find(|(b, _)| *b == a)
                    .map(|(_, i)| *i)
                    .unwrap_or(AddressInfo {
                        source: AddressSource::Earlier,
                        added_ms: 0,
                        last_ok_ms: None,
                    });
                (a, i)
            })
            .collect())
    }

    /// The addresses of `node`, latest first (empty if unknown).
    pub fn get(&self, node: NodeId) -> Result<Vec<PeerAddress>, BookError> {
        let mut rtxn = self.env.read_txn()?;
        Ok(match self.db.get(&mut rtxn, node.as_bytes())? {
            Some(bytes) => codec::decode(bytes)?,
            None => Vec::new(),
        })
    }

    /// Every known node with its addresses, by NodeId.
    pub fn list(&self) -> Result<Vec<(NodeId, Vec<PeerAddress>)>, BookError> {
        let mut rtxn = self.env.read_txn()?;
        let mut out = Vec::new();
        for item in self.db.iter(&mut rtxn)? {
            let (key, value) = item?;
            let id: [u8; 32] = key
                .try_into()
                .map_err(|_| codec::CodecError::Trailing(key.len()))?;
            let Ok(node) = NodeId::from_bytes(id) else {
                continue;
            };
            out.push((node, codec::decode(value)?));
        }
        Ok(out)
    }

    /// Every known node with its addresses and their [`AddressInfo`].
    pub fn list_info(&self) -> Result<Vec<NodeAddresses>, BookError> {
        self.list()?
            .into_iter()
            .map(|(node, _)| Ok((node, self.info(node)?)))
            .collect()
    }

    /// Forgets `node`; returns whether it was known.
    pub fn remove(&self, node: NodeId) -> Result<bool, BookError> {
        let mut wtxn = self.env.write_txn()?;
        let existed = self.db.delete(&mut wtxn, node.as_bytes())?;
        self.info.delete(&mut wtxn, node.as_bytes())?;
        wtxn.commit()?;
        Ok(existed)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use keynode_core::Keypair;

    /// A fresh LMDB env in a temporary directory.
    pub(crate) fn env() -> (tempfile::TempDir, Env) {
        let tmp = tempfile::tempdir().unwrap();
        let key = keynode_core::datakey::DataKey::from_bytes([7; 32]);
        let env = keynode_core::store::open_env(tmp.path(), &key, 1 << 24, 16).unwrap();
        (tmp, env)
    }

    #[test]
    fn add_get_list_remove() {
        let (_tmp, env) = env();
        let book = AddressBook::open(env.clone()).unwrap();
        let a = Keypair::generate().node_id();
        let b = Keypair::generate().node_id();
        assert!(book.get(a).unwrap().is_empty());
        book.add(a, PeerAddress::new("10.0.0.1", 1)).unwrap();
        book.add(a, PeerAddress::new("host.example", 2)).unwrap();
        book.add(a, PeerAddress::new("10.0.0.1", 1)).unwrap();
        assert_eq!(
            book.get(a).unwrap(),
            vec![
                PeerAddress::new("10.0.0.1", 1),
                PeerAddress::new("host.example", 2)
            ]
        );
        for port in 0..20 {
            book.add(b, PeerAddress::new("::1", port)).unwrap();
        }
        assert_eq!(book.get(b).unwrap().len(), MAX_ADDRESSES_PER_NODE);
        assert_eq!(book.get(b).unwrap()[0].to_string(), "[::1]:19");
        assert_eq!(book.list().unwrap().len(), 2);
        assert!(book.remove(a).unwrap());
        assert!(!book.remove(a).unwrap());
        assert!(book.add(a, PeerAddress::new("", 1)).is_err());
        // Reopening sees the same data.
        let again = AddressBook::open(env).unwrap();
        assert_eq!(again.list().unwrap().len(), 1);
    }

    #[test]
    fn each_address_keeps_its_source_and_when_it_last_worked() {
        let (_tmp, env) = env();
        let book = AddressBook::open(env).unwrap();
        let a = Keypair::generate().node_id();
        let typed = PeerAddress::new("10.0.0.1", 1);
        let seed = PeerAddress::new("10.0.0.2", 2);
        book.add(a, typed.clone()).unwrap();
        book.add_from(a, seed.clone(), AddressSource::Seed).unwrap();
        // Learned again, a typed address stays typed.
        book.add_from(a, typed.clone(), AddressSource::Learned)
            .unwrap();
        book.mark_ok(a, &seed, 42).unwrap();
        // An address not in the book is not recorded.
        book.mark_ok(a, &PeerAddress::new("10.9.9.9", 9), 43)
            .unwrap();
        let info = book.info(a).unwrap();
        assert_eq!(info.len(), 2);
        assert_eq!(info[0].0, typed);
        assert_eq!(info[0].1.source, AddressSource::Typed);
        assert_eq!(info[0].1.last_ok_ms, None);
        assert_eq!(info[1].1.source, AddressSource::Seed);
        assert_eq!(info[1].1.last_ok_ms, Some(42));
        // Forgotten addresses take their info with them.
        for port in 10..20 {
            book.add(a, PeerAddress::new("::1", port)).unwrap();
        }
        assert!(book.info(a).unwrap().iter().all(|(p, _)| p.host == "::1"));
        assert!(book.remove(a).unwrap());
        assert!(book.info(a).unwrap().is_empty());
    }
}
