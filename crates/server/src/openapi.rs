//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document, generated from the
//! handlers' annotations and the wire types.

use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{admin, deliver, metrics, publish, settle};

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

/// The OpenAPI document as pretty JSON.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
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
