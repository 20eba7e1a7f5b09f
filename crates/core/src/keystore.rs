//! The root key at rest: the Ed25519 seed sealed under the user's password.
//!
//! Key derivation is Argon2id (default m = 19 MiB, t = 2, p = 1, the OWASP
//! minimum) over a random 16-byte salt; the derived 32-byte key seals the seed
//! with XChaCha20-Poly1305 under a random 24-byte nonce. The file header (format
//! version, KDF parameters, salt) is the AEAD's associated data, so changing any
//! of it makes the file fail to open rather than open weaker. Files are written
//! atomically (temporary file, fsync, rename) with mode 0600.
//!
//! Changing the password ([`change_password`], [`reseal`]) re-seals only this
//! file: the seed, and so the node's identity and everything the root key
//! wraps (the [`crate::datakey`]), stays the same.

use std::fs;
use std::io::Write;
use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::keys::Keypair;

/// Key-file format version written by this code.
pub const FORMAT_VERSION: u16 = 1;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Parallelism.
    pub p: u32,
}

impl KdfParams {
    /// The default: m = 19 MiB, t = 2, p = 1.
    pub const DEFAULT: KdfParams = KdfParams {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };

    /// The weakest parameters a key file may carry; weaker files are refused.
    pub const MINIMUM: KdfParams = Self::DEFAULT;

    /// Each parameter at least as costly as in `other` (the stronger of the two,
    /// parameter by parameter).
    pub fn at_least(self, other: KdfParams) -> KdfParams {
        KdfParams {
            m_kib: self.m_kib.max(other.m_kib),
            t: self.t.max(other.t),
            p: self.p.max(other.p),
        }
    }
}

/// The key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// The password does not open the key.
    #[error("wrong password")]
    WrongPassword,
    /// The file is not a key file this version understands.
    #[error("key file is corrupt or of an unknown format: {0}")]
    Corrupt(String),
    /// Reading or writing the file failed.
    #[error("key file i/o failed")]
    Io(#[from] std::io::Error),
}

#[derive(Serialize, Deserialize)]
struct Header {
    version: u16,
    kdf: KdfParams,
    salt: [u8; 16],
    nonce: [u8; 24],
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    header: Header,
    ciphertext: Vec<u8>,
}

fn derive(
    password: &[u8],
    salt: &[u8; 16],
    kdf: KdfParams,
) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    let params = Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32))
        .map_err(|e| KeystoreError::Corrupt(format!("bad kdf parameters: {e}")))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password, salt, out.as_mut())
        .map_err(|e| KeystoreError::Corrupt(format!("kdf failed: {e}")))?;
    Ok(out)
}

/// Seals `key` under `password`, returning the key file's bytes.
pub fn seal(key: &Keypair, password: &[u8], kdf: KdfParams) -> Result<Vec<u8>, KeystoreError> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let header = Header {
        version: FORMAT_VERSION,
        kdf,
        salt,
        nonce,
    };
    let aad = crate::codec::encode(&header).map_err(|e| KeystoreError::Corrupt(e.to_string()))?;
    let dk = derive(password, &salt, kdf)?;
    let cipher = XChaCha20Poly1305::new(dk.as_ref().into());
    let seed = key.secret_bytes();
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: seed.as_ref(),
                aad: &aad,
            },
        )
        .map_err(|_| KeystoreError::Corrupt("encryption failed".into()))?;
    crate::codec::encode(&KeyFile { header, ciphertext })
        .map_err(|e| KeystoreError::Corrupt(e.to_string()))
}

/// Opens a key file's bytes with `password`.
pub fn open(bytes: &[u8], password: &[u8]) -> Result<Keypair, KeystoreError> {
    open_with_params(bytes, password).map(|(key, _)| key)
}

