//! Weir's telemetry sample and the vocabulary shared by the sources that
//! produce samples (`weir stream`, `weir monitor`) and the sinks that store
//! them.
//!
//! A [`Sample`] is one measurement, Prometheus-like: a metric name, a finite
//! value, a time in milliseconds since the Unix epoch and a set of labels.
//! On the bus it travels as one JSON object per message:
//!
//! ```json
//! {"metric":"DCGM_FI_DEV_GPU_UTIL","value":87.0,"ts":"2025-07-18T20:42:34.000Z",
//!  "labels":{"Hostname":"node-1","UUID":"GPU-5fd4…","gpu":"0","modelName":"NVIDIA H100 80GB HBM3"}}
//! ```
//!
//! Invariants: a sample's value is finite (JSON has no NaN), its metric is
//! not empty, and its labels are sorted by name, so one series (metric +
//! labels) always encodes to the same text. [`metric`] names the metrics
//! Weir's own sources emit; GPU metrics keep DCGM's field names and label
//! names whichever source measured them, so a GPU is one series whether it
//! was replayed from a DCGM export or read through NVML.

pub mod metric;
mod sample;
pub mod time;

pub use sample::{Labels, Sample, SampleError};
