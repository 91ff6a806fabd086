//! [`Client`]: the Rust client of a `weir broker`'s queue HTTP API.
//!
//! One method per route, taking and returning the [`wire`](crate::wire)
//! types. Bodies are JSON written with `serde_json` (`Content-Type:
//! application/json`); a broker started with an auth token gets it as
//! `Authorization: Bearer` on every request.
//!
//! Errors are classified at this edge ([`ClientError::is_retryable`]):
//! refused, reset and timed-out connections, and 429/502/503/504 answers,
//! may work later; anything else will not.
//!
//! Timeouts: connecting gives up after [`CONNECT_TIMEOUT`]; an ordinary
//! request after [`REQUEST_TIMEOUT`]; a long-poll receive after its wait plus
//! that; the SSE stream of [`Client::subscribe`] never (use
//! [`EventStream::with_idle_timeout`] to notice a dead connection).

use std::fmt;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::sse::EventStream;
use crate::wire::{
    DeadLettersResponse, ErrorBody, HealthResponse, PublishBatchResponse, PublishRequest,
    PublishResponse, ReceiveResponse, RedriveRequest, RedriveResponse, SeekRequest, SettleRequest,
    SettleResponse, StatsResponse,
};

/// How long opening a TCP connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request other than subscribe and receive may take in all.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What went wrong talking to a broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The base URL cannot be used.
    #[error("{0}")]
    Url(String),
    /// No answer: the connection was refused, reset or timed out.
    #[error("{0}")]
    Connect(String),
    /// The broker answered with an error status.
    #[error("the broker answered {status} {error}: {detail}")]
    Status {
        status: u16,
        /// The short code of the error body (`bad_request`, `not_found`...).
        error: String,
        detail: String,
    },
    /// The answer is not what the API promises.
    #[error("{0}")]
    Decode(String),
}

impl ClientError {
    /// Whether the same request may work if made again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect(_) => true,
            ClientError::Status { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            ClientError::Url(_) | ClientError::Decode(_) => false,
        }
    }

    /// The HTTP status of a [`ClientError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Which settle route: `/ack`, `/nack` or `/reject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleKind {
    Ack,
    Nack,
    Reject,
}

impl SettleKind {
    fn path(self) -> &'static str {
        match self {
            SettleKind::Ack => "/api/v1/queue/ack",
            SettleKind::Nack => "/api/v1/queue/nack",
            SettleKind::Reject => "/api/v1/queue/reject",
        }
    }
}

/// Where a group with no history starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Earliest,
    Latest,
}

impl Start {
    /// The value of the `start` query parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Start::Earliest => "earliest",
            Start::Latest => "latest",
        }
    }
}

/// Who consumes, for `/subscribe` and `/receive`; absent values take the
/// broker's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeParams {
    pub topic: String,
    pub consumer_group: String,
    /// Names this member in stats; the broker makes one up when absent.
    pub consumer_id: Option<String>,
    pub start: Option<Start>,
    pub visibility_timeout_ms: Option<u64>,
    pub max_deliveries: Option<u32>,
    /// `/subscribe` only: unsettled messages the stream holds at most.
    pub max_in_flight: Option<usize>,
}

impl SubscribeParams {
    pub fn new(topic: impl Into<String>, consumer_group: impl Into<String>) -> SubscribeParams {
        SubscribeParams {
            topic: topic.into(),
            consumer_group: consumer_group.into(),
            ..SubscribeParams::default()
        }
    }

    /// The query parameters both consuming routes share.
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = vec![
            ("topic", self.topic.clone()),
            ("consumer_group", self.consumer_group.clone()),
        ];
        if let Some(id) = &self.consumer_id {
            q.push(("consumer_id", id.clone()));
        }
        if let Some(start) = self.start {
            q.push(("start", start.as_str().to_string()));
        }
        if let Some(ms) = self.visibility_timeout_ms {
            q.push(("visibility_timeout_ms", ms.to_string()));
        }
        if let Some(n) = self.max_deliveries {
            q.push(("max_deliveries", n.to_string()));
        }
        q
    }
}

