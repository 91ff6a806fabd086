//! One member of a Kafka consumer group, with the bus's leases on top.
//!
//! A [`Member`] is shared by three parties:
//! - its **poller thread**, which owns the librdkafka consumer (subscribed
//!   to `T` and `T.retry`, auto-commit off): it fetches into the member's
//!   buffer (pausing its partitions while the buffer is full), serves
//!   rebalances, seeks, and commits;
//! - the **subscription** (`receive`) and its **acker**, which lease
//!   buffered messages and settle them;
//! - a **janitor** task that gives back leases past the visibility timeout.
//!
//! Offsets: per partition the member tracks what it fetched and has not
//! settled (`outstanding`); the offset it commits is the lowest outstanding
//! one, or one past the last fetched when none is — so a commit covers only
//! the contiguous prefix of settled messages, and whatever was unsettled
//! when a member died is fetched again by the next owner of its partition.
//! Commits are made every [`COMMIT_EVERY`], before partitions are revoked,
//! and on shutdown.
//!
//! Settling: an ack marks the offset settled; a nack (or a lease that
//! expired) republishes the message to `T.retry` with its id, delivery count
//! and not-before time, then marks the original settled; past
//! `max_deliveries`, or on reject, the message goes to `T.dlq` with the dead
//! letter headers instead. A retry copy is delivered by whichever member of
//! the same group holds its `T.retry` partition, once its time has come.
//!
//! Rebalances (eager protocol): on revoke the member commits what it can and
//! keeps its leases; on the assignment that follows, leases and buffered
//! messages of partitions it kept stay valid (messages fetched again below
//! what it had fetched are skipped), and those of partitions that moved are
//! dropped — their acks answer `NotLeased`, and the new owner delivers them
//! again from the committed offset.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use weir_api::Start;
use weir_api::wire::SettleStatus;
use weir_queue::{MessageId, dead_letter, now_ms};

use super::{
    ADMIN_TIMEOUT, Counters, Outgoing, config_error, delivered, header, kafka_error, lock,
    retry_topic, send,
};
use crate::message::{Acker, Delivery, Settle, Settler};
use crate::{BusError, Result, Subscription};

/// How long `subscribe` waits for the group to give the new member its
/// partitions (a rebalance waits for every member to rejoin).
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How often settled offsets are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(100);
/// How long one poll of the consumer waits.
const POLL: Duration = Duration::from_millis(20);
/// How often the janitor looks for expired leases.
const JANITOR_EVERY: Duration = Duration::from_millis(25);
/// How many settled ids a member remembers, to answer a second settle.
const REMEMBERED: usize = 1 << 16;

/// What a member was asked to be.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) topic: String,
    pub(super) group: String,
    pub(super) kafka_group: String,
    pub(super) consumer_id: String,
    pub(super) start: Start,
    pub(super) visibility_timeout: Duration,
    pub(super) max_deliveries: u32,
    pub(super) max_in_flight: usize,
}

/// One group member's shared state.
pub(super) struct Member {
    pub(super) settings: Settings,
    retry: String,
    state: Mutex<State>,
    /// Woken when messages arrive, room is made or the assignment changes.
    changed: Notify,
    producer: FutureProducer,
    pub(super) counters: Counters,
    closed: AtomicBool,
    commands: Mutex<mpsc::Sender<Command>>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Which of the member's two Kafka topics a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    Main,
    Retry,
}

/// A fetched message waiting in the buffer or under a lease.
#[derive(Debug, Clone)]
struct Fetched {
    id: String,
    source: Source,
    partition: i32,
    offset: i64,
    key: Option<Bytes>,
    headers: Vec<(String, String)>,
    payload: Bytes,
    timestamp_ms: i64,
    /// Deliveries before this one.
    attempts: u32,
    /// Not to be delivered before this, ms since the epoch.
    not_before: i64,
}

#[derive(Debug)]
struct Lease {
    message: Fetched,
    expiry: Instant,
    leased_at: Instant,
}

