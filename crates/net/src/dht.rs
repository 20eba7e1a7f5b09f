//! [`Discovery`] over BitTorrent's Mainline DHT: each node publishes its
//! [`NodeRecord`] as a pkarr signed packet under its own Ed25519 key (a
//! NodeId is exactly such a key), stored as a BEP 44 mutable item through
//! the `mainline` crate, and anyone who knows a NodeId can look it up.
//! Format in `docs/PROTOCOL.md` ("The DHT record").
//!
//! Publishing tells whoever knows the NodeId where the node listens; a node
//! that must not say so runs without it (`--dht off`).

use std::collections::HashMap;
use std::net::{SocketAddrV4, ToSocketAddrs};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use data_encoding::BASE64URL_NOPAD;
use futures::StreamExt;
use futures::future::BoxFuture;
use keynode_core::{Keypair, NodeId, Signature};
use mainline::async_dht::AsyncDht;
use mainline::{Dht, MutableItem};
use pkarr::dns::rdata::{RData, TXT};
use pkarr::{PublicKey, SignedPacket};
use tracing::debug;

use crate::discovery::{
    Discovery, DiscoveryError, MAX_RECORD_ADDRESSES, MAX_RECORD_RELAYS, NodeRecord, RelayAddress,
    RenewalPointer, parse_host_port,
};

/// The DNS name (under the node's key) that holds its keynode record.
pub const RECORD_NAME: &str = "_keynode";

/// The record format this node writes and reads (`v=1`).
pub const RECORD_VERSION: &str = "1";

/// TTL written on each entry of the record, in seconds.
pub const RECORD_TTL: u32 = 300;

/// Shortest and longest a resolved record is cached, in seconds (the
/// record's TTL, clamped).
pub const CACHE_TTL: (u32, u32) = (30, 3600);

/// How long "nobody published a record" is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(10);

/// Bound on one lookup; past it the dial goes on without the DHT.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Fewest DHT nodes that must take a record for its publication to count
/// (BEP 44 stores on the 20 closest; fewer means a young routing table or
/// a thin network, and the publication is tried again soon).
pub const MIN_STORED: u32 = 4;

/// Bound on one publication.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// How a node joins the DHT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DhtSettings {
    /// Nodes to join through (`HOST:PORT`); `None` is the public Mainline
    /// bootstrap (the `mainline` crate's list).
    pub bootstrap: Option<Vec<String>>,
    /// UDP port of this node's DHT socket; `None` picks one.
    pub port: Option<u16>,
}

impl DhtSettings {
    /// Parses `--dht-bootstrap HOST:PORT,…`.
    pub fn with_bootstrap(list: &str) -> Self {
        let nodes = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        Self {
            bootstrap: Some(nodes),
            port: None,
        }
    }
}

/// Why a packet is not a usable record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// Not a valid signed packet (bad signature, bad length, bad DNS).
    #[error("not a valid signed packet")]
    Invalid,
    /// Signed by another key than the NodeId looked up.
    #[error("the record is signed by another key")]
    ForeignKey,
    /// No `_keynode` entry with `v=1`.
    #[error("no keynode record in the packet")]
    NotKeynode,
    /// The record does not fit a signed packet (1000 bytes of DNS).
    #[error("the record is too large: {0}")]
    TooLarge(String),
}

fn signing_key(key: &Keypair) -> pkarr::Keypair {
    pkarr::Keypair::from_secret_key(&key.secret_bytes())
}

/// `record` as a packet signed by `key`: one TXT record at
/// [`RECORD_NAME`], one `key=value` string per entry. Addresses, then
/// relays, are dropped from the end until it fits a packet.
pub fn encode_record(key: &Keypair, record: &NodeRecord) -> Result<SignedPacket, RecordError> {
    let mut record = record.clone();
    record.addresses.truncate(MAX_RECORD_ADDRESSES);
    record.relays.truncate(MAX_RECORD_RELAYS);
    loop {
        match encode_exactly(key, &record) {
            Err(RecordError::TooLarge(_)) if !record.addresses.is_empty() => {
                record.addresses.pop();
            }
            Err(RecordError::TooLarge(_)) if !record.relays.is_empty() => {
                record.relays.pop();
            }
            other => return other,
        }
    }
}

