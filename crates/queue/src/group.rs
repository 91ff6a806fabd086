//! A consumer group on one topic: one cursor per partition, the journal that
//! makes them durable, and dead-lettering.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;
use weir_log::{Fsync, Header, Log, LogConfig, Record};

use crate::config::{GroupConfig, SeekTo, StartAt};
use crate::cursor::{Cursor, DeadLetter, Leased, Rules, Settled};
use crate::dead_letter;
use crate::error::{LogContext, QueueError, Result};
use crate::journal::{self, Event, PartitionState, Replay};
use crate::message::{Delivery, MessageId};
use crate::stats::GroupStats;
use crate::topic::Topic;

/// Bytes read from a partition log per fetch.
const FETCH_BYTES: usize = 256 << 10;
/// Journal events between snapshots.
const SNAPSHOT_EVERY: u64 = 20_000;

/// What to do with a delivered message.
#[derive(Debug, Clone)]
pub(crate) enum Settle {
    Ack,
    Nack(Duration),
    Reject(String),
}

#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) name: Arc<str>,
    pub(crate) topic: Arc<Topic>,
    dead_letters: Arc<Topic>,
    journal: Arc<Log>,
    sync_acks: bool,
    /// Told of every append, for the queue's periodic sync.
    unsynced: Arc<Notify>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    cursors: Vec<Cursor>,
    rules: Rules,
    max_unacked: usize,
    next_partition: usize,
    consumers: HashMap<Arc<str>, Instant>,
    events_since_snapshot: u64,
    acked: u64,
    redelivered: u64,
    dead_lettered: u64,
    delivered: u64,
}

impl Group {
    /// Opens the group's journal in `dir` and replays it; a group with no
    /// journal yet starts where `config.start` says.
    pub(crate) fn open(
        dir: &Path,
        name: &str,
        topic: Arc<Topic>,
        dead_letters: Arc<Topic>,
        config: &GroupConfig,
        fsync: Fsync,
        unsynced: Arc<Notify>,
    ) -> Result<Group> {
        let journal = Log::open(
            dir,
            LogConfig {
                // Journal writes survive a process crash as soon as they are
                // written; acks are synced by the queue's own policy.
                fsync: Fsync::Never,
                segment_bytes: 4 << 20,
                ..LogConfig::default()
            },
        )
        .ctx(|| format!("opening the journal of group {name:?}"))?;
        let journal = Arc::new(journal);
        let replay = replay(&journal, dir)?;
        let fresh = journal.next_offset() == 0;
        let mut cursors = Vec::with_capacity(topic.partitions.len());
        let mut seeks = Vec::new();
        for (p, log) in topic.partitions.iter().enumerate() {
            let p = p as u32;
            let cursor = match replay.partitions.get(&p) {
                Some(s) => Cursor::restore(s.committed, s.done.clone(), s.counts.clone()),
                None => {
                    let start = match (fresh, config.start) {
                        (true, StartAt::Latest) => log.next_offset(),
                        _ => log.start_offset(),
                    };
                    seeks.push(Event::Seek {
                        partition: p,
                        offset: start,
                    });
                    Cursor::restore(start, Default::default(), Default::default())
                }
            };
            cursors.push(cursor);
        }
        let group = Group {
            name: Arc::from(name),
            topic,
            dead_letters,
            journal,
            sync_acks: fsync == Fsync::Always,
            unsynced,
            state: Mutex::new(State {
                cursors,
                rules: rules(config),
                max_unacked: config.max_unacked,
                next_partition: 0,
                consumers: HashMap::new(),
                events_since_snapshot: 0,
                acked: 0,
                redelivered: 0,
                dead_lettered: 0,
                delivered: 0,
            }),
        };
        for e in seeks {
            group.write(&e)?;
        }
        Ok(group)
    }

    pub(crate) fn journal(&self) -> &Arc<Log> {
        &self.journal
    }

    /// Whether acks must be fsynced before they are answered.
    pub(crate) fn sync_acks(&self) -> bool {
        self.sync_acks
    }

    /// Applies the latest subscriber's settings and notes the consumer.
    pub(crate) fn join(&self, consumer: &Arc<str>, config: &GroupConfig, now: Instant) {
        let mut st = self.lock();
        st.rules = rules(config);
        st.max_unacked = config.max_unacked;
        st.consumers.insert(Arc::clone(consumer), now);
    }

