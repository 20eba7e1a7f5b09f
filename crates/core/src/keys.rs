//! Ed25519 keys and signatures.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::ids::NodeId;

/// A signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid signature")]
pub struct SignatureError;

/// An Ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "serde_bytes")] [u8; 64]);

impl Signature {
    /// Wraps raw signature bytes.
    pub fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// Verifies an Ed25519 signature by public key bytes.
pub(crate) fn verify(public: &[u8; 32], msg: &[u8], sig: &Signature) -> Result<(), SignatureError> {
    let key = VerifyingKey::from_bytes(public).map_err(|_| SignatureError)?;
    let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
    // verify_strict also rejects small-order keys and malleable signatures.
    key.verify_strict(msg, &sig).map_err(|_| SignatureError)
}

/// A node's Ed25519 key pair. The secret half is zeroed when dropped.
pub struct Keypair {
    key: SigningKey,
}

impl Keypair {
    /// A new random key pair from the operating system's RNG.
    pub fn generate() -> Self {
        Self {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// The key pair with the given 32-byte secret seed.
    pub fn from_secret_bytes(seed: [u8; 32]) -> Self {
        let seed = Zeroizing::new(seed);
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The 32-byte secret seed (handle with care: it is the node's identity).
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// This key's node id.
    pub fn node_id(&self) -> NodeId {
        NodeId::from_bytes(self.key.verifying_key().to_bytes())
            .unwrap_or_else(|_| unreachable!("a signing key always has a valid public key"))
    }

    /// The X25519 private scalar of this key (RFC 8032 §5.1.5: the first half
    /// of SHA-512 of the seed), for decrypting what was encrypted to the node
    /// ([`crate::encrypt`]).
    pub(crate) fn x25519_scalar(&self) -> [u8; 32] {
        self.key.to_scalar_bytes()
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.key.sign(msg).to_bytes())
    }
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keypair({})", self.node_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_tamper() {
        let k = Keypair::generate();
        let id = k.node_id();
        let sig = k.sign(b"msg");
        assert!(id.verify(b"msg", &sig).is_ok());
        assert_eq!(id.verify(b"msh", &sig), Err(SignatureError));
        let other = Keypair::generate().node_id();
        assert_eq!(other.verify(b"msg", &sig), Err(SignatureError));
        let mut bad = *sig.as_bytes();
        bad[10] ^= 1;
        assert!(id.verify(b"msg", &Signature::from_bytes(bad)).is_err());
    }

    #[test]
    fn signature_survives_the_codec() {
        let k = Keypair::generate();
        let sig = k.sign(b"x");
        let bytes = crate::codec::encode(&sig).unwrap();
        assert_eq!(crate::codec::decode::<Signature>(&bytes).unwrap(), sig);
        assert!(crate::codec::decode::<Signature>(&bytes[..10]).is_err());
    }

    #[test]
    fn seed_round_trip() {
        let k = Keypair::generate();
        let k2 = Keypair::from_secret_bytes(*k.secret_bytes());
        assert_eq!(k.node_id(), k2.node_id());
    }
}