fn encode_exactly(key: &Keypair, record: &NodeRecord) -> Result<SignedPacket, RecordError> {
    let mut entries = vec![format!("v={RECORD_VERSION}")];
    entries.extend(record.addresses.iter().map(|a| format!("a={a}")));
    entries.extend(record.relays.iter().map(|r| format!("r={r}")));
    if let Some(p) = &record.renewed_to {
        entries.push(format!("n={}", p.new));
        entries.push(format!(
            "ns={}",
            BASE64URL_NOPAD.encode(p.signature.as_bytes())
        ));
    }
    let too_large = |e: &dyn std::fmt::Display| RecordError::TooLarge(e.to_string());
    let name = pkarr::dns::Name::new(RECORD_NAME).map_err(|e| too_large(&e))?;
    let mut text = TXT::new();
    // A DNS character string holds at most 255 bytes: a longer entry (a
    // relay with a very long host name) is left out, not the whole record.
    for e in entries.iter().filter(|e| e.len() <= 255) {
        text.add_string(e).map_err(|e| too_large(&e))?;
    }
    SignedPacket::builder()
        .txt(name, text, RECORD_TTL)
        .sign(&signing_key(key))
        .map_err(|e| too_large(&e))
}

/// The record a renewed key leaves behind, as the whole signed packet:
/// signed by `old`, naming `new`'s NodeId with `new`'s signature (see
/// [`RenewalPointer`]), no address. Published by the renewed node (see
/// [`Discovery::publish_packet`]) once it runs under `new`.
pub fn renewal_record(old: &Keypair, new: &Keypair) -> Result<Vec<u8>, RecordError> {
    let record = NodeRecord {
        renewed_to: Some(RenewalPointer::sign(old.node_id(), new)),
        ..NodeRecord::default()
    };
    Ok(encode_record(old, &record)?.as_bytes().to_vec())
}

/// The record in `packet`, which must be signed by `expected`'s key.
///
/// Everything in it is checked: entries that do not parse are skipped, at
/// most [`MAX_RECORD_ADDRESSES`] addresses and [`MAX_RECORD_RELAYS`] relays
/// are kept, and a renewal pointer counts only if the new key signed it.
pub fn decode_record(expected: NodeId, packet: &SignedPacket) -> Result<NodeRecord, RecordError> {
    if packet.public_key().as_bytes() != expected.as_bytes() {
        return Err(RecordError::ForeignKey);
    }
    let mut record = NodeRecord::default();
    let mut versioned = false;
    let mut new: Option<NodeId> = None;
    let mut new_sig: Option<Signature> = None;
    for rr in packet.resource_records(RECORD_NAME) {
        let RData::TXT(t) = &rr.rdata else { continue };
        for (k, v) in t.iter_raw() {
            let (Ok(k), Some(Ok(v))) = (std::str::from_utf8(k), v.map(std::str::from_utf8)) else {
                continue;
            };
            match k {
                "v" => versioned |= v == RECORD_VERSION,
                "a" if record.addresses.len() < MAX_RECORD_ADDRESSES => {
                    if let Some(a) = parse_host_port(v)
                        && !record.addresses.contains(&a)
                    {
                        record.addresses.push(a);
                    }
                }
                "r" if record.relays.len() < MAX_RECORD_RELAYS => {
                    if let Ok(r) = v.parse::<RelayAddress>()
                        && r.node != expected
                        && !record.relays.contains(&r)
                    {
                        record.relays.push(r);
                    }
                }
                "n" => new = v.parse().ok(),
                "ns" => {
                    new_sig = BASE64URL_NOPAD
                        .decode(v.as_bytes())
                        .ok()
                        .and_then(|b| <[u8; 64]>::try_from(b).ok())
                        .map(Signature::from_bytes);
                }
                _ => {}
            }
        }
    }
    if !versioned {
        return Err(RecordError::NotKeynode);
    }
    if let (Some(new), Some(signature)) = (new, new_sig) {
        let pointer = RenewalPointer { new, signature };
        if pointer.verify(expected) {
            record.renewed_to = Some(pointer);
        } else {
            debug!(node = %expected, "a renewal pointer in a DHT record does not verify; ignored");
        }
    }
    Ok(record)
}

