//! GPU timing for benchmarks: GPU timestamps around each repeat where the device has them, wall
//! clock around submit + wait otherwise; warm-up; medians. Used by `benches/` and the examples.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernel::Prepared;

/// How a measurement was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Clock {
    /// GPU timestamps written at the start and end of the measured work.
    GpuTimestamps,
    /// Host wall clock around submit and wait (includes submission overhead).
    WallClock,
}

/// Repeated timings of one piece of GPU work.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Measurement {
    /// Seconds per repeat.
    pub samples: Vec<f64>,
    /// How they were taken.
    pub clock: Clock,
}

impl Measurement {
    /// Median seconds.
    pub fn median(&self) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        if s.is_empty() {
            return f64::NAN;
        }
        let h = s.len() / 2;
        if s.len() % 2 == 1 { s[h] } else { 0.5 * (s[h - 1] + s[h]) }
    }
}

/// How many times to run: `warmup` unmeasured runs, then at least `reps` measured ones — more
/// for short work, until the measured runs add up to about `min_seconds` (at most 200 runs), so
/// sub-millisecond kernels get enough samples for a stable median.
#[derive(Clone, Copy, Debug)]
pub struct Repeats {
    /// Unmeasured runs first.
    pub warmup: u32,
    /// Minimum measured runs.
    pub reps: u32,
    /// Target total measured time, seconds.
    pub min_seconds: f64,
}

impl Default for Repeats {
    fn default() -> Self {
        Self { warmup: 2, reps: 7, min_seconds: 0.25 }
    }
}

/// Times `kernels` (run back to back, one pass each) `reps` times after `warmup` runs.
pub fn time_kernels(gpu: &Gpu, kernels: &[&Prepared], repeats: Repeats) -> Result<Measurement> {
    time_with(gpu, repeats, |enc, ts| {
        for (i, k) in kernels.iter().enumerate() {
            // Timestamps at the start of the first pass and the end of the last.
            let writes = ts.map(|(set, at)| wgpu::ComputePassTimestampWrites {
                query_set: set,
                beginning_of_pass_write_index: (i == 0).then_some(at),
                end_of_pass_write_index: (i + 1 == kernels.len()).then_some(at + 1),
            });
            let mut pass = enc
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(k.label()), timestamp_writes: writes });
            k.record(&mut pass);
        }
    })
}

/// Times a buffer-to-buffer copy of `bytes` (the copy probe: traffic is `2 * bytes / time`).
pub fn time_copy(gpu: &Gpu, bytes: u64, repeats: Repeats) -> Result<Measurement> {
    let usage = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::STORAGE;
    let src = gpu.buffer("copy_probe.src", bytes, usage)?;
    let dst = gpu.buffer("copy_probe.dst", bytes, usage)?;
    // Touch the source so the copy reads real pages.
    gpu.queue().write_buffer(&src, 0, &vec![1u8; bytes as usize]);
    let inside = gpu.capabilities().timestamps_inside;
    time_with_clock(gpu, repeats, inside, |enc, ts| {
        if let Some((set, at)) = ts {
            enc.write_timestamp(set, at);
        }
        enc.copy_buffer_to_buffer(&src, 0, &dst, 0, bytes);
        if let Some((set, at)) = ts {
            enc.write_timestamp(set, at + 1);
        }
    })
}

fn time_with(
    gpu: &Gpu,
    repeats: Repeats,
    record: impl FnMut(&mut wgpu::CommandEncoder, Option<(&wgpu::QuerySet, u32)>),
) -> Result<Measurement> {
    time_with_clock(gpu, repeats, gpu.capabilities().timestamps, record)
}

fn time_with_clock(
    gpu: &Gpu,
    repeats: Repeats,
    timestamps: bool,
    mut record: impl FnMut(&mut wgpu::CommandEncoder, Option<(&wgpu::QuerySet, u32)>),
) -> Result<Measurement> {
    let device = gpu.device();
    let encoder = || device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("milliwatt.bench") });
    let mut last = f64::INFINITY;
    for _ in 0..repeats.warmup.max(1) {
        let mut enc = encoder();
        record(&mut enc, None);
        let t = Instant::now();
        gpu.queue().submit([enc.finish()]);
        gpu.wait()?;
        last = t.elapsed().as_secs_f64();
    }
    let wanted = (repeats.min_seconds / last.max(1e-6)).ceil().min(200.0) as u32;
    let reps = repeats.reps.max(wanted).max(1);
    if !timestamps {
        let mut samples = Vec::with_capacity(reps as usize);
        for _ in 0..reps {
            let mut enc = encoder();
            record(&mut enc, None);
            let t = Instant::now();
            gpu.queue().submit([enc.finish()]);
            gpu.wait()?;
            samples.push(t.elapsed().as_secs_f64());
        }
        return Ok(Measurement { samples, clock: Clock::WallClock });
    }
    let count = 2 * reps;
    let set = gpu.scoped("creating timestamp queries", || {
        device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("milliwatt.bench.timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count,
        })
    })?;
    let bytes = u64::from(count) * 8;
    let resolve =
        gpu.buffer("bench.resolve", bytes, wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC)?;
    let readable = gpu.buffer(
        "bench.timestamps",
        bytes,
        wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::STORAGE,
    )?;
    // Each repeat is its own submission, so repeats do not overlap on the GPU.
    for r in 0..reps {
        let mut enc = encoder();
        record(&mut enc, Some((&set, 2 * r)));
        gpu.queue().submit([enc.finish()]);
    }
    let mut enc = encoder();
    enc.resolve_query_set(&set, 0..count, &resolve, 0);
    enc.copy_buffer_to_buffer(&resolve, 0, &readable, 0, bytes);
    gpu.queue().submit([enc.finish()]);
    let ticks: Vec<u64> = gpu.read(&readable)?;
    let period = f64::from(gpu.queue().get_timestamp_period()) * 1e-9;
    let samples: Vec<f64> = ticks.chunks_exact(2).map(|t| t[1].saturating_sub(t[0]) as f64 * period).collect();
    if samples.iter().all(|&s| s == 0.0) {
        return Err(Error::Validation {
            context: "reading GPU timestamps".into(),
            message: "all timestamps were zero".into(),
        });
    }
    Ok(Measurement { samples, clock: Clock::GpuTimestamps })
}

/// Writes `report` as pretty JSON to `path`, creating its directory.
pub fn write_json(path: &str, report: &impl serde::Serialize) -> Result<()> {
    let io = |source| Error::Io { path: path.into(), source };
    if let Some(dir) = std::path::Path::new(path).parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let text = serde_json::to_string_pretty(report)
        .map_err(|e| Error::Io { path: path.into(), source: std::io::Error::other(e) })?;
    std::fs::write(path, text).map_err(io)
}

/// Fails if `gpu` made a pipeline outside [`crate::shaders::Variant::all`], the list the naga test
/// validates and translates for every backend (a benchmark calls it after its run).
pub fn check_variants(gpu: &Gpu) -> Result<()> {
    let listed: std::collections::BTreeSet<_> = crate::shaders::Variant::all().into_iter().collect();
    let unlisted: Vec<String> =
        gpu.pipeline_keys().into_iter().filter(|k| !listed.contains(&k.variant)).map(|k| k.variant.label()).collect();
    if unlisted.is_empty() {
        return Ok(());
    }
    Err(Error::Shader {
        shader: unlisted.join(", "),
        message: "built, but not in shaders::Variant::all(): add it to the shader table's rules".into(),
    })
}
