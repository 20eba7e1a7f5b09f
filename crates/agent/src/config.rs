//! How to start a node, and why a start can fail.

use std::path::PathBuf;
use std::time::Duration;

use keynode_core::NodeId;
use keynode_core::exec::Exec;
use keynode_core::keystore::{KdfParams, KeystoreError};
use keynode_net::{BoxTransport, NetContext};
use zeroize::Zeroizing;

use crate::paths::NodePaths;
use crate::status::LockError;

/// How to start a node.
#[derive(Clone)]
pub struct NodeConfig {
    /// The node path.
    pub paths: NodePaths,
    /// The password that seals the root key.
    pub password: Zeroizing<Vec<u8>>,
    /// Argon2id parameters for a new key file.
    pub kdf: KdfParams,
    /// Host to listen on for peers.
    pub agent_host: String,
    /// Port to listen on for peers (0 picks one).
    pub agent_port: u16,
    /// Nodes to know from the start.
    pub seed_nodes: Vec<SeedNode>,
    /// Where the offline identity provider keeps published claims (shared by
    /// the nodes of one machine). `None`: `$KEYNODE_OFFLINE_PROVIDER_DIR`, else
    /// `$XDG_DATA_HOME/keynode-offline-provider`, else
    /// `~/.local/share/keynode-offline-provider`.
    pub provider_dir: Option<PathBuf>,
    /// How the node reaches peers (TCP by default; a simulator's sockets in
    /// deterministic simulations).
    pub transport: BoxTransport,
    /// Clock and entropy of the network layer; the clock also times the
    /// notification outbox, dates notification and claim ids and vault
    /// creation and commit times (system ones by default).
    pub net_context: NetContext,
    /// Whether to serve clients on the Unix socket (default `true`). Without
    /// it, drive the node in process with [`Node::call`](crate::Node::call).
    pub client_socket: bool,
    /// Where blocking work (LMDB, git, Argon2) runs: tokio's blocking pool by
    /// default; [`Inline`](keynode_core::exec::Inline) in a deterministic
    /// simulation.
    pub executor: Exec,
    /// Largest a vault may grow by clones and pulls, in bytes: a pack that
    /// would pass it is refused, nothing received.
    pub max_vault_bytes: u64,
    /// Largest the node's state (the LMDB map) may grow, in bytes: a sparse
    /// maximum, not an allocation. When it is spent, writes fail with a clear
    /// error and reads go on; `agent status` reports the share used.
    pub max_state_bytes: usize,
    /// On a node path without a key: the recovery code to recreate the node
    /// from (same NodeId, the password above). Without it a new node gets a
    /// fresh code ([`Node::take_recovery_code`](crate::Node::take_recovery_code)).
    /// Refused on a node path that has a key.
    pub recovery_code: Option<keynode_core::recovery::RecoveryCode>,
    /// At start, tell every node in the address book where this node listens
    /// (`PeerRequest::ListenAt`), so peers find a node that moved. On by
    /// default.
    pub announce: bool,
    /// Publish this node's addresses on the Mainline DHT and look peers up
    /// there (`None`: off, the default for an embedded node; the CLI turns
    /// it on unless `--dht off`). Publishing tells whoever knows the NodeId
    /// where the node listens.
    pub dht: Option<keynode_net::DhtSettings>,
    /// Listen for no peer at all (as behind a NAT): reachable only through
    /// [`relays`](Self::relays).
    pub no_listen: bool,
    /// Relays to keep a reservation at and to publish.
    pub relays: Vec<keynode_net::RelayAddress>,
    /// Relay for others within these limits (`None`: do not).
    pub relay_serve: Option<keynode_net::RelayLimits>,
}

/// Where the offline identity provider keeps its claims when not configured.
pub fn default_provider_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("KEYNODE_OFFLINE_PROVIDER_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/share")
        });
    data.join("keynode-offline-provider")
}

/// A node given at start: its id and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedNode {
    /// The node.
    pub node: NodeId,
    /// Its host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Its port.
    pub port: u16,
}

/// A `--seed-nodes` list is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    /// An entry is not `ID@host:port`.
    #[error("expected ID@host:port, got {0:?}")]
    Format(String),
    /// The id part is not a node id.
    #[error("{0}")]
    Id(#[from] keynode_core::IdError),
}

/// Parses `ID@host:port;ID@host:port` (IPv6 hosts in brackets). Empty entries
/// are skipped.
pub fn parse_seed_nodes(s: &str) -> Result<Vec<SeedNode>, SeedError> {
    s.split(';')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let bad = || SeedError::Format(entry.to_owned());
            let (id, addr) = entry.split_once('@').ok_or_else(bad)?;
            let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            if host.is_empty() {
                return Err(bad());
            }
            Ok(SeedNode {
                node: id.parse()?,
                host: host.to_owned(),
                port: port.parse().map_err(|_| bad())?,
            })
        })
        .collect()
}

