//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document, generated from the
//! handlers' annotations and the wire types. The broker's document has the
//! queue API and the query API; `weir api`'s (`query_app`) has the query
//! API alone.

use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{admin, deliver, metrics, publish, query, settle};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Weir broker",
        description = "Weir's durable queue over HTTP: publish, Server-Sent Events or long-poll consumption, ack/nack/reject, dead letters, stats and metrics. Every error is a JSON body {error, detail}."
    ),
    paths(
        publish::publish,
        publish::publish_batch,
        deliver::subscribe,
        deliver::receive,
        settle::ack,
        settle::nack,
        settle::reject,
        settle::seek,
        admin::stats,
        admin::dead_letters,
        admin::redrive,
        admin::health,
        admin::ready,
        metrics::metrics,
        serve,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "queue", description = "Requires `Authorization: Bearer <token>` when the broker runs with --auth-token"),
        (name = "ops", description = "Health, readiness, metrics and this document: always open"),
    )
)]
struct ApiDoc;

/// The query API's routes, in both documents.
#[derive(OpenApi)]
#[openapi(
    paths(
        query::gpus,
        query::gpu,
        query::telemetry,
        query::series,
        query::job_results,
    ),
    tags(
        (name = "telemetry", description = "Queries over the store `weir collect` fills: GPUs, their telemetry, series and job results. Served by `weir api`, or by the broker when it has a store. Requires `Authorization: Bearer <token>` when run with --auth-token"),
    )
)]
struct QueryDoc;

/// `weir api`'s own routes besides the query API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Weir query API",
        description = "Weir's telemetry store over HTTP: GPUs, their telemetry, series and Game of Life results. Every error is a JSON body {error, detail}."
    ),
    paths(admin::health, serve),
    modifiers(&BearerAuth),
    tags(
        (name = "ops", description = "Health and this document: always open"),
    )
)]
struct QueryAppDoc;

#[derive(Debug)]
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The broker's OpenAPI document as pretty JSON.
pub fn openapi_json() -> String {
    pretty(ApiDoc::openapi().merge_from(QueryDoc::openapi()))
}

/// `weir api`'s OpenAPI document as pretty JSON.
pub(crate) fn query_openapi_json() -> String {
    pretty(QueryAppDoc::openapi().merge_from(QueryDoc::openapi()))
}

fn pretty(doc: utoipa::openapi::OpenApi) -> String {
    doc.to_pretty_json()
        .expect("the OpenAPI document serializes")
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "ops",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object)))]
pub(crate) async fn serve() -> impl IntoResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    (
        [(CONTENT_TYPE, "application/json")],
        DOC.get_or_init(openapi_json).clone(),
    )
}

/// `weir api`'s document, at the same path.
pub(crate) async fn serve_query() -> impl IntoResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    (
        [(CONTENT_TYPE, "application/json")],
        DOC.get_or_init(query_openapi_json).clone(),
    )
}