/// Opens a key file's bytes with `password`; also returns the file's KDF
/// parameters.
fn open_with_params(bytes: &[u8], password: &[u8]) -> Result<(Keypair, KdfParams), KeystoreError> {
    let file: KeyFile = crate::codec::decode_with_limit::<_, 4096>(bytes)
        .map_err(|e| KeystoreError::Corrupt(e.to_string()))?;
    if file.header.version != FORMAT_VERSION {
        return Err(KeystoreError::Corrupt(format!(
            "key file version {} is not supported",
            file.header.version
        )));
    }
    let kdf = file.header.kdf;
    if kdf.m_kib < KdfParams::MINIMUM.m_kib || kdf.t < KdfParams::MINIMUM.t || kdf.p == 0 {
        return Err(KeystoreError::Corrupt(
            "key derivation parameters are too weak".into(),
        ));
    }
    if kdf.m_kib > 4 * 1024 * 1024 || kdf.t > 64 || kdf.p > 64 {
        return Err(KeystoreError::Corrupt(
            "key derivation parameters are unreasonable".into(),
        ));
    }
    let aad =
        crate::codec::encode(&file.header).map_err(|e| KeystoreError::Corrupt(e.to_string()))?;
    let dk = derive(password, &file.header.salt, kdf)?;
    let cipher = XChaCha20Poly1305::new(dk.as_ref().into());
    let seed = Zeroizing::new(
        cipher
            .decrypt(
                XNonce::from_slice(&file.header.nonce),
                Payload {
                    msg: &file.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| KeystoreError::WrongPassword)?,
    );
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| KeystoreError::Corrupt("sealed key has the wrong length".into()))?;
    Ok((Keypair::from_secret_bytes(seed), kdf))
}

/// Re-seals a key file's bytes under `new_password`, after opening them with
/// `current` (a wrong one is [`KeystoreError::WrongPassword`]). The new file has
/// a fresh salt and nonce; its KDF parameters are the old file's, raised to at
/// least [`KdfParams::DEFAULT`]. Returns the key and the new file's bytes.
pub fn reseal(
    bytes: &[u8],
    current: &[u8],
    new_password: &[u8],
) -> Result<(Keypair, Vec<u8>), KeystoreError> {
    let (key, kdf) = open_with_params(bytes, current)?;
    let sealed = seal(&key, new_password, kdf.at_least(KdfParams::DEFAULT))?;
    Ok((key, sealed))
}

/// Writes `bytes` to `path` atomically with mode 0600.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), std::io::Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?; // created 0600
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Seals `key` and writes it to `path` (mode 0600, atomic).
pub fn write_key_file(
    path: &Path,
    key: &Keypair,
    password: &[u8],
    kdf: KdfParams,
) -> Result<(), KeystoreError> {
    write_private_file(path, &seal(key, password, kdf)?)?;
    Ok(())
}

/// Reads and opens the key file at `path`.
pub fn read_key_file(path: &Path, password: &[u8]) -> Result<Keypair, KeystoreError> {
    let bytes = fs::read(path)?;
    open(&bytes, password)
}