/// One partition's offsets.
#[derive(Debug, Default)]
struct Track {
    /// Fetched and not yet settled.
    outstanding: BTreeSet<i64>,
    /// One past the last offset fetched.
    next: Option<i64>,
    committed: Option<i64>,
}

impl Track {
    /// The offset a commit may move to: the first unsettled, else one past
    /// the last fetched.
    fn commit_point(&self) -> Option<i64> {
        self.outstanding.first().copied().or(self.next)
    }
}

/// What happened to an id that is no longer leased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    GivenBack,
}

#[derive(Debug, Default)]
struct State {
    buffer: VecDeque<Fetched>,
    leases: HashMap<String, Lease>,
    tracks: HashMap<(Source, i32), Track>,
    remembered: HashMap<String, Outcome>,
    remembered_order: VecDeque<String>,
    /// Set by the first assignment.
    joined: bool,
    /// Partitions revoked and not yet reassigned.
    revoked: Vec<(Source, i32)>,
    /// Why the poller stopped, if it did.
    failed: Option<BusError>,
}

impl State {
    fn remember(&mut self, id: String, outcome: Outcome) {
        if self.remembered.insert(id.clone(), outcome).is_none() {
            self.remembered_order.push_back(id);
            if self.remembered_order.len() > REMEMBERED
                && let Some(old) = self.remembered_order.pop_front()
            {
                self.remembered.remove(&old);
            }
        }
    }

    /// Marks a message's offset settled, if its partition is still tracked.
    fn settled(&mut self, m: &Fetched) {
        if let Some(track) = self.tracks.get_mut(&(m.source, m.partition)) {
            track.outstanding.remove(&m.offset);
        }
    }
}

enum Command {
    Seek(Vec<(i32, i64)>, oneshot::Sender<Result<()>>),
}

impl Member {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn source(&self, topic: &str) -> Option<Source> {
        if topic == self.settings.topic {
            Some(Source::Main)
        } else if topic == self.retry {
            Some(Source::Retry)
        } else {
            None
        }
    }