    /// The settings the group runs with now.
    pub(crate) fn config(&self) -> GroupConfig {
        let st = self.lock();
        GroupConfig {
            visibility_timeout: st.rules.visibility_timeout,
            max_deliveries: st.rules.max_deliveries,
            max_unacked: st.max_unacked,
            ..GroupConfig::default()
        }
    }

    pub(crate) fn leave(&self, consumer: &Arc<str>) {
        self.lock().consumers.remove(consumer);
    }

    /// Leases up to `max` messages to `consumer`. Returns them and the next
    /// moment something may become ready without a publish.
    pub(crate) fn try_take(
        &self,
        now: Instant,
        max: usize,
        consumer: &Arc<str>,
    ) -> Result<(Vec<Delivery>, Option<Instant>)> {
        let mut st = self.lock();
        st.consumers.insert(Arc::clone(consumer), now);
        let n = st.cursors.len();
        let rules = st.rules;
        let mut out = Vec::new();
        let mut dead = Vec::new();
        let mut expired_dead = Vec::new();
        for k in 0..n {
            if out.len() >= max {
                break;
            }
            let p = (st.next_partition + k) % n;
            let (expired, redelivered) = st.cursors[p].expire(now, rules);
            st.redelivered += redelivered;
            dead.extend(expired.into_iter().map(|d| (p as u32, d)));
            let want = max - out.len();
            let mut leased = st.cursors[p].take(now, want, consumer, rules, &mut expired_dead);
            let log = &self.topic.partitions[p];
            // Read further while short: new messages, or ones that turn out
            // to be done already (known from the journal after a restart).
            while leased.len() < want
                && st.cursors[p].window() < st.max_unacked
                && st.cursors[p].fetched() < log.next_offset()
            {
                let records = log
                    .read(st.cursors[p].fetched(), FETCH_BYTES)
                    .ctx(|| format!("reading topic {:?} partition {p}", self.topic.name))?;
                if records.is_empty() {
                    break;
                }
                let cursor = &mut st.cursors[p];
                cursor.fill(records);
                let more =
                    cursor.take(now, want - leased.len(), consumer, rules, &mut expired_dead);
                leased.extend(more);
            }
            dead.extend(expired_dead.drain(..).map(|d| (p as u32, d)));
            if leased.is_empty() {
                continue;
            }
            let runs = journal::counted_runs(leased.iter().map(|l| (l.offset, l.delivery_count)));
            self.write_locked(
                &mut st,
                &Event::Delivered {
                    partition: p as u32,
                    runs,
                },
            )?;
            st.delivered += leased.len() as u64;
            out.extend(leased.into_iter().map(|l| self.delivery(p as u32, l)));
        }
        st.next_partition = (st.next_partition + 1) % n.max(1);
        self.bury(&mut st, dead)?;
        let wake = st.cursors.iter().filter_map(Cursor::next_wakeup).min();
        Ok((out, wake))
    }

    /// Acks, nacks or rejects messages; one outcome per id.
    pub(crate) fn settle(
        &self,
        ids: &[MessageId],
        how: &Settle,
        now: Instant,
    ) -> Result<Vec<Settled>> {
        let mut st = self.lock();
        let rules = st.rules;
        let mut outcomes = Vec::with_capacity(ids.len());
        let mut done: HashMap<u32, Vec<u64>> = HashMap::new();
        let mut dead = Vec::new();
        for id in ids {
            let Some(cursor) = st.cursors.get_mut(id.partition as usize) else {
                outcomes.push(Settled::NotDelivered);
                continue;
            };
            let (outcome, letter) = match how {
                Settle::Ack => (cursor.ack(id.offset), None),
                Settle::Nack(delay) => cursor.nack(id.offset, *delay, now, rules),
                Settle::Reject(_) => cursor.reject(id.offset),
            };
            if matches!(how, Settle::Ack) && outcome == Settled::Done {
                done.entry(id.partition).or_default().push(id.offset);
                st.acked += 1;
            }
            if let Some(mut letter) = letter {
                if let Settle::Reject(detail) = how {
                    letter
                        .record
                        .headers
                        .push(Header::new(dead_letter::DETAIL, detail.clone()));
                }
                dead.push((id.partition, letter));
            }
            outcomes.push(outcome);
        }
        for (partition, mut offsets) in done {
            offsets.sort_unstable();
            let runs = journal::runs(offsets);
            self.write_locked(&mut st, &Event::Done { partition, runs })?;
        }
        self.bury(&mut st, dead)?;
        Ok(outcomes)
    }

