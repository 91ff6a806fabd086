//! The telemetry query API: the GPUs a store has seen, one GPU's samples in
//! a time range, series by metric and labels, and Game of Life results —
//! JSON over `GET`, answered by a [`weir_store::Query`].
//!
//! [`query_router`] has only these routes (no fallback), so the broker can
//! merge it into its own app; [`query_app`] adds `/health`, the OpenAPI
//! document and the JSON 404/405 answers, for `weir api`, which serves
//! queries alone.
//!
//! Parameters are read by [`FromParams`]: a name the route does not take is
//! a 400 naming it, never ignored, and every bad value is a 400 that names
//! the parameter and what was expected.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};
use weir_api::wire::ErrorBody;
use weir_store::query::{DEFAULT_LIMIT, MAX_LIMIT};
use weir_store::{
    Gpu, JobResult, Point, Query, ResultFilter, SeriesFilter, SeriesInfo, TelemetryQuery,
};
use weir_telemetry::time::parse_timestamp;

use crate::error::ApiError;
use crate::extract::{ApiParams, ApiPath, FromParams, NoParams, Params};
use crate::state::{method_not_allowed, no_such_route, require_bearer};
use crate::{admin, openapi};

type Store = Arc<dyn Query>;

/// The query API's routes over `store`, without a fallback, so that it can
/// be merged into another app (`router(..).merge(query_router(..))`). With
/// `auth_token`, every route requires `Authorization: Bearer <token>`.
pub fn query_router(store: Arc<dyn Query>, auth_token: Option<String>) -> Router {
    // A per-route fallback, not the router's: merged into the broker, whose
    // `method_not_allowed_fallback` covers only routes it had already.
    let routes = Router::new()
        .route("/api/v1/gpus", get(gpus).fallback(method_not_allowed))
        .route("/api/v1/gpus/{uuid}", get(gpu).fallback(method_not_allowed))
        .route(
            "/api/v1/gpus/{uuid}/telemetry",
            get(telemetry).fallback(method_not_allowed),
        )
        .route("/api/v1/series", get(series).fallback(method_not_allowed))
        .route(
            "/api/v1/jobs/results",
            get(job_results).fallback(method_not_allowed),
        )
        .with_state(store);
    match auth_token {
        Some(token) => routes.route_layer(from_fn_with_state(Arc::<str>::from(token), authorize)),
        None => routes,
    }
}

/// The query API alone, as `weir api` serves it: [`query_router`] plus
/// `/health`, `/api/v1/openapi.json` and JSON answers for unknown routes and
/// methods.
pub fn query_app(store: Arc<dyn Query>, auth_token: Option<String>) -> Router {
    query_router(store, auth_token)
        .route("/health", get(admin::health))
        .route("/api/v1/openapi.json", get(openapi::serve_query))
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn authorize(State(token): State<Arc<str>>, req: Request, next: Next) -> Response {
    require_bearer(Some(&token), req, next).await
}

/// Every GPU seen.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GpuList {
    /// By UUID; without their metrics (ask for one GPU for those).
    gpus: Vec<Gpu>,
}

/// A GPU's samples.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Telemetry {
    uuid: String,
    /// By time (earliest first, or latest first with `order=desc`), then
    /// by metric.
    points: Vec<Point>,
}

/// Series that match.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SeriesList {
    /// By metric, then labels.
    series: Vec<SeriesInfo>,
}

/// Game of Life results.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ResultList {
    /// Latest first.
    results: Vec<JobResult>,
}

/// Every GPU the store has seen, by UUID, with its index, device, model,
/// host and the span of time it was seen in.
#[utoipa::path(get, path = "/api/v1/gpus", tag = "telemetry",
    responses(
        (status = 200, description = "Every GPU, perhaps none", body = GpuList),
        (status = 400, description = "A parameter was given (this route takes none)", body = ErrorBody),
    ))]
pub(crate) async fn gpus(
    State(store): State<Store>,
    ApiParams(NoParams): ApiParams<NoParams>,
) -> Result<Json<GpuList>, ApiError> {
    Ok(Json(GpuList {
        gpus: store.gpus().await?,
    }))
}

/// One GPU, with the metrics stored for it.
#[utoipa::path(get, path = "/api/v1/gpus/{uuid}", tag = "telemetry",
    params(("uuid" = String, Path, description = "The GPU's UUID (`GPU-…`, the DCGM `UUID` label)")),
    responses(
        (status = 200, description = "The GPU", body = Gpu),
        (status = 400, description = "A parameter was given (this route takes none)", body = ErrorBody),
        (status = 404, description = "No such GPU has been seen", body = ErrorBody),
    ))]
