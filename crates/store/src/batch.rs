//! A batch of records to write in one transaction, and the rows every
//! backend derives from it the same way: the GPUs seen and the resource
//! usage of orders' tasks and services.

use std::collections::BTreeMap;

use weir_telemetry::metric::{dcgm, resource};
use weir_telemetry::{Labels, Sample};

use crate::record::{JobFailure, JobResult, Record};

/// Records bound for one transaction, all from one topic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// The topic they came from (CSV files are per topic).
    pub topic: String,
    pub samples: Vec<Sample>,
    pub results: Vec<JobResult>,
    pub failures: Vec<JobFailure>,
}

impl Batch {
    pub fn new(topic: impl Into<String>) -> Batch {
        Batch {
            topic: topic.into(),
            ..Batch::default()
        }
    }

    pub fn push(&mut self, record: Record) {
        match record {
            Record::Sample(s) => self.samples.push(s),
            Record::Result(r) => self.results.push(r),
            Record::Failure(f) => self.failures.push(f),
        }
    }

    pub fn len(&self) -> usize {
        self.samples.len() + self.results.len() + self.failures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every GPU the batch's samples name, once, with the span of times it
    /// was seen in and its latest labels.
    pub fn gpus(&self) -> Vec<GpuSeen> {
        let mut seen: BTreeMap<&str, GpuSeen> = BTreeMap::new();
        for s in &self.samples {
            let Some(uuid) = s.labels.get(dcgm::LABEL_UUID) else {
                continue;
            };
            let entry = seen.entry(uuid).or_insert_with(|| GpuSeen {
                uuid: uuid.clone(),
                first_seen: s.ts,
                last_seen: s.ts,
                ..GpuSeen::default()
            });
            entry.first_seen = entry.first_seen.min(s.ts);
            if s.ts >= entry.last_seen {
                entry.last_seen = s.ts;
                let label = |name: &str| s.labels.get(name).cloned();
                entry.index = label(dcgm::LABEL_GPU)
                    .and_then(|g| g.parse().ok())
                    .or(entry.index);
                entry.device = label(dcgm::LABEL_DEVICE).or(entry.device.take());
                entry.model = label(dcgm::LABEL_MODEL).or(entry.model.take());
                entry.host = label(dcgm::LABEL_HOSTNAME).or(entry.host.take());
            }
        }
        seen.into_values().collect()
    }

    /// The resource-usage rows of the batch's samples (see [`usage_of`]).
    pub fn usage(&self) -> Vec<Usage<'_>> {
        self.samples.iter().filter_map(usage_of).collect()
    }
}

/// A GPU as one batch saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuSeen {
    pub uuid: String,
    pub index: Option<i64>,
    pub device: Option<String>,
    pub model: Option<String>,
    pub host: Option<String>,
    pub first_seen: i64,
    pub last_seen: i64,
}

/// One resource-usage row: what a task (or service) of an order used on a
/// host at a time. `order` is empty for a service outside any order, `host`
/// when the sample names none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage<'a> {
    pub order: &'a str,
    pub task: &'a str,
    pub host: &'a str,
    pub resource: &'static str,
    pub ts: i64,
    pub value: f64,
}

/// The resource names of the analytics tables, by the monitor metric that
/// measures them. A cgroup and a process tree measure the same resources.
pub const RESOURCES: &[(&str, &str)] = &[
    (resource::PROCESS_CPU_PERCENT, "CPU"),
    (resource::CGROUP_CPU_PERCENT, "CPU"),
    (resource::PROCESS_RESIDENT_MEMORY_BYTES, "RAM"),
    (resource::CGROUP_MEMORY_BYTES, "RAM"),
    (resource::PROCESS_READ_BYTES_PER_SECOND, "DISK_READ"),
    (resource::CGROUP_READ_BYTES_PER_SECOND, "DISK_READ"),
    (resource::PROCESS_WRITE_BYTES_PER_SECOND, "DISK_WRITE"),
    (resource::CGROUP_WRITE_BYTES_PER_SECOND, "DISK_WRITE"),
    (resource::PROCESS_GPU_MEMORY_BYTES, "GPU_RAM"),
    (resource::PROCESS_VIRTUAL_MEMORY_BYTES, "VIRTUAL_MEMORY"),
    (resource::PROCESS_THREADS, "THREADS"),
    (resource::PROCESS_OPEN_FDS, "OPEN_FILES"),
];

/// The usage row a sample makes: when it measures a resource of a process
/// tree or cgroup labelled with a `task` (or, failing that, a `service`).
pub fn usage_of(sample: &Sample) -> Option<Usage<'_>> {
    let resource = RESOURCES
        .iter()
        .find(|(metric, _)| *metric == sample.metric)?
        .1;
    let labels: &Labels = &sample.labels;
    let task = labels
        .get(resource::LABEL_TASK)
        .or_else(|| labels.get(resource::LABEL_SERVICE))?;
    let order = labels.get(resource::LABEL_ORDER).map_or("", String::as_str);
    let host = labels.get(resource::LABEL_HOST).map_or("", String::as_str);
    Some(Usage {
        order,
        task,
        host,
        resource,
        ts: sample.ts,
        value: sample.value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu_sample(uuid: &str, ts: i64, model: &str) -> Sample {
        Sample::new(dcgm::GPU_UTIL, 50.0, ts)
            .label(dcgm::LABEL_UUID, uuid)
            .label(dcgm::LABEL_GPU, "3")
            .label(dcgm::LABEL_MODEL, model)
            .label(dcgm::LABEL_HOSTNAME, "node-1")
    }

    #[test]
    fn gpus_are_seen_once_with_their_span_and_latest_labels() {
        let mut batch = Batch::default();
        for s in [
            gpu_sample("GPU-a", 2_000, "new"),
            gpu_sample("GPU-b", 1_500, "x"),
            gpu_sample("GPU-a", 1_000, "old"),
            Sample::new("host_cpu_percent", 1.0, 5),
        ] {
            batch.push(Record::Sample(s));
        }
        let gpus = batch.gpus();
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].uuid, "GPU-a");
        assert_eq!((gpus[0].first_seen, gpus[0].last_seen), (1_000, 2_000));
        assert_eq!(gpus[0].model.as_deref(), Some("new"));
        assert_eq!(gpus[0].index, Some(3));
        assert_eq!(gpus[0].host.as_deref(), Some("node-1"));
        assert_eq!(gpus[1].uuid, "GPU-b");
    }

    #[test]
    fn usage_needs_a_known_resource_and_a_task_or_service() {
        let cpu = Sample::new(resource::PROCESS_CPU_PERCENT, 150.0, 7)
            .label(resource::LABEL_ORDER, "42")
            .label(resource::LABEL_TASK, "resize");
        let row = usage_of(&cpu).expect("a task's CPU is usage");
        assert_eq!((row.order, row.task, row.resource), ("42", "resize", "CPU"));
        let service = Sample::new(resource::CGROUP_MEMORY_BYTES, 1e6, 7)
            .label(resource::LABEL_SERVICE, "service1");
        let row = usage_of(&service).expect("a service's RAM is usage");
        assert_eq!((row.order, row.task, row.resource), ("", "service1", "RAM"));
        let unnamed = Sample::new(resource::PROCESS_CPU_PERCENT, 1.0, 7);
        assert_eq!(usage_of(&unnamed), None);
        let host = Sample::new(resource::HOST_CPU_PERCENT, 1.0, 7).label("task", "t");
        assert_eq!(usage_of(&host), None);
    }
}
