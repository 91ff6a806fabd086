//! Weir's storage engine: append-only, checksummed, segmented logs.
//!
//! One [`Log`] holds one topic-partition in one directory. Everything above
//! it (queues, consumer groups, leases) is built by `weir-queue`.
//!
//! # Design constraints
//!
//! - Synchronous and self-contained: no async runtime, no wire format, no
//!   JSON. Callers on an async runtime run the blocking calls (`append` with
//!   `fsync = always`, `sync`) where blocking is allowed.
//! - Nothing acknowledged as durable is ever lost or silently skipped: every
//!   byte read back is checked against a CRC-32C, and damage that recovery
//!   cannot explain as a torn tail is reported, not skipped.
//! - One writer lock per log; readers copy what they need under it and read
//!   the file without it, with positional reads.
//!
//! # On-disk format
//!
//! A log directory holds segments named by the offset of their first record,
//! `00000000000000000000.log`, each a sequence of record batches (layout in
//! [`batch`]). Records are numbered by consecutive offsets across segments.
//! A sealed segment also has an `.idx` file: a sparse index (one entry per
//! `index_interval_bytes`) with a checksummed footer naming the segment's
//! length, next offset and newest timestamp (layout in the `index` module).
//! The active segment's index lives only in memory and is rebuilt on open.
//!
//! # Operations
//!
//! - [`Log::append`] writes a batch at the end of the active segment with one
//!   positional write; it rolls to a new segment first when the batch would
//!   take the active one past `segment_bytes`.
//! - [`Log::read`] finds the segment by binary search, the position by the
//!   sparse index, and decodes whole batches from there.
//! - [`Log::enforce_retention`] and [`Log::truncate_before`] delete whole
//!   sealed segments, oldest first; the active segment is never deleted.
//! - [`Log::verify`] reads and checks every batch.
//!
//! # When an append is durable
//!
//! `append` returns after the batch is written to the file with `pwrite`:
//! from then on it survives the process being killed. It survives the
//! machine losing power
//!
//! - with [`Fsync::Always`]: when `append` returns. Appenders that arrive
//!   while an `fdatasync` runs wait for it and then share the next one, so
//!   concurrent appenders cost one fsync per round, not one each;
//! - with [`Fsync::Every`]: after the owner's next call to [`Log::sync`],
//!   which it makes on that period;
//! - with [`Fsync::Never`]: when its segment is sealed or the log is closed.
//!
//! Sealing a segment always fsyncs it and then the directory before the new
//! segment takes writes.
//!
//! # Recovery
//!
//! [`Log::open`] removes empty trailing segments left by a crash during a
//! roll; trusts each sealed segment's index when its checksum and recorded
//! length match the file, otherwise scans the segment and rewrites the index
//! (any damage found in a sealed segment is corruption); checks that segments
//! follow on without gaps; and scans the active segment from its start. In
//! the active segment, the first bad batch (short, bad length, bad checksum,
//! offset out of sequence) starts a torn tail, which is truncated — unless a
//! valid batch is found anywhere after it, in which case the damage is in the
//! middle of the data and `open` fails with [`LogError::Corrupt`] naming the
//! file and byte position.

pub mod batch;
mod config;
mod error;
mod index;
mod log;
mod segment;

pub use batch::{Header, Record, StoredRecord};
pub use config::{Fsync, LogConfig, parse_duration};
pub use error::{LogError, Result};
pub use log::{Appended, Log, RecoveryReport, Removed, VerifyReport};
