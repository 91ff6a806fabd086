//! A model test: random operations on one topic and one consumer group,
//! applied both to the real queue and to a plain in-memory model, compared
//! after every step. Reopening the queue (close, open) and crashing it (drop
//! without close) are operations too; time is tokio's paused clock.
//!
//! The model follows what `cursor` and `group` do, including that leases
//! expire lazily: a partition's expired leases are handled only when
//! `receive` visits that partition or `stats` runs, so an ack in between
//! still settles the expired lease. A lease that expires below the delivery
//! limit counts as a redelivery; nacks do not.
//!
//! A restart returns every lease and ends every delay but keeps delivery
//! counts, and the model does not care how far the queue had read ahead:
//! a receive hands out as many messages as are ready, stats are exact, and
//! an ack of a done message is "already done" however it was learnt. A
//! message whose last lease was still out at a restart and was its
//! `MAX_DELIVERIES`th delivery is dead-lettered when a receive reaches it,
//! not delivered again. Acking or rejecting a message never delivered is
//! "not delivered" and changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use tokio::time::Instant;
use weir_queue::{Consumer, Delivery, Message, MessageId, Queue, QueueError, Settled};

use crate::{config, member, rules};

const TOPIC: &str = "model";
const DLQ: &str = "model.dlq";
const GROUP: &str = "g";
const PARTITIONS: usize = 2;
const VISIBILITY: Duration = Duration::from_secs(10);
const MAX_DELIVERIES: u32 = 3;
const NACK_DELAY: Duration = Duration::from_secs(5);
const REJECT_DETAIL: &str = "the model says no";

#[derive(Debug, Clone)]
enum Op {
    /// Publish a batch of this many messages.
    Publish(usize),
    /// Receive up to this many, without waiting.
    Receive(usize),
    /// Ack one of the deliveries held now (picked by the number).
    Ack(usize),
    /// Ack a message that is already done.
    AckDone(usize),
    /// Ack, or reject if true, a message that was never delivered.
    Undelivered(usize, bool),
    /// Nack a held delivery, with or without the delay.
    Nack(usize, bool),
    Reject(usize),
    /// Let time pass; `observe` compares stats afterwards, which expires
    /// leases in every partition, so unobserved advances leave expiry lazy.
    Advance {
        secs: u64,
        observe: bool,
    },
    /// Close and reopen the queue.
    Reopen,
    /// Drop the queue without closing it, and reopen.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1..5usize).prop_map(Op::Publish),
        4 => (1..5usize).prop_map(Op::Receive),
        2 => any::<usize>().prop_map(Op::Ack),
        1 => any::<usize>().prop_map(Op::AckDone),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(i, reject)| Op::Undelivered(i, reject)),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(i, delay)| Op::Nack(i, delay)),
        1 => any::<usize>().prop_map(Op::Reject),
        4 => (0..25u64, proptest::bool::weighted(0.4))
            .prop_map(|(secs, observe)| Op::Advance { secs, observe }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_queue_behaves_like_its_model(ops in vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(run(ops));
    }
}

/// 48 cases, or as many as `PROPTEST_CASES` says.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut real = Real::open(dir.path()).await;
    let mut model = Model::default();
    for op in &ops {
        step(&mut real, &mut model, op).await;
    }
    // Drain: receive and ack until everything is done, letting leases held
    // from before the drain expire.
    for _ in 0..100 {
        if model.msgs.values().all(|m| m.state == State::Done) {
            break;
        }
        step(&mut real, &mut model, &Op::Receive(4)).await;
        if model.held.is_empty() {
            let op = Op::Advance {
                secs: VISIBILITY.as_secs() + 1,
                observe: true,
            };
            step(&mut real, &mut model, &op).await;
        }
        while !model.held.is_empty() {
            step(&mut real, &mut model, &Op::Ack(0)).await;
        }
    }
    assert!(
        model.msgs.values().all(|m| m.state == State::Done),
        "drained: {:?}",
        model.msgs
    );
    // Nothing lost: each message was acked once or dead-lettered once (the
    // dead-letter topic was compared with the model after every step).
    for id in model.msgs.keys() {
        assert!(
            model.acked.contains(id) != model.dead.contains_key(id),
            "{id}: acked {}, dead-lettered {}",
            model.acked.contains(id),
            model.dead.contains_key(id)
        );
    }
    // And nothing comes back after a restart.
    step(&mut real, &mut model, &Op::Reopen).await;
    step(&mut real, &mut model, &Op::Receive(4)).await;
    assert!(model.held.is_empty());
    real.close().await;
}

