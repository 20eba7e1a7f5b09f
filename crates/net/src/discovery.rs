//! Finding a node by its NodeId: the record a node publishes about itself,
//! and the seam a directory plugs into ([`Discovery`]: the Mainline DHT in
//! [`crate::dht`], memory in tests).
//!
//! A record only ever says where to try: an address from it is dialed like
//! any other and the Noise handshake proves who answers, so a false record
//! costs a failed dial, never a wrong peer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::BoxFuture;
use keynode_core::{Keypair, NodeId, Signature};
use serde::{Deserialize, Serialize};

use crate::book::PeerAddress;

/// Most direct addresses a record carries (more are ignored).
pub const MAX_RECORD_ADDRESSES: usize = 8;

/// Most relays a record carries (more are ignored).
pub const MAX_RECORD_RELAYS: usize = 4;

/// Longest host name accepted from a record, in bytes.
pub const MAX_RECORD_HOST: usize = 253;

/// Domain of the signature a renewed node's new key makes over the pointer
/// from its old NodeId to its new one.
pub const RENEWAL_POINTER_DOMAIN: &[u8] = b"keynode/1 renewal pointer";

/// A relay a node keeps a reservation at: dial it there, then ask it for the
/// node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RelayAddress {
    /// The relay's NodeId (its handshake must prove it).
    pub node: NodeId,
    /// Where the relay listens.
    pub address: PeerAddress,
}

impl std::fmt::Display for RelayAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.node, self.address)
    }
}

/// A relay list could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("bad relay {0:?}: expected NODE_ID@HOST:PORT")]
pub struct RelayParseError(pub String);

impl std::str::FromStr for RelayAddress {
    type Err = RelayParseError;

    /// `NODE_ID@HOST:PORT` (an IPv6 host in brackets).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RelayParseError(s.to_owned());
        let (node, addr) = s.split_once('@').ok_or_else(bad)?;
        let node: NodeId = node.trim().parse().map_err(|_| bad())?;
        let address = parse_host_port(addr.trim()).ok_or_else(bad)?;
        Ok(Self { node, address })
    }
}

/// Parses `HOST:PORT` or `[IPV6]:PORT` (a non-zero port, a host of at most
/// [`MAX_RECORD_HOST`] bytes without spaces or control characters).
pub fn parse_host_port(s: &str) -> Option<PeerAddress> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        (host, port)
    } else {
        s.rsplit_once(':')?
    };
    let port: u16 = port.parse().ok()?;
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_');
    if port == 0 || host.is_empty() || host.len() > MAX_RECORD_HOST || !host.chars().all(fine) {
        return None;
    }
    Some(PeerAddress::new(host, port))
}

/// "The node that was `old` is `new` now", with the new key's signature; the
/// record carrying it is signed by the old key, so both keys vouch for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalPointer {
    /// The NodeId the node has now.
    pub new: NodeId,
    /// The new key's signature over [`RenewalPointer::message`].
    pub signature: Signature,
}

impl RenewalPointer {
    /// What the new key signs: the domain, the old NodeId, the new one.
    pub fn message(old: NodeId, new: NodeId) -> Vec<u8> {
        let mut m = RENEWAL_POINTER_DOMAIN.to_vec();
        m.extend_from_slice(old.as_bytes());
        m.extend_from_slice(new.as_bytes());
        m
    }

    /// The pointer from `old` to `new_key`'s NodeId.
    pub fn sign(old: NodeId, new_key: &Keypair) -> Self {
        let new = new_key.node_id();
        Self {
            new,
            signature: new_key.sign(&Self::message(old, new)),
        }
    }

    /// Whether the new key really signed this pointer away from `old`.
    pub fn verify(&self, old: NodeId) -> bool {
        self.new != old
            && self
                .new
                .verify(&Self::message(old, self.new), &self.signature)
                .is_ok()
    }
}

/// What a node publishes about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Where it listens (at most [`MAX_RECORD_ADDRESSES`]).
    pub addresses: Vec<PeerAddress>,
    /// Relays it keeps a reservation at (at most [`MAX_RECORD_RELAYS`]).
    pub relays: Vec<RelayAddress>,
    /// Set on the record of a key that was renewed: where the node went.
    pub renewed_to: Option<RenewalPointer>,
}

impl NodeRecord {
    /// Whether the record says nothing at all.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.relays.is_empty() && self.renewed_to.is_none()
    }
}

/// A directory failed (the caller goes on without it).
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The directory could not be reached or did not answer in time.
    #[error("the directory is unreachable: {0}")]
    Unreachable(String),
    /// The record could not be made (too large for the directory, say).
    #[error("cannot publish the record: {0}")]
    Publish(String),
}

