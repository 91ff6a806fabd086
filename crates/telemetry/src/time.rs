//! Times as Weir writes them: RFC 3339 in UTC with milliseconds, and
//! milliseconds since the Unix epoch inside.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch as RFC 3339 (UTC, millisecond precision),
/// clamped to the range RFC 3339 can write.
pub fn format_timestamp(ms: i64) -> String {
    /// 9999-12-31T23:59:59.999Z, the last time RFC 3339 can write.
    const LAST: i64 = 253_402_300_799_999;
    let t = UNIX_EPOCH + Duration::from_millis(ms.clamp(0, LAST) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// An RFC 3339 time as milliseconds since the epoch: `Z` or a numeric
/// offset (`+02:00`, as Python's `isoformat()` writes); digits past the
/// millisecond are truncated.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let (local, offset_ms) = split_offset(s);
    let t: SystemTime = humantime::parse_rfc3339_weak(local).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64 - offset_ms)
}

/// A trailing `±HH:MM` taken off, as milliseconds east of UTC.
fn split_offset(s: &str) -> (&str, i64) {
    let b = s.as_bytes();
    let n = b.len();
    let digit = |i: usize| b[i].is_ascii_digit();
    if n < 25 || !matches!(b[n - 6], b'+' | b'-') || b[n - 3] != b':' {
        return (s, 0);
    }
    if !(digit(n - 5) && digit(n - 4) && digit(n - 2) && digit(n - 1)) {
        return (s, 0);
    }
    let number = |i: usize| i64::from(b[i] - b'0') * 10 + i64::from(b[i + 1] - b'0');
    let minutes = number(n - 5) * 60 + number(n - 2);
    let sign = if b[n - 6] == b'-' { -1 } else { 1 };
    (&s[..n - 6], sign * minutes * 60_000)
}

/// The current time in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_clamps() {
        let ms = 1_752_871_354_123;
        assert_eq!(format_timestamp(ms), "2025-07-18T20:42:34.123Z");
        assert_eq!(parse_timestamp("2025-07-18T20:42:34.123Z"), Some(ms));
        assert_eq!(parse_timestamp("2025-07-18T20:42:34Z"), Some(ms - 123));
        assert_eq!(format_timestamp(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_timestamp(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_timestamp("2025-07-18T22:42:34.123+02:00"), Some(ms));
        assert_eq!(parse_timestamp("2025-07-18T20:42:34.123+00:00"), Some(ms));
        assert_eq!(parse_timestamp("2025-07-18T15:12:34.123-05:30"), Some(ms));
        assert_eq!(parse_timestamp("2025-07-18T20:42:34.123456Z"), Some(ms));
        assert_eq!(parse_timestamp("2025-07-18T20:42:34+2:00"), None);
    }
}
