//! A subscription: opening its event stream, the reader task that turns
//! `message` events into deliveries and reconnects when the stream is lost,
//! and [`HttpSubscription`], whose `receive` takes what the reader buffered.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use weir_api::wire::Connected;
use weir_api::{Client, ClientError, EventStream, SubscribeParams};

use crate::http::Shared;
use crate::http::conversion::{bus_error, decode_delivery};
use crate::message::{Acker, Delivery};
use crate::{BusError, Result, Subscription};

/// The first pause before reconnecting a subscription's stream.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// The longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A stream with no byte for this long is taken for dead: three times the
/// broker's default keep-alive interval (15 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// Opens a subscription's event stream and reads its `connected` event:
/// the stream, and the consumer id the broker knows this member by.
pub(super) async fn open_stream(
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
/// itself, not for now (as [`bus_error`] classifies it), or answers what
/// the API does not promise.
fn ends_subscription(e: &ClientError) -> bool {
    matches!(e, ClientError::Decode(_))
        || matches!(
            bus_error(e.clone()),
            BusError::Url(_)
                | BusError::Invalid(_)
                | BusError::Unauthorized(_)
                | BusError::NotFound(_)
        )
}

/// One subscription's reader task: SSE events in, deliveries out.
#[derive(Debug)]
pub(super) struct Reader {
    pub(super) shared: Arc<Shared>,
    pub(super) params: SubscribeParams,
    pub(super) acker: Acker,
    pub(super) tx: mpsc::Sender<Result<Delivery>>,
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
    pub(super) async fn run(self, mut stream: EventStream) {
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
pub(super) struct HttpSubscription {
    pub(super) deliveries: mpsc::Receiver<Result<Delivery>>,
    pub(super) acker: Acker,
    pub(super) reader: JoinHandle<()>,
    pub(super) shared: Arc<Shared>,
    /// An error met while draining, for the next `receive`.
    pub(super) failed: Option<BusError>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::broker::{broker, bus, json, message_event, sse};
    use crate::{Bus, Start, SubscribeOptions};

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

    #[test]
    fn only_answers_no_retry_can_fix_end_a_subscription() {
        let status = |status| ClientError::Status {
            status,
            error: "e".into(),
            detail: "d".into(),
        };
        let mut ends = vec![
            ClientError::Url("ftp".into()),
            ClientError::Decode("junk".into()),
        ];
        ends.extend([400, 401, 403, 404, 413].map(status));
        let mut retries = vec![ClientError::Connect("refused".into())];
        retries.extend([409, 429, 500, 502, 503, 504].map(status));
        for e in ends {
            assert!(ends_subscription(&e), "{e}");
        }
        for e in retries {
            assert!(!ends_subscription(&e), "{e}");
        }
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
}
