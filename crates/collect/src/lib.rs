//! `weir collect`: consumes telemetry (and Game of Life results) from the
//! bus in batches and writes each batch to a store in one transaction,
//! acking its messages only after the commit.
//!
//! - [`CollectConfig`]: topics, group, batch size, concurrency, flush
//!   interval, visibility timeout.
//! - [`run`]: one member of the group per topic until the shutdown token
//!   fires; [`Counters`] tell how far it got while it runs.
//!
//! Invariants:
//! - a message is acked only after the transaction holding it committed; a
//!   collector that dies leaves its unacked messages to be delivered again,
//!   and the store's natural keys make that redelivery harmless, so a
//!   SQLite or PostgreSQL store holds each sample exactly once;
//! - a message that cannot be decoded or has the wrong shape is rejected to
//!   the dead-letter topic with its reason; the batch goes on without it;
//! - a write that fails with a retryable error (the store is down, busy,
//!   failing over) is retried with backoff until it succeeds or shutdown
//!   comes, and while it fails no member takes new messages: an outage
//!   delays telemetry but does not spend its delivery attempts, so it does
//!   not end in the dead-letter topic;
//! - a batch the store refuses for good is split in halves until the
//!   records it refuses are found; those are dead-lettered with the store's
//!   reason and the rest is stored (each part in its own transaction). When
//!   no record of the batch can be stored, the fault is the store's, not the
//!   records': the batch is given back (nack) instead;
//! - a store that is closed (its writer gone) ends the collector with an
//!   error, its batches given back; a bad message never does;
//! - at most `max_concurrent` batches are being written at once;
//! - the collector reaches the transport only through `weir_bus::Bus` and
//!   the store only through `weir_store::Sink`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weir_bus::{Acker, Bus, BusError, Delivery, Start, SubscribeOptions, Subscription};
use weir_store::{Batch, Record, Sink, StoreError, Written, record};

/// What the owner of a collector chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectConfig {
    /// Topics to consume (default `telemetry`).
    pub topics: Vec<String>,
    /// The consumer group collectors share (default `collectors`).
    pub group: String,
    /// Names this member in stats.
    pub consumer_id: String,
    /// Messages per batch at most (default 1000).
    pub batch_size: usize,
    /// Batches being written at once at most (default 4).
    pub max_concurrent: usize,
    /// A partial batch is written at most this long after its first message
    /// arrived (default 1 s).
    pub flush_interval: Duration,
    /// A batch not acked within this is delivered again (default 30 s).
    pub visibility_timeout: Duration,
    /// A batch that failed for good comes again after this (default 5 s).
    pub retry_delay: Duration,
}

impl CollectConfig {
    pub fn new(consumer_id: impl Into<String>) -> CollectConfig {
        CollectConfig {
            topics: vec!["telemetry".into()],
            group: "collectors".into(),
            consumer_id: consumer_id.into(),
            batch_size: 1000,
            max_concurrent: 4,
            flush_interval: Duration::from_secs(1),
            visibility_timeout: Duration::from_secs(30),
            retry_delay: Duration::from_secs(5),
        }
    }
}

/// Running counts, readable while the collector runs.
#[derive(Debug, Default)]
pub struct Counters {
    received: AtomicU64,
    samples: AtomicU64,
    duplicates: AtomicU64,
    results: AtomicU64,
    failures: AtomicU64,
    dead_lettered: AtomicU64,
    batches: AtomicU64,
    failed_batches: AtomicU64,
    retries: AtomicU64,
}

/// What a collector did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Messages received.
    pub received: u64,
    /// Samples stored (new).
    pub samples: u64,
    /// Samples that were already stored: redeliveries, left as they were.
    pub duplicates: u64,
    /// Game of Life results and refused jobs stored.
    pub results: u64,
    pub failures: u64,
    /// Messages rejected to the dead-letter topic (undecodable, wrong shape).
    pub dead_lettered: u64,
    /// Batches committed.
    pub batches: u64,
    /// Batches given back after their write failed.
    pub failed_batches: u64,
    /// Writes retried after a retryable error.
    pub retries: u64,
}