/// [`decode_record`] from the bytes a DHT node or relay hands over (the
/// packet without its key: signature, timestamp, DNS packet), for `expected`.
pub fn decode_payload(expected: NodeId, payload: &[u8]) -> Result<NodeRecord, RecordError> {
    let key = PublicKey::try_from(expected.as_bytes()).map_err(|_| RecordError::Invalid)?;
    let packet = SignedPacket::from_relay_payload(&key, &bytes::Bytes::copy_from_slice(payload))
        .map_err(|_| RecordError::Invalid)?;
    decode_record(expected, &packet)
}

type Cached = (Option<NodeRecord>, Instant);

/// `bytes` (a whole signed packet: key, signature, timestamp, DNS) as a
/// packet of `node`'s that holds a keynode record.
fn verified_packet(node: NodeId, bytes: &[u8]) -> Result<SignedPacket, DiscoveryError> {
    let bad = |e: RecordError| DiscoveryError::Publish(e.to_string());
    if bytes.get(..32) != Some(node.as_bytes().as_slice()) {
        return Err(bad(RecordError::ForeignKey));
    }
    let key = PublicKey::try_from(node.as_bytes()).map_err(|_| bad(RecordError::Invalid))?;
    let packet =
        SignedPacket::from_relay_payload(&key, &bytes::Bytes::copy_from_slice(&bytes[32..]))
            .map_err(|_| bad(RecordError::Invalid))?;
    decode_record(node, &packet).map_err(bad)?;
    Ok(packet)
}

/// The signed packet a DHT item carries, if it verifies for `node`.
fn packet_of(node: NodeId, item: &MutableItem) -> Option<SignedPacket> {
    if item.key() != node.as_bytes() || item.salt().is_some() || item.seq() < 0 {
        return None;
    }
    let mut payload = Vec::with_capacity(72 + item.value().len());
    payload.extend_from_slice(item.signature());
    payload.extend_from_slice(&(item.seq() as u64).to_be_bytes());
    payload.extend_from_slice(item.value());
    let key = PublicKey::try_from(node.as_bytes()).ok()?;
    SignedPacket::from_relay_payload(&key, &bytes::Bytes::from(payload)).ok()
}

/// A node's seat on the Mainline DHT (a `mainline` node in client mode, run
/// on its own thread by the crate).
pub struct DhtDiscovery {
    key: Arc<Keypair>,
    dht: AsyncDht,
    cache: Mutex<HashMap<NodeId, Cached>>,
}

impl std::fmt::Debug for DhtDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhtDiscovery")
            .field("node", &self.key.node_id())
            .finish_non_exhaustive()
    }
}

