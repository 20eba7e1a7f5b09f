//! Validated names: vault names and secret paths (SPEC §3).
//!
//! Parse, don't validate: construct once at the edge; inside keynode the type is the
//! proof that the string is acceptable.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest vault name, in bytes.
pub const MAX_VAULT_NAME: usize = 255;
/// Longest secret path segment, in bytes.
pub const MAX_SEGMENT: usize = 255;
/// Longest secret path, in bytes.
pub const MAX_SECRET_PATH: usize = 4096;

/// A name or path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty name.
    #[error("vault name must not be empty")]
    EmptyVaultName,
    /// Name longer than [`MAX_VAULT_NAME`].
    #[error("vault name is {0} bytes long; the limit is 255")]
    VaultNameTooLong(usize),
    /// A forbidden character.
    #[error("vault name must not contain {0:?}")]
    VaultNameChar(char),
    /// `.` or `..`.
    #[error("vault name must not be '.' or '..'")]
    VaultNameDots,
    /// Empty path.
    #[error("secret path must not be empty")]
    EmptyPath,
    /// Leading `/`.
    #[error("secret path must be relative, not {0:?}")]
    Absolute(String),
    /// A `..` segment.
    #[error("secret path must not contain '..'")]
    ParentSegment,
    /// `a//b` or a trailing `/`.
    #[error("secret path must not contain empty segments")]
    EmptySegment,
    /// NUL or another control character.
    #[error("secret path must not contain control characters")]
    ControlChar,
    /// A segment or the whole path is too long.
    #[error("secret path or one of its segments is too long")]
    TooLong,
    /// A name git reserves (`.git`).
    #[error("secret path must not contain the reserved name {0:?}")]
    Reserved(String),
}

/// A vault's name: non-empty, at most 255 bytes, no `:`, `/` or control
/// characters, not `.` or `..`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VaultName(String);

impl VaultName {
    /// Checks `s` and wraps it.
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        if s.is_empty() {
            return Err(NameError::EmptyVaultName);
        }
        if s.len() > MAX_VAULT_NAME {
            return Err(NameError::VaultNameTooLong(s.len()));
        }
        if let Some(c) = s.chars().find(|c| *c == ':' || *c == '/' || c.is_control()) {
            return Err(NameError::VaultNameChar(c));
        }
        if s == "." || s == ".." {
            return Err(NameError::VaultNameDots);
        }
        Ok(Self(s))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VaultName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for VaultName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VaultName({:?})", self.0)
    }
}

/// A secret's path inside a vault: relative, `/`-separated, normalised (`.`
/// segments dropped), never escaping the vault.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretPath(String);

impl SecretPath {
    /// Checks and normalises `s`.
    pub fn new(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::EmptyPath);
        }
        if s.len() > MAX_SECRET_PATH {
            return Err(NameError::TooLong);
        }
        if s.starts_with('/') {
            return Err(NameError::Absolute(s.to_owned()));
        }
        if s.chars().any(char::is_control) {
            return Err(NameError::ControlChar);
        }
        let mut segments = Vec::new();
        for seg in s.split('/') {
            match seg {
                "" => return Err(NameError::EmptySegment),
                "." => continue,
                ".." => return Err(NameError::ParentSegment),
                _ if seg.len() > MAX_SEGMENT => return Err(NameError::TooLong),
                _ if seg.eq_ignore_ascii_case(".git") => {
                    return Err(NameError::Reserved(seg.to_owned()));
                }
                _ => segments.push(seg),
            }
        }
        if segments.is_empty() {
            return Err(NameError::EmptyPath);
        }
        Ok(Self(segments.join("/")))
    }

    /// The normalised path.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, outermost first.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The last segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The enclosing directory, `None` at the vault root.
    pub fn parent(&self) -> Option<SecretPath> {
        self.0
            .rfind('/')
            .map(|i| SecretPath(self.0[..i].to_owned()))
    }

    /// `self/child`.
    pub fn join(&self, child: &SecretPath) -> SecretPath {
        SecretPath(format!("{}/{}", self.0, child.0))
    }

    /// The same directory with a new last segment (which must be one segment).
    pub fn with_file_name(&self, name: &str) -> Result<SecretPath, NameError> {
        let single = SecretPath::new(name)?;
        if single.0.contains('/') {
            return Err(NameError::Absolute(name.to_owned()));
        }
        Ok(match self.parent() {
            Some(p) => p.join(&single),
            None => single,
        })
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &SecretPath) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretPath({:?})", self.0)
    }
}

