//! Notifications, their signatures and their size limits.

use keynode_core::codec::{self, CodecError};
use keynode_core::{Keypair, NodeId, Signature, SignatureError, Tid, VaultId, VaultName};
use serde::{Deserialize, Deserializer, Serialize};

/// Longest [`NotificationData::General`] message, in bytes.
pub const MAX_MESSAGE: usize = 4 * 1024;
/// Longest encoded [`Notification`], in bytes.
pub const MAX_NOTIFICATION: usize = 16 * 1024;
/// Longest encoded [`SignedNotification`], in bytes (the notification, then a
/// length-prefixed 64-byte signature).
pub const MAX_SIGNED_NOTIFICATION: usize = MAX_NOTIFICATION + 128;
/// What a signature covers before the notification's bytes, so a notification
/// signature can never be mistaken for a signature over anything else.
pub const SIGNING_DOMAIN: &[u8] = b"keynode/notification/v1\0";

/// A notification was refused before it was signed or after it was decoded.
#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    /// A general message longer than [`MAX_MESSAGE`].
    #[error("message is {0} bytes long; the limit is {MAX_MESSAGE}")]
    MessageTooLong(usize),
    /// An encoding longer than its limit.
    #[error("notification is {size} bytes long; the limit is {limit}")]
    TooLarge {
        /// Bytes found.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes are not a notification.
    #[error("malformed notification")]
    Codec(#[source] CodecError),
}

/// What a notification says. A closed enum: new kinds are only ever added at
/// the end, so the encoding of the existing ones never changes (bincode tags a
/// variant with its index). A node that does not know a kind refuses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NotificationData {
    /// A free-form message (`notifications send`), at most [`MAX_MESSAGE`] bytes;
    /// a longer one is refused when decoded.
    General {
        /// The text.
        #[serde(deserialize_with = "bounded_message")]
        message: String,
    },
    /// The sender invites us to join its gestalt (it has granted us `claim`).
    GestaltInvite,
    /// The sender shared a vault with our gestalt.
    VaultShare {
        /// The vault's id on the sender.
        vault: VaultId,
        /// The vault's name on the sender.
        name: VaultName,
        /// What we may do with it (`clone`, `pull`).
        actions: Vec<String>,
    },
    /// The sender stopped sharing a vault with our gestalt.
    VaultUnshare {
        /// The vault's id on the sender.
        vault: VaultId,
        /// The vault's name on the sender.
        name: VaultName,
    },
    /// The sender is `old` with a renewed key: `proof` is the rotation claim
    /// signed by both keys (encoded; at most [`MAX_MESSAGE`] bytes), which the
    /// receiver checks before applying it (see keynode-agent).
    KeyRotated {
        /// The node the sender was.
        old: NodeId,
        /// The encoded rotation claim.
        #[serde(
            serialize_with = "serde_bytes::serialize",
            deserialize_with = "bounded_proof"
        )]
        proof: Vec<u8>,
    },
}

fn bounded_proof<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let b: Vec<u8> = serde_bytes::deserialize(d)?;
    if b.len() > MAX_MESSAGE {
        return Err(serde::de::Error::custom(NotificationError::MessageTooLong(
            b.len(),
        )));
    }
    Ok(b)
}

fn bounded_message<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.len() > MAX_MESSAGE {
        return Err(serde::de::Error::custom(NotificationError::MessageTooLong(
            s.len(),
        )));
    }
    Ok(s)
}

impl NotificationData {
    /// A general message, checked against [`MAX_MESSAGE`].
    pub fn general(message: impl Into<String>) -> Result<Self, NotificationError> {
        let message = message.into();
        if message.len() > MAX_MESSAGE {
            return Err(NotificationError::MessageTooLong(message.len()));
        }
        Ok(NotificationData::General { message })
    }