pub(crate) async fn gpu(
    State(store): State<Store>,
    ApiPath(uuid): ApiPath<String>,
    ApiParams(NoParams): ApiParams<NoParams>,
) -> Result<Json<Gpu>, ApiError> {
    match store.gpu(&uuid).await? {
        Some(gpu) => Ok(Json(gpu)),
        None => Err(unknown_gpu(&uuid)),
    }
}

/// A GPU's samples in a time range, both ends inclusive.
#[utoipa::path(get, path = "/api/v1/gpus/{uuid}/telemetry", tag = "telemetry",
    params(
        ("uuid" = String, Path, description = "The GPU's UUID (`GPU-…`, the DCGM `UUID` label)"),
        TelemetryParams,
    ),
    responses(
        (status = 200, description = "The samples, perhaps none", body = Telemetry),
        (status = 400, description = "A bad or unknown parameter", body = ErrorBody),
        (status = 404, description = "No such GPU has been seen", body = ErrorBody),
    ))]
pub(crate) async fn telemetry(
    State(store): State<Store>,
    ApiPath(uuid): ApiPath<String>,
    ApiParams(params): ApiParams<TelemetryParams>,
) -> Result<Json<Telemetry>, ApiError> {
    let points = store.telemetry(&uuid, &params.into_query()).await?;
    // Samples prove the GPU known; only an empty answer needs the lookup.
    if points.is_empty() && store.gpu(&uuid).await?.is_none() {
        return Err(unknown_gpu(&uuid));
    }
    Ok(Json(Telemetry { uuid, points }))
}

/// Series (a metric and its labels) by metric and labels.
#[utoipa::path(get, path = "/api/v1/series", tag = "telemetry",
    params(SeriesParams),
    responses(
        (status = 200, description = "The series, perhaps none", body = SeriesList),
        (status = 400, description = "A bad or unknown parameter", body = ErrorBody),
    ))]
pub(crate) async fn series(
    State(store): State<Store>,
    ApiParams(params): ApiParams<SeriesParams>,
) -> Result<Json<SeriesList>, ApiError> {
    let filter = SeriesFilter {
        metric: params.metric,
        labels: params.label,
        limit: params.limit.unwrap_or(DEFAULT_LIMIT),
    };
    Ok(Json(SeriesList {
        series: store.series(&filter).await?,
    }))
}

/// Game of Life results, latest first.
#[utoipa::path(get, path = "/api/v1/jobs/results", tag = "telemetry",
    params(ResultParams),
    responses(
        (status = 200, description = "The results, perhaps none", body = ResultList),
        (status = 400, description = "A bad or unknown parameter", body = ErrorBody),
    ))]
pub(crate) async fn job_results(
    State(store): State<Store>,
    ApiParams(params): ApiParams<ResultParams>,
) -> Result<Json<ResultList>, ApiError> {
    let filter = ResultFilter {
        job_id: params.job_id,
        limit: params.limit.unwrap_or(DEFAULT_LIMIT),
    };
    Ok(Json(ResultList {
        results: store.job_results(&filter).await?,
    }))
}

fn unknown_gpu(uuid: &str) -> ApiError {
    ApiError::not_found(format!("no GPU {uuid} has been seen"))
}

/// The order of a GPU's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[schema(rename_all = "lowercase")]
pub(crate) enum SampleOrder {
    /// The earliest samples of the range first.
    Asc,
    /// The latest samples of the range first (the last `limit` of them).
    Desc,
}

/// `GET /api/v1/gpus/{uuid}/telemetry`'s query.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TelemetryParams {
    /// The earliest time, inclusive: RFC 3339 in UTC, with or without
    /// milliseconds (`2025-07-18T20:42:34Z`, `2025-07-18T20:42:34.123Z`).
    #[param(value_type = Option<String>, format = DateTime)]
    start_time: Option<i64>,
    /// The latest time, inclusive; not before `start_time`.
    #[param(value_type = Option<String>, format = DateTime)]
    end_time: Option<i64>,
    /// Samples at most (default 1000).
    #[param(minimum = 1, maximum = 100000)]
    limit: Option<usize>,
    /// Only this metric (`DCGM_FI_DEV_GPU_UTIL`).
    metric: Option<String>,
    /// `asc` (default) or `desc`.
    #[param(inline)]
    order: Option<SampleOrder>,
}

