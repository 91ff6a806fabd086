//! The consumer-group journal: what a group has delivered and finished,
//! kept in a `weir-log` of its own so it survives restarts.
//!
//! Each journal record holds one event, little-endian:
//!
//! ```text
//! 1 Delivered  u32 partition, u32 n, n × (u64 first, u32 len, u32 count)
//! 2 Done       u32 partition, u32 n, n × (u64 first, u32 len)
//! 3 Seek       u32 partition, u64 offset
//! 4 Snapshot   u32 partitions, per partition: u32 partition, u64 committed,
//!              u32 n, n × u64 done offset, u32 m, m × (u64 offset, u32 count)
//! ```
//!
//! Replaying the events in order rebuilds, per partition, the committed
//! offset, the done offsets above it and the delivery counts of pending
//! messages. A snapshot replaces everything before it, which lets the owner
//! delete old journal segments.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One journal event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// Offsets handed out, as runs with the same delivery count.
    Delivered {
        partition: u32,
        runs: Vec<(u64, u32, u32)>,
    },
    /// Offsets acked or dead-lettered, as runs.
    Done {
        partition: u32,
        runs: Vec<(u64, u32)>,
    },
    Seek {
        partition: u32,
        offset: u64,
    },
    Snapshot(Vec<PartitionState>),
}

/// What the journal knows about one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PartitionState {
    pub(crate) partition: u32,
    pub(crate) committed: u64,
    pub(crate) done: BTreeSet<u64>,
    pub(crate) counts: HashMap<u64, u32>,
}

impl PartitionState {
    fn advance(&mut self) {
        while self.done.remove(&self.committed) {
            self.counts.remove(&self.committed);
            self.committed += 1;
        }
    }
}

/// Groups sorted offsets into runs of consecutive offsets.
pub(crate) fn runs(offsets: impl IntoIterator<Item = u64>) -> Vec<(u64, u32)> {
    let mut out: Vec<(u64, u32)> = Vec::new();
    for o in offsets {
        match out.last_mut() {
            Some((first, len)) if *first + u64::from(*len) == o => *len += 1,
            _ => out.push((o, 1)),
        }
    }
    out
}

/// Groups `(offset, count)` pairs into runs of consecutive offsets with the
/// same count.
pub(crate) fn counted_runs(items: impl IntoIterator<Item = (u64, u32)>) -> Vec<(u64, u32, u32)> {
    let mut out: Vec<(u64, u32, u32)> = Vec::new();
    for (o, c) in items {
        match out.last_mut() {
            Some((first, len, count)) if *first + u64::from(*len) == o && *count == c => *len += 1,
            _ => out.push((o, 1, c)),
        }
    }
    out
}

impl Event {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match self {
            Event::Delivered { partition, runs } => {
                b.push(1);
                put32(&mut b, *partition);
                put32(&mut b, runs.len() as u32);
                for &(first, len, count) in runs {
                    put64(&mut b, first);
                    put32(&mut b, len);
                    put32(&mut b, count);
                }
            }
            Event::Done { partition, runs } => {
                b.push(2);
                put32(&mut b, *partition);
                put32(&mut b, runs.len() as u32);
                for &(first, len) in runs {
                    put64(&mut b, first);
                    put32(&mut b, len);
                }
            }
            Event::Seek { partition, offset } => {
                b.push(3);
                put32(&mut b, *partition);
                put64(&mut b, *offset);
            }
            Event::Snapshot(parts) => {
                b.push(4);
                put32(&mut b, parts.len() as u32);
                for p in parts {
                    put32(&mut b, p.partition);
                    put64(&mut b, p.committed);
                    put32(&mut b, p.done.len() as u32);
                    for &o in &p.done {
                        put64(&mut b, o);
                    }
                    let mut counts: Vec<(u64, u32)> =
                        p.counts.iter().map(|(&o, &c)| (o, c)).collect();
                    counts.sort_unstable();
                    put32(&mut b, counts.len() as u32);
                    for (o, c) in counts {
                        put64(&mut b, o);
                        put32(&mut b, c);
                    }
                }
            }
        }
        b
    }

    pub(crate) fn decode(buf: &[u8]) -> Option<Event> {
        let mut r = Reader { buf, pos: 0 };
        let event = match r.u8()? {
            1 => {
                let partition = r.u32()?;
                let n = r.u32()?;
                let runs = (0..n)
                    .map(|_| Some((r.u64()?, r.u32()?, r.u32()?)))
                    .collect::<Option<_>>()?;
                Event::Delivered { partition, runs }
            }
            2 => {
                let partition = r.u32()?;
                let n = r.u32()?;
                let runs = (0..n)
                    .map(|_| Some((r.u64()?, r.u32()?)))
                    .collect::<Option<_>>()?;
                Event::Done { partition, runs }
            }
            3 => Event::Seek {
                partition: r.u32()?,
                offset: r.u64()?,
            },
            4 => {
                let n = r.u32()?;
                let mut parts = Vec::new();
                for _ in 0..n {
                    let partition = r.u32()?;
                    let committed = r.u64()?;
                    let nd = r.u32()?;
                    let done = (0..nd).map(|_| r.u64()).collect::<Option<_>>()?;
                    let nc = r.u32()?;
                    let counts = (0..nc)
                        .map(|_| Some((r.u64()?, r.u32()?)))
                        .collect::<Option<_>>()?;
                    parts.push(PartitionState {
                        partition,
                        committed,
                        done,
                        counts,
                    });
                }
                Event::Snapshot(parts)
            }
            _ => return None,
        };
        (r.pos == buf.len()).then_some(event)
    }
}

