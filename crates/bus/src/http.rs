//! The `http://` backend: the bus over a `weir broker`, through
//! [`weir_api::Client`].
//!
//! - **Publish** sends one `/publish/batch` request per call. A message's
//!   bytes travel as [`wire::encode_payload`] writes them; its key as UTF-8
//!   text (lossy); its headers as a map (of repeated names the first wins),
//!   except [`METADATA_HEADER`], which must hold JSON and travels as the
//!   request's `metadata` (the broker stores it under that header again, so
//!   it comes back as a header).
//! - **Subscribe** opens the SSE stream and waits for its `connected` event,
//!   so the member has joined (and a group started at `latest` has its
//!   place) when `subscribe` returns. A reader task then turns `message`
//!   events into [`Delivery`]s on a channel of `max_in_flight` slots; when the
//!   stream ends or fails (a broker restart) it reconnects with the same
//!   consumer id, backing off from 50 ms to 2 s, and logs each attempt with
//!   `tracing::warn`. Only an answer no retry can fix (400, 401, 403, 404,
//!   413) ends it; `receive` returns that error, then [`BusError::Closed`].
//!   Dropping the subscription stops the task and closes the stream.
//! - **Settle**: each subscription's acker hands requests to one task that
//!   coalesces them (group commit): whatever queued while the previous
//!   request was in flight goes out as one request per kind (acks; nacks
//!   with one delay; rejects with one reason), each caller getting its own
//!   ids' statuses. A request refused as a whole for one caller's bad id
//!   (400) or size (413) is retried caller by caller, so callers never fail
//!   for each other.
//! - **Close** refuses new calls ([`BusError::Closed`] from the bus, its
//!   subscriptions and their ackers), stops every reader and waits for the
//!   settles already asked for.
//!
//! Errors map by what a caller can do (`bus_error`): no connection, 502,
//! 503, 504 and 429 are `Unavailable` (retry); 400 and 413 `Invalid`; 401
//! and 403 `Unauthorized`; 404 `NotFound`; anything else `Internal`.
//!
//! Differences from the embedded backend: the broker pushes, so a message
//! is delivered (leased, counted in flight) as soon as it is on the stream,
//! up to `max_in_flight`, before `receive` hands it out; header order is not
//! kept (the wire has a map); non-UTF-8 keys arrive with replacement
//! characters; after a reconnect, deliveries from the old stream no longer
//! count against the broker's in-flight limit for this member.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use weir_api::wire::{
    self, Connected, METADATA_HEADER, PublishRequest, PublishResponse, SeekRequest, SettleRequest,
    SettleResponse, WireMessage,
};
use weir_api::{Client, ClientError, EventStream, SettleKind, SubscribeParams};

use crate::message::{Acker, Delivery, Message, Receipt, Settle, Settler};
use crate::{
    Bus, BusError, ConnectOptions, Result, SeekTarget, SettleStatus, Start, Stats,
    SubscribeOptions, Subscription,
};

/// The first pause before reconnecting a subscription's stream.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// The longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A stream with no byte for this long is taken for dead: three times the
/// broker's default keep-alive interval (15 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(45);
/// Ids gathered into one settle request at most (a single call with more
/// still goes whole).
const MAX_IDS_PER_SETTLE: usize = 4096;
/// Settle calls queued per subscription before callers wait.
const SETTLE_QUEUE: usize = 1024;
/// Deliveries buffered per subscription at most, whatever its
/// `max_in_flight` (past it the reader stops reading the stream).
const MAX_BUFFERED: usize = 1 << 16;

/// The bus over a `weir broker`. Cheap to clone: clones share the
/// connection pool and whether the bus is closed.
#[derive(Debug, Clone)]
pub struct HttpBus {
    shared: Arc<Shared>,
}

/// What the bus, its subscriptions and their ackers share.
#[derive(Debug)]
struct Shared {
    client: Client,
    closed: AtomicBool,
    /// Settle calls not yet answered; `close` waits for 0.
    settling: watch::Sender<usize>,
    /// Every subscription's reader task still running, for `close`.
    readers: Mutex<Vec<AbortHandle>>,
}

impl Shared {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            Err(BusError::Closed)
        } else {
            Ok(())
        }
    }

    fn readers(&self) -> std::sync::MutexGuard<'_, Vec<AbortHandle>> {
        self.readers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl HttpBus {
    /// A bus over the broker at `url` (`http://host:port`), with
    /// `options.auth_token` as its bearer token. Connects on first use.
    pub fn new(url: &str, options: &ConnectOptions) -> Result<HttpBus> {
        let client = Client::new(url, options.auth_token.clone()).map_err(bus_error)?;
        Ok(HttpBus {
            shared: Arc::new(Shared {
                client,
                closed: AtomicBool::new(false),
                settling: watch::Sender::new(0),
                readers: Mutex::default(),
            }),
        })
    }

    /// The API client underneath, for what the bus does not cover (dead
    /// letters, redrive, health).
    pub fn client(&self) -> &Client {
        &self.shared.client
    }
}

