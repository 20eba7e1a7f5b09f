//! The client protocol: what the CLI (or any local client) and the agent say over
//! the agent's Unix socket.
//!
//! Each message is one length-delimited frame (4-byte big-endian length, at most
//! [`MAX_FRAME`] bytes) holding a [`ClientMsg`] or a [`ServerMsg`] in the
//! [`keynode_core::codec`] encoding. A connection opens with `Hello` both ways
//! carrying [`PROTOCOL_VERSION`]; then the client sends one [`Request`] and the
//! agent answers with a [`Response`] or an [`ApiError`]. Uploads (`SecretsWrite`,
//! `SecretsDir`) follow the request with `Data` frames and a final `End`; downloads
//! (`SecretsGet`) answer `Response::Streaming`, then `Data` frames, then `End` (or an
//! `Error`). The enums are closed and only ever grow at the end; a peer speaking
//! another version is refused at `Hello`.

use keynode_core::NodeId;
use keynode_vaults::{CommitInfo, Entry, SecretStat, VaultMeta};
use serde::{Deserialize, Serialize};

/// Version of this protocol.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest frame either side accepts, in bytes.
pub const MAX_FRAME: usize = 1024 * 1024 + 4096;
/// Size of the data chunks streams are cut into, in bytes.
pub const CHUNK: usize = 64 * 1024;

/// A frame from client to agent.
#[derive(Debug, Serialize, Deserialize)]
pub enum ClientMsg {
    /// Opens the connection.
    Hello {
        /// The client's [`PROTOCOL_VERSION`].
        version: u16,
    },
    /// The request (once per connection).
    Request(Request),
    /// A chunk of upload data.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Starts the next file of a `SecretsDir` upload.
    FileStart {
        /// Path relative to the import's target.
        path: String,
    },
    /// Ends an upload.
    End,
}

/// A frame from agent to client.
#[derive(Debug, Serialize, Deserialize)]
pub enum ServerMsg {
    /// Answers `Hello`.
    Hello {
        /// The agent's [`PROTOCOL_VERSION`].
        version: u16,
        /// The node this agent runs.
        node_id: NodeId,
    },
    /// The answer to the request.
    Response(Response),
    /// A chunk of download data.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Ends a download.
    End,
    /// The request failed.
    Error(ApiError),
}

