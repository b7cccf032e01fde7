//! One adapter's report: what the adapter is and offers, then every measurement. The README's
//! "Cross-vendor benchmark" section documents the fields; `bench/tests/quick.rs` checks each
//! report against that table.

use milliwatt::Gpu;

use crate::{attention, e2e, kernels};

/// The adapter as wgpu describes it.
#[derive(serde::Serialize, Debug)]
pub struct Adapter {
    name: String,
    vendor: u32,
    device: u32,
    device_type: String,
    backend: String,
    driver: String,
    driver_info: String,
}

/// The device limits that shape the kernels.
#[derive(serde::Serialize, Debug)]
pub struct Limits {
    max_buffer_size: u64,
    max_storage_buffer_binding_size: u64,
    max_storage_buffers_per_shader_stage: u32,
    max_compute_workgroup_storage_size: u32,
    max_compute_invocations_per_workgroup: u32,
    max_compute_workgroup_size_x: u32,
    max_compute_workgroups_per_dimension: u32,
    min_storage_buffer_offset_alignment: u32,
}

/// The whole report.
#[derive(serde::Serialize, Debug)]
pub struct Report {
    schema: u32,
    tool: String,
    quick: bool,
    /// Seconds the adapter's run took.
    pub seconds: f64,
    host_cpu: String,
    adapter: Adapter,
    capabilities: milliwatt::gpu::Capabilities,
    limits: Limits,
    kernels: kernels::KernelSuite,
    attention: Vec<attention::Row>,
    end_to_end: Vec<e2e::Row>,
}

impl Report {
    pub fn new(
        gpu: &Gpu,
        quick: bool,
        seconds: f64,
        kernels: kernels::KernelSuite,
        attention: Vec<attention::Row>,
        end_to_end: Vec<e2e::Row>,
    ) -> Self {
        let info = gpu.adapter_info();
        let l = gpu.device().limits();
        Self {
            schema: 1,
            tool: format!("milliwatt-bench {}", env!("CARGO_PKG_VERSION")),
            quick,
            seconds,
            host_cpu: host_cpu(),
            adapter: Adapter {
                name: info.name.clone(),
                vendor: info.vendor,
                device: info.device,
                device_type: format!("{:?}", info.device_type),
                backend: format!("{:?}", info.backend),
                driver: info.driver.clone(),
                driver_info: info.driver_info.clone(),
            },
            capabilities: gpu.capabilities().clone(),
            limits: Limits {
                max_buffer_size: l.max_buffer_size,
                max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
                max_storage_buffers_per_shader_stage: l.max_storage_buffers_per_shader_stage,
                max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
                max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
                max_compute_workgroup_size_x: l.max_compute_workgroup_size_x,
                max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
                min_storage_buffer_offset_alignment: l.min_storage_buffer_offset_alignment,
            },
            kernels,
            attention,
            end_to_end,
        }
    }

    /// A file name for the report: backend and adapter name, lower case, dashes.
    pub fn slug(&self) -> String {
        let raw = format!("{}-{}", self.adapter.backend, self.adapter.name).to_lowercase();
        let mut slug = String::new();
        for ch in raw.chars() {
            if ch.is_ascii_alphanumeric() {
                slug.push(ch);
            } else if !slug.ends_with('-') {
                slug.push('-');
            }
        }
        slug.trim_matches('-').to_string()
    }
}

/// The host's CPU model (software adapters run on it; figures name it).
pub fn host_cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .map(|name| format!("{name}, {} threads", std::thread::available_parallelism().map_or(1, |n| n.get())))
        .unwrap_or_else(|| format!("{} {}", std::env::consts::OS, std::env::consts::ARCH))
}
