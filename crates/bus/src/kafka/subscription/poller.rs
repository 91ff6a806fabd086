//! A member's poller thread: it owns the librdkafka consumer, fetches
//! into the member's buffer, pauses and resumes partitions, serves
//! rebalances and seeks, and commits.

use std::sync::{Arc, mpsc};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::super::{ADMIN_TIMEOUT, kafka_error};
use super::{COMMIT_EVERY, Command, Member, POLL, Pausing, Source, Track};
use crate::{BusError, Result};

/// A member's librdkafka context: serves its rebalances.
pub(super) struct Context {
    pub(super) member: Arc<Member>,
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

/// A new group started at latest begins at the current end of its topics:
/// committed before joining, so that nothing published after `subscribe`
/// returns is skipped.
pub(super) fn start_at_latest(consumer: &BaseConsumer<Context>, member: &Member) -> Result<()> {
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
pub(super) fn poll_loop(
    consumer: BaseConsumer<Context>,
    member: &Member,
    commands: mpsc::Receiver<Command>,
) {
    let buffer_cap = (member.settings.max_in_flight * 2).max(1000);
    // What is paused, as last applied; `None` until the first assignment.
    let mut applied: Option<Pausing> = None;
    let mut last_commit = std::time::Instant::now();
    while !member.is_closed() {
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Seek(offsets, reply) => {
                    let _ = reply.send(seek(&consumer, member, &offsets));
                }
            }
        }
        let want = member
            .state()
            .pausing(buffer_cap, applied.unwrap_or_default());
        if applied != Some(want) && apply_pausing(&consumer, member, want).is_ok() {
            applied = Some(want);
        }
        match consumer.poll(POLL) {
            Some(Ok(m)) => member.accept(&m),
            Some(Err(e)) => {
                let fatal = e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::Fatal);
                let error = kafka_error(e);
                if fatal || matches!(error, BusError::Unauthorized(_)) {
                    // Nothing this member can do: its subscription and
                    // acker answer with the error from now on.
                    tracing::warn!(group = %member.settings.kafka_group, "Kafka consumer stopped: {error}");
                    member.state().failed = Some(error);
                    member.close();
                    break;
                }
                tracing::debug!(group = %member.settings.kafka_group, "Kafka consumer: {error}");
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
    member.stopped.send_replace(true);
}

/// Pauses or resumes the assigned partitions of each topic as `want` says
/// (partitions assigned since the last call included).
fn apply_pausing(
    consumer: &BaseConsumer<Context>,
    member: &Member,
    want: Pausing,
) -> Result<(), rdkafka::error::KafkaError> {
    let assignment = consumer.assignment()?;
    for (source, paused) in [(Source::Main, want.main), (Source::Retry, want.retry)] {
        let topic = member.topic_of(source);
        let mut tpl = TopicPartitionList::new();
        for e in assignment.elements().iter().filter(|e| e.topic() == topic) {
            tpl.add_partition(topic, e.partition());
        }
        if tpl.count() == 0 {
            continue;
        }
        if paused {
            consumer.pause(&tpl)?;
        } else {
            consumer.resume(&tpl)?;
        }
    }
    Ok(())
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

/// Moves this member's partitions of the main topic to `offsets`. A
/// partition whose seek fails stays where it was (the error is returned);
/// those moved before it stay moved.
fn seek(consumer: &BaseConsumer<Context>, member: &Member, offsets: &[(i32, i64)]) -> Result<()> {
    let assignment = consumer.assignment().map_err(kafka_error)?;
    let topic = member.topic_of(Source::Main).to_string();
    let mut moved = Vec::new();
    let mut failed = None;
    for &(partition, offset) in offsets {
        if assignment.find_partition(&topic, partition).is_none() {
            continue;
        }
        match consumer.seek(&topic, partition, Offset::Offset(offset), ADMIN_TIMEOUT) {
            Ok(()) => moved.push((partition, offset)),
            Err(e) => {
                failed = Some(kafka_error(e));
                break;
            }
        }
    }
    let mut commit = TopicPartitionList::new();
    {
        let mut state = member.state();
        let was_moved = |source: Source, partition: i32| {
            source == Source::Main && moved.iter().any(|(p, _)| *p == partition)
        };
        state.retain_buffered(|m| !was_moved(m.source, m.partition));
        let ids: Vec<String> = state
            .leases
            .iter()
            .filter(|(_, l)| was_moved(l.message.source, l.message.partition))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            state.leases.remove(&id);
        }
        for &(partition, offset) in &moved {
            state.tracks.insert(
                (Source::Main, partition),
                Track {
                    committed: Some(offset),
                    ..Track::default()
                },
            );
            commit
                .add_partition_offset(&topic, partition, Offset::Offset(offset))
                .map_err(kafka_error)?;
        }
    }
    member.changed.notify_waiters();
    if commit.count() > 0 {
        consumer
            .commit(&commit, CommitMode::Sync)
            .map_err(kafka_error)?;
    }
    failed.map_or(Ok(()), Err)
}
