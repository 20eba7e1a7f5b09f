//! The client protocol: what the CLI (or any local client) and the agent say over
//! the agent's Unix socket.
//!
//! Each message is one length-delimited frame (4-byte big-endian length, at most
//! [`MAX_FRAME`] bytes) holding a [`ClientMsg`] or a [`ServerMsg`] in the
//! [`keynode_core::codec`] encoding. A connection opens with `Hello` both ways
//! carrying [`PROTOCOL_VERSION`]; then the client sends a [`Request`] and the
//! agent answers with a [`Response`] or an [`ApiError`]. Uploads (`SecretsWrite`,
//! `SecretsDir`) follow the request with `Data` frames and a final `End`; downloads
//! (`SecretsGet`) answer `Response::Streaming`, then `Data` frames, then `End` (or an
//! `Error`). Then the next request may follow on the same connection, one at a
//! time: the agent keeps the connection after an answer and after refusing a
//! unary request or a download, and closes it after a refused upload, a watch,
//! a protocol error, 30 s without a request, or when it stops. The enums are
//! closed and only ever grow at the end; a peer speaking another version is
//! refused at `Hello`.

use keynode_core::{GestaltId, IdentityId, NodeId, ProviderId, SecretPath, Tid, VaultName};
use serde::{Deserialize, Serialize};

mod error;
mod types;

pub use error::{ApiError, ErrorKind};
pub use types::*;

/// Version of this protocol.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest frame either side accepts, in bytes.
pub const MAX_FRAME: usize = 1024 * 1024 + 4096;
/// Size of the data chunks streams are cut into, in bytes.
pub const CHUNK: usize = 64 * 1024;

