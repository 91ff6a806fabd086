//! What a store answers: GPUs, one GPU's telemetry, series, job results —
//! the query API's bodies and `weir query`'s rows.

use serde::Serialize;
use weir_telemetry::Labels;

use crate::record::{JobResult, rfc3339};
use crate::{Result, StoreError};

/// Rows a query returns unless it asks for another number.
pub const DEFAULT_LIMIT: usize = 1_000;
/// The most rows one query returns.
pub const MAX_LIMIT: usize = 100_000;

/// Answers the query API. SQLite and PostgreSQL stores do; CSV does not.
#[async_trait::async_trait]
pub trait Query: Send + Sync + std::fmt::Debug {
    /// Every GPU seen, by UUID.
    async fn gpus(&self) -> Result<Vec<Gpu>>;
    /// One GPU with the metrics stored for it; `None` when never seen.
    async fn gpu(&self, uuid: &str) -> Result<Option<Gpu>>;
    /// A GPU's samples in a time range, by time.
    async fn telemetry(&self, uuid: &str, query: &TelemetryQuery) -> Result<Vec<Point>>;
    /// Series by metric and labels.
    async fn series(&self, filter: &SeriesFilter) -> Result<Vec<SeriesInfo>>;
    /// Game of Life results, latest first.
    async fn job_results(&self, filter: &ResultFilter) -> Result<Vec<JobResult>>;
}

/// A GPU as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Gpu {
    pub uuid: String,
    /// Its index on its host (the `gpu` label).
    pub index: Option<i64>,
    pub device: Option<String>,
    pub model: Option<String>,
    pub host: Option<String>,
    #[serde(serialize_with = "rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub first_seen: i64,
    #[serde(serialize_with = "rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen: i64,
    /// The metrics stored for it (only for one GPU, not in the list).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
}

/// One sample of a GPU's telemetry.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Point {
    pub metric: String,
    #[serde(serialize_with = "rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub ts: i64,
    pub value: f64,
}

/// A series: a metric and its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SeriesInfo {
    pub metric: String,
    #[schema(value_type = Object)]
    pub labels: Labels,
}

/// Which of a GPU's samples to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryQuery {
    /// Inclusive, milliseconds since the epoch.
    pub start: Option<i64>,
    /// Inclusive.
    pub end: Option<i64>,
    /// Only this metric.
    pub metric: Option<String>,
    pub limit: usize,
    /// Latest first (the last `limit` samples of the range) instead of
    /// earliest first.
    pub latest_first: bool,
}

impl Default for TelemetryQuery {
    fn default() -> Self {
        TelemetryQuery {
            start: None,
            end: None,
            metric: None,
            limit: DEFAULT_LIMIT,
            latest_first: false,
        }
    }
}

/// Which series to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesFilter {
    pub metric: Option<String>,
    /// Every one must match exactly.
    pub labels: Vec<(String, String)>,
    pub limit: usize,
}

impl Default for SeriesFilter {
    fn default() -> Self {
        SeriesFilter {
            metric: None,
            labels: Vec::new(),
            limit: DEFAULT_LIMIT,
        }
    }
}

/// Which job results to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultFilter {
    pub job_id: Option<String>,
    pub limit: usize,
}

impl Default for ResultFilter {
    fn default() -> Self {
        ResultFilter {
            job_id: None,
            limit: DEFAULT_LIMIT,
        }
    }
}

/// Checks a row limit: 1 to [`MAX_LIMIT`].
pub fn check_limit(limit: usize) -> Result<usize> {
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(StoreError::Invalid(format!(
            "limit must be between 1 and {MAX_LIMIT}, not {limit}"
        )))
    }
}

/// Checks a time range: the start not after the end.
pub fn check_range(query: &TelemetryQuery) -> Result<()> {
    if let (Some(start), Some(end)) = (query.start, query.end)
        && start > end
    {
        return Err(StoreError::Invalid(
            "the start of the time range is after its end".to_string(),
        ));
    }
    check_limit(query.limit).map(|_| ())
}
