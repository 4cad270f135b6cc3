//! How durations are spelled in the config file and in `LATCHKEY_*`
//! variables: humantime text such as `"90s"`, `"1 m"` or `"1h 30m"`, and
//! `"never"` for the keys that may have no duration at all.
//!
//! The module doubles as a serde adapter (`#[serde(with = "duration_text")]`
//! and `duration_text::or_never`), so the file and the environment accept
//! exactly the same text. What range a duration may take is checked later,
//! in `validate`, not here.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses a human duration such as `1 m`, `90s` or `1h 30m` (Iggy's style:
/// a space between number and unit is allowed).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut compact = String::with_capacity(text.len());
    let mut tokens = text.split_whitespace().peekable();
    while let Some(token) = tokens.next() {
        compact.push_str(token);
        // "1 m" → "1m", but keep "1m 30s" separated.
        let ends_in_digit = token.ends_with(|c: char| c.is_ascii_digit());
        if !ends_in_digit && tokens.peek().is_some() {
            compact.push(' ');
        }
    }
    humantime::parse_duration(&compact).map_err(|error| error.to_string())
}

/// `"never"` is `None`; anything else is a duration.
pub fn parse_optional_duration(text: &str) -> Result<Option<Duration>, String> {
    if text.trim() == "never" { Ok(None) } else { parse_duration(text).map(Some) }
}

/// serde: a duration written as text.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// serde: a duration written as text, or `"never"` for none.
pub mod or_never {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_optional_duration(&text).map_err(serde::de::Error::custom)
    }
}