#[async_trait::async_trait]
impl Bus for HttpBus {
    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<Vec<Receipt>> {
        self.shared.check_open()?;
        let count = messages.len();
        let items = messages
            .into_iter()
            .map(publish_request)
            .collect::<Result<Vec<_>>>()?;
        let answer = self
            .shared
            .client
            .publish_batch(topic, &items)
            .await
            .map_err(bus_error)?;
        if answer.results.len() != count {
            return Err(BusError::Internal(format!(
                "the broker answered {} receipts for {count} messages",
                answer.results.len()
            )));
        }
        answer.results.into_iter().map(receipt).collect()
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        self.shared.check_open()?;
        if options.max_in_flight == 0 {
            return Err(BusError::Invalid("max_in_flight must be at least 1".into()));
        }
        let mut params = SubscribeParams {
            topic: topic.to_string(),
            consumer_group: group.to_string(),
            consumer_id: Some(options.consumer_id).filter(|id| !id.is_empty()),
            start: Some(match options.start {
                Start::Earliest => weir_api::Start::Earliest,
                Start::Latest => weir_api::Start::Latest,
            }),
            visibility_timeout_ms: options.visibility_timeout.map(|d| d.as_millis() as u64),
            max_deliveries: options.max_deliveries,
            max_in_flight: Some(options.max_in_flight),
        };
        let (stream, consumer_id) = open_stream(&self.shared.client, &params)
            .await
            .map_err(bus_error)?;
        // Reconnections come back as the same member.
        params.consumer_id = Some(consumer_id);

        let (jobs, queued) = mpsc::channel(SETTLE_QUEUE);
        tokio::spawn(run_settles(
            self.shared.client.clone(),
            topic.to_string(),
            group.to_string(),
            queued,
        ));
        let acker = Acker::new(Arc::new(HttpSettler {
            jobs,
            shared: Arc::clone(&self.shared),
        }));
        let (tx, deliveries) = mpsc::channel(options.max_in_flight.min(MAX_BUFFERED));
        let reader = Reader {
            shared: Arc::clone(&self.shared),
            params,
            acker: acker.clone(),
            tx,
        };
        let reader = tokio::spawn(reader.run(stream));
        let mut readers = self.shared.readers();
        readers.retain(|r| !r.is_finished());
        readers.push(reader.abort_handle());
        drop(readers);
        Ok(Box::new(HttpSubscription {
            deliveries,
            acker,
            reader,
            shared: Arc::clone(&self.shared),
            failed: None,
        }))
    }

    async fn seek(&self, topic: &str, group: &str, to: SeekTarget) -> Result<()> {
        self.shared.check_open()?;
        let request = SeekRequest {
            topic: topic.to_string(),
            consumer_group: group.to_string(),
            to,
        };
        self.shared.client.seek(&request).await.map_err(bus_error)
    }

    async fn stats(&self) -> Result<Stats> {
        self.shared.check_open()?;
        self.shared.client.stats().await.map_err(bus_error)
    }

    async fn close(&self) -> Result<()> {
        self.shared.closed.store(true, Ordering::SeqCst);
        for reader in self.shared.readers().drain(..) {
            reader.abort();
        }
        // The sender lives in `shared`, so this ends only at 0.
        let _ = self.shared.settling.subscribe().wait_for(|&n| n == 0).await;
        Ok(())
    }
}

/// Opens a subscription's event stream and reads its `connected` event:
/// the stream, and the consumer id the broker knows this member by.
async fn open_stream(
    client: &Client,
    params: &SubscribeParams,
) -> Result<(EventStream, String), ClientError> {
    let mut stream = client
        .subscribe(params)
        .await?
        .with_idle_timeout(IDLE_TIMEOUT);
    match stream.next().await {
        Some(Ok(event)) if event.event == "connected" => {
            let connected: Connected = serde_json::from_str(&event.data).map_err(|e| {
                ClientError::Decode(format!("bad `connected` event {:?}: {e}", event.data))
            })?;
            Ok((stream, connected.consumer_id))
        }
        Some(Ok(event)) => Err(ClientError::Decode(format!(
            "the event stream began with a {:?} event, not `connected`",
            event.event
        ))),
        Some(Err(e)) => Err(e),
        None => Err(ClientError::Connect(
            "the broker ended the event stream before `connected`".into(),
        )),
    }
}

/// Whether reconnecting cannot help: the broker refuses this subscription
/// itself, not for now.
fn ends_subscription(e: &ClientError) -> bool {
    match e {
        ClientError::Url(_) | ClientError::Decode(_) => true,
        ClientError::Status { status, .. } => matches!(status, 400 | 401 | 403 | 404 | 413),
        ClientError::Connect(_) => false,
    }
}

/// One subscription's reader task: SSE events in, deliveries out.
#[derive(Debug)]
struct Reader {
    shared: Arc<Shared>,
    params: SubscribeParams,
    acker: Acker,
    tx: mpsc::Sender<Result<Delivery>>,
}

/// Why a stream stopped being read.
enum Stop {
    /// The subscription is gone.
    Dropped,
    /// The stream ended or failed, for this reason.
    Ended(String),
}