impl TelemetryParams {
    fn into_query(self) -> TelemetryQuery {
        TelemetryQuery {
            start: self.start_time,
            end: self.end_time,
            metric: self.metric,
            limit: self.limit.unwrap_or(DEFAULT_LIMIT),
            latest_first: self.order == Some(SampleOrder::Desc),
        }
    }
}

impl FromParams for TelemetryParams {
    const NAMES: &'static [&'static str] = &["start_time", "end_time", "limit", "metric", "order"];

    fn from_params(p: &Params) -> Result<Self, ApiError> {
        let start_time = time(p, "start_time")?;
        let end_time = time(p, "end_time")?;
        if let (Some(start), Some(end)) = (start_time, end_time)
            && start > end
        {
            return Err(ApiError::bad_request("start_time is after end_time"));
        }
        let order = p.parsed("order", "asc or desc", |v| match v {
            "asc" => Some(SampleOrder::Asc),
            "desc" => Some(SampleOrder::Desc),
            _ => None,
        })?;
        Ok(TelemetryParams {
            start_time,
            end_time,
            limit: limit(p)?,
            metric: p.one("metric")?.map(str::to_string),
            order,
        })
    }
}

/// `GET /api/v1/series`'s query.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SeriesParams {
    /// Only this metric.
    metric: Option<String>,
    /// `name:value` (split at the first `:`): only series with this label.
    /// May repeat; every one must match.
    #[param(value_type = Option<Vec<String>>, style = Form, explode)]
    label: Vec<(String, String)>,
    /// Series at most (default 1000).
    #[param(minimum = 1, maximum = 100000)]
    limit: Option<usize>,
}

impl FromParams for SeriesParams {
    const NAMES: &'static [&'static str] = &["metric", "label", "limit"];

    fn from_params(p: &Params) -> Result<Self, ApiError> {
        let label = p
            .all("label")
            .map(|l| match l.split_once(':') {
                Some((name, value)) => Ok((name.to_string(), value.to_string())),
                None => Err(ApiError::bad_request(format!(
                    "label: expected name:value, not {l:?}"
                ))),
            })
            .collect::<Result<_, _>>()?;
        Ok(SeriesParams {
            metric: p.one("metric")?.map(str::to_string),
            label,
            limit: limit(p)?,
        })
    }
}

/// `GET /api/v1/jobs/results`'s query.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ResultParams {
    /// Only this job's results.
    job_id: Option<String>,
    /// Results at most (default 1000).
    #[param(minimum = 1, maximum = 100000)]
    limit: Option<usize>,
}

impl FromParams for ResultParams {
    const NAMES: &'static [&'static str] = &["job_id", "limit"];

    fn from_params(p: &Params) -> Result<Self, ApiError> {
        Ok(ResultParams {
            job_id: p.one("job_id")?.map(str::to_string),
            limit: limit(p)?,
        })
    }
}

fn time(p: &Params, name: &str) -> Result<Option<i64>, ApiError> {
    p.parsed(
        name,
        "an RFC 3339 time like 2025-07-18T20:42:34Z",
        parse_timestamp,
    )
}

fn limit(p: &Params) -> Result<Option<usize>, ApiError> {
    p.parsed(
        "limit",
        &format!("a whole number from 1 to {MAX_LIMIT}"),
        |v| v.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n)),
    )
}

#[cfg(test)]
mod tests {
    use utoipa::openapi::path::ParameterIn;

    use super::*;

    /// The names a route accepts are the names its document lists.
    #[test]
    fn accepted_names_are_the_documented_ones() {
        fn check<T: FromParams + IntoParams>() {
            let documented: Vec<String> = T::into_params(|| Some(ParameterIn::Query))
                .into_iter()
                .map(|p| p.name)
                .collect();
            assert_eq!(documented, T::NAMES, "{}", std::any::type_name::<T>());
        }
        check::<TelemetryParams>();
        check::<SeriesParams>();
        check::<ResultParams>();
    }

    /// The documented range of `limit` is the one checked.
    #[test]
    fn the_documented_limit_is_the_checked_one() {
        fn check<T: IntoParams>() {
            let params = T::into_params(|| Some(ParameterIn::Query));
            let limit = params.iter().find(|p| p.name == "limit").expect("limit");
            let schema = serde_json::to_value(&limit.schema).expect("schema");
            assert_eq!(schema["minimum"], 1, "{schema}");
            assert_eq!(schema["maximum"], MAX_LIMIT, "{schema}");
        }
        check::<TelemetryParams>();
        check::<SeriesParams>();
        check::<ResultParams>();
    }
}
