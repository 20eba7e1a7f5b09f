//! Entries, events and their hashes and signatures.

use keynode_core::codec::{CodecError, encode};
use keynode_core::{NodeId, Signature, VaultId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of every signed entry message (domain separation).
pub const SIGN_DOMAIN: &[u8] = b"keynode-audit-entry-v1\0";
/// Prefix of every entry hash input (domain separation).
pub const HASH_DOMAIN: &[u8] = b"keynode-audit-hash-v1\0";

/// What a peer was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferOp {
    /// The list of vaults shared with it.
    Scan,
    /// A whole vault.
    Clone,
    /// New history of a vault.
    Pull,
}

impl std::fmt::Display for TransferOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransferOp::Scan => "scan",
            TransferOp::Clone => "clone",
            TransferOp::Pull => "pull",
        })
    }
}

/// What happened. A closed enum encoded by variant index: new variants go at
/// the end only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditEvent {
    /// A vault was shared with a node's gestalt.
    VaultShared {
        /// The vault.
        vault: VaultId,
        /// The node it was shared with.
        node: NodeId,
    },
    /// A vault was unshared.
    VaultUnshared {
        /// The vault.
        vault: VaultId,
        /// The node it was unshared from.
        node: NodeId,
    },
    /// A gestalt action was granted.
    Allowed {
        /// The gestalt member, as text.
        gestalt: String,
        /// The action.
        action: String,
    },
    /// A gestalt action was revoked.
    Disallowed {
        /// The gestalt member, as text.
        gestalt: String,
        /// The action.
        action: String,
    },
    /// A gestalt was trusted (`notify` granted).
    Trusted {
        /// The gestalt member, as text.
        gestalt: String,
    },
    /// A gestalt was untrusted.
    Untrusted {
        /// The gestalt member, as text.
        gestalt: String,
    },
    /// A node–node claim completed (recorded by both the claimer and the target).
    Claimed {
        /// The other node.
        node: NodeId,
    },
    /// A peer was served a scan, clone or pull.
    Served {
        /// The peer, as proven by the handshake.
        peer: NodeId,
        /// What it was served.
        op: TransferOp,
        /// The vault (none for a scan).
        vault: Option<VaultId>,
    },
    /// A peer's request was refused.
    Refused {
        /// The peer, as proven by the handshake.
        peer: NodeId,
        /// What it asked for (`scan`, `clone`, `pull`, `claim`, `notification`).
        op: String,
        /// Why it was refused.
        reason: String,
    },
    /// The password sealing the node's root key was changed through the agent.
    PasswordChanged,
    /// Serving a peer failed on this node's side (the peer was told only the
    /// kind of failure; the detail is here).
    ServeFailed {
        /// The peer, as proven by the handshake.
        peer: NodeId,
        /// What it asked for.
        op: String,
        /// What went wrong here.
        error: String,
    },
    /// Refusals gathered over a window after the first (recorded on its own):
    /// how many, from whom (`None`: peers beyond those told apart), between
    /// when and when.
    RefusedRepeatedly {
        /// The peer, when told apart.
        peer: Option<NodeId>,
        /// What was asked for.
        op: String,
        /// Why it was refused.
        reason: String,
        /// Refusals counted.
        count: u64,
        /// The first, in milliseconds since the Unix epoch.
        first_ms: u64,
        /// The last.
        last_ms: u64,
    },
    /// We countersigned a peer's link claim (the peer now holds a claim
    /// signed by both of us, whether or not it finishes the exchange).
    Countersigned {
        /// The peer.
        node: NodeId,
    },
    /// A node's key was renewed (a rotation claim signed by both keys was
    /// applied): `old` is refused from now on, `new` holds what it held.
    KeyRotated {
        /// The renewed key's node.
        old: NodeId,
        /// The new key's node.
        new: NodeId,
    },
    /// A node's key was revoked here (`nodes revoke`): refused from now on.
    Revoked {
        /// The node.
        node: NodeId,
    },
    /// A vault was shared with a person's gestalt (`provider:identity`).
    VaultSharedWith {
        /// The vault.
        vault: VaultId,
        /// The identity, as text.
        gestalt: String,
    },
    /// A vault was unshared from a person's gestalt.
    VaultUnsharedFrom {
        /// The vault.
        vault: VaultId,
        /// The identity, as text.
        gestalt: String,
    },
}

