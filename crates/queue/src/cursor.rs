//! The delivery state of one partition for one consumer group: a pure state
//! machine. It does no I/O and reads no clock — the caller passes `now` and
//! performs the actions it returns (dead-lettering, journaling).
//!
//! The cursor keeps a window of slots for the offsets
//! `committed..fetched`: every offset below `committed` is done (acked or
//! dead-lettered); inside the window each slot is ready, delayed (nacked with
//! a delay), leased to a consumer until a deadline, dying (on its way to the
//! dead-letter topic) or done. `committed` moves only over done slots.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use weir_log::{Record, StoredRecord};

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Ready,
    Delayed,
    Leased {
        deadline: Instant,
        consumer: Arc<str>,
    },
    Dying,
    Done,
}

#[derive(Debug)]
struct Slot {
    state: State,
    delivery_count: u32,
    record: Option<Record>,
}

impl Slot {
    /// The record of a slot not yet done (done slots drop theirs).
    fn pending_record(&self) -> Record {
        self.record
            .clone()
            .expect("a slot not yet done holds its record")
    }
}

/// Why a message goes to the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// Delivered `max_deliveries` times without an ack.
    DeliveryLimit,
    /// A consumer rejected it.
    Rejected,
}

impl DeadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::DeliveryLimit => "delivery_limit",
            DeadReason::Rejected => "rejected",
        }
    }
}

/// A message the caller must append to the dead-letter topic, then report
/// with [`Cursor::dead_lettered`] (or [`Cursor::release`] if that failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeadLetter {
    pub(crate) offset: u64,
    pub(crate) record: Record,
    pub(crate) delivery_count: u32,
    pub(crate) reason: DeadReason,
}

/// A message handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leased {
    pub(crate) offset: u64,
    pub(crate) record: Record,
    pub(crate) delivery_count: u32,
}

/// What became of an ack, nack or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The message was settled by this call.
    Done,
    /// It had already been acked or dead-lettered: nothing changed.
    AlreadyDone,
    /// The group has not delivered this offset (yet, or at all).
    NotDelivered,
    /// A nack for a message that is not leased right now (its lease expired
    /// and it is waiting for, or already out on, another delivery).
    NotLeased,
}

/// Limits a group applies to every partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rules {
    pub(crate) max_deliveries: u32,
    pub(crate) visibility_timeout: Duration,
}

#[derive(Debug, Default)]
pub(crate) struct Cursor {
    committed: u64,
    fetched: u64,
    slots: VecDeque<Slot>,
    ready: BinaryHeap<Reverse<u64>>,
    delayed: BinaryHeap<Reverse<(Instant, u64)>>,
    leases: BinaryHeap<Reverse<(Instant, u64, u32)>>,
    in_flight: usize,
    /// From the journal, for offsets not fetched yet: already done.
    known_done: BTreeSet<u64>,
    /// From the journal, for offsets not fetched yet: deliveries so far.
    known_counts: HashMap<u64, u32>,
}

impl Cursor {
    /// A cursor resumed from what the journal recorded.
    pub(crate) fn restore(
        committed: u64,
        done: BTreeSet<u64>,
        counts: HashMap<u64, u32>,
    ) -> Cursor {
        Cursor {
            committed,
            fetched: committed,
            known_done: done,
            known_counts: counts,
            ..Cursor::default()
        }
    }

    pub(crate) fn committed(&self) -> u64 {
        self.committed
    }

    pub(crate) fn fetched(&self) -> u64 {
        self.fetched
    }

