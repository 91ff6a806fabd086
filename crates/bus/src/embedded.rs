//! The `embedded://` backend: the bus over an in-process
//! [`weir_queue::Queue`].
//!
//! [`EmbeddedBus`] is a thin translation layer: bus messages, options,
//! ids and settle outcomes become the queue's, and the queue's stats become
//! the wire's [`StatsResponse`] (by [`crate::queue_wire`], which the HTTP
//! broker uses too). The only state it adds is per subscription: the ids a
//! member has received and not yet settled, so that it never holds more
//! than `max_in_flight` of them (the queue itself caps only the group's
//! window).
//!
//! Who closes the queue: a bus made by [`EmbeddedBus::open`] owns its queue,
//! and [`Bus::close`] stops the queue's background task and syncs every log.
//! A bus made by [`EmbeddedBus::new`] shares a queue its caller already
//! opened, and its `close` leaves the queue running: closing belongs to
//! whoever opened it. Either way the closed handle (and every clone of it,
//! its subscriptions and their ackers) answers [`BusError::Closed`] from
//! then on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use weir_api::wire::{SeekTarget, SettleStatus, StatsResponse};
use weir_queue::{GroupOverrides, MessageId, Queue, QueueConfig, QueueError};

use crate::message::{Acker, Delivery, Message, Receipt, Settle, Settler};
use crate::queue_wire::{seek_to, settle_status, start_at, wire_stats};
use crate::{Bus, BusError, ConnectOptions, Result, SubscribeOptions, Subscription};

/// The bus over an embedded queue. Cheap to clone: clones share the queue
/// and whether the bus is closed.
#[derive(Debug, Clone)]
pub struct EmbeddedBus {
    queue: Queue,
    /// Whether this bus opened the queue, and so closes it.
    owns_queue: bool,
    closed: Arc<AtomicBool>,
}

impl EmbeddedBus {
    /// A bus over a queue the caller opened and will close.
    pub fn new(queue: Queue) -> EmbeddedBus {
        EmbeddedBus {
            queue,
            owns_queue: false,
            closed: Arc::default(),
        }
    }

    /// Opens the queue in `path`, what follows `embedded://` in a bus URL:
    /// `embedded:///var/lib/weir` is absolute, `embedded://weir-data`
    /// relative to the working directory. `options.partitions` and
    /// `options.fsync` override the queue's defaults.
    pub async fn open(path: &str, options: &ConnectOptions) -> Result<EmbeddedBus> {
        if path.is_empty() {
            return Err(BusError::Url(
                "embedded:// needs a data directory, like embedded:///var/lib/weir".into(),
            ));
        }
        let mut config = QueueConfig::new(path);
        if let Some(partitions) = options.partitions {
            config.default_partitions = partitions;
        }
        if let Some(fsync) = options.fsync {
            config.fsync = fsync;
        }
        let queue = Queue::open(config).await?;
        Ok(EmbeddedBus {
            queue,
            owns_queue: true,
            closed: Arc::default(),
        })
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    fn check_open(&self) -> Result<()> {
        check_open(&self.closed)
    }
}

#[async_trait::async_trait]
impl Bus for EmbeddedBus {
    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<Vec<Receipt>> {
        self.check_open()?;
        let messages = messages.into_iter().map(queue_message).collect();
        let published = self.queue.publish_batch(topic, messages).await?;
        Ok(published
            .into_iter()
            .map(|p| Receipt {
                id: p.id.to_string(),
                timestamp_ms: p.timestamp,
            })
            .collect())
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        self.check_open()?;
        options.check()?;
        let group_config = self.queue.group_settings(
            topic,
            group,
            GroupOverrides {
                visibility_timeout: options.visibility_timeout,
                max_deliveries: options.max_deliveries,
                start: start_at(options.start),
            },
        )?;
        let consumer = self.queue.subscribe(
            topic,
            group,
            weir_queue::SubscribeOptions {
                consumer_id: options.consumer_id,
                group: group_config,
            },
        )?;
        let settler = Arc::new(EmbeddedSettler {
            queue: self.queue.clone(),
            topic: topic.to_string(),
            group: group.to_string(),
            held: Mutex::default(),
            released: Notify::new(),
            closed: Arc::clone(&self.closed),
        });
        Ok(Box::new(EmbeddedSubscription {
            consumer,
            acker: Acker::new(Arc::clone(&settler) as Arc<dyn Settler>),
            settler,
            max_in_flight: options.max_in_flight,
            visibility_timeout: group_config.visibility_timeout,
        }))
    }

