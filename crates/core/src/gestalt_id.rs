//! Gestalt vertex ids (SPEC §1): a node, or an identity on a provider.
//!
//! | id | text |
//! |---|---|
//! | [`GestaltId::Node`] | the [`NodeId`] text (`v…`, 53 chars) |
//! | [`GestaltId::Identity`] | `provider:identity` |
//!
//! A [`ProviderId`] is non-empty, at most [`MAX_GESTALT_PART`] bytes, without `:` or
//! control characters; an [`IdentityId`] is the same but may contain `:` (the text
//! form splits at the first `:`, so it stays unambiguous). Parsing never panics.
//! In bincode a `GestaltId` is a tag then raw node bytes or two strings; in JSON it
//! is its text form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::{IdError, NodeId};

/// Longest provider id or identity id, in bytes.
pub const MAX_GESTALT_PART: usize = 255;

/// A gestalt id, provider id or identity id could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GestaltIdError {
    /// An empty provider or identity.
    #[error("{kind} must not be empty")]
    Empty {
        /// `provider id` or `identity id`.
        kind: &'static str,
    },
    /// Longer than [`MAX_GESTALT_PART`].
    #[error("{kind} is {len} bytes long; the limit is 255")]
    TooLong {
        /// `provider id` or `identity id`.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A forbidden character (`:` in a provider id, or a control character).
    #[error("{kind} must not contain {ch:?}")]
    Char {
        /// `provider id` or `identity id`.
        kind: &'static str,
        /// The character found.
        ch: char,
    },
    /// Neither a node id nor `provider:identity`.
    #[error("invalid gestalt id: expected a node id or provider:identity ({0})")]
    Node(#[source] IdError),
}

fn check(s: &str, kind: &'static str, colon_ok: bool) -> Result<(), GestaltIdError> {
    if s.is_empty() {
        return Err(GestaltIdError::Empty { kind });
    }
    if s.len() > MAX_GESTALT_PART {
        return Err(GestaltIdError::TooLong { kind, len: s.len() });
    }
    if let Some(ch) = s
        .chars()
        .find(|c| c.is_control() || (!colon_ok && *c == ':'))
    {
        return Err(GestaltIdError::Char { kind, ch });
    }
    Ok(())
}

macro_rules! part {
    ($(#[$meta:meta])* $ty:ident, $kind:literal, $colon_ok:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(String);

        impl $ty {
            /// Checks `s` and wraps it.
            pub fn new(s: impl Into<String>) -> Result<Self, GestaltIdError> {
                let s = s.into();
                check(&s, $kind, $colon_ok)?;
                Ok(Self(s))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($ty), self.0)
            }
        }

        impl FromStr for $ty {
            type Err = GestaltIdError;
            fn from_str(s: &str) -> Result<Self, GestaltIdError> {
                Self::new(s)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

part!(
    /// An identity provider's id, e.g. `github.com` or `offline`: non-empty, at
    /// most 255 bytes, no `:` and no control characters.
    ProviderId,
    "provider id",
    false
);

part!(
    /// A user's id on an identity provider: non-empty, at most 255 bytes, no
    /// control characters.
    IdentityId,
    "identity id",
    true
);

/// A vertex of the gestalt graph: a node, or an identity on a provider.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GestaltId {
    /// A keynode.
    Node(NodeId),
    /// An identity on a provider.
    Identity(ProviderId, IdentityId),
}

impl GestaltId {
    /// The node id, if this is a node.
    pub fn node(&self) -> Option<NodeId> {
        match self {
            GestaltId::Node(n) => Some(*n),
            GestaltId::Identity(..) => None,
        }
    }
}

impl From<NodeId> for GestaltId {
    fn from(n: NodeId) -> Self {
        GestaltId::Node(n)
    }
}

impl fmt::Display for GestaltId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GestaltId::Node(n) => fmt::Display::fmt(n, f),
            GestaltId::Identity(p, i) => write!(f, "{p}:{i}"),
        }
    }
}

impl fmt::Debug for GestaltId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GestaltId({self})")
    }
}

impl FromStr for GestaltId {
    type Err = GestaltIdError;
    fn from_str(s: &str) -> Result<Self, GestaltIdError> {
        match s.split_once(':') {
            Some((p, i)) => Ok(GestaltId::Identity(
                ProviderId::new(p)?,
                IdentityId::new(i)?,
            )),
            None => s
                .parse::<NodeId>()
                .map(GestaltId::Node)
                .map_err(GestaltIdError::Node),
        }
    }
}

/// The binary form: a plain enum (tag, then node bytes or two strings).
#[derive(Serialize, Deserialize)]
enum Repr {
    Node(NodeId),
    Identity(ProviderId, IdentityId),
}