    pub(crate) fn window(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Offsets above the committed point that are done: in the window, or
    /// known from the journal and not read back yet.
    pub(crate) fn done_above_committed(&self) -> usize {
        self.slots.iter().filter(|s| s.state == State::Done).count() + self.known_done.len()
    }

    /// Timestamp of the oldest message not yet done, if it is in the window.
    pub(crate) fn oldest_pending_ts(&self) -> Option<i64> {
        self.slots
            .iter()
            .find(|s| s.state != State::Done)
            .and_then(|s| s.record.as_ref())
            .map(|r| r.timestamp)
    }

    /// Takes newly read records into the window. Records must start at
    /// `fetched` or, when retention removed what was there, later.
    pub(crate) fn fill(&mut self, records: Vec<StoredRecord>) {
        for r in records {
            if r.offset < self.fetched {
                continue;
            }
            if r.offset > self.fetched {
                // Retention deleted offsets this group never finished, the
                // whole window with them: continue from what is left.
                let done = std::mem::take(&mut self.known_done);
                let counts = std::mem::take(&mut self.known_counts);
                *self = Cursor::restore(r.offset, done, counts);
            }
            let offset = r.offset;
            let delivery_count = self.known_counts.remove(&offset).unwrap_or(0);
            let slot = if self.known_done.remove(&offset) {
                Slot {
                    state: State::Done,
                    delivery_count,
                    record: None,
                }
            } else {
                self.ready.push(Reverse(offset));
                Slot {
                    state: State::Ready,
                    delivery_count,
                    record: Some(r.record),
                }
            };
            self.slots.push_back(slot);
            self.fetched += 1;
        }
        self.advance();
    }

    /// Returns expired leases and due delays to the ready set. Leases of
    /// messages at their delivery limit become dead letters.
    pub(crate) fn expire(&mut self, now: Instant, rules: Rules) -> (Vec<DeadLetter>, u64) {
        let mut dead = Vec::new();
        let mut redelivered = 0;
        while let Some(&Reverse((deadline, offset, count))) = self.leases.peek() {
            if deadline > now {
                break;
            }
            self.leases.pop();
            let Some(i) = self.index(offset) else {
                continue;
            };
            let slot = &mut self.slots[i];
            let live = matches!(&slot.state, State::Leased { deadline: d, .. } if *d == deadline)
                && slot.delivery_count == count;
            if !live {
                continue;
            }
            self.in_flight -= 1;
            if slot.delivery_count >= rules.max_deliveries {
                slot.state = State::Dying;
                dead.push(dead_letter(offset, slot, DeadReason::DeliveryLimit));
            } else {
                slot.state = State::Ready;
                self.ready.push(Reverse(offset));
                redelivered += 1;
            }
        }
        while let Some(&Reverse((due, offset))) = self.delayed.peek() {
            if due > now {
                break;
            }
            self.delayed.pop();
            if let Some(i) = self.index(offset)
                && self.slots[i].state == State::Delayed
            {
                self.slots[i].state = State::Ready;
                self.ready.push(Reverse(offset));
            }
        }
        (dead, redelivered)
    }

    /// Leases up to `max` ready messages to `consumer`, lowest offset first.
    /// A ready message already at the delivery limit goes to `dead` instead.
    pub(crate) fn take(
        &mut self,
        now: Instant,
        max: usize,
        consumer: &Arc<str>,
        rules: Rules,
        dead: &mut Vec<DeadLetter>,
    ) -> Vec<Leased> {
        let mut out = Vec::new();
        let deadline = now + rules.visibility_timeout;
        while out.len() < max {
            let Some(Reverse(offset)) = self.ready.pop() else {
                break;
            };
            let Some(i) = self.index(offset) else {
                continue;
            };
            let slot = &mut self.slots[i];
            if slot.state != State::Ready {
                continue;
            }
            if slot.delivery_count >= rules.max_deliveries {
                // Only after a restart: the journal kept a count that is
                // already at the limit, so this delivery would exceed it.
                slot.state = State::Dying;
                dead.push(dead_letter(offset, slot, DeadReason::DeliveryLimit));
                continue;
            }
            slot.delivery_count += 1;
            slot.state = State::Leased {
                deadline,
                consumer: Arc::clone(consumer),
            };
            self.leases
                .push(Reverse((deadline, offset, slot.delivery_count)));
            self.in_flight += 1;
            out.push(Leased {
                offset,
                record: slot.pending_record(),
                delivery_count: slot.delivery_count,
            });
        }
        out
    }

    /// Marks a message done, from any state but dying.
    pub(crate) fn ack(&mut self, offset: u64) -> Settled {
        let Some(i) = self.index(offset) else {
            // Delivered before a restart and not read back yet: the ack
            // still counts.
            if self.known_counts.remove(&offset).is_some() {
                self.known_done.insert(offset);
                return Settled::Done;
            }
            return self.outside(offset);
        };
        let slot = &mut self.slots[i];
        match slot.state {
            State::Done | State::Dying => return Settled::AlreadyDone,
            State::Ready if slot.delivery_count == 0 => return Settled::NotDelivered,
            State::Leased { .. } => self.in_flight -= 1,
            // A late ack of an expired lease: the work was done.
            State::Ready | State::Delayed => {}
        }
        slot.state = State::Done;
        slot.record = None;
        self.advance();
        Settled::Done
    }

    /// Gives a leased message back, to be delivered again after `delay`; at
    /// the delivery limit it becomes a dead letter instead.
    pub(crate) fn nack(
        &mut self,
        offset: u64,
        delay: Duration,
        now: Instant,
        rules: Rules,
    ) -> (Settled, Option<DeadLetter>) {
        let Some(i) = self.index(offset) else {
            return (self.outside(offset), None);
        };
        let slot = &mut self.slots[i];
        match slot.state {
            State::Leased { .. } => {}
            State::Done | State::Dying => return (Settled::AlreadyDone, None),
            State::Ready if slot.delivery_count == 0 => return (Settled::NotDelivered, None),
            State::Ready | State::Delayed => return (Settled::NotLeased, None),
        }
        self.in_flight -= 1;
        if slot.delivery_count >= rules.max_deliveries {
            slot.state = State::Dying;
            return (
                Settled::Done,
                Some(dead_letter(offset, slot, DeadReason::DeliveryLimit)),
            );
        }
        if delay.is_zero() {
            slot.state = State::Ready;
            self.ready.push(Reverse(offset));
        } else {
            slot.state = State::Delayed;
            self.delayed.push(Reverse((now + delay, offset)));
        }
        (Settled::Done, None)
    }

    /// Sends a message straight to the dead-letter topic.
    pub(crate) fn reject(&mut self, offset: u64) -> (Settled, Option<DeadLetter>) {
        let Some(i) = self.index(offset) else {
            return (self.outside(offset), None);
        };
        let slot = &mut self.slots[i];
        match slot.state {
            State::Done | State::Dying => return (Settled::AlreadyDone, None),
            State::Ready if slot.delivery_count == 0 => return (Settled::NotDelivered, None),
            State::Leased { .. } => self.in_flight -= 1,
            State::Ready | State::Delayed => {}
        }
        slot.state = State::Dying;
        (
            Settled::Done,
            Some(dead_letter(offset, slot, DeadReason::Rejected)),
        )
    }

    /// The dead letter for `offset` is durable: the message is done.
    pub(crate) fn dead_lettered(&mut self, offset: u64) {
        if let Some(i) = self.index(offset) {
            let slot = &mut self.slots[i];
            if slot.state == State::Dying {
                slot.state = State::Done;
                slot.record = None;
                self.advance();
            }
        }
    }

    /// Dead-lettering `offset` failed: deliver it again instead.
    pub(crate) fn release(&mut self, offset: u64) {
        if let Some(i) = self.index(offset)
            && self.slots[i].state == State::Dying
        {
            self.slots[i].state = State::Ready;
            self.ready.push(Reverse(offset));
        }
    }

    /// The next moment a lease expires or a delay ends.
    pub(crate) fn next_wakeup(&self) -> Option<Instant> {
        let lease = self.leases.peek().map(|Reverse((d, _, _))| *d);
        let delay = self.delayed.peek().map(|Reverse((d, _))| *d);
        match (lease, delay) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Forgets everything and continues from `offset`.
    pub(crate) fn seek(&mut self, offset: u64) {
        *self = Cursor {
            committed: offset,
            fetched: offset,
            ..Cursor::default()
        };
    }

    /// Offsets done but above the committed point, and delivery counts of
    /// pending ones: what a journal snapshot must keep.
    pub(crate) fn snapshot(&self) -> (u64, Vec<u64>, Vec<(u64, u32)>) {
        let mut done: Vec<u64> = self.known_done.iter().copied().collect();
        let mut counts: Vec<(u64, u32)> = self.known_counts.iter().map(|(&o, &c)| (o, c)).collect();
        for (i, slot) in self.slots.iter().enumerate() {
            let offset = self.committed + i as u64;
            if slot.state == State::Done {
                done.push(offset);
            } else if slot.delivery_count > 0 {
                counts.push((offset, slot.delivery_count));
            }
        }
        done.sort_unstable();
        counts.sort_unstable();
        (self.committed, done, counts)
    }

    fn index(&self, offset: u64) -> Option<usize> {
        (offset >= self.committed && offset < self.fetched)
            .then(|| (offset - self.committed) as usize)
    }

    /// The answer for an offset outside the window. One delivered before a
    /// restart and not read back yet is not leased: nack and reject wait for
    /// its next delivery.
    fn outside(&self, offset: u64) -> Settled {
        if offset < self.committed || self.known_done.contains(&offset) {
            Settled::AlreadyDone
        } else if self.known_counts.contains_key(&offset) {
            Settled::NotLeased
        } else {
            Settled::NotDelivered
        }
    }

    fn advance(&mut self) {
        while self.slots.front().is_some_and(|s| s.state == State::Done) {
            self.slots.pop_front();
            self.committed += 1;
        }
        if self.slots.is_empty() {
            self.ready.clear();
        }
    }
}

fn dead_letter(offset: u64, slot: &Slot, reason: DeadReason) -> DeadLetter {
    DeadLetter {
        offset,
        record: slot.pending_record(),
        delivery_count: slot.delivery_count,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        max_deliveries: 3,
        visibility_timeout: Duration::from_secs(30),
    };

    fn filled(n: u64) -> Cursor {
        let mut c = Cursor::default();
        c.fill(records(0..n));
        c
    }

    fn consumer() -> Arc<str> {
        Arc::from("c1")
    }

    fn take(c: &mut Cursor, now: Instant, max: usize) -> Vec<Leased> {
        c.take(now, max, &consumer(), RULES, &mut Vec::new())
    }

    fn records(offsets: std::ops::Range<u64>) -> Vec<StoredRecord> {
        offsets
            .map(|offset| StoredRecord {
                offset,
                record: Record::new(offset as i64, format!("m{offset}")),
            })
            .collect()
    }

    #[test]
    fn committed_moves_only_over_done_offsets() {
        let mut c = filled(5);
        let now = Instant::now();
        let got: Vec<u64> = take(&mut c, now, 5).iter().map(|l| l.offset).collect();
        assert_eq!(got, [0, 1, 2, 3, 4]);
        let steps: &[(u64, Settled, u64)] = &[
            (1, Settled::Done, 0),
            (3, Settled::Done, 0),
            (0, Settled::Done, 2),
            (0, Settled::AlreadyDone, 2),
            (2, Settled::Done, 4),
            (9, Settled::NotDelivered, 4),
            (4, Settled::Done, 5),
        ];
        for &(offset, want, committed) in steps {
            assert_eq!(c.ack(offset), want, "ack {offset}");
            assert_eq!(c.committed(), committed, "after ack {offset}");
        }
        assert_eq!(c.in_flight(), 0);
        assert_eq!(c.window(), 0);
    }

    #[test]
    fn an_unacked_lease_returns_after_the_visibility_timeout() {
        let mut c = filled(1);
        let t0 = Instant::now();
        assert_eq!(take(&mut c, t0, 1).len(), 1);
        assert!(take(&mut c, t0, 1).is_empty());
        assert_eq!(c.next_wakeup(), Some(t0 + RULES.visibility_timeout));
        let (dead, redelivered) = c.expire(t0 + Duration::from_secs(29), RULES);
        assert!(dead.is_empty() && redelivered == 0);
        let (dead, redelivered) = c.expire(t0 + RULES.visibility_timeout, RULES);
        assert!(dead.is_empty());
        assert_eq!(redelivered, 1);
        let again = take(&mut c, t0 + RULES.visibility_timeout, 1);
        assert_eq!(again[0].delivery_count, 2);
    }

    #[test]
    fn the_delivery_limit_turns_a_message_into_a_dead_letter() {
        let mut c = filled(1);
        let mut now = Instant::now();
        for round in 1..=RULES.max_deliveries {
            let got = take(&mut c, now, 1);
            assert_eq!(got[0].delivery_count, round);
            now += RULES.visibility_timeout;
            let (dead, _) = c.expire(now, RULES);
            if round < RULES.max_deliveries {
                assert!(dead.is_empty());
            } else {
                assert_eq!(dead.len(), 1);
                assert_eq!(dead[0].reason, DeadReason::DeliveryLimit);
                assert_eq!(dead[0].delivery_count, 3);
            }
        }
        assert_eq!(c.committed(), 0, "dying is not done yet");
        c.dead_lettered(0);
        assert_eq!(c.committed(), 1);
    }

    #[test]
    fn nack_with_delay_waits_and_nack_at_the_limit_dead_letters() {
        let mut c = filled(1);
        let t0 = Instant::now();
        take(&mut c, t0, 1);
        let (s, dead) = c.nack(0, Duration::from_secs(5), t0, RULES);
        assert_eq!((s, dead), (Settled::Done, None));
        assert!(take(&mut c, t0 + Duration::from_secs(4), 1).is_empty());
        c.expire(t0 + Duration::from_secs(5), RULES);
        assert_eq!(take(&mut c, t0 + Duration::from_secs(5), 1).len(), 1);
        assert_eq!(c.nack(0, Duration::ZERO, t0, RULES).0, Settled::Done);
        take(&mut c, t0, 1);
        let (_, dead) = c.nack(0, Duration::ZERO, t0, RULES);
        assert_eq!(dead.map(|d| d.reason), Some(DeadReason::DeliveryLimit));
        assert_eq!(c.nack(0, Duration::ZERO, t0, RULES).0, Settled::AlreadyDone);
    }

    #[test]
    fn reject_and_failed_dead_letter_release() {
        let mut c = filled(2);
        let t0 = Instant::now();
        take(&mut c, t0, 2);
        let (s, dead) = c.reject(1);
        assert_eq!(s, Settled::Done);
        assert_eq!(dead.unwrap().reason, DeadReason::Rejected);
        assert_eq!(c.in_flight(), 1);
        c.release(1);
        assert_eq!(take(&mut c, t0, 5)[0].offset, 1);
        assert_eq!(
            c.nack(5, Duration::ZERO, t0, RULES).0,
            Settled::NotDelivered
        );
    }

    #[test]
    fn restore_skips_done_offsets_and_keeps_counts() {
        let mut c = Cursor::restore(2, BTreeSet::from([3]), HashMap::from([(4, 2)]));
        c.fill(records(2..6));
        let got: Vec<(u64, u32)> = take(&mut c, Instant::now(), 10)
            .iter()
            .map(|l| (l.offset, l.delivery_count))
            .collect();
        assert_eq!(got, [(2, 1), (4, 3), (5, 1)]);
        let (committed, done, counts) = c.snapshot();
        assert_eq!((committed, done), (2, vec![3]));
        assert_eq!(counts, [(2, 1), (4, 3), (5, 1)]);
    }

    #[test]
    fn settling_before_the_window_reaches_a_restored_offset() {
        let mut c = Cursor::restore(0, BTreeSet::new(), HashMap::from([(1, 1), (2, 1)]));
        let t0 = Instant::now();
        assert_eq!(
            c.ack(1),
            Settled::Done,
            "an ack of a pre-restart delivery counts"
        );
        assert_eq!(c.ack(1), Settled::AlreadyDone);
        assert_eq!(c.nack(2, Duration::ZERO, t0, RULES).0, Settled::NotLeased);
        assert_eq!(c.ack(3), Settled::NotDelivered);
        c.fill(records(0..4));
        assert_eq!(
            c.nack(3, Duration::ZERO, t0, RULES).0,
            Settled::NotDelivered
        );
        let got: Vec<u64> = take(&mut c, t0, 10).iter().map(|l| l.offset).collect();
        assert_eq!(got, [0, 2, 3], "the acked offset is skipped");
    }

    #[test]
    fn a_gap_left_by_retention_is_skipped() {
        let mut c = Cursor::default();
        c.fill(records(10..11));
        assert_eq!(c.committed(), 10);
        assert_eq!(take(&mut c, Instant::now(), 5)[0].offset, 10);
    }
}