    /// The kind's name, for logs and listings: `general`, `gestalt-invite`,
    /// `vault-share`, `vault-unshare`.
    pub fn kind(&self) -> &'static str {
        match self {
            NotificationData::General { .. } => "general",
            NotificationData::GestaltInvite => "gestalt-invite",
            NotificationData::VaultShare { .. } => "vault-share",
            NotificationData::VaultUnshare { .. } => "vault-unshare",
            NotificationData::KeyRotated { .. } => "key-rotated",
        }
    }
}

/// One notification, from one node to one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The sender's id for it (also its outbox id on the sender).
    pub id: Tid,
    /// The sender.
    pub from: NodeId,
    /// The addressee.
    pub to: NodeId,
    /// When the sender made it, in milliseconds since the Unix epoch (the
    /// sender's clock; informative only).
    pub sent_ms: u64,
    /// What it says.
    pub data: NotificationData,
}

impl Notification {
    /// Checks the limits: the message length and the encoded size.
    pub fn check(&self) -> Result<(), NotificationError> {
        self.signing_bytes().map(drop)
    }

    /// What the sender signs: [`SIGNING_DOMAIN`] ‖ the notification's encoding.
    /// Fails if a limit is exceeded.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, NotificationError> {
        if let NotificationData::General { message } = &self.data
            && message.len() > MAX_MESSAGE
        {
            return Err(NotificationError::MessageTooLong(message.len()));
        }
        let body = codec::encode(self).map_err(NotificationError::Codec)?;
        if body.len() > MAX_NOTIFICATION {
            return Err(NotificationError::TooLarge {
                size: body.len(),
                limit: MAX_NOTIFICATION,
            });
        }
        let mut bytes = Vec::with_capacity(SIGNING_DOMAIN.len() + body.len());
        bytes.extend_from_slice(SIGNING_DOMAIN);
        bytes.extend_from_slice(&body);
        Ok(bytes)
    }

    /// Signs the notification with `key` (which should be `from`'s key).
    pub fn sign(self, key: &Keypair) -> Result<SignedNotification, NotificationError> {
        let signature = key.sign(&self.signing_bytes()?);
        Ok(SignedNotification {
            notification: self,
            signature,
        })
    }
}

/// A notification and its sender's signature: what crosses the wire and waits
/// in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedNotification {
    /// The notification.
    pub notification: Notification,
    /// `notification.from`'s signature over [`Notification::signing_bytes`].
    pub signature: Signature,
}

impl SignedNotification {
    /// Whether the signature is `notification.from`'s over the notification
    /// (and the notification is within its limits).
    pub fn verify(&self) -> Result<(), SignatureError> {
        let bytes = self
            .notification
            .signing_bytes()
            .map_err(|_| SignatureError)?;
        self.notification.from.verify(&bytes, &self.signature)
    }

    /// The wire encoding.
    pub fn to_bytes(&self) -> Result<Vec<u8>, NotificationError> {
        codec::encode(self).map_err(NotificationError::Codec)
    }

