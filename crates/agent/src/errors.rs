//! One way to ask an actor, and what each failure means to a client or a peer.
//!
//! Every store actor answers `Result<T, E>`, and the mailbox can fail around
//! it. [`Ask::ask`] flattens both layers into an [`ApiError`] in one place: a
//! domain error becomes its [`Failure::api`] (a kind and a message for the local
//! client), a stopped actor `Unavailable`. Peers are told less: [`to_peer`]
//! gives them a kind and a fixed message, and the detail goes to the local log
//! (and, through the caller, to the audit log).

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, MailboxError, Message};
use keynode_net::{NetError, RpcError, WireError, WireErrorKind};

use crate::api::{ApiError, ErrorKind};

/// What a client is told when the node's state has no room left.
pub const STATE_FULL: &str = "the node's state is full: writes are refused, reads still work; \
     restart the agent with a larger --max-state-bytes (see `agent status`, storage_used_percent)";

/// Whether `e`, or an error under it, is LMDB's map being spent.
pub(crate) fn is_state_full(e: &(dyn std::error::Error + 'static)) -> bool {
    use keynode_core::store::heed3::{Error, MdbError};
    let mut at = Some(e);
    while let Some(e) = at {
        if matches!(
            e.downcast_ref::<Error>(),
            Some(Error::Mdb(MdbError::MapFull))
        ) {
            return true;
        }
        at = e.source();
    }
    false
}

/// A failure of a node component, as the local client is told it.
pub(crate) trait Failure: std::error::Error + 'static {
    /// What kind of failure it is.
    fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }

    /// The client's view: the kind and the message (for any component: a
    /// state with no room left is said so).
    fn api(self) -> ApiError
    where
        Self: Sized,
    {
        if is_state_full(&self) {
            return ApiError::new(ErrorKind::Io, STATE_FULL);
        }
        ApiError::new(self.kind(), self.to_string())
    }
}

impl Failure for ApiError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }

    fn api(self) -> ApiError {
        self
    }
}

impl Failure for keynode_vaults::VaultError {
    fn kind(&self) -> ErrorKind {
        use keynode_vaults::VaultError as V;
        match self {
            V::VaultNotFound(_) | V::SecretNotFound(_) | V::BadRevision(_) => ErrorKind::NotFound,
            V::VaultExists(_) | V::SecretExists(_) => ErrorKind::Exists,
            V::IsADirectory(_) | V::NotADirectory(_) | V::DirectoryNotEmpty(_) => {
                ErrorKind::BadData
            }
            V::ParentNotFound(_) => ErrorKind::NotFound,
            V::ReadOnly(_) => ErrorKind::ReadOnly,
            V::Diverged { .. } => ErrorKind::Conflict,
            V::NotAClone(_) => ErrorKind::Usage,
            V::BadPack(_) | V::MissingHead(_) | V::BadTree(_) => ErrorKind::Protocol,
            V::VaultTooLarge { .. } => ErrorKind::BadData,
            V::Io(_) => ErrorKind::Io,
            _ => ErrorKind::Internal,
        }
    }
}

impl Failure for keynode_acl::AclError {}
impl Failure for keynode_gestalt::GraphError {}
impl Failure for keynode_gestalt::DiscoveryError {}
impl Failure for keynode_gestalt::SigchainError {}
impl Failure for keynode_notify::StoreError {}

impl Failure for keynode_notify::BlockError {
    fn kind(&self) -> ErrorKind {
        match self {
            keynode_notify::BlockError::Full { .. } => ErrorKind::Unavailable,
            keynode_notify::BlockError::Store(_) => ErrorKind::Internal,
        }
    }
}
impl Failure for keynode_net::BookError {}
impl Failure for keynode_core::exec::JobFailed {}

impl Failure for keynode_notify::SendError {
    fn kind(&self) -> ErrorKind {
        match self {
            keynode_notify::SendError::Invalid(_) => ErrorKind::BadData,
            keynode_notify::SendError::Store(_) => ErrorKind::Internal,
        }
    }
}

impl Failure for keynode_audit::AuditError {
    fn kind(&self) -> ErrorKind {
        match self {
            keynode_audit::AuditError::Tampered { .. } => ErrorKind::BadData,
            _ => ErrorKind::Internal,
        }
    }
}