impl DhtDiscovery {
    /// Joins the DHT as the node with `key` and waits until its first
    /// bootstrap query is done (a lookup from a node that has not
    /// bootstrapped misses records that are there). Blocks on the system
    /// resolver for bootstrap names and on the network: call it off an
    /// event loop, or use [`join_in_background`].
    pub fn join(key: Arc<Keypair>, settings: &DhtSettings) -> std::io::Result<Self> {
        let mut builder = Dht::builder();
        if let Some(port) = settings.port {
            builder.port(port);
        }
        if let Some(list) = &settings.bootstrap {
            let mut nodes: Vec<String> = Vec::new();
            for entry in list {
                match entry.to_socket_addrs() {
                    Ok(addrs) => nodes.extend(
                        addrs
                            .filter_map(|a| match a {
                                std::net::SocketAddr::V4(v4) => Some(v4),
                                std::net::SocketAddr::V6(_) => None,
                            })
                            .map(|a: SocketAddrV4| a.to_string()),
                    ),
                    Err(e) => debug!(%entry, error = %e, "cannot resolve a DHT bootstrap node"),
                }
            }
            builder.bootstrap(&nodes);
        }
        let dht = builder.build()?.as_async();
        if !futures::executor::block_on(dht.bootstrapped()) {
            debug!(node = %key.node_id(), "the DHT did not bootstrap (no route to it?)");
        }
        Ok(Self {
            key,
            dht,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The UDP address of this node's DHT socket.
    pub async fn local_addr(&self) -> SocketAddrV4 {
        self.dht.info().await.local_addr()
    }

    fn cached(&self, node: NodeId) -> Option<Option<NodeRecord>> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let (record, until) = cache.get(&node)?;
        (Instant::now() < *until).then(|| record.clone())
    }

    fn remember(&self, node: NodeId, record: Option<NodeRecord>, ttl: Duration) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= 4096 {
            let now = Instant::now();
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= 4096 {
                cache.clear();
            }
        }
        cache.insert(node, (record, Instant::now() + ttl));
    }

    async fn lookup(
        &self,
        node: NodeId,
        fresh: bool,
    ) -> Result<Option<NodeRecord>, DiscoveryError> {
        if !fresh && let Some(hit) = self.cached(node) {
            return Ok(hit);
        }
        // The first valid item is enough unless the caller needs the
        // newest (the addresses it had failed): then wait for the query.
        let mut packet = None;
        // A query now and then comes back empty on a record that is there
        // (seen on local testnets); a second one finds it.
        for _ in 0..2 {
            packet = if fresh {
                let newest = self
                    .dht
                    .get_mutable_most_recent(node.as_bytes(), None)
                    .await;
                newest.and_then(|item| packet_of(node, &item))
            } else {
                let mut items = self.dht.get_mutable(node.as_bytes(), None, None);
                let mut found = None;
                while let Some(item) = items.next().await {
                    if let Some(p) = packet_of(node, &item) {
                        found = Some(p);
                        break;
                    }
                }
                found
            };
            if packet.is_some() {
                break;
            }
        }
        let Some(packet) = packet else {
            self.remember(node, None, NEGATIVE_TTL);
            return Ok(None);
        };
        match decode_record(node, &packet) {
            Ok(record) => {
                let ttl = packet.ttl(CACHE_TTL.0, CACHE_TTL.1);
                self.remember(node, Some(record.clone()), Duration::from_secs(ttl.into()));
                Ok(Some(record))
            }
            Err(e) => {
                debug!(%node, error = %e, "unusable DHT record; ignored");
                self.remember(node, None, NEGATIVE_TTL);
                Ok(None)
            }
        }
    }

    async fn put(&self, packet: SignedPacket) -> Result<(), DiscoveryError> {
        let bytes = packet.as_bytes();
        let (Ok(key), Ok(sig)) = (
            <[u8; 32]>::try_from(&bytes[..32]),
            <[u8; 64]>::try_from(&bytes[32..96]),
        ) else {
            return Err(DiscoveryError::Publish("a malformed packet".into()));
        };
        let seq = packet.timestamp().as_u64() as i64;
        let item = MutableItem::new_signed_unchecked(key, sig, &bytes[104..], seq, None);
        match tokio::time::timeout(PUBLISH_TIMEOUT, self.dht.put_mutable(item, None)).await {
            Ok(Ok(outcome)) if outcome.stored_at >= MIN_STORED => {
                debug!(node = %self.key.node_id(), stored_at = outcome.stored_at, "record stored");
                Ok(())
            }
            Ok(Ok(outcome)) => Err(DiscoveryError::Unreachable(format!(
                "the record was stored on {} DHT nodes only",
                outcome.stored_at
            ))),
            Ok(Err(e)) => Err(DiscoveryError::Unreachable(e.to_string())),
            Err(_) => Err(DiscoveryError::Unreachable("publishing timed out".into())),
        }
    }
}

/// Joins the DHT on a thread of its own and returns at once: a node starts
/// without waiting on the system resolver or the network, and its lookups
/// and publications wait for the join (within their own bounds). A join that
/// fails (no UDP socket) costs one warning; the node works on without the
/// DHT.
pub fn join_in_background(key: Arc<Keypair>, settings: DhtSettings) -> Arc<dyn Discovery> {
    let (tx, rx) = tokio::sync::watch::channel(None);
    let node = key.node_id();
    let spawned = std::thread::Builder::new()
        .name("keynode-dht-join".into())
        .spawn(move || {
            let joined = match DhtDiscovery::join(key, &settings) {
                Ok(d) => Ok(Arc::new(d)),
                Err(e) => {
                    tracing::warn!(%node, error = %e, "cannot join the DHT; running without it");
                    Err(e.to_string())
                }
            };
            let _ = tx.send(Some(joined));
        });
    if let Err(e) = spawned {
        tracing::warn!(%node, error = %e, "cannot join the DHT; running without it");
    }
    Arc::new(Joining(rx))
}

type Joined = Option<Result<Arc<DhtDiscovery>, String>>;

struct Joining(tokio::sync::watch::Receiver<Joined>);

impl Joining {
    async fn get(
        mut rx: tokio::sync::watch::Receiver<Joined>,
        within: Duration,
    ) -> Result<Arc<DhtDiscovery>, DiscoveryError> {
        let waited = tokio::time::timeout(within, rx.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(joined)) => match joined.as_ref() {
                Some(Ok(d)) => Ok(d.clone()),
                Some(Err(e)) => Err(DiscoveryError::Unreachable(e.clone())),
                None => Err(DiscoveryError::Unreachable("not joined".into())),
            },
            Ok(Err(_)) => Err(DiscoveryError::Unreachable("the DHT join failed".into())),
            Err(_) => Err(DiscoveryError::Unreachable("still joining the DHT".into())),
        }
    }
}

