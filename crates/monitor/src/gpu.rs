//! NVIDIA GPUs through NVML, in DCGM's vocabulary: the same metric names,
//! units and labels as a DCGM export, so a GPU read here and one replayed
//! from DCGM are the same series.
//!
//! NVML (`libnvidia-ml.so.1`) is loaded at run time, once. Without a driver
//! loading fails, which is logged at debug level and leaves the GPU part
//! out; this module always compiles. A field a GPU cannot report (a
//! consumer card without power readings, a lost GPU) is skipped, the rest
//! of the tick goes on.

use std::collections::HashMap;

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::struct_wrappers::device::ProcessInfo;
use weir_telemetry::Labels;
use weir_telemetry::metric::dcgm;

use crate::sampler::Emit;

const MIB: f64 = 1024.0 * 1024.0;

/// The GPUs of this host, or none.
pub(crate) struct Gpus {
    nvml: Option<Nvml>,
    devices: Vec<Gpu>,
}

impl std::fmt::Debug for Gpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpus")
            .field("nvml", &self.nvml.is_some())
            .field("devices", &self.devices)
            .finish()
    }
}

/// One GPU: its NVML index and the labels of its samples.
#[derive(Debug)]
struct Gpu {
    index: u32,
    labels: Labels,
}

impl Gpus {
    /// No GPU part (`--no-gpu`).
    pub(crate) fn absent() -> Gpus {
        Gpus {
            nvml: None,
            devices: Vec::new(),
        }
    }

    /// Loads NVML and lists the GPUs; none when there is no driver.
    pub(crate) fn open(host: &str) -> Gpus {
        let nvml = match Nvml::init() {
            Ok(nvml) => nvml,
            Err(e) => {
                tracing::debug!("no NVIDIA GPUs: NVML is not available ({e})");
                return Gpus::absent();
            }
        };
        let count = nvml.device_count().unwrap_or_else(|e| {
            tracing::warn!("NVML cannot count the GPUs: {e}");
            0
        });
        let mut devices = Vec::new();
        for index in 0..count {
            let device = match nvml.device_by_index(index) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!("GPU {index} is not usable: {e}");
                    continue;
                }
            };
            let Ok(uuid) = device.uuid() else {
                tracing::warn!("GPU {index} has no UUID: left out");
                continue;
            };
            let mut labels = Labels::new();
            labels.insert(dcgm::LABEL_UUID.into(), uuid);
            labels.insert(dcgm::LABEL_GPU.into(), index.to_string());
            labels.insert(dcgm::LABEL_HOSTNAME.into(), host.to_string());
            if let Ok(name) = device.name() {
                labels.insert(dcgm::LABEL_MODEL.into(), name);
            }
            if let Ok(minor) = device.minor_number() {
                labels.insert(dcgm::LABEL_DEVICE.into(), format!("nvidia{minor}"));
            }
            if let Ok(version) = nvml.sys_driver_version() {
                labels.insert(dcgm::LABEL_DRIVER_VERSION.into(), version);
            }
            devices.push(Gpu { index, labels });
        }
        tracing::debug!("NVML: {} GPU(s)", devices.len());
        Gpus {
            nvml: Some(nvml),
            devices,
        }
    }

    /// How many GPUs are sampled.
    pub(crate) fn count(&self) -> usize {
        self.devices.len()
    }

    /// Emits every GPU's samples and reads the GPU memory each process
    /// holds into `memory`.
    pub(crate) fn sample(
        &self,
        ts: i64,
        out: &mut Vec<weir_telemetry::Sample>,
        memory: &mut ProcessMemory,
    ) {
        memory.clear();
        let Some(nvml) = &self.nvml else {
            return;
        };
        for gpu in &self.devices {
            let device = match nvml.device_by_index(gpu.index) {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!("GPU {}: {e}", gpu.index);
                    continue;
                }
            };
            let mut emit = Emit::new(out, ts, &gpu.labels);
            if let Ok(u) = device.utilization_rates() {
                emit.push(dcgm::GPU_UTIL, f64::from(u.gpu));
                emit.push(dcgm::MEM_COPY_UTIL, f64::from(u.memory));
            }
            if let Ok(mem) = device.memory_info() {
                emit.push(dcgm::FB_USED, mem.used as f64 / MIB);
                emit.push(dcgm::FB_FREE, mem.free as f64 / MIB);
            }
            if let Ok(milliwatts) = device.power_usage() {
                emit.push(dcgm::POWER_USAGE, f64::from(milliwatts) / 1000.0);
            }
            if let Ok(celsius) = device.temperature(TemperatureSensor::Gpu) {
                emit.push(dcgm::GPU_TEMP, f64::from(celsius));
            }
            if let Ok(mhz) = device.clock_info(Clock::SM) {
                emit.push(dcgm::SM_CLOCK, f64::from(mhz));
            }
            if let Ok(mhz) = device.clock_info(Clock::Memory) {
                emit.push(dcgm::MEM_CLOCK, f64::from(mhz));
            }
            memory.add_gpu(
                device.running_compute_processes(),
                device.running_graphics_processes(),
            );
        }
    }
}