impl Reader {
    /// Reads `stream`, then reconnects and reads again, until the
    /// subscription is dropped or the broker refuses it.
    async fn run(self, mut stream: EventStream) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let opened = Instant::now();
            let why = match self.pump(&mut stream).await {
                Stop::Dropped => return,
                Stop::Ended(why) => why,
            };
            if opened.elapsed() >= MAX_BACKOFF {
                backoff = MIN_BACKOFF;
            }
            tracing::warn!(
                topic = %self.params.topic,
                group = %self.params.consumer_group,
                consumer = ?self.params.consumer_id,
                "subscription stream lost ({why}); reconnecting"
            );
            stream = loop {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                if self.tx.is_closed() || self.shared.check_open().is_err() {
                    return;
                }
                match open_stream(&self.shared.client, &self.params).await {
                    Ok((stream, _)) => break stream,
                    Err(e) if ends_subscription(&e) => {
                        tracing::warn!(
                            topic = %self.params.topic,
                            group = %self.params.consumer_group,
                            consumer = ?self.params.consumer_id,
                            "subscription refused on reconnecting: {e}"
                        );
                        let _ = self.tx.send(Err(bus_error(e))).await;
                        return;
                    }
                    Err(e) => tracing::warn!(
                        topic = %self.params.topic,
                        group = %self.params.consumer_group,
                        consumer = ?self.params.consumer_id,
                        "reconnecting the subscription failed ({e}); retrying in {backoff:?}"
                    ),
                }
            };
        }
    }

    async fn pump(&self, stream: &mut EventStream) -> Stop {
        loop {
            let event = match stream.next().await {
                None => return Stop::Ended("the broker ended the event stream".into()),
                Some(Err(e)) => return Stop::Ended(e.to_string()),
                Some(Ok(event)) => event,
            };
            match event.event.as_str() {
                "message" => match decode_delivery(&event.data, &self.acker) {
                    Ok(delivery) => {
                        if self.tx.send(Ok(delivery)).await.is_err() {
                            return Stop::Dropped;
                        }
                    }
                    // It stays leased to us and comes again after its
                    // visibility timeout, then to the dead-letter topic.
                    Err(e) => tracing::warn!(
                        topic = %self.params.topic,
                        id = ?event.id,
                        "skipping a delivery that cannot be decoded: {e}"
                    ),
                },
                "error" => tracing::warn!(
                    topic = %self.params.topic,
                    group = %self.params.consumer_group,
                    "the broker reports on the subscription stream: {}",
                    event.data
                ),
                _ => {}
            }
        }
    }
}

/// One member of a group on a broker.
#[derive(Debug)]
struct HttpSubscription {
    deliveries: mpsc::Receiver<Result<Delivery>>,
    acker: Acker,
    reader: JoinHandle<()>,
    shared: Arc<Shared>,
    /// An error met while draining, for the next `receive`.
    failed: Option<BusError>,
}

impl Drop for HttpSubscription {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[async_trait::async_trait]
impl Subscription for HttpSubscription {
    async fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        self.shared.check_open()?;
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if max == 0 {
            return Ok(Vec::new());
        }
        let first = if wait.is_zero() {
            match self.deliveries.try_recv() {
                Ok(first) => first,
                Err(mpsc::error::TryRecvError::Empty) => return Ok(Vec::new()),
                Err(mpsc::error::TryRecvError::Disconnected) => return Err(BusError::Closed),
            }
        } else {
            match tokio::time::timeout(wait, self.deliveries.recv()).await {
                Err(_) => return Ok(Vec::new()),
                Ok(None) => return Err(BusError::Closed),
                Ok(Some(first)) => first,
            }
        };
        let mut out = vec![first?];
        while out.len() < max {
            match self.deliveries.try_recv() {
                Ok(Ok(delivery)) => out.push(delivery),
                Ok(Err(e)) => {
                    self.failed = Some(e);
                    break;
                }
                Err(_) => break,
            }
        }
        Ok(out)
    }

    fn acker(&self) -> Acker {
        self.acker.clone()
    }
}

/// Settles ids of one topic and group by handing them to its settle task.
#[derive(Debug)]
struct HttpSettler {
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

/// One settle call waiting for its answer.
#[derive(Debug)]
struct Job {
    ids: Vec<String>,
    how: Settle,
    reply: oneshot::Sender<Result<Vec<SettleStatus>>>,
    /// Counts the call as unanswered until the job is dropped.
    _pending: Pending,
}

/// One unanswered settle call, for `close` to wait on.
#[derive(Debug)]
struct Pending(Arc<Shared>);

impl Pending {
    fn new(shared: &Arc<Shared>) -> Pending {
        shared.settling.send_modify(|n| *n += 1);
        Pending(Arc::clone(shared))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.settling.send_modify(|n| *n -= 1);
    }
}

#[async_trait::async_trait]
impl Settler for HttpSettler {
    async fn settle(&self, ids: &[String], how: Settle) -> Result<Vec<SettleStatus>> {
        // Counted before the check, so `close` either waits for this call
        // or this call sees the bus closed.
        let pending = Pending::new(&self.shared);
        self.shared.check_open()?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            ids: ids.to_vec(),
            how,
            reply,
            _pending: pending,
        };
        self.jobs.send(job).await.map_err(|_| BusError::Closed)?;
        answer
            .await
            .map_err(|_| BusError::Internal("the settle task stopped".into()))?
    }
}

