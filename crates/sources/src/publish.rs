//! What every source does with the bus: publish batches, retrying what the
//! transport says may work later, and wait for deadlines without drifting,
//! giving up at shutdown.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weir_bus::{Bus, BusError, Message};

/// Why a source stopped publishing.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The transport refused in a way retrying cannot fix.
    #[error("publishing to {topic}")]
    Bus {
        topic: String,
        #[source]
        source: BusError,
    },
    /// A message could not be encoded (a value JSON cannot carry).
    #[error("encoding a message: {0}")]
    Encode(String),
}

/// What became of messages handed to [`Publisher::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Messages published (a prefix of those handed over).
    pub(crate) published: u64,
    /// Shutdown came before the rest could be.
    pub(crate) stopped: bool,
}

/// First and longest wait between attempts at a batch the transport
/// refused for now.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Publishes batches to one topic, retrying retryable failures with
/// exponential backoff until shutdown.
#[derive(Debug)]
pub(crate) struct Publisher<'a> {
    bus: &'a dyn Bus,
    topic: &'a str,
    /// Messages per call at most.
    batch: usize,
}

impl<'a> Publisher<'a> {
    pub(crate) fn new(bus: &'a dyn Bus, topic: &'a str, batch: usize) -> Publisher<'a> {
        Publisher {
            bus,
            topic,
            batch: batch.max(1),
        }
    }

    pub(crate) fn batch(&self) -> usize {
        self.batch
    }

    /// Publishes `messages` in order, in calls of at most `batch`. Stops
    /// between calls (and during backoff) once `shutdown` fires; what was
    /// not published by then is dropped.
    pub(crate) async fn send(
        &self,
        mut messages: Vec<Message>,
        shutdown: &CancellationToken,
    ) -> Result<Sent, PublishError> {
        let mut published = 0;
        while !messages.is_empty() {
            let rest = messages.split_off(messages.len().min(self.batch));
            let n = messages.len() as u64;
            if !self.send_one(messages, shutdown).await? {
                return Ok(Sent {
                    published,
                    stopped: true,
                });
            }
            published += n;
            messages = rest;
        }
        Ok(Sent {
            published,
            stopped: false,
        })
    }

    /// One call, retried; false when shutdown came first.
    async fn send_one(
        &self,
        messages: Vec<Message>,
        shutdown: &CancellationToken,
    ) -> Result<bool, PublishError> {
        let mut backoff = BACKOFF_FIRST;
        loop {
            // The clone is cheap: payloads and keys are `Bytes`.
            match self.bus.publish_batch(self.topic, messages.clone()).await {
                Ok(_) => return Ok(true),
                Err(e) if e.is_retryable() => {
                    tracing::warn!(topic = self.topic, error = %e, ?backoff,
                        "cannot publish; retrying");
                    if !sleep_until(Instant::now() + backoff, shutdown).await {
                        return Ok(false);
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(source) => {
                    return Err(PublishError::Bus {
                        topic: self.topic.to_string(),
                        source,
                    });
                }
            }
        }
    }
}

/// Waits until `deadline`; false if shutdown came first.
pub(crate) async fn sleep_until(deadline: Instant, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep_until(deadline) => !shutdown.is_cancelled(),
    }
}

/// Fixed deadlines `start + k·period`, so waiting does not drift with the
/// time spent between waits. A caller that falls more than a period behind
/// starts counting again from now rather than bursting to catch up.
#[derive(Debug)]
pub(crate) struct Ticker {
    period: Duration,
    next: Option<Instant>,
}

impl Ticker {
    pub(crate) fn new(period: Duration) -> Ticker {
        Ticker { period, next: None }
    }

    /// Waits for the next deadline (the first is now); false at shutdown.
    pub(crate) async fn tick(&mut self, shutdown: &CancellationToken) -> bool {
        let now = Instant::now();
        let deadline = match self.next {
            Some(next) if next + self.period >= now => next,
            _ => now,
        };
        self.next = Some(deadline + self.period);
        if self.period.is_zero() {
            return !shutdown.is_cancelled();
        }
        sleep_until(deadline, shutdown).await
    }
}

/// Times that move forward: now in milliseconds, but always after the last
/// time handed out, so a series never repeats or goes back a timestamp even
/// when the clock steps back or two scrapes fall in one millisecond.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    last: Option<i64>,
}