/// A broker's queue API. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `http://host:port` (and any path prefix), without a trailing slash.
    base: String,
    auth_token: Option<String>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the broker at `base_url` (`http://host:port`, perhaps
    /// with a path prefix). Nothing is sent until the first call.
    pub fn new(base_url: &str, auth_token: Option<String>) -> Result<Client, ClientError> {
        let base = base_url.trim_end_matches('/');
        let url = reqwest::Url::parse(base)
            .map_err(|e| ClientError::Url(format!("invalid broker URL {base_url:?}: {e}")))?;
        if url.scheme() != "http" {
            return Err(ClientError::Url(format!(
                "unsupported broker URL {base_url:?}: expected http://host:port"
            )));
        }
        if url.host_str().is_none_or(str::is_empty)
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(ClientError::Url(format!(
                "invalid broker URL {base_url:?}: expected http://host:port with no query"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ClientError::Connect(describe(&e)))?;
        Ok(Client {
            http,
            base: base.to_string(),
            auth_token,
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `POST /api/v1/queue/publish`: `request.topic` is required.
    pub async fn publish(&self, request: &PublishRequest) -> Result<PublishResponse, ClientError> {
        self.call(self.post_json("/api/v1/queue/publish", request)?)
            .await
    }

    /// `POST /api/v1/queue/publish/batch?topic=`: items naming no topic go
    /// to `topic`. One result per item, in order.
    pub async fn publish_batch(
        &self,
        topic: &str,
        items: &[PublishRequest],
    ) -> Result<PublishBatchResponse, ClientError> {
        let request = self
            .post_json("/api/v1/queue/publish/batch", items)?
            .query(&[("topic", topic)]);
        self.call(request).await
    }

    /// `GET /api/v1/queue/subscribe`: joins the group and streams its
    /// deliveries as server-sent events (`connected` first, then `message`
    /// events holding a [`WireMessage`](crate::wire::WireMessage)).
    pub async fn subscribe(&self, params: &SubscribeParams) -> Result<EventStream, ClientError> {
        let mut query = params.query();
        if let Some(n) = params.max_in_flight {
            query.push(("max_in_flight", n.to_string()));
        }
        let request = self
            .untimed(reqwest::Method::GET, "/api/v1/queue/subscribe")
            .header(ACCEPT, "text/event-stream")
            .query(&query);
        let response = self.send(request).await?;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("text/event-stream") {
            return Err(ClientError::Decode(format!(
                "subscribe answered {content_type:?}, not text/event-stream"
            )));
        }
        let body = futures_util::StreamExt::map(response.bytes_stream(), |chunk| {
            chunk.map_err(|e| transport_error(&e))
        });
        Ok(EventStream::from_stream(body))
    }

    /// `GET /api/v1/queue/receive`: leases up to `max` messages, waiting up to
    /// `wait` for the first (the broker caps the wait).
    pub async fn receive(
        &self,
        params: &SubscribeParams,
        max: usize,
        wait: Duration,
    ) -> Result<ReceiveResponse, ClientError> {
        let mut query = params.query();
        query.push(("max", max.to_string()));
        query.push(("wait_ms", wait.as_millis().to_string()));
        let request = self
            .request(reqwest::Method::GET, "/api/v1/queue/receive")
            .query(&query)
            .timeout(wait + REQUEST_TIMEOUT);
        self.call(request).await
    }

    /// `POST /api/v1/queue/ack`, `/nack` or `/reject`, always with the list
    /// form (a single `message_id` joins `message_ids`), so the answer has
    /// one status per id, in order.
    pub async fn settle(
        &self,
        kind: SettleKind,
        request: &SettleRequest,
    ) -> Result<SettleResponse, ClientError> {
        let listed;
        let request = match &request.message_id {
            None => request,
            Some(id) => {
                let mut ids = Vec::with_capacity(1 + request.message_ids.len());
                ids.push(id.clone());
                ids.extend(request.message_ids.iter().cloned());
                listed = SettleRequest {
                    topic: request.topic.clone(),
                    consumer_group: request.consumer_group.clone(),
                    message_id: None,
                    message_ids: ids,
                    delay_ms: request.delay_ms,
                    reason: request.reason.clone(),
                };
                &listed
            }
        };
        if request.message_ids.is_empty() {
            return Ok(SettleResponse {
                results: Vec::new(),
            });
        }
        self.call(self.post_json(kind.path(), request)?).await
    }

    /// `POST /api/v1/queue/seek`.
    pub async fn seek(&self, request: &SeekRequest) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .call(self.post_json("/api/v1/queue/seek", request)?)
            .await?;
        Ok(())
    }

    /// `GET /api/v1/queue/stats`.
    pub async fn stats(&self) -> Result<StatsResponse, ClientError> {
        self.call(self.request(reqwest::Method::GET, "/api/v1/queue/stats"))
            .await
    }

    /// `GET /api/v1/queue/dlq?topic=&limit=`: the dead letters of `topic`.
    pub async fn dead_letters(
        &self,
        topic: &str,
        limit: Option<usize>,
    ) -> Result<DeadLettersResponse, ClientError> {
        let mut query = vec![("topic", topic.to_string())];
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        let request = self
            .request(reqwest::Method::GET, "/api/v1/queue/dlq")
            .query(&query);
        self.call(request).await
    }

    /// `POST /api/v1/queue/dlq/redrive`.
    pub async fn redrive(&self, request: &RedriveRequest) -> Result<RedriveResponse, ClientError> {
        self.call(self.post_json("/api/v1/queue/dlq/redrive", request)?)
            .await
    }

    /// `GET /health`: the process is up.
    pub async fn health(&self) -> Result<HealthResponse, ClientError> {
        self.call(self.request(reqwest::Method::GET, "/health"))
            .await
    }

    /// `GET /ready`: the broker takes requests (a 503 error when not).
    pub async fn ready(&self) -> Result<HealthResponse, ClientError> {
        self.call(self.request(reqwest::Method::GET, "/ready"))
            .await
    }

    /// A request under [`REQUEST_TIMEOUT`] (a later `.timeout` replaces it).
    fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.untimed(method, path).timeout(REQUEST_TIMEOUT)
    }

    /// A request that may last as long as the connection does.
    fn untimed(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.auth_token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    fn post_json<T: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<RequestBuilder, ClientError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| ClientError::Decode(format!("cannot encode the request: {e}")))?;
        Ok(self
            .request(reqwest::Method::POST, path)
            .header(CONTENT_TYPE, "application/json")
            .body(body))
    }

    /// Sends, and decodes a 2xx JSON answer.
    async fn call<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        let response = self.send(request).await?;
        let body = response.bytes().await.map_err(|e| transport_error(&e))?;
        serde_json::from_slice(&body).map_err(|e| {
            ClientError::Decode(format!(
                "unexpected answer from the broker ({e}): {}",
                snippet(&body)
            ))
        })
    }

    /// Sends, and turns a non-2xx answer into [`ClientError::Status`].
    async fn send(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        let response = request.send().await.map_err(|e| transport_error(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(status_error(status, &body))
    }
}

/// The error for a non-2xx answer: its JSON error body, or its text.
fn status_error(status: StatusCode, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error, detail }) => ClientError::Status {
            status: status.as_u16(),
            error,
            detail,
        },
        Err(_) => ClientError::Status {
            status: status.as_u16(),
            error: status
                .canonical_reason()
                .unwrap_or("error")
                .to_ascii_lowercase()
                .replace(' ', "_"),
            detail: snippet(body),
        },
    }
}

