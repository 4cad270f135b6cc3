//! Protocol timestamps (µs since the Unix epoch, 0 = never / none) for
//! people: UTC dates, RFC 3339 for JSON, and relative phrases such as
//! "in 3 days" or "2 hours ago".
//!
//! Written here rather than taken from a date crate: the CLI needs only UTC
//! and the Gregorian calendar, which is Howard Hinnant's `civil_from_days`
//! (<https://howardhinnant.github.io/date_algorithms.html>), a dozen lines.

use std::time::{SystemTime, UNIX_EPOCH};

const US_PER_SECOND: u64 = 1_000_000;
const SECONDS_PER_DAY: u64 = 86_400;

/// Now, in protocol units.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

/// Calendar date and time of day in UTC.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
}

impl Civil {
    fn from_us(at_us: u64) -> Civil {
        let seconds = at_us / US_PER_SECOND;
        let days = seconds / SECONDS_PER_DAY;
        let of_day = seconds % SECONDS_PER_DAY;
        // u64::MAX µs is about 213 million days: far inside i64.
        let (year, month, day) = civil_from_days(days as i64);
        Civil { year, month, day, hour: of_day / 3600, minute: of_day % 3600 / 60, second: of_day % 60 }
    }
}

/// (year, month 1–12, day 1–31) of the day `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March, so that February's leap day comes last.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2026-12-01`
pub fn date(at_us: u64) -> String {
    let c = Civil::from_us(at_us);
    format!("{:04}-{:02}-{:02}", c.year, c.month, c.day)
}

/// `2026-12-01 14:03:09 UTC`
pub fn date_time(at_us: u64) -> String {
    let c = Civil::from_us(at_us);
    format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC", c.year, c.month, c.day, c.hour, c.minute, c.second)
}

/// `2026-12-01T14:03:09Z` (RFC 3339, whole seconds), for JSON.
pub fn rfc3339(at_us: u64) -> String {
    let c = Civil::from_us(at_us);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", c.year, c.month, c.day, c.hour, c.minute, c.second)
}

/// "in 3 days", "2 hours ago", "just now". Rounded to the nearest unit, so
/// that a token made a moment ago to last 30 days says "in 30 days".
pub fn relative(at_us: u64, now_us: u64) -> String {
    let future = at_us > now_us;
    let seconds = at_us.abs_diff(now_us) / US_PER_SECOND;
    if seconds < 60 {
        return if future { "in under a minute".to_owned() } else { "just now".to_owned() };
    }
    // Each unit is used while the amount stays readable; the next takes over.
    const UNITS: [(&str, u64, u64); 5] = [
        ("minute", 60, 60 * 60),
        ("hour", 3600, 48 * 3600),
        ("day", SECONDS_PER_DAY, 60 * SECONDS_PER_DAY),
        ("month", 30 * SECONDS_PER_DAY, 730 * SECONDS_PER_DAY),
        ("year", 365 * SECONDS_PER_DAY, u64::MAX),
    ];
    let (unit, unit_seconds, _) =
        UNITS.iter().copied().find(|&(_, _, below)| seconds < below).expect("the last unit has no bound");
    let count = (seconds + unit_seconds / 2) / unit_seconds;
    let plural = if count == 1 { "" } else { "s" };
    if future { format!("in {count} {unit}{plural}") } else { format!("{count} {unit}{plural} ago") }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_US: u64 = SECONDS_PER_DAY * US_PER_SECOND;
    const HOUR_US: u64 = 3600 * US_PER_SECOND;

    #[test]
    fn dates_from_known_instants() {
        assert_eq!(date_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        // `date -u -d @951782400` → Tue Feb 29 00:00:00 UTC 2000 (a leap day of a /400 year).
        assert_eq!(date(951_782_400 * US_PER_SECOND), "2000-02-29");
        assert_eq!(date(951_868_800 * US_PER_SECOND), "2000-03-01");
        // 2100 is not a leap year.
        assert_eq!(date(4_107_542_400 * US_PER_SECOND), "2100-03-01");
        // 1_780_000_000 s = 2026-05-28T20:26:40Z; the µs part is dropped, never rounded up.
        assert_eq!(rfc3339(1_780_000_000 * US_PER_SECOND + 999_999), "2026-05-28T20:26:40Z");
        assert_eq!(date_time(1_780_000_000 * US_PER_SECOND), "2026-05-28 20:26:40 UTC");
        assert_eq!(date(1_767_225_599 * US_PER_SECOND), "2025-12-31");
        assert_eq!(date(1_767_225_600 * US_PER_SECOND), "2026-01-01");
    }

    #[test]
    fn every_day_of_four_centuries_follows_the_previous_one() {
        let mut previous = civil_from_days(-1);
        assert_eq!(previous, (1969, 12, 31));
        for days in 0..146_097 {
            let (year, month, day) = civil_from_days(days);
            let (py, pm, pd) = previous;
            let next_day = (year, month, day) == (py, pm, pd + 1);
            let next_month = (year, month, day) == (py, pm + 1, 1);
            let next_year = (year, month, day) == (py + 1, 1, 1) && (pm, pd) == (12, 31);
            assert!(next_day || next_month || next_year, "{previous:?} then {:?}", (year, month, day));
            previous = (year, month, day);
        }
        assert_eq!(previous, (2369, 12, 31));
    }

    #[test]
    fn the_largest_timestamp_formats() {
        assert!(date_time(u64::MAX).ends_with(" UTC"));
    }

    #[test]
    fn relative_phrases() {
        let now = 1_780_000_000 * US_PER_SECOND;
        assert_eq!(relative(now, now), "just now");
        assert_eq!(relative(now + 10 * US_PER_SECOND, now), "in under a minute");
        assert_eq!(relative(now - 90 * US_PER_SECOND, now), "2 minutes ago");
        assert_eq!(relative(now + 60 * US_PER_SECOND, now), "in 1 minute");
        assert_eq!(relative(now - 2 * HOUR_US, now), "2 hours ago");
        assert_eq!(relative(now + 3 * DAY_US, now), "in 3 days");
        // A 30-day token looked at a moment after it was made.
        assert_eq!(relative(now + 30 * DAY_US - 1500, now), "in 30 days");
        assert_eq!(relative(now + 90 * DAY_US, now), "in 3 months");
        assert_eq!(relative(now - 3 * 365 * DAY_US, now), "3 years ago");
        let far = relative(u64::MAX, now);
        assert!(far.starts_with("in ") && far.ends_with(" years"), "{far}");
    }
}
