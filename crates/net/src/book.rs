//! The address book: where each known node can be dialed, kept in LMDB.

use std::fmt;

use keynode_core::store::heed3::types::Bytes;
use keynode_core::store::heed3::{self, CommitOrAbort, EncryptedDatabase};
use keynode_core::{NodeId, codec};
use serde::{Deserialize, Serialize};

/// Name of the LMDB database holding the address book.
pub const NODES_DB: &str = "net.nodes";

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

/// NodeId → addresses (latest first), one LMDB transaction per call.
#[derive(Clone)]
pub struct AddressBook {
    env: Env,
    db: EncryptedDatabase<'static, Bytes, Bytes>,
}

impl fmt::Debug for AddressBook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddressBook").finish_non_exhaustive()
    }
}

impl AddressBook {
    /// Opens (creating if needed) the [`NODES_DB`] database in `env`.
    pub fn open(env: Env) -> Result<Self, BookError> {
        let wtxn = env.write_txn()?;
        let created = env.create_databases_and_commit(wtxn, |opener, wtxn| {
            let db: EncryptedDatabase<'_, Bytes, Bytes> =
                opener.create_database(wtxn, Some(NODES_DB))?;
            Ok::<_, heed3::Error>(CommitOrAbort::<_, ()>::Commit(db))
        })?;
        let CommitOrAbort::Commit(db) = created else {
            return Err(
                heed3::Error::Io(std::io::Error::other("address book was not created")).into(),
            );
        };
        Ok(Self { env, db })
    }

    /// Records `addr` for `node` as its latest address (moving it to the front if
    /// known already).
    pub fn add(&self, node: NodeId, addr: PeerAddress) -> Result<(), BookError> {
        if addr.host.is_empty() || addr.host.len() > MAX_HOST_LEN {
            return Err(BookError::InvalidHost(addr.host));
        }
        let mut wtxn = self.env.write_txn()?;
        let mut addrs: Vec<PeerAddress> = match self.db.get(&mut wtxn, node.as_bytes())? {
            Some(bytes) => codec::decode(bytes)?,
            None => Vec::new(),
        };
        addrs.retain(|a| a != &addr);
        addrs.insert(0, addr);
        addrs.truncate(MAX_ADDRESSES_PER_NODE);
        self.db
            .put(&mut wtxn, node.as_bytes(), &codec::encode(&addrs)?)?;
        wtxn.commit()?;
        Ok(())
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

    /// Forgets `node`; returns whether it was known.
    pub fn remove(&self, node: NodeId) -> Result<bool, BookError> {
        let mut wtxn = self.env.write_txn()?;
        let existed = self.db.delete(&mut wtxn, node.as_bytes())?;
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
}
