//! The `http://` backend: the bus over a `weir broker`, through
//! [`weir_api::Client`].
//!
//! - **Publish** sends one `/publish/batch` request per call. A message's
//!   bytes travel as [`wire::encode_payload`] writes them; its key as UTF-8
//!   text (lossy); its headers by [`wire::split_metadata`]'s rule: a map
//!   (of repeated names the first wins), except a [`METADATA_HEADER`] that
//!   holds JSON, which travels as the request's `metadata` (the broker
//!   stores it under that header again, so it comes back as a header).
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
//! Errors map by what a caller can do (`bus_error`): what
//! [`weir_api::ClientError::is_retryable`] calls retryable (no connection,
//! 429, 502, 503, 504) is `Unavailable`; 400 and 413 `Invalid`; 401 and
//! 403 `Unauthorized`; 404 `NotFound`; anything else `Internal`.
//!
//! Differences from the embedded backend: the broker pushes, so a message
//! is delivered (leased, counted in flight) as soon as it is on the stream,
//! up to `max_in_flight`, before `receive` hands it out; header order is not
//! kept (the wire has a map); non-UTF-8 keys arrive with replacement
//! characters; after a reconnect, deliveries from the old stream no longer
//! count against the broker's in-flight limit for this member.
//!
//! The code: `subscription` (opening the event stream, the reader task and
//! its reconnection, and `receive`), `settler` (the coalescing settle task)
//! and `conversion` (bus types to and from the wire's, and `bus_error`).
//!
//! [`wire::encode_payload`]: weir_api::wire::encode_payload
//! [`wire::split_metadata`]: weir_api::wire::split_metadata
//! [`METADATA_HEADER`]: weir_api::wire::METADATA_HEADER
//! [`Delivery`]: crate::Delivery

mod conversion;
mod settler;
mod subscription;

#[cfg(test)]
mod broker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use weir_api::wire::SeekRequest;
use weir_api::{Client, SubscribeParams};

use crate::http::conversion::{bus_error, publish_request, receipt};
use crate::http::settler::{HttpSettler, SETTLE_QUEUE, run_settles};
use crate::http::subscription::{HttpSubscription, Reader, open_stream};
use crate::message::{Acker, Message, Receipt};
use crate::{
    Bus, BusError, ConnectOptions, Result, SeekTarget, Stats, SubscribeOptions, Subscription,
};

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
}

#[async_trait::async_trait]
impl Bus for HttpBus {
    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<Vec<Receipt>> {
        self.shared.check_open()?;
        let count = messages.len();
        let items: Vec<_> = messages.into_iter().map(publish_request).collect();
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
        options.check()?;
        let mut params = SubscribeParams {
            topic: topic.to_string(),
            consumer_group: group.to_string(),
            consumer_id: Some(options.consumer_id).filter(|id| !id.is_empty()),
            start: Some(options.start),
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