    async fn seek(&self, topic: &str, group: &str, to: SeekTarget) -> Result<()> {
        self.check_open()?;
        Ok(self.queue.seek(topic, group, seek_to(to))?)
    }

    async fn stats(&self) -> Result<StatsResponse> {
        self.check_open()?;
        Ok(wire_stats(&self.queue.stats()?))
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        if self.owns_queue {
            // `Queue::close` consumes a handle; a clone stops the one
            // background task all clones share and syncs every log.
            self.queue.clone().close().await?;
        }
        Ok(())
    }
}

fn check_open(closed: &AtomicBool) -> Result<()> {
    if closed.load(Ordering::SeqCst) {
        Err(BusError::Closed)
    } else {
        Ok(())
    }
}

/// One member of a group on the embedded queue.
#[derive(Debug)]
struct EmbeddedSubscription {
    consumer: weir_queue::Consumer,
    settler: Arc<EmbeddedSettler>,
    acker: Acker,
    max_in_flight: usize,
    /// After this, a delivery this member never settled may have gone to
    /// another member: it stops counting against `max_in_flight`.
    visibility_timeout: Duration,
}

#[async_trait::async_trait]
impl Subscription for EmbeddedSubscription {
    async fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        check_open(&self.settler.closed)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + wait;
        loop {
            // Listen before looking, so a settle in between is not missed.
            let mut released = std::pin::pin!(self.settler.released.notified());
            released.as_mut().enable();
            let now = Instant::now();
            let (held, next_expiry) = self.settler.held().count(now);
            let room = self.max_in_flight.saturating_sub(held);
            if room > 0 {
                let wait = deadline.saturating_duration_since(now);
                let deliveries = self.consumer.receive(max.min(room), wait).await?;
                let expiry = Instant::now() + self.visibility_timeout;
                let mut held = self.settler.held();
                for d in &deliveries {
                    held.ids.insert(d.id, expiry);
                }
                drop(held);
                return Ok(deliveries
                    .into_iter()
                    .map(|d| bus_delivery(d, &self.acker))
                    .collect());
            }
            if now >= deadline {
                return Ok(Vec::new());
            }
            let until = next_expiry.map_or(deadline, |e| e.min(deadline));
            // Either a settle made room, a lease may have expired, or time
            // is up: look again.
            let _ = tokio::time::timeout_at(until, released).await;
        }
    }

    fn acker(&self) -> Acker {
        self.acker.clone()
    }
}

/// Settles ids of one topic and group, and keeps the count of what its
/// subscription holds.
#[derive(Debug)]
struct EmbeddedSettler {
    queue: Queue,
    topic: String,
    group: String,
    held: Mutex<Held>,
    /// Woken when settled ids stop counting as held.
    released: Notify,
    closed: Arc<AtomicBool>,
}

/// Ids handed to one subscription and not settled through its acker, each
/// with the moment its lease has surely ended.
#[derive(Debug, Default)]
struct Held {
    ids: HashMap<MessageId, Instant>,
}

impl Held {
    /// Forgets ids whose lease has ended; returns how many are left and
    /// when the next one ends.
    fn count(&mut self, now: Instant) -> (usize, Option<Instant>) {
        self.ids.retain(|_, expiry| *expiry > now);
        (self.ids.len(), self.ids.values().min().copied())
    }
}