    /// Moves the group's position; in-flight leases are forgotten.
    pub(crate) fn seek(&self, to: SeekTo) -> Result<()> {
        let mut st = self.lock();
        let targets: Vec<(u32, u64)> = match to {
            SeekTo::Offset { partition, offset } => {
                let log = self.topic.log(partition)?;
                vec![(
                    partition,
                    offset.clamp(log.start_offset(), log.next_offset()),
                )]
            }
            _ => self
                .topic
                .partitions
                .iter()
                .enumerate()
                .map(|(p, log)| {
                    let offset = match to {
                        SeekTo::Earliest => Ok(log.start_offset()),
                        SeekTo::Latest => Ok(log.next_offset()),
                        SeekTo::Timestamp(ts) => log.offset_for_timestamp(ts),
                        SeekTo::Offset { .. } => unreachable!("handled above"),
                    };
                    offset.map(|o| (p as u32, o))
                })
                .collect::<std::result::Result<_, _>>()
                .ctx(|| format!("seeking in topic {:?}", self.topic.name))?,
        };
        for (partition, offset) in targets {
            st.cursors[partition as usize].seek(offset);
            self.write_locked(&mut st, &Event::Seek { partition, offset })?;
        }
        drop(st);
        self.topic.notify.notify_waiters();
        Ok(())
    }

    pub(crate) fn stats(&self, now: Instant, now_ms: i64) -> Result<GroupStats> {
        let mut st = self.lock();
        let rules = st.rules;
        let mut dead = Vec::new();
        let mut redelivered = 0;
        for (p, cursor) in st.cursors.iter_mut().enumerate() {
            let (expired, returned) = cursor.expire(now, rules);
            redelivered += returned;
            dead.extend(expired.into_iter().map(|d| (p as u32, d)));
        }
        st.redelivered += redelivered;
        self.bury(&mut st, dead)?;
        let mut stats = GroupStats {
            group: self.name.to_string(),
            topic: self.topic.name.to_string(),
            consumers: st.consumers.len(),
            acked_total: st.acked,
            delivered_total: st.delivered,
            redelivered_total: st.redelivered,
            dead_lettered_total: st.dead_lettered,
            ..GroupStats::default()
        };
        let mut oldest: Option<i64> = None;
        for (p, cursor) in st.cursors.iter().enumerate() {
            let log = &self.topic.partitions[p];
            let end = log.next_offset();
            let committed = cursor.committed().max(log.start_offset());
            stats.depth += end
                .saturating_sub(committed)
                .saturating_sub(cursor.done_above_committed() as u64);
            stats.in_flight += cursor.in_flight() as u64;
            stats.committed.push(cursor.committed());
            let ts = match cursor.oldest_pending_ts() {
                Some(ts) => Some(ts),
                None if committed < end => log
                    .read(committed, 1)
                    .ctx(|| format!("reading topic {:?} partition {p}", self.topic.name))?
                    .first()
                    .map(|r| r.record.timestamp),
                None => None,
            };
            oldest = match (oldest, ts) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        stats.oldest_unacked_age_ms = oldest.map(|ts| (now_ms - ts).max(0) as u64);
        Ok(stats)
    }

    /// Appends dead letters to the dead-letter topic, then marks them done;
    /// one that cannot be appended is delivered again instead of lost.
    fn bury(&self, st: &mut State, dead: Vec<(u32, DeadLetter)>) -> Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        let now_ms = crate::queue::now_ms();
        let mut done: HashMap<u32, Vec<u64>> = HashMap::new();
        let mut buried = 0;
        for (partition, letter) in dead {
            let record = self.dead_record(partition, &letter, now_ms);
            match self.dead_letters.partitions[0].append(&[record]) {
                Ok(_) => {
                    self.unsynced.notify_one();
                    st.cursors[partition as usize].dead_lettered(letter.offset);
                    st.dead_lettered += 1;
                    buried += 1;
                    done.entry(partition).or_default().push(letter.offset);
                    tracing::warn!(
                        topic = %self.topic.name, group = %self.name, partition,
                        offset = letter.offset, reason = letter.reason.as_str(),
                        deliveries = letter.delivery_count, "message dead-lettered"
                    );
                }
                Err(e) => {
                    st.cursors[partition as usize].release(letter.offset);
                    tracing::error!(topic = %self.topic.name, group = %self.name, error = %e,
                        "could not dead-letter a message; it will be delivered again");
                }
            }
        }
        self.dead_letters
            .published
            .fetch_add(buried, std::sync::atomic::Ordering::Relaxed);
        self.dead_letters.notify.notify_waiters();
        for (partition, mut offsets) in done {
            offsets.sort_unstable();
            self.write_locked(
                st,
                &Event::Done {
                    partition,
                    runs: journal::runs(offsets),
                },
            )?;
        }
        Ok(())
    }

