//! Messages in, receipts and deliveries out, and the [`Acker`] that settles
//! deliveries.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::{Result, SettleStatus};

/// What a producer publishes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Messages with one key stay in order (one partition).
    pub key: Option<Bytes>,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
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

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Message {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Where a published message landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The message's id in its topic, as the transport writes it.
    pub id: String,
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
}

/// How to settle deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Done: never deliver it again.
    Ack,
    /// Give it back, to be delivered again after the delay.
    Nack(Duration),
    /// Send it to the dead-letter topic with this reason.
    Reject(String),
}

/// Settles deliveries of one subscription; cheap to clone.
#[derive(Debug, Clone)]
pub struct Acker {
    inner: Arc<dyn Settler>,
}

/// A backend's way of settling ids of one topic and group.
#[async_trait::async_trait]
pub trait Settler: Send + Sync + Debug {
    async fn settle(&self, ids: &[String], how: Settle) -> Result<Vec<SettleStatus>>;
}

impl Acker {
    pub fn new(settler: Arc<dyn Settler>) -> Acker {
        Acker { inner: settler }
    }

    /// Settles `ids`; one status per id, in order.
    pub async fn settle(&self, ids: &[String], how: Settle) -> Result<Vec<SettleStatus>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.inner.settle(ids, how).await
    }

    pub async fn ack(&self, ids: &[String]) -> Result<Vec<SettleStatus>> {
        self.settle(ids, Settle::Ack).await
    }

    pub async fn nack(&self, ids: &[String], delay: Duration) -> Result<Vec<SettleStatus>> {
        self.settle(ids, Settle::Nack(delay)).await
    }

    pub async fn reject(&self, ids: &[String], reason: &str) -> Result<Vec<SettleStatus>> {
        self.settle(ids, Settle::Reject(reason.to_string())).await
    }
}

/// A message handed to one member of a group, under a lease.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub topic: String,
    pub key: Option<Bytes>,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
    /// When it was published, milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// 1 on the first delivery.
    pub delivery_count: u32,
    pub acker: Acker,
}

impl Delivery {
    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub async fn ack(&self) -> Result<SettleStatus> {
        self.one(Settle::Ack).await
    }

    pub async fn nack(&self, delay: Duration) -> Result<SettleStatus> {
        self.one(Settle::Nack(delay)).await
    }

    pub async fn reject(&self, reason: &str) -> Result<SettleStatus> {
        self.one(Settle::Reject(reason.to_string())).await
    }

    async fn one(&self, how: Settle) -> Result<SettleStatus> {
        let mut out = self
            .acker
            .settle(std::slice::from_ref(&self.id), how)
            .await?;
        Ok(out.pop().unwrap_or(SettleStatus::NotDelivered))
    }
}
