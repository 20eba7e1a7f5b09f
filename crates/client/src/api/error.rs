//! Why a request failed.

use serde::{Deserialize, Serialize};

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
/// [`IntoStaticStr`](strum::IntoStaticStr) names each in snake case
/// (`not_found`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
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
    /// Whether the agent closes the client's connection after refusing a
    /// request with this kind: a broken protocol or connection leaves the two
    /// sides out of step; any other refusal of a unary request or a download
    /// leaves the connection ready for the next request (see
    /// [`Request::ends_connection_when_refused`](super::Request::ends_connection_when_refused)).
    pub fn ends_connection(self) -> bool {
        matches!(self, ErrorKind::Protocol | ErrorKind::Io)
    }

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