    fn topic_of(&self, source: Source) -> &str {
        match source {
            Source::Main => &self.settings.topic,
            Source::Retry => &self.retry,
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Stops the member: its poller commits, leaves the group and ends.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// What this member holds: (in flight, age of the oldest lease in ms).
    pub(super) fn in_flight(&self) -> (u64, Option<u64>) {
        let state = self.state();
        let now = Instant::now();
        let oldest = state
            .leases
            .values()
            .map(|l| now.duration_since(l.leased_at).as_millis() as u64)
            .max();
        (state.leases.len() as u64, oldest)
    }

    /// Moves the partitions of the main topic this member holds to the
    /// given offsets; partitions it does not hold are left alone.
    pub(super) async fn seek(&self, offsets: Vec<(i32, i64)>) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        lock(&self.commands)
            .send(Command::Seek(offsets, tx))
            .map_err(|_| BusError::Closed)?;
        rx.await.map_err(|_| BusError::Closed)?
    }

    /// Takes one fetched Kafka message into the buffer (or skips it).
    fn accept(&self, m: &BorrowedMessage<'_>) {
        let Some(source) = self.source(m.topic()) else {
            return;
        };
        let (partition, offset) = (m.partition(), m.offset());
        let mut headers = Vec::new();
        let (mut id, mut attempts, mut not_before, mut group) = (None, 0, 0, None);
        if let Some(hs) = m.headers() {
            for h in hs.iter() {
                let value = String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned();
                match h.key {
                    header::ID => id = Some(value),
                    header::ATTEMPT => attempts = value.parse().unwrap_or(0),
                    header::NOT_BEFORE => not_before = value.parse().unwrap_or(0),
                    header::GROUP => group = Some(value),
                    _ => headers.push((h.key.to_string(), value)),
                }
            }
        }
        let mut state = self.state();
        let track = state.tracks.entry((source, partition)).or_default();
        if track.next.is_some_and(|next| offset < next) {
            // Fetched again after a rebalance gave the partition back: it
            // is held already, or settled.
            return;
        }
        track.next = Some(offset + 1);
        let id = match source {
            Source::Main => format!("{partition}-{offset}"),
            Source::Retry => {
                // `T.retry` is shared by every group of `T`: a copy for
                // another group, or one not written by Weir, is not ours.
                match id {
                    Some(id) if group.as_deref() == Some(self.settings.kafka_group.as_str()) => id,
                    _ => return,
                }
            }
        };
        track.outstanding.insert(offset);
        state.buffer.push_back(Fetched {
            id,
            source,
            partition,
            offset,
            key: m.key().map(Bytes::copy_from_slice),
            headers,
            payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
            timestamp_ms: m.timestamp().to_millis().unwrap_or_else(now_ms),
            attempts,
            not_before,
        });
        drop(state);
        self.changed.notify_waiters();
    }

    /// Partitions are about to be taken away: what may be committed now.
    fn revoke(&self, tpl: &TopicPartitionList) -> TopicPartitionList {
        let mut state = self.state();
        let mut commit = TopicPartitionList::new();
        for e in tpl.elements() {
            let Some(source) = self.source(e.topic()) else {
                continue;
            };
            state.revoked.push((source, e.partition()));
            if let Some(point) = state
                .tracks
                .get(&(source, e.partition()))
                .and_then(Track::commit_point)
            {
                let _ =
                    commit.add_partition_offset(e.topic(), e.partition(), Offset::Offset(point));
            }
        }
        commit
    }

    /// The group gave this member `tpl`: drop what was revoked and not
    /// given back.
    fn assign(&self, tpl: &TopicPartitionList) {
        let mut state = self.state();
        let kept: Vec<(Source, i32)> = tpl
            .elements()
            .iter()
            .filter_map(|e| Some((self.source(e.topic())?, e.partition())))
            .collect();
        let lost: Vec<(Source, i32)> = std::mem::take(&mut state.revoked)
            .into_iter()
            .filter(|p| !kept.contains(p))
            .collect();
        for p in &lost {
            state.tracks.remove(p);
        }
        state
            .buffer
            .retain(|m| !lost.contains(&(m.source, m.partition)));
        let moved: Vec<String> = state
            .leases
            .iter()
            .filter(|(_, l)| lost.contains(&(l.message.source, l.message.partition)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in moved {
            state.leases.remove(&id);
            state.remember(id, Outcome::GivenBack);
        }
        state.joined = true;
        drop(state);
        self.changed.notify_waiters();
    }

    /// Offsets that moved past what was last committed.
    fn commits_due(&self) -> TopicPartitionList {
        let mut state = self.state();
        let mut tpl = TopicPartitionList::new();
        let revoked = state.revoked.clone();
        for (&(source, partition), track) in state.tracks.iter_mut() {
            if revoked.contains(&(source, partition)) {
                continue;
            }
            if let Some(point) = track.commit_point()
                && track.committed != Some(point)
            {
                track.committed = Some(point);
                let topic = match source {
                    Source::Main => &self.settings.topic,
                    Source::Retry => &self.retry,
                };
                let _ = tpl.add_partition_offset(topic, partition, Offset::Offset(point));
            }
        }
        tpl
    }

    /// Up to `max` deliverable messages, leased.
    fn lease(&self, max: usize, acker: &Acker) -> (Vec<Delivery>, Option<i64>) {
        let mut state = self.state();
        let room = self
            .settings
            .max_in_flight
            .saturating_sub(state.leases.len())
            .min(max);
        let now = now_ms();
        let mut out = Vec::new();
        let mut next_due = None::<i64>;
        let mut i = 0;
        while out.len() < room && i < state.buffer.len() {
            if state.buffer[i].not_before > now {
                let due = state.buffer[i].not_before;
                next_due = Some(next_due.map_or(due, |d| d.min(due)));
                i += 1;
                continue;
            }
            let Some(m) = state.buffer.remove(i) else {
                break;
            };
            let delivery_count = m.attempts + 1;
            out.push(Delivery {
                id: m.id.clone(),
                topic: self.settings.topic.clone(),
                key: m.key.clone(),
                headers: m.headers.clone(),
                payload: m.payload.clone(),
                timestamp_ms: m.timestamp_ms,
                delivery_count,
                acker: acker.clone(),
            });
            let leased_at = Instant::now();
            state.leases.insert(
                m.id.clone(),
                Lease {
                    message: m,
                    expiry: leased_at + self.settings.visibility_timeout,
                    leased_at,
                },
            );
            if delivery_count > 1 {
                self.counters.redelivered.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.counters
            .delivered
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        (out, next_due)
    }

    /// Republishes messages this member gives back, to `T.retry` (or
    /// `T.dlq` past the delivery limit), then marks the originals settled.
    /// `reason` set: dead-letter them all as rejected with that reason.
    async fn give_back(
        &self,
        leases: Vec<Lease>,
        delay: Duration,
        reason: Option<&str>,
    ) -> Result<()> {
        if leases.is_empty() {
            return Ok(());
        }
        let not_before = (now_ms() + delay.as_millis() as i64).to_string();
        let mut pending = Vec::with_capacity(leases.len());
        let mut dead = 0;
        let sent: Result<()> = async {
            for lease in &leases {
                let m = &lease.message;
                let attempts = m.attempts + 1;
                let mut headers = m.headers.clone();
                let topic = if reason.is_some() || attempts >= self.settings.max_deliveries {
                    dead += 1;
                    let why = if reason.is_some() {
                        "rejected"
                    } else {
                        "delivery_limit"
                    };
                    headers.push((dead_letter::REASON.into(), why.into()));
                    if let Some(detail) = reason {
                        headers.push((dead_letter::DETAIL.into(), detail.into()));
                    }
                    let (p, o) = m.id.split_once('-').unwrap_or((&m.id, ""));
                    headers.extend([
                        (
                            dead_letter::ORIGIN_TOPIC.into(),
                            self.settings.topic.clone(),
                        ),
                        (dead_letter::ORIGIN_PARTITION.into(), p.to_string()),
                        (dead_letter::ORIGIN_OFFSET.into(), o.to_string()),
                        (
                            dead_letter::ORIGIN_GROUP.into(),
                            self.settings.group.clone(),
                        ),
                        (
                            dead_letter::ORIGIN_TIMESTAMP.into(),
                            m.timestamp_ms.to_string(),
                        ),
                        (dead_letter::DELIVERY_COUNT.into(), attempts.to_string()),
                    ]);
                    weir_queue::dead_letter_topic(&self.settings.topic)
                } else {
                    headers.extend([
                        (header::ID.into(), m.id.clone()),
                        (header::ATTEMPT.into(), attempts.to_string()),
                        (header::NOT_BEFORE.into(), not_before.clone()),
                        (header::GROUP.into(), self.settings.kafka_group.clone()),
                    ]);
                    self.retry.clone()
                };
                let out = Outgoing {
                    key: m.key.as_deref(),
                    headers: &headers,
                    payload: &m.payload,
                    timestamp: m.timestamp_ms,
                };
                pending.push(send(&self.producer, &topic, out).await?);
            }
            for delivery in pending.drain(..) {
                delivered(delivery).await?;
            }
            Ok(())
        }
        .await;
        let mut state = self.state();
        match sent {
            Ok(()) => {
                for lease in &leases {
                    state.settled(&lease.message);
                }
                self.counters
                    .dead_lettered
                    .fetch_add(dead, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                // Nothing is lost: the originals stay unsettled and leased
                // again, so the next settle or expiry tries once more (a
                // copy that did reach Kafka makes this at-least-once).
                for lease in leases {
                    state.leases.insert(lease.message.id.clone(), lease);
                }
                Err(e)
            }
        }
    }

    /// Gives back every lease past its visibility timeout.
    async fn expire(&self) -> Result<()> {
        let now = Instant::now();
        let expired: Vec<Lease> = {
            let mut state = self.state();
            let ids: Vec<String> = state
                .leases
                .iter()
                .filter(|(_, l)| l.expiry <= now)
                .map(|(id, _)| id.clone())
                .collect();
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(lease) = state.leases.remove(&id) {
                    state.remember(id, Outcome::GivenBack);
                    out.push(lease);
                }
            }
            out
        };
        let result = self.give_back(expired, Duration::ZERO, None).await;
        self.changed.notify_waiters();
        result
    }
}

/// A member's librdkafka context: serves its rebalances.
struct Context {
    member: Arc<Member>,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let commit = self.member.revoke(tpl);
            if commit.count() > 0
                && let Err(e) = consumer.commit(&commit, CommitMode::Sync)
            {
                tracing::warn!(group = %self.member.settings.kafka_group, "committing before a rebalance: {e}");
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.member.assign(tpl),
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.member.settings.kafka_group, "rebalance: {e}");
            }
        }
    }
}

/// Joins the group: starts the poller, waits for the first assignment.
pub(super) async fn join(
    base: &ClientConfig,
    producer: FutureProducer,
    settings: Settings,
) -> Result<(Arc<Member>, Box<dyn Subscription>)> {
    let mut config = base.clone();
    config
        .set("group.id", &settings.kafka_group)
        .set("client.id", format!("weir-{}", settings.consumer_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            match settings.start {
                Start::Earliest => "earliest",
                Start::Latest => "latest",
            },
        );
    let (tx, rx) = mpsc::channel();
    let member = Arc::new(Member {
        retry: retry_topic(&settings.topic),
        settings,
        state: Mutex::default(),
        changed: Notify::new(),
        producer,
        counters: Counters::default(),
        closed: AtomicBool::new(false),
        commands: Mutex::new(tx),
    });
    let consumer: BaseConsumer<Context> = config
        .create_with_context(Context {
            member: Arc::clone(&member),
        })
        .map_err(config_error)?;
    let consumer = {
        let member = Arc::clone(&member);
        tokio::task::spawn_blocking(move || -> Result<BaseConsumer<Context>> {
            if member.settings.start == Start::Latest {
                start_at_latest(&consumer, &member)?;
            }
            let topics = [member.settings.topic.as_str(), member.retry.as_str()];
            consumer.subscribe(&topics).map_err(kafka_error)?;
            Ok(consumer)
        })
        .await
        .map_err(|e| BusError::Internal(format!("a Kafka call panicked: {e}")))??
    };
    let name = format!("weir-kafka-{}", member.settings.consumer_id);
    {
        let member = Arc::clone(&member);
        std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || poll_loop(consumer, &member, rx))
            .map_err(|e| BusError::Internal(format!("starting a Kafka poller: {e}")))?;
    }
    tokio::spawn(janitor(Arc::downgrade(&member)));

    // Wait to be given partitions, so that members joining together split
    // them before any of them leases a message.
    let deadline = Instant::now() + JOIN_TIMEOUT;
    loop {
        let changed = member.changed.notified();
        {
            let state = member.state();
            if let Some(e) = &state.failed {
                let e = e.clone();
                drop(state);
                member.close();
                return Err(e);
            }
            if state.joined {
                break;
            }
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            member.close();
            return Err(BusError::Unavailable(format!(
                "joining Kafka group {:?}: no partitions assigned within {JOIN_TIMEOUT:?}",
                member.settings.kafka_group
            )));
        }
    }
    let acker = Acker::new(Arc::new(KafkaSettler {
        member: Arc::clone(&member),
    }));
    let sub = KafkaSubscription {
        member: Arc::clone(&member),
        acker,
    };
    Ok((member, Box::new(sub)))
}

/// A new group started at latest begins at the current end of its topics:
/// committed before joining, so that nothing published after `subscribe`
/// returns is skipped.
fn start_at_latest(consumer: &BaseConsumer<Context>, member: &Member) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for topic in [member.settings.topic.as_str(), member.retry.as_str()] {
        let metadata = consumer
            .fetch_metadata(Some(topic), ADMIN_TIMEOUT)
            .map_err(kafka_error)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition(topic, p.id());
            }
        }
    }
    let committed = consumer
        .committed_offsets(tpl.clone(), ADMIN_TIMEOUT)
        .map_err(kafka_error)?;
    if committed
        .elements()
        .iter()
        .any(|e| matches!(e.offset(), Offset::Offset(_)))
    {
        return Ok(());
    }
    let mut ends = TopicPartitionList::new();
    for e in tpl.elements() {
        let (_, high) = consumer
            .fetch_watermarks(e.topic(), e.partition(), ADMIN_TIMEOUT)
            .map_err(kafka_error)?;
        ends.add_partition_offset(e.topic(), e.partition(), Offset::Offset(high))
            .map_err(kafka_error)?;
    }
    consumer
        .commit(&ends, CommitMode::Sync)
        .map_err(kafka_error)
}