/// Where nodes publish their [`NodeRecord`]s and look up each other's.
///
/// Each node has its own: it publishes under the key it was made with.
pub trait Discovery: Send + Sync + 'static {
    /// Publishes this node's record, replacing the one before.
    fn publish(&self, record: NodeRecord) -> BoxFuture<'static, Result<(), DiscoveryError>>;

    /// The record `node` published, if any. `fresh` skips any cache (the
    /// addresses it gave did not work).
    fn resolve(
        &self,
        node: NodeId,
        fresh: bool,
    ) -> BoxFuture<'static, Result<Option<NodeRecord>, DiscoveryError>>;

    /// Publishes a record another key signed (the old key's pointer to a
    /// renewed node, signed when the key was renewed): `packet` is a whole
    /// signed packet (key, signature, timestamp, DNS), checked first. The
    /// default publishes nothing.
    fn publish_packet(
        &self,
        node: NodeId,
        packet: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), DiscoveryError>> {
        let _ = (node, packet);
        Box::pin(async { Ok(()) })
    }
}

/// An in-process directory shared by clones: for tests and simulations.
#[derive(Debug, Clone, Default)]
pub struct MemoryDirectory {
    records: Arc<Mutex<HashMap<NodeId, NodeRecord>>>,
}

impl MemoryDirectory {
    /// A new, empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// The [`Discovery`] of the node with `node`'s id in this directory.
    pub fn discovery(&self, node: NodeId) -> Arc<dyn Discovery> {
        Arc::new(MemoryDiscovery {
            node,
            directory: self.clone(),
        })
    }

    /// What `node` published last.
    pub fn get(&self, node: NodeId) -> Option<NodeRecord> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node)
            .cloned()
    }

    fn put(&self, node: NodeId, record: NodeRecord) {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node, record);
    }
}

struct MemoryDiscovery {
    node: NodeId,
    directory: MemoryDirectory,
}

impl Discovery for MemoryDiscovery {
    fn publish(&self, record: NodeRecord) -> BoxFuture<'static, Result<(), DiscoveryError>> {
        self.directory.put(self.node, record);
        Box::pin(async { Ok(()) })
    }

    fn resolve(
        &self,
        node: NodeId,
        _fresh: bool,
    ) -> BoxFuture<'static, Result<Option<NodeRecord>, DiscoveryError>> {
        let found = self.directory.get(node);
        Box::pin(async move { Ok(found) })
    }

    fn publish_packet(
        &self,
        node: NodeId,
        packet: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), DiscoveryError>> {
        let decoded = packet
            .get(32..)
            .filter(|_| packet.get(..32) == Some(node.as_bytes().as_slice()))
            .ok_or(crate::dht::RecordError::ForeignKey)
            .and_then(|payload| crate::dht::decode_payload(node, payload));
        let result = match decoded {
            Ok(record) => {
                self.directory.put(node, record);
                Ok(())
            }
            Err(e) => Err(DiscoveryError::Publish(e.to_string())),
        };
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_addresses_parse_and_print() {
        let id = Keypair::generate().node_id();
        let r: RelayAddress = format!("{id}@relay.example:4400").parse().unwrap();
        assert_eq!(r.node, id);
        assert_eq!(r.address, PeerAddress::new("relay.example", 4400));
        assert_eq!(r.to_string().parse::<RelayAddress>().unwrap(), r);
        let v6: RelayAddress = format!("{id}@[::1]:7").parse().unwrap();
        assert_eq!(v6.address, PeerAddress::new("::1", 7));
        for bad in [
            "nope".to_owned(),
            format!("{id}@host"),
            format!("{id}@host:0"),
            format!("{id}@ho st:1"),
            format!("{id}@[nope]:1"),
            "zz@host:1".to_owned(),
            format!("{id}@{}:1", "a".repeat(300)),
        ] {
            assert!(bad.parse::<RelayAddress>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_renewal_pointer_verifies_only_for_its_old_id_and_new_key() {
        let old = Keypair::generate();
        let new = Keypair::generate();
        let p = RenewalPointer::sign(old.node_id(), &new);
        assert!(p.verify(old.node_id()));
        assert!(!p.verify(Keypair::generate().node_id()));
        let mut forged = p.clone();
        forged.new = Keypair::generate().node_id();
        assert!(!forged.verify(old.node_id()));
        // A key cannot point at itself.
        assert!(!RenewalPointer::sign(new.node_id(), &new).verify(new.node_id()));
    }
}