impl Serialize for GestaltId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return s.collect_str(self);
        }
        match self {
            GestaltId::Node(n) => Repr::Node(*n),
            GestaltId::Identity(p, i) => Repr::Identity(p.clone(), i.clone()),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for GestaltId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            return s.parse().map_err(serde::de::Error::custom);
        }
        Ok(match Repr::deserialize(d)? {
            Repr::Node(n) => GestaltId::Node(n),
            Repr::Identity(p, i) => GestaltId::Identity(p, i),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Keypair, codec};
    use proptest::prelude::*;

    #[test]
    fn text_forms() {
        let n = Keypair::generate().node_id();
        let g = GestaltId::Node(n);
        assert_eq!(g.to_string(), n.to_string());
        assert_eq!(g.to_string().parse::<GestaltId>().unwrap(), g);

        let i: GestaltId = "offline:alice".parse().unwrap();
        assert_eq!(
            i,
            GestaltId::Identity(
                ProviderId::new("offline").unwrap(),
                IdentityId::new("alice").unwrap()
            )
        );
        assert_eq!(i.to_string(), "offline:alice");
        // The identity may contain ':'; the provider ends at the first one.
        let j: GestaltId = "p:a:b".parse().unwrap();
        assert_eq!(j.to_string(), "p:a:b");
    }

    #[test]
    fn bad_forms_are_clear_errors() {
        assert!(matches!(
            ":alice".parse::<GestaltId>(),
            Err(GestaltIdError::Empty {
                kind: "provider id"
            })
        ));
        assert!(matches!(
            "gh:".parse::<GestaltId>(),
            Err(GestaltIdError::Empty {
                kind: "identity id"
            })
        ));
        assert!(matches!(
            "alice".parse::<GestaltId>(),
            Err(GestaltIdError::Node(_))
        ));
        assert!(matches!(
            "gh:a\nb".parse::<GestaltId>(),
            Err(GestaltIdError::Char { ch: '\n', .. })
        ));
        assert!(matches!(
            ProviderId::new("a:b"),
            Err(GestaltIdError::Char { ch: ':', .. })
        ));
        let long = "x".repeat(256);
        assert!(matches!(
            IdentityId::new(long),
            Err(GestaltIdError::TooLong { len: 256, .. })
        ));
        assert!(IdentityId::new("x".repeat(255)).is_ok());
        assert_eq!(
            "alice".parse::<GestaltId>().unwrap_err().to_string(),
            "invalid gestalt id: expected a node id or provider:identity \
             (invalid node id: expected multibase text starting with 'v')"
        );
    }

    #[test]
    fn bincode_is_compact_and_json_is_text() {
        let n = GestaltId::Node(Keypair::generate().node_id());
        assert_eq!(codec::encode(&n).unwrap().len(), 33);
        let i: GestaltId = "gh:bob".parse().unwrap();
        assert_eq!(codec::encode(&i).unwrap(), b"\x01\x02gh\x03bob");
        assert_eq!(serde_json::to_string(&i).unwrap(), "\"gh:bob\"");
        assert_eq!(serde_json::from_str::<GestaltId>("\"gh:bob\"").unwrap(), i);
        assert!(serde_json::from_str::<GestaltId>("\"gh:\"").is_err());
        // Invalid parts are refused from binary too.
        assert!(codec::decode::<GestaltId>(b"\x01\x02g:\x03bob").is_err());
        assert!(codec::decode::<GestaltId>(b"\x02").is_err());
    }

    fn gestalt_id() -> impl Strategy<Value = GestaltId> {
        prop_oneof![
            any::<[u8; 32]>()
                .prop_map(|s| GestaltId::Node(Keypair::from_secret_bytes(s).node_id())),
            ("[^:\\p{Cc}]{1,40}", "[^\\p{Cc}]{1,40}").prop_map(|(p, i)| GestaltId::Identity(
                ProviderId::new(p).unwrap(),
                IdentityId::new(i).unwrap()
            )),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(g in gestalt_id()) {
            prop_assert_eq!(g.to_string().parse::<GestaltId>().unwrap(), g.clone());
            let bytes = codec::encode(&g).unwrap();
            prop_assert_eq!(codec::decode::<GestaltId>(&bytes).unwrap(), g.clone());
            let json = serde_json::to_string(&g).unwrap();
            prop_assert_eq!(serde_json::from_str::<GestaltId>(&json).unwrap(), g);
        }

        #[test]
        fn arbitrary_text_and_bytes_never_panic(s in "\\PC{0,300}", b in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = s.parse::<GestaltId>();
            let _ = codec::decode::<GestaltId>(&b);
        }
    }
}