impl Counters {
    pub fn snapshot(&self) -> Totals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Totals {
            received: get(&self.received),
            samples: get(&self.samples),
            duplicates: get(&self.duplicates),
            results: get(&self.results),
            failures: get(&self.failures),
            dead_lettered: get(&self.dead_lettered),
            batches: get(&self.batches),
            failed_batches: get(&self.failed_batches),
            retries: get(&self.retries),
        }
    }

    fn written(&self, w: Written) {
        bump(&self.samples, w.samples);
        bump(&self.duplicates, w.duplicates);
        bump(&self.results, w.results);
        bump(&self.failures, w.failures);
        bump(&self.batches, 1);
    }
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Why a collector stopped before its shutdown token fired.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("the batch size and concurrency must be at least 1")]
    Config,
    #[error("subscribing to {topic} as group {group}: {source}")]
    Subscribe {
        topic: String,
        group: String,
        #[source]
        source: BusError,
    },
    #[error("receiving from {topic}: {source}")]
    Receive {
        topic: String,
        #[source]
        source: BusError,
    },
    #[error("the store stopped taking writes: {0}")]
    Store(#[source] StoreError),
}

/// What every member and write task of one collector shares.
#[derive(Debug)]
struct Shared {
    sink: Arc<dyn Sink>,
    config: CollectConfig,
    counters: Arc<Counters>,
    permits: Arc<Semaphore>,
    /// True while the store takes writes; a retryable failure closes it and
    /// the next success opens it again.
    store_up: watch::Sender<bool>,
    shutdown: CancellationToken,
    /// Why the store can take no more writes, once it cannot.
    closed: std::sync::Mutex<Option<StoreError>>,
}

impl Shared {
    fn store_is(&self, up: bool) {
        let changed = self
            .store_up
            .send_if_modified(|v| std::mem::replace(v, up) != up);
        if changed && up {
            tracing::info!("the store takes writes again; receiving again");
        } else if changed {
            tracing::warn!("the store is unavailable; receiving paused until a write succeeds");
        }
    }

    /// Waits until the store takes writes (or shutdown).
    async fn until_store_up(&self) {
        let mut up = self.store_up.subscribe();
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            _ = up.wait_for(|up| *up) => {}
        }
    }
}

/// Collects until `shutdown` fires, then finishes the batches in hand
/// (acking what committed, giving back the rest) and returns the totals.
pub async fn run(
    bus: Arc<dyn Bus>,
    sink: Arc<dyn Sink>,
    config: CollectConfig,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) -> Result<Totals, CollectError> {
    if config.batch_size == 0 || config.max_concurrent == 0 {
        return Err(CollectError::Config);
    }
    let shared = Arc::new(Shared {
        permits: Arc::new(Semaphore::new(config.max_concurrent)),
        store_up: watch::Sender::new(true),
        sink,
        counters,
        shutdown,
        closed: std::sync::Mutex::new(None),
        config,
    });
    let config = &shared.config;
    let mut members = JoinSet::new();
    for topic in &config.topics {
        let options = SubscribeOptions {
            start: Start::Earliest,
            visibility_timeout: Some(config.visibility_timeout),
            max_in_flight: config.batch_size * (config.max_concurrent + 1),
            ..SubscribeOptions::new(config.consumer_id.clone())
        };
        // A bus that is not up yet (a broker still starting) is waited for.
        let mut backoff = Duration::from_millis(100);
        let sub = loop {
            if shared.shutdown.is_cancelled() {
                break None;
            }
            match bus.subscribe(topic, &config.group, options.clone()).await {
                Ok(sub) => break Some(sub),
                Err(e) if e.is_retryable() => {
                    tracing::warn!(topic = %topic, error = %e, ?backoff, "cannot subscribe yet; retrying");
                    tokio::select! {
                        () = shared.shutdown.cancelled() => {}
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(source) => {
                    // The members already running stop in order first.
                    shared.shutdown.cancel();
                    while members.join_next().await.is_some() {}
                    return Err(CollectError::Subscribe {
                        topic: topic.clone(),
                        group: config.group.clone(),
                        source,
                    });
                }
            }
        };
        // Shutdown came while waiting for the bus.
        let Some(sub) = sub else { break };
        tracing::info!(topic = %topic, group = %config.group, batch_size = config.batch_size,
            max_concurrent = config.max_concurrent, "collecting");
        members.spawn(member(topic.clone(), sub, shared.clone()));
    }
    let mut outcome = Ok(());
    while let Some(joined) = members.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // One topic failing for good stops the others too.
                shared.shutdown.cancel();
                outcome = outcome.and(Err(e));
            }
            Err(e) => tracing::error!(error = %e, "a collector task panicked"),
        }
    }
    let totals = shared.counters.snapshot();
    tracing::info!(?totals, "collector stopped");
    if let Some(e) = shared.closed.lock().expect("closed lock").take() {
        return Err(CollectError::Store(e));
    }
    outcome.map(|()| totals)
}

