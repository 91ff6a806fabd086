//! Which topic and group names are allowed: they become directory names.

use crate::error::QueueError;

/// The longest topic or group name, as in Kafka.
pub const MAX_NAME_LEN: usize = 249;

/// Checks a topic or group name: 1 to 249 characters of ASCII letters,
/// digits, `.`, `_` and `-`, and not `.` or `..`.
pub fn validate(kind: &'static str, name: &str) -> Result<(), QueueError> {
    let reason = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_NAME_LEN {
        "is longer than 249 characters"
    } else if name == "." || name == ".." {
        "may not be '.' or '..'"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        "may hold only ASCII letters, digits, '.', '_' and '-'"
    } else {
        return Ok(());
    };
    Err(QueueError::InvalidName {
        kind,
        name: name.chars().take(64).collect(),
        reason,
    })
}

/// The dead-letter topic of `topic`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let long = "x".repeat(250);
        let cases: &[(&str, bool)] = &[
            ("telemetry", true),
            ("jogo-da-vida", true),
            ("jogo-da-vida.dlq", true),
            ("a_b.C-9", true),
            ("", false),
            (".", false),
            ("..", false),
            ("a/b", false),
            ("a b", false),
            ("tópico", false),
            (&long, false),
        ];
        for &(name, ok) in cases {
            assert_eq!(validate("topic", name).is_ok(), ok, "{name:?}");
        }
    }
}
