//! Metric and label names emitted by Weir's sources, in one place so sinks
//! and queries name the same things.
//!
//! GPU metrics use DCGM's field names and units whichever source measured
//! them (a DCGM export, the synthetic fleet or NVML); the host, process and
//! cgroup metrics of `weir monitor` follow Prometheus' naming (base units,
//! a unit suffix). CPU percentages are of one core: a process using two
//! cores fully reads 200.

/// DCGM field names and the labels dcgm-exporter puts on them.
pub mod dcgm {
    /// GPU utilisation, percent.
    pub const GPU_UTIL: &str = "DCGM_FI_DEV_GPU_UTIL";
    /// Memory copy (bandwidth) utilisation, percent.
    pub const MEM_COPY_UTIL: &str = "DCGM_FI_DEV_MEM_COPY_UTIL";
    /// Board power draw, watts.
    pub const POWER_USAGE: &str = "DCGM_FI_DEV_POWER_USAGE";
    /// GPU temperature, degrees Celsius.
    pub const GPU_TEMP: &str = "DCGM_FI_DEV_GPU_TEMP";
    /// Framebuffer memory used, MiB.
    pub const FB_USED: &str = "DCGM_FI_DEV_FB_USED";
    /// Framebuffer memory free, MiB.
    pub const FB_FREE: &str = "DCGM_FI_DEV_FB_FREE";
    /// SM clock, MHz.
    pub const SM_CLOCK: &str = "DCGM_FI_DEV_SM_CLOCK";
    /// Memory clock, MHz.
    pub const MEM_CLOCK: &str = "DCGM_FI_DEV_MEM_CLOCK";
    /// Encoder utilisation, percent.
    pub const ENC_UTIL: &str = "DCGM_FI_DEV_ENC_UTIL";
    /// Decoder utilisation, percent.
    pub const DEC_UTIL: &str = "DCGM_FI_DEV_DEC_UTIL";

    /// The GPU's UUID (`GPU-…`): the key of GPU samples on the bus.
    pub const LABEL_UUID: &str = "UUID";
    /// The GPU's index on its host.
    pub const LABEL_GPU: &str = "gpu";
    /// The device name (`nvidia0`).
    pub const LABEL_DEVICE: &str = "device";
    /// The GPU model (`NVIDIA H100 80GB HBM3`).
    pub const LABEL_MODEL: &str = "modelName";
    /// The host the GPU is in.
    pub const LABEL_HOSTNAME: &str = "Hostname";
    pub const LABEL_DRIVER_VERSION: &str = "DCGM_FI_DRIVER_VERSION";
    pub const LABEL_CONTAINER: &str = "container";
    pub const LABEL_POD: &str = "pod";
    pub const LABEL_NAMESPACE: &str = "namespace";
}

/// The readings of `weir generate sensor`, the simplest stream to learn
/// producers and consumers with.
pub mod sensor {
    /// A sensor's temperature, degrees Celsius.
    pub const TEMPERATURE_CELSIUS: &str = "sensor_temperature_celsius";
    /// The sensor's id (`sensor-1`): the key of its readings on the bus.
    pub const LABEL_SENSOR: &str = "sensor";
    /// Where the sensor is installed.
    pub const LABEL_SITE: &str = "site";
}

/// `weir monitor`'s host, process and cgroup metrics.
pub mod resource {
    /// Host CPU busy, percent of one core summed over all cores.
    pub const HOST_CPU_PERCENT: &str = "host_cpu_percent";
    pub const HOST_MEMORY_USED_BYTES: &str = "host_memory_used_bytes";
    pub const HOST_MEMORY_TOTAL_BYTES: &str = "host_memory_total_bytes";
    pub const HOST_DISK_READ_BYTES_PER_SECOND: &str = "host_disk_read_bytes_per_second";
    pub const HOST_DISK_WRITE_BYTES_PER_SECOND: &str = "host_disk_write_bytes_per_second";
    pub const HOST_NETWORK_RECEIVE_BYTES_PER_SECOND: &str = "host_network_receive_bytes_per_second";
    pub const HOST_NETWORK_TRANSMIT_BYTES_PER_SECOND: &str =
        "host_network_transmit_bytes_per_second";

    /// A process tree's CPU, percent of one core.
    pub const PROCESS_CPU_PERCENT: &str = "process_cpu_percent";
    pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
    pub const PROCESS_VIRTUAL_MEMORY_BYTES: &str = "process_virtual_memory_bytes";
    pub const PROCESS_READ_BYTES_PER_SECOND: &str = "process_read_bytes_per_second";
    pub const PROCESS_WRITE_BYTES_PER_SECOND: &str = "process_write_bytes_per_second";
    pub const PROCESS_THREADS: &str = "process_threads";
    pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
    /// How many processes the tree holds (the watched one and its descendants).
    pub const PROCESS_COUNT: &str = "process_count";
    /// GPU memory used by the tree, over all GPUs.
    pub const PROCESS_GPU_MEMORY_BYTES: &str = "process_gpu_memory_bytes";

    /// A cgroup's CPU, percent of one core.
    pub const CGROUP_CPU_PERCENT: &str = "cgroup_cpu_percent";
    pub const CGROUP_MEMORY_BYTES: &str = "cgroup_memory_bytes";
    pub const CGROUP_READ_BYTES_PER_SECOND: &str = "cgroup_read_bytes_per_second";
    pub const CGROUP_WRITE_BYTES_PER_SECOND: &str = "cgroup_write_bytes_per_second";

    /// The host a sample was taken on.
    pub const LABEL_HOST: &str = "host";
    /// The watched process (the root of its tree).
    pub const LABEL_PID: &str = "pid";
    /// The watched process's name.
    pub const LABEL_PROCESS: &str = "process";
    /// The cgroup, as a path below the cgroup v2 mount.
    pub const LABEL_CGROUP: &str = "cgroup";
    /// What the process is, when a caller knows: a service, an order's task,
    /// the order.
    pub const LABEL_SERVICE: &str = "service";
    pub const LABEL_TASK: &str = "task";
    pub const LABEL_ORDER: &str = "order";
}
