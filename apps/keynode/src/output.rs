//! Printing results for people or for programs.
//!
//! Everything printed for people goes through `say!` / `esay!` (or
//! [`clean`]): names, commit messages, notifications and error messages may
//! come from another node or from a shared vault, and their control characters
//! (terminal escapes, carriage returns, bidi overrides) are shown escaped, never
//! sent to the terminal. JSON output escapes them by its own rules.

use std::borrow::Cow;

use clap::ValueEnum;
use serde::Serialize;

/// `--format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Text for people.
    Human,
    /// One JSON document per command.
    Json,
}

/// Prints `value` as JSON (pretty, one document) on stdout.
pub fn json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("keynode: cannot render json: {e}"),
    }
}

/// Prints `human` or the JSON of `value`, by format.
pub fn emit<T: Serialize + ?Sized>(format: Format, value: &T, human: impl FnOnce()) {
    match format {
        Format::Human => human(),
        Format::Json => json(value),
    }
}

/// A time in milliseconds since the epoch, as RFC 3339 UTC text.
pub fn time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Whether `c` is shown escaped: control characters other than newline and
/// tab, and the bidirectional overrides that reorder what a terminal shows.
fn unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every unsafe character written as `\u{..}`.
pub fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `println!` for people: the line goes through [`clean`].
macro_rules! say {
    () => { println!() };
    ($($t:tt)*) => { println!("{}", $crate::output::clean(&format!($($t)*))) };
}

/// `eprintln!` for people: the line goes through [`clean`].
macro_rules! esay {
    ($($t:tt)*) => { eprintln!("{}", $crate::output::clean(&format!($($t)*))) };
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn formats_utc_times() {
        assert_eq!(super::time(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::time(1_795_878_178_000), "2026-11-28T15:02:58Z");
    }

    #[test]
    fn control_characters_are_shown_escaped_and_text_is_left_alone() {
        assert_eq!(
            clean("plain name/with spaces\tand\nlines"),
            "plain name/with spaces\tand\nlines"
        );
        assert_eq!(
            clean("evil\u{1b}]0;pwned\u{7}"),
            "evil\\u{1b}]0;pwned\\u{7}"
        );
        assert_eq!(clean("a\rb"), "a\\u{d}b");
        assert_eq!(clean("\u{202e}txt.exe"), "\\u{202e}txt.exe");
        assert_eq!(clean("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(clean("día ✓"), "día ✓");
    }
}
