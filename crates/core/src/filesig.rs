//! Signatures over files by a node's key (`keynode keys sign|verify`).
//!
//! ```text
//! digest    = BLAKE2b-256(file)
//! signature = Ed25519(root key, "keynode/1 file signature\0" ‖ digest)
//! ```
//!
//! The context keeps a file signature from ever being read as anything else
//! the key signs (claims, notifications, backup manifests have their own), and
//! the node signs only a digest, so a client cannot have it sign arbitrary
//! bytes. Verification needs only the file, the signature and the NodeId.

use std::io::{self, Read};

use blake2::Blake2b;
use blake2::digest::Digest;
use blake2::digest::consts::U32;

use crate::ids::NodeId;
use crate::keys::{Keypair, Signature, SignatureError};

const CONTEXT: &[u8] = b"keynode/1 file signature\0";

/// BLAKE2b-256 of everything `data` yields.
pub fn digest(data: &mut dyn Read) -> io::Result<[u8; 32]> {
    let mut h = Blake2b::<U32>::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = data.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Signs a file's digest.
pub fn sign(key: &Keypair, digest: &[u8; 32]) -> Signature {
    key.sign(&[CONTEXT, digest].concat())
}

/// Checks `signature` over a file's digest by `node`.
pub fn verify(
    node: &NodeId,
    digest: &[u8; 32],
    signature: &Signature,
) -> Result<(), SignatureError> {
    node.verify(&[CONTEXT, digest].concat(), signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_signature_verifies_for_that_file_and_node_only() {
        let key = Keypair::generate();
        let d = digest(&mut &b"the file"[..]).unwrap();
        let sig = sign(&key, &d);
        assert!(verify(&key.node_id(), &d, &sig).is_ok());
        let other = digest(&mut &b"the filf"[..]).unwrap();
        assert!(verify(&key.node_id(), &other, &sig).is_err());
        assert!(verify(&Keypair::generate().node_id(), &d, &sig).is_err());
        // Not a signature of the digest alone.
        assert!(key.node_id().verify(&d, &sig).is_err());
    }
}