/// The poller thread: fetch, serve rebalances and seeks, commit.
fn poll_loop(consumer: BaseConsumer<Context>, member: &Member, commands: mpsc::Receiver<Command>) {
    let buffer_cap = (member.settings.max_in_flight * 2).max(1000);
    let mut paused = false;
    let mut last_commit = std::time::Instant::now();
    while !member.is_closed() {
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Seek(offsets, reply) => {
                    let _ = reply.send(seek(&consumer, member, &offsets));
                }
            }
        }
        let buffered = member.state().buffer.len();
        if (!paused && buffered >= buffer_cap || paused && buffered < buffer_cap / 2)
            && let Ok(assignment) = consumer.assignment()
        {
            let result = if paused {
                consumer.resume(&assignment)
            } else {
                consumer.pause(&assignment)
            };
            if result.is_ok() {
                paused = !paused;
            }
        }
        match consumer.poll(POLL) {
            Some(Ok(m)) => member.accept(&m),
            Some(Err(e)) => {
                if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::Fatal) {
                    member.state().failed = Some(kafka_error(e));
                    member.changed.notify_waiters();
                    break;
                }
                tracing::debug!(group = %member.settings.kafka_group, "Kafka consumer: {e}");
            }
            None => {}
        }
        if last_commit.elapsed() >= COMMIT_EVERY {
            commit(&consumer, member);
            last_commit = std::time::Instant::now();
        }
    }
    commit(&consumer, member);
    // Dropping the consumer closes it: it leaves the group, whose other
    // members take its partitions at once.
    drop(consumer);
}

