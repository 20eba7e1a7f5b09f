//! What the agent answers: [`Response`] and the values it carries. These are the
//! protocol's own types (not the stores'), so a client needs none of the node's
//! storage crates.

use std::fmt;
use std::str::FromStr;

use keynode_core::{NodeId, SecretPath, VaultId, VaultName};
use serde::{Deserialize, Serialize};

/// A successful answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// Done, nothing to report.
    Unit,
    /// Agent status.
    Status(AgentStatus),
    /// A backup was written.
    BackupCreated(BackupSummary),
    /// A file signature.
    Signed(keynode_core::Signature),
    /// A decrypted message.
    Decrypted(#[serde(with = "serde_bytes")] Vec<u8>),
    /// One vault.
    Vault(VaultMeta),
    /// Vaults.
    Vaults(Vec<VaultMeta>),
    /// Commits, newest first.
    Log(Vec<CommitInfo>),
    /// A mutation's commit (`None`: nothing changed, no commit).
    Committed(Option<CommitInfo>),
    /// Directory entries.
    Entries(Vec<Entry>),
    /// A secret's description.
    Stat(SecretStat),
    /// Environment variables `(name, value)`.
    Env(Vec<(String, Vec<u8>)>),
    /// `Data` frames and `End` follow.
    Streaming,
    /// A ping's round trip, in microseconds.
    Pong {
        /// Round-trip time in microseconds.
        rtt_us: u64,
    },
    /// Known nodes.
    Nodes(Vec<NodeEntry>),
    /// Open connections.
    Connections(Vec<ConnectionEntry>),
    /// A permission record.
    Permissions(PermissionView),
    /// One gestalt.
    Gestalt(GestaltView),
    /// Gestalts.
    Gestalts(Vec<GestaltView>),
    /// What a discovery run did.
    Discovered(DiscoveryView),
    /// Who holds which actions on a vault.
    VaultPermissions(Vec<VaultGrant>),
    /// Vaults another node shares with us.
    Scan(Vec<ScanEntry>),
    /// A pull's outcome.
    Pulled {
        /// The local vault.
        vault: String,
        /// Head before.
        from: Option<String>,
        /// Head after.
        to: String,
        /// Commits received.
        commits: u64,
    },
    /// Notifications.
    Notifications(Vec<NotificationView>),
    /// How many entries were removed.
    Removed(u64),
    /// A claim was added to this node's sigchain.
    Claimed {
        /// The claim's id.
        claim_id: String,
        /// Its position in the sigchain.
        seq: u64,
    },
    /// Audit log entries.
    AuditEntries(Vec<AuditEntryView>),
    /// The audit log verified.
    AuditVerified {
        /// How many entries it holds.
        entries: u64,
    },
    /// Where a node may be found (`nodes find`).
    Found(FoundView),
    /// The vaults a `VaultsWatch` watches, with their heads now.
    Watching(Vec<WatchedVault>),
    /// How many notifications moved (from the quarantine into the inbox).
    Moved(u64),
    /// A watched vault moved.
    HeadChanged {
        /// The vault's local id.
        vault: VaultId,
        /// Its new head.
        head: String,
    },
}

/// One gestalt's actions on a vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultGrant {
    /// The gestalt's nodes.
    pub nodes: Vec<NodeId>,
    /// Its identities, as `provider:identity`.
    pub identities: Vec<String>,
    /// `clone`, `pull`.
    pub actions: Vec<String>,
}

/// A vault another node shares with us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanEntry {
    /// Its id on that node.
    pub vault_id: String,
    /// Its name on that node.
    pub name: String,
    /// What we may do: `clone`, `pull`.
    pub actions: Vec<String>,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntryView {
    /// Position in the log.
    pub seq: u64,
    /// When it was appended (ms since the epoch).
    pub time_ms: u64,
    /// `vault_shared`, `vault_unshared`, `allowed`, `disallowed`, `trusted`,
    /// `untrusted`, `claimed`, `served`, `refused`, `password_changed`.
    pub kind: String,
    /// The other node involved, if any.
    pub peer: Option<NodeId>,
    /// The event's fields as `(name, value)` text.
    pub fields: Vec<(String, String)>,
}

