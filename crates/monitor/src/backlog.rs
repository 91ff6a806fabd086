//! The samples waiting for the bus: bounded, oldest dropped first.
//!
//! The sampler appends every tick; the publisher takes a chunk from the
//! front, publishes it and only then removes it, so a failed publish loses
//! nothing and is retried. Messages are numbered, so removing a published
//! chunk is right even when the limit dropped some of it meanwhile.

use std::collections::VecDeque;

use weir_bus::Message;

/// What a change of the backlog means for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The limit was reached and the oldest samples began to be dropped.
    StartedDropping,
    /// A publish went through after a burst of drops, which lost this many.
    StoppedDropping(u64),
}

#[derive(Debug)]
pub(crate) struct Backlog {
    queue: VecDeque<Message>,
    /// The number of `queue[0]`.
    front: u64,
    limit: usize,
    /// Dropped in all.
    pub(crate) dropped: u64,
    /// Dropped since the last successful publish.
    burst: u64,
}

impl Backlog {
    pub(crate) fn new(limit: usize) -> Backlog {
        Backlog {
            queue: VecDeque::new(),
            front: 0,
            limit: limit.max(1),
            dropped: 0,
            burst: 0,
        }
    }

    /// Appends messages, dropping the oldest beyond the limit.
    pub(crate) fn push(&mut self, messages: impl IntoIterator<Item = Message>) -> Option<Event> {
        self.queue.extend(messages);
        let over = self.queue.len().saturating_sub(self.limit);
        if over == 0 {
            return None;
        }
        self.queue.drain(..over);
        self.front += over as u64;
        self.dropped += over as u64;
        let first = self.burst == 0;
        self.burst += over as u64;
        first.then_some(Event::StartedDropping)
    }

    /// Up to `max` messages from the front (copies: payloads are shared)
    /// and the number of the first.
    pub(crate) fn peek(&self, max: usize) -> (u64, Vec<Message>) {
        (self.front, self.queue.iter().take(max).cloned().collect())
    }

    /// Removes the `n` messages numbered from `start` on that are still
    /// here, after they were published.
    pub(crate) fn published(&mut self, start: u64, n: usize) -> Option<Event> {
        self.remove(start, n);
        let burst = std::mem::take(&mut self.burst);
        (burst > 0).then_some(Event::StoppedDropping(burst))
    }

    /// Removes messages the bus refused for good, counting them dropped.
    pub(crate) fn refused(&mut self, start: u64, n: usize) {
        self.dropped += self.remove(start, n) as u64;
    }

    /// Drops everything left (at the end, when the bus never came back).
    pub(crate) fn abandon(&mut self) -> usize {
        let n = self.queue.len();
        self.remove(self.front, n);
        self.dropped += n as u64;
        n
    }

    fn remove(&mut self, start: u64, n: usize) -> usize {
        let end = start + n as u64;
        let gone = end.saturating_sub(self.front).min(self.queue.len() as u64) as usize;
        self.queue.drain(..gone);
        self.front += gone as u64;
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Push(usize),
        /// Peek up to this many and publish them.
        Publish(usize),
        /// Peek now, then push this many, then confirm the peeked chunk.
        PublishAcross(usize, usize),
        Refuse(usize),
    }

    /// Runs ops on a backlog of `limit`; checks what is left (as payload
    /// numbers), the dropped count and the events.
    fn check(limit: usize, ops: &[Op], left: &[u32], dropped: u64, events: &[Event]) {
        let mut b = Backlog::new(limit);
        let mut next = 0u32;
        let mut seen = Vec::new();
        let mut push = |b: &mut Backlog, n: usize, seen: &mut Vec<Event>| {
            let msgs: Vec<Message> = (0..n)
                .map(|_| {
                    next += 1;
                    Message::new(next.to_string())
                })
                .collect();
            seen.extend(b.push(msgs));
        };
        for &op in ops {
            match op {
                Op::Push(n) => push(&mut b, n, &mut seen),
                Op::Publish(n) => {
                    let (start, chunk) = b.peek(n);
                    seen.extend(b.published(start, chunk.len()));
                }
                Op::PublishAcross(n, pushed) => {
                    let (start, chunk) = b.peek(n);
                    push(&mut b, pushed, &mut seen);
                    seen.extend(b.published(start, chunk.len()));
                }
                Op::Refuse(n) => {
                    let (start, chunk) = b.peek(n);
                    b.refused(start, chunk.len());
                }
            }
        }
        let got: Vec<u32> = b
            .queue
            .iter()
            .map(|m| std::str::from_utf8(&m.payload).unwrap().parse().unwrap())
            .collect();
        assert_eq!(got, left, "{ops:?}");
        assert_eq!(b.dropped, dropped, "{ops:?}");
        assert_eq!(seen, events, "{ops:?}");
    }

    #[test]
    fn bounded_oldest_dropped_published_removed() {
        use Event::*;
        use Op::*;
        check(10, &[Push(3), Push(2)], &[1, 2, 3, 4, 5], 0, &[]);
        check(10, &[Push(5), Publish(3)], &[4, 5], 0, &[]);
        check(3, &[Push(5)], &[3, 4, 5], 2, &[StartedDropping]);
        // One warning per burst, and its count when the bus is back.
        check(
            3,
            &[Push(4), Push(2), Publish(2), Push(5)],
            &[9, 10, 11],
            6,
            &[StartedDropping, StoppedDropping(3), StartedDropping],
        );
        // The chunk being published was partly dropped meanwhile: only
        // what is left of it goes.
        check(
            4,
            &[Push(4), PublishAcross(3, 2)],
            &[4, 5, 6],
            2,
            &[StartedDropping, StoppedDropping(2)],
        );
        // Entirely dropped meanwhile: nothing newer is removed.
        check(
            2,
            &[Push(2), PublishAcross(2, 2)],
            &[3, 4],
            2,
            &[StartedDropping, StoppedDropping(2)],
        );
        check(10, &[Push(4), Refuse(2)], &[3, 4], 2, &[]);
        check(10, &[Publish(5)], &[], 0, &[]);
    }

    #[test]
    fn abandon_counts_what_is_left() {
        let mut b = Backlog::new(5);
        b.push((0..3).map(|i| Message::new(i.to_string())));
        assert_eq!(b.abandon(), 3);
        assert_eq!((b.queue.len(), b.dropped), (0, 3));
    }
}