/// The framing both sides use: length-delimited frames of at most
/// [`MAX_FRAME`] bytes.
pub fn codec() -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// A frame from client to agent.
#[derive(Debug, Serialize, Deserialize)]
pub enum ClientMsg {
    /// Opens the connection.
    Hello {
        /// The client's [`PROTOCOL_VERSION`].
        version: u16,
    },
    /// A request (the next on the connection, once the last one ended).
    Request(Request),
    /// A chunk of upload data.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Starts the next file of a `SecretsDir` upload.
    FileStart {
        /// Path relative to the import's target.
        path: SecretPath,
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
/// variant name in snake case, `vaults_clone`) for logs and metrics: a
/// request itself carries names and secrets.
#[derive(Debug, Clone, Serialize, Deserialize, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Request {
    /// The agent's status.
    AgentStatus,
    /// Stop the agent gracefully.
    AgentStop,
    /// Create a vault.
    VaultsCreate {
        /// Name of the new vault.
        name: VaultName,
    },
    /// List vaults.
    VaultsList,
    /// Rename a vault.
    VaultsRename {
        /// Vault name or id.
        vault: String,
        /// New name.
        new_name: VaultName,
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
        path: SecretPath,
        /// Fail if the secret exists (`secrets create`).
        create_new: bool,
    },
    /// Read a secret (streamed back).
    SecretsGet {
        /// Vault name or id.
        vault: String,
        /// Secret path.
        path: SecretPath,
        /// Read this version instead of the head.
        at: Option<String>,
    },
    /// List a directory.
    SecretsList {
        /// Vault name or id.
        vault: String,
        /// Directory (vault root if absent).
        path: Option<SecretPath>,
        /// List this version instead of the head.
        at: Option<String>,
    },
    /// Make a directory.
    SecretsMkdir {
        /// Vault name or id.
        vault: String,
        /// Directory path.
        path: SecretPath,
        /// Create missing parents too.
        parents: bool,
    },
    /// Rename a secret or directory within its directory.
    SecretsRename {
        /// Vault name or id.
        vault: String,
        /// Current path.
        path: SecretPath,
        /// New last segment.
        new_name: String,
    },
    /// Remove secrets (one commit).
    SecretsRm {
        /// Vault name or id.
        vault: String,
        /// Paths to remove.
        paths: Vec<SecretPath>,
        /// Remove directories with their contents.
        recursive: bool,
    },
    /// Describe a secret.
    SecretsStat {
        /// Vault name or id.
        vault: String,
        /// Secret path.
        path: SecretPath,
        /// This version instead of the head.
        at: Option<String>,
    },
    /// Import files as one commit; `FileStart`/`Data` frames and `End` follow.
    SecretsDir {
        /// Vault name or id.
        vault: String,
        /// Target directory (vault root if absent).
        path: Option<SecretPath>,
    },
    /// Secrets as environment variables.
    SecretsEnv {
        /// `(vault, path)` pairs; a directory or the vault root expands to every
        /// secret below it.
        refs: Vec<(String, Option<SecretPath>)>,
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
    /// Refuses `node`'s key from now on (a key that may be stolen). Answers
    /// `Unit`.
    NodesRevoke {
        /// The node.
        node: NodeId,
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
        gestalt: GestaltId,
    },
    /// Stop trusting a gestalt.
    IdentitiesUntrust {
        /// A node id or `provider:identity`.
        gestalt: GestaltId,
    },
    /// Grant a gestalt action (`notify`, `scan`, `claim`).
    IdentitiesAllow {
        /// A node id or `provider:identity`.
        gestalt: GestaltId,
        /// The action.
        action: GestaltAction,
    },
    /// Revoke a gestalt action.
    IdentitiesDisallow {
        /// A node id or `provider:identity`.
        gestalt: GestaltId,
        /// The action.
        action: GestaltAction,
    },
    /// A gestalt's permissions.
    IdentitiesPermissions {
        /// A node id or `provider:identity`.
        gestalt: GestaltId,
    },
    /// Invite a node to join our gestalt (grants it `claim`).
    IdentitiesInvite {
        /// The node.
        node: NodeId,
    },
    /// Discover a gestalt now.
    IdentitiesDiscover {
        /// A node id or `provider:identity`.
        gestalt: GestaltId,
    },
    /// Every known gestalt.
    IdentitiesList,
    /// One gestalt.
    IdentitiesGet {
        /// A node id or `provider:identity`.
        gestalt: GestaltId,
    },
    /// Authenticate to an identity provider.
    IdentitiesAuthenticate {
        /// The provider's id.
        provider: ProviderId,
    },
    /// Claim an identity: a claim in our sigchain, published on the provider.
    IdentitiesClaim {
        /// The provider.
        provider: ProviderId,
        /// The identity on it.
        identity: IdentityId,
    },
    /// Share a vault with a node's gestalt (clone, pull, scan) and notify it.
    VaultsShare {
        /// Vault name or id.
        vault: String,
        /// A node of the gestalt, or a person's identity
        /// (`provider:identity`, discovered through its provider first).
        to: GestaltId,
    },
    /// Stop sharing a vault with a gestalt and notify it.
    VaultsUnshare {
        /// Vault name or id.
        vault: String,
        /// A node of the gestalt, or an identity in it.
        to: GestaltId,
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
        /// Whether the clone follows its remote (pulls by itself when the
        /// remote announces a new head); the CLI's default is yes.
        follow: bool,
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
        new_name: Option<VaultName>,
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
        id: Tid,
    },
    /// Empty the inbox.
    NotificationsInboxClear,
    /// Notifications waiting to be delivered.
    NotificationsOutboxRead,
    /// Drop one queued notification.
    NotificationsOutboxRemove {
        /// Its id.
        id: Tid,
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
    /// Signs a file's BLAKE2b-256 digest with the node's key
    /// ([`keynode_core::filesig`]). Answers `Signed`.
    KeysSign {
        /// The digest.
        digest: [u8; 32],
    },
    /// Opens a message encrypted to this node ([`keynode_core::encrypt`]).
    /// Answers `Decrypted`; one that is not for this node is `BadData`.
    KeysDecrypt {
        /// The sealed message.
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
    },
    /// A consistent backup of the whole node into a new file at `path` (an
    /// absolute path on the agent's machine), written while the node keeps
    /// serving. Answers `BackupCreated`.
    BackupCreate {
        /// Where to write it; must not exist.
        path: std::path::PathBuf,
    },
    /// Seals the root key under `new` without the current password: `code`
    /// must be the node's recovery code (the 24 words). Answers `Unit`; a
    /// code that does not read is `BadData` (naming the word), another node's
    /// code `PermissionDenied`; nothing changes on either.
    AgentRecover {
        /// The recovery code's words.
        code: Password,
        /// The password to seal the root key under from now on (not empty).
        new: Password,
    },
    /// Where `node` may be found: the address book with each address's
    /// source, then the DHT (looked up now). Answers `Found`.
    NodesFind {
        /// The node.
        node: NodeId,
    },
    /// Makes a clone follow its remote, or stop following (`Unit`).
    VaultsFollow {
        /// The clone, name or id.
        vault: String,
        /// Follow (`true`) or not.
        follow: bool,
    },
    /// Watches vaults: answers `Watching` with their heads, then a
    /// `HeadChanged` each time one of them moves (a local write or a pulled
    /// change), until the client closes the connection or the agent stops
    /// (`End`). Nothing else is sent; the client sends nothing more.
    VaultsWatch {
        /// Vault names or ids (at most [`MAX_WATCHED`]).
        vaults: Vec<String>,
    },
    /// Notifications from senders we do not trust, held apart
    /// (`Notifications`; nothing is marked read).
    NotificationsQuarantineRead {
        /// At most this many.
        limit: Option<u32>,
        /// Newest first (else oldest first).
        newest_first: bool,
    },
    /// Trusts a sender's gestalt (`notify`) and moves what it sent from the
    /// quarantine into the inbox (`Moved`).
    NotificationsAccept {
        /// The sender.
        node: NodeId,
    },
    /// Drops what a sender left in the quarantine and every later
    /// notification from it while it is untrusted (`Removed`).
    NotificationsBlock {
        /// The sender.
        node: NodeId,
    },
    /// Stops blocking a sender (`Unit`; NotFound if it was not blocked).
    NotificationsUnblock {
        /// The sender.
        node: NodeId,
    },
}

impl Request {
    /// Whether the agent closes the connection when it refuses this request,
    /// whatever the refusal: an upload (`SecretsWrite`, `SecretsDir`) may
    /// still have frames on their way, which must never be read as the next
    /// request, and a watch holds its connection to the end. Other requests
    /// keep it unless the refusal's kind ends it
    /// ([`ErrorKind::ends_connection`]).
    pub fn ends_connection_when_refused(&self) -> bool {
        matches!(
            self,
            Request::SecretsWrite { .. } | Request::SecretsDir { .. } | Request::VaultsWatch { .. }
        )
    }
}

/// Most vaults one `VaultsWatch` may name.
pub const MAX_WATCHED: usize = 256;

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
