//! The `kafka://host:port[,host:port…]` backend: the bus over Apache Kafka
//! (or any Kafka-protocol broker) through librdkafka (`rdkafka`).
//!
//! Kafka is the distributed engine; this module only maps the bus contract
//! onto it:
//!
//! - A Weir topic `T` is the Kafka topic `T`, with two companions created
//!   beside it on first use: `T.retry` (nacked and timed-out messages, to be
//!   delivered again) and `T.dlq` (dead letters, with the same headers as
//!   the embedded queue's, [`weir_queue::dead_letter`]). Partitions come
//!   from [`ConnectOptions::partitions`]; the replication factor from the
//!   option `replication.factor` (default: 3, or the broker count when
//!   smaller).
//! - A Weir group `G` on topic `T` is the Kafka consumer group `G:T` (Weir's
//!   groups are per topic; Kafka's span topics, and one group id per topic
//!   keeps one topic's rebalances from pausing another's consumers). Each
//!   [`Subscription`] is a real group member subscribed to `T` and
//!   `T.retry`; see [`subscription`] for leases, commits and retries.
//! - A message's id is `PARTITION-OFFSET` in `T`, and it keeps that id
//!   through retries (the header `x-weir-id`).
//! - The producer is idempotent with `acks=all`: a publish returns once
//!   every in-sync replica has the message.
//!
//! Any librdkafka property passes through [`ConnectOptions::kafka_options`]
//! (`security.protocol`, `sasl.*`, `ssl.*`, `linger.ms`, `batch.size`,
//! `session.timeout.ms`, …) to every client this bus makes.

mod stats;
mod subscription;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use weir_api::wire::{SeekTarget, StatsResponse};
use weir_queue::now_ms;

use crate::message::{Message, Receipt};
use crate::{Bus, BusError, ConnectOptions, Result, SubscribeOptions, Subscription};

use subscription::Member;

/// How long a call to the cluster's metadata or admin API may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);
/// The option naming the replication factor of topics this bus creates; not
/// a librdkafka property, so it is not passed on.
const REPLICATION_OPTION: &str = "replication.factor";

/// Headers the Kafka backend adds to a message it republishes, removed
/// before a delivery reaches its consumer.
pub mod header {
    /// The message's id in its topic, kept through retries.
    pub const ID: &str = "x-weir-id";
    /// Deliveries the message has had so far.
    pub const ATTEMPT: &str = "x-weir-attempt";
    /// Not to be delivered before this time, milliseconds since the epoch.
    pub const NOT_BEFORE: &str = "x-weir-not-before";
    /// The Kafka group a retry belongs to (`<topic>.retry` is shared by
    /// every group of the topic).
    pub const GROUP: &str = "x-weir-group";
    /// When the original was published, milliseconds since the epoch (the
    /// copy's own record time is when it was made).
    pub const TIMESTAMP: &str = "x-weir-timestamp";
}

/// The retry topic of `topic`.
pub fn retry_topic(topic: &str) -> String {
    format!("{topic}.retry")
}

/// The Kafka consumer group of Weir group `group` on `topic`.
pub fn kafka_group(topic: &str, group: &str) -> String {
    format!("{group}:{topic}")
}

/// The bus over a Kafka cluster. Cheap to clone: clones share the producer,
/// the members and whether the bus is closed.
#[derive(Clone)]
pub struct KafkaBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// The cluster properties every client gets (bootstrap servers and the
    /// caller's options).
    base: ClientConfig,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    partitions: i32,
    replication: Option<i32>,
    /// Topics known to exist with their companions.
    known: Mutex<HashSet<String>>,
    /// This process's members, by (topic, group).
    members: Mutex<HashMap<GroupKey, Vec<std::sync::Weak<Member>>>>,
    /// Per topic, what this handle published (Kafka tells no log sizes).
    published: Mutex<HashMap<String, Published>>,
    /// Consumers that never join, by group id: for stats' committed offsets.
    probes: Mutex<HashMap<String, Arc<BaseConsumer>>>,
    closed: AtomicBool,
}