macro_rules! serde_checked_string {
    ($ty:ident, $ctor:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $ctor(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_checked_string!(VaultName, |s: &str| VaultName::new(s));
serde_checked_string!(SecretPath, SecretPath::new);

/// Splits `vault[:path]` into the vault part and the optional path part. Vault
/// names cannot contain `:`, so the first `:` separates them.
pub fn split_secret_ref(s: &str) -> (&str, Option<&str>) {
    match s.split_once(':') {
        Some((v, p)) => (v, Some(p)),
        None => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vault_names() {
        assert!(VaultName::new("prod db ✓").is_ok());
        assert_eq!(VaultName::new(""), Err(NameError::EmptyVaultName));
        assert_eq!(VaultName::new("a:b"), Err(NameError::VaultNameChar(':')));
        assert_eq!(VaultName::new("a/b"), Err(NameError::VaultNameChar('/')));
        assert_eq!(VaultName::new("a\0b"), Err(NameError::VaultNameChar('\0')));
        assert_eq!(
            VaultName::new("x".repeat(256)),
            Err(NameError::VaultNameTooLong(256))
        );
        assert!(VaultName::new("x".repeat(255)).is_ok());
        assert_eq!(VaultName::new(".."), Err(NameError::VaultNameDots));
    }

    #[test]
    fn secret_paths() {
        assert_eq!(SecretPath::new("a/./b").unwrap().as_str(), "a/b");
        assert_eq!(SecretPath::new("./a").unwrap().as_str(), "a");
        assert_eq!(SecretPath::new("a/../b"), Err(NameError::ParentSegment));
        assert_eq!(SecretPath::new(".."), Err(NameError::ParentSegment));
        assert!(matches!(
            SecretPath::new("/etc/passwd"),
            Err(NameError::Absolute(_))
        ));
        assert_eq!(SecretPath::new("a//b"), Err(NameError::EmptySegment));
        assert_eq!(SecretPath::new("a/"), Err(NameError::EmptySegment));
        assert_eq!(SecretPath::new("a\0b"), Err(NameError::ControlChar));
        assert_eq!(SecretPath::new(""), Err(NameError::EmptyPath));
        assert_eq!(SecretPath::new("."), Err(NameError::EmptyPath));
        assert!(matches!(
            SecretPath::new("x/.GIT/y"),
            Err(NameError::Reserved(_))
        ));
        let p = SecretPath::new("a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert_eq!(p.file_name(), "c");
        assert_eq!(p.with_file_name("d").unwrap().as_str(), "a/b/d");
        assert!(p.with_file_name("d/e").is_err());
        assert!(p.starts_with(&SecretPath::new("a").unwrap()));
        assert!(
            !SecretPath::new("ab")
                .unwrap()
                .starts_with(&SecretPath::new("a").unwrap())
        );
    }

    #[test]
    fn secret_refs() {
        assert_eq!(split_secret_ref("v:a/b"), ("v", Some("a/b")));
        assert_eq!(split_secret_ref("v"), ("v", None));
        assert_eq!(split_secret_ref("v:a:b"), ("v", Some("a:b")));
    }

    proptest! {
        /// Whatever the input, an accepted path stays inside the vault: relative,
        /// no `..`, no empty or `.` segments, no control characters, and it is a
        /// fixed point of normalisation.
        #[test]
        fn normalisation_never_escapes(s in "[a-z./\\\\\\x00 ]{0,40}") {
            if let Ok(p) = SecretPath::new(&s) {
                let t = p.as_str();
                prop_assert!(!t.starts_with('/'));
                prop_assert!(t.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
                prop_assert!(!t.contains('\0'));
                prop_assert_eq!(SecretPath::new(t).unwrap(), p.clone());
                let joined = std::path::Path::new("/vault").join(t);
                prop_assert!(joined.starts_with("/vault"));
                prop_assert!(joined.components().all(|c| !matches!(c, std::path::Component::ParentDir)));
            }
        }

        #[test]
        fn vault_names_never_panic(s in "\\PC{0,300}") {
            if let Ok(n) = VaultName::new(s.clone()) {
                prop_assert!(!n.as_str().contains(':') && !n.as_str().contains('/'));
                prop_assert!(!n.as_str().is_empty() && n.as_str().len() <= 255);
            }
        }
    }
}