fn commit(consumer: &BaseConsumer<Context>, member: &Member) {
    let due = member.commits_due();
    if due.count() == 0 {
        return;
    }
    if let Err(e) = consumer.commit(&due, CommitMode::Sync) {
        tracing::debug!(group = %member.settings.kafka_group, "committing offsets: {e}");
        // Try again at the next commit.
        let mut state = member.state();
        for e in due.elements() {
            if let Some(source) = member.source(e.topic())
                && let Some(track) = state.tracks.get_mut(&(source, e.partition()))
            {
                track.committed = None;
            }
        }
    }
}

/// Moves this member's partitions of the main topic to `offsets`.
fn seek(consumer: &BaseConsumer<Context>, member: &Member, offsets: &[(i32, i64)]) -> Result<()> {
    let assignment = consumer.assignment().map_err(kafka_error)?;
    let topic = member.topic_of(Source::Main).to_string();
    let mine: Vec<(i32, i64)> = offsets
        .iter()
        .copied()
        .filter(|(p, _)| assignment.find_partition(&topic, *p).is_some())
        .collect();
    let mut commit = TopicPartitionList::new();
    for &(partition, offset) in &mine {
        consumer
            .seek(&topic, partition, Offset::Offset(offset), ADMIN_TIMEOUT)
            .map_err(kafka_error)?;
        commit
            .add_partition_offset(&topic, partition, Offset::Offset(offset))
            .map_err(kafka_error)?;
    }
    {
        let mut state = member.state();
        let moved = |source: Source, partition: i32| {
            source == Source::Main && mine.iter().any(|(p, _)| *p == partition)
        };
        state.buffer.retain(|m| !moved(m.source, m.partition));
        let ids: Vec<String> = state
            .leases
            .iter()
            .filter(|(_, l)| moved(l.message.source, l.message.partition))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            state.leases.remove(&id);
        }
        for &(partition, offset) in &mine {
            state.tracks.insert(
                (Source::Main, partition),
                Track {
                    committed: Some(offset),
                    ..Track::default()
                },
            );
        }
    }
    if commit.count() > 0 {
        consumer
            .commit(&commit, CommitMode::Sync)
            .map_err(kafka_error)?;
    }
    member.changed.notify_waiters();
    Ok(())
}