impl AuditEvent {
    /// The event's kind, as text (`vault_shared`, `served`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            AuditEvent::VaultShared { .. } => "vault_shared",
            AuditEvent::VaultUnshared { .. } => "vault_unshared",
            AuditEvent::Allowed { .. } => "allowed",
            AuditEvent::Disallowed { .. } => "disallowed",
            AuditEvent::Trusted { .. } => "trusted",
            AuditEvent::Untrusted { .. } => "untrusted",
            AuditEvent::Claimed { .. } => "claimed",
            AuditEvent::Served { .. } => "served",
            AuditEvent::Refused { .. } => "refused",
            AuditEvent::PasswordChanged => "password_changed",
            AuditEvent::ServeFailed { .. } => "serve_failed",
            AuditEvent::RefusedRepeatedly { .. } => "refused_repeatedly",
            AuditEvent::Countersigned { .. } => "countersigned",
            AuditEvent::KeyRotated { .. } => "key_rotated",
            AuditEvent::Revoked { .. } => "revoked",
            AuditEvent::VaultSharedWith { .. } => "vault_shared",
            AuditEvent::VaultUnsharedFrom { .. } => "vault_unshared",
        }
    }

    /// The other node involved, if any.
    pub fn peer(&self) -> Option<NodeId> {
        match self {
            AuditEvent::VaultShared { node, .. }
            | AuditEvent::VaultUnshared { node, .. }
            | AuditEvent::Claimed { node } => Some(*node),
            AuditEvent::Served { peer, .. }
            | AuditEvent::Refused { peer, .. }
            | AuditEvent::ServeFailed { peer, .. } => Some(*peer),
            AuditEvent::RefusedRepeatedly { peer, .. } => *peer,
            AuditEvent::Countersigned { node } => Some(*node),
            _ => None,
        }
    }

    /// The event's fields as `(name, value)` text pairs (peers included).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        match self {
            AuditEvent::VaultShared { vault, node } | AuditEvent::VaultUnshared { vault, node } => {
                vec![("vault", vault.to_string()), ("node", node.to_string())]
            }
            AuditEvent::Allowed { gestalt, action }
            | AuditEvent::Disallowed { gestalt, action } => {
                vec![("gestalt", gestalt.clone()), ("action", action.clone())]
            }
            AuditEvent::Trusted { gestalt } | AuditEvent::Untrusted { gestalt } => {
                vec![("gestalt", gestalt.clone())]
            }
            AuditEvent::Claimed { node }
            | AuditEvent::Countersigned { node }
            | AuditEvent::Revoked { node } => {
                vec![("node", node.to_string())]
            }
            AuditEvent::KeyRotated { old, new } => {
                vec![("old", old.to_string()), ("new", new.to_string())]
            }
            AuditEvent::VaultSharedWith { vault, gestalt }
            | AuditEvent::VaultUnsharedFrom { vault, gestalt } => {
                vec![("vault", vault.to_string()), ("gestalt", gestalt.clone())]
            }
            AuditEvent::Served { peer, op, vault } => {
                let mut f = vec![("peer", peer.to_string()), ("op", op.to_string())];
                if let Some(v) = vault {
                    f.push(("vault", v.to_string()));
                }
                f
            }
            AuditEvent::Refused { peer, op, reason } => vec![
                ("peer", peer.to_string()),
                ("op", op.clone()),
                ("reason", reason.clone()),
            ],
            AuditEvent::PasswordChanged => Vec::new(),
            AuditEvent::ServeFailed { peer, op, error } => vec![
                ("peer", peer.to_string()),
                ("op", op.clone()),
                ("error", error.clone()),
            ],
            AuditEvent::RefusedRepeatedly {
                peer,
                op,
                reason,
                count,
                first_ms,
                last_ms,
            } => vec![
                (
                    "peer",
                    peer.map_or_else(|| "others".into(), |p| p.to_string()),
                ),
                ("op", op.clone()),
                ("reason", reason.clone()),
                ("count", count.to_string()),
                ("first_ms", first_ms.to_string()),
                ("last_ms", last_ms.to_string()),
            ],
        }
    }
}

/// One signed entry of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 0.
    pub seq: u64,
    /// [`entry_hash`] of the previous entry; zeros for the first.
    pub prev: [u8; 32],
    /// When it was appended, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// What happened.
    pub event: AuditEvent,
    /// The node's signature over [`signed_bytes`].
    pub signature: Signature,
}

/// The entry without its signature, as signed.
#[derive(Serialize)]
struct Unsigned<'a> {
    seq: u64,
    prev: &'a [u8; 32],
    time_ms: u64,
    event: &'a AuditEvent,
}

/// The message the node signs for an entry: [`SIGN_DOMAIN`] ‖ the encoding of
/// `{ seq, prev, time_ms, event }`.
pub fn signed_bytes(
    seq: u64,
    prev: &[u8; 32],
    time_ms: u64,
    event: &AuditEvent,
) -> Result<Vec<u8>, CodecError> {
    let mut out = SIGN_DOMAIN.to_vec();
    out.extend(encode(&Unsigned {
        seq,
        prev,
        time_ms,
        event,
    })?);
    Ok(out)
}

/// The hash that links the next entry to `entry`: SHA-256 of [`HASH_DOMAIN`] ‖
/// the encoding of the whole signed entry.
pub fn entry_hash(entry: &AuditEntry) -> Result<[u8; 32], CodecError> {
    let mut h = Sha256::new();
    h.update(HASH_DOMAIN);
    h.update(encode(entry)?);
    Ok(h.finalize().into())
}

impl AuditEntry {
    /// Checks the signature against `owner`.
    pub fn verify_signature(&self, owner: &NodeId) -> bool {
        match signed_bytes(self.seq, &self.prev, self.time_ms, &self.event) {
            Ok(msg) => owner.verify(&msg, &self.signature).is_ok(),
            Err(_) => false,
        }
    }
}
