//! Wall-clock time in the protocol's unit (µs since the Unix epoch), and
//! the cheap monotonic clock the request path times itself with.

use std::cell::Cell;
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

/// The OS wall clock in µs since the Unix epoch (0 before it): what a
/// change is stamped with (creation, revocation, the log's records).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
}

/// How long a thread carries the wall clock forward on [`Stamp`]'s before
/// [`request_now_us`] reads the OS clock again. Bounds how late a step of
/// the wall clock (by an operator or NTP) is seen on the request path, and
/// the drift from the OS clock while NTP slews it (at most 500 ppm: 50 µs
/// in this time).
pub const WALL_ANCHOR_REFRESH: Duration = Duration::from_millis(100);

/// The longest an OS clock read may take, measured on [`Stamp`]'s clock,
/// to be kept as an anchor: a thread preempted during it would put the
/// carried clock ahead by up to that long.
const WALL_ANCHOR_BRACKET: Duration = Duration::from_micros(20);

thread_local! {
    /// This thread's last read of the OS wall clock, and when it was read on
    /// [`Stamp`]'s clock.
    static WALL_ANCHOR: Cell<Option<(Stamp, u64)>> = const { Cell::new(None) };
}

/// The wall clock as the request path reads it, in µs since the Unix epoch:
/// what a token login and a token check judge expiry by and record a use
/// at. One read of [`Stamp`]'s clock added to the thread's anchor (about
/// 10 ns here, where the OS clock's `clock_gettime` is 27 ns); the OS clock
/// is read again once the anchor is [`WALL_ANCHOR_REFRESH`] old. Against
/// [`now_us`] it is never behind (but for the drift above) and ahead by at
/// most [`WALL_ANCHOR_BRACKET`]: a token's expiry is never judged late.
pub fn request_now_us() -> u64 {
    let now = Stamp::now();
    WALL_ANCHOR.with(|anchor| {
        if let Some((at, wall_us)) = anchor.get() {
            let since = now.saturating_duration_since(at);
            if since < WALL_ANCHOR_REFRESH {
                // Under 100 ms: `as` cannot truncate, the sum saturates.
                return wall_us.saturating_add(since.as_micros() as u64);
            }
        }
        // The OS clock is read after `now`, so the anchor is never behind
        // it: an expiry is never judged late. If the thread was preempted
        // between the two reads, answer from the OS clock and try again
        // next time.
        let wall_us = now_us();
        if Stamp::now().saturating_duration_since(now) <= WALL_ANCHOR_BRACKET {
            anchor.set(Some((now, wall_us)));
        } else {
            anchor.set(None);
        }
        wall_us
    })
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
    fn the_carried_wall_clock_stays_with_the_os_clock() {
        // Both reads bracket the carried one, over more than one refresh.
        let until = super::Stamp::now() + 3 * super::WALL_ANCHOR_REFRESH;
        let mut reads = 0u32;
        let mut last = 0;
        while super::Stamp::now() < until {
            let before = super::now_us();
            let carried = super::request_now_us();
            let after = super::now_us();
            // 100 µs of slack: how far ahead the anchor may be (20 µs) and
            // the TSC's rate against the OS clock's, which NTP may slew.
            assert!(carried + 100 >= before && carried <= after + 100, "{before} {carried} {after}");
            assert!(carried + 100 >= last, "went back: {last} then {carried}");
            last = carried;
            reads += 1;
            std::thread::sleep(std::time::Duration::from_millis(7));
        }
        assert!(reads > 10);
    }

    #[test]
    fn times_past_the_year_9999_do_not_panic() {
        assert_eq!(super::rfc3339_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(super::rfc3339_us(u64::MAX), super::RFC3339_LAST);
    }
}