/// One topic's member: gathers batches and hands each to a write task.
async fn member(
    topic: String,
    mut sub: Box<dyn Subscription>,
    shared: Arc<Shared>,
) -> Result<(), CollectError> {
    let mut writes = JoinSet::new();
    let mut backoff = Duration::from_millis(100);
    let shutdown = shared.shutdown.clone();
    let outcome = loop {
        while let Some(done) = writes.try_join_next() {
            if let Err(e) = done {
                tracing::error!(topic = %topic, error = %e,
                    "a write task panicked; its messages come again after their lease");
            }
        }
        // Take nothing new while the store is down: messages left on the
        // bus keep their delivery attempts.
        shared.until_store_up().await;
        // Wait for a permit before taking more messages, so deliveries are
        // not leased while nothing can write them.
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            p = shared.permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        match gather(sub.as_mut(), &shared.config, &shutdown).await {
            Ok(deliveries) if deliveries.is_empty() => backoff = Duration::from_millis(100),
            Ok(deliveries) => {
                backoff = Duration::from_millis(100);
                bump(&shared.counters.received, deliveries.len() as u64);
                writes.spawn(write(
                    topic.clone(),
                    deliveries,
                    sub.acker(),
                    shared.clone(),
                    permit,
                ));
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(topic = %topic, error = %e, ?backoff, "cannot receive; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break Ok(()),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(source) => {
                break Err(CollectError::Receive {
                    topic: topic.clone(),
                    source,
                });
            }
        }
    };
    // Batches in hand finish (their retries end at shutdown) and are acked
    // or given back before the subscription goes.
    while let Some(done) = writes.join_next().await {
        if let Err(e) = done {
            tracing::error!(topic = %topic, error = %e, "a write task panicked");
        }
    }
    drop(sub);
    outcome
}

/// Up to a batch of deliveries: waits for the first, then gathers more
/// until the batch is full or `flush_interval` has passed since the first.
async fn gather(
    sub: &mut dyn Subscription,
    config: &CollectConfig,
    shutdown: &CancellationToken,
) -> Result<Vec<Delivery>, BusError> {
    let wait = config
        .flush_interval
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut batch = tokio::select! {
        biased;
        () = shutdown.cancelled() => return Ok(Vec::new()),
        r = sub.receive(config.batch_size, wait) => r?,
    };
    if batch.is_empty() {
        return Ok(batch);
    }
    let deadline = Instant::now() + config.flush_interval;
    while batch.len() < config.batch_size {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let more = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            r = sub.receive(config.batch_size - batch.len(), left) => r,
        };
        match more {
            Ok(more) if more.is_empty() => break,
            Ok(more) => batch.extend(more),
            // What was gathered is written; the error comes back next time.
            Err(e) => {
                tracing::debug!(error = %e, "receive failed while a batch was gathering");
                break;
            }
        }
    }
    Ok(batch)
}

