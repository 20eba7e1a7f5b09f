//! The ACL's vocabulary: actions, permission records and their ids.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use keynode_core::VaultId;
use serde::{Deserialize, Serialize};

/// An action name could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {found:?}: expected one of {expected}")]
pub struct ActionError {
    /// `gestalt action` or `vault action`.
    pub kind: &'static str,
    /// The text given.
    pub found: String,
    /// The accepted names.
    pub expected: &'static str,
}

macro_rules! actions {
    (
        $(#[$meta:meta])* $name:ident, $kind:literal, $expected:literal {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal => $bit:literal),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vmeta])* $variant),*
        }

        impl $name {
            /// Every action, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The action's bit in a stored mask.
            pub(crate) fn bit(self) -> u8 {
                match self { $($name::$variant => $bit),* }
            }

            /// The set of actions a stored mask holds (unknown bits are ignored).
            pub(crate) fn set_from_mask(mask: u8) -> BTreeSet<$name> {
                Self::ALL.iter().copied().filter(|a| mask & a.bit() != 0).collect()
            }

            /// The stored mask of a set of actions.
            pub(crate) fn mask_of<'a>(set: impl IntoIterator<Item = &'a $name>) -> u8 {
                set.into_iter().fold(0, |m, a| m | a.bit())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $($name::$variant => $text),* })
            }
        }

        impl FromStr for $name {
            type Err = ActionError;
            fn from_str(s: &str) -> Result<Self, ActionError> {
                match s {
                    $($text => Ok($name::$variant),)*
                    _ => Err(ActionError { kind: $kind, found: s.to_owned(), expected: $expected }),
                }
            }
        }
    };
}

actions! {
    /// What a gestalt may do with this node as a whole (SPEC §4).
    GestaltAction, "gestalt action", "notify, scan, claim" {
        /// Trusted: we accept its notifications.
        Notify = "notify" => 1,
        /// May list the vaults shared with it.
        Scan = "scan" => 2,
        /// May cross-sign a claim to join our gestalt.
        Claim = "claim" => 4,
    }
}

actions! {
    /// What a gestalt may do with one of our vaults (SPEC §4).
    VaultAction, "vault action", "clone, pull" {
        /// May clone the vault.
        Clone = "clone" => 1,
        /// May pull the vault.
        Pull = "pull" => 2,
    }
}

/// A permission record, shared by every member of a gestalt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// Gestalt actions granted.
    pub gestalt: BTreeSet<GestaltAction>,
    /// Vault actions granted, per vault. A vault is listed only with a non-empty
    /// set.
    pub vaults: BTreeMap<VaultId, BTreeSet<VaultAction>>,
}

impl Permission {
    /// True if nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.gestalt.is_empty() && self.vaults.is_empty()
    }
}

/// The id of a stored permission record: 16 random bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PermId(pub(crate) [u8; 16]);

impl PermId {
    /// A fresh random id.
    pub fn generate() -> Self {
        let mut b = [0u8; 16];
        keynode_core::sim::fill_random(&mut b);
        PermId(b)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for PermId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PermId(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_text_round_trips_and_errors_are_clear() {
        for a in GestaltAction::ALL {
            assert_eq!(a.to_string().parse::<GestaltAction>().unwrap(), *a);
        }
        for a in VaultAction::ALL {
            assert_eq!(a.to_string().parse::<VaultAction>().unwrap(), *a);
        }
        assert_eq!(
            "Pull".parse::<VaultAction>().unwrap_err().to_string(),
            "unknown vault action \"Pull\": expected one of clone, pull"
        );
        assert!("".parse::<GestaltAction>().is_err());
    }

    #[test]
    fn masks_round_trip() {
        let all: BTreeSet<_> = GestaltAction::ALL.iter().copied().collect();
        assert_eq!(
            GestaltAction::set_from_mask(GestaltAction::mask_of(&all)),
            all
        );
        assert_eq!(VaultAction::set_from_mask(0xF0), BTreeSet::new());
    }
}