impl EmbeddedSettler {
    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Settler for EmbeddedSettler {
    async fn settle(&self, ids: &[String], how: Settle) -> Result<Vec<SettleStatus>> {
        check_open(&self.closed)?;
        let ids = ids
            .iter()
            .map(|id| id.parse::<MessageId>())
            .collect::<Result<Vec<_>, _>>()?;
        let (topic, group) = (self.topic.as_str(), self.group.as_str());
        let outcomes = match how {
            Settle::Ack => self.queue.ack(topic, group, &ids).await?,
            Settle::Nack(delay) => self.queue.nack(topic, group, &ids, delay).await?,
            Settle::Reject(reason) => self.queue.reject(topic, group, &ids, &reason).await?,
        };
        // Whatever the outcome, this member no longer holds these ids: it
        // settled them now, or they were settled or re-leased before.
        let mut held = self.held();
        for id in &ids {
            held.ids.remove(id);
        }
        drop(held);
        self.released.notify_waiters();
        Ok(outcomes.into_iter().map(settle_status).collect())
    }
}

fn queue_message(m: Message) -> weir_queue::Message {
    weir_queue::Message {
        key: m.key,
        headers: m
            .headers
            .into_iter()
            .map(|(name, value)| weir_queue::Header::new(name, value))
            .collect(),
        payload: m.payload,
        timestamp: None,
    }
}

fn bus_delivery(d: weir_queue::Delivery, acker: &Acker) -> Delivery {
    let record = d.record;
    Delivery {
        id: d.id.to_string(),
        topic: d.topic.to_string(),
        key: record.key,
        headers: record
            .headers
            .into_iter()
            .map(|h| (h.name, String::from_utf8_lossy(&h.value).into_owned()))
            .collect(),
        payload: record.payload,
        timestamp_ms: record.timestamp,
        delivery_count: d.delivery_count,
        acker: acker.clone(),
    }
}

/// The queue's errors by what a caller can do about them; the message is
/// the queue's own.
impl From<QueueError> for BusError {
    fn from(e: QueueError) -> BusError {
        let message = e.to_string();
        match e {
            QueueError::InvalidName { .. }
            | QueueError::MessageTooLarge { .. }
            | QueueError::BatchTooLarge { .. }
            | QueueError::EmptyBatch
            | QueueError::BadMessageId(_)
            | QueueError::InvalidSetting { .. }
            | QueueError::PartitionMismatch { .. }
            | QueueError::NoSuchPartition { .. } => BusError::Invalid(message),
            QueueError::UnknownTopic(_) | QueueError::UnknownGroup { .. } => {
                BusError::NotFound(message)
            }
            QueueError::Closed => BusError::Closed,
            e if e.is_retryable() => BusError::Unavailable(message),
            _ => BusError::Internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use weir_log::LogError;

    use super::*;

    fn io(kind: std::io::ErrorKind) -> QueueError {
        QueueError::Log {
            context: "appending to topic \"jobs\" partition 0".into(),
            source: LogError::Io {
                path: PathBuf::from("/data/topics/jobs/0"),
                source: std::io::Error::new(kind, "disk said no"),
            },
        }
    }

    #[test]
    fn queue_errors_map_by_what_a_caller_can_do() {
        let invalid = |e: &BusError| matches!(e, BusError::Invalid(_));
        let not_found = |e: &BusError| matches!(e, BusError::NotFound(_));
        let unavailable = |e: &BusError| matches!(e, BusError::Unavailable(_));
        let internal = |e: &BusError| matches!(e, BusError::Internal(_));
        let closed = |e: &BusError| *e == BusError::Closed;
        type Kind = fn(&BusError) -> bool;
        let cases: Vec<(QueueError, Kind)> = vec![
            (
                weir_queue::validate_name("topic", "a/b").unwrap_err(),
                invalid,
            ),
            (QueueError::MessageTooLarge { size: 2, limit: 1 }, invalid),
            (QueueError::BatchTooLarge { size: 2, limit: 1 }, invalid),
            (QueueError::EmptyBatch, invalid),
            (
                QueueError::InvalidSetting {
                    setting: "max_deliveries",
                    rule: "at least 1",
                },
                invalid,
            ),
            ("x".parse::<MessageId>().unwrap_err(), invalid),
            (
                QueueError::PartitionMismatch {
                    topic: "jobs".into(),
                    existing: 4,
                    requested: 2,
                },
                invalid,
            ),
            (
                QueueError::NoSuchPartition {
                    topic: "jobs".into(),
                    partitions: 4,
                    partition: 9,
                },
                invalid,
            ),
            (QueueError::UnknownTopic("jobs".into()), not_found),
            (
                QueueError::UnknownGroup {
                    topic: "jobs".into(),
                    group: "g".into(),
                },
                not_found,
            ),
            (QueueError::Closed, closed),
            (io(std::io::ErrorKind::TimedOut), unavailable),
            (io(std::io::ErrorKind::Interrupted), unavailable),
            (io(std::io::ErrorKind::PermissionDenied), internal),
            (
                QueueError::Locked {
                    dir: PathBuf::from("/data"),
                },
                internal,
            ),
            (
                QueueError::Journal {
                    path: PathBuf::from("/data/groups/g/jobs"),
                    reason: "undecodable event".into(),
                },
                internal,
            ),
        ];
        for (queue_error, kind) in cases {
            let text = queue_error.to_string();
            let bus_error = BusError::from(queue_error);
            assert!(kind(&bus_error), "{text} became {bus_error:?}");
            if bus_error != BusError::Closed {
                assert_eq!(bus_error.to_string(), text, "the message is kept");
            }
        }
    }

    #[test]
    fn messages_keep_key_headers_and_payload() {
        let m = Message::new("body")
            .with_key("k")
            .with_header("trace", "t1")
            .with_header("trace", "t2");
        let q = queue_message(m);
        assert_eq!(q.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(&q.payload[..], b"body");
        assert_eq!(q.timestamp, None, "the queue stamps it");
        let headers: Vec<(&str, &[u8])> = q
            .headers
            .iter()
            .map(|h| (h.name.as_str(), &h.value[..]))
            .collect();
        assert_eq!(headers, [("trace", &b"t1"[..]), ("trace", &b"t2"[..])]);
    }

    #[tokio::test]
    async fn open_reads_the_path_and_options() {
        let err = EmbeddedBus::open("", &ConnectOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::Url(_)), "{err:?}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        let zero = ConnectOptions {
            partitions: Some(0),
            ..ConnectOptions::default()
        };
        let err = EmbeddedBus::open(path, &zero).await.unwrap_err();
        assert!(matches!(err, BusError::Invalid(_)), "{err:?}");

        let options = ConnectOptions {
            partitions: Some(2),
            fsync: Some(weir_queue::Fsync::Always),
            ..ConnectOptions::default()
        };
        let bus = EmbeddedBus::open(path, &options).await.unwrap();
        let config = bus.queue().config();
        assert_eq!(config.data_dir, dir.path());
        assert_eq!(config.default_partitions, 2);
        assert_eq!(config.fsync, weir_queue::Fsync::Always);
        bus.close().await.unwrap();
    }

    #[tokio::test]
    async fn closing_a_shared_queue_leaves_it_open_for_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(QueueConfig::new(dir.path())).await.unwrap();
        let bus = EmbeddedBus::new(queue.clone());
        bus.publish("jobs", Message::new("a")).await.unwrap();
        bus.close().await.unwrap();
        let err = bus.publish("jobs", Message::new("b")).await.unwrap_err();
        assert_eq!(err, BusError::Closed);
        assert_eq!(bus.clone().stats().await.unwrap_err(), BusError::Closed);
        queue
            .publish("jobs", weir_queue::Message::new("c"))
            .await
            .unwrap();
        queue.close().await.unwrap();
    }

    #[test]
    fn held_ids_stop_counting_when_their_lease_surely_ended() {
        let now = Instant::now();
        let mut held = Held::default();
        let id = |offset| MessageId {
            partition: 0,
            offset,
        };
        held.ids.insert(id(1), now + Duration::from_secs(1));
        held.ids.insert(id(2), now + Duration::from_secs(2));
        assert_eq!(held.count(now), (2, Some(now + Duration::from_secs(1))));
        let later = now + Duration::from_secs(1);
        assert_eq!(held.count(later), (1, Some(now + Duration::from_secs(2))));
        assert_eq!(held.count(now + Duration::from_secs(5)), (0, None));
    }
}