impl Clock {
    pub(crate) fn stamp(&mut self) -> i64 {
        let now = weir_telemetry::time::now_ms();
        let t = match self.last {
            Some(last) => now.max(last + 1),
            None => now,
        };
        self.last = Some(t);
        t
    }
}

/// When a stream stops by itself; with neither, it runs until shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopAfter {
    /// After this many ticks (scrapes, messages).
    pub ticks: Option<u64>,
    /// After this long.
    pub duration: Option<Duration>,
}

/// What [`pump`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pumped {
    pub(crate) ticks: u64,
    pub(crate) messages: u64,
}

/// The loop of a generating source: every `period` (on fixed deadlines),
/// `produce` the messages of one tick for a time that strictly increases,
/// and publish them; with a zero period, as fast as the bus takes them,
/// ticks coalesced into batches. `published` sees each message once it is
/// on the bus. Ends at `stop` or shutdown.
pub(crate) async fn pump(
    publisher: &Publisher<'_>,
    period: Duration,
    stop: &StopAfter,
    shutdown: &CancellationToken,
    produce: &mut (dyn FnMut(i64) -> Result<Vec<Message>, PublishError> + Send),
    published: &mut (dyn FnMut(&Message) + Send),
) -> Result<Pumped, PublishError> {
    let stop_at = stop.duration.map(|d| Instant::now() + d);
    let mut ticker = Ticker::new(period);
    let mut clock = Clock::default();
    let mut pending: Vec<Message> = Vec::new();
    let mut out = Pumped::default();
    loop {
        let over = stop_at.is_some_and(|t| Instant::now() >= t);
        if over || stop.ticks.is_some_and(|n| out.ticks >= n) {
            break;
        }
        let ticked = match stop_at {
            Some(t) => tokio::select! {
                ok = ticker.tick(shutdown) => ok,
                () = tokio::time::sleep_until(t) => break,
            },
            None => ticker.tick(shutdown).await,
        };
        if !ticked {
            return Ok(out);
        }
        pending.extend(produce(clock.stamp())?);
        out.ticks += 1;
        let due = !period.is_zero() || pending.len() >= publisher.batch();
        if due && !send_pending(publisher, &mut pending, &mut out, shutdown, published).await? {
            return Ok(out);
        }
    }
    send_pending(publisher, &mut pending, &mut out, shutdown, published).await?;
    Ok(out)
}

/// Publishes `pending`, counts and shows what went out; false at shutdown.
async fn send_pending(
    publisher: &Publisher<'_>,
    pending: &mut Vec<Message>,
    out: &mut Pumped,
    shutdown: &CancellationToken,
    published: &mut (dyn FnMut(&Message) + Send),
) -> Result<bool, PublishError> {
    if pending.is_empty() {
        return Ok(true);
    }
    let messages = std::mem::take(pending);
    // Cheap: payloads and keys are `Bytes`.
    let sent = publisher.send(messages.clone(), shutdown).await?;
    out.messages += sent.published;
    messages
        .iter()
        .take(sent.published as usize)
        .for_each(published);
    Ok(!sent.stopped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ticks_on_fixed_deadlines_without_drift() {
        let shutdown = CancellationToken::new();
        let period = Duration::from_secs(1);
        let mut ticker = Ticker::new(period);
        let start = Instant::now();
        let mut at = Vec::new();
        for work_ms in [0u64, 300, 900, 10, 2_500, 0] {
            assert!(ticker.tick(&shutdown).await);
            at.push((Instant::now() - start).as_millis());
            tokio::time::sleep(Duration::from_millis(work_ms)).await;
        }
        // Work shorter than a period does not delay the next tick; work
        // longer than two periods restarts the count.
        assert_eq!(at, [0, 1000, 2000, 3000, 4000, 6500]);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_a_wait() {
        let shutdown = CancellationToken::new();
        let mut ticker = Ticker::new(Duration::from_secs(3600));
        assert!(ticker.tick(&shutdown).await);
        let cancel = shutdown.clone();
        tokio::spawn(async move { cancel.cancel() });
        assert!(!ticker.tick(&shutdown).await);
    }

    #[test]
    fn stamps_strictly_increase() {
        let mut clock = Clock::default();
        let stamps: Vec<i64> = (0..1000).map(|_| clock.stamp()).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]));
    }
}
