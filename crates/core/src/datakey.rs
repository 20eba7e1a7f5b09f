//! The data key: the one symmetric key that encrypts a node's state at rest.
//!
//! A node's structured state (the LMDB environment) and its vaults' git objects
//! are encrypted under keys derived from a random 32-byte *data key*. The data
//! key never touches the disk in the clear: it is sealed with XChaCha20-Poly1305
//! under a wrapping key derived from the node's root key (its Ed25519 seed), and
//! the root key itself is sealed under the user's password ([`crate::keystore`]).
//!
//! ```text
//! password --Argon2id--> KEK --seals--> root seed --BLAKE2b--> wrap key --seals--> data key
//! ```
//!
//! So changing the password re-seals only the 32-byte root seed; no stored byte
//! of user data is re-encrypted. Independent keys for each use (the LMDB pages,
//! vault objects, object names) are derived from the data key with keyed
//! BLAKE2b and a distinct context string, so no key ever serves two ciphers.

use std::fs;
use std::path::Path;

use blake2::Blake2bMac;
use blake2::digest::consts::U32;
use blake2::digest::{FixedOutput, KeyInit, Update};

type Blake2bMac256 = Blake2bMac<U32>;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::keys::Keypair;
use crate::keystore::{KeystoreError, write_private_file};

/// Data-key file format version written by this code.
pub const DATA_KEY_VERSION: u16 = 1;

const WRAP_CONTEXT: &[u8] = b"keynode/1 data-key wrap";

/// A 32-byte secret key, zeroed on drop.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> DataKey {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(k.as_mut());
        DataKey(k)
    }

    /// A key with the given bytes (tests, benchmarks, embedders that manage keys).
    pub fn from_bytes(bytes: [u8; 32]) -> DataKey {
        DataKey(Zeroizing::new(bytes))
    }

    /// The key's bytes.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// An independent key for one purpose: keyed BLAKE2b-256 of `context`.
    /// Distinct contexts give computationally independent keys.
    pub fn derive(&self, context: &str) -> DataKey {
        DataKey(Zeroizing::new(keyed_hash(
            self.expose(),
            context.as_bytes(),
        )))
    }
}

/// Keyed BLAKE2b-256 of `msg` under `key` (a PRF/MAC).
pub fn keyed_hash(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut mac = <Blake2bMac256 as KeyInit>::new_from_slice(key).expect("32-byte key is valid");
    mac.update(msg);
    mac.finalize_fixed().into()
}

#[derive(Serialize, Deserialize)]
struct Header {
    version: u16,
    nonce: [u8; 24],
}

#[derive(Serialize, Deserialize)]
struct DataKeyFile {
    header: Header,
    ciphertext: Vec<u8>,
}

fn wrap_key(root: &Keypair) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(keyed_hash(&root.secret_bytes(), WRAP_CONTEXT))
}

/// Seals `key` under the wrapping key derived from `root`.
pub fn seal(key: &DataKey, root: &Keypair) -> Result<Vec<u8>, KeystoreError> {
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let header = Header {
        version: DATA_KEY_VERSION,
        nonce,
    };
    let aad = crate::codec::encode(&header).map_err(|e| KeystoreError::Corrupt(e.to_string()))?;
    let wk = wrap_key(root);
    let ciphertext = XChaCha20Poly1305::new(wk.as_ref().into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: key.expose(),
                aad: &aad,
            },
        )
        .map_err(|_| KeystoreError::Corrupt("encryption failed".into()))?;
    crate::codec::encode(&DataKeyFile { header, ciphertext })
        .map_err(|e| KeystoreError::Corrupt(e.to_string()))
}

/// Opens a sealed data key with the root key that sealed it.
pub fn open(bytes: &[u8], root: &Keypair) -> Result<DataKey, KeystoreError> {
    let file: DataKeyFile = crate::codec::decode_with_limit::<_, 1024>(bytes)
        .map_err(|e| KeystoreError::Corrupt(format!("data key file: {e}")))?;
    if file.header.version != DATA_KEY_VERSION {
        return Err(KeystoreError::Corrupt(format!(
            "data key file version {} is not supported",
            file.header.version
        )));
    }
    let aad =
        crate::codec::encode(&file.header).map_err(|e| KeystoreError::Corrupt(e.to_string()))?;
    let wk = wrap_key(root);
    let plain = Zeroizing::new(
        XChaCha20Poly1305::new(wk.as_ref().into())
            .decrypt(
                XNonce::from_slice(&file.header.nonce),
                Payload {
                    msg: &file.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| {
                KeystoreError::Corrupt(
                    "the data key does not open with this node's root key (altered or from another node)"
                        .into(),
                )
            })?,
    );
    let bytes: [u8; 32] = plain
        .as_slice()
        .try_into()
        .map_err(|_| KeystoreError::Corrupt("sealed data key has the wrong length".into()))?;
    Ok(DataKey::from_bytes(bytes))
}

/// Reads and opens the data-key file at `path`.
pub fn read_file(path: &Path, root: &Keypair) -> Result<DataKey, KeystoreError> {
    open(&fs::read(path)?, root)
}

/// Seals `key` and writes it to `path` (mode 0600, atomic).
pub fn write_file(path: &Path, key: &DataKey, root: &Keypair) -> Result<(), KeystoreError> {
    write_private_file(path, &seal(key, root)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_refusals() {
        let root = Keypair::generate();
        let dk = DataKey::generate();
        let bytes = seal(&dk, &root).unwrap();
        assert_eq!(open(&bytes, &root).unwrap().expose(), dk.expose());
        // The key never appears in the sealed form.
        assert!(!bytes.windows(32).any(|w| w == dk.expose()));
        // Another node's root key does not open it.
        let other = Keypair::generate();
        assert!(matches!(
            open(&bytes, &other),
            Err(KeystoreError::Corrupt(_))
        ));
        // A flipped bit anywhere is refused.
        for i in [0, 3, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(open(&bad, &root).is_err(), "flip at {i} accepted");
        }
        assert!(open(&bytes[..10], &root).is_err());
    }

    #[test]
    fn derived_keys_are_distinct_and_stable() {
        let dk = DataKey::from_bytes([9; 32]);
        let a = dk.derive("a");
        let b = dk.derive("b");
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose(), dk.derive("a").expose());
        assert_ne!(a.expose(), dk.expose());
    }
}