/// Gives back expired leases until the member is gone.
async fn janitor(member: std::sync::Weak<Member>) {
    loop {
        tokio::time::sleep(JANITOR_EVERY).await;
        let Some(member) = member.upgrade() else {
            return;
        };
        if member.is_closed() {
            return;
        }
        if let Err(e) = member.expire().await {
            tracing::warn!(group = %member.settings.kafka_group, "giving back expired leases: {e}");
        }
    }
}

#[derive(Debug)]
struct KafkaSubscription {
    member: Arc<Member>,
    acker: Acker,
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        self.member.close();
    }
}

#[async_trait::async_trait]
impl Subscription for KafkaSubscription {
    async fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        loop {
            let mut changed = std::pin::pin!(self.member.changed.notified());
            changed.as_mut().enable();
            if self.member.is_closed() {
                return Err(BusError::Closed);
            }
            if let Some(e) = &self.member.state().failed {
                return Err(e.clone());
            }
            if max == 0 {
                return Ok(Vec::new());
            }
            let (got, next_due) = self.member.lease(max, &self.acker);
            if !got.is_empty() {
                return Ok(got);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let until = match next_due {
                Some(due) => {
                    let wait = Duration::from_millis((due - now_ms()).max(1) as u64);
                    deadline.min(now + wait)
                }
                None => deadline,
            };
            let _ = tokio::time::timeout_at(until, changed).await;
        }
    }

