//! What the collector stores, decoded from a message: a telemetry sample, a
//! Game of Life result or a refused job. The shape decides, not the topic,
//! so one collector can take several topics.

use serde::{Deserialize, Serialize};
use weir_telemetry::Sample;

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Sample(Sample),
    Result(JobResult),
    Failure(JobFailure),
}

/// One size of a Game of Life job, as `weir worker` publishes it: the
/// classic `{tam, init, comp, fim, tot}` and Weir's own fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobResult {
    pub job_id: String,
    pub pow: u32,
    pub tam: u64,
    /// Seconds.
    pub init: f64,
    pub comp: f64,
    pub fim: f64,
    pub tot: f64,
    #[serde(default)]
    pub engine: String,
    #[serde(default)]
    pub threads: u32,
    pub correct: bool,
    #[serde(default)]
    pub generations: u64,
    #[serde(default)]
    pub worker: String,
    /// When the result was published (milliseconds since the epoch; RFC
    /// 3339 in JSON). Set from the message, never read from its payload.
    #[serde(skip_deserializing, serialize_with = "rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub finished_at: i64,
}

/// A job a worker refused, as published on the results topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobFailure {
    pub job_id: String,
    /// A short code (`shape`, `range`, …).
    pub reason: String,
    /// The full message.
    pub error: String,
    #[serde(default)]
    pub worker: String,
    /// The job as received.
    #[serde(default)]
    pub job: String,
    #[serde(skip_deserializing, serialize_with = "rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub failed_at: i64,
}

/// Why a message cannot be stored; the text goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a telemetry sample: {0}")]
    Sample(String),
    #[error("not a Game of Life result: {0}")]
    Result(String),
    #[error("not a refused-job record: {0}")]
    Failure(String),
    #[error(
        "unknown shape: expected a telemetry sample {{metric, value, ts, labels}} or a Game of Life result {{job_id, tam, init, comp, fim, tot, ...}}"
    )]
    Unknown,
}

/// Decodes one message published at `published_ms`. Samples are the fast
/// path; other shapes are tried only when a sample does not fit.
pub fn decode(payload: &[u8], published_ms: i64) -> Result<Record, RecordError> {
    let sample_error = match Sample::decode(payload) {
        Ok(sample) => return Ok(Record::Sample(sample)),
        Err(e) => e,
    };
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| RecordError::NotJson(e.to_string()))?;
    let Some(object) = value.as_object() else {
        return Err(RecordError::Unknown);
    };
    if object.contains_key("metric") {
        return Err(RecordError::Sample(sample_error.to_string()));
    }
    if object.contains_key("tam") {
        let mut result: JobResult =
            serde_json::from_value(value).map_err(|e| RecordError::Result(e.to_string()))?;
        result.finished_at = published_ms;
        return Ok(Record::Result(result));
    }
    if object.contains_key("job_id") && object.contains_key("error") {
        let mut failure: JobFailure =
            serde_json::from_value(value).map_err(|e| RecordError::Failure(e.to_string()))?;
        failure.failed_at = published_ms;
        return Ok(Record::Failure(failure));
    }
    Err(RecordError::Unknown)
}

/// Times in JSON as RFC 3339.
pub(crate) mod rfc3339 {
    use serde::Serializer;
    use weir_telemetry::time::format_timestamp;

    pub(crate) fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_timestamp(*ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(payload: &str, want: Result<&str, &str>) {
        match (decode(payload.as_bytes(), 1_000), want) {
            (Ok(record), Ok(kind)) => {
                let got = match record {
                    Record::Sample(_) => "sample",
                    Record::Result(r) => {
                        assert_eq!(r.finished_at, 1_000);
                        "result"
                    }
                    Record::Failure(f) => {
                        assert_eq!(f.failed_at, 1_000);
                        "failure"
                    }
                };
                assert_eq!(got, kind, "{payload}");
            }
            (Err(e), Err(fragment)) => {
                assert!(e.to_string().contains(fragment), "{payload}: {e}")
            }
            (got, want) => panic!("{payload}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn decodes_by_shape() {
        check(
            r#"{"metric":"m","value":1.5,"ts":"2025-07-18T20:42:34.123Z","labels":{"a":"b"}}"#,
            Ok("sample"),
        );
        check(
            r#"{"tam":8,"init":0.1,"comp":0.2,"fim":0.0,"tot":0.3,"job_id":"0-1","pow":3,"correct":true}"#,
            Ok("result"),
        );
        check(
            r#"{"job_id":"0-2","error":"powmin 5 is greater than powmax 3","reason":"reversed","worker":"w","job":"{}"}"#,
            Ok("failure"),
        );
        check("not json", Err("not JSON"));
        check("[1,2]", Err("unknown shape"));
        check(r#"{"hello":"world"}"#, Err("unknown shape"));
        check(
            r#"{"metric":"m","value":"hot","ts":"2025-07-18T20:42:34Z"}"#,
            Err("not a telemetry sample"),
        );
        check(
            r#"{"metric":"","value":1,"ts":"2025-07-18T20:42:34Z"}"#,
            Err("metric name"),
        );
        check(
            r#"{"tam":8,"job_id":"x"}"#,
            Err("not a Game of Life result"),
        );
    }
}
