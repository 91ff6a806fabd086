//! What the owner of a log chooses: durability, segment size, retention.

use std::time::Duration;

/// When appended data is forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// `append` returns only after the batch is on stable storage. Appenders
    /// that arrive while an fsync runs share the next one (group commit).
    Always,
    /// `append` returns once the batch is in the operating system's page
    /// cache; the owner calls [`crate::Log::sync`] on this period, so a
    /// machine crash loses at most this window. A process crash loses nothing.
    Every(Duration),
    /// The operating system decides. Segments are still synced when sealed
    /// and when the log is closed.
    Never,
}

impl Fsync {
    /// Parses `always`, `never`, `every 5ms`, `every 1s` or a bare `5ms`.
    pub fn parse(s: &str) -> Option<Fsync> {
        let s = s.trim();
        match s {
            "always" => Some(Fsync::Always),
            "never" => Some(Fsync::Never),
            _ => {
                let period = s.strip_prefix("every").unwrap_or(s).trim();
                parse_duration(period).map(Fsync::Every)
            }
        }
    }
}

impl std::fmt::Display for Fsync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fsync::Always => f.write_str("always"),
            Fsync::Never => f.write_str("never"),
            Fsync::Every(d) => write!(f, "every {}ms", d.as_millis()),
        }
    }
}

/// Parses `250ms`, `5s`, `2m`, `1h`, `7d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n.checked_mul(1_000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// The configuration of one log (one topic-partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub fsync: Fsync,
    /// A segment is sealed and a new one started once it would grow past this.
    pub segment_bytes: u64,
    /// One index entry is written per this many bytes of batches.
    pub index_interval_bytes: u64,
    /// The largest batch accepted, header included.
    pub max_batch_bytes: usize,
    /// Oldest sealed segments are deleted while the log is larger than this.
    pub retention_bytes: Option<u64>,
    /// Sealed segments whose newest record is older than this are deleted.
    pub retention_age: Option<Duration>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            fsync: Fsync::Every(Duration::from_millis(5)),
            segment_bytes: 128 << 20,
            index_interval_bytes: 4096,
            max_batch_bytes: 16 << 20,
            retention_bytes: None,
            retention_age: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policies_parse() {
        let cases = [
            ("always", Some(Fsync::Always)),
            ("never", Some(Fsync::Never)),
            ("every 5ms", Some(Fsync::Every(Duration::from_millis(5)))),
            ("every 1s", Some(Fsync::Every(Duration::from_secs(1)))),
            ("20ms", Some(Fsync::Every(Duration::from_millis(20)))),
            ("sometimes", None),
            ("every", None),
            ("every 5 parsecs", None),
        ];
        for (input, want) in cases {
            assert_eq!(Fsync::parse(input), want, "{input}");
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("ms"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
