//! Encryption to a node: anyone encrypts with its NodeId, only the node (its
//! root key) decrypts.
//!
//! HPKE (RFC 9180), base mode, with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256
//! and ChaCha20-Poly1305 (the `hpke` crate). The recipient's X25519 public key
//! is its Ed25519 public key under the birational map of RFC 7748 §4.1, and its
//! private key the scalar of its Ed25519 seed (RFC 8032 §5.1.5), as libsodium's
//! `crypto_sign_ed25519_*_to_curve25519` and age's `ssh-ed25519` recipients
//! do; using one key pair for Ed25519 and an X25519 KEM is analysed in
//! Thormarker, "On using the same key pair for Ed25519 and an X25519 based
//! KEM" (ePrint 2021/509).
//!
//! ```text
//! sealed = "KNE1" ‖ encapsulated key (32 bytes) ‖ HPKE ciphertext (plaintext + 16-byte tag)
//! info   = "keynode/1 encryption to a node"
//! aad    = "KNE1" ‖ the recipient's NodeId (32 bytes)
//! ```

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

use crate::ids::NodeId;
use crate::keys::Keypair;

const MAGIC: &[u8; 4] = b"KNE1";
const INFO: &[u8] = b"keynode/1 encryption to a node";
const ENCAPPED: usize = 32;
/// Authentication tag bytes.
pub const OVERHEAD: usize = 4 + ENCAPPED + 16;

/// A message that cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncryptError {
    /// Not an encrypted message, or cut short.
    #[error("not a message encrypted to a keynode node")]
    Malformed,
    /// It does not open with this key: for another node, or altered.
    #[error(
        "the message does not decrypt with this node's key: it is for another node, or altered"
    )]
    NotForThisKey,
    /// The recipient's key cannot take part in X25519.
    #[error("this node's key cannot be encrypted to")]
    BadKey,
}

fn aad(node: &NodeId) -> Vec<u8> {
    [MAGIC.as_slice(), node.as_bytes()].concat()
}

/// Encrypts `plaintext` so that only `node` can read it.
pub fn encrypt_to(node: &NodeId, plaintext: &[u8]) -> Result<Vec<u8>, EncryptError> {
    let ed = ed25519_dalek::VerifyingKey::from_bytes(node.as_bytes())
        .map_err(|_| EncryptError::BadKey)?;
    let x = ed.to_montgomery();
    let pk = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(x.as_bytes())
        .map_err(|_| EncryptError::BadKey)?;
    let (encapped, ciphertext) =
        hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256, _>(
            &OpModeS::Base,
            &pk,
            INFO,
            plaintext,
            &aad(node),
            &mut rand::rngs::OsRng,
        )
        .map_err(|_| EncryptError::BadKey)?;
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&encapped.to_bytes());
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Opens a message encrypted to `key`'s node.
pub fn decrypt(key: &Keypair, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, EncryptError> {
    if sealed.len() < OVERHEAD || &sealed[..4] != MAGIC {
        return Err(EncryptError::Malformed);
    }
    let scalar = Zeroizing::new(key.x25519_scalar());
    let sk = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(scalar.as_ref())
        .map_err(|_| EncryptError::BadKey)?;
    let encapped =
        <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&sealed[4..4 + ENCAPPED])
            .map_err(|_| EncryptError::Malformed)?;
    let plain = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &sk,
        &encapped,
        INFO,
        &sealed[4 + ENCAPPED..],
        &aad(&key.node_id()),
    )
    .map_err(|_| EncryptError::NotForThisKey)?;
    Ok(Zeroizing::new(plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recipient_opens_and_tampering_is_refused() {
        let to = Keypair::generate();
        let other = Keypair::generate();
        let sealed = encrypt_to(&to.node_id(), b"kn7 the secret").unwrap();
        assert_eq!(sealed.len(), OVERHEAD + 14);
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(&decrypt(&to, &sealed).unwrap()[..], b"kn7 the secret");
        assert_eq!(decrypt(&other, &sealed), Err(EncryptError::NotForThisKey));
        for i in [0, 5, 40, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(decrypt(&to, &bad).is_err(), "byte {i}");
        }
        assert_eq!(decrypt(&to, &sealed[..10]), Err(EncryptError::Malformed));
        // Each message has its own ephemeral key.
        assert_ne!(
            encrypt_to(&to.node_id(), b"x").unwrap(),
            encrypt_to(&to.node_id(), b"x").unwrap()
        );
        assert_eq!(
            &decrypt(&to, &encrypt_to(&to.node_id(), b"").unwrap()).unwrap()[..],
            b""
        );
    }
}
