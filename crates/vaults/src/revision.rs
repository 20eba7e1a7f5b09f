//! The revisions a user may name: a commit id (full or abbreviated), `HEAD` or
//! `HEAD~N`.
//!
//! Parsing is deliberately narrower than git's revparse: `main@{1}`, `a..b`,
//! `HEAD:path`, `:/text` and ref names are refused, so a revision can only ever
//! mean one commit of the vault's own linear history.

/// Shortest abbreviated commit id accepted, in hex digits.
pub const MIN_ABBREV: usize = 4;

/// A parsed revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Revision {
    /// `HEAD` (`back == 0`) or `HEAD~back` along first parents.
    Head {
        /// How many commits back from the head.
        back: usize,
    },
    /// A commit id or a unique prefix of one, lowercase hex.
    Id(String),
}

impl Revision {
    /// Parses `text`, or returns `None` when it is not a revision keynode accepts.
    pub(crate) fn parse(text: &str) -> Option<Revision> {
        if text == "HEAD" {
            return Some(Revision::Head { back: 0 });
        }
        if let Some(n) = text.strip_prefix("HEAD~") {
            if n.is_empty() {
                return Some(Revision::Head { back: 1 });
            }
            if n.bytes().all(|b| b.is_ascii_digit()) && n.len() <= 9 {
                return n.parse().ok().map(|back| Revision::Head { back });
            }
            return None;
        }
        if (MIN_ABBREV..=40).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some(Revision::Id(text.to_ascii_lowercase()));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepted_forms() {
        assert_eq!(Revision::parse("HEAD"), Some(Revision::Head { back: 0 }));
        assert_eq!(Revision::parse("HEAD~"), Some(Revision::Head { back: 1 }));
        assert_eq!(
            Revision::parse("HEAD~12"),
            Some(Revision::Head { back: 12 })
        );
        assert_eq!(Revision::parse("ABCD"), Some(Revision::Id("abcd".into())));
        let full = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(Revision::parse(full), Some(Revision::Id(full.into())));
    }

    #[test]
    fn surprising_forms_are_refused() {
        for bad in [
            "",
            "abc",
            "main",
            "HEAD^",
            "HEAD~-1",
            "HEAD~x",
            "HEAD@{1}",
            "main@{0}",
            "a..b",
            "HEAD:secret",
            ":/msg",
            "HEAD~99999999999",
            "refs/heads/main",
            "0123456789abcdef0123456789abcdef012345678",
        ] {
            assert_eq!(Revision::parse(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_only_accepts_plain_forms(s in "\\PC{0,50}") {
            if let Some(rev) = Revision::parse(&s) {
                let plain = !s.contains(':') && !s.contains("@{") && !s.contains("..");
                prop_assert!(plain, "accepted {:?}", s);
                if let Revision::Id(hex) = rev {
                    prop_assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
                }
            }
        }
    }
}
