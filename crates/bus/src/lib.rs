//! The bus: the one transport contract every Weir component uses, with its
//! backends chosen by URL.
//!
//! - [`Bus`]: `publish`, `publish_batch`, `subscribe(topic, group, options)`,
//!   `seek`, `stats`. [`connect`] picks a backend from a URL:
//!   `embedded:///path/to/data` (the in-process durable queue, see
//!   [`embedded`]), `http://host:port` (a `weir broker`, see [`http`]) or
//!   `kafka://host:port[,host:port…]` (a Kafka cluster, see [`kafka`]).
//! - [`Subscription`]: one member of a consumer group; `receive` yields
//!   [`Delivery`]s, each settled by `ack`, `nack(delay)` or `reject(reason)`,
//!   one at a time or in batches through an [`Acker`].
//! - [`queue_wire`]: the conversions between the queue's types and the
//!   wire's, shared by the embedded backend and the broker.
//!
//! The contract, which `contract` (feature `contract`) checks against every
//! backend: a publish returns once the message is durable by the backend's
//! rule; every member of a group gets a share and a message goes to one member
//! at a time; a delivery not acked within the visibility timeout comes again;
//! after `max_deliveries` deliveries, or when rejected, it goes to
//! `<topic>.dlq` with the reason. Delivery is at-least-once.
//!
//! Invariants: components reach a transport only through [`Bus`]; this crate
//! names no HTTP route (that is `weir-api`'s job) and owns no global state.

mod error;
mod message;

pub mod embedded;
pub mod http;
pub mod kafka;
pub mod queue_wire;

#[cfg(feature = "contract")]
pub mod contract;
#[cfg(feature = "contract")]
pub mod scripted;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

pub use error::{BusError, Result};
pub use message::{Acker, Delivery, Message, Receipt, Settle, Settler};
/// Where a new group starts reading: `Earliest` or `Latest`.
pub use weir_api::Start;
pub use weir_api::wire::{
    GroupStats, SeekTarget, SettleStatus, StatsResponse as Stats, TopicStats,
};

/// How a subscriber joins its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Names this member in stats; members of one group need distinct ids.
    pub consumer_id: String,
    /// Where a group with no history starts.
    pub start: Start,
    /// A delivery not settled within this comes again (backend default when
    /// absent: 30 s for the embedded queue).
    pub visibility_timeout: Option<Duration>,
    /// Deliveries before a message is dead-lettered (default 5).
    pub max_deliveries: Option<u32>,
    /// Deliveries this member holds unsettled at most; a backend that pushes
    /// (SSE) stops pushing at this many.
    pub max_in_flight: usize,
}

impl SubscribeOptions {
    pub fn new(consumer_id: impl Into<String>) -> SubscribeOptions {
        SubscribeOptions {
            consumer_id: consumer_id.into(),
            start: Start::Earliest,
            visibility_timeout: None,
            max_deliveries: None,
            max_in_flight: 100,
        }
    }

    /// What every backend refuses before asking its transport: a
    /// `max_in_flight` of 0. (Zero timeouts and delivery limits are refused
    /// by the queue itself, `weir_queue::Queue::group_settings`.)
    pub fn check(&self) -> Result<()> {
        if self.max_in_flight == 0 {
            return Err(BusError::Invalid("max_in_flight must be at least 1".into()));
        }
        Ok(())
    }
}

/// A transport. Cheap to share as `Arc<dyn Bus>`.
#[async_trait::async_trait]
pub trait Bus: Send + Sync + Debug {
    /// Publishes one message; returns once it is durable by the backend's
    /// rule.
    async fn publish(&self, topic: &str, message: Message) -> Result<Receipt> {
        let mut receipts = self.publish_batch(topic, vec![message]).await?;
        receipts
            .pop()
            .ok_or_else(|| BusError::Internal("publish returned no receipt".into()))
    }

    /// Publishes messages in order, one receipt each: the fast path.
    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<Vec<Receipt>>;

    /// Joins `group` on `topic` (both made on first use).
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>>;

    /// Moves a group to replay or skip messages.
    async fn seek(&self, topic: &str, group: &str, to: SeekTarget) -> Result<()>;

    /// Topics and groups with depth, in flight and dead letters.
    async fn stats(&self) -> Result<Stats>;

    /// Flushes and lets go of the transport.
    async fn close(&self) -> Result<()>;
}

/// One member of a consumer group.
#[async_trait::async_trait]
pub trait Subscription: Send + Debug {
    /// Up to `max` deliveries, waiting up to `wait` for the first; empty when
    /// none came in time.
    async fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>>;

    /// Settles deliveries of this subscription in batches.
    fn acker(&self) -> Acker;
}

/// What [`connect`] needs besides the URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Bearer token for an `http://` broker started with `--auth-token`.
    pub auth_token: Option<String>,
    /// Partitions of topics an embedded queue creates (default 4).
    pub partitions: Option<u32>,
    /// Fsync policy of an embedded queue (default `every 5ms`).
    pub fsync: Option<weir_queue::Fsync>,
    /// `kafka://` only: librdkafka properties for every client (`key`,
    /// `value`), and `replication.factor` of the topics it creates.
    pub kafka_options: Vec<(String, String)>,
}

/// Opens the transport a URL names: `embedded:///path`, `http://host:port`
/// or `kafka://host:port[,host:port…]`.
pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Arc<dyn Bus>> {
    if let Some(path) = url.strip_prefix("embedded://") {
        let bus = embedded::EmbeddedBus::open(path, options).await?;
        Ok(Arc::new(bus))
    } else if url.starts_with("http://") {
        let bus = http::HttpBus::new(url, options)?;
        Ok(Arc::new(bus))
    } else if let Some(servers) = url.strip_prefix("kafka://") {
        let bus = kafka::KafkaBus::new(servers, options)?;
        Ok(Arc::new(bus))
    } else {
        Err(BusError::Url(format!(
            "unsupported bus URL {url:?}: expected embedded:///path, http://host:port or kafka://host:port"
        )))
    }
}
