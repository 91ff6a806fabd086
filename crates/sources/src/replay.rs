//! Replaying a DCGM export onto a topic: `weir stream dcgm`.
//!
//! The file is read on tokio's blocking pool and streamed to the publisher
//! through a bounded channel, a pass at a time, so a large file is never
//! held in memory and a slow bus slows the reading down. Consecutive rows
//! with the same `timestamp` text form one scrape. Each sample is one
//! message: key = the GPU's `UUID` label (else `Hostname/gpu`), so each
//! GPU's samples stay in order; payload = [`Sample::encode`].
//!
//! Pacing ([`ReplayConfig`]): one scrape per `interval` on fixed deadlines;
//! or `rate` samples per second; or, with a zero interval, as fast as the
//! bus takes them, whole scrapes coalesced into batches of up to `batch`
//! messages (a larger scrape is split).
//!
//! Time: by default each scrape is stamped with the time it is published
//! (milliseconds), strictly after the previous scrape: every scrape gets
//! its own millisecond, since each series needs a time of its own in every
//! scrape. A replay of more than a thousand scrapes a second (as fast as
//! possible, a file of small scrapes) therefore runs ahead of the clock,
//! and comes back to it once it slows down or stops. With
//! `keep_timestamps` the file's times are kept, and each further pass is
//! shifted past the previous one by the pass's span plus one interval (the
//! file's own scrape gap when the interval is zero; at least 1 ms), so that
//! time keeps moving forward in every series.
//!
//! Bad rows are skipped: the first pass logs the first ten
//! (`FILE line N: reason`) and every pass counts them. The replay stops at
//! shutdown: nothing new starts, and a publish under way is abandoned (it
//! may or may not have landed, and is not counted).

mod feed;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weir_bus::{Bus, Message};
use weir_telemetry::Sample;

use crate::MIN_RATE;
use crate::dcgm::{BadRow, DcgmError, Reading, Row, gpu_key};
use crate::publish::{Clock, PublishError, Publisher, Ticker, sleep_until};
use feed::{open_reader, read_passes};

/// How a file is replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayConfig {
    pub topic: String,
    /// One scrape per interval; zero = as fast as the bus takes them.
    pub interval: Duration,
    /// Samples per second instead of scrapes per interval.
    pub rate: Option<f64>,
    /// How many times to read the file; `None` = until shutdown.
    pub passes: Option<u64>,
    /// Keep the file's timestamps (shifted forward on each further pass)
    /// instead of stamping scrapes with the time they are published.
    pub keep_timestamps: bool,
    /// Messages per publish at most.
    pub batch: usize,
}

impl Default for ReplayConfig {
    fn default() -> ReplayConfig {
        ReplayConfig {
            topic: "telemetry".into(),
            interval: Duration::from_millis(100),
            rate: None,
            passes: Some(1),
            keep_timestamps: false,
            batch: 1000,
        }
    }
}

/// What a replay did; totals over every pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Data rows read: samples, blanks and bad rows.
    pub rows: u64,
    /// Samples published.
    pub samples: u64,
    /// Rows dropped for a blank value (empty, or a DCGM sentinel).
    pub blank: u64,
    /// Rows skipped as bad.
    pub bad: u64,
    /// Scrapes (groups of rows sharing a timestamp) started.
    pub scrapes: u64,
    /// Passes over the file started.
    pub passes: u64,
}

/// Where a running replay is, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayProgress {
    /// The pass under way, from 1.
    pub pass: u64,
    /// Bytes of the file read in this pass.
    pub bytes: u64,
    pub totals: ReplaySummary,
}

/// Why a replay could not start or stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot open {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}")]
    Dcgm {
        path: String,
        #[source]
        source: DcgmError,
    },
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("{0}")]
    Config(String),
}

/// A DCGM export ready to replay: the file opens and its header is one.
#[derive(Debug)]
pub struct Replay {
    path: PathBuf,
    config: ReplayConfig,
    bytes: u64,
}

