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

/// The slowest rate a source accepts, per second: one message (or sample)
/// a day. Slower rates are refused rather than turned into waits that
/// overflow.
pub const MIN_RATE: f64 = 1.0 / 86_400.0;

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
    /// once `shutdown` fires, abandoning a call under way (see
    /// `send_one`); what was not published by then is dropped.
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
    ///
    /// Shutdown also abandons a call under way, so a transport that
    /// accepts the request and then stalls cannot hold Ctrl-C for its
    /// whole request timeout. An abandoned call may or may not have landed
    /// (delivery is at least once); it is counted as not published. No
    /// call starts once shutdown has fired.
    async fn send_one(
        &self,
        messages: Vec<Message>,
        shutdown: &CancellationToken,
    ) -> Result<bool, PublishError> {
        let mut backoff = BACKOFF_FIRST;
        loop {
            // The clone is cheap: payloads and keys are `Bytes`.
            let attempt = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(false),
                r = self.bus.publish_batch(self.topic, messages.clone()) => r,
            };
            match attempt {
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
/// time spent between waits.
///
/// What happens to deadlines missed while the caller was busy is the
/// caller's choice: [`Ticker::new`] starts counting again from now once the
/// caller is more than a period behind, rather than bursting to catch up;
/// [`Ticker::catching_up`] keeps every deadline, for a caller that claims
/// the missed ones with [`Ticker::try_tick`] and decides itself when to
/// [`Ticker::restart`].
#[derive(Debug)]
pub(crate) struct Ticker {
    period: Duration,
    next: Option<Instant>,
    /// How late the next deadline may be before counting starts again from
    /// now; `None`: never by itself.
    slack: Option<Duration>,
}

impl Ticker {
    pub(crate) fn new(period: Duration) -> Ticker {
        Ticker {
            period,
            next: None,
            slack: Some(period),
        }
    }

    /// A ticker that never skips a deadline by itself.
    pub(crate) fn catching_up(period: Duration) -> Ticker {
        Ticker {
            period,
            next: None,
            slack: None,
        }
    }

    /// Waits for the next deadline (the first is now) and claims it; a
    /// deadline already past is claimed at once. False at shutdown.
    pub(crate) async fn tick(&mut self, shutdown: &CancellationToken) -> bool {
        let now = Instant::now();
        let deadline = match self.next {
            Some(next) if self.slack.is_none_or(|slack| next + slack >= now) => next,
            _ => now,
        };
        self.next = Some(deadline + self.period);
        if self.period.is_zero() {
            return !shutdown.is_cancelled();
        }
        sleep_until(deadline, shutdown).await
    }

    /// Claims the next deadline if it has already passed, without waiting:
    /// a tick missed while the caller was busy. Always true with a zero
    /// period.
    pub(crate) fn try_tick(&mut self) -> bool {
        match self.next {
            Some(next) if next <= Instant::now() => {
                self.next = Some(next + self.period);
                true
            }
            _ => false,
        }
    }

    /// Whether the next deadline has passed already (never with a zero
    /// period): the caller is at least a tick behind.
    pub(crate) fn behind(&self) -> bool {
        !self.period.is_zero() && self.next.is_some_and(|next| next <= Instant::now())
    }

    /// Drops the deadlines missed so far: the next tick is now.
    pub(crate) fn restart(&mut self) {
        self.next = None;
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

/// What a producer handed to [`pump`] appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Produced {
    /// The rest of the tick: the next call starts a new one.
    Tick,
    /// A part of the tick; more is to come for the same time.
    More,
}

/// A generating source's producer, as [`pump`] calls it: append the
/// messages for this time, and say whether the tick is complete.
pub(crate) type Produce<'a> =
    dyn FnMut(i64, &mut Vec<Message>) -> Result<Produced, PublishError> + Send + 'a;

/// What [`pump`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pumped {
    pub(crate) ticks: u64,
    pub(crate) messages: u64,
}

/// The loop of a generating source: every `period` (on fixed deadlines),
/// `produce` the messages of one tick for a time that strictly increases,
/// and publish them; with a zero period, as fast as the bus takes them.
/// `published` sees each message once it is on the bus. Ends at `stop` or
/// shutdown.
///
/// `produce` appends messages for the time it is given and says whether
/// the tick is complete; a large tick comes in parts, each published once
/// a batch is full, so no more than about a batch is held at once.
///
/// Ticks that fall due while a publish is under way are not lost: the next
/// round produces every tick already due, up to `batch` messages, and
/// publishes them in one call, so a bus slower than the period still gets
/// the asked rate as long as one batch a publish can carry it. Beyond that
/// the missed ticks are dropped, counting starts again from now, and a
/// warning says so once: a long stall is not followed by a burst.
pub(crate) async fn pump(
    publisher: &Publisher<'_>,
    period: Duration,
    stop: &StopAfter,
    shutdown: &CancellationToken,
    produce: &mut Produce<'_>,
    published: &mut (dyn FnMut(&Message) + Send),
) -> Result<Pumped, PublishError> {
    let stop_at = stop.duration.map(|d| Instant::now() + d);
    let ticks_left = |out: &Pumped| stop.ticks.is_none_or(|n| out.ticks < n);
    let time_left = || stop_at.is_none_or(|t| Instant::now() < t);
    let mut ticker = Ticker::catching_up(period);
    let mut clock = Clock::default();
    let mut pending: Vec<Message> = Vec::new();
    let mut out = Pumped::default();
    let mut warned = false;
    while ticks_left(&out) && time_left() {
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
        // Messages produced in this round: the tick, and those already due.
        let mut round = 0;
        loop {
            let now_ms = clock.stamp();
            loop {
                let before = pending.len();
                let produced = produce(now_ms, &mut pending)?;
                round += pending.len() - before;
                if produced == Produced::Tick {
                    break;
                }
                let full = whole_batches(&pending, publisher);
                if !send_front(publisher, &mut pending, full, &mut out, shutdown, published).await?
                {
                    return Ok(out);
                }
            }
            out.ticks += 1;
            let room = round < publisher.batch() && ticks_left(&out) && time_left();
            if !(room && ticker.try_tick()) {
                break;
            }
        }
        // Still behind after a batch's worth: the bus cannot keep up.
        if ticker.behind() && round >= publisher.batch() {
            if !warned {
                tracing::warn!(
                    topic = publisher.topic,
                    ?period,
                    batch = publisher.batch(),
                    "publishing takes longer than the period, even a batch at a time; \
                     dropping the ticks missed"
                );
                warned = true;
            }
            ticker.restart();
        }
        // A tick's messages go out on time; as fast as possible, only whole
        // batches do, and the rest waits for the next ticks.
        let n = if period.is_zero() {
            whole_batches(&pending, publisher)
        } else {
            pending.len()
        };
        if !send_front(publisher, &mut pending, n, &mut out, shutdown, published).await? {
            return Ok(out);
        }
    }
    let n = pending.len();
    send_front(publisher, &mut pending, n, &mut out, shutdown, published).await?;
    Ok(out)
}

/// How many of `pending` fill whole batches.
fn whole_batches(pending: &[Message], publisher: &Publisher<'_>) -> usize {
    pending.len() / publisher.batch() * publisher.batch()
}

/// Publishes the first `n` of `pending`, counts and shows what went out;
/// false at shutdown.
async fn send_front(
    publisher: &Publisher<'_>,
    pending: &mut Vec<Message>,
    n: usize,
    out: &mut Pumped,
    shutdown: &CancellationToken,
    published: &mut (dyn FnMut(&Message) + Send),
) -> Result<bool, PublishError> {
    if n == 0 {
        return Ok(true);
    }
    let messages: Vec<Message> = pending.drain(..n).collect();
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
    use weir_bus::scripted::{Fault, Scripted};

    use super::*;

    /// One message per tick.
    fn one(_now_ms: i64, out: &mut Vec<Message>) -> Result<Produced, PublishError> {
        out.push(Message::new(&b"{}"[..]));
        Ok(Produced::Tick)
    }

    #[tokio::test(start_paused = true)]
    async fn missed_ticks_are_claimed_or_dropped() {
        let shutdown = CancellationToken::new();
        let second = Duration::from_secs(1);
        let mut ticker = Ticker::catching_up(second);
        let start = Instant::now();
        assert!(ticker.tick(&shutdown).await);
        assert!(!ticker.try_tick() && !ticker.behind());
        tokio::time::sleep(Duration::from_millis(3500)).await;
        // The deadlines at 1, 2 and 3 s have passed; the one at 4 s has not.
        assert!(ticker.behind());
        assert_eq!((0..5).filter(|_| ticker.try_tick()).count(), 3);
        assert!(!ticker.behind());
        assert!(ticker.tick(&shutdown).await);
        assert_eq!(Instant::now() - start, 4 * second);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(ticker.behind());
        ticker.restart();
        assert!(ticker.tick(&shutdown).await);
        assert_eq!(Instant::now() - start, Duration::from_millis(6500));
        assert!(!ticker.behind());
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_stall_is_not_followed_by_a_burst() {
        // 1000 ticks a second; the first publish takes 5 s, the others 1 ms.
        let bus = Scripted::sink();
        bus.then(Fault::Delay(Duration::from_secs(5)));
        bus.set(Some(Fault::Delay(Duration::from_millis(1))));
        let publisher = Publisher::new(&bus, "t", 1000);
        let stop = StopAfter {
            ticks: None,
            duration: Some(Duration::from_secs(6)),
        };
        let pumped = pump(
            &publisher,
            Duration::from_millis(1),
            &stop,
            &CancellationToken::new(),
            &mut one,
            &mut |_| {},
        )
        .await
        .unwrap();
        // The first tick; a batch of those missed during the stall, the
        // other 4000 dropped; then about 1000 in the last second, not the
        // 5000 the stall missed.
        let n = pumped.messages;
        assert!((1990..=2002).contains(&n), "{n} messages");
        assert_eq!(bus.batch_sizes()[..2], [1, 1000]);
        assert_eq!(bus.messages().len() as u64, n);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tick_larger_than_a_batch_is_published_in_parts() {
        let bus = Scripted::sink();
        let publisher = Publisher::new(&bus, "t", 100);
        let stop = StopAfter {
            ticks: Some(3),
            duration: None,
        };
        // Ten parts of 50 messages a tick.
        let mut part = 0;
        let mut most_held = 0;
        let mut produce = |_now_ms, out: &mut Vec<Message>| {
            most_held = most_held.max(out.len());
            out.extend((0..50).map(|_| Message::new(&b"{}"[..])));
            part = (part + 1) % 10;
            Ok(if part == 0 {
                Produced::Tick
            } else {
                Produced::More
            })
        };
        for period in [Duration::ZERO, Duration::from_secs(1)] {
            let pumped = pump(
                &publisher,
                period,
                &stop,
                &CancellationToken::new(),
                &mut produce,
                &mut |_| {},
            )
            .await
            .unwrap();
            assert_eq!((pumped.ticks, pumped.messages), (3, 1500), "{period:?}");
        }
        assert!(most_held < 100, "{most_held} messages held at once");
        assert_eq!(bus.batch_sizes(), [100; 30]);
    }

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