/// The queue under test, with its one consumer.
struct Real<'a> {
    dir: &'a Path,
    queue: Option<Queue>,
    consumer: Option<Consumer>,
    start: Instant,
}

impl<'a> Real<'a> {
    async fn open(dir: &'a Path) -> Real<'a> {
        let mut real = Real {
            dir,
            queue: None,
            consumer: None,
            start: Instant::now(),
        };
        real.start(false).await;
        real
    }

    /// Opens the queue and subscribes. After a crash the old queue may still
    /// hold the directory's lock for a moment: dropping a `Queue` does not
    /// wait for a maintenance run that its background task started on the
    /// blocking pool (in a real crash the process is gone, lock and all).
    async fn start(&mut self, after_crash: bool) {
        let mut tries = 0;
        let queue = loop {
            match Queue::open(config(self.dir)).await {
                Ok(queue) => break queue,
                Err(QueueError::Locked { .. }) if after_crash && tries < 5_000 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("open the queue: {e}"),
            }
        };
        let consumer = queue
            .subscribe(TOPIC, GROUP, member("c", rules(VISIBILITY, MAX_DELIVERIES)))
            .expect("subscribe");
        self.queue = Some(queue);
        self.consumer = Some(consumer);
    }

    async fn close(&mut self) {
        self.consumer = None;
        self.queue
            .take()
            .unwrap()
            .close()
            .await
            .expect("close the queue");
    }

    fn queue(&self) -> &Queue {
        self.queue.as_ref().unwrap()
    }

    fn consumer(&self) -> &Consumer {
        self.consumer.as_ref().unwrap()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    Leased {
        until: Duration,
    },
    Delayed {
        until: Duration,
    },
    /// Acked or dead-lettered.
    Done,
}

#[derive(Debug)]
struct Msg {
    payload: String,
    deliveries: u32,
    state: State,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DeadLetter {
    reason: String,
    deliveries: u32,
    payload: String,
    detail: Option<String>,
}

/// Counters the queue keeps since it was opened.
#[derive(Debug, Default)]
struct Counters {
    published: u64,
    delivered: u64,
    acked: u64,
    redelivered: u64,
    dead_lettered: u64,
}

#[derive(Debug, Default)]
struct Model {
    /// Time since the start, on the paused clock.
    now: Duration,
    msgs: BTreeMap<MessageId, Msg>,
    ends: [u64; PARTITIONS],
    /// Batches published since the queue was opened: picks the partition.
    sticky: usize,
    /// The partition `receive` visits first; it moves on every call.
    next_partition: usize,
    /// Deliveries received and not yet settled by the test, oldest first;
    /// one message may be here twice (its first lease expired).
    held: Vec<MessageId>,
    dead: BTreeMap<MessageId, DeadLetter>,
    acked: BTreeSet<MessageId>,
    counters: Counters,
    payloads: u64,
}

impl Model {
    /// What `Cursor::expire` does to one partition: an expired lease below
    /// the delivery limit is a redelivery, one at the limit a dead letter.
    fn expire(&mut self, partition: u32) {
        let now = self.now;
        let mut dead = Vec::new();
        for (id, m) in self.msgs.range_mut(range(partition)) {
            match m.state {
                State::Leased { until } if until <= now => {
                    if m.deliveries >= MAX_DELIVERIES {
                        dead.push(*id);
                    } else {
                        m.state = State::Ready;
                        self.counters.redelivered += 1;
                    }
                }
                State::Delayed { until } if until <= now => m.state = State::Ready,
                _ => {}
            }
        }
        for id in dead {
            self.bury(id, "delivery_limit", None);
        }
    }

    fn expire_all(&mut self) {
        for p in 0..PARTITIONS as u32 {
            self.expire(p);
        }
    }

    fn bury(&mut self, id: MessageId, reason: &str, detail: Option<&str>) {
        let m = self.msgs.get_mut(&id).unwrap();
        assert_ne!(m.state, State::Done);
        m.state = State::Done;
        let letter = DeadLetter {
            reason: reason.to_string(),
            deliveries: m.deliveries,
            payload: m.payload.clone(),
            detail: detail.map(str::to_string),
        };
        assert!(self.dead.insert(id, letter).is_none());
        self.counters.dead_lettered += 1;
    }

    /// A delivery the test holds, picked by `pick`, given up by the test.
    fn take_held(&mut self, pick: usize) -> Option<MessageId> {
        (!self.held.is_empty()).then(|| self.held.remove(pick % self.held.len()))
    }

    /// A restart returns every lease and ends every delay; delivery counts
    /// are kept, so a message may be ready with `MAX_DELIVERIES` deliveries
    /// (its last lease was out at the restart): `receive` dead-letters it.
    fn restart(&mut self) {
        for m in self.msgs.values_mut() {
            if m.state != State::Done {
                m.state = State::Ready;
            }
        }
        self.held.clear();
        self.sticky = 0;
        self.next_partition = 0;
        self.counters = Counters::default();
    }

    fn ready(&self, partition: u32) -> Vec<u64> {
        self.msgs
            .range(range(partition))
            .filter(|(_, m)| m.state == State::Ready)
            .map(|(id, _)| id.offset)
            .collect()
    }

    fn depth(&self) -> u64 {
        self.msgs
            .values()
            .filter(|m| m.state != State::Done)
            .count() as u64
    }

    fn in_flight(&self) -> u64 {
        let leased = |m: &&Msg| matches!(m.state, State::Leased { .. });
        self.msgs.values().filter(leased).count() as u64
    }

    /// The lowest offset not done, per partition.
    fn committed(&self) -> Vec<u64> {
        (0..PARTITIONS as u32)
            .map(|p| {
                self.msgs
                    .range(range(p))
                    .find(|(_, m)| m.state != State::Done)
                    .map_or(self.ends[p as usize], |(id, _)| id.offset)
            })
            .collect()
    }
}

fn range(partition: u32) -> std::ops::RangeInclusive<MessageId> {
    MessageId {
        partition,
        offset: 0,
    }..=MessageId {
        partition,
        offset: u64::MAX,
    }
}

async fn step(real: &mut Real<'_>, model: &mut Model, op: &Op) {
    let mut observe = true;
    match *op {
        Op::Publish(n) => publish(real, model, n).await,
        Op::Receive(max) => receive(real, model, max).await,
        Op::Ack(pick) => {
            if let Some(id) = model.take_held(pick) {
                ack(real, model, id).await;
            }
        }
        Op::AckDone(pick) => ack_done(real, model, pick).await,
        Op::Undelivered(pick, reject) => undelivered(real, model, pick, reject).await,
        Op::Nack(pick, delayed) => {
            if let Some(id) = model.take_held(pick) {
                let delay = if delayed { NACK_DELAY } else { Duration::ZERO };
                nack(real, model, id, delay).await;
            }
        }
        Op::Reject(pick) => {
            if let Some(id) = model.take_held(pick) {
                reject(real, model, id).await;
            }
        }
        Op::Advance { secs, observe: o } => {
            tokio::time::advance(Duration::from_secs(secs)).await;
            model.now += Duration::from_secs(secs);
            observe = o;
        }
        Op::Reopen => {
            real.close().await;
            real.start(false).await;
            model.restart();
        }
        Op::Crash => {
            real.consumer = None;
            real.queue = None;
            real.start(true).await;
            model.restart();
        }
    }
    assert_eq!(
        real.start.elapsed(),
        model.now,
        "the paused clock moved by itself"
    );
    check_dead_letters(real, model);
    if observe {
        check_stats(real, model);
    }
}

/// An ack settles the message whatever became of the delivery: acks go by
/// message id, not by lease.
async fn ack(real: &Real<'_>, model: &mut Model, id: MessageId) {
    let m = model.msgs.get_mut(&id).unwrap();
    let want = if m.state == State::Done {
        Settled::AlreadyDone
    } else {
        m.state = State::Done;
        assert!(model.acked.insert(id), "{id} acked twice");
        model.counters.acked += 1;
        Settled::Done
    };
    let got = real.consumer().ack(&[id]).await.unwrap();
    assert_eq!(got, [want], "ack {id}");
}

async fn ack_done(real: &Real<'_>, model: &Model, pick: usize) {
    let done: Vec<MessageId> = model
        .msgs
        .iter()
        .filter(|(_, m)| m.state == State::Done)
        .map(|(id, _)| *id)
        .collect();
    if done.is_empty() {
        return;
    }
    let id = done[pick % done.len()];
    let got = real.consumer().ack(&[id]).await.unwrap();
    assert_eq!(got, [Settled::AlreadyDone], "ack of {id}, which is done");
}

/// Acking or rejecting a message no receive has handed out, whether the
/// queue has read it ahead or not, is refused and changes nothing.
async fn undelivered(real: &Real<'_>, model: &Model, pick: usize, reject: bool) {
    let never: Vec<MessageId> = model
        .msgs
        .iter()
        .filter(|(_, m)| m.deliveries == 0 && m.state != State::Done)
        .map(|(id, _)| *id)
        .collect();
    if never.is_empty() {
        return;
    }
    let id = never[pick % never.len()];
    let got = if reject {
        real.consumer().reject(&[id], REJECT_DETAIL).await.unwrap()
    } else {
        real.consumer().ack(&[id]).await.unwrap()
    };
    let how = if reject { "reject" } else { "ack" };
    assert_eq!(
        got,
        [Settled::NotDelivered],
        "{how} of {id}, never delivered"
    );
}

/// A nack gives back the current lease, even if it is another delivery's;
/// at the delivery limit it dead-letters the message.
async fn nack(real: &Real<'_>, model: &mut Model, id: MessageId, delay: Duration) {
    let m = model.msgs.get_mut(&id).unwrap();
    let want = match m.state {
        State::Done => Settled::AlreadyDone,
        State::Ready | State::Delayed { .. } => Settled::NotLeased,
        State::Leased { .. } if m.deliveries >= MAX_DELIVERIES => {
            model.bury(id, "delivery_limit", None);
            Settled::Done
        }
        State::Leased { .. } => {
            m.state = if delay.is_zero() {
                State::Ready
            } else {
                State::Delayed {
                    until: model.now + delay,
                }
            };
            Settled::Done
        }
    };
    let got = real.consumer().nack(&[id], delay).await.unwrap();
    assert_eq!(got, [want], "nack {id}");
}

async fn reject(real: &Real<'_>, model: &mut Model, id: MessageId) {
    let state = model.msgs[&id].state;
    let want = if state == State::Done {
        Settled::AlreadyDone
    } else {
        model.bury(id, "rejected", Some(REJECT_DETAIL));
        Settled::Done
    };
    let got = real.consumer().reject(&[id], REJECT_DETAIL).await.unwrap();
    assert_eq!(got, [want], "reject {id}");
}

async fn publish(real: &mut Real<'_>, model: &mut Model, n: usize) {
    let payloads: Vec<String> = (0..n)
        .map(|i| format!("m{}", model.payloads + i as u64))
        .collect();
    model.payloads += n as u64;
    let batch = payloads.iter().map(|p| Message::new(p.clone())).collect();
    let published = real.queue().publish_batch(TOPIC, batch).await.unwrap();
    // An unkeyed batch goes whole to one partition, round-robin by batch.
    let p = model.sticky % PARTITIONS;
    model.sticky += 1;
    let ids: Vec<MessageId> = published.iter().map(|p| p.id).collect();
    let want: Vec<MessageId> = (0..n as u64)
        .map(|k| MessageId {
            partition: p as u32,
            offset: model.ends[p] + k,
        })
        .collect();
    assert_eq!(ids, want, "ids of a published batch");
    model.ends[p] += n as u64;
    model.counters.published += n as u64;
    for (id, payload) in ids.into_iter().zip(payloads) {
        let m = Msg {
            payload,
            deliveries: 0,
            state: State::Ready,
        };
        model.msgs.insert(id, m);
    }
}

/// `Group::try_take`: from the partition whose turn it is, then the next
/// while fewer than `max` were taken; in each, expired leases return first,
/// then the ready messages are leased lowest offset first, as many as are
/// ready up to what is still wanted. A ready message already at the delivery
/// limit (only after a restart) is dead-lettered where it would have been
/// leased, and does not count as taken.
async fn receive(real: &mut Real<'_>, model: &mut Model, max: usize) {
    let got: Vec<Delivery> = real.consumer().receive(max, Duration::ZERO).await.unwrap();
    let ids: BTreeSet<MessageId> = got.iter().map(|d| d.id).collect();
    assert_eq!(
        ids.len(),
        got.len(),
        "one receive returned a message twice: {got:?}"
    );
    let mut taken = 0;
    for k in 0..PARTITIONS {
        let p = ((model.next_partition + k) % PARTITIONS) as u32;
        let mine: Vec<&Delivery> = got.iter().filter(|d| d.id.partition == p).collect();
        if taken >= max {
            assert!(mine.is_empty(), "partition {p} was not visited: {got:?}");
            continue;
        }
        model.expire(p);
        let mut want = Vec::new();
        for offset in model.ready(p) {
            if want.len() == max - taken {
                break;
            }
            let id = MessageId {
                partition: p,
                offset,
            };
            if model.msgs[&id].deliveries >= MAX_DELIVERIES {
                model.bury(id, "delivery_limit", None);
            } else {
                want.push(offset);
            }
        }
        let mut offsets: Vec<u64> = mine.iter().map(|d| d.id.offset).collect();
        offsets.sort_unstable();
        assert_eq!(
            offsets,
            want,
            "partition {p}: the lowest ready offsets, up to {}",
            max - taken
        );
        for d in mine {
            let m = model.msgs.get_mut(&d.id).unwrap();
            assert_eq!(
                &d.record.payload[..],
                m.payload.as_bytes(),
                "payload of {}",
                d.id
            );
            assert_eq!(
                d.delivery_count,
                m.deliveries + 1,
                "delivery count of {}",
                d.id
            );
            assert_eq!(&*d.topic, TOPIC);
            assert!(m.deliveries < MAX_DELIVERIES, "{} over the limit", d.id);
            m.deliveries += 1;
            m.state = State::Leased {
                until: model.now + VISIBILITY,
            };
            model.held.push(d.id);
        }
        taken += want.len();
    }
    assert_eq!(taken, got.len());
    model.counters.delivered += got.len() as u64;
    model.next_partition = (model.next_partition + 1) % PARTITIONS;
}

fn check_stats(real: &Real<'_>, model: &mut Model) {
    let stats = real.queue().stats().unwrap();
    model.expire_all();
    let g = stats
        .groups
        .iter()
        .find(|g| g.topic == TOPIC && g.group == GROUP)
        .expect("the group's stats");
    let t = stats
        .topics
        .iter()
        .find(|t| t.topic == TOPIC)
        .expect("the topic's stats");
    assert_eq!(t.end_offsets, model.ends, "end offsets");
    assert_eq!(
        t.published_total, model.counters.published,
        "published since open"
    );
    assert_eq!(g.depth, model.depth(), "depth: messages not done");
    assert_eq!(g.in_flight, model.in_flight(), "in flight: messages leased");
    assert_eq!(g.committed, model.committed(), "committed offsets");
    assert_eq!(g.consumers, 1);
    let c = &model.counters;
    assert_eq!(g.delivered_total, c.delivered, "delivered since open");
    assert_eq!(g.acked_total, c.acked, "acked since open");
    assert_eq!(
        g.redelivered_total, c.redelivered,
        "redelivered since open: leases that expired"
    );
    assert_eq!(
        g.dead_lettered_total, c.dead_lettered,
        "dead-lettered since open"
    );
    check_dead_letters(real, model);
}

fn check_dead_letters(real: &Real<'_>, model: &Model) {
    let records = real.queue().read(DLQ, 0, 0, 1 << 20).unwrap();
    let mut dead = BTreeMap::new();
    for r in records {
        let r = r.record;
        let header = |name: &str| {
            r.header(name)
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
        };
        let number = |name: &str| header(name).unwrap().parse::<u64>().unwrap();
        assert_eq!(header("x-weir-origin-topic").as_deref(), Some(TOPIC));
        assert_eq!(header("x-weir-origin-group").as_deref(), Some(GROUP));
        let id = MessageId {
            partition: number("x-weir-origin-partition") as u32,
            offset: number("x-weir-origin-offset"),
        };
        let letter = DeadLetter {
            reason: header("x-weir-dlq-reason").unwrap(),
            deliveries: number("x-weir-delivery-count") as u32,
            payload: String::from_utf8(r.payload.to_vec()).unwrap(),
            detail: header("x-weir-dlq-detail"),
        };
        assert!(
            dead.insert(id, letter).is_none(),
            "{id} dead-lettered twice"
        );
    }
    assert_eq!(dead, model.dead, "the dead-letter topic");
}
