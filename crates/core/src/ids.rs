//! Identifiers and their text forms (SPEC §1).
//!
//! | id | bytes | text |
//! |---|---|---|
//! | [`NodeId`] | Ed25519 public key, 32 | multibase base32hex lowercase, `v` prefix, 53 chars |
//! | [`VaultId`] | random, 16 | multibase base58btc, `z` prefix |
//! | [`Tid`] | time-sortable, 16 | multibase base32hex lowercase, `v` prefix, 27 chars |
//!
//! Parsing never panics; a bad id is an [`IdError`] naming what was expected. In
//! binary encodings (bincode) ids are raw bytes; in human-readable ones (JSON) they
//! are their text form.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use multibase::Base;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::clock::Clock;
use crate::keys::{Signature, SignatureError};

/// An id could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The text is not multibase in the expected base.
    #[error("invalid {kind}: expected multibase text starting with '{prefix}'")]
    Encoding {
        /// Which id was expected.
        kind: &'static str,
        /// The multibase prefix it must start with.
        prefix: char,
    },
    /// The decoded bytes have the wrong length.
    #[error("invalid {kind}: expected {expected} bytes, got {got}")]
    Length {
        /// Which id was expected.
        kind: &'static str,
        /// Bytes expected.
        expected: usize,
        /// Bytes found.
        got: usize,
    },
    /// The bytes are not a valid Ed25519 public key.
    #[error("invalid node id: not an Ed25519 public key")]
    NotAKey,
}

fn decode_text<const N: usize>(
    s: &str,
    base: Base,
    kind: &'static str,
) -> Result<[u8; N], IdError> {
    let prefix = base.code();
    let err = IdError::Encoding { kind, prefix };
    // multibase accepts upper/lower variants of some bases under other prefixes;
    // we accept exactly one canonical form.
    if !s.starts_with(prefix) || s.len() > 128 {
        return Err(err);
    }
    if base == Base::Base32HexLower && s[1..].bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(err);
    }
    let (found, bytes) = multibase::decode(s).map_err(|_| err.clone())?;
    if found != base {
        return Err(err);
    }
    let got = bytes.len();
    let out: [u8; N] = bytes.try_into().map_err(|_| IdError::Length {
        kind,
        expected: N,
        got,
    })?;
    // Reject non-canonical encodings (e.g. stray trailing bits) so that every id
    // has exactly one text form.
    if multibase::encode(base, out) != s {
        return Err(IdError::Encoding { kind, prefix });
    }
    Ok(out)
}

macro_rules! serde_as_text_or_bytes {
    ($ty:ident, $len:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    let bytes = <[u8; $len]>::deserialize(d)?;
                    $ty::from_bytes(bytes).map_err(serde::de::Error::custom)
                }
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($ty), self)
            }
        }
    };
}

/// A node's identity: its Ed25519 public key. Self-certifying: whoever can sign
/// for the key is the node.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; 32]);

impl NodeId {
    /// Wraps public key bytes, checking that they are a valid Ed25519 point.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, IdError> {
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| IdError::NotAKey)?;
        Ok(Self(bytes))
    }

    /// The public key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Verifies that `sig` is this node's signature over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), SignatureError> {
        crate::keys::verify(&self.0, msg, sig)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&multibase::encode(Base::Base32HexLower, self.0))
    }
}

impl FromStr for NodeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::from_bytes(decode_text(s, Base::Base32HexLower, "node id")?)
    }
}

serde_as_text_or_bytes!(NodeId, 32);

/// A vault's id: 16 random bytes, unique per node (a clone gets a new local id).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VaultId([u8; 16]);

impl VaultId {
    /// A fresh random id (seeded in simulations: see [`crate::sim::set_seed`]).
    pub fn generate() -> Self {
        let mut b = [0u8; 16];
        crate::sim::fill_random(&mut b);
        Self(b)
    }

    /// Wraps raw bytes (always valid; the `Result` matches the other ids).
    pub fn from_bytes(bytes: [u8; 16]) -> Result<Self, IdError> {
        Ok(Self(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for VaultId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&multibase::encode(Base::Base58Btc, self.0))
    }
}

impl FromStr for VaultId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Ok(Self(decode_text(s, Base::Base58Btc, "vault id")?))
    }
}

serde_as_text_or_bytes!(VaultId, 16);

/// A time-sortable id (notifications, claims): 48 bits of milliseconds since the
/// Unix epoch, then 80 bits that are random at each new millisecond and count up
/// within one. Byte order, text order and creation order agree.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tid([u8; 16]);

