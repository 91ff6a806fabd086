//! `weir query`: the query API from a terminal, reading a store directly,
//! as a table, CSV or JSON lines.

use std::io::Write;

use weir_store::{Gpu, JobResult, Point, ResultFilter, SeriesFilter, SeriesInfo, TelemetryQuery};
use weir_telemetry::time::{format_timestamp, parse_timestamp};

use crate::UsageError;
use crate::options::StoreTuning;

#[derive(Debug, clap::Args)]
pub(crate) struct QueryArgs {
    /// The store: `sqlite://PATH` or `postgres://…`.
    #[arg(
        long,
        env = "WEIR_STORE",
        default_value = "sqlite://weir-data/weir.db",
        global = true
    )]
    store: String,
    #[command(flatten)]
    tuning: StoreTuning,
    /// `table` (aligned columns), `csv` (RFC 4180, with a header) or `json`
    /// (one object per line, as the HTTP API writes them).
    #[arg(long, default_value = "table", value_parser = ["table", "csv", "json"], global = true)]
    format: String,
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Every GPU seen: index, device, model, host, first and last seen.
    Gpus,
    /// One GPU and the metrics stored for it.
    Gpu { uuid: String },
    /// A GPU's samples in a time range.
    Telemetry {
        uuid: String,
        /// From this time on (RFC 3339, inclusive).
        #[arg(long)]
        start_time: Option<String>,
        /// Up to this time (RFC 3339, inclusive).
        #[arg(long)]
        end_time: Option<String>,
        /// Only this metric.
        #[arg(long)]
        metric: Option<String>,
        #[arg(long, default_value_t = weir_store::query::DEFAULT_LIMIT)]
        limit: usize,
        /// The latest samples first.
        #[arg(long)]
        latest: bool,
    },
    /// Series by metric and labels.
    Series {
        #[arg(long)]
        metric: Option<String>,
        /// `name:value`; repeat for several (all must match).
        #[arg(long = "label")]
        labels: Vec<String>,
        #[arg(long, default_value_t = weir_store::query::DEFAULT_LIMIT)]
        limit: usize,
    },
    /// Game of Life results, latest first.
    Results {
        /// Only this job.
        #[arg(long)]
        job_id: Option<String>,
        #[arg(long, default_value_t = weir_store::query::DEFAULT_LIMIT)]
        limit: usize,
    },
}

fn time(flag: &str, value: Option<String>) -> anyhow::Result<Option<i64>> {
    value
        .map(|v| {
            parse_timestamp(&v).ok_or_else(|| {
                UsageError(format!(
                    "--{flag}: expected an RFC 3339 time like 2025-07-18T20:42:34Z, not {v:?}"
                ))
                .into()
            })
        })
        .transpose()
}

pub(crate) async fn run(args: QueryArgs) -> anyhow::Result<()> {
    // A typo must not create an empty database to answer from.
    if let Some(path) = args.store.strip_prefix("sqlite://")
        && !std::path::Path::new(path).exists()
    {
        anyhow::bail!("no store at {path} (weir collect creates it)");
    }
    let store = crate::api::open_query(&args.tuning, &args.store).await?;
    let query = store.query.clone().expect("open_query checked");
    let out = match args.what {
        What::Gpus => Output::of(&query.gpus().await?, gpu_row, GPU_HEADER),
        What::Gpu { uuid } => match query.gpu(&uuid).await? {
            Some(gpu) => {
                let mut out = Output::of(std::slice::from_ref(&gpu), gpu_row, GPU_HEADER);
                out.header.push("metrics");
                out.rows[0].push(gpu.metrics.join(" "));
                out
            }
            None => anyhow::bail!("no GPU {uuid} has been seen in {}", store.url),
        },
        What::Telemetry {
            uuid,
            start_time,
            end_time,
            metric,
            limit,
            latest,
        } => {
            let q = TelemetryQuery {
                start: time("start-time", start_time)?,
                end: time("end-time", end_time)?,
                metric,
                limit,
                latest_first: latest,
            };
            let points = query.telemetry(&uuid, &q).await?;
            Output::of(&points, point_row, &["ts", "metric", "value"])
        }
        What::Series {
            metric,
            labels,
            limit,
        } => {
            let labels = labels
                .iter()
                .map(|l| {
                    l.split_once(':')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| {
                            UsageError(format!("--label: expected name:value, not {l:?}"))
                        })
                })
                .collect::<Result<_, _>>()?;
            let series = query
                .series(&SeriesFilter {
                    metric,
                    labels,
                    limit,
                })
                .await?;
            Output::of(&series, series_row, &["metric", "labels"])
        }
        What::Results { job_id, limit } => {
            let results = query.job_results(&ResultFilter { job_id, limit }).await?;
            Output::of(&results, result_row, RESULT_HEADER)
        }
    };
    store.sink.close().await?;
    let mut stdout = std::io::stdout().lock();
    match args.format.as_str() {
        "json" => out.json(&mut stdout)?,
        "csv" => out.csv(&mut stdout)?,
        _ => out.table(&mut stdout)?,
    }
    Ok(())
}

