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

/// An RFC 3339 time as milliseconds since the epoch.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let t: SystemTime = humantime::parse_rfc3339_weak(s).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64)
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
    }
}