impl Tid {
    /// Wraps raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Result<Self, IdError> {
        Ok(Self(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Milliseconds since the Unix epoch at which the id was made.
    pub fn timestamp_ms(&self) -> u64 {
        (u128::from_be_bytes(self.0) >> 80) as u64
    }
}

impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&multibase::encode(Base::Base32HexLower, self.0))
    }
}

impl FromStr for Tid {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Ok(Self(decode_text(s, Base::Base32HexLower, "id")?))
    }
}

serde_as_text_or_bytes!(Tid, 16);

/// Makes strictly increasing [`Tid`]s from an injected clock.
pub struct TidGenerator<C: Clock> {
    clock: C,
    last: Mutex<u128>,
}

impl<C: Clock> TidGenerator<C> {
    /// A generator reading time from `clock`.
    pub fn new(clock: C) -> Self {
        Self {
            clock,
            last: Mutex::new(0),
        }
    }

    /// The next id: greater than every id this generator made before, even if the
    /// clock stands still or goes back.
    pub fn next_id(&self) -> Tid {
        const LOW: u128 = (1u128 << 80) - 1;
        let ms = u128::from(self.clock.now_ms() & 0xFFFF_FFFF_FFFF);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let value = if ms > *last >> 80 {
            let mut r = [0u8; 16];
            crate::sim::fill_random(&mut r[6..]);
            // Keep headroom so the counter cannot overflow into the timestamp.
            (ms << 80) | (u128::from_be_bytes(r) & (LOW >> 1))
        } else {
            *last + 1
        };
        *last = value;
        Tid(value.to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Fixed(AtomicU64);
    impl Clock for Fixed {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn node_id_text_form_is_53_chars_with_v_prefix() {
        let id = Keypair::generate().node_id();
        let s = id.to_string();
        assert_eq!(s.len(), 53);
        assert!(s.starts_with('v'));
        assert_eq!(s.parse::<NodeId>().unwrap(), id);
        assert_eq!(s.to_uppercase().parse::<NodeId>().ok(), None);
    }

    #[test]
    fn vault_id_text_form_is_base58btc() {
        let id = VaultId::generate();
        let s = id.to_string();
        assert!(s.starts_with('z'));
        assert_eq!(s.parse::<VaultId>().unwrap(), id);
        assert!(matches!(
            "zzz".parse::<VaultId>(),
            Err(IdError::Length { .. })
        ));
        assert!(matches!(
            s[1..].parse::<VaultId>(),
            Err(IdError::Encoding { .. })
        ));
    }

    #[test]
    fn tids_are_monotonic_when_the_clock_stalls_or_goes_back() {
        let tids = TidGenerator::new(Fixed(AtomicU64::new(1_000)));
        let a = tids.next_id();
        let b = tids.next_id();
        tids.clock.0.store(10, Ordering::SeqCst);
        let c = tids.next_id();
        tids.clock.0.store(2_000, Ordering::SeqCst);
        let d = tids.next_id();
        assert!(a < b && b < c && c < d);
        assert!(a.to_string() < b.to_string() && c.to_string() < d.to_string());
        assert_eq!(a.timestamp_ms(), 1_000);
        assert_eq!(d.timestamp_ms(), 2_000);
    }

    #[test]
    fn ids_use_bytes_in_bincode_and_text_in_json() {
        let id = VaultId::generate();
        assert_eq!(crate::codec::encode(&id).unwrap().len(), 16);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<VaultId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<VaultId>("\"zbad\"").is_err());
    }

    proptest! {
        #[test]
        fn node_id_round_trips(seed in any::<[u8; 32]>()) {
            let id = Keypair::from_secret_bytes(seed).node_id();
            prop_assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        }

        #[test]
        fn vault_and_tid_round_trip(bytes in any::<[u8; 16]>()) {
            let v = VaultId(bytes);
            prop_assert_eq!(v.to_string().parse::<VaultId>().unwrap(), v);
            let t = Tid(bytes);
            prop_assert_eq!(t.to_string().parse::<Tid>().unwrap(), t);
        }

        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC{0,80}") {
            let _ = s.parse::<NodeId>();
            let _ = s.parse::<VaultId>();
            let _ = s.parse::<Tid>();
        }

        #[test]
        fn prefixed_garbage_is_rejected(s in "[vz][0-9a-zA-Z]{0,60}") {
            // Only exact-length canonical encodings parse; everything else errors.
            if let Ok(id) = s.parse::<NodeId>() { prop_assert_eq!(id.to_string(), s.clone()); }
            if let Ok(id) = s.parse::<VaultId>() { prop_assert_eq!(id.to_string(), s.clone()); }
            if let Ok(id) = s.parse::<Tid>() { prop_assert_eq!(id.to_string(), s); }
        }
    }
}
