//! Integration tests of `weir-log`, one binary:
//!
//! - `recovery`: what `Log::open` repairs and what it refuses, and the reads,
//!   retention and verification that run over the result;
//! - `model`: random operations, reopens and torn tails applied to a log and
//!   to a plain vector, compared after every step;
//! - `crash`: a child process appending with `fsync = always` is killed with
//!   SIGKILL, and every acknowledged record must survive;
//!
//! `fixture` holds what they share. Each test works in its own temp dir.

mod crash;
mod fixture;
mod model;
mod recovery;
