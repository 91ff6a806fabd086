//! Stats of a Kafka cluster as the bus reports them.
//!
//! From the cluster: every topic but Kafka's internal ones (`__…`) and the
//! retry companions, with its partitions and watermarks (`messages` = high
//! minus low, `published_total` = the sum of high watermarks); the groups it
//! lists whose id has the form `group:topic` of a listed topic, with their
//! committed offsets (`pending_messages` = what is past the committed
//! offsets of `T`; retries waiting in `T.retry` are not counted, since that
//! topic is shared by every group of `T`) and their member
//! count. From this process's members: in flight, the oldest lease and the
//! delivered/acked/redelivered/dead-lettered totals — Kafka keeps no such
//! counts, so a process sees only its own. `bytes` is what this handle
//! published: librdkafka exposes no log sizes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use weir_api::wire::{GroupStats, StatsResponse, TopicStats};

use super::{ADMIN_TIMEOUT, KafkaBus, kafka_error, lock};
use crate::Result;

/// Partitions of one topic with their (low, high) watermarks.
type Marks = Vec<(i32, i64, i64)>;

pub(super) fn collect(bus: &KafkaBus) -> Result<StatsResponse> {
    let probe = bus.probe(None)?;
    let metadata = probe
        .fetch_metadata(None, ADMIN_TIMEOUT)
        .map_err(kafka_error)?;
    // Watermarks of every partition in two requests per broker: ListOffsets
    // for "earliest" and for "latest".
    let mut all = TopicPartitionList::new();
    for t in metadata.topics() {
        if t.name().starts_with("__") {
            continue;
        }
        for p in t.partitions() {
            all.add_partition(t.name(), p.id());
        }
    }
    let ends = |at: Offset| -> Result<HashMap<(String, i32), i64>> {
        let mut tpl = all.clone();
        tpl.set_all_offsets(at).map_err(kafka_error)?;
        let found = probe
            .offsets_for_times(tpl, ADMIN_TIMEOUT)
            .map_err(kafka_error)?;
        Ok(found
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                };
                ((e.topic().to_string(), e.partition()), offset)
            })
            .collect())
    };
    let (lows, highs) = if all.count() == 0 {
        (HashMap::new(), HashMap::new())
    } else {
        (ends(Offset::Beginning)?, ends(Offset::End)?)
    };
    let mut marks: BTreeMap<String, Marks> = BTreeMap::new();
    for ((topic, p), high) in &highs {
        let low = lows.get(&(topic.clone(), *p)).copied().unwrap_or(0);
        marks
            .entry(topic.clone())
            .or_default()
            .push((*p, low, *high));
    }

    // Groups: those the cluster lists, and this process's own.
    let mut groups: BTreeMap<(String, String), u64> = BTreeMap::new();
    if let Ok(list) = probe.fetch_group_list(None, ADMIN_TIMEOUT) {
        for g in list.groups() {
            if let Some((group, topic)) = g.name().split_once(':')
                && marks.contains_key(topic)
            {
                groups.insert(
                    (topic.to_string(), group.to_string()),
                    g.members().len() as u64,
                );
            }
        }
    }
    let local: HashMap<(String, String), Vec<_>> = lock(&bus.inner.members)
        .iter()
        .map(|(key, list)| {
            let live: Vec<_> = list
                .iter()
                .filter_map(std::sync::Weak::upgrade)
                .filter(|m| !m.is_closed())
                .collect();
            (key.clone(), live)
        })
        .filter(|(_, live)| !live.is_empty())
        .collect();
    for (key, live) in &local {
        let count = groups.entry(key.clone()).or_default();
        *count = (*count).max(live.len() as u64);
    }

    let mut group_stats = Vec::new();
    let mut depth: HashMap<&str, u64> = HashMap::new();
    for ((topic, group), consumer_count) in &groups {
        let kafka_group = super::kafka_group(topic, group);
        let mut pending = 0;
        if let Some(ps) = marks.get(topic) {
            let reader = bus.group_probe(&kafka_group)?;
            let mut tpl = TopicPartitionList::new();
            for &(p, _, _) in ps {
                tpl.add_partition(topic, p);
            }
            let committed = reader
                .committed_offsets(tpl, ADMIN_TIMEOUT)
                .map_err(kafka_error)?;
            for &(p, low, high) in ps {
                let from = match committed.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o.max(low),
                    _ => low,
                };
                pending += (high - from).max(0) as u64;
            }
        }
        let members = local.get(&(topic.clone(), group.clone()));
        let sum = |f: &dyn Fn(&super::Counters) -> u64| {
            members.map_or(0, |ms| ms.iter().map(|m| f(&m.counters)).sum())
        };
        let (mut in_flight, mut oldest) = (0, None::<u64>);
        for m in members.into_iter().flatten() {
            let (n, age) = m.in_flight();
            in_flight += n;
            oldest = oldest.max(age);
        }
        let entry = depth.entry(topic.as_str()).or_default();
        *entry = (*entry).max(pending);
        group_stats.push(GroupStats {
            consumer_group: group.clone(),
            topic: topic.clone(),
            consumer_count: *consumer_count,
            pending_messages: pending,
            in_flight,
            delivered_total: sum(&|c| c.delivered.load(Ordering::Relaxed)),
            acked_total: sum(&|c| c.acked.load(Ordering::Relaxed)),
            redelivered_total: sum(&|c| c.redelivered.load(Ordering::Relaxed)),
            dead_lettered_total: sum(&|c| c.dead_lettered.load(Ordering::Relaxed)),
            oldest_unacked_age_ms: oldest,
            delivery_rate: 0.0,
            ack_rate: 0.0,
        });
    }

    let published = lock(&bus.inner.published).clone();
    let count = |ps: &Marks| -> (u64, u64) {
        ps.iter().fold((0, 0), |(m, p), &(_, low, high)| {
            (m + (high - low).max(0) as u64, p + high.max(0) as u64)
        })
    };
    let topics = marks
        .iter()
        .filter(|(name, _)| !name.ends_with(".retry"))
        .map(|(name, ps)| {
            let (messages, published_total) = count(ps);
            let dead = marks
                .get(&weir_queue::dead_letter_topic(name))
                .map_or(0, |d| count(d).0);
            TopicStats {
                topic: name.clone(),
                partitions: ps.len() as u32,
                queue_depth: depth.get(name.as_str()).copied().unwrap_or(messages),
                messages,
                bytes: published.get(name).map_or(0, |p| p.bytes),
                dead_letter_count: dead,
                published_total,
                publish_rate: 0.0,
            }
        })
        .collect();
    Ok(StatsResponse {
        topics,
        consumer_groups: group_stats,
    })
}
