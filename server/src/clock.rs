//! Wall-clock time in the protocol's unit: µs since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
}

/// The last instant RFC 3339 can write (its years have four digits).
pub const RFC3339_LAST: &str = "9999-12-31T23:59:59.999999Z";

/// `at_us` as RFC 3339 in UTC to the microsecond; an instant after the
/// year 9999 (a token made to last "10000y" is one) as [`RFC3339_LAST`].
pub fn rfc3339_us(at_us: u64) -> String {
    use std::fmt::Write;
    let at = UNIX_EPOCH + std::time::Duration::from_micros(at_us);
    let mut text = String::new();
    match write!(text, "{}", humantime::format_rfc3339_micros(at)) {
        Ok(()) => text,
        Err(_) => RFC3339_LAST.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_past_the_year_9999_do_not_panic() {
        assert_eq!(super::rfc3339_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(super::rfc3339_us(u64::MAX), super::RFC3339_LAST);
    }
}