    fn acker(&self) -> Acker {
        self.acker.clone()
    }
}

/// Settles the ids of one member.
#[derive(Debug)]
struct KafkaSettler {
    member: Arc<Member>,
}

#[async_trait::async_trait]
impl Settler for KafkaSettler {
    async fn settle(&self, ids: &[String], how: Settle) -> Result<Vec<SettleStatus>> {
        for id in ids {
            id.parse::<MessageId>()?;
        }
        let member = &self.member;
        if member.is_closed() {
            return Err(BusError::Closed);
        }
        let mut statuses = Vec::with_capacity(ids.len());
        let mut taken = Vec::new();
        {
            let mut state = member.state();
            for id in ids {
                match state.leases.remove(id) {
                    Some(lease) => {
                        if how == Settle::Ack {
                            state.settled(&lease.message);
                        } else {
                            taken.push(lease);
                        }
                        state.remember(id.clone(), Outcome::Done);
                        statuses.push(SettleStatus::Done);
                    }
                    None => statuses.push(match state.remembered.get(id) {
                        Some(Outcome::Done) => SettleStatus::AlreadyDone,
                        Some(Outcome::GivenBack) => SettleStatus::NotLeased,
                        None => SettleStatus::NotDelivered,
                    }),
                }
            }
        }
        match how {
            Settle::Ack => {
                let done = statuses
                    .iter()
                    .filter(|s| **s == SettleStatus::Done)
                    .count();
                member
                    .counters
                    .acked
                    .fetch_add(done as u64, Ordering::Relaxed);
            }
            Settle::Nack(delay) => member.give_back(taken, delay, None).await?,
            Settle::Reject(reason) => {
                member
                    .give_back(taken, Duration::ZERO, Some(&reason))
                    .await?
            }
        }
        member.changed.notify_waiters();
        Ok(statuses)
    }
}
