//! The recovery code: 24 words from which a node's root key is derived.
//!
//! A new node draws 256 bits of entropy and shows them once as a BIP39
//! mnemonic (English word list, 24 words, the last carrying an 8-bit
//! checksum). The words are the root key: whoever holds them can recreate the
//! node's identity with a new password, so they are never written to the node
//! path.
//!
//! ```text
//! bip39_seed   = PBKDF2-HMAC-SHA512(password = the 24 words joined by one space,
//!                                   salt = "mnemonic", 2048 iterations)   (BIP39, empty passphrase)
//! ed25519_seed = BLAKE2b-256("keynode/1 root key from a recovery code" ‖ bip39_seed)
//! root key     = the Ed25519 key pair of ed25519_seed (RFC 8032)
//! ```
//!
//! The BLAKE2b step separates keynode's use of the words from every other
//! BIP39 use (a wallet derives nothing keynode derives from the same words).

use blake2::Blake2b;
use blake2::digest::Digest;
use blake2::digest::consts::U32;
use zeroize::Zeroizing;

use crate::keys::Keypair;

/// Words in a recovery code.
pub const WORDS: usize = 24;
/// The domain separation of the root key's derivation.
const CONTEXT: &[u8] = b"keynode/1 root key from a recovery code";

/// A recovery code that parsed and passed its checksum.
#[derive(Clone)]
pub struct RecoveryCode(bip39::Mnemonic);

impl std::fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryCode(…)")
    }
}

/// A recovery code that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    /// Not 24 words.
    #[error("a recovery code has {WORDS} words, this one has {0}")]
    WordCount(usize),
    /// A word is not in the BIP39 English list.
    #[error("word {position} of the recovery code, {word:?}, is not a recovery-code word")]
    UnknownWord {
        /// 1-based.
        position: usize,
        /// The word as given (at most its first 32 characters).
        word: String,
    },
    /// Every word is known, but the checksum fails: a word is mistyped or
    /// words are swapped.
    #[error("the recovery code's checksum fails: a word is mistyped, missing or out of order")]
    Checksum,
}

impl RecoveryCode {
    /// A fresh code from the operating system's randomness.
    pub fn generate() -> RecoveryCode {
        use rand::RngCore;
        let mut entropy = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(entropy.as_mut());
        let m = bip39::Mnemonic::from_entropy(entropy.as_ref()).expect("32 bytes is 24 words");
        RecoveryCode(m)
    }

    /// Reads a code: words separated by any whitespace, in any letter case.
    pub fn parse(text: &str) -> Result<RecoveryCode, RecoveryError> {
        let words: Vec<Zeroizing<String>> = text
            .split_whitespace()
            .map(|w| Zeroizing::new(w.to_lowercase()))
            .collect();
        if words.len() != WORDS {
            return Err(RecoveryError::WordCount(words.len()));
        }
        let joined = Zeroizing::new(
            words
                .iter()
                .map(|w| w.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        );
        match bip39::Mnemonic::parse_in_normalized(bip39::Language::English, &joined) {
            Ok(m) => Ok(RecoveryCode(m)),
            Err(bip39::Error::UnknownWord(i)) => Err(RecoveryError::UnknownWord {
                position: i + 1,
                word: words[i].chars().take(32).collect(),
            }),
            Err(bip39::Error::BadWordCount(n)) => Err(RecoveryError::WordCount(n)),
            Err(_) => Err(RecoveryError::Checksum),
        }
    }

    /// The words, separated by single spaces.
    pub fn phrase(&self) -> Zeroizing<String> {
        let words: Vec<&str> = self.0.words().collect();
        Zeroizing::new(words.join(" "))
    }

    /// The root key the code stands for.
    pub fn keypair(&self) -> Keypair {
        let bip39_seed = Zeroizing::new(self.0.to_seed_normalized(""));
        let mut h = Blake2b::<U32>::new();
        h.update(CONTEXT);
        h.update(bip39_seed.as_ref());
        let seed = Zeroizing::new(<[u8; 32]>::from(h.finalize()));
        Keypair::from_secret_bytes(*seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_reads_back_to_the_same_key() {
        let code = RecoveryCode::generate();
        let phrase = code.phrase();
        assert_eq!(phrase.split(' ').count(), WORDS);
        let again = RecoveryCode::parse(&phrase.to_uppercase().replace(' ', "\n  ")).unwrap();
        assert_eq!(again.keypair().node_id(), code.keypair().node_id());
        let other = RecoveryCode::generate();
        assert_ne!(other.keypair().node_id(), code.keypair().node_id());
    }

    #[test]
    fn the_derivation_is_fixed() {
        // BIP39's own test vector: all-zero entropy, passphrase "TREZOR".
        let phrase = format!("{}art", "abandon ".repeat(23));
        let code = RecoveryCode::parse(&phrase).unwrap();
        let seed = code.0.to_seed_normalized("TREZOR");
        assert_eq!(
            &seed[..8],
            &[0xbd, 0xa8, 0x54, 0x46, 0xc6, 0x84, 0x13, 0x70]
        );
        // keynode's key for these words: pinned, since changing it would
        // change the key every written-down code stands for.
        assert_eq!(
            code.keypair().node_id().to_string(),
            "veo4d0157gmrhfbe86mf0u37rjrg3j0f6o239tha3s0pfkbffp5cg"
        );
    }

    #[test]
    fn bad_codes_say_what_is_wrong() {
        let code = RecoveryCode::generate();
        let phrase = code.phrase();
        let mut words: Vec<&str> = phrase.split(' ').collect();
        assert_eq!(
            RecoveryCode::parse(&words[..23].join(" ")).unwrap_err(),
            RecoveryError::WordCount(23)
        );
        words[4] = "keynodex";
        assert_eq!(
            RecoveryCode::parse(&words.join(" ")).unwrap_err(),
            RecoveryError::UnknownWord {
                position: 5,
                word: "keynodex".into()
            }
        );
        // Two different words swapped: the checksum fails, or (1 time in
        // 256) it is another code, never the same key.
        let mut swapped: Vec<&str> = phrase.split(' ').collect();
        let i = (0..23).find(|&i| swapped[i] != swapped[i + 1]).unwrap();
        swapped.swap(i, i + 1);
        match RecoveryCode::parse(&swapped.join(" ")) {
            Err(e) => assert_eq!(e, RecoveryError::Checksum),
            Ok(other) => assert_ne!(other.keypair().node_id(), code.keypair().node_id()),
        }
    }
}