/// The state that replaying a journal builds.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Replay {
    pub(crate) partitions: BTreeMap<u32, PartitionState>,
}

impl Replay {
    pub(crate) fn apply(&mut self, event: Event) {
        match event {
            Event::Delivered { partition, runs } => {
                let p = self.partition(partition);
                for (first, len, count) in runs {
                    for o in first..first + u64::from(len) {
                        if o >= p.committed && !p.done.contains(&o) {
                            p.counts.insert(o, count);
                        }
                    }
                }
            }
            Event::Done { partition, runs } => {
                let p = self.partition(partition);
                for (first, len) in runs {
                    for o in first..first + u64::from(len) {
                        if o >= p.committed {
                            p.done.insert(o);
                            p.counts.remove(&o);
                        }
                    }
                }
                p.advance();
            }
            Event::Seek { partition, offset } => {
                *self.partition(partition) = PartitionState {
                    partition,
                    committed: offset,
                    ..PartitionState::default()
                };
            }
            Event::Snapshot(parts) => {
                self.partitions = parts.into_iter().map(|p| (p.partition, p)).collect();
            }
        }
    }

    fn partition(&mut self, partition: u32) -> &mut PartitionState {
        self.partitions
            .entry(partition)
            .or_insert_with(|| PartitionState {
                partition,
                ..PartitionState::default()
            })
    }
}

fn put32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = self.buf.get(self.pos..self.pos + N)?;
        self.pos += N;
        bytes.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let events = [
            Event::Delivered {
                partition: 3,
                runs: vec![(10, 5, 1), (20, 1, 4)],
            },
            Event::Done {
                partition: 0,
                runs: vec![(0, 100)],
            },
            Event::Seek {
                partition: 1,
                offset: 77,
            },
            Event::Snapshot(vec![PartitionState {
                partition: 2,
                committed: 5,
                done: BTreeSet::from([7, 9]),
                counts: HashMap::from([(6, 2), (8, 1)]),
            }]),
        ];
        for e in events {
            let buf = e.encode();
            assert_eq!(Event::decode(&buf), Some(e.clone()));
            assert_eq!(Event::decode(&buf[..buf.len() - 1]), None);
        }
        assert_eq!(Event::decode(&[9]), None);
    }

    #[test]
    fn runs_group_consecutive_offsets() {
        assert_eq!(runs([1, 2, 3, 5, 6, 9]), [(1, 3), (5, 2), (9, 1)]);
        assert_eq!(
            counted_runs([(1, 1), (2, 1), (3, 2), (4, 2), (6, 2)]),
            [(1, 2, 1), (3, 2, 2), (6, 1, 2)]
        );
    }

    #[test]
    fn replay_advances_over_done_offsets_only() {
        let mut r = Replay::default();
        r.apply(Event::Delivered {
            partition: 0,
            runs: vec![(0, 4, 1)],
        });
        r.apply(Event::Done {
            partition: 0,
            runs: vec![(1, 2)],
        });
        let p = &r.partitions[&0];
        assert_eq!(p.committed, 0);
        assert_eq!(p.done, BTreeSet::from([1, 2]));
        assert_eq!(p.counts, HashMap::from([(0, 1), (3, 1)]));
        r.apply(Event::Done {
            partition: 0,
            runs: vec![(0, 1)],
        });
        let p = &r.partitions[&0];
        assert_eq!(p.committed, 3);
        assert!(p.done.is_empty());
        assert_eq!(p.counts, HashMap::from([(3, 1)]));
        r.apply(Event::Seek {
            partition: 0,
            offset: 1,
        });
        assert_eq!(r.partitions[&0].committed, 1);
        assert!(r.partitions[&0].counts.is_empty());
    }
}