/// Bad rows logged one by one in the first pass; later ones are counted.
const BAD_ROWS_LOGGED: u64 = 10;

impl Replay {
    /// Checks the configuration, opens the file and reads its header.
    pub fn open(path: &Path, config: ReplayConfig) -> Result<Replay, ReplayError> {
        if config.batch == 0 {
            return Err(ReplayError::Config("batch must be at least 1".into()));
        }
        if let Some(rate) = config.rate
            && !(rate.is_finite() && rate >= MIN_RATE)
        {
            return Err(ReplayError::Config(format!(
                "rate must be at least one sample a day (1/86400 per second), not {rate}"
            )));
        }
        if config.passes == Some(0) {
            return Err(ReplayError::Config("passes must be at least 1".into()));
        }
        let reader = open_reader(path)?;
        drop(reader);
        let bytes = std::fs::metadata(path).map_or(0, |m| m.len());
        Ok(Replay {
            path: path.to_path_buf(),
            config,
            bytes,
        })
    }

    /// The file's size in bytes when opened: the length of one pass.
    pub fn file_bytes(&self) -> u64 {
        self.bytes
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replays the file until its passes are done or `shutdown` fires.
    pub async fn run(
        self,
        bus: &dyn Bus,
        progress: &mut (dyn FnMut(&ReplayProgress) + Send),
        shutdown: &CancellationToken,
    ) -> Result<ReplaySummary, ReplayError> {
        let (tx, mut rx) = mpsc::channel(4);
        let path = self.path.clone();
        let passes = self.config.passes;
        tokio::task::spawn_blocking(move || read_passes(&path, passes, &tx));
        let publisher = Publisher::new(bus, &self.config.topic, self.config.batch);
        let mut state = State::new(&self.config, publisher, progress);
        let name = self.path.display().to_string();
        while !state.stopped {
            let chunk = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                chunk = rx.recv() => chunk,
            };
            let Some(chunk) = chunk else { break };
            let chunk = chunk?;
            if chunk.pass != state.pass {
                state.begin_pass(chunk.pass);
            }
            // Bytes read by each row, spread evenly over the chunk, so the
            // progress follows what is published, not what is read ahead.
            let (from, n) = (state.bytes_read, chunk.items.len().max(1) as u64);
            let per_row = chunk.bytes.saturating_sub(from) as f64 / n as f64;
            state.bytes_read = chunk.bytes;
            for (i, item) in chunk.items.into_iter().enumerate() {
                state.bytes = from + (per_row * (i + 1) as f64) as u64;
                match item {
                    Ok(row) => state.row(row, shutdown).await?,
                    Err(bad) => state.bad(&name, &bad),
                }
                if state.stopped {
                    break;
                }
            }
            state.bytes = chunk.bytes;
            if chunk.end && !state.stopped {
                let had_samples = state.end_pass(shutdown).await?;
                let more = passes.is_none_or(|n| chunk.pass < n);
                if more && !had_samples {
                    tracing::warn!("{name}: a pass gave no samples; not reading it again");
                    break;
                }
            }
        }
        drop(rx);
        Ok(state.summary)
    }
}

/// How publishing is paced.
#[derive(Debug)]
enum Pace {
    /// As fast as the bus takes them, scrapes coalesced into batches.
    Fast,
    /// One scrape per tick.
    Interval(Ticker),
    /// Samples per second: the batch starting with sample `n` waits for
    /// `start + n / per_second`.
    Rate {
        per_second: f64,
        start: Option<Instant>,
        chunk: usize,
    },
}