/// The GPU memory each process holds, bytes summed over GPUs, at one tick.
#[derive(Debug, Default)]
pub(crate) struct ProcessMemory {
    per_pid: HashMap<u32, u64>,
    /// Whether a GPU's process list could be read: without one, what a
    /// process holds is unknown, not zero.
    known: bool,
    /// Scratch: one GPU's processes.
    here: HashMap<u32, u64>,
}

impl ProcessMemory {
    fn clear(&mut self) {
        self.per_pid.clear();
        self.known = false;
    }

    /// Adds one GPU's compute and graphics process lists (an `Err` is a
    /// list NVML could not give). A process with both a compute and a
    /// graphics context is listed twice with the same memory: counted
    /// once. One whose memory NVML does not know adds nothing.
    pub(crate) fn add_gpu<E>(
        &mut self,
        compute: Result<Vec<ProcessInfo>, E>,
        graphics: Result<Vec<ProcessInfo>, E>,
    ) {
        self.here.clear();
        for list in [compute, graphics].into_iter().flatten() {
            self.known = true;
            for p in list {
                if let UsedGpuMemory::Used(bytes) = p.used_gpu_memory {
                    let held = self.here.entry(p.pid).or_default();
                    *held = (*held).max(bytes);
                }
            }
        }
        for (&pid, &bytes) in &self.here {
            *self.per_pid.entry(pid).or_default() += bytes;
        }
    }

    /// What these processes hold together; `None` when no GPU's process
    /// list could be read this tick (or there are no GPUs).
    pub(crate) fn sum(&self, pids: impl IntoIterator<Item = u32>) -> Option<u64> {
        self.known.then(|| {
            pids.into_iter()
                .filter_map(|pid| self.per_pid.get(&pid))
                .sum()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: u32, bytes: Option<u64>) -> ProcessInfo {
        ProcessInfo {
            pid,
            used_gpu_memory: bytes.map_or(UsedGpuMemory::Unavailable, UsedGpuMemory::Used),
            gpu_instance_id: None,
            compute_instance_id: None,
        }
    }

    type List = Result<Vec<ProcessInfo>, ()>;

    #[test]
    fn process_memory_is_known_only_from_a_list_that_was_read() {
        let check = |gpus: Vec<(List, List)>, pids: &[u32], want: Option<u64>| {
            let mut memory = ProcessMemory::default();
            // What a previous tick knew does not linger.
            memory.add_gpu::<()>(Ok(vec![process(1, Some(999))]), Ok(vec![]));
            memory.clear();
            let what = format!("{gpus:?}");
            for (compute, graphics) in gpus {
                memory.add_gpu(compute, graphics);
            }
            assert_eq!(
                memory.sum(pids.iter().copied()),
                want,
                "{what} for {pids:?}"
            );
        };
        let mib = 1 << 20;
        // No GPU, or every list failed: unknown, not zero.
        check(vec![], &[1], None);
        check(vec![(Err(()), Err(()))], &[1], None);
        check(vec![(Err(()), Err(())), (Err(()), Err(()))], &[1], None);
        // A list read, the process not in it: it holds nothing.
        check(vec![(Ok(vec![]), Err(()))], &[1], Some(0));
        check(
            vec![(Err(()), Err(())), (Err(()), Ok(vec![]))],
            &[1],
            Some(0),
        );
        // Compute and graphics contexts of one process: counted once.
        check(
            vec![(
                Ok(vec![process(1, Some(mib)), process(2, Some(3 * mib))]),
                Ok(vec![process(1, Some(mib))]),
            )],
            &[1],
            Some(mib),
        );
        // Summed over GPUs and over the tree's processes; memory NVML does
        // not know adds nothing.
        check(
            vec![
                (Ok(vec![process(1, Some(mib)), process(3, None)]), Err(())),
                (
                    Ok(vec![process(1, Some(2 * mib))]),
                    Ok(vec![process(2, Some(4 * mib))]),
                ),
            ],
            &[1, 2, 3],
            Some(7 * mib),
        );
    }
}
