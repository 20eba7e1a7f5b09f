//! Printing results for people or for programs.

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

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_times() {
        assert_eq!(super::time(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::time(1_795_878_178_000), "2026-11-28T15:02:58Z");
    }
}