/// Rows to print, each also as the JSON the API would send.
struct Output {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    json: Vec<String>,
}

impl Output {
    fn of<T: serde::Serialize>(
        items: &[T],
        row: fn(&T) -> Vec<String>,
        header: &[&'static str],
    ) -> Output {
        Output {
            header: header.to_vec(),
            rows: items.iter().map(row).collect(),
            json: items
                .iter()
                .map(|i| serde_json::to_string(i).expect("query rows serialize"))
                .collect(),
        }
    }

    fn json(&self, out: &mut impl Write) -> std::io::Result<()> {
        for line in &self.json {
            writeln!(out, "{line}")?;
        }
        Ok(())
    }

    fn csv(&self, out: &mut impl Write) -> std::io::Result<()> {
        let line = |fields: &mut dyn Iterator<Item = &str>| {
            fields.map(csv_field).collect::<Vec<_>>().join(",")
        };
        writeln!(out, "{}", line(&mut self.header.iter().copied()))?;
        for row in &self.rows {
            writeln!(out, "{}", line(&mut row.iter().map(String::as_str)))?;
        }
        Ok(())
    }

    fn table(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            padded.join("  ").trim_end().to_string()
        };
        writeln!(out, "{}", line(self.header.clone()))?;
        for row in &self.rows {
            writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
        }
        if self.rows.is_empty() {
            writeln!(out, "(none)")?;
        }
        Ok(())
    }
}

/// RFC 4180: quoted when it holds a comma, quote or line break.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

const GPU_HEADER: &[&str] = &[
    "uuid",
    "index",
    "device",
    "model",
    "host",
    "first_seen",
    "last_seen",
];

fn gpu_row(g: &Gpu) -> Vec<String> {
    vec![
        g.uuid.clone(),
        opt(&g.index),
        opt(&g.device),
        opt(&g.model),
        opt(&g.host),
        format_timestamp(g.first_seen),
        format_timestamp(g.last_seen),
    ]
}

fn point_row(p: &Point) -> Vec<String> {
    vec![
        format_timestamp(p.ts),
        p.metric.clone(),
        p.value.to_string(),
    ]
}

fn series_row(s: &SeriesInfo) -> Vec<String> {
    let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    vec![s.metric.clone(), labels.join(",")]
}

const RESULT_HEADER: &[&str] = &[
    "job_id",
    "pow",
    "tam",
    "init",
    "comp",
    "fim",
    "tot",
    "engine",
    "threads",
    "correct",
    "worker",
    "finished_at",
];

fn result_row(r: &JobResult) -> Vec<String> {
    vec![
        r.job_id.clone(),
        r.pow.to_string(),
        r.tam.to_string(),
        r.init.to_string(),
        r.comp.to_string(),
        r.fim.to_string(),
        r.tot.to_string(),
        r.engine.clone(),
        r.threads.to_string(),
        r.correct.to_string(),
        r.worker.clone(),
        format_timestamp(r.finished_at),
    ]
}