    /// Decodes untrusted bytes, refusing more than [`MAX_SIGNED_NOTIFICATION`]
    /// of them and a general message longer than [`MAX_MESSAGE`]. The signature
    /// is not checked here (see [`accept`](crate::accept)).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, NotificationError> {
        if bytes.len() > MAX_SIGNED_NOTIFICATION {
            return Err(NotificationError::TooLarge {
                size: bytes.len(),
                limit: MAX_SIGNED_NOTIFICATION,
            });
        }
        codec::decode_with_limit::<Self, MAX_SIGNED_NOTIFICATION>(bytes)
            .map_err(NotificationError::Codec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(from: &Keypair, to: NodeId, data: NotificationData) -> Notification {
        Notification {
            id: Tid::from_bytes([7; 16]).unwrap(),
            from: from.node_id(),
            to,
            sent_ms: 1_000,
            data,
        }
    }

    #[test]
    fn sign_verify_round_trip_over_the_wire() {
        let a = Keypair::generate();
        let b = Keypair::generate().node_id();
        let kinds = [
            NotificationData::general("hello").unwrap(),
            NotificationData::GestaltInvite,
            NotificationData::VaultShare {
                vault: VaultId::generate(),
                name: VaultName::new("db").unwrap(),
                actions: vec!["clone".into(), "pull".into()],
            },
            NotificationData::VaultUnshare {
                vault: VaultId::generate(),
                name: VaultName::new("db").unwrap(),
            },
        ];
        for data in kinds {
            let signed = note(&a, b, data).sign(&a).unwrap();
            assert!(signed.verify().is_ok());
            let bytes = signed.to_bytes().unwrap();
            let back = SignedNotification::from_bytes(&bytes).unwrap();
            assert_eq!(back, signed);
            assert!(back.verify().is_ok());
        }
    }

    #[test]
    fn tampering_or_another_signer_breaks_the_signature() {
        let a = Keypair::generate();
        let b = Keypair::generate().node_id();
        let signed = note(&a, b, NotificationData::general("pay bob").unwrap())
            .sign(&a)
            .unwrap();
        let mut tampered = signed.clone();
        tampered.notification.data = NotificationData::general("pay eve").unwrap();
        assert!(tampered.verify().is_err());
        let mut readdressed = signed.clone();
        readdressed.notification.to = Keypair::generate().node_id();
        assert!(readdressed.verify().is_err());
        // The signature is over the domain-separated bytes, not the bare encoding.
        let bare = codec::encode(&signed.notification).unwrap();
        let raw = SignedNotification {
            notification: signed.notification.clone(),
            signature: a.sign(&bare),
        };
        assert!(raw.verify().is_err());
    }

    #[test]
    fn message_cap_on_construction_signing_and_decoding() {
        let a = Keypair::generate();
        let b = Keypair::generate().node_id();
        assert!(NotificationData::general("x".repeat(MAX_MESSAGE)).is_ok());
        assert!(matches!(
            NotificationData::general("x".repeat(MAX_MESSAGE + 1)),
            Err(NotificationError::MessageTooLong(n)) if n == MAX_MESSAGE + 1
        ));
        // Built around the constructor: signing refuses it.
        let long = NotificationData::General {
            message: "x".repeat(MAX_MESSAGE + 1),
        };
        let n = note(&a, b, long);
        assert!(matches!(
            n.clone().sign(&a),
            Err(NotificationError::MessageTooLong(_))
        ));
        // Encoded by a peer that ignores the cap: decoding refuses it.
        let forged = SignedNotification {
            notification: n,
            signature: Signature::from_bytes([0; 64]),
        };
        let bytes = codec::encode(&forged).unwrap();
        assert!(bytes.len() < MAX_SIGNED_NOTIFICATION);
        assert!(matches!(
            SignedNotification::from_bytes(&bytes),
            Err(NotificationError::Codec(_))
        ));
        assert!(codec::decode::<SignedNotification>(&bytes).is_err());
    }

    #[test]
    fn size_cap_on_signing_and_decoding() {
        let a = Keypair::generate();
        let b = Keypair::generate().node_id();
        let share = NotificationData::VaultShare {
            vault: VaultId::generate(),
            name: VaultName::new("db").unwrap(),
            actions: vec!["clone".repeat(100); 40],
        };
        let n = note(&a, b, share);
        assert!(matches!(
            n.clone().sign(&a),
            Err(NotificationError::TooLarge {
                limit: MAX_NOTIFICATION,
                ..
            })
        ));
        let forged = SignedNotification {
            notification: n,
            signature: Signature::from_bytes([0; 64]),
        };
        let bytes = codec::encode(&forged).unwrap();
        assert!(matches!(
            SignedNotification::from_bytes(&bytes),
            Err(NotificationError::TooLarge { .. })
        ));
        // Garbage and truncations never panic.
        assert!(SignedNotification::from_bytes(&bytes[..100]).is_err());
        assert!(SignedNotification::from_bytes(&[0xff; 64]).is_err());
    }
}
