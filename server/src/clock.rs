//! Wall-clock time in the protocol's unit (µs since the Unix epoch), and
//! the cheap monotonic clock the request path times itself with.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A monotonic instant for what every request reads: its duration for the
/// metrics, and the moment a connection's timeouts run from. Read from the
/// CPU's time-stamp counter where it is invariant (about 10 ns on the
/// benchmark machine, against 27 ns for `std::time::Instant`'s
/// `clock_gettime`), from the OS clock otherwise (`quanta`). Never
/// compared with a `std` or tokio instant: a timer is armed from a
/// duration measured on this clock.
pub type Stamp = quanta::Instant;

/// Calibrates [`Stamp`]'s clock against the OS clock, once, at start-up:
/// the first read would otherwise pay for it (some milliseconds).
pub fn calibrate() {
    let _ = Stamp::now();
}

/// The time since `start` on [`Stamp`]'s clock.
#[inline]
pub fn since(start: Stamp) -> Duration {
    Stamp::now().saturating_duration_since(start)
}

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