/// The publishing side of a replay.
struct State<'a> {
    config: &'a ReplayConfig,
    publisher: Publisher<'a>,
    progress: &'a mut (dyn FnMut(&ReplayProgress) + Send),
    pace: Pace,
    clock: Clock,
    summary: ReplaySummary,
    pass: u64,
    /// Bytes of this pass behind the rows handled so far, and behind the
    /// rows received from the reading thread.
    bytes: u64,
    bytes_read: u64,
    stopped: bool,
    /// Ready to publish.
    pending: Vec<Message>,
    /// The scrape being read (fast pacing only; otherwise rows go straight
    /// to `pending`).
    scrape: Vec<Message>,
    /// The current scrape's timestamp text and the time stamped on it.
    scrape_text: Option<String>,
    stamp: i64,
    /// Keep-timestamps bookkeeping: what this pass adds to the file's
    /// times, and the span and scrape gap of the file's times in this pass.
    offset: i64,
    span: Option<(i64, i64)>,
    gap: Option<i64>,
    last_scrape_ts: Option<i64>,
    pass_samples: u64,
    bad_logged: u64,
}

impl std::fmt::Debug for State<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

impl<'a> State<'a> {
    fn new(
        config: &'a ReplayConfig,
        publisher: Publisher<'a>,
        progress: &'a mut (dyn FnMut(&ReplayProgress) + Send),
    ) -> State<'a> {
        let pace = match config.rate {
            Some(per_second) => Pace::Rate {
                per_second,
                start: None,
                chunk: ((per_second / 20.0).ceil() as usize).clamp(1, publisher.batch()),
            },
            None if config.interval.is_zero() => Pace::Fast,
            None => Pace::Interval(Ticker::new(config.interval)),
        };
        State {
            config,
            publisher,
            progress,
            pace,
            clock: Clock::default(),
            summary: ReplaySummary::default(),
            pass: 0,
            bytes: 0,
            bytes_read: 0,
            stopped: false,
            pending: Vec::new(),
            scrape: Vec::new(),
            scrape_text: None,
            stamp: 0,
            offset: 0,
            span: None,
            gap: None,
            last_scrape_ts: None,
            pass_samples: 0,
            bad_logged: 0,
        }
    }

    fn begin_pass(&mut self, pass: u64) {
        self.pass = pass;
        self.bytes_read = 0;
        self.summary.passes += 1;
        self.scrape_text = None;
        self.span = None;
        self.last_scrape_ts = None;
        self.pass_samples = 0;
    }

    /// The pass's rows are all in: publish what is left, and move the
    /// timeline past this pass. False when the pass gave no sample (another
    /// would give none either).
    async fn end_pass(&mut self, shutdown: &CancellationToken) -> Result<bool, ReplayError> {
        self.end_scrape(shutdown).await?;
        self.flush(shutdown).await?;
        if let Some((lo, hi)) = self.span {
            let gap = match self.pace {
                Pace::Interval(_) => self.config.interval.as_millis() as i64,
                _ => self.gap.unwrap_or(1),
            };
            self.offset += (hi - lo + gap).max(1);
        }
        self.report();
        Ok(self.pass_samples > 0)
    }

    fn bad(&mut self, file: &str, bad: &BadRow) {
        self.summary.rows += 1;
        self.summary.bad += 1;
        if self.pass == 1 {
            self.bad_logged += 1;
            if self.bad_logged <= BAD_ROWS_LOGGED {
                tracing::warn!("{file} {bad}");
            }
            if self.bad_logged == BAD_ROWS_LOGGED + 1 {
                tracing::warn!("{file}: more bad rows; counting them without reporting each");
            }
        }
    }

    async fn row(&mut self, row: Row, shutdown: &CancellationToken) -> Result<(), ReplayError> {
        self.summary.rows += 1;
        let mut sample = match row.reading {
            Reading::Sample(s) => s,
            Reading::Blank(_) => {
                self.summary.blank += 1;
                return Ok(());
            }
        };
        if self.scrape_text.as_deref() != Some(row.timestamp.as_str()) {
            self.start_scrape(row.timestamp, sample.ts, shutdown)
                .await?;
            if self.stopped {
                return Ok(());
            }
        }
        if self.config.keep_timestamps {
            let (lo, hi) = self.span.unwrap_or((sample.ts, sample.ts));
            self.span = Some((lo.min(sample.ts), hi.max(sample.ts)));
            sample.ts = sample.ts.saturating_add(self.offset);
        } else {
            sample.ts = self.stamp;
        }
        self.pass_samples += 1;
        let message = encode(&sample)?;
        match self.pace {
            Pace::Fast => {
                self.scrape.push(message);
                if self.scrape.len() >= self.publisher.batch() {
                    // A scrape larger than a batch: publish what is pending,
                    // then this part of the scrape on its own.
                    self.flush(shutdown).await?;
                    self.pending = std::mem::take(&mut self.scrape);
                    self.flush(shutdown).await?;
                }
            }
            Pace::Interval(_) => {
                self.pending.push(message);
                if self.pending.len() >= self.publisher.batch() {
                    self.flush(shutdown).await?;
                }
            }
            Pace::Rate { chunk, .. } => {
                self.pending.push(message);
                if self.pending.len() >= chunk {
                    self.flush(shutdown).await?;
                }
            }
        }
        Ok(())
    }

    /// A new timestamp: close the scrape before, wait for this one's turn
    /// and stamp it.
    async fn start_scrape(
        &mut self,
        text: String,
        file_ts: i64,
        shutdown: &CancellationToken,
    ) -> Result<(), ReplayError> {
        self.end_scrape(shutdown).await?;
        if let Pace::Interval(_) = self.pace {
            self.flush(shutdown).await?;
            let Pace::Interval(ticker) = &mut self.pace else {
                unreachable!()
            };
            if !ticker.tick(shutdown).await {
                self.stopped = true;
                return Ok(());
            }
        }
        if let Some(prev) = self.last_scrape_ts
            && file_ts > prev
        {
            self.gap = Some(file_ts - prev);
        }
        self.last_scrape_ts = Some(file_ts);
        self.stamp = self.clock.stamp();
        self.scrape_text = Some(text);
        self.summary.scrapes += 1;
        Ok(())
    }

    /// Fast pacing: the scrape just read joins the pending batch, which is
    /// published first if the scrape would not fit.
    async fn end_scrape(&mut self, shutdown: &CancellationToken) -> Result<(), ReplayError> {
        if self.scrape.is_empty() {
            return Ok(());
        }
        if self.pending.len() + self.scrape.len() > self.publisher.batch() {
            self.flush(shutdown).await?;
        }
        self.pending.append(&mut self.scrape);
        if self.pending.len() >= self.publisher.batch() {
            self.flush(shutdown).await?;
        }
        Ok(())
    }

    /// Publishes what is pending, at its time under rate pacing.
    async fn flush(&mut self, shutdown: &CancellationToken) -> Result<(), ReplayError> {
        if self.pending.is_empty() || self.stopped {
            return Ok(());
        }
        if let Pace::Rate {
            per_second, start, ..
        } = &mut self.pace
        {
            let start = *start.get_or_insert_with(Instant::now);
            let due = Duration::try_from_secs_f64(self.summary.samples as f64 / *per_second)
                .ok()
                .and_then(|wait| start.checked_add(wait));
            let on_time = match due {
                Some(due) => sleep_until(due, shutdown).await,
                // Further off than a clock can say: never, in practice.
                None => {
                    shutdown.cancelled().await;
                    false
                }
            };
            if !on_time {
                self.stopped = true;
                return Ok(());
            }
        }
        let messages = std::mem::take(&mut self.pending);
        let sent = self.publisher.send(messages, shutdown).await?;
        self.summary.samples += sent.published;
        self.stopped |= sent.stopped;
        self.report();
        Ok(())
    }

    fn report(&mut self) {
        (self.progress)(&ReplayProgress {
            pass: self.pass,
            bytes: self.bytes,
            totals: self.summary,
        });
    }
}

fn encode(sample: &Sample) -> Result<Message, PublishError> {
    let payload = sample
        .encode()
        .map_err(|e| PublishError::Encode(e.to_string()))?;
    let mut message = Message::new(payload);
    message.key = gpu_key(&sample.labels).map(Into::into);
    Ok(message)
}