impl NodeConfig {
    /// A configuration with defaults for everything but the node path and password.
    pub fn new(node_path: impl Into<PathBuf>, password: impl AsRef<[u8]>) -> Self {
        Self {
            paths: NodePaths::new(node_path),
            password: Zeroizing::new(password.as_ref().to_vec()),
            kdf: KdfParams::DEFAULT,
            agent_host: "127.0.0.1".into(),
            agent_port: 0,
            seed_nodes: Vec::new(),
            provider_dir: None,
            transport: BoxTransport::default(),
            net_context: NetContext::default(),
            client_socket: true,
            executor: keynode_core::exec::threads(),
            max_vault_bytes: keynode_vaults::DEFAULT_MAX_VAULT_BYTES,
            max_state_bytes: crate::disk::LMDB_MAP_SIZE,
            recovery_code: None,
            announce: true,
            dht: None,
            no_listen: false,
            relays: Vec::new(),
            relay_serve: None,
        }
    }
}

/// A node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another agent runs on this node path.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// The password does not open the root key.
    #[error("wrong password for the node at {0}")]
    WrongPassword(PathBuf),
    /// The key file is unreadable.
    #[error("cannot open the root key")]
    Key(#[source] KeystoreError),
    /// The data key file is unreadable or does not open with the root key
    /// (altered, or from another node).
    #[error("cannot open the data key {0}")]
    DataKey(PathBuf, #[source] KeystoreError),
    /// The node path has a data key but no root key to open it.
    #[error(
        "node path {0} has a data key but no root key (keys/root.key); restore the root key file"
    )]
    RootKeyMissing(PathBuf),
    /// The node path holds state written by an earlier keynode version, which
    /// kept it unencrypted and has no data key. It is left untouched.
    #[error(
        "node path {0} holds unencrypted state from an earlier keynode version; it cannot be \
         opened by this version — move it aside and start a new node (or re-create its vaults)"
    )]
    EarlierVersion(PathBuf),
    /// The node path cannot hold a Unix socket path.
    #[error("node path {0} is too long for a unix socket; choose a shorter --node-path")]
    PathTooLong(PathBuf),
    /// A recovery code was given for a node path that has a key already.
    #[error(
        "node path {0} has a key already: a recovery code recreates a node on an empty node path \
         only (to set a new password, use `agent password --recovery-code-file`)"
    )]
    RecoveryOnExistingNode(PathBuf),
    /// The state database failed to open.
    #[error("cannot open the node state")]
    Storage(#[source] keynode_core::store::heed3::Error),
    /// The state fails authentication under the data key: the data key was
    /// replaced (by another that the root key opens) or the state altered.
    #[error(
        "the node state in {0} does not decrypt with this node's data key (the data key was \
         replaced, or the state altered)"
    )]
    StateKey(PathBuf),
    /// Vault storage failed to open.
    #[error("cannot open vault storage")]
    Vaults(#[source] keynode_vaults::VaultError),
    /// Gestalt or permission state failed to open.
    #[error("cannot open gestalt state: {0}")]
    Gestalt(String),
    /// Notification state failed to open.
    #[error("cannot open the notification store: {0}")]
    Notifications(String),
    /// The audit log failed to open.
    #[error("cannot open the audit log: {0}")]
    Audit(String),
    /// The address book failed to open.
    #[error("cannot open the address book")]
    Book(#[source] keynode_net::BookError),
    /// The network could not start (e.g. the port is taken).
    #[error("cannot start the network")]
    Network(#[source] keynode_net::NetError),
    /// `--agent-host` does not resolve.
    #[error("cannot resolve agent host {0:?}")]
    Host(String),
    /// File system trouble.
    #[error("i/o error in {1}")]
    Io(#[source] std::io::Error, String),
}

/// What a start measured.
#[derive(Debug, Clone, Copy)]
pub struct StartTimings {
    /// Time spent deriving the key from the password.
    pub key_derivation: Duration,
    /// Total time from `start` to ready.
    pub total: Duration,
    /// Whether this start created the node's identity.
    pub created: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use keynode_core::Keypair;

    #[test]
    fn seed_nodes_parse() {
        let id = Keypair::generate().node_id();
        let list = format!("{id}@127.0.0.1:1314; {id}@[::1]:9 ;;{id}@example.org:80");
        let seeds = parse_seed_nodes(&list).unwrap();
        assert_eq!(seeds.len(), 3);
        assert_eq!(seeds[1].host, "::1");
        assert_eq!(seeds[2].port, 80);
        assert!(parse_seed_nodes("").unwrap().is_empty());
        for bad in [
            "x@h:1",
            &format!("{id}@h"),
            &format!("{id}h:1"),
            &format!("{id}@:1"),
            &format!("{id}@h:99999"),
        ] {
            assert!(parse_seed_nodes(bad).is_err(), "{bad}");
        }
    }
}
