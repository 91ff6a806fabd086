//! NVIDIA DCGM exports as CSV: one metric of one GPU per row, read into
//! [`Sample`]s.
//!
//! The header names the columns `timestamp, metric_name, gpu_id, device,
//! uuid, modelName, Hostname, container, pod, namespace, value, labels_raw`
//! in any order (other columns are ignored); a header without one of them
//! is not a DCGM export ([`DcgmError::NotDcgm`]). Quoting is RFC 4180
//! (module `csv`); `labels_raw` holds Prometheus label syntax (module
//! `labels`).
//!
//! A row becomes a sample: the metric is `metric_name`, the time is
//! `timestamp` (RFC 3339), the labels are those of `labels_raw` less
//! `__name__`, then the non-empty columns `gpu_id`, `device`, `uuid`,
//! `modelName`, `Hostname`, `container`, `pod`, `namespace` under the names
//! dcgm-exporter gives them (`gpu`, `device`, `UUID`, …), which win over
//! `labels_raw`.
//!
//! DCGM writes "blank" values — not measured, not found, not supported, not
//! permissioned — as sentinels: 2147483632..=2147483635 for 32-bit fields,
//! 9223372036854775792..=9223372036854775795 for 64-bit ones, 2^47 + 0..3
//! for doubles, and `<<<NULL>>>` for strings. Those rows, and rows with an
//! empty value, are [`Reading::Blank`]: counted, never published. A 64-bit
//! sentinel written as a float (`9223372036854775792.0`) rounds onto 2^63
//! like its neighbours, so any float from 2^63 − 1024 up is taken for
//! `DCGM_INT64_BLANK`; integer text is compared exactly.
//!
//! A row that is not valid ([`BadRow`]: wrong field count, bad time, a value
//! that is not a finite number, broken labels) is reported with the line it
//! starts on and skipped; only a wrong header or a failing read ends the
//! file.

mod csv;
mod labels;

use std::io::BufRead;

use weir_telemetry::metric::dcgm as names;
use weir_telemetry::time::parse_timestamp;
use weir_telemetry::{Labels, Sample};

use csv::{Read, Records};

/// The columns a DCGM export has, in the order DCGM writes them.
pub const COLUMNS: [&str; 12] = [
    "timestamp",
    "metric_name",
    "gpu_id",
    "device",
    "uuid",
    "modelName",
    "Hostname",
    "container",
    "pod",
    "namespace",
    "value",
    "labels_raw",
];

/// Columns copied into labels, and the label each becomes.
const LABEL_COLUMNS: [(Column, &str); 8] = [
    (Column::GpuId, names::LABEL_GPU),
    (Column::Device, names::LABEL_DEVICE),
    (Column::Uuid, names::LABEL_UUID),
    (Column::ModelName, names::LABEL_MODEL),
    (Column::Hostname, names::LABEL_HOSTNAME),
    (Column::Container, names::LABEL_CONTAINER),
    (Column::Pod, names::LABEL_POD),
    (Column::Namespace, names::LABEL_NAMESPACE),
];

/// A column, as an index into [`COLUMNS`].
#[derive(Debug, Clone, Copy)]
enum Column {
    Timestamp = 0,
    MetricName,
    GpuId,
    Device,
    Uuid,
    ModelName,
    Hostname,
    Container,
    Pod,
    Namespace,
    Value,
    LabelsRaw,
}

/// Why a file cannot be read as a DCGM export at all.
#[derive(Debug, thiserror::Error)]
pub enum DcgmError {
    #[error("line {line}: not a DCGM export: {reason}")]
    NotDcgm { line: u64, reason: String },
    #[error("cannot read the file")]
    Io(#[from] std::io::Error),
}

/// A row that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct BadRow {
    /// The line the row starts on (1 is the header).
    pub line: u64,
    pub reason: String,
}

/// What stops a row from being read: the row itself, or the file.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    /// This row is skipped; the next may be fine.
    #[error(transparent)]
    Bad(#[from] BadRow),
    /// Nothing more can be read.
    #[error(transparent)]
    Read(#[from] DcgmError),
}

/// One data row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The line the row starts on.
    pub line: u64,
    /// The `timestamp` column as written: rows of one scrape share it.
    pub timestamp: String,
    pub reading: Reading,
}

