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

use nvml_wrapper::Device;
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

    /// Emits every GPU's samples and fills `per_pid` with the GPU memory
    /// each process holds, bytes summed over GPUs.
    pub(crate) fn sample(
        &self,
        ts: i64,
        out: &mut Vec<weir_telemetry::Sample>,
        per_pid: &mut HashMap<u32, u64>,
    ) {
        per_pid.clear();
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
            add_process_memory(&device, per_pid);
        }
    }
}

/// Adds this GPU's per-process memory to `per_pid`. A process with both a
/// compute and a graphics context is listed twice with the same memory:
/// counted once.
fn add_process_memory(device: &Device<'_>, per_pid: &mut HashMap<u32, u64>) {
    let compute = device.running_compute_processes();
    let graphics = device.running_graphics_processes();
    let mut here: HashMap<u32, u64> = HashMap::new();
    let lists: [Vec<ProcessInfo>; 2] = [compute.unwrap_or_default(), graphics.unwrap_or_default()];
    for p in lists.iter().flatten() {
        if let UsedGpuMemory::Used(bytes) = p.used_gpu_memory {
            let held = here.entry(p.pid).or_default();
            *held = (*held).max(bytes);
        }
    }
    for (pid, bytes) in here {
        *per_pid.entry(pid).or_default() += bytes;
    }
}
