//! The shared state of one broker and the router that serves it: routes,
//! authentication, load shedding and request metrics.

use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use weir_queue::Queue;

use crate::admin::{self, Rates};
use crate::error::ApiError;
use crate::lease::Leases;
use crate::metrics::{self, Metrics};
use crate::{ServerConfig, deliver, openapi, publish, settle};

/// Cheap to clone: clones share one broker.
#[derive(Debug, Clone)]
pub(crate) struct AppState(Arc<Inner>);

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) queue: Queue,
    pub(crate) config: ServerConfig,
    pub(crate) leases: Leases,
    pub(crate) metrics: Metrics,
    pub(crate) rates: Rates,
    pub(crate) shutdown: CancellationToken,
    /// Permits for requests in hand (SSE streams apart).
    pub(crate) requests: Arc<Semaphore>,
    /// Permits for open SSE streams.
    pub(crate) subscribers: Arc<Semaphore>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The broker's HTTP app over `queue`. SSE streams and long polls end when
/// `shutdown` fires.
pub fn router(config: ServerConfig, queue: Queue, shutdown: CancellationToken) -> Router {
    let st = AppState(Arc::new(Inner {
        requests: Arc::new(Semaphore::new(config.max_concurrent_requests.max(1))),
        subscribers: Arc::new(Semaphore::new(config.max_subscribers.max(1))),
        queue,
        leases: Leases::default(),
        metrics: Metrics::default(),
        rates: Rates::default(),
        shutdown,
        config,
    }));
    let queue_api = Router::new()
        .route("/api/v1/queue/publish", post(publish::publish))
        .route("/api/v1/queue/publish/batch", post(publish::publish_batch))
        .route("/api/v1/queue/receive", get(deliver::receive))
        .route("/api/v1/queue/ack", post(settle::ack))
        .route("/api/v1/queue/nack", post(settle::nack))
        .route("/api/v1/queue/reject", post(settle::reject))
        .route("/api/v1/queue/seek", post(settle::seek))
        .route("/api/v1/queue/stats", get(admin::stats))
        .route("/api/v1/queue/dlq", get(admin::dead_letters))
        .route("/api/v1/queue/dlq/redrive", post(admin::redrive))
        .route_layer(from_fn_with_state(st.clone(), shed_load))
        // Streams are limited by `max_subscribers` instead.
        .route("/api/v1/queue/subscribe", get(deliver::subscribe))
        .route_layer(from_fn_with_state(st.clone(), authorize));
    Router::new()
        .merge(queue_api)
        .route("/health", get(admin::health))
        .route("/ready", get(admin::ready))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(st.clone(), metrics::observe))
        .layer(DefaultBodyLimit::max(st.config.max_body_bytes))
        .with_state(st)
}

/// Requires `Authorization: Bearer <token>` when the broker has a token.
async fn authorize(State(st): State<AppState>, req: Request, next: Next) -> Response {
    require_bearer(st.config.auth_token.as_deref(), req, next).await
}

/// Lets `req` through when there is no `token` or it carries
/// `Authorization: Bearer <token>`; answers 401 otherwise. Every route that
/// takes a token (queue and query APIs alike) checks it here.
pub(crate) async fn require_bearer(token: Option<&str>, req: Request, next: Next) -> Response {
    if let Some(token) = token {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = given.is_some_and(|g| same(g.as_bytes(), token.as_bytes()));
        if !ok {
            let detail = if given.is_none() {
                "missing bearer token: send Authorization: Bearer <token>"
            } else {
                "wrong bearer token"
            };
            return ApiError::new(StatusCode::UNAUTHORIZED, detail).into_response();
        }
    }
    next.run(req).await
}

/// The answer for a path no route serves.
pub(crate) async fn no_such_route() -> ApiError {
    ApiError::not_found("no such route; see /api/v1/openapi.json")
}

/// The answer for a method a route does not serve.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route; see /api/v1/openapi.json",
    )
}

/// Compares in time that depends only on the lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Answers 503 when `max_concurrent_requests` are already in hand.
async fn shed_load(State(st): State<AppState>, req: Request, next: Next) -> Response {
    match st.requests.try_acquire() {
        Ok(_permit) => next.run(req).await,
        Err(_) => ApiError::overloaded("too many requests in hand; retry later").into_response(),
    }
}