/// A notification in the inbox or the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationView {
    /// Its local id (inbox or outbox).
    pub id: String,
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// `general`, `gestalt_invite`, `vault_share`, `vault_unshare`.
    pub kind: String,
    /// The content, as JSON text (the client protocol is bincode, which cannot
    /// carry a self-describing value).
    pub data: String,
    /// When it was sent (ms since the epoch).
    pub sent_ms: u64,
    /// Inbox: whether it had been read before this listing.
    pub read: Option<bool>,
    /// Outbox: delivery attempts so far.
    pub attempts: Option<u32>,
    /// Outbox: next attempt (ms since the epoch).
    pub next_attempt_ms: Option<u64>,
    /// Quarantine: when it arrived (ms since the epoch).
    pub received_ms: Option<u64>,
}

/// Permissions held by a gestalt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionView {
    /// Gestalt actions (`notify`, `scan`, `claim`).
    pub gestalt: Vec<String>,
    /// Vault actions (`clone`, `pull`) by vault id.
    pub vaults: std::collections::BTreeMap<String, Vec<String>>,
}

/// A gestalt: its nodes and identities and the permissions they share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GestaltView {
    /// Its nodes.
    pub nodes: Vec<NodeId>,
    /// Its identities, as `provider:identity`.
    pub identities: Vec<String>,
    /// The permissions every member holds.
    pub permissions: PermissionView,
}

/// The outcome of a discovery run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryView {
    /// Vertices visited.
    pub visited: Vec<String>,
    /// Graph changes made.
    pub changes: usize,
    /// Vertices that could not be (fully) discovered, with why.
    pub failures: Vec<String>,
    /// Whether the walk stopped at its bound.
    pub truncated: bool,
    /// The gestalt as known now.
    pub gestalt: Option<GestaltView>,
}

/// A node in the address book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// The node.
    pub node_id: NodeId,
    /// Where it can be reached, most recent first, as `host:port`.
    pub addresses: Vec<String>,
    /// The same addresses, each with where it came from and when it last
    /// worked.
    #[serde(default)]
    pub sources: Vec<AddressView>,
}

/// One address of a node, with its provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressView {
    /// `host:port`.
    pub address: String,
    /// `typed`, `seed`, `learned` or `earlier` (recorded before sources were kept).
    pub source: String,
    /// When a connection through it last completed its handshake (ms since
    /// the Unix epoch).
    pub last_ok_ms: Option<u64>,
}

/// An open connection to another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionEntry {
    /// The peer, as proven by the handshake.
    pub node_id: NodeId,
    /// The peer's address.
    pub remote_addr: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// When the connection was established, in milliseconds since the Unix epoch.
    pub established_ms: u64,
    /// Streams open on it now.
    pub streams: u64,
    /// The relay it runs through; `None` for a direct connection.
    #[serde(default)]
    pub relay: Option<NodeId>,
}

/// What `nodes find` learned of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundView {
    /// The node looked for.
    pub node_id: NodeId,
    /// Each address, with where it came from: `typed`, `seed`, `learned`,
    /// `dht` (in the book), `dht-record` (in its record now), `relay`.
    pub addresses: Vec<AddressView>,
    /// Relays its record names, as `NODE_ID@HOST:PORT`.
    pub relays: Vec<String>,
    /// `off` (this node runs without the DHT), `found`, `not found`, or
    /// `failed: why`.
    pub dht: String,
    /// The NodeId its DHT record says the node renewed its key to (both keys
    /// signed it).
    pub renewed_to: Option<NodeId>,
}

/// What `agent status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// `live`, `starting`, `stopping` or `stopped`.
    pub status: String,
    /// The node's id.
    pub node_id: NodeId,
    /// Host the node listens on for peers (empty until the network exists).
    pub agent_host: String,
    /// Port the node listens on for peers (0 until the network exists).
    pub agent_port: u16,
    /// The agent's process id.
    pub pid: u32,
    /// How full the node's state (its LMDB map) is, in percent; at
    /// `keynode_agent::node::STORAGE_WARN_PERCENT` and above
    /// the log warns: writes will fail when it is full, reads keep working.
    #[serde(default)]
    pub storage_used_percent: u8,
    /// Whether the node's root key derives from a recovery code; a node made
    /// before keynode had them has none.
    #[serde(default)]
    pub recovery_code: bool,
}

