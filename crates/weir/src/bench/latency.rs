//! Publish-to-receive latency at a steady rate, shared by the benches that
//! time a transport: one publisher sends a small batch every millisecond
//! (several batches in flight when one is slow, so the schedule holds),
//! each payload carrying its send time; one subscriber records the time it
//! got each message minus that, and acks through a separate task.
//!
//! How a batch is published is the caller's (`weir bench broker` sends
//! HTTP requests, `weir bench bus` calls the bus); the schedule, the
//! payloads and the measuring are here.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use weir_bus::{Acker, Bus, Subscription};

use super::{STALL, Workload, member_options};

/// How often the publisher sends a batch.
const TICK: Duration = Duration::from_millis(1);
/// Batches in flight at once at most.
const IN_FLIGHT: usize = 64;

/// The publishing schedule.
#[derive(Debug, Clone, Copy)]
struct Steady {
    /// Messages per second.
    rate: u64,
    /// Messages in all.
    messages: u64,
}

impl Steady {
    /// `--rate` for `--seconds`.
    fn of(load: &Workload) -> Steady {
        let rate = load.rate.max(1);
        Steady {
            rate,
            messages: rate * load.seconds.max(1),
        }
    }
}

/// What a run measured: publish-to-receive latencies, in nanoseconds.
#[derive(Debug)]
pub(super) struct Latency {
    /// Sorted.
    nanos: Vec<u64>,
    published: u64,
    publishing: Duration,
}

impl Latency {
    /// The latency at quantile `q`, in milliseconds.
    pub(super) fn ms(&self, q: f64) -> f64 {
        percentile(&self.nanos, q) as f64 / 1e6
    }

    pub(super) fn print(&self) {
        println!(
            "{:<20} p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  ({} messages at {:.0} msg/s)",
            "latency",
            self.ms(0.50),
            self.ms(0.90),
            self.ms(0.99),
            self.ms(0.999),
            self.ms(1.0),
            self.nanos.len(),
            self.published as f64 / self.publishing.as_secs_f64().max(1e-9),
        );
    }
}

/// The value at quantile `q` of `sorted` (nearest rank); 0 when empty.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len();
    if n == 0 {
        return 0;
    }
    let rank = (q * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// A payload `[sent_ns,"xx…"]` (JSON), padded to `size` bytes where the
/// stamp leaves room.
pub(super) fn stamped(sent_ns: u64, size: usize) -> String {
    let head = format!("[{sent_ns},\"");
    let pad = size.saturating_sub(head.len() + 2);
    format!("{head}{}\"]", "x".repeat(pad))
}

/// The send time a [`stamped`] payload carries.
fn stamp_of(payload: &[u8]) -> Option<u64> {
    let (sent, _pad): (u64, &str) = serde_json::from_slice(payload).ok()?;
    Some(sent)
}

/// Runs `load`'s schedule through `publish(stamp, n)`, which publishes `n`
/// messages stamped `stamp` (nanoseconds since the run began) to `topic`,
/// while one member of `group` on `bus` receives them; `topic` must be
/// one of this run alone.
///
/// One stamped message goes first and is awaited, untimed: a transport
/// whose member joins its group in the background (Kafka) starts measuring
/// once it has.
pub(super) async fn measure<P, F>(
    bus: &dyn Bus,
    topic: &str,
    group: &str,
    load: &Workload,
    publish: P,
) -> anyhow::Result<Latency>
where
    P: Fn(u64, u64) -> F + Send + Sync + 'static,
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let steady = Steady::of(load);
    let mut sub = bus
        .subscribe(topic, group, member_options("latency", load.max_in_flight))
        .await
        .with_context(|| format!("subscribing to {topic}"))?;
    let acker = sub.acker();
    warm_up(sub.as_mut(), &acker, &publish).await?;

    let (acks, queued) = mpsc::channel(1024);
    let acking = tokio::spawn(ack_all(acker, queued));
    let base = Instant::now();
    // The publisher's count once it is done.
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let publisher = tokio::spawn(publish_steady(steady, base, Arc::clone(&expected), publish));

    let mut nanos = Vec::with_capacity(steady.messages as usize);
    let mut last = Instant::now();
    while (nanos.len() as u64) < expected.load(Ordering::Acquire) {
        if publisher.is_finished() && expected.load(Ordering::Acquire) == u64::MAX {
            break; // it failed: its error comes below
        }
        let got = sub.receive(10_000, Duration::from_millis(50)).await?;
        let now = base.elapsed().as_nanos() as u64;
        if got.is_empty() {
            if last.elapsed() > STALL {
                bail!("no message for {STALL:?}: {} received", nanos.len());
            }
            continue;
        }
        last = Instant::now();
        let mut ids = Vec::with_capacity(got.len());
        for d in got {
            let sent = stamp_of(&d.payload)
                .with_context(|| format!("message {} carries no send time", d.id))?;
            nanos.push(now.saturating_sub(sent));
            ids.push(d.id);
        }
        acks.send(ids)
            .await
            .context("the acking task stopped early")?;
    }
    let (published, publishing) = publisher.await??;
    drop(acks);
    acking.await??;
    nanos.sort_unstable();
    Ok(Latency {
        nanos,
        published,
        publishing,
    })
}