/// Decodes a batch, dead-letters what cannot be stored, writes the rest in
/// one transaction and acks it — or, when the store refuses it for good,
/// finds the records it refuses (see [`persist_all`]).
async fn write(
    topic: String,
    deliveries: Vec<Delivery>,
    acker: Acker,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let mut part = Part {
        batch: Batch::new(topic.clone()),
        ids: Ids::default(),
    };
    let mut refused = Vec::new();
    for d in deliveries {
        match record::decode(&d.payload, d.timestamp_ms) {
            Ok(r) => part.push(d.id, r),
            Err(e) => refused.push((d.id, e.to_string())),
        }
    }
    let outcome = persist_all(&shared, &topic, part).await;
    refused.extend(outcome.refused);
    for (id, reason) in &refused {
        tracing::warn!(topic = %topic, id = %id, reason = %reason, "dead-lettering a message");
        match acker.reject(std::slice::from_ref(id), reason).await {
            Ok(_) => bump(&shared.counters.dead_lettered, 1),
            Err(e) => tracing::warn!(id = %id, error = %e,
                "could not dead-letter a message; it will come again"),
        }
    }
    if let Err(e) = acker.ack(&outcome.stored).await {
        // Committed but not acked: it comes again and the store's keys
        // make that harmless.
        tracing::warn!(topic = %topic, error = %e, messages = outcome.stored.len(),
            "could not ack a committed batch; it will be delivered again");
    }
    if !outcome.given_back.is_empty() {
        bump(&shared.counters.failed_batches, 1);
        if let Err(e) = acker
            .nack(&outcome.given_back, shared.config.retry_delay)
            .await
        {
            tracing::warn!(topic = %topic, error = %e,
                "could not give the batch back; it comes again after its lease");
        }
    }
}

/// Message ids in the order of a batch's records, kind by kind.
#[derive(Debug, Default)]
struct Ids {
    samples: Vec<String>,
    results: Vec<String>,
    failures: Vec<String>,
}

/// Records to write together and the ids of their messages.
#[derive(Debug)]
struct Part {
    batch: Batch,
    ids: Ids,
}

impl Part {
    fn push(&mut self, id: String, record: Record) {
        match &record {
            Record::Sample(_) => self.ids.samples.push(id),
            Record::Result(_) => self.ids.results.push(id),
            Record::Failure(_) => self.ids.failures.push(id),
        }
        self.batch.push(record);
    }

    fn into_ids(self) -> impl Iterator<Item = String> {
        let Ids {
            samples,
            results,
            failures,
        } = self.ids;
        samples.into_iter().chain(results).chain(failures)
    }

    /// Two parts of about half the records each.
    fn split(mut self) -> (Part, Part) {
        fn half<T>(v: &mut Vec<T>) -> Vec<T> {
            v.split_off(v.len() / 2)
        }
        let b = &mut self.batch;
        let (samples, results, failures) = if b.samples.len() > 1 {
            (half(&mut b.samples), Vec::new(), Vec::new())
        } else if b.results.len() > 1 {
            (Vec::new(), half(&mut b.results), Vec::new())
        } else if b.failures.len() > 1 {
            (Vec::new(), Vec::new(), half(&mut b.failures))
        } else if !b.samples.is_empty() {
            (std::mem::take(&mut b.samples), Vec::new(), Vec::new())
        } else {
            (Vec::new(), std::mem::take(&mut b.results), Vec::new())
        };
        let ids = Ids {
            samples: self
                .ids
                .samples
                .split_off(self.ids.samples.len() - samples.len()),
            results: self
                .ids
                .results
                .split_off(self.ids.results.len() - results.len()),
            failures: self
                .ids
                .failures
                .split_off(self.ids.failures.len() - failures.len()),
        };
        let other = Part {
            batch: Batch {
                topic: self.batch.topic.clone(),
                samples,
                results,
                failures,
            },
            ids,
        };
        (self, other)
    }
}

