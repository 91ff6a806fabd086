//! Weir's embedded durable queue, built on `weir-log`.
//!
//! A [`Queue`] owns one data directory and offers, over the same logs, both
//! messaging models Weir's components need:
//!
//! - **Kafka-style consumer groups**: topics of N partitions (a key's hash
//!   picks the partition; unkeyed batches spread round-robin), a committed
//!   offset per group and partition, a start at the earliest or latest
//!   message, and [`Queue::seek`] to an offset or a time for replay;
//! - **SQS-style competing consumers** inside a group: every [`Delivery`]
//!   is a lease with a `delivery_count`; [`Consumer::ack`] finishes it,
//!   [`Consumer::nack`] gives it back (after an optional delay), a lease not
//!   acked within the visibility timeout returns by itself, and a message
//!   delivered `max_deliveries` times, or rejected, goes to `<topic>.dlq`
//!   with headers naming the reason and its origin.
//!
//! # Invariants
//!
//! - A message is leased to at most one consumer at a time.
//! - A group's committed offset moves only over acked or dead-lettered
//!   messages, and never backwards except by an explicit seek.
//! - Group state survives a restart: every delivery and every ack is written
//!   to the group's journal (a `weir-log` of its own) before the call
//!   returns. After a restart what was in flight is delivered again with its
//!   delivery count kept, nothing acked comes back, nothing unacked is lost.
//! - A dead letter is appended to the dead-letter topic before the message
//!   counts as done; if that append fails the message is delivered again.
//! - Durability follows [`QueueConfig::fsync`]: with `always`, publish and
//!   ack return after an fsync (shared by concurrent callers); with `every`,
//!   a background task woken by writes syncs them at most that period after
//!   they were written (an idle queue does not wake).
//!
//! # Layout on disk
//!
//! ```text
//! <data>/LOCK                                   held while open
//! <data>/topics/<topic>/partitions              partition count
//! <data>/topics/<topic>/<partition>/*.log|idx   the partition's log
//! <data>/groups/<group>/<topic>/*.log|idx       the group's journal
//! ```
//!
//! The pure delivery state machine is `cursor`; the journal format is in
//! `journal`.

mod config;
mod cursor;
pub mod dead_letter;
mod error;
mod group;
mod journal;
mod message;
mod name;
mod queue;
mod stats;
mod topic;

pub use config::{GroupConfig, GroupOverrides, QueueConfig, SeekTo, StartAt};
pub use cursor::{DeadReason, Settled};
pub use error::{QueueError, Result};
pub use message::{Delivery, Message, MessageId, Published};
pub use name::{MAX_NAME_LEN, dead_letter_topic, validate as validate_name};
pub use queue::{Consumer, Queue, SubscribeOptions, now_ms};
pub use stats::{GroupStats, Stats, TopicStats};
pub use weir_log::{Fsync, Header, Record};