/// What `backup create` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    /// The node backed up.
    pub node_id: NodeId,
    /// The archive.
    pub path: std::path::PathBuf,
    /// Files in it (besides the manifest and its signature).
    pub members: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// When it was made, in milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// A vault on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultMeta {
    /// The vault's local id.
    pub id: VaultId,
    /// The vault's local name, unique on this node.
    pub name: VaultName,
    /// When the vault was created here, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Where this vault was cloned from; a vault with a remote is read-only.
    pub remote: Option<Remote>,
    /// For a clone: whether it follows its remote and how far it is (filled
    /// by `VaultsList`; `None` elsewhere and for the node's own vaults).
    pub follow: Option<FollowStatus>,
}

/// Whether a clone follows its remote, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FollowStatus {
    /// Follows; holds the last head the remote announced (or has not heard
    /// from the remote since the agent started).
    Following,
    /// Follows; the remote announced a head this clone does not have yet (a
    /// pull is under way, or failed with `error` and waits for the next
    /// announcement or connection).
    Behind {
        /// The remote's head.
        remote_head: String,
        /// Why the last pull failed, if it did.
        error: Option<String>,
    },
    /// Follows, but the remote no longer serves this vault to us (unshared
    /// or deleted there).
    Refused,
    /// Does not follow (`--no-follow`, `vaults unfollow`).
    Off,
    /// Stopped following because the remote's history no longer contains
    /// this clone's; nothing was rewritten. `vaults follow` tries again.
    Diverged {
        /// The remote's head that diverged.
        remote_head: String,
    },
}

impl FollowStatus {
    /// One word for listings: following, behind, refused, off, diverged.
    pub fn word(&self) -> &'static str {
        match self {
            FollowStatus::Following => "following",
            FollowStatus::Behind { .. } => "behind",
            FollowStatus::Refused => "refused",
            FollowStatus::Off => "off",
            FollowStatus::Diverged { .. } => "diverged",
        }
    }
}

/// A watched vault and its head when the watch began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchedVault {
    /// The vault's local id.
    pub id: VaultId,
    /// Its name.
    pub name: VaultName,
    /// Its head, 40 hex digits.
    pub head: String,
}

/// The origin of a cloned vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remote {
    /// The node that owns the original.
    pub node: NodeId,
    /// The vault's id on that node.
    pub vault: VaultId,
}

/// One commit of a vault's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    /// The commit id, 40 hex digits.
    pub oid: String,
    /// The author's name: the NodeId text of the node that made the commit.
    pub author: String,
    /// Commit time in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// What changed, one line per op.
    pub message: String,
}

/// Secret or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A secret.
    File,
    /// A directory.
    Dir,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The entry's name (one path segment).
    pub name: String,
    /// Secret or directory.
    pub kind: EntryKind,
    /// A secret's size in bytes; `None` for directories.
    pub size: Option<u64>,
}

/// Details of one secret or directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretStat {
    /// The path asked about.
    pub path: SecretPath,
    /// Secret or directory.
    pub kind: EntryKind,
    /// A secret's size in bytes; a directory's number of visible entries.
    pub size: u64,
    /// The git object id of the content (blob or tree), 40 hex digits.
    pub blob: String,
    /// The git file mode (`0o100644` for secrets, `0o040000` for directories).
    pub mode: u32,
    /// The newest commit (at or before the revision asked about) that changed
    /// this path, if found within the agent's search limit.
    pub last_commit: Option<CommitInfo>,
}

/// An action a gestalt may hold on this node as a whole (vault actions are
/// granted with `vaults share`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GestaltAction {
    /// Send us notifications.
    Notify,
    /// List the vaults we share with it.
    Scan,
    /// Link itself to us by a cross-signed claim.
    Claim,
}

impl GestaltAction {
    /// Every action, in order.
    pub const ALL: [GestaltAction; 3] = [
        GestaltAction::Notify,
        GestaltAction::Scan,
        GestaltAction::Claim,
    ];

    /// The action's name (`notify`, `scan`, `claim`).
    pub fn as_str(self) -> &'static str {
        match self {
            GestaltAction::Notify => "notify",
            GestaltAction::Scan => "scan",
            GestaltAction::Claim => "claim",
        }
    }
}

impl fmt::Display for GestaltAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A gestalt action name is not one of `notify`, `scan`, `claim`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown gestalt action {0:?}: expected notify, scan or claim (vault access is granted \
     with `keynode vaults share`)"
)]
pub struct UnknownAction(pub String);

impl FromStr for GestaltAction {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GestaltAction::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAction(s.to_owned()))
    }
}