/// What became of a batch's records, by message id.
#[derive(Debug, Default)]
struct Outcome {
    stored: Vec<String>,
    /// Refused by the store for good, with its reason.
    refused: Vec<(String, String)>,
    given_back: Vec<String>,
}

/// Stores a part, in one transaction when the store takes it. When it
/// refuses a part for good, the part is split in halves until each refused
/// record stands alone (a value the store cannot hold poisons only its own
/// message). If nothing could be stored at all, the store is at fault, not
/// the records: all of them are given back instead of dead-lettered.
async fn persist_all(shared: &Shared, topic: &str, whole: Part) -> Outcome {
    let mut outcome = Outcome::default();
    let mut parts = vec![whole];
    while let Some(part) = parts.pop() {
        let n = part.batch.len();
        if n == 0 {
            continue;
        }
        let Part { batch, ids } = part;
        let batch = Arc::new(batch);
        let result = persist(shared, topic, batch.clone()).await;
        // The sink is done with it; take the records back for a split.
        let batch = Arc::try_unwrap(batch).unwrap_or_else(|shared| (*shared).clone());
        let part = Part { batch, ids };
        match result {
            Ok(()) => outcome.stored.extend(part.into_ids()),
            Err(Refusal::GiveBack) => outcome.given_back.extend(part.into_ids()),
            Err(Refusal::Refused(e)) if n == 1 => {
                let reason = format!("the store refused it: {e}");
                outcome
                    .refused
                    .extend(part.into_ids().map(|id| (id, reason.clone())));
            }
            Err(Refusal::Refused(e)) => {
                tracing::warn!(topic = %topic, error = %e, records = n,
                    "the store refused a batch; splitting it to find the records it refuses");
                let (a, b) = part.split();
                parts.push(b);
                parts.push(a);
            }
        }
    }
    if outcome.stored.is_empty() && !outcome.refused.is_empty() {
        outcome
            .given_back
            .extend(outcome.refused.drain(..).map(|(id, _)| id));
    }
    outcome
}

/// Why [`persist`] did not store a batch.
#[derive(Debug)]
enum Refusal {
    /// The store refused it for good.
    Refused(StoreError),
    /// Shutdown came while the store was down, or the store is closed.
    GiveBack,
}

/// Writes one batch, retrying retryable failures until they pass or
/// shutdown comes; while they fail, the store counts as down.
async fn persist(shared: &Shared, topic: &str, batch: Arc<Batch>) -> Result<(), Refusal> {
    let mut backoff = Duration::from_millis(50);
    loop {
        match shared.sink.write(batch.clone()).await {
            Ok(written) => {
                shared.counters.written(written);
                shared.store_is(true);
                return Ok(());
            }
            Err(e) if e.is_retryable() => {
                shared.store_is(false);
                if shared.shutdown.is_cancelled() {
                    tracing::warn!(topic = %topic, error = %e, "shutting down while the store is unavailable; giving the batch back");
                    return Err(Refusal::GiveBack);
                }
                tracing::warn!(topic = %topic, error = %e, ?backoff, "a write failed; retrying");
                bump(&shared.counters.retries, 1);
                tokio::select! {
                    () = shared.shutdown.cancelled() => {}
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e @ StoreError::Closed(_)) => {
                tracing::error!(topic = %topic, error = %e, "the store is closed; stopping");
                shared.closed.lock().expect("closed lock").get_or_insert(e);
                shared.shutdown.cancel();
                return Err(Refusal::GiveBack);
            }
            Err(e) => return Err(Refusal::Refused(e)),
        }
    }
}