/// A row's value: a sample, or one of DCGM's blanks.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    Sample(Sample),
    Blank(Blank),
}

/// Which kind of "no value" a row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blank {
    /// The value column is empty.
    Empty,
    /// A DCGM sentinel, by its DCGM name (`DCGM_INT32_NOT_SUPPORTED`).
    Sentinel(&'static str),
}

impl std::fmt::Display for Blank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blank::Empty => f.write_str("empty value"),
            Blank::Sentinel(name) => f.write_str(name),
        }
    }
}

/// The rows of a DCGM export, read one at a time.
#[derive(Debug)]
pub struct Reader<R> {
    records: Records<R>,
    /// Where each of [`COLUMNS`] is in a record.
    at: [usize; 12],
    /// Fields per record, from the header.
    width: usize,
}

impl<R: BufRead> Reader<R> {
    /// Reads and checks the header.
    pub fn new(input: R) -> Result<Reader<R>, DcgmError> {
        let mut records = Records::new(input);
        let not_dcgm = |line, reason: String| DcgmError::NotDcgm { line, reason };
        let header = match records.next_record() {
            None => return Err(not_dcgm(1, "the file is empty".into())),
            Some(Read::Failed(e)) => return Err(DcgmError::Io(e)),
            Some(Read::Bad { line, reason }) => return Err(not_dcgm(line, reason)),
            Some(Read::Record(r)) => r,
        };
        let mut at = [0; 12];
        for (slot, name) in at.iter_mut().zip(COLUMNS) {
            *slot = header
                .fields
                .iter()
                .position(|f| f.trim() == name)
                .ok_or_else(|| not_dcgm(header.line, format!("no `{name}` column")))?;
        }
        Ok(Reader {
            records,
            at,
            width: header.fields.len(),
        })
    }

    /// Bytes of input consumed so far.
    pub fn bytes(&self) -> u64 {
        self.records.bytes()
    }

    fn row(&self, line: u64, fields: &[String]) -> Result<Row, BadRow> {
        let bad = |reason: String| BadRow { line, reason };
        if fields.len() != self.width {
            return Err(bad(format!(
                "{} fields, the header has {}",
                fields.len(),
                self.width
            )));
        }
        let get = |c: Column| fields[self.at[c as usize]].trim();
        let timestamp = get(Column::Timestamp);
        let ts = parse_timestamp(timestamp)
            .ok_or_else(|| bad(format!("timestamp {timestamp:?} is not an RFC 3339 time")))?;
        let metric = get(Column::MetricName);
        if metric.is_empty() {
            return Err(bad("empty metric_name".into()));
        }
        let value = match parse_value(get(Column::Value)) {
            Ok(Ok(v)) => v,
            Ok(Err(blank)) => {
                return Ok(Row {
                    line,
                    timestamp: timestamp.to_string(),
                    reading: Reading::Blank(blank),
                });
            }
            Err(reason) => return Err(bad(reason)),
        };
        let raw = fields[self.at[Column::LabelsRaw as usize]].as_str();
        let mut labels: Labels = labels::parse(raw)
            .map_err(|e| bad(format!("labels_raw: {e}")))?
            .into_iter()
            .filter(|(name, _)| name != "__name__")
            .collect();
        for (column, label) in LABEL_COLUMNS {
            let v = get(column);
            if !v.is_empty() {
                labels.insert(label.to_string(), v.to_string());
            }
        }
        Ok(Row {
            line,
            timestamp: timestamp.to_string(),
            reading: Reading::Sample(Sample {
                metric: metric.to_string(),
                value,
                ts,
                labels,
            }),
        })
    }
}

impl<R: BufRead> Iterator for Reader<R> {
    type Item = Result<Row, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(match self.records.next_record()? {
            Read::Record(r) => self.row(r.line, &r.fields).map_err(RowError::Bad),
            Read::Bad { line, reason } => Err(RowError::Bad(BadRow { line, reason })),
            Read::Failed(e) => Err(RowError::Read(DcgmError::Io(e))),
        })
    }
}

