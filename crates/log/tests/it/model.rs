//! A model test: random operations applied to a [`Log`] and to a plain
//! vector of records, compared after every step.

use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;
use weir_log::{Log, LogConfig, Record};

use crate::fixture::{active_segment, append_bytes, config, open, read_all, tempdir};

#[derive(Debug, Clone)]
enum Op {
    /// One batch; each record given as (payload length, whether it has a key).
    Append(Vec<(usize, bool)>),
    /// A read from an offset anywhere in `0..=next_offset + 1`.
    Read { from: Index, max_bytes: usize },
    /// Close and reopen, maybe with another segment size.
    Reopen { segment_bytes: u64 },
    /// Close, append garbage to the active segment, reopen.
    CrashTornTail(Vec<u8>),
    /// Delete sealed segments below an offset anywhere in `0..=next_offset + 1`.
    TruncateBefore(Index),
}

/// Segment sizes from one batch per segment to a few dozen batches each.
fn segment_bytes() -> impl Strategy<Value = u64> {
    prop_oneof![Just(200u64), Just(1024), Just(8 << 10), Just(1 << 20)]
}

/// Mostly small records, so that batches fall between index entries and
/// reads start before the offset they want.
fn payload_len() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 0usize..16, 1 => 0usize..300]
}

/// Budgets from less than one batch to many.
fn max_bytes() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..64, 1usize..3000]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((payload_len(), any::<bool>()), 1..8).prop_map(Op::Append),
        3 => (any::<Index>(), max_bytes()).prop_map(|(from, max_bytes)| Op::Read { from, max_bytes }),
        1 => segment_bytes().prop_map(|segment_bytes| Op::Reopen { segment_bytes }),
        1 => prop::collection::vec(any::<u8>(), 1..100).prop_map(Op::CrashTornTail),
        1 => any::<Index>().prop_map(Op::TruncateBefore),
    ]
}

/// What the log should hold: every record ever appended, and where the log
/// now starts (segments below it were deleted by `TruncateBefore`).
#[derive(Debug, Default)]
struct Model {
    records: Vec<Record>,
    start: u64,
}

impl Model {
    fn next(&self) -> u64 {
        self.records.len() as u64
    }
}

/// Record number `offset`: contents derived from it, so a record read back
/// at the wrong offset cannot match.
fn model_record(offset: u64, payload_len: usize, keyed: bool) -> Record {
    let mut payload = format!("{offset}:").into_bytes();
    payload.extend((0..payload_len).map(|i| (offset as usize + i) as u8));
    Record {
        timestamp: 1_000 + offset as i64,
        key: keyed.then(|| format!("k{offset}").into()),
        headers: Vec::new(),
        payload: payload.into(),
    }
}

fn apply(dir: &Path, log: Log, config: &mut LogConfig, model: &mut Model, op: &Op) -> Log {
    match op {
        Op::Append(specs) => {
            let next = model.next();
            let records: Vec<Record> = specs
                .iter()
                .enumerate()
                .map(|(i, &(len, keyed))| model_record(next + i as u64, len, keyed))
                .collect();
            let appended = log.append(&records).expect("append");
            assert_eq!(appended.base_offset, next);
            model.records.extend(records);
            log
        }
        Op::Read { from, max_bytes } => {
            let from = from.index(model.records.len() + 2) as u64;
            let got = log.read(from, *max_bytes).expect("read");
            if from >= model.next() {
                assert!(
                    got.is_empty(),
                    "read({from}) past the end returned {} records",
                    got.len()
                );
            } else {
                let first = from.max(model.start);
                assert!(
                    !got.is_empty(),
                    "read({from}, {max_bytes}) returned nothing"
                );
                for (i, r) in got.iter().enumerate() {
                    assert_eq!(r.offset, first + i as u64, "read({from}, {max_bytes})");
                    assert_eq!(
                        r.record, model.records[r.offset as usize],
                        "offset {}",
                        r.offset
                    );
                }
            }
            log
        }
        Op::Reopen { segment_bytes } => {
            log.close().expect("close");
            *config = crate::fixture::config(*segment_bytes);
            let log = open(dir, config.clone());
            assert_eq!(
                log.recovery().truncated_bytes,
                0,
                "a clean close leaves no tail"
            );
            log
        }
        Op::CrashTornTail(garbage) => {
            drop(log);
            append_bytes(&active_segment(dir), garbage);
            let log = open(dir, config.clone());
            assert_eq!(log.recovery().truncated_bytes, garbage.len() as u64);
            log
        }
        Op::TruncateBefore(at) => {
            let offset = at.index(model.records.len() + 2) as u64;
            let removed = log.truncate_before(offset).expect("truncate");
            let start = log.start_offset();
            assert!(start >= model.start, "start moved back");
            assert!(
                start <= model.start.max(offset.min(model.next())),
                "truncate_before({offset}) moved the start to {start}"
            );
            assert_eq!(removed.segments == 0, start == model.start);
            model.start = start;
            log
        }
    }
}

/// The log agrees with the model: same end, same start, same records.
fn check(log: &Log, model: &Model) {
    assert_eq!(log.next_offset(), model.next(), "next_offset");
    assert_eq!(log.start_offset(), model.start, "start_offset");
    let got = read_all(log, 4096);
    assert_eq!(
        got.len() as u64,
        model.next() - model.start,
        "records in the log"
    );
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.offset, model.start + i as u64, "offsets follow on");
        assert_eq!(
            r.record, model.records[r.offset as usize],
            "offset {}",
            r.offset
        );
    }
    log.verify().expect("verify");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn log_agrees_with_a_vector(
        segment_bytes in segment_bytes(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let dir = tempdir();
        let mut config = config(segment_bytes);
        let mut model = Model::default();
        let mut log = open(dir.path(), config.clone());
        for op in &ops {
            log = apply(dir.path(), log, &mut config, &mut model, op);
            check(&log, &model);
        }
    }
}