/// Publishes one message and waits until `sub` has it, then acks it.
async fn warm_up<P, F>(sub: &mut dyn Subscription, acker: &Acker, publish: &P) -> anyhow::Result<()>
where
    P: Fn(u64, u64) -> F,
    F: Future<Output = anyhow::Result<()>>,
{
    publish(0, 1)
        .await
        .context("publishing the first message")?;
    let start = Instant::now();
    loop {
        let got = sub.receive(10, Duration::from_millis(100)).await?;
        if !got.is_empty() {
            let ids: Vec<String> = got.into_iter().map(|d| d.id).collect();
            acker.ack(&ids).await?;
            return Ok(());
        }
        if start.elapsed() > STALL {
            bail!("the first message did not arrive within {STALL:?}");
        }
    }
}

/// Acks what comes on `queued`, gathering what queued meanwhile into one
/// call.
async fn ack_all(acker: Acker, mut queued: mpsc::Receiver<Vec<String>>) -> anyhow::Result<()> {
    while let Some(mut ids) = queued.recv().await {
        while let Ok(more) = queued.try_recv() {
            ids.extend(more);
        }
        acker.ack(&ids).await?;
    }
    Ok(())
}

/// Publishes `steady.messages` at `steady.rate`, a batch every [`TICK`],
/// stamped with the time since `base`. Stores the count in `expected` when
/// done; the count, and how long until the last was answered.
async fn publish_steady<P, F>(
    steady: Steady,
    base: Instant,
    expected: Arc<AtomicU64>,
    publish: P,
) -> anyhow::Result<(u64, Duration)>
where
    P: Fn(u64, u64) -> F,
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let rate = steady.rate.max(1);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut batches = JoinSet::new();
    let start = Instant::now();
    let (mut sent, mut ticks) = (0u64, 0u128);
    while sent < steady.messages {
        ticker.tick().await;
        ticks += 1;
        let due = (u128::from(rate) * ticks * TICK.as_nanos() / 1_000_000_000) as u64;
        let n = due.min(steady.messages) - sent;
        if n == 0 {
            continue;
        }
        let permit = Arc::clone(&in_flight).acquire_owned().await?;
        let batch = publish(base.elapsed().as_nanos() as u64, n);
        batches.spawn(async move {
            let _permit = permit;
            batch.await
        });
        sent += n;
        while let Some(answer) = batches.try_join_next() {
            answer??;
        }
    }
    while let Some(answer) = batches.join_next().await {
        answer??;
    }
    let took = start.elapsed();
    expected.store(sent, Ordering::Release);
    Ok((sent, took))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_payloads_are_json_of_the_asked_size() {
        for (stamp, size) in [(0, 100), (123_456_789_012, 100), (7, 2)] {
            let payload = stamped(stamp, size);
            assert_eq!(stamp_of(payload.as_bytes()), Some(stamp));
            if size >= 20 {
                assert_eq!(payload.len(), size);
            }
        }
        assert_eq!(stamp_of(b"\"xx\""), None);
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let check = |v: &[u64], q: f64, want: u64| assert_eq!(percentile(v, q), want, "{v:?} {q}");
        let hundred: Vec<u64> = (1..=100).collect();
        check(&hundred, 0.5, 50);
        check(&hundred, 0.99, 99);
        check(&hundred, 0.999, 100);
        check(&hundred, 1.0, 100);
        check(&hundred, 0.0, 1);
        check(&[7], 0.5, 7);
        check(&[], 0.5, 0);
    }
}
