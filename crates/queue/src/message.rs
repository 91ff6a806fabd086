//! Messages in and deliveries out.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use weir_log::{Header, Record};

use crate::error::QueueError;

/// What a producer publishes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Messages with the same key go to the same partition, in order.
    pub key: Option<Bytes>,
    pub headers: Vec<Header>,
    pub payload: Bytes,
    /// Milliseconds since the epoch; the publish time when absent.
    pub timestamp: Option<i64>,
}

impl Message {
    pub fn new(payload: impl Into<Bytes>) -> Message {
        Message {
            payload: payload.into(),
            ..Message::default()
        }
    }

    pub fn with_key(mut self, key: impl Into<Bytes>) -> Message {
        self.key = Some(key.into());
        self
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Message {
        self.headers.push(Header::new(name, value));
        self
    }

    pub(crate) fn into_record(self, now_ms: i64) -> Record {
        Record {
            timestamp: self.timestamp.unwrap_or(now_ms),
            key: self.key,
            headers: self.headers,
            payload: self.payload,
        }
    }
}

/// A message's identity inside its topic: partition and offset, written
/// `PARTITION-OFFSET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    pub partition: u32,
    pub offset: u64,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.partition, self.offset)
    }
}

impl FromStr for MessageId {
    type Err = QueueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || QueueError::BadMessageId(s.chars().take(64).collect());
        let (p, o) = s.split_once('-').ok_or_else(bad)?;
        Ok(MessageId {
            partition: p.parse().map_err(|_| bad())?,
            offset: o.parse().map_err(|_| bad())?,
        })
    }
}

/// Where a published message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub id: MessageId,
    pub timestamp: i64,
}

/// A message handed to one consumer of a group, under a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: MessageId,
    pub topic: Arc<str>,
    pub record: Record,
    /// 1 on the first delivery, then one more each time it is redelivered.
    pub delivery_count: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_round_trip_and_reject_garbage() {
        let id = MessageId {
            partition: 3,
            offset: 1_234_567,
        };
        assert_eq!(id.to_string(), "3-1234567");
        assert_eq!("3-1234567".parse::<MessageId>().unwrap(), id);
        for bad in ["", "3", "3-", "-4", "a-1", "1-b", "1-2-3", "-1-2"] {
            assert!(bad.parse::<MessageId>().is_err(), "{bad:?}");
        }
    }
}