impl Discovery for Joining {
    fn publish(&self, record: NodeRecord) -> BoxFuture<'static, Result<(), DiscoveryError>> {
        let rx = self.0.clone();
        Box::pin(async move {
            Joining::get(rx, PUBLISH_TIMEOUT)
                .await?
                .publish(record)
                .await
        })
    }

    fn resolve(
        &self,
        node: NodeId,
        fresh: bool,
    ) -> BoxFuture<'static, Result<Option<NodeRecord>, DiscoveryError>> {
        let rx = self.0.clone();
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            let dht = Joining::get(rx, RESOLVE_TIMEOUT).await?;
            let left = RESOLVE_TIMEOUT.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, dht.lookup(node, fresh)).await {
                Ok(r) => r,
                Err(_) => Err(DiscoveryError::Unreachable("lookup timed out".into())),
            }
        })
    }

    fn publish_packet(
        &self,
        node: NodeId,
        packet: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), DiscoveryError>> {
        let rx = self.0.clone();
        Box::pin(async move {
            let packet = verified_packet(node, &packet)?;
            Joining::get(rx, PUBLISH_TIMEOUT).await?.put(packet).await
        })
    }
}

impl Discovery for Arc<DhtDiscovery> {
    fn publish(&self, record: NodeRecord) -> BoxFuture<'static, Result<(), DiscoveryError>> {
        let this = self.clone();
        Box::pin(async move {
            let packet = encode_record(&this.key, &record)
                .map_err(|e| DiscoveryError::Publish(e.to_string()))?;
            this.put(packet).await
        })
    }

    fn resolve(
        &self,
        node: NodeId,
        fresh: bool,
    ) -> BoxFuture<'static, Result<Option<NodeRecord>, DiscoveryError>> {
        let this = self.clone();
        Box::pin(async move {
            match tokio::time::timeout(RESOLVE_TIMEOUT, this.lookup(node, fresh)).await {
                Ok(r) => r,
                Err(_) => Err(DiscoveryError::Unreachable("lookup timed out".into())),
            }
        })
    }

    fn publish_packet(
        &self,
        node: NodeId,
        packet: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), DiscoveryError>> {
        let this = self.clone();
        Box::pin(async move { this.put(verified_packet(node, &packet)?).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::PeerAddress;

    fn record(relay: NodeId) -> NodeRecord {
        NodeRecord {
            addresses: vec![
                PeerAddress::new("127.0.0.1", 4400),
                PeerAddress::new("::1", 4400),
            ],
            relays: vec![RelayAddress {
                node: relay,
                address: PeerAddress::new("relay.example", 1),
            }],
            renewed_to: None,
        }
    }

    #[test]
    fn a_record_round_trips_through_a_signed_packet() {
        let key = Keypair::generate();
        let mut r = record(Keypair::generate().node_id());
        r.renewed_to = Some(RenewalPointer::sign(key.node_id(), &Keypair::generate()));
        let packet = encode_record(&key, &r).unwrap();
        assert_eq!(decode_record(key.node_id(), &packet).unwrap(), r);
        let payload = packet.to_relay_payload();
        assert_eq!(decode_payload(key.node_id(), &payload).unwrap(), r);
    }

    #[test]
    fn a_record_for_another_key_or_with_a_bad_signature_is_refused() {
        let key = Keypair::generate();
        let other = Keypair::generate().node_id();
        let packet = encode_record(&key, &record(other)).unwrap();
        assert_eq!(decode_record(other, &packet), Err(RecordError::ForeignKey));
        assert_eq!(
            decode_payload(other, &packet.to_relay_payload()),
            Err(RecordError::Invalid)
        );
        let mut payload = packet.to_relay_payload().to_vec();
        payload[3] ^= 1; // in the signature
        assert_eq!(
            decode_payload(key.node_id(), &payload),
            Err(RecordError::Invalid)
        );
        let last = payload.len() - 1;
        payload[3] ^= 1;
        payload[last] ^= 1; // in the signed DNS packet
        assert_eq!(
            decode_payload(key.node_id(), &payload),
            Err(RecordError::Invalid)
        );
        let mut big = packet.to_relay_payload().to_vec();
        big.resize(2000, 0);
        assert_eq!(
            decode_payload(key.node_id(), &big),
            Err(RecordError::Invalid)
        );
        assert_eq!(
            decode_payload(key.node_id(), &[1, 2, 3]),
            Err(RecordError::Invalid)
        );
    }

    #[test]
    fn garbage_entries_are_skipped_and_counts_capped() {
        let key = Keypair::generate();
        let name = pkarr::dns::Name::new(RECORD_NAME).unwrap();
        let mut b = SignedPacket::builder().txt(name.clone(), txt("v=1").unwrap(), 60);
        let relay = Keypair::generate().node_id();
        let junk = [
            "a=no-port".to_owned(),
            "a=host:0".to_owned(),
            "a=host:99999".to_owned(),
            "a=bad host:1".to_owned(),
            "r=zz@host:1".to_owned(),
            format!("r={}@host:1", key.node_id()), // itself as its relay
            "n=nope".to_owned(),
            "ns=!!!".to_owned(),
            "x=unknown".to_owned(),
            "novalue".to_owned(),
        ];
        for j in &junk {
            b = b.txt(name.clone(), txt(j).unwrap(), 60);
        }
        let many: Vec<String> = (1..=10u16)
            .map(|port| format!("a=10.0.0.1:{port}"))
            .chain((1..=5u16).map(|port| format!("r={relay}@10.0.0.2:{port}")))
            .collect();
        let mut text = TXT::new();
        for m in &many {
            text.add_string(m).unwrap();
        }
        b = b.txt(name.clone(), text, 60);
        let packet = b.sign(&signing_key(&key)).unwrap();
        let r = decode_record(key.node_id(), &packet).unwrap();
        assert_eq!(r.addresses.len(), MAX_RECORD_ADDRESSES);
        assert!(r.addresses.iter().all(|a| a.host == "10.0.0.1"));
        assert_eq!(r.relays.len(), MAX_RECORD_RELAYS);
        assert!(r.relays.iter().all(|x| x.node == relay));
        assert_eq!(r.renewed_to, None);
    }

    fn txt(s: &str) -> Result<TXT<'_>, RecordError> {
        TXT::try_from(s).map_err(|e| RecordError::TooLarge(e.to_string()))
    }

    #[test]
    fn a_record_too_large_for_a_packet_sheds_addresses_until_it_fits() {
        let key = Keypair::generate();
        let long = "h".repeat(60);
        let r = NodeRecord {
            addresses: (1..=8)
                .map(|i| PeerAddress::new(format!("{long}{i}.example"), 1))
                .collect(),
            relays: (0..4)
                .map(|i| RelayAddress {
                    node: Keypair::generate().node_id(),
                    address: PeerAddress::new(format!("{long}.relay{i}"), 2),
                })
                .collect(),
            renewed_to: Some(RenewalPointer::sign(key.node_id(), &Keypair::generate())),
        };
        let decoded = decode_record(key.node_id(), &encode_record(&key, &r).unwrap()).unwrap();
        assert!(!decoded.addresses.is_empty() && decoded.addresses.len() < 8);
        assert_eq!(
            decoded.addresses[..],
            r.addresses[..decoded.addresses.len()]
        );
        assert_eq!(decoded.relays, r.relays);
        assert_eq!(decoded.renewed_to, r.renewed_to);
    }

    #[test]
    fn a_packet_without_a_keynode_version_is_not_a_record() {
        let key = Keypair::generate();
        let name = pkarr::dns::Name::new(RECORD_NAME).unwrap();
        let packet = SignedPacket::builder()
            .txt(name, txt("a=10.0.0.1:1").unwrap(), 60)
            .sign(&signing_key(&key))
            .unwrap();
        assert_eq!(
            decode_record(key.node_id(), &packet),
            Err(RecordError::NotKeynode)
        );
    }

    #[test]
    fn a_forged_renewal_pointer_is_dropped() {
        let key = Keypair::generate();
        let mut r = record(Keypair::generate().node_id());
        let mut p = RenewalPointer::sign(key.node_id(), &Keypair::generate());
        p.new = Keypair::generate().node_id();
        r.renewed_to = Some(p);
        let packet = encode_record(&key, &r).unwrap();
        assert_eq!(
            decode_record(key.node_id(), &packet).unwrap().renewed_to,
            None
        );
    }

    /// Publish and resolve over a real (local) Mainline testnet.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_are_published_and_resolved_on_a_local_testnet() {
        let testnet = tokio::task::spawn_blocking(|| mainline::Testnet::builder(5).build())
            .await
            .unwrap()
            .unwrap();
        let settings = DhtSettings {
            bootstrap: Some(testnet.bootstrap.clone()),
            port: None,
        };
        let (a, b) = (Arc::new(Keypair::generate()), Arc::new(Keypair::generate()));
        let (sa, sb) = (settings.clone(), settings);
        let da = Arc::new(DhtDiscovery::join(a.clone(), &sa).unwrap());
        let db = Arc::new(DhtDiscovery::join(b.clone(), &sb).unwrap());
        let r = record(b.node_id());
        da.publish(r.clone()).await.unwrap();
        assert_eq!(
            db.resolve(a.node_id(), false).await.unwrap(),
            Some(r.clone())
        );
        // Nobody published for b.
        assert_eq!(da.resolve(b.node_id(), false).await.unwrap(), None);
        // A newer record replaces the older one for a fresh lookup.
        let mut moved = r.clone();
        moved.addresses = vec![PeerAddress::new("127.0.0.1", 4500)];
        da.publish(moved.clone()).await.unwrap();
        assert_eq!(db.resolve(a.node_id(), true).await.unwrap(), Some(moved));
    }
}