/// The key of a GPU sample on the bus: its `UUID` label, else
/// `Hostname/gpu`, else the host, so each GPU's samples stay in order.
pub fn gpu_key(labels: &Labels) -> Option<String> {
    if let Some(uuid) = labels.get(names::LABEL_UUID) {
        return Some(uuid.clone());
    }
    let host = labels.get(names::LABEL_HOSTNAME);
    match (host, labels.get(names::LABEL_GPU)) {
        (Some(host), Some(gpu)) => Some(format!("{host}/{gpu}")),
        (Some(host), None) => Some(host.clone()),
        (None, _) => None,
    }
}

/// DCGM's blank sentinels. Integer text is compared exactly as an integer
/// (the int64 family is not exact in `f64`: 9223372036854775791 would round
/// onto it); other numbers as doubles against the fp64 family (2^47 + 0..3)
/// and the int32 family, both exact in `f64`. An int64 sentinel written as
/// a float (`9223372036854775792.0`, `9.223372036854776e18`) rounds onto
/// 2^63 and cannot be told apart from its neighbours: a float at or past
/// [`INT64_BLANK_AS_FLOAT`] is [`INT64_BLANK_NAME`].
const INT32_BLANKS: [(i64, &str); 4] = [
    (2_147_483_632, "DCGM_INT32_BLANK"),
    (2_147_483_633, "DCGM_INT32_NOT_FOUND"),
    (2_147_483_634, "DCGM_INT32_NOT_SUPPORTED"),
    (2_147_483_635, "DCGM_INT32_NOT_PERMISSIONED"),
];
const INT64_BLANKS: [(i64, &str); 4] = [
    (9_223_372_036_854_775_792, "DCGM_INT64_BLANK"),
    (9_223_372_036_854_775_793, "DCGM_INT64_NOT_FOUND"),
    (9_223_372_036_854_775_794, "DCGM_INT64_NOT_SUPPORTED"),
    (9_223_372_036_854_775_795, "DCGM_INT64_NOT_PERMISSIONED"),
];
/// 2^63 − 1024, the largest `f64` below 2^63: no int64 measurement comes
/// this close to the type's limit, and the int64 family written as a float
/// with 13 significant digits or more (`printf`'s `%.17g` has 17) parses
/// at or above it.
const INT64_BLANK_AS_FLOAT: f64 = 9_223_372_036_854_774_784.0;
/// What an int64 sentinel written as a float is taken for.
const INT64_BLANK_NAME: &str = "DCGM_INT64_BLANK";
const FP64_BLANKS: [(f64, &str); 4] = [
    (140_737_488_355_328.0, "DCGM_FP64_BLANK"),
    (140_737_488_355_329.0, "DCGM_FP64_NOT_FOUND"),
    (140_737_488_355_330.0, "DCGM_FP64_NOT_SUPPORTED"),
    (140_737_488_355_331.0, "DCGM_FP64_NOT_PERMISSIONED"),
];
/// DCGM's blank string.
const STR_BLANK: &str = "<<<NULL>>>";

/// A value, a blank, or why the text is neither.
pub fn parse_value(text: &str) -> Result<Result<f64, Blank>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Err(Blank::Empty));
    }
    if text == STR_BLANK {
        return Ok(Err(Blank::Sentinel("DCGM_STR_BLANK")));
    }
    let int = text.parse::<i64>().ok();
    if let Some(int) = int {
        let blank = INT32_BLANKS.iter().chain(&INT64_BLANKS);
        if let Some((_, name)) = blank.into_iter().find(|(v, _)| *v == int) {
            return Ok(Err(Blank::Sentinel(name)));
        }
    }
    let value: f64 = text
        .parse()
        .map_err(|_| format!("value {text:?} is not a number"))?;
    if !value.is_finite() {
        return Err(format!("value {text:?} is not a finite number"));
    }
    if int.is_none() && value >= INT64_BLANK_AS_FLOAT {
        return Ok(Err(Blank::Sentinel(INT64_BLANK_NAME)));
    }
    let int32 = INT32_BLANKS.iter().map(|&(v, n)| (v as f64, n));
    if let Some((_, name)) = FP64_BLANKS
        .into_iter()
        .chain(int32)
        .find(|(v, _)| *v == value)
    {
        return Ok(Err(Blank::Sentinel(name)));
    }
    Ok(Ok(value))
}
