//! Weir's telemetry sources: what puts samples and example messages on the
//! bus for the rest of Weir to carry and store.
//!
//! - [`dcgm`]: NVIDIA DCGM exports (CSV) read into [`weir_telemetry::Sample`]s:
//!   [`dcgm::Reader`] yields one [`dcgm::Row`] per line, DCGM's blank
//!   sentinels told apart from values, bad rows reported by line and
//!   skipped. Synchronous, over any `BufRead`.
//! - [`replay`]: `weir stream dcgm`, a file replayed onto a topic
//!   ([`replay::Replay`], [`replay::ReplayConfig`]) scrape by scrape, at an
//!   interval or a rate or as fast as possible, once or in a loop.
//! - [`synth`]: `weir stream synth`, a believable fleet of H100 GPUs
//!   ([`synth::Fleet`]) whose scrapes carry the same DCGM metrics, driven
//!   by jobs that start and stop, reproducible from a seed.
//! - [`generate`]: `weir generate sensor | complex`, the first streams
//!   people reach for when learning producers and consumers: a sensor
//!   reading (a sample) and a nested order event (JSON).
//!
//! Every GPU sample is keyed by its GPU's `UUID` label, so one GPU's
//! samples stay in order on a partitioned topic; every payload is one JSON
//! object ([`weir_telemetry::Sample::encode`] for samples).
//!
//! Invariants:
//! - sources reach the transport only through `weir_bus::Bus`, and know no
//!   HTTP and no terminal (progress is a callback);
//! - timestamps published in a series strictly increase, across loop
//!   passes too;
//! - a seed fixes every synthetic value: the generator is this crate's own
//!   (xoshiro256**), not a dependency whose stream may change;
//! - a bad input row is counted and skipped, never fatal; large files are
//!   streamed, never held in memory;
//! - at shutdown nothing new starts, and a publish under way is abandoned:
//!   it may or may not have landed (delivery is at least once), and is not
//!   counted as published.

pub mod dcgm;
pub mod generate;
mod publish;
pub mod replay;
mod rng;
pub mod synth;

pub use publish::{MIN_RATE, PublishError, StopAfter};