/// Changes the password of the key file at `path` from `current` to
/// `new_password` (see [`reseal`]); returns the key. The file is replaced
/// atomically, so a crash leaves either the old file or the new one, each
/// whole. The caller keeps other writers away (the agent lock).
pub fn change_password(
    path: &Path,
    current: &[u8],
    new_password: &[u8],
) -> Result<Keypair, KeystoreError> {
    let (key, sealed) = reseal(&fs::read(path)?, current, new_password)?;
    write_private_file(path, &sealed)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn seal_open_wrong_password_and_tamper() {
        let k = Keypair::generate();
        let bytes = seal(&k, b"pw", KdfParams::DEFAULT).unwrap();
        assert_eq!(open(&bytes, b"pw").unwrap().node_id(), k.node_id());
        assert!(matches!(
            open(&bytes, b"px"),
            Err(KeystoreError::WrongPassword)
        ));
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 3] ^= 1;
        assert!(matches!(
            open(&bad, b"pw"),
            Err(KeystoreError::WrongPassword)
        ));
        assert!(matches!(
            open(&bytes[..20], b"pw"),
            Err(KeystoreError::Corrupt(_))
        ));
    }

    #[test]
    fn weak_parameters_are_refused() {
        let k = Keypair::generate();
        let weak = KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let bytes = seal(&k, b"pw", weak).unwrap();
        assert!(matches!(
            open(&bytes, b"pw"),
            Err(KeystoreError::Corrupt(_))
        ));
    }

    #[test]
    fn change_password_reseals_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let k = Keypair::generate();
        write_key_file(&path, &k, b"old", KdfParams::DEFAULT).unwrap();
        let before = fs::read(&path).unwrap();

        let changed = change_password(&path, b"old", b"new").unwrap();
        assert_eq!(changed.node_id(), k.node_id());
        assert_eq!(read_key_file(&path, b"new").unwrap().node_id(), k.node_id());
        assert!(matches!(
            read_key_file(&path, b"old"),
            Err(KeystoreError::WrongPassword)
        ));
        // Fresh salt and nonce; still private.
        let after = fs::read(&path).unwrap();
        let header = |b: &[u8]| {
            let f: KeyFile = crate::codec::decode_with_limit::<_, 4096>(b).unwrap();
            (f.header.salt, f.header.nonce, f.header.kdf)
        };
        let (salt0, nonce0, kdf0) = header(&before);
        let (salt1, nonce1, kdf1) = header(&after);
        assert_ne!(salt0, salt1);
        assert_ne!(nonce0, nonce1);
        assert_eq!(kdf0, kdf1);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Nothing but the key file is left in the directory (no temporary).
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_data_key_opens_after_a_password_change() {
        // The root key wraps the data key; a new password re-seals only the
        // root key, so the sealed data key (and all it encrypts) is untouched.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let k = Keypair::generate();
        write_key_file(&path, &k, b"old", KdfParams::DEFAULT).unwrap();
        let dk = crate::datakey::DataKey::generate();
        let sealed = crate::datakey::seal(&dk, &k).unwrap();
        change_password(&path, b"old", b"new").unwrap();
        let root = read_key_file(&path, b"new").unwrap();
        let opened = crate::datakey::open(&sealed, &root).unwrap();
        assert_eq!(opened.expose(), dk.expose());
    }

    #[test]
    fn change_password_with_the_wrong_password_leaves_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let k = Keypair::generate();
        write_key_file(&path, &k, b"old", KdfParams::DEFAULT).unwrap();
        let before = fs::read(&path).unwrap();
        assert!(matches!(
            change_password(&path, b"wrong", b"new"),
            Err(KeystoreError::WrongPassword)
        ));
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(read_key_file(&path, b"old").unwrap().node_id(), k.node_id());
        // A missing file is an i/o error, not a wrong password.
        assert!(matches!(
            change_password(&dir.path().join("none"), b"old", b"new"),
            Err(KeystoreError::Io(_))
        ));
    }

    #[test]
    fn reseal_keeps_stronger_parameters_and_raises_weaker_ones() {
        let k = Keypair::generate();
        let strong = KdfParams {
            m_kib: KdfParams::DEFAULT.m_kib + 1024,
            t: KdfParams::DEFAULT.t + 1,
            p: 2,
        };
        let (key, bytes) = reseal(&seal(&k, b"a", strong).unwrap(), b"a", b"b").unwrap();
        assert_eq!(key.node_id(), k.node_id());
        let (_, kdf) = open_with_params(&bytes, b"b").unwrap();
        assert_eq!(kdf, strong);
        assert_eq!(
            KdfParams {
                m_kib: 1,
                t: 9,
                p: 1
            }
            .at_least(KdfParams::DEFAULT),
            KdfParams {
                m_kib: KdfParams::DEFAULT.m_kib,
                t: 9,
                p: 1
            }
        );
    }

    #[test]
    fn a_crash_before_the_rename_leaves_the_old_file() {
        // The new file is written beside the old one and renamed over it; a
        // crash before the rename leaves a stray temporary and the old file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let k = Keypair::generate();
        write_key_file(&path, &k, b"old", KdfParams::DEFAULT).unwrap();
        let (_, sealed) = reseal(&fs::read(&path).unwrap(), b"old", b"new").unwrap();
        let mut tmp = tempfile::NamedTempFile::new_in(dir.path()).unwrap();
        tmp.write_all(&sealed[..sealed.len() / 2]).unwrap();
        let _ = tmp.into_temp_path().keep().unwrap(); // "crash": never renamed
        assert_eq!(read_key_file(&path, b"old").unwrap().node_id(), k.node_id());
    }

    #[test]
    fn key_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let k = Keypair::generate();
        write_key_file(&path, &k, b"pw", KdfParams::DEFAULT).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_key_file(&path, b"pw").unwrap().node_id(), k.node_id());
    }
}
