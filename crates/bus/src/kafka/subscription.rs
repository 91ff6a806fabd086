//! One member of a Kafka consumer group, with the bus's leases on top.
//!
//! A [`Member`] is shared by three parties:
//! - its **poller thread**, which owns the librdkafka consumer (subscribed
//!   to `T` and `T.retry`, auto-commit off): it fetches into the member's
//!   buffer (pausing a topic's partitions while its share of the buffer
//!   is full: retries waiting for their time never stop the main topic),
//!   serves rebalances, seeks, and commits;
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
//! and on shutdown (`KafkaBus::close` waits for each member's last commit).
//! An authorization or fatal consumer error stops the member: its
//! subscription and acker answer with that error.
//!
//! Settling: an ack marks the offset settled; a nack (or a lease that
//! expired) republishes the message to `T.retry` with its id, delivery
//! count, not-before time and original timestamp, then marks the original
//! settled; past `max_deliveries`, or on reject, the message goes to
//! `T.dlq` with the dead letter headers instead. Copies are records of the
//! time they were made, so topic retention counts from then. A message
//! whose copy did not reach Kafka stays leased and unsettled, and the
//! janitor tries that give-back again a second later; the others of its
//! batch are settled. A retry copy is delivered by whichever member of the
//! same group holds its `T.retry` partition, once its time has come. Only
//! on `T.retry` do Weir's `x-weir-*` headers mean anything; on `T` every
//! header is the publisher's.
//!
//! One lease per id: when a member died after republishing a message but
//! before committing past it, the next owner fetches both the original and
//! its copy; whichever is leased first carries the message, and the other
//! is settled when it comes up.
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
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;
use weir_api::Start;
use weir_api::wire::SettleStatus;
use weir_queue::{MessageId, dead_letter, now_ms};

mod poller;

use poller::{Context, poll_loop, start_at_latest};

use super::{
    Counters, Outgoing, config_error, delivered, header, kafka_error, lock, retry_topic, send,
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
/// How long a lease whose copy could not be republished waits before the
/// janitor tries again.
const GIVE_BACK_PAUSE: Duration = Duration::from_secs(1);
/// How long `close` waits for a poller's last commit.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Set by the poller once it has made its last commit and left.
    stopped: watch::Sender<bool>,
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

/// A record as fetched, before it is taken.
#[derive(Debug)]
struct Record<'a> {
    source: Source,
    partition: i32,
    offset: i64,
    key: Option<&'a [u8]>,
    headers: Vec<(String, String)>,
    payload: &'a [u8],
    timestamp_ms: i64,
}

#[derive(Debug)]
struct Lease {
    message: Fetched,
    expiry: Instant,
    leased_at: Instant,
    /// A give-back that failed, to try again when the lease expires:
    /// its delay, and its reason when it was a reject.
    again: Option<(Duration, Option<String>)>,
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
    /// Fetched, not yet leased, in fetch order.
    buffer: VecDeque<Fetched>,
    /// How many of `buffer` came from `T.retry`.
    retry_buffered: usize,
    leases: HashMap<String, Lease>,
    tracks: HashMap<(Source, i32), Track>,
    remembered: HashMap<String, Outcome>,
    remembered_order: VecDeque<String>,
    /// Set by the first assignment.
    joined: bool,
    /// Counts assignments: partitions new to the member need their pause
    /// state set.
    generation: u64,
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

    /// Buffers a fetched message and tracks its offset.
    fn take(&mut self, m: Fetched) {
        let track = self.tracks.entry((m.source, m.partition)).or_default();
        track.outstanding.insert(m.offset);
        if m.source == Source::Retry {
            self.retry_buffered += 1;
        }
        self.buffer.push_back(m);
    }

    /// Keeps the buffered messages `keep` accepts.
    fn retain_buffered(&mut self, keep: impl Fn(&Fetched) -> bool) {
        self.buffer.retain(keep);
        self.retry_buffered = self
            .buffer
            .iter()
            .filter(|m| m.source == Source::Retry)
            .count();
    }