/// One request. [`IntoStaticStr`](strum::IntoStaticStr) gives its kind (the
/// variant name) for logs: a request itself carries names and secrets.
#[derive(Debug, Clone, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum Request {
    /// The agent's status.
    AgentStatus,
    /// Stop the agent gracefully.
    AgentStop,
    /// Create a vault.
    VaultsCreate {
        /// Name of the new vault.
        name: String,
    },
    /// List vaults.
    VaultsList,
    /// Rename a vault.
    VaultsRename {
        /// Vault name or id.
        vault: String,
        /// New name.
        new_name: String,
    },
    /// Delete a vault.
    VaultsDelete {
        /// Vault name or id.
        vault: String,
    },
    /// A vault's history, newest first.
    VaultsLog {
        /// Vault name or id.
        vault: String,
        /// Most commits to list.
        depth: Option<u32>,
        /// Start from this commit instead of the head.
        commit: Option<String>,
    },
    /// Append a commit restoring an older version.
    VaultsVersion {
        /// Vault name or id.
        vault: String,
        /// The version to restore.
        rev: String,
    },
    /// Write a secret; `Data` frames and `End` follow.
    SecretsWrite {
        /// Vault name or id.
        vault: String,
        /// Secret path.
        path: String,
        /// Fail if the secret exists (`secrets create`).
        create_new: bool,
    },
    /// Read a secret (streamed back).
    SecretsGet {
        /// Vault name or id.
        vault: String,
        /// Secret path.
        path: String,
        /// Read this version instead of the head.
        at: Option<String>,
    },
    /// List a directory.
    SecretsList {
        /// Vault name or id.
        vault: String,
        /// Directory (vault root if absent).
        path: Option<String>,
        /// List this version instead of the head.
        at: Option<String>,
    },
    /// Make a directory.
    SecretsMkdir {
        /// Vault name or id.
        vault: String,
        /// Directory path.
        path: String,
        /// Create missing parents too.
        parents: bool,
    },
    /// Rename a secret or directory within its directory.
    SecretsRename {
        /// Vault name or id.
        vault: String,
        /// Current path.
        path: String,
        /// New last segment.
        new_name: String,
    },
    /// Remove secrets (one commit).
    SecretsRm {
        /// Vault name or id.
        vault: String,
        /// Paths to remove.
        paths: Vec<String>,
        /// Remove directories with their contents.
        recursive: bool,
    },
    /// Describe a secret.
    SecretsStat {
        /// Vault name or id.
        vault: String,
        /// Secret path.
        path: String,
        /// This version instead of the head.
        at: Option<String>,
    },
    /// Import files as one commit; `FileStart`/`Data` frames and `End` follow.
    SecretsDir {
        /// Vault name or id.
        vault: String,
        /// Target directory (vault root if absent).
        path: Option<String>,
    },
    /// Secrets as environment variables.
    SecretsEnv {
        /// `(vault, path)` pairs; a directory or the vault root expands to every
        /// secret below it.
        refs: Vec<(String, Option<String>)>,
    },
    /// Record where a node can be reached.
    NodesAdd {
        /// The node.
        node: NodeId,
        /// Its host name or address.
        host: String,
        /// Its port.
        port: u16,
    },
    /// An authenticated round trip to a node.
    NodesPing {
        /// The node.
        node: NodeId,
    },
    /// The address book.
    NodesList,
    /// Open connections to other nodes.
    NodesConnections,
    /// Cross-sign a claim linking this node and `node` into one gestalt.
    NodesClaim {
        /// The node to link with (it must have invited us).
        node: NodeId,
    },
    /// Trust a gestalt: accept its notifications (adds it if unknown and
    /// discovers it).
    IdentitiesTrust {
        /// A node id or `provider:identity`.
        gestalt: String,
    },
    /// Stop trusting a gestalt.
    IdentitiesUntrust {
        /// A node id or `provider:identity`.
        gestalt: String,
    },
    /// Grant a gestalt action (`notify`, `scan`, `claim`).
    IdentitiesAllow {
        /// A node id or `provider:identity`.
        gestalt: String,
        /// The action.
        action: String,
    },
    /// Revoke a gestalt action.
    IdentitiesDisallow {
        /// A node id or `provider:identity`.
        gestalt: String,
        /// The action.
        action: String,
    },
    /// A gestalt's permissions.
    IdentitiesPermissions {
        /// A node id or `provider:identity`.
        gestalt: String,
    },
    /// Invite a node to join our gestalt (grants it `claim`).
    IdentitiesInvite {
        /// The node.
        node: NodeId,
    },
    /// Discover a gestalt now.
    IdentitiesDiscover {
        /// A node id or `provider:identity`.
        gestalt: String,
    },
    /// Every known gestalt.
    IdentitiesList,
    /// One gestalt.
    IdentitiesGet {
        /// A node id or `provider:identity`.
        gestalt: String,
    },
    /// Authenticate to an identity provider.
    IdentitiesAuthenticate {
        /// The provider's id.
        provider: String,
    },
    /// Claim an identity: a claim in our sigchain, published on the provider.
    IdentitiesClaim {
        /// `provider:identity`.
        identity: String,
    },
    /// Share a vault with a node's gestalt (clone, pull, scan) and notify it.
    VaultsShare {
        /// Vault name or id.
        vault: String,
        /// The node.
        node: NodeId,
    },
    /// Stop sharing a vault with a node's gestalt and notify it.
    VaultsUnshare {
        /// Vault name or id.
        vault: String,
        /// The node.
        node: NodeId,
    },
    /// Who may clone or pull a vault.
    VaultsPermissions {
        /// Vault name or id.
        vault: String,
    },
    /// The vaults another node shares with us.
    VaultsScan {
        /// The node.
        node: NodeId,
    },
    /// Clone a vault from another node.
    VaultsClone {
        /// The vault's name or id on the other node.
        vault: String,
        /// The node.
        node: NodeId,
    },
    /// Pull a cloned vault from its remote (or from another source, which
    /// becomes the remote).
    VaultsPull {
        /// The local vault, name or id.
        vault: String,
        /// Pull from this node instead of the stored remote.
        node: Option<NodeId>,
        /// Pull this vault (name or id on the remote) instead of the stored one.
        pull_vault: Option<String>,
    },
    /// A mutable copy of a vault (e.g. of a read-only clone).
    VaultsFork {
        /// Vault name or id.
        vault: String,
        /// Name of the copy.
        new_name: Option<String>,
    },
    /// Send a General notification.
    NotificationsSend {
        /// The recipient.
        node: NodeId,
        /// The message.
        message: String,
    },
    /// Read the inbox (marks what is returned as read).
    NotificationsInboxRead {
        /// Only unread notifications.
        unread: bool,
        /// At most this many.
        limit: Option<u32>,
        /// Newest first (else oldest first).
        newest_first: bool,
    },
    /// Remove one notification from the inbox.
    NotificationsInboxRemove {
        /// Its id.
        id: String,
    },
    /// Empty the inbox.
    NotificationsInboxClear,
    /// Notifications waiting to be delivered.
    NotificationsOutboxRead,
    /// Drop one queued notification.
    NotificationsOutboxRemove {
        /// Its id.
        id: String,
    },
    /// Drop every queued notification.
    NotificationsOutboxClear,
    /// Read the audit log, newest first.
    AuditRead {
        /// At most this many entries.
        limit: Option<u32>,
    },
    /// Verify the audit log (seqs, hash links, signatures, head).
    AuditVerify,
    /// Change the password that seals the node's root key. Only the key file is
    /// re-sealed; no data is re-encrypted. Answers `Unit`; a wrong `current` is
    /// `PermissionDenied`, an empty `new` is `Usage`.
    AgentPassword {
        /// The password the root key is sealed under now.
        current: Password,
        /// The password to seal it under from now on (not empty).
        new: Password,
    },
}

