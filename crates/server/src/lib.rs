//! `weir broker`: Weir's embedded durable queue served over HTTP.
//!
//! The API is path-compatible with the GPU telemetry pipeline's queue
//! service (publish, SSE subscribe, ack, nack, stats, health) and adds batch
//! publish, long-poll receive, reject, seek, dead letters with redrive,
//! Prometheus metrics and an OpenAPI document generated from the handlers.
//! The JSON bodies are `weir_api::wire`'s types.
//!
//! With a store, the broker also serves the telemetry query API (`query`):
//! GPUs, a GPU's telemetry, series and job results from a
//! [`weir_store::Query`]; `weir api` serves that API alone.
//!
//! Entry points: [`run`] serves the queue until a shutdown token fires, on a
//! listener the caller bound (tests bind `127.0.0.1:0`); [`router`] gives
//! the same app for tests without sockets. [`query_router`] is the query
//! API's routes, to merge into [`router`]'s app; [`query_app`] is the query
//! API as an app of its own; [`serve`] serves any of these apps as [`run`]
//! does.
//!
//! Invariants:
//! - every error answer is an `ApiError`: a 4xx/5xx status and a JSON body
//!   `{error, detail}`; internal causes are logged, never sent;
//! - an SSE consumer never holds more than its in-flight limit of unsettled
//!   messages (`lease`); one that disconnects lets its leases expire, so its
//!   messages go to another member after the visibility timeout;
//! - shutdown stops accepting, ends SSE streams, drains in-flight requests and
//!   returns; closing the queue is the caller's job, since it may share it.

mod admin;
mod deliver;
mod error;
mod extract;
mod lease;
mod metrics;
mod openapi;
mod publish;
mod query;
mod settle;
mod state;

use std::future::IntoFuture;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use weir_queue::Queue;

pub use admin::{list_dead_letters, redrive_dead_letters};
pub use openapi::openapi_json;
pub use query::{query_app, query_router};
pub use state::router;

/// What the owner of a broker chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// When set, `/api/v1/queue/*` requires `Authorization: Bearer <token>`.
    pub auth_token: Option<String>,
    /// The largest request body (default 32 MiB).
    pub max_body_bytes: usize,
    /// Requests handled at once before answering 503 (SSE streams apart).
    pub max_concurrent_requests: usize,
    /// SSE streams open at once before answering 503.
    pub max_subscribers: usize,
    /// Unsettled messages one SSE consumer holds at most, unless it asks for
    /// another limit (default 100).
    pub max_in_flight: usize,
    /// How often an idle SSE stream gets a keep-alive comment.
    pub keep_alive: Duration,
    /// The longest `wait_ms` a long-poll receive may ask for.
    pub max_wait: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            auth_token: None,
            max_body_bytes: 32 << 20,
            max_concurrent_requests: 1024,
            max_subscribers: 1024,
            max_in_flight: 100,
            keep_alive: Duration::from_secs(15),
            max_wait: Duration::from_secs(30),
        }
    }
}

/// Serves the queue on `listener` until `shutdown` fires, then stops
/// accepting, ends every SSE stream, waits for requests in hand and returns.
pub async fn run(
    config: ServerConfig,
    queue: Queue,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(config, queue, shutdown.clone());
    serve(app, listener, shutdown).await
}

/// Serves `app` on `listener` until `shutdown` fires, then stops accepting
/// and waits for requests in hand, at most [`DRAIN_TIMEOUT`]. Streams that
/// should end at shutdown must watch the same token (see [`router`]).
pub async fn serve(
    app: Router,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // Small SSE writes must not wait for the peer's delayed ACK (Nagle):
    // without this, p99 publish-to-deliver latency is ~18 ms, not ~0.5 ms.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
    });
    let drain = drain_deadline(&shutdown);
    let serve = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    tokio::select! {
        served = serve => served,
        () = drain => {
            tracing::warn!(
                "connections still open {DRAIN_TIMEOUT:?} after shutdown began; closing them"
            );
            Ok(())
        }
    }
}

/// How long shutdown waits for requests in hand (and for clients that stop
/// reading an event stream) before it drops their connections.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

async fn drain_deadline(shutdown: &CancellationToken) {
    shutdown.cancelled().await;
    tokio::time::sleep(DRAIN_TIMEOUT).await;
}
