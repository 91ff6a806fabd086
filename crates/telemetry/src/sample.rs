//! The sample and its JSON form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::{format_timestamp, parse_timestamp};

/// A sample's labels, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// One measurement: `{metric, value, ts, labels}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub metric: String,
    pub value: f64,
    /// Milliseconds since the Unix epoch; RFC 3339 in JSON.
    #[serde(with = "rfc3339")]
    pub ts: i64,
    #[serde(default)]
    pub labels: Labels,
}

/// Why a message is not a sample, or a sample cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("not a telemetry sample: {0}")]
    Json(#[from] serde_json::Error),
    #[error("a sample needs a metric name")]
    NoMetric,
    #[error("sample {metric}: value {value} is not a finite number")]
    NotFinite { metric: String, value: f64 },
}

impl Sample {
    pub fn new(metric: impl Into<String>, value: f64, ts: i64) -> Self {
        Self {
            metric: metric.into(),
            value,
            ts,
            labels: Labels::new(),
        }
    }

    /// Adds or replaces one label.
    pub fn label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(name.into(), value.into());
        self
    }

    /// The sample as one JSON object; refuses what JSON cannot carry.
    pub fn encode(&self) -> Result<Vec<u8>, SampleError> {
        self.check()?;
        Ok(serde_json::to_vec(self)?)
    }

    /// A sample from its JSON form, checked.
    pub fn decode(bytes: &[u8]) -> Result<Self, SampleError> {
        let sample: Sample = serde_json::from_slice(bytes)?;
        sample.check()?;
        Ok(sample)
    }

    fn check(&self) -> Result<(), SampleError> {
        if self.metric.is_empty() {
            return Err(SampleError::NoMetric);
        }
        if !self.value.is_finite() {
            return Err(SampleError::NotFinite {
                metric: self.metric.clone(),
                value: self.value,
            });
        }
        Ok(())
    }
}

mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use super::{format_timestamp, parse_timestamp};

    pub(super) fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_timestamp(*ms))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse_timestamp(&text)
            .ok_or_else(|| D::Error::custom(format!("ts {text:?} is not an RFC 3339 time")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_documented_shape() {
        let s = Sample::new("DCGM_FI_DEV_GPU_UTIL", 87.0, 1_752_871_354_000)
            .label("gpu", "0")
            .label("UUID", "GPU-1");
        let text = String::from_utf8(s.encode().unwrap()).unwrap();
        assert_eq!(
            text,
            r#"{"metric":"DCGM_FI_DEV_GPU_UTIL","value":87.0,"ts":"2025-07-18T20:42:34.000Z","labels":{"UUID":"GPU-1","gpu":"0"}}"#
        );
        assert_eq!(Sample::decode(text.as_bytes()).unwrap(), s);
    }

    #[test]
    fn decode_explains_what_is_wrong() {
        let check = |input: &str, want: &str| {
            let err = Sample::decode(input.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        };
        check("{}", "missing field `metric`");
        check(
            r#"{"metric":"m","value":1,"ts":"soon"}"#,
            "not an RFC 3339 time",
        );
        check(
            r#"{"metric":"","value":1,"ts":"2025-07-18T20:42:34Z"}"#,
            "metric name",
        );
        check(
            r#"{"metric":"m","value":null,"ts":"2025-07-18T20:42:34Z"}"#,
            "invalid type",
        );
        check(
            r#"{"metric":"m","value":"1","ts":"2025-07-18T20:42:34Z"}"#,
            "invalid type",
        );
        check("not json", "expected");
        // No labels is fine; unknown fields are ignored for forward compatibility.
        let s = Sample::decode(br#"{"metric":"m","value":1,"ts":"2025-07-18T20:42:34Z","x":1}"#);
        assert!(s.unwrap().labels.is_empty());
    }

    #[test]
    fn refuses_to_encode_what_json_cannot_carry() {
        assert!(matches!(
            Sample::new("m", f64::NAN, 0).encode(),
            Err(SampleError::NotFinite { .. })
        ));
        assert!(matches!(
            Sample::new("", 1.0, 0).encode(),
            Err(SampleError::NoMetric)
        ));
    }
}