impl Failure for NetError {
    fn kind(&self) -> ErrorKind {
        match self {
            NetError::Remote(w) => match w.kind {
                WireErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
                WireErrorKind::NotFound => ErrorKind::NotFound,
                _ => ErrorKind::Remote,
            },
            NetError::NoAddress(_) => ErrorKind::NotFound,
            NetError::UnexpectedPeer { .. } => ErrorKind::PermissionDenied,
            NetError::Unreachable { .. }
            | NetError::Timeout { .. }
            | NetError::ConnectionClosed(_)
            | NetError::Handshake { .. }
            | NetError::NoResponse(_) => ErrorKind::Unreachable,
            NetError::Shutdown => ErrorKind::Unavailable,
            // A stream cut by the network is unreachability; a peer that sends
            // what cannot be decoded breaks the protocol.
            NetError::Rpc { source, .. } => match source {
                RpcError::Io(_) | RpcError::Truncated => ErrorKind::Unreachable,
                _ => ErrorKind::Protocol,
            },
            _ => ErrorKind::Internal,
        }
    }

    /// The whole cause chain (errors from the other node say so), and how to
    /// fix a missing address.
    fn api(self) -> ApiError {
        let kind = self.kind();
        let mut message = self.to_string();
        let mut source = std::error::Error::source(&self);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        if let NetError::NoAddress(_) = self {
            message.push_str("; add it with `keynode nodes add NODE_ID HOST PORT`");
        }
        ApiError::new(kind, message)
    }
}

/// A failure on a stream to `node`: the peer's own error as it sent it, any
/// other as a stream failure naming the node.
pub(crate) fn rpc_failure(node: keynode_core::NodeId, e: RpcError) -> ApiError {
    match e {
        RpcError::Remote(w) => NetError::Remote(w).api(),
        source => NetError::Rpc { node, source }.api(),
    }
}

/// What an actor's reply means to a client.
pub(crate) trait Reply {
    /// The value on success.
    type Value;
    /// The reply, flattened.
    fn flatten(self) -> Result<Self::Value, ApiError>;
}

impl<T, E: Failure> Reply for Result<T, E> {
    type Value = T;

    fn flatten(self) -> Result<T, ApiError> {
        self.map_err(Failure::api)
    }
}

impl<T> Reply for Vec<T> {
    type Value = Vec<T>;

    fn flatten(self) -> Result<Vec<T>, ApiError> {
        Ok(self)
    }
}

/// A stopped actor: the request cannot be served now.
pub(crate) fn gone<A>(e: MailboxError) -> ApiError {
    let name = std::any::type_name::<A>();
    let name = name.split('<').next().unwrap_or(name);
    let name = name.rsplit("::").next().unwrap_or(name);
    tracing::warn!(actor = name, error = %e, "an actor did not answer");
    ApiError::new(
        ErrorKind::Unavailable,
        format!("a node service ({name}) is not running"),
    )
}

/// Asking an actor, with both failure layers flattened.
pub(crate) trait Ask<A: Actor> {
    /// Sends `msg` and waits for the answer.
    async fn ask<M>(&self, msg: M) -> Result<<M::Result as Reply>::Value, ApiError>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Reply + Send;

    /// Sends `msg` and returns its answer unflattened (for a caller that tells
    /// the domain errors apart); only a stopped actor is an [`ApiError`].
    async fn ask_raw<M>(&self, msg: M) -> Result<M::Result, ApiError>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send;
}

impl<A: Actor> Ask<A> for Addr<A> {
    async fn ask<M>(&self, msg: M) -> Result<<M::Result as Reply>::Value, ApiError>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Reply + Send,
    {
        self.send(msg).await.map_err(gone::<A>)?.flatten()
    }

    async fn ask_raw<M>(&self, msg: M) -> Result<M::Result, ApiError>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        self.send(msg).await.map_err(gone::<A>)
    }
}

/// What a peer is told when serving it failed here: the kind and a fixed
/// message, never the local error's text. The log gets the kind only (an
/// error's text may hold vault names or secret paths, and logs carry kinds,
/// never names); callers that know the peer record the detail in the
/// (encrypted) audit log.
pub(crate) fn to_peer(kind: WireErrorKind, detail: &dyn std::fmt::Display) -> WireError {
    let _ = detail;
    tracing::warn!(?kind, "serving a peer failed");
    WireError::new(kind, fixed_message(kind))
}

/// The one message a peer gets for each kind of failure.
pub(crate) fn fixed_message(kind: WireErrorKind) -> &'static str {
    match kind {
        WireErrorKind::PermissionDenied => "permission denied",
        WireErrorKind::NotFound => "not found",
        WireErrorKind::BadRequest => "bad request",
        WireErrorKind::Unavailable => "unavailable, try again later",
        _ => "internal error",
    }
}