/// (topic, group) in Weir's names.
type GroupKey = (String, String);

#[derive(Debug, Default, Clone, Copy)]
struct Published {
    bytes: u64,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus")
            .field("bootstrap", &self.inner.base.get("bootstrap.servers"))
            .field("partitions", &self.inner.partitions)
            .finish_non_exhaustive()
    }
}

impl KafkaBus {
    /// Connects to the cluster `servers` names (what follows `kafka://`:
    /// `host:port[,host:port…]`). Nothing is contacted yet: librdkafka
    /// connects in the background and calls fail retryably until it can.
    pub fn new(servers: &str, options: &ConnectOptions) -> Result<KafkaBus> {
        let servers = servers.trim_end_matches('/');
        if servers.is_empty() || servers.split(',').any(|s| !s.contains(':')) {
            return Err(BusError::Url(format!(
                "kafka:// needs host:port[,host:port…], not {servers:?}"
            )));
        }
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", servers)
            .set("client.id", "weir")
            // Offsets, leases and retries are Weir's; fetches should come
            // back soon rather than fill a large batch.
            .set("fetch.wait.max.ms", "100")
            .set("log_level", "3");
        let mut replication = None;
        for (key, value) in &options.kafka_options {
            if key == REPLICATION_OPTION {
                let r = value.parse::<i32>().ok().filter(|r| *r >= 1);
                replication = Some(r.ok_or_else(|| {
                    BusError::Invalid(format!(
                        "{REPLICATION_OPTION} must be a whole number of at least 1, not {value:?}"
                    ))
                })?);
            } else {
                base.set(key, value);
            }
        }
        let mut producer_config = base.clone();
        producer_config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000");
        if options.kafka_options.iter().all(|(k, _)| k != "linger.ms") {
            producer_config.set("linger.ms", "5");
        }
        let producer: FutureProducer = producer_config.create().map_err(config_error)?;
        let admin: AdminClient<DefaultClientContext> = base.create().map_err(config_error)?;
        let partitions = options.partitions.unwrap_or(4).max(1);
        Ok(KafkaBus {
            inner: Arc::new(Inner {
                base,
                producer,
                admin,
                partitions: i32::try_from(partitions).unwrap_or(i32::MAX),
                replication,
                known: Mutex::default(),
                members: Mutex::default(),
                published: Mutex::default(),
                probes: Mutex::default(),
                closed: AtomicBool::new(false),
            }),
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::SeqCst) {
            Err(BusError::Closed)
        } else {
            Ok(())
        }
    }

    /// Creates `topic`, `topic.retry` and `topic.dlq` unless this handle
    /// already knows them; topics that exist are left as they are.
    async fn ensure_topic(&self, topic: &str) -> Result<()> {
        weir_queue::validate_name("topic", topic)?;
        if lock(&self.inner.known).contains(topic) {
            return Ok(());
        }
        let replication = match self.inner.replication {
            Some(r) => r,
            None => {
                let brokers = self
                    .blocking(|inner| {
                        inner
                            .producer
                            .client()
                            .fetch_metadata(None, ADMIN_TIMEOUT)
                            .map(|m| m.brokers().len())
                    })
                    .await?;
                i32::try_from(brokers.clamp(1, 3)).unwrap_or(1)
            }
        };
        let names = [
            topic.to_string(),
            retry_topic(topic),
            weir_queue::dead_letter_topic(topic),
        ];
        let new: Vec<NewTopic<'_>> = names
            .iter()
            .map(|name| {
                NewTopic::new(
                    name,
                    self.inner.partitions,
                    TopicReplication::Fixed(replication),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let results = self
            .inner
            .admin
            .create_topics(&new, &options)
            .await
            .map_err(kafka_error)?;
        for result in results {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(classify(
                        code,
                        format!("creating the Kafka topic {name:?}: {code}"),
                    ));
                }
            }
        }
        // A topic just created may take a moment to reach every broker's
        // metadata; wait until the cluster lists all three.
        let deadline = tokio::time::Instant::now() + ADMIN_TIMEOUT;
        loop {
            let listed = self
                .blocking({
                    let names = names.clone();
                    move |inner| {
                        let metadata = inner
                            .producer
                            .client()
                            .fetch_metadata(None, ADMIN_TIMEOUT)?;
                        Ok(names.iter().all(|n| {
                            metadata
                                .topics()
                                .iter()
                                .any(|t| t.name() == n && !t.partitions().is_empty())
                        }))
                    }
                })
                .await?;
            if listed {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BusError::Unavailable(format!(
                    "the Kafka topic {topic:?} was created but is not in the cluster's metadata after {ADMIN_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        lock(&self.inner.known).insert(topic.to_string());
        Ok(())
    }

    /// Runs a blocking librdkafka call on tokio's blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, KafkaError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner).map_err(kafka_error))
            .await
            .map_err(|e| BusError::Internal(format!("a Kafka call panicked: {e}")))?
    }

    /// Live members of this process in `group` on `topic`.
    fn members(&self, topic: &str, group: &str) -> Vec<Arc<Member>> {
        let mut all = lock(&self.inner.members);
        let key = (topic.to_string(), group.to_string());
        let Some(list) = all.get_mut(&key) else {
            return Vec::new();
        };
        list.retain(|m| m.strong_count() > 0);
        list.iter()
            .filter_map(std::sync::Weak::upgrade)
            .filter(|m| !m.is_closed())
            .collect()
    }

    /// A kept consumer of `group` that never joins it: for its committed
    /// offsets.
    fn group_probe(&self, group: &str) -> Result<Arc<BaseConsumer>> {
        if let Some(probe) = lock(&self.inner.probes).get(group) {
            return Ok(Arc::clone(probe));
        }
        let probe = Arc::new(self.probe(Some(group))?);
        lock(&self.inner.probes).insert(group.to_string(), Arc::clone(&probe));
        Ok(probe)
    }

    /// A consumer that never joins a group: for offsets and watermarks.
    fn probe(&self, group: Option<&str>) -> Result<BaseConsumer> {
        let mut config = self.inner.base.clone();
        config.set("enable.auto.commit", "false");
        if let Some(group) = group {
            config.set("group.id", group);
        }
        config.create().map_err(config_error)
    }
}

#[async_trait::async_trait]
impl Bus for KafkaBus {
    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<Vec<Receipt>> {
        self.check_open()?;
        if messages.is_empty() {
            return Err(BusError::Invalid(
                "a batch needs at least one message".into(),
            ));
        }
        self.ensure_topic(topic).await?;
        let timestamp = now_ms();
        let bytes: usize = messages.iter().map(|m| m.payload.len()).sum();
        let mut pending = Vec::with_capacity(messages.len());
        for message in &messages {
            let record = Outgoing {
                key: message.key.as_deref(),
                headers: &message.headers,
                payload: &message.payload,
                timestamp,
            };
            pending.push(send(&self.inner.producer, topic, record).await?);
        }
        let mut receipts = Vec::with_capacity(pending.len());
        for delivery in pending {
            let (partition, offset) = delivered(delivery).await?;
            receipts.push(Receipt {
                id: format!("{partition}-{offset}"),
                timestamp_ms: timestamp,
            });
        }
        lock(&self.inner.published)
            .entry(topic.to_string())
            .or_default()
            .bytes += bytes as u64;
        Ok(receipts)
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        self.check_open()?;
        options.check()?;
        weir_queue::validate_name("group", group)?;
        if options.visibility_timeout == Some(Duration::ZERO) {
            return Err(BusError::Invalid(
                "visibility_timeout must be more than zero".into(),
            ));
        }
        if options.max_deliveries == Some(0) {
            return Err(BusError::Invalid(
                "max_deliveries must be at least 1".into(),
            ));
        }
        self.ensure_topic(topic).await?;
        let settings = subscription::Settings {
            topic: topic.to_string(),
            group: group.to_string(),
            kafka_group: kafka_group(topic, group),
            consumer_id: options.consumer_id.clone(),
            start: options.start,
            visibility_timeout: options
                .visibility_timeout
                .unwrap_or(Duration::from_secs(30)),
            max_deliveries: options.max_deliveries.unwrap_or(5),
            max_in_flight: options.max_in_flight,
        };
        let (member, sub) =
            subscription::join(&self.inner.base, self.inner.producer.clone(), settings).await?;
        lock(&self.inner.members)
            .entry((topic.to_string(), group.to_string()))
            .or_default()
            .push(Arc::downgrade(&member));
        Ok(sub)
    }

    async fn seek(&self, topic: &str, group: &str, to: SeekTarget) -> Result<()> {
        self.check_open()?;
        self.ensure_topic(topic).await?;
        let members = self.members(topic, group);
        let offsets = {
            let bus = self.clone();
            let topic = topic.to_string();
            tokio::task::spawn_blocking(move || seek_offsets(&bus, &topic, to))
                .await
                .map_err(|e| BusError::Internal(format!("a Kafka call panicked: {e}")))??
        };
        if !members.is_empty() {
            // The group's members own its partitions: each moves those it
            // holds. Partitions held by members of other processes are
            // theirs to move.
            for member in members {
                match member.seek(offsets.clone()).await {
                    // It closed meanwhile: it holds nothing to move.
                    Err(BusError::Closed) => {}
                    other => other?,
                }
            }
            return Ok(());
        }
        let group_id = kafka_group(topic, group);
        let probe = self.probe(Some(&group_id))?;
        let mut tpl = TopicPartitionList::new();
        for (partition, offset) in offsets {
            tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
                .map_err(kafka_error)?;
        }
        tokio::task::spawn_blocking(move || probe.commit(&tpl, rdkafka::consumer::CommitMode::Sync))
            .await
            .map_err(|e| BusError::Internal(format!("a Kafka call panicked: {e}")))?
            .map_err(|e| match kafka_error(e) {
                BusError::Unavailable(m) | BusError::Internal(m) => BusError::Unavailable(format!(
                    "moving group {group:?} on {topic:?}: {m} (members of the group in another process must stop first)"
                )),
                other => other,
            })
    }

    async fn stats(&self) -> Result<StatsResponse> {
        self.check_open()?;
        let bus = self.clone();
        tokio::task::spawn_blocking(move || stats::collect(&bus))
            .await
            .map_err(|e| BusError::Internal(format!("a Kafka call panicked: {e}")))?
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let members: Vec<Arc<Member>> = lock(&self.inner.members)
            .values()
            .flatten()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        for member in &members {
            member.close();
        }
        // Each member's last commit, and its leaving the group, before the
        // process may go.
        for member in &members {
            member.stopped().await;
        }
        self.blocking(|inner| {
            // Dropping a librdkafka client blocks until it is destroyed.
            lock(&inner.probes).clear();
            inner.producer.flush(ADMIN_TIMEOUT)
        })
        .await
    }
}

/// Per partition, the offset a seek moves `topic` to.
fn seek_offsets(bus: &KafkaBus, topic: &str, to: SeekTarget) -> Result<Vec<(i32, i64)>> {
    let probe = bus.probe(None)?;
    let metadata = probe
        .fetch_metadata(Some(topic), ADMIN_TIMEOUT)
        .map_err(kafka_error)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let watermarks = |p: i32| {
        probe
            .fetch_watermarks(topic, p, ADMIN_TIMEOUT)
            .map_err(kafka_error)
    };
    match to {
        SeekTarget::Earliest => partitions
            .iter()
            .map(|&p| Ok((p, watermarks(p)?.0)))
            .collect(),
        SeekTarget::Latest => partitions
            .iter()
            .map(|&p| Ok((p, watermarks(p)?.1)))
            .collect(),
        SeekTarget::Offset { partition, offset } => {
            let p = i32::try_from(partition).unwrap_or(i32::MAX);
            if !partitions.contains(&p) {
                return Err(BusError::Invalid(format!(
                    "topic {topic:?} has {} partitions, no partition {partition}",
                    partitions.len()
                )));
            }
            let (low, high) = watermarks(p)?;
            let offset = i64::try_from(offset).unwrap_or(i64::MAX).clamp(low, high);
            Ok(vec![(p, offset)])
        }
        SeekTarget::TimestampMs(ms) => {
            let mut tpl = TopicPartitionList::new();
            for &p in &partitions {
                tpl.add_partition_offset(topic, p, Offset::Offset(ms))
                    .map_err(kafka_error)?;
            }
            let found = probe
                .offsets_for_times(tpl, ADMIN_TIMEOUT)
                .map_err(kafka_error)?;
            partitions
                .iter()
                .map(|&p| {
                    let offset = match found.find_partition(topic, p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => o,
                        // No message at or after the time: the end.
                        _ => watermarks(p)?.1,
                    };
                    Ok((p, offset))
                })
                .collect()
        }
    }
}

/// A message as it goes out: Weir's fields, borrowed.
struct Outgoing<'a> {
    key: Option<&'a [u8]>,
    headers: &'a [(String, String)],
    payload: &'a [u8],
    timestamp: i64,
}

/// Hands one message to the producer, waiting while its queue is full.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    message: Outgoing<'_>,
) -> Result<rdkafka::producer::DeliveryFuture> {
    let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
    for (name, value) in message.headers {
        headers = headers.insert(Header {
            key: name,
            value: Some(value.as_bytes()),
        });
    }
    let mut record = FutureRecord::<[u8], [u8]>::to(topic)
        .payload(message.payload)
        .headers(headers)
        .timestamp(message.timestamp);
    if let Some(key) = message.key {
        record = record.key(key);
    }
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((e, _)) => return Err(kafka_error(e)),
        }
    }
}

/// Where a sent message landed, once the cluster acknowledged it.
async fn delivered(delivery: rdkafka::producer::DeliveryFuture) -> Result<(i32, i64)> {
    match delivery.await {
        Ok(Ok(d)) => Ok((d.partition, d.offset)),
        Ok(Err((e, _))) => Err(kafka_error(e)),
        Err(_) => Err(BusError::Unavailable(
            "the Kafka producer dropped a message before its delivery report".into(),
        )),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A property librdkafka refused.
fn config_error(e: KafkaError) -> BusError {
    BusError::Invalid(format!("Kafka client configuration: {e}"))
}

/// librdkafka's errors by what a caller can do about them.
fn kafka_error(e: KafkaError) -> BusError {
    let message = format!("Kafka: {e}");
    match e.rdkafka_error_code() {
        Some(code) => classify(code, message),
        None => BusError::Unavailable(message),
    }
}

fn classify(code: RDKafkaErrorCode, message: String) -> BusError {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageSizeTooLarge
        | C::MessageBatchTooLarge
        | C::PolicyViolation
        | C::InvalidMessageSize
        | C::InvalidTopic
        | C::InvalidPartitions
        | C::InvalidReplicationFactor
        | C::InvalidConfig
        | C::InvalidArgument
        | C::InvalidRecord
        | C::InvalidGroupId
        | C::UnknownPartition
        | C::InvalidRequest => BusError::Invalid(message),
        C::TopicAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::TransactionalIdAuthorizationFailed => BusError::Unauthorized(message),
        C::Fatal | C::OutOfOrderSequenceNumber | C::UnknownProducerId => {
            BusError::Internal(message)
        }
        _ => BusError::Unavailable(message),
    }
}

/// Counts shared by a member and the stats.
#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    acked: AtomicU64,
    redelivered: AtomicU64,
    dead_lettered: AtomicU64,
}