    /// Puts a lease whose give-back failed back, to be tried again after
    /// [`GIVE_BACK_PAUSE`]; when another copy of the message is leased
    /// meanwhile, that one carries it, and this copy is settled.
    fn lease_again(&mut self, mut lease: Lease, delay: Duration, reason: Option<&str>) {
        if self.leases.contains_key(&lease.message.id) {
            self.settled(&lease.message);
            return;
        }
        lease.expiry = Instant::now() + GIVE_BACK_PAUSE;
        lease.again = Some((delay, reason.map(str::to_string)));
        self.leases.insert(lease.message.id.clone(), lease);
    }

    /// Which topics' partitions should be paused: each while its share of
    /// the buffer is at `cap`, until it is down to half (`now` is what is
    /// paused now). Retries waiting for their time fill only their own
    /// share, so they never stop the main topic.
    fn pausing(&self, cap: usize, now: Pausing) -> Pausing {
        let main = self.buffer.len() - self.retry_buffered;
        let full = |n: usize, paused: bool| n >= cap || paused && n >= cap / 2;
        Pausing {
            main: full(main, now.main),
            retry: full(self.retry_buffered, now.retry),
            generation: self.generation,
        }
    }
}

/// What the poller pauses, for the assignment of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Pausing {
    main: bool,
    retry: bool,
    generation: u64,
}

enum Command {
    Seek(Vec<(i32, i64)>, oneshot::Sender<Result<()>>),
}

impl Member {
    /// A member not yet joined, and the receiving end of its poller's
    /// commands.
    fn new(settings: Settings, producer: FutureProducer) -> (Arc<Member>, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel();
        let member = Arc::new(Member {
            retry: retry_topic(&settings.topic),
            settings,
            state: Mutex::default(),
            changed: Notify::new(),
            producer,
            counters: Counters::default(),
            closed: AtomicBool::new(false),
            stopped: watch::Sender::new(false),
            commands: Mutex::new(tx),
        });
        (member, rx)
    }

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

    /// Why the member cannot be used, if it cannot: its poller's failure,
    /// or that it was closed.
    fn check_usable(&self) -> Result<()> {
        if let Some(e) = &self.state().failed {
            return Err(e.clone());
        }
        if self.is_closed() {
            return Err(BusError::Closed);
        }
        Ok(())
    }