    fn dead_record(&self, partition: u32, letter: &DeadLetter, now_ms: i64) -> Record {
        let mut record = letter.record.clone();
        let origin = [
            (dead_letter::REASON, letter.reason.as_str().to_string()),
            (dead_letter::ORIGIN_TOPIC, self.topic.name.to_string()),
            (dead_letter::ORIGIN_PARTITION, partition.to_string()),
            (dead_letter::ORIGIN_OFFSET, letter.offset.to_string()),
            (dead_letter::ORIGIN_GROUP, self.name.to_string()),
            (dead_letter::ORIGIN_TIMESTAMP, record.timestamp.to_string()),
            (
                dead_letter::DELIVERY_COUNT,
                letter.delivery_count.to_string(),
            ),
        ];
        record.headers.extend(
            origin
                .into_iter()
                .map(|(n, v)| Header::new(n, Bytes::from(v))),
        );
        record.timestamp = now_ms;
        record
    }

    fn delivery(&self, partition: u32, l: Leased) -> Delivery {
        Delivery {
            id: MessageId {
                partition,
                offset: l.offset,
            },
            topic: Arc::clone(&self.topic.name),
            record: l.record,
            delivery_count: l.delivery_count,
        }
    }

    fn write(&self, event: &Event) -> Result<()> {
        let mut st = self.lock();
        self.write_locked(&mut st, event)
    }

    /// Appends an event to the journal and, every so often, replaces the
    /// history with a snapshot so the journal stays small.
    fn write_locked(&self, st: &mut State, event: &Event) -> Result<()> {
        let record = Record::new(0, event.encode());
        self.journal
            .append(&[record])
            .ctx(|| format!("writing the journal of group {:?}", self.name))?;
        st.events_since_snapshot += 1;
        if st.events_since_snapshot >= SNAPSHOT_EVERY {
            let parts = st
                .cursors
                .iter()
                .enumerate()
                .map(|(p, c)| {
                    let (committed, done, counts) = c.snapshot();
                    PartitionState {
                        partition: p as u32,
                        committed,
                        done: done.into_iter().collect(),
                        counts: counts.into_iter().collect(),
                    }
                })
                .collect();
            let at = self
                .journal
                .append(&[Record::new(0, Event::Snapshot(parts).encode())])
                .ctx(|| format!("writing a snapshot of group {:?}", self.name))?;
            self.journal
                .truncate_before(at.base_offset)
                .ctx(|| format!("compacting the journal of group {:?}", self.name))?;
            st.events_since_snapshot = 0;
        }
        self.unsynced.notify_one();
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn rules(config: &GroupConfig) -> Rules {
    Rules {
        max_deliveries: config.max_deliveries.max(1),
        visibility_timeout: config.visibility_timeout,
    }
}

fn replay(journal: &Log, dir: &Path) -> Result<Replay> {
    let mut replay = Replay::default();
    let mut offset = journal.start_offset();
    loop {
        let records = journal
            .read(offset, 1 << 20)
            .ctx(|| format!("reading journal {}", dir.display()))?;
        let Some(last) = records.last() else { break };
        offset = last.offset + 1;
        for r in records {
            let event = Event::decode(&r.record.payload).ok_or_else(|| QueueError::Journal {
                path: dir.to_path_buf(),
                reason: format!("undecodable event at journal offset {}", r.offset),
            })?;
            replay.apply(event);
        }
    }
    Ok(replay)
}
