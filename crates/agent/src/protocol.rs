//! What nodes ask each other: the messages of the agent's service on the
//! network (docs/PROTOCOL.md).
//!
//! Every request arrives on its own stream with the caller's NodeId proven by the
//! Noise handshake; nothing in a message body is trusted to say who is asking.
//! Messages are closed enums that only grow at the end.

use keynode_gestalt::SignedClaim;
use keynode_notify::SignedNotification;
use serde::{Deserialize, Serialize};

/// A request from another node. [`IntoStaticStr`](strum::IntoStaticStr)
/// gives its kind in snake case (`vault_open`), for metrics.
#[derive(Debug, Clone, Serialize, Deserialize, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum PeerRequest {
    /// Our sigchain entries after `after` (all when `None`).
    Chain {
        /// The last entry the caller has.
        after: Option<u64>,
    },
    /// The caller proposes a node link (`half`: for its chain, signed by it) and
    /// asks for our countersignature and our own proposal. Needs `claim`.
    LinkPropose {
        /// The caller's half-signed claim naming us as `node2`.
        half: SignedClaim,
    },
    /// The caller's countersignature of our proposal (same stream, after
    /// `LinkProposed`).
    LinkFinish {
        /// Our proposal, now signed by both.
        full: SignedClaim,
    },
    /// A notification for us, signed by the caller. Accepted only from a
    /// trusted (`notify`) gestalt; every refusal looks the same.
    Notify {
        /// The notification.
        signed: SignedNotification,
    },
    /// The vaults we share with the caller's gestalt. Needs `scan`.
    Scan,
    /// Opens a vault for a clone or a pull (by name or id). Needs that action
    /// on the vault; answered with an `Advert`, then the caller sends
    /// `VaultWant`.
    VaultOpen {
        /// Vault name or id.
        vault: String,
        /// `clone` or `pull`.
        action: keynode_acl::VaultAction,
    },
    /// What the caller wants after an `Advert`: the head (or nothing when up to
    /// date) and the commits it has. Answered with `PackChunk`s and `PackEnd`.
    VaultWant {
        /// The advertised head, or `None` when the caller has it.
        want: Option<String>,
        /// Commits the caller has (at most 1,024).
        haves: Vec<String>,
    },
    /// The caller listens for other nodes on `port`, at the address its
    /// connection comes from. A node that knows the caller records it as a
    /// learned address (a node that moved is dialed there); a stranger's is
    /// ignored. Answered with `Noted`.
    ListenAt {
        /// The caller's listening port.
        port: u16,
    },
    /// The caller follows these vaults of ours (their ids here; at most
    /// [`MAX_FOLLOWED`], no repeats). Answered at once with `Heads` (each
    /// vault's head, or `None` where the caller may not pull it: one answer
    /// for "no such vault" and "not shared"), then with another `Heads` each
    /// time a followed vault moves, while the stream stays open and the
    /// caller may still pull it. A vault the caller may no longer pull is
    /// announced once as `None` and dropped; when none is left, or the caller
    /// sends anything, the stream ends. Announcements carry no data.
    Follow {
        /// Our ids of the vaults followed.
        vaults: Vec<keynode_core::VaultId>,
    },
    /// The caller's gestalt gained a node: a hint that we may want to
    /// discover it again (we decide, and verify everything ourselves; a
    /// stranger's is ignored). `members` names the gestalt's nodes (at most
    /// [`MAX_HINTED_MEMBERS`](crate::growth::MAX_HINTED_MEMBERS)) and where
    /// the caller reaches them. Answered with `Noted` at once.
    GestaltGrew {
        /// The caller's gestalt's other nodes.
        members: Vec<crate::growth::MemberHint>,
    },
}

/// Most vaults one `Follow` may name.
pub const MAX_FOLLOWED: usize = 1024;

/// A followed vault's head, as `Heads` announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowedHead {
    /// The vault's id on the announcing node.
    pub vault: keynode_core::VaultId,
    /// Its head (40 hex digits), or `None`: the caller may not pull it.
    pub head: Option<String>,
}

/// An answer to a [`PeerRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // sent once per stream, never stored
pub enum PeerResponse {
    /// Sigchain entries, oldest first.
    Chain(Vec<SignedClaim>),
    /// The caller's claim countersigned, and our proposal for our chain.
    LinkProposed {
        /// The caller's claim, signed by both.
        countersigned: SignedClaim,
        /// Our half-signed claim naming the caller as `node2`.
        proposal: SignedClaim,
    },
    /// The link is in both chains.
    LinkFinished,
    /// The notification was accepted.
    Notified,
    /// Vaults shared with the caller.
    Scanned(Vec<crate::api::ScanEntry>),
    /// A vault's id, name and head.
    Advert(keynode_vaults::Advert),
    /// A piece of a pack (≤ 64 KiB).
    PackChunk(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The pack is complete.
    PackEnd(keynode_vaults::PackStats),
    /// The caller's listening address was taken note of (or ignored).
    Noted,
    /// Heads of followed vaults (see `Follow`).
    Heads(Vec<FollowedHead>),
}

impl PeerResponse {
    /// The variant's name, for errors about answers out of turn.
    pub fn name(&self) -> &'static str {
        match self {
            PeerResponse::Chain(_) => "Chain",
            PeerResponse::LinkProposed { .. } => "LinkProposed",
            PeerResponse::LinkFinished => "LinkFinished",
            PeerResponse::Notified => "Notified",
            PeerResponse::Scanned(_) => "Scanned",
            PeerResponse::Advert(_) => "Advert",
            PeerResponse::PackChunk(_) => "PackChunk",
            PeerResponse::PackEnd(_) => "PackEnd",
            PeerResponse::Noted => "Noted",
            PeerResponse::Heads(_) => "Heads",
        }
    }
}