/// A subscription's settle task: until every acker is dropped, takes all
/// the calls queued and sends them as one request per kind.
async fn run_settles(
    client: Client,
    topic: String,
    group: String,
    mut queued: mpsc::Receiver<Job>,
) {
    while let Some(first) = queued.recv().await {
        let mut count = first.ids.len();
        let mut jobs = vec![first];
        while count < MAX_IDS_PER_SETTLE {
            match queued.try_recv() {
                Ok(job) => {
                    count += job.ids.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        for (how, jobs) in by_kind(jobs) {
            settle_together(&client, &topic, &group, &how, jobs).await;
        }
    }
}

/// Jobs grouped by how they settle, groups in order of first appearance.
fn by_kind(jobs: Vec<Job>) -> Vec<(Settle, Vec<Job>)> {
    let mut groups: Vec<(Settle, Vec<Job>)> = Vec::new();
    for job in jobs {
        match groups.iter_mut().find(|(how, _)| *how == job.how) {
            Some((_, same)) => same.push(job),
            None => groups.push((job.how.clone(), vec![job])),
        }
    }
    groups
}

/// Sends the ids of `jobs` in one request and answers each job.
async fn settle_together(client: &Client, topic: &str, group: &str, how: &Settle, jobs: Vec<Job>) {
    let ids: Vec<String> = jobs.iter().flat_map(|j| j.ids.iter().cloned()).collect();
    match send_settle(client, topic, group, how, ids).await {
        Ok(statuses) => {
            let mut rest = &statuses[..];
            for job in jobs {
                let (mine, others) = rest.split_at(job.ids.len());
                rest = others;
                let _ = job.reply.send(Ok(mine.to_vec()));
            }
        }
        // One job's malformed id, or the sum of them all, spoiled the
        // request: each job on its own gets its own answer.
        Err(e) if jobs.len() > 1 && matches!(e.status(), Some(400 | 413)) => {
            for job in jobs {
                let ids = job.ids.clone();
                let answer = send_settle(client, topic, group, how, ids).await;
                let _ = job.reply.send(answer.map_err(bus_error));
            }
        }
        Err(e) => {
            let e = bus_error(e);
            for job in jobs {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

/// One settle request; one status per id, in order.
async fn send_settle(
    client: &Client,
    topic: &str,
    group: &str,
    how: &Settle,
    ids: Vec<String>,
) -> Result<Vec<SettleStatus>, ClientError> {
    let (kind, delay_ms, reason) = match how {
        Settle::Ack => (SettleKind::Ack, None, None),
        Settle::Nack(delay) => (SettleKind::Nack, Some(delay.as_millis() as u64), None),
        Settle::Reject(reason) => (SettleKind::Reject, None, Some(reason.clone())),
    };
    let request = SettleRequest {
        topic: topic.to_string(),
        consumer_group: group.to_string(),
        message_id: None,
        message_ids: ids,
        delay_ms,
        reason,
    };
    let answer = client.settle(kind, &request).await?;
    statuses(&request.message_ids, answer)
}

/// The status of each id, in order: the broker answers in order, but a
/// reordered or deduplicated answer is matched by id.
fn statuses(ids: &[String], answer: SettleResponse) -> Result<Vec<SettleStatus>, ClientError> {
    let results = answer.results;
    if results.len() == ids.len() && results.iter().zip(ids).all(|(r, id)| r.message_id == *id) {
        return Ok(results.into_iter().map(|r| r.status).collect());
    }
    let by_id: HashMap<&str, SettleStatus> = results
        .iter()
        .map(|r| (r.message_id.as_str(), r.status))
        .collect();
    ids.iter()
        .map(|id| {
            by_id.get(id.as_str()).copied().ok_or_else(|| {
                ClientError::Decode(format!("the broker answered no status for message {id}"))
            })
        })
        .collect()
}

/// A bus message as a batch item (its topic comes from the request).
fn publish_request(message: Message) -> Result<PublishRequest> {
    let (payload, payload_encoding) = wire::encode_payload(&message.payload);
    let mut headers = BTreeMap::new();
    let mut metadata = None;
    for (name, value) in message.headers {
        if name != METADATA_HEADER {
            headers.entry(name).or_insert(value);
        } else if metadata.is_none() {
            let json = RawValue::from_string(value).map_err(|e| {
                BusError::Invalid(format!(
                    "header {METADATA_HEADER} must hold JSON to travel over http://: {e}"
                ))
            })?;
            metadata = Some(json);
        }
    }
    Ok(PublishRequest {
        topic: None,
        payload,
        payload_encoding,
        key: message
            .key
            .map(|k| String::from_utf8_lossy(&k).into_owned()),
        headers,
        metadata,
    })
}

fn receipt(answer: PublishResponse) -> Result<Receipt> {
    let timestamp_ms = wire::parse_timestamp(&answer.timestamp).ok_or_else(|| {
        BusError::Internal(format!(
            "the broker answered a bad timestamp {:?}",
            answer.timestamp
        ))
    })?;
    Ok(Receipt {
        id: answer.message_id,
        timestamp_ms,
    })
}

/// The `data` of a `message` event as a delivery.
fn decode_delivery(data: &str, acker: &Acker) -> Result<Delivery, String> {
    let message: WireMessage =
        serde_json::from_str(data).map_err(|e| format!("not a message: {e}"))?;
    delivery(message, acker)
}

/// A wire message as a delivery; its metadata becomes the
/// [`METADATA_HEADER`] header again.
fn delivery(message: WireMessage, acker: &Acker) -> Result<Delivery, String> {
    let payload = wire::decode_payload(&message.payload, message.payload_encoding)?;
    let timestamp_ms = wire::parse_timestamp(&message.timestamp)
        .ok_or_else(|| format!("bad timestamp {:?}", message.timestamp))?;
    let mut headers: Vec<(String, String)> = message.headers.into_iter().collect();
    if let Some(metadata) = message.metadata
        && !headers.iter().any(|(name, _)| name == METADATA_HEADER)
    {
        headers.push((METADATA_HEADER.to_string(), metadata.get().to_string()));
    }
    Ok(Delivery {
        id: message.id,
        topic: message.topic,
        key: message.key.map(Bytes::from),
        headers,
        payload,
        timestamp_ms,
        delivery_count: message.delivery_count,
        acker: acker.clone(),
    })
}

/// A client error as the bus classifies it; the message names the status
/// and the broker's own words.
fn bus_error(e: ClientError) -> BusError {
    let message = e.to_string();
    match e {
        ClientError::Url(_) => BusError::Url(message),
        ClientError::Connect(_) => BusError::Unavailable(message),
        ClientError::Decode(_) => BusError::Internal(message),
        ClientError::Status { status, .. } => match status {
            400 | 413 => BusError::Invalid(message),
            401 | 403 => BusError::Unauthorized(message),
            404 => BusError::NotFound(message),
            429 | 502 | 503 | 504 => BusError::Unavailable(message),
            _ => BusError::Internal(message),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};

    use weir_api::wire::{Encoding, SettleResult};

    use super::*;

    /// A settler for deliveries built in tests; never called.
    #[derive(Debug)]
    struct NoSettler;

    #[async_trait::async_trait]
    impl Settler for NoSettler {
        async fn settle(&self, _: &[String], _: Settle) -> Result<Vec<SettleStatus>> {
            unreachable!("tests do not settle these")
        }
    }

    fn acker() -> Acker {
        Acker::new(Arc::new(NoSettler))
    }

    /// What the broker does with a publish request and gives back as a
    /// delivery (`weir-server`'s `to_queue_message` then `to_wire`): payload
    /// bytes decoded and encoded again, metadata kept under its header.
    fn through_broker(item: &PublishRequest) -> WireMessage {
        let item: PublishRequest =
            serde_json::from_str(&serde_json::to_string(item).unwrap()).unwrap();
        let bytes = wire::decode_payload(&item.payload, item.payload_encoding).unwrap();
        let mut stored: Vec<(String, String)> = item
            .headers
            .into_iter()
            .filter(|(name, _)| name != METADATA_HEADER)
            .collect();
        if let Some(metadata) = item.metadata {
            stored.push((METADATA_HEADER.into(), metadata.get().to_string()));
        }
        let (payload, payload_encoding) = wire::encode_payload(&bytes);
        let mut headers = BTreeMap::new();
        let mut metadata = None;
        for (name, value) in stored {
            if name == METADATA_HEADER {
                metadata = RawValue::from_string(value).ok();
            } else {
                headers.insert(name, value);
            }
        }
        let message = WireMessage {
            id: "2-17".into(),
            topic: "t".into(),
            key: item.key,
            payload,
            payload_encoding,
            headers,
            metadata,
            timestamp: wire::format_timestamp(1_763_900_000_123),
            delivery_count: 1,
        };
        serde_json::from_str(&serde_json::to_string(&message).unwrap()).unwrap()
    }

    /// Publishes `message` through the wire and the broker's storage rules
    /// and checks the delivery gives back `want_headers` and everything
    /// else exactly.
    fn check(message: Message, want_encoding: Encoding, want_headers: &[(&str, &str)]) {
        let item = publish_request(message.clone()).unwrap();
        assert_eq!(item.payload_encoding, want_encoding, "{message:?}");
        let d = delivery(through_broker(&item), &acker()).unwrap();
        assert_eq!(d.payload, message.payload, "payload bytes of {message:?}");
        assert_eq!(d.key, message.key, "key of {message:?}");
        let mut got: Vec<(&str, &str)> = d
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        got.sort();
        let mut want = want_headers.to_vec();
        want.sort();
        assert_eq!(got, want, "headers of {message:?}");
        assert_eq!((d.id.as_str(), d.topic.as_str()), ("2-17", "t"));
        assert_eq!((d.timestamp_ms, d.delivery_count), (1_763_900_000_123, 1));
    }

    #[test]
    fn messages_survive_the_wire_and_the_broker() {
        check(
            Message::new(r#"{"gpu": 3, "temp_c": 71.5}"#)
                .with_key("gpu-3")
                .with_header("trace-id", "t-1")
                .with_header(METADATA_HEADER, r#"{"source":"dcgm","n":[1,2]}"#),
            Encoding::Json,
            &[
                ("trace-id", "t-1"),
                (METADATA_HEADER, r#"{"source":"dcgm","n":[1,2]}"#),
            ],
        );
        check(
            Message::new("plain text")
                .with_header("a", "1")
                .with_header("b", "2"),
            Encoding::Text,
            &[("a", "1"), ("b", "2")],
        );
        check(
            Message::new(vec![0u8, 159, 255, 1]).with_key("k"),
            Encoding::Base64,
            &[],
        );
        check(Message::new(""), Encoding::Text, &[]);
        check(
            Message::new("42").with_header(METADATA_HEADER, "\"just a string\""),
            Encoding::Json,
            &[(METADATA_HEADER, "\"just a string\"")],
        );
        check(
            Message::new("x")
                .with_header("dup", "first")
                .with_header("dup", "second"),
            Encoding::Text,
            &[("dup", "first")],
        );
    }

    #[test]
    fn metadata_that_is_not_json_is_refused() {
        let message = Message::new("x").with_header(METADATA_HEADER, "not json");
        match publish_request(message) {
            Err(BusError::Invalid(e)) => assert!(e.contains(METADATA_HEADER), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn broken_wire_messages_say_why() {
        let good = r#"{"id":"0-1","topic":"t","payload":1,"headers":{},"timestamp":"2025-11-23T12:13:20.123Z","delivery_count":1}"#;
        assert_eq!(decode_delivery(good, &acker()).unwrap().payload, "1");
        let cases = [
            ("{}", "not a message"),
            (
                &*good.replace("2025-11-23T12:13:20.123Z", "soon"),
                "bad timestamp",
            ),
            (
                &*good.replace(
                    r#""payload":1"#,
                    r#""payload":1,"payload_encoding":"base64""#,
                ),
                "payload",
            ),
        ];
        for (data, want) in cases {
            let e = decode_delivery(data, &acker()).unwrap_err();
            assert!(e.contains(want), "{data}: {e}");
        }
        let bad_time = PublishResponse {
            message_id: "0-0".into(),
            topic: "t".into(),
            timestamp: "never".into(),
        };
        assert!(matches!(receipt(bad_time), Err(BusError::Internal(_))));
    }

    #[test]
    fn client_errors_map_to_what_a_caller_can_do() {
        let status = |status| ClientError::Status {
            status,
            error: "e".into(),
            detail: "d".into(),
        };
        let cases = [
            (ClientError::Connect("refused".into()), "unavailable"),
            (ClientError::Decode("junk".into()), "internal"),
            (ClientError::Url("ftp".into()), "url"),
            (status(400), "invalid"),
            (status(413), "invalid"),
            (status(401), "unauthorized"),
            (status(404), "not found"),
            (status(409), "internal"),
            (status(500), "internal"),
            (status(502), "unavailable"),
            (status(503), "unavailable"),
            (status(504), "unavailable"),
        ];
        for (e, want) in cases {
            let text = e.to_string();
            let got = match bus_error(e) {
                BusError::Unavailable(m) => ("unavailable", m),
                BusError::Internal(m) => ("internal", m),
                BusError::Url(m) => ("url", m),
                BusError::Invalid(m) => ("invalid", m),
                BusError::Unauthorized(m) => ("unauthorized", m),
                BusError::NotFound(m) => ("not found", m),
                BusError::Closed => ("closed", String::new()),
            };
            assert_eq!(got, (want, text.clone()), "{text}");
        }
    }

    #[test]
    fn statuses_follow_the_ids_asked() {
        let ids: Vec<String> = ["0-1", "0-2", "0-1"].map(String::from).to_vec();
        let answer = |pairs: &[(&str, SettleStatus)]| SettleResponse {
            results: pairs
                .iter()
                .map(|&(id, status)| SettleResult {
                    message_id: id.into(),
                    status,
                })
                .collect(),
        };
        use SettleStatus::{AlreadyDone, Done, NotLeased};
        let in_order = answer(&[("0-1", Done), ("0-2", NotLeased), ("0-1", AlreadyDone)]);
        assert_eq!(
            statuses(&ids, in_order).unwrap(),
            [Done, NotLeased, AlreadyDone]
        );
        let by_id = answer(&[("0-2", NotLeased), ("0-1", Done)]);
        assert_eq!(statuses(&ids, by_id).unwrap(), [Done, NotLeased, Done]);
        let missing = answer(&[("0-1", Done)]);
        assert!(statuses(&ids, missing).is_err());
    }

    // ---- against a scripted broker ----

    /// A request the scripted broker read: its request line and body.
    #[derive(Debug, Clone)]
    struct Seen {
        line: String,
        body: String,
    }

    /// An answer: the raw response, and whether to keep the connection
    /// open afterwards (an SSE stream), reporting when the client closes it.
    type Answer = (String, bool);

    /// A broker on a thread, answering each connection's one request with
    /// `answer`; reports every request, and `CLOSED` when a kept-open
    /// connection is closed by the client.
    fn broker(
        answer: impl Fn(usize, &Seen) -> Answer + Send + Sync + 'static,
    ) -> (String, std::sync::mpsc::Receiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let (answer, tx) = (Arc::clone(&answer), tx.clone());
                std::thread::spawn(move || serve_one(n, stream.unwrap(), &*answer, &tx));
            }
        });
        (url, rx)
    }

    fn serve_one(
        n: usize,
        stream: TcpStream,
        answer: &(dyn Fn(usize, &Seen) -> Answer + Sync),
        tx: &std::sync::mpsc::Sender<Seen>,
    ) {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if header == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let seen = Seen {
            line: line.trim_end().to_string(),
            body: String::from_utf8(body).unwrap(),
        };
        let (response, keep_open) = answer(n, &seen);
        let _ = tx.send(seen);
        let mut stream = reader.into_inner();
        let _ = stream.write_all(response.as_bytes());
        if keep_open {
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
            let _ = tx.send(Seen {
                line: "CLOSED".into(),
                body: String::new(),
            });
        }
    }

    fn json(status: &str, body: &str) -> Answer {
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        (response, false)
    }

    fn sse(events: &str, keep_open: bool) -> Answer {
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{events}"
        );
        (response, keep_open)
    }

    fn message_event(id: &str, payload: &str) -> String {
        format!(
            "event: message\nid: {id}\ndata: {{\"id\":\"{id}\",\"topic\":\"t\",\"payload\":\"{payload}\",\"payload_encoding\":\"text\",\"headers\":{{}},\"timestamp\":\"2025-11-23T12:13:20.123Z\",\"delivery_count\":1}}\n\n"
        )
    }

    /// Answers settle requests `done` per id, 400 when an id is `garbage`.
    fn settle_answer(seen: &Seen) -> Answer {
        let request: SettleRequest = serde_json::from_str(&seen.body).unwrap();
        if request.message_ids.iter().any(|id| id == "garbage") {
            return json(
                "400 Bad Request",
                r#"{"error":"bad_request","detail":"bad id"}"#,
            );
        }
        let results: Vec<SettleResult> = request
            .message_ids
            .iter()
            .map(|id| SettleResult {
                message_id: id.clone(),
                status: SettleStatus::Done,
            })
            .collect();
        json(
            "200 OK",
            &serde_json::to_string(&SettleResponse { results }).unwrap(),
        )
    }

    fn bus(url: &str) -> HttpBus {
        HttpBus::new(url, &ConnectOptions::default()).unwrap()
    }

    #[tokio::test]
    async fn subscriptions_reconnect_as_the_same_member_and_stop_when_dropped() {
        let (url, seen) = broker(|n, _| match n {
            0 => sse(
                &format!(
                    "event: connected\ndata: {{\"consumer_id\":\"given-7\"}}\n\n{}",
                    message_event("0-0", "first")
                ),
                false,
            ),
            1 => json(
                "503 Service Unavailable",
                r#"{"error":"unavailable","detail":"restarting"}"#,
            ),
            _ => sse(
                &format!(
                    "event: connected\ndata: {{\"consumer_id\":\"given-7\"}}\n\n: keep-alive\n\n{}",
                    message_event("0-1", "second")
                ),
                true,
            ),
        });
        let bus = bus(&url);
        let options = SubscribeOptions {
            start: Start::Latest,
            max_in_flight: 5,
            ..SubscribeOptions::new("")
        };
        let mut sub = bus.subscribe("t", "g", options).await.unwrap();
        let first = seen.recv().unwrap();
        assert_eq!(
            first.line,
            "GET /api/v1/queue/subscribe?topic=t&consumer_group=g&start=latest&max_in_flight=5 HTTP/1.1"
        );
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < 2 && Instant::now() < deadline {
            got.extend(sub.receive(10, Duration::from_millis(100)).await.unwrap());
        }
        let payloads: Vec<&[u8]> = got.iter().map(|d| &d.payload[..]).collect();
        assert_eq!(
            payloads,
            [&b"first"[..], b"second"],
            "across a reconnection"
        );
        for _ in 0..2 {
            let again = seen.recv().unwrap();
            assert!(
                again.line.contains("consumer_id=given-7&start=latest"),
                "a reconnection names the member the broker named: {}",
                again.line
            );
        }
        drop(sub);
        let closed = tokio::task::spawn_blocking(move || seen.recv().unwrap()).await;
        assert_eq!(closed.unwrap().line, "CLOSED", "dropping closes the stream");
    }

    #[tokio::test]
    async fn a_refused_subscription_is_an_error_with_its_class() {
        let (url, _seen) = broker(|_, _| {
            json(
                "401 Unauthorized",
                r#"{"error":"unauthorized","detail":"bad token"}"#,
            )
        });
        let err = bus(&url)
            .subscribe("t", "g", SubscribeOptions::new("c"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, BusError::Unauthorized(m) if m.contains("bad token")),
            "{err:?}"
        );
        let (url, _seen) = broker(|_, _| sse("event: message\ndata: {}\n\n", false));
        let err = bus(&url)
            .subscribe("t", "g", SubscribeOptions::new("c"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, BusError::Internal(m) if m.contains("connected")),
            "{err:?}"
        );
    }

    /// Starts the settle task of a subscription on `url` and gives its
    /// acker, as `subscribe` does.
    fn acker_on(bus: &HttpBus, url: &str) -> Acker {
        let (jobs, queued) = mpsc::channel(SETTLE_QUEUE);
        let client = Client::new(url, None).unwrap();
        tokio::spawn(run_settles(client, "t".into(), "g".into(), queued));
        Acker::new(Arc::new(HttpSettler {
            jobs,
            shared: Arc::clone(&bus.shared),
        }))
    }

    // A current-thread runtime runs every spawned call up to its queueing
    // before the settle task takes the first: the batching is deterministic.
    #[tokio::test]
    async fn concurrent_settles_share_requests_and_keep_their_own_answers() {
        let (url, seen) = broker(|_, seen| settle_answer(seen));
        let bus = bus(&url);
        let acker = acker_on(&bus, &url);
        let calls: Vec<(Vec<String>, Settle)> = vec![
            (vec!["0-1".into()], Settle::Ack),
            (vec!["0-2".into(), "0-3".into()], Settle::Ack),
            (vec!["garbage".into()], Settle::Ack),
            (vec!["0-4".into()], Settle::Nack(Duration::from_millis(5))),
            (vec!["0-5".into()], Settle::Ack),
            (vec!["0-6".into()], Settle::Nack(Duration::from_millis(5))),
            (vec!["0-7".into()], Settle::Nack(Duration::ZERO)),
            (vec!["0-8".into()], Settle::Reject("bad".into())),
        ];
        let tasks: Vec<_> = calls
            .iter()
            .map(|(ids, how)| {
                let (acker, ids, how) = (acker.clone(), ids.clone(), how.clone());
                tokio::spawn(async move { acker.settle(&ids, how).await })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        for ((ids, _), answer) in calls.iter().zip(&answers) {
            if ids[0] == "garbage" {
                assert!(matches!(answer, Err(BusError::Invalid(_))), "{answer:?}");
            } else {
                assert_eq!(
                    answer.as_ref().unwrap(),
                    &vec![SettleStatus::Done; ids.len()]
                );
            }
        }
        let requests: Vec<(String, SettleRequest)> = seen
            .try_iter()
            .map(|s| (s.line, serde_json::from_str(&s.body).unwrap()))
            .collect();
        let sent: Vec<(&str, Vec<&str>, Option<u64>)> = requests
            .iter()
            .map(|(line, r)| {
                let route = line.split(' ').nth(1).unwrap();
                let ids = r.message_ids.iter().map(String::as_str).collect();
                (route, ids, r.delay_ms)
            })
            .collect();
        assert_eq!(
            sent,
            [
                (
                    "/api/v1/queue/ack",
                    vec!["0-1", "0-2", "0-3", "garbage", "0-5"],
                    None
                ),
                ("/api/v1/queue/ack", vec!["0-1"], None),
                ("/api/v1/queue/ack", vec!["0-2", "0-3"], None),
                ("/api/v1/queue/ack", vec!["garbage"], None),
                ("/api/v1/queue/ack", vec!["0-5"], None),
                ("/api/v1/queue/nack", vec!["0-4", "0-6"], Some(5)),
                ("/api/v1/queue/nack", vec!["0-7"], Some(0)),
                ("/api/v1/queue/reject", vec!["0-8"], None),
            ]
        );
        assert_eq!(requests[7].1.reason.as_deref(), Some("bad"));
    }

    #[tokio::test]
    async fn close_waits_for_settles_and_refuses_what_follows() {
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate_rx);
        let (url, _seen) = broker(move |_, seen| {
            gate.lock().unwrap().recv().unwrap();
            settle_answer(seen)
        });
        let bus = bus(&url);
        let acker = acker_on(&bus, &url);
        let ack = tokio::spawn({
            let acker = acker.clone();
            async move { acker.ack(&["0-1".to_string()]).await }
        });
        while *bus.shared.settling.borrow() == 0 {
            tokio::task::yield_now().await;
        }
        let close = tokio::spawn({
            let bus = bus.clone();
            async move { bus.close().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!close.is_finished(), "close waits for the ack in flight");
        gate_tx.send(()).unwrap();
        close.await.unwrap().unwrap();
        assert!(
            ack.is_finished(),
            "the ack was answered before close returned"
        );
        assert_eq!(ack.await.unwrap().unwrap(), [SettleStatus::Done]);
        assert_eq!(acker.ack(&["0-2".to_string()]).await, Err(BusError::Closed));
        assert_eq!(bus.stats().await.unwrap_err(), BusError::Closed);
        let err = bus.subscribe("t", "g", SubscribeOptions::new("c")).await;
        assert_eq!(err.unwrap_err(), BusError::Closed);
        bus.close().await.expect("closing twice");
    }
}