/// A reqwest failure: the request never got a whole answer.
fn transport_error(e: &reqwest::Error) -> ClientError {
    if e.is_builder() {
        ClientError::Url(describe(e))
    } else if e.is_decode() {
        ClientError::Decode(describe(e))
    } else {
        ClientError::Connect(describe(e))
    }
}

/// An error and its causes on one line: reqwest's own message rarely says
/// what happened ("error sending request"), its sources do.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The start of a body, as text, for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn base_urls_are_checked_and_trimmed() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("http://127.0.0.1:8080", Ok("http://127.0.0.1:8080")),
            ("http://broker:8080/", Ok("http://broker:8080")),
            ("http://broker/weir//", Ok("http://broker/weir")),
            ("https://broker:8080", Err("expected http://host:port")),
            ("embedded:///tmp/x", Err("expected http://host:port")),
            ("http://broker:8080/?a=1", Err("no query")),
            ("broker:8080", Err("expected http://host:port")),
            ("http://", Err("invalid broker URL")),
        ];
        for &(url, want) in cases {
            match (Client::new(url, None), want) {
                (Ok(client), Ok(base)) => assert_eq!(client.base_url(), base, "{url}"),
                (Err(ClientError::Url(e)), Err(part)) => assert!(e.contains(part), "{url}: {e}"),
                (got, want) => panic!("{url}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let client = Client::new("http://h:1", Some("s3cret".into())).unwrap();
        let debug = format!("{client:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains("redacted"),
            "{debug}"
        );
    }

    #[test]
    fn error_answers_keep_the_body_or_its_text() {
        let cases: &[(u16, &str, (&str, &str), bool)] = &[
            (
                404,
                r#"{"error":"not_found","detail":"no topic t"}"#,
                ("not_found", "no topic t"),
                false,
            ),
            (
                503,
                r#"{"error":"overloaded","detail":"busy"}"#,
                ("overloaded", "busy"),
                true,
            ),
            (
                502,
                "  bad gateway from the proxy\n",
                ("bad_gateway", "bad gateway from the proxy"),
                true,
            ),
            (504, "", ("gateway_timeout", ""), true),
            (
                429,
                r#"{"error":"too_many_requests","detail":"slow down"}"#,
                ("too_many_requests", "slow down"),
                true,
            ),
            (
                401,
                r#"{"error":"unauthorized"}"#,
                ("unauthorized", r#"{"error":"unauthorized"}"#),
                false,
            ),
            (
                500,
                r#"{"error":"internal","detail":"x"}"#,
                ("internal", "x"),
                false,
            ),
        ];
        for &(status, body, (error, detail), retryable) in cases {
            let e = status_error(StatusCode::from_u16(status).unwrap(), body.as_bytes());
            let want = ClientError::Status {
                status,
                error: error.into(),
                detail: detail.into(),
            };
            assert_eq!(e, want, "{status} {body}");
            assert_eq!(e.is_retryable(), retryable, "{status}");
        }
        assert!(ClientError::Connect("refused".into()).is_retryable());
        assert!(!ClientError::Decode("bad".into()).is_retryable());
    }

    #[test]
    fn consuming_parameters_are_named_as_the_broker_reads_them() {
        let mut params = SubscribeParams::new("t", "g");
        assert_eq!(params.query().len(), 2, "only the required ones");
        params.consumer_id = Some("c 1".into());
        params.start = Some(Start::Latest);
        params.visibility_timeout_ms = Some(1500);
        params.max_deliveries = Some(3);
        let names: Vec<&str> = params.query().iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "topic",
                "consumer_group",
                "consumer_id",
                "start",
                "visibility_timeout_ms",
                "max_deliveries"
            ]
        );
    }

    /// A one-shot HTTP server on a thread: answers each request it accepts
    /// with the next canned response and reports the request it read.
    fn serve(responses: Vec<String>) -> (String, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for response in responses {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut head = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                tx.send(head + &String::from_utf8(body).unwrap()).unwrap();
                let mut stream = reader.into_inner();
                stream.write_all(response.as_bytes()).unwrap();
            }
        });
        (url, rx)
    }

    fn json_response(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn requests_carry_the_token_json_and_encoded_query() {
        let (url, requests) = serve(vec![
            json_response(
                "200 OK",
                r#"{"count":1,"results":[{"message_id":"0-0","topic":"a b","timestamp":"2025-11-23T12:13:20.123Z"}]}"#,
            ),
            json_response("409 Conflict", r#"{"error":"conflict","detail":"no"}"#),
        ]);
        let client = Client::new(&url, Some("tok".into())).unwrap();
        let item: PublishRequest = serde_json::from_str(r#"{"payload":{"x":1}}"#).unwrap();
        let answer = client.publish_batch("a b&c", &[item]).await.unwrap();
        assert_eq!(answer.results[0].message_id, "0-0");
        let request = requests.recv().unwrap();
        assert!(
            request.starts_with("POST /api/v1/queue/publish/batch?topic=a+b%26c HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("authorization: Bearer tok\r\n"),
            "{request}"
        );
        assert!(
            request.contains("content-type: application/json\r\n"),
            "{request}"
        );
        assert!(
            request.ends_with("\r\n\r\n[{\"payload\":{\"x\":1}}]"),
            "{request}"
        );

        let settle = SettleRequest {
            topic: "t".into(),
            consumer_group: "g".into(),
            message_id: Some("0-1".into()),
            ..SettleRequest::default()
        };
        let err = client.settle(SettleKind::Nack, &settle).await.unwrap_err();
        assert_eq!(err.status(), Some(409));
        let request = requests.recv().unwrap();
        assert!(request.starts_with("POST /api/v1/queue/nack "), "{request}");
        assert!(request.contains(r#""message_ids":["0-1"]"#), "{request}");
        assert!(!request.contains(r#""message_id":"#), "{request}");
    }

    #[tokio::test]
    async fn subscribe_streams_events_until_the_server_closes() {
        let (url, requests) = serve(vec![
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n\
             event: connected\ndata: {\"consumer_id\":\"c\"}\n\n: keep-alive\n\n\
             event: message\nid: 0-0\ndata: {}\n\n"
                .to_string(),
            json_response(
                "401 Unauthorized",
                r#"{"error":"unauthorized","detail":"token"}"#,
            ),
        ]);
        let client = Client::new(&url, None).unwrap();
        let mut params = SubscribeParams::new("t", "g");
        params.max_in_flight = Some(7);
        let mut events = client.subscribe(&params).await.unwrap();
        let request = requests.recv().unwrap();
        assert!(
            request.starts_with(
                "GET /api/v1/queue/subscribe?topic=t&consumer_group=g&max_in_flight=7 "
            ),
            "{request}"
        );
        assert!(!request.contains("authorization"), "{request}");
        assert_eq!(events.next().await.unwrap().unwrap().event, "connected");
        let message = events.next().await.unwrap().unwrap();
        assert_eq!((message.id.as_deref(), &*message.data), (Some("0-0"), "{}"));
        assert!(events.next().await.is_none());

        let err = client.subscribe(&params).await.unwrap_err();
        assert_eq!(err.status(), Some(401));
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn a_refused_connection_is_retryable() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let client = Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        let err = client.health().await.unwrap_err();
        assert!(matches!(err, ClientError::Connect(_)), "{err:?}");
        assert!(err.is_retryable());
    }
}