    /// Waits (at most [`STOP_TIMEOUT`]) until the poller of a closed
    /// member has made its last commit and left the group.
    pub(super) async fn stopped(&self) {
        let mut stopped = self.stopped.subscribe();
        let _ = tokio::time::timeout(STOP_TIMEOUT, stopped.wait_for(|s| *s)).await;
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
        let headers = m.headers().map_or_else(Vec::new, |hs| {
            hs.iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                    (h.key.to_string(), value.into_owned())
                })
                .collect()
        });
        let record = Record {
            source,
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            headers,
            payload: m.payload().unwrap_or_default(),
            timestamp_ms: m.timestamp().to_millis().unwrap_or_else(now_ms),
        };
        self.take(record);
    }

    /// Buffers a record, unless it was fetched already or, on `T.retry`,
    /// is another group's.
    fn take(&self, r: Record<'_>) {
        let mut state = self.state();
        let track = state.tracks.entry((r.source, r.partition)).or_default();
        if track.next.is_some_and(|next| r.offset < next) {
            // Fetched again after a rebalance gave the partition back: it
            // is held already, or settled.
            return;
        }
        track.next = Some(r.offset + 1);
        let Some(fetched) = self.fetched(r) else {
            return;
        };
        state.take(fetched);
        drop(state);
        self.changed.notify_waiters();
    }

    /// What a record is to this member. On the main topic every header is
    /// the publisher's; on `T.retry` Weir's own say what the copy is (and
    /// `T.retry` is shared by every group of `T`: a copy for another group,
    /// or one not written by Weir, is not this member's).
    fn fetched(&self, r: Record<'_>) -> Option<Fetched> {
        let mut fetched = Fetched {
            id: format!("{}-{}", r.partition, r.offset),
            source: r.source,
            partition: r.partition,
            offset: r.offset,
            key: r.key.map(Bytes::copy_from_slice),
            headers: Vec::new(),
            payload: Bytes::copy_from_slice(r.payload),
            timestamp_ms: r.timestamp_ms,
            attempts: 0,
            not_before: 0,
        };
        if r.source == Source::Main {
            fetched.headers = r.headers;
            return Some(fetched);
        }
        let (mut id, mut group) = (None, None);
        for (name, value) in r.headers {
            match name.as_str() {
                header::ID => id = Some(value),
                header::ATTEMPT => fetched.attempts = value.parse().unwrap_or(0),
                header::NOT_BEFORE => fetched.not_before = value.parse().unwrap_or(0),
                header::GROUP => group = Some(value),
                header::TIMESTAMP => {
                    fetched.timestamp_ms = value.parse().unwrap_or(fetched.timestamp_ms);
                }
                _ => fetched.headers.push((name, value)),
            }
        }
        if group.as_deref() != Some(self.settings.kafka_group.as_str()) {
            return None;
        }
        fetched.id = id?;
        Some(fetched)
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
        state.retain_buffered(|m| !lost.contains(&(m.source, m.partition)));
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
        state.generation += 1;
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
            if m.source == Source::Retry {
                state.retry_buffered -= 1;
            }
            if state.leases.contains_key(&m.id) {
                // Another copy of a message this member holds (the
                // original and its retry, both fetched again after a
                // member died between republishing and committing): the
                // held one carries it.
                state.settled(&m);
                continue;
            }
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
                    again: None,
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
    ///
    /// Each message on its own: one whose copy did not reach Kafka stays
    /// leased, unsettled, and is tried again after [`GIVE_BACK_PAUSE`]
    /// (the first such error is returned); the others are settled.
    async fn give_back(
        &self,
        leases: Vec<Lease>,
        delay: Duration,
        reason: Option<&str>,
    ) -> Result<()> {
        if leases.is_empty() {
            return Ok(());
        }
        let not_before = now_ms() + delay.as_millis() as i64;
        let mut sends = Vec::with_capacity(leases.len());
        for lease in &leases {
            let (topic, headers, dead) = self.copy_of(&lease.message, not_before, reason);
            let out = Outgoing {
                key: lease.message.key.as_deref(),
                headers: &headers,
                payload: &lease.message.payload,
                // The copy's own time, so that the retention of `T.retry`
                // and `T.dlq` counts from now; the original's travels in a
                // header.
                timestamp: now_ms(),
            };
            sends.push((dead, send(&self.producer, &topic, out).await));
        }
        let mut outcomes = Vec::with_capacity(sends.len());
        for (dead, sent) in sends {
            let landed = match sent {
                Ok(delivery) => delivered(delivery).await.map(|_| ()),
                Err(e) => Err(e),
            };
            outcomes.push((dead, landed));
        }
        let mut state = self.state();
        let (mut dead_lettered, mut first_error) = (0, None);
        for (lease, (dead, landed)) in leases.into_iter().zip(outcomes) {
            match landed {
                Ok(()) => {
                    state.settled(&lease.message);
                    dead_lettered += u64::from(dead);
                }
                Err(e) => {
                    state.lease_again(lease, delay, reason);
                    first_error.get_or_insert(e);
                }
            }
        }
        drop(state);
        self.counters
            .dead_lettered
            .fetch_add(dead_lettered, Ordering::Relaxed);
        first_error.map_or(Ok(()), Err)
    }

    /// The copy a give-back publishes: its topic, its headers, and whether
    /// it is a dead letter.
    fn copy_of(
        &self,
        m: &Fetched,
        not_before: i64,
        reason: Option<&str>,
    ) -> (String, Vec<(String, String)>, bool) {
        let attempts = m.attempts + 1;
        let mut headers = m.headers.clone();
        if reason.is_none() && attempts < self.settings.max_deliveries {
            headers.extend([
                (header::ID.into(), m.id.clone()),
                (header::ATTEMPT.into(), attempts.to_string()),
                (header::NOT_BEFORE.into(), not_before.to_string()),
                (header::GROUP.into(), self.settings.kafka_group.clone()),
                (header::TIMESTAMP.into(), m.timestamp_ms.to_string()),
            ]);
            return (self.retry.clone(), headers, false);
        }
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
        (
            weir_queue::dead_letter_topic(&self.settings.topic),
            headers,
            true,
        )
    }

    /// Gives back every lease past its visibility timeout, and tries again
    /// the give-backs that failed.
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
                    if lease.again.is_none() {
                        state.remember(id, Outcome::GivenBack);
                    }
                    out.push(lease);
                }
            }
            out
        };
        // Timed out leases go to `T.retry`; failed give-backs are tried
        // again as they were asked, one batch per delay and reason.
        let mut batches: HashMap<(Duration, Option<String>), Vec<Lease>> = HashMap::new();
        for mut lease in expired {
            let how = lease.again.take().unwrap_or_default();
            batches.entry(how).or_default().push(lease);
        }
        let mut result = Ok(());
        for ((delay, reason), leases) in batches {
            let given = self.give_back(leases, delay, reason.as_deref()).await;
            result = result.and(given);
        }
        self.changed.notify_waiters();
        result
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
    let (member, rx) = Member::new(settings, producer);
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
            self.member.check_usable()?;
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
        member.check_usable()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A member of group `g` on topic `t` whose producer reaches no broker:
    /// what it republishes fails after 300 ms.
    fn member() -> (Arc<Member>, Acker) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .set("message.timeout.ms", "300")
            .set("log_level", "0")
            .create()
            .unwrap();
        let settings = Settings {
            topic: "t".into(),
            group: "g".into(),
            kafka_group: "g:t".into(),
            consumer_id: "c".into(),
            start: Start::Earliest,
            visibility_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            max_in_flight: 100,
        };
        let (member, _commands) = Member::new(settings, producer);
        let acker = Acker::new(Arc::new(KafkaSettler {
            member: Arc::clone(&member),
        }));
        (member, acker)
    }

    fn record(
        source: Source,
        partition: i32,
        offset: i64,
        headers: &[(&str, &str)],
    ) -> Record<'static> {
        Record {
            source,
            partition,
            offset,
            key: None,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            payload: b"x",
            timestamp_ms: 1_000,
        }
    }

    /// A retry copy of message `id` for group `g:t`, due at once.
    fn retry_of(id: &str, partition: i32, offset: i64) -> Record<'static> {
        let id: &'static str = Box::leak(id.to_string().into_boxed_str());
        record(
            Source::Retry,
            partition,
            offset,
            &[
                (header::ID, id),
                (header::ATTEMPT, "1"),
                (header::NOT_BEFORE, "0"),
                (header::GROUP, "g:t"),
                (header::TIMESTAMP, "777"),
            ],
        )
    }

    fn commit_point(member: &Member, source: Source, partition: i32) -> Option<i64> {
        member.state().tracks[&(source, partition)].commit_point()
    }

    #[test]
    fn retry_copies_are_taken_only_by_their_group() {
        let (member, acker) = member();
        member.take(retry_of("0-4", 1, 0));
        let mut other = retry_of("0-5", 1, 1);
        other.headers[3].1 = "h:t".into();
        member.take(other);
        member.take(record(Source::Retry, 1, 2, &[("job", "1")]));
        let (got, _) = member.lease(10, &acker);
        assert_eq!(got.len(), 1);
        let d = &got[0];
        assert_eq!((d.id.as_str(), d.delivery_count), ("0-4", 2));
        assert_eq!(d.timestamp_ms, 777, "the original's time, from its header");
        assert!(
            d.headers.is_empty(),
            "Weir's headers stay Weir's: {:?}",
            d.headers
        );
        // What is not this group's is not outstanding: the commit passes it.
        assert_eq!(commit_point(&member, Source::Retry, 1), Some(0));
    }

    #[test]
    fn on_the_main_topic_every_header_is_the_publishers() {
        let (member, acker) = member();
        let headers = [
            (header::ATTEMPT, "9"),
            (header::NOT_BEFORE, "99999999999999"),
        ];
        member.take(record(Source::Main, 0, 3, &headers));
        let (got, _) = member.lease(10, &acker);
        assert_eq!(
            got.len(),
            1,
            "not held back by a not-before it did not get from Weir"
        );
        assert_eq!(got[0].id, "0-3");
        assert_eq!(got[0].delivery_count, 1);
        assert_eq!(got[0].headers.len(), 2);
    }

    #[tokio::test]
    async fn a_second_copy_of_a_held_message_is_settled_not_leased_again() {
        let (member, acker) = member();
        // The original, and the retry copy a dead member made of it before
        // it could commit: both fetched again.
        member.take(record(Source::Main, 0, 5, &[]));
        member.take(retry_of("0-5", 2, 8));
        let (got, _) = member.lease(10, &acker);
        assert_eq!(got.len(), 1, "one lease per id");
        assert_eq!(member.state().buffer.len(), 0);
        assert_eq!(
            commit_point(&member, Source::Retry, 2),
            Some(9),
            "the copy settled"
        );
        assert_eq!(
            commit_point(&member, Source::Main, 0),
            Some(5),
            "the held one not yet"
        );
        let statuses = acker.ack(&["0-5".to_string()]).await.unwrap();
        assert_eq!(statuses, vec![SettleStatus::Done]);
        assert_eq!(
            commit_point(&member, Source::Main, 0),
            Some(6),
            "nothing left stuck"
        );
    }

    #[test]
    fn retries_waiting_for_their_time_pause_only_their_own_topic() {
        let (member, acker) = member();
        for offset in 0..10 {
            let mut later = retry_of(&format!("0-{offset}"), 0, offset);
            later.headers[2].1 = "99999999999999".into();
            member.take(later);
        }
        member.take(record(Source::Main, 0, 0, &[]));
        let state = member.state();
        let now = state.pausing(10, Pausing::default());
        assert!(now.retry && !now.main, "{now:?}");
        drop(state);
        let (got, next_due) = member.lease(10, &acker);
        assert_eq!(got.len(), 1, "the main topic's message comes past them");
        assert_eq!(next_due, Some(99_999_999_999_999));
        // Hysteresis: paused until down to half the cap.
        let mut state = member.state();
        state.retain_buffered(|m| m.offset < 6);
        let then = state.pausing(10, now);
        assert!(then.retry, "6 of 10 is above half: {then:?}");
        state.retain_buffered(|m| m.offset < 4);
        assert!(!state.pausing(10, then).retry);
    }

    #[tokio::test]
    async fn a_nack_whose_copy_cannot_be_written_keeps_its_lease_and_tries_later() {
        let (member, acker) = member();
        member.take(record(Source::Main, 0, 0, &[]));
        member.take(record(Source::Main, 0, 1, &[]));
        let (got, _) = member.lease(10, &acker);
        let ids: Vec<String> = got.iter().map(|d| d.id.clone()).collect();
        let nacked = acker.nack(&ids[..1], Duration::from_secs(3)).await;
        assert!(nacked.is_err(), "the broker is unreachable: {nacked:?}");
        {
            let state = member.state();
            let lease = &state.leases["0-0"];
            assert_eq!(
                lease.again,
                Some((Duration::from_secs(3), None)),
                "tried again as asked"
            );
            assert!(lease.expiry > Instant::now(), "not at once: after a pause");
            assert_eq!(
                state.tracks[&(Source::Main, 0)].commit_point(),
                Some(0),
                "nothing settled"
            );
        }
        // The other message was not touched by the failure.
        let statuses = acker.ack(&ids[1..]).await.unwrap();
        assert_eq!(statuses, vec![SettleStatus::Done]);
    }
}
