//! A consuming group for the throughput benches: members that each receive
//! up to a batch at a time and ack it with one call, until the group has
//! acked a total.
//!
//! Messages with the [`WARM_UP`] header are acked but not counted: a bench
//! sends them before it starts the clock, to learn that every member has
//! joined ([`Group::all_warmed`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::task::JoinHandle;
use weir_bus::{Bus, SettleStatus, Subscription};

use super::{STALL, member_options};

/// Marks a warm-up message.
pub(super) const WARM_UP: &str = "x-weir-bench-warm-up";

/// What a group saw while consuming.
#[derive(Debug, Default)]
pub(super) struct Consumed {
    /// Acks answered other than `done` (none when each message is acked
    /// exactly once).
    pub(super) not_done: u64,
    /// Deliveries after the first of a message.
    pub(super) redelivered: u64,
}

impl Consumed {
    /// A line under the figures when something was not acked exactly once.
    pub(super) fn print_note(&self) {
        if self.not_done > 0 || self.redelivered > 0 {
            println!(
                "{:<20} {} ack(s) answered other than done, {} redelivery(ies)",
                "  note:", self.not_done, self.redelivered
            );
        }
    }
}

/// How the members of a group consume.
#[derive(Debug, Clone, Copy)]
pub(super) struct GroupConfig {
    pub(super) members: usize,
    /// Most deliveries per `receive`, and so per ack.
    pub(super) batch: usize,
    pub(super) max_in_flight: usize,
    /// Counted messages the group acks before its members stop.
    pub(super) total: u64,
}

/// Members consuming in tasks of their own.
#[derive(Debug)]
pub(super) struct Group {
    members: Vec<JoinHandle<anyhow::Result<Consumed>>>,
    warmed: Vec<Arc<AtomicBool>>,
}

impl Group {
    /// Subscribes `config.members` members (`c0`, `c1`, …) to `topic` as
    /// `group` on `bus`, each consuming at once.
    pub(super) async fn join(
        bus: &dyn Bus,
        topic: &str,
        group: &str,
        config: GroupConfig,
    ) -> anyhow::Result<Group> {
        let acked = Arc::new(AtomicU64::new(0));
        let mut joined = Group {
            members: Vec::new(),
            warmed: Vec::new(),
        };
        for c in 0..config.members.max(1) {
            let options = member_options(format!("c{c}"), config.max_in_flight);
            let sub = bus
                .subscribe(topic, group, options)
                .await
                .with_context(|| format!("subscribing to {topic}"))?;
            let member = Member {
                batch: config.batch.max(1),
                total: config.total,
                acked: Arc::clone(&acked),
                warmed: Arc::new(AtomicBool::new(false)),
            };
            joined.warmed.push(Arc::clone(&member.warmed));
            joined.members.push(tokio::spawn(member.consume(sub)));
        }
        Ok(joined)
    }

    /// Whether every member has had a warm-up message.
    pub(super) fn all_warmed(&self) -> bool {
        self.warmed.iter().all(|w| w.load(Ordering::Acquire))
    }

    /// Whether a member stopped (failed, or the group acked its total).
    pub(super) fn any_stopped(&self) -> bool {
        self.members.iter().any(JoinHandle::is_finished)
    }

    /// Waits until every member stopped; what they saw, or the first
    /// error.
    pub(super) async fn finish(self) -> anyhow::Result<Consumed> {
        let mut all = Consumed::default();
        for m in self.members {
            let seen = m.await??;
            all.not_done += seen.not_done;
            all.redelivered += seen.redelivered;
        }
        Ok(all)
    }
}

/// One member.
#[derive(Debug)]
struct Member {
    batch: usize,
    total: u64,
    /// Counted messages the group acked so far.
    acked: Arc<AtomicU64>,
    /// Set once this member had a warm-up message.
    warmed: Arc<AtomicBool>,
}

impl Member {
    /// Receives and acks until the group has acked `total` counted
    /// messages.
    async fn consume(self, mut sub: Box<dyn Subscription>) -> anyhow::Result<Consumed> {
        let acker = sub.acker();
        let mut seen = Consumed::default();
        let mut progress = (self.acked.load(Ordering::Relaxed), Instant::now());
        loop {
            let now_acked = self.acked.load(Ordering::Relaxed);
            if now_acked >= self.total {
                return Ok(seen);
            }
            if now_acked != progress.0 {
                progress = (now_acked, Instant::now());
            } else if progress.1.elapsed() > STALL {
                bail!(
                    "no ack for {STALL:?}: {now_acked} of {} messages acked",
                    self.total
                );
            }
            let got = sub.receive(self.batch, Duration::from_millis(50)).await?;
            if got.is_empty() {
                continue;
            }
            let warm_up: Vec<bool> = got.iter().map(|d| d.header(WARM_UP).is_some()).collect();
            if warm_up.contains(&true) {
                self.warmed.store(true, Ordering::Release);
            }
            seen.redelivered += got.iter().filter(|d| d.delivery_count > 1).count() as u64;
            let ids: Vec<String> = got.into_iter().map(|d| d.id).collect();
            let statuses = acker.ack(&ids).await?;
            let mut done = 0;
            for (status, warm_up) in statuses.iter().zip(warm_up) {
                if *status != SettleStatus::Done {
                    seen.not_done += 1;
                } else if !warm_up {
                    done += 1;
                }
            }
            self.acked.fetch_add(done, Ordering::Relaxed);
        }
    }
}