/// A password on the wire: its bytes are zeroed on drop and never printed
/// (`Debug` shows `Password(..)`, so logging a request does not leak it).
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Password(#[serde(with = "serde_bytes")] Vec<u8>);

impl Password {
    /// A password of `bytes`.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Password {
        Password(bytes.into())
    }

    /// The password's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// A successful answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// Done, nothing to report.
    Unit,
    /// Agent status.
    Status(AgentStatus),
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
}

/// Why a request failed: a kind the client maps to an exit code, and a one-line
/// message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// One line naming what failed.
    pub message: String,
}

impl ApiError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Kinds of failure, each with a sysexits exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The request is malformed.
    Usage,
    /// A name, path or id is invalid.
    BadData,
    /// The vault, secret or revision does not exist.
    NotFound,
    /// The target exists already.
    Exists,
    /// Not allowed.
    PermissionDenied,
    /// The vault is a read-only clone.
    ReadOnly,
    /// A needed service is not available.
    Unavailable,
    /// Try again later.
    Temporary,
    /// Local I/O failed.
    Io,
    /// A bug or an unexpected state in the agent.
    Internal,
    /// The peer broke the protocol.
    Protocol,
    /// Another node answered with an error (the message says which).
    Remote,
    /// A remote node could not be reached in time.
    Unreachable,
    /// The histories diverged: a pull would not be a fast-forward.
    Conflict,
}

impl ErrorKind {
    /// The sysexits code for this kind.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Usage => 64,
            ErrorKind::BadData => 65,
            ErrorKind::NotFound => 66,
            ErrorKind::Exists => 73,
            ErrorKind::PermissionDenied | ErrorKind::ReadOnly => 77,
            ErrorKind::Unavailable => 69,
            ErrorKind::Temporary => 75,
            ErrorKind::Io => 74,
            ErrorKind::Internal => 70,
            ErrorKind::Protocol => 76,
            ErrorKind::Remote => 1,
            ErrorKind::Unreachable => 69,
            ErrorKind::Conflict => 65,
        }
    }
}
