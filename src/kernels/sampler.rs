//! Sampler math on the GPU (sampler.wgsl): rectified-flow Euler and Heun updates, the guidance
//! combine, DDIM for epsilon-prediction models, and img2img noising — one prepared dispatch per
//! operation that reads its step's values from a schedule buffer.

use crate::error::{Error, Result};
use crate::gpu::{Capabilities, Gpu, PipelineKey};
use crate::kernel::{BufferReq, DispatchSpec, Kernel, Prepared, TensorRef, Work, build, grid_1d};
use crate::kernels::work_count::{COUNT_WORK, counters_binding, counting};
use crate::shaders::{self, Variant};
use crate::wgpu;

/// Parameter block of sampler.wgsl. Keep in sync with `SamplerParams` there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SamplerParams {
    /// Elements per image.
    pub len: u32,
    /// Images (the conditional half of a guided batch).
    pub images: u32,
    /// Guidance scale.
    pub guidance: f32,
    /// Steps in the schedule (the every-step ops write one slice per step).
    pub steps: u32,
}

/// One step of a schedule. Keep in sync with `ScheduleEntry` in sampler.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ScheduleEntry {
    /// Time of this step (rectified flow: 1 is noise, 0 is data).
    pub t: f32,
    /// Time of the next step.
    pub t_next: f32,
    /// DDIM: cumulative alpha of this step.
    pub alpha_bar: f32,
    /// DDIM: cumulative alpha of the next step (1 at the end).
    pub alpha_bar_next: f32,
}

/// The update a [`SamplerStep`] performs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerOp {
    /// `out = u + s (c - u)` from a model output `[cond; uncond]`.
    Guide {
        /// Guidance scale s.
        scale: f32,
    },
    /// `x += (t_next - t) v`.
    Euler,
    /// `out = x + (t_next - t) v`.
    HeunPredict,
    /// `x += (t_next - t) (v1 + v2) / 2`.
    HeunCorrect,
    /// Deterministic DDIM for epsilon prediction.
    Ddim,
    /// `x = (1 - t) image + t noise` (x holds the noise).
    NoiseInit,
    /// `out[i] = t` of the current step for every image (`len` 1): the timestep input of a model.
    Time,
    /// `out[i] = t_next` (Heun's second evaluation).
    TimeNext,
    /// `out[i] = t - t_next`: the step size a shortcut model (`step_embed`) is told.
    StepSize,
    /// [`SamplerOp::Time`] of every step at once, step-major: `out[s · images · len + i]` is step
    /// `s`'s `t` (the step counter is not read for the entry). What a request's setup gives the
    /// modulation of every step ([`crate::model::ModulationPlan::EveryStep`]).
    TimeEveryStep,
    /// [`SamplerOp::StepSize`] of every step at once, step-major.
    StepSizeEveryStep,
}

impl SamplerOp {
    fn code(self) -> u32 {
        match self {
            SamplerOp::Guide { .. } => 0,
            SamplerOp::Euler => 1,
            SamplerOp::HeunPredict => 2,
            SamplerOp::HeunCorrect => 3,
            SamplerOp::Ddim => 4,
            SamplerOp::NoiseInit => 5,
            SamplerOp::Time => 6,
            SamplerOp::TimeNext => 7,
            SamplerOp::StepSize => 8,
            SamplerOp::TimeEveryStep => 9,
            SamplerOp::StepSizeEveryStep => 10,
        }
    }

    /// Whether the op writes every step's values at once (`out` is `steps` times longer).
    pub fn every_step(self) -> bool {
        matches!(self, SamplerOp::TimeEveryStep | SamplerOp::StepSizeEveryStep)
    }

    /// Names of the caller's buffers after `schedule` and `state`, in binding order.
    pub fn buffers(self) -> &'static [&'static str] {
        match self {
            SamplerOp::Guide { .. } => &["model_out", "out"],
            SamplerOp::Euler | SamplerOp::Ddim => &["x", "v"],
            SamplerOp::HeunPredict => &["x", "v", "out"],
            SamplerOp::HeunCorrect => &["x", "v1", "v2"],
            SamplerOp::NoiseInit => &["x", "image"],
            SamplerOp::Time
            | SamplerOp::TimeNext
            | SamplerOp::StepSize
            | SamplerOp::TimeEveryStep
            | SamplerOp::StepSizeEveryStep => &["out"],
        }
    }
}

/// A sampler update over `images` x `len` f32. Buffers: `schedule` ([`ScheduleEntry`] per step),
/// `state` (u32: the current step), then [`SamplerOp::buffers`].
#[derive(Clone, Debug)]
pub struct SamplerStep {
    /// The update.
    pub op: SamplerOp,
    /// Images.
    pub images: u32,
    /// Elements per image.
    pub len: u32,
    /// Steps in the schedule buffer.
    pub steps: u32,
}

const WG: u32 = 256;

impl SamplerStep {
    /// Elements the op updates or writes, one invocation each: `images × len`, times `steps`
    /// for the every-step ops.
    fn elements(&self) -> u64 {
        let per_step = u64::from(self.images) * u64::from(self.len);
        if self.op.every_step() { per_step * u64::from(self.steps) } else { per_step }
    }
}

impl Kernel for SamplerStep {
    fn name(&self) -> &'static str {
        "sampler"
    }

    fn requirements(&self, _caps: &Capabilities) -> Result<Vec<BufferReq>> {
        if self.images == 0 || self.len == 0 || self.steps == 0 {
            return Err(Error::Shape { kernel: self.name(), message: "zero images, elements or steps".into() });
        }
        let n = u64::from(self.images) * u64::from(self.len) * 4;
        let out = self.elements() * 4;
        let mut reqs = vec![BufferReq::input("schedule", u64::from(self.steps) * 16), BufferReq::input("state", 4)];
        for &name in self.op.buffers() {
            reqs.push(match name {
                "model_out" => BufferReq::input(name, 2 * n),
                "x" => BufferReq::read_write(name, n),
                "out" => BufferReq::output(name, out),
                _ => BufferReq::input(name, n),
            });
        }
        Ok(reqs)
    }

    fn work(&self, _caps: &Capabilities) -> Result<Work> {
        // As the COUNT_WORK variant counts (sampler.wgsl): per element the op's operands, and the
        // step's schedule entry (16 bytes) and state word that every invocation reads; dt = t_next
        // - t is an add where an op uses it; a square root is a multiply.
        let n = self.elements();
        let (mul, add, reads) = match self.op {
            SamplerOp::Guide { .. } => (1, 2, 2),
            SamplerOp::Euler | SamplerOp::HeunPredict => (1, 2, 2),
            SamplerOp::HeunCorrect => (2, 3, 3),
            SamplerOp::Ddim => (8, 4, 2),
            SamplerOp::NoiseInit => (2, 2, 2),
            SamplerOp::Time | SamplerOp::TimeNext | SamplerOp::TimeEveryStep => (0, 0, 0),
            SamplerOp::StepSize | SamplerOp::StepSizeEveryStep => (0, 1, 0),
        };
        Ok(Work {
            f32_mul: n * mul,
            f32_add: n * add,
            dram_read: n * (4 * reads + 20),
            dram_write: n * 4,
            ..Work::default()
        })
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
        let caps = gpu.capabilities();
        // Bindings 1 schedule, 2 state, 3 x, 4 a, 5 b, 6 out; an op's unused ones get a placeholder.
        let slots: &[u32] = match self.op {
            SamplerOp::Guide { .. } => &[4, 6],
            SamplerOp::Euler | SamplerOp::Ddim => &[3, 4],
            SamplerOp::HeunPredict => &[3, 4, 6],
            SamplerOp::HeunCorrect => &[3, 4, 5],
            SamplerOp::NoiseInit => &[3, 4],
            SamplerOp::Time
            | SamplerOp::TimeNext
            | SamplerOp::StepSize
            | SamplerOp::TimeEveryStep
            | SamplerOp::StepSizeEveryStep => &[6],
        };
        // Read-write and read-only slots get different placeholders: one buffer may not be both
        // in a dispatch.
        let placeholder_rw = gpu.buffer("sampler.placeholder_rw", 16, wgpu::BufferUsages::STORAGE)?;
        let placeholder_ro = gpu.buffer("sampler.placeholder_ro", 16, wgpu::BufferUsages::STORAGE)?;
        let mut storage: Vec<(u32, TensorRef<'_>, u64)> =
            vec![(1, buffers[0], reqs[0].size), (2, buffers[1], reqs[1].size)];
        for (slot, (b, r)) in slots.iter().zip(buffers[2..].iter().zip(&reqs[2..])) {
            storage.push((*slot, *b, r.size));
        }
        for slot in 3..=6 {
            if !slots.contains(&slot) {
                let placeholder = if slot == 3 || slot == 6 { &placeholder_rw } else { &placeholder_ro };
                storage.push((slot, TensorRef::from(placeholder), 16));
            }
        }
        let guidance = if let SamplerOp::Guide { scale } = self.op { scale } else { 0.0 };
        let params = SamplerParams { len: self.len, images: self.images, guidance, steps: self.steps };
        let groups = u32::try_from(self.elements().div_ceil(u64::from(WG))).unwrap_or(u32::MAX);
        let count = counting(reqs);
        storage.extend(counters_binding(buffers, count));
        let key = PipelineKey::new(
            Variant::new(&shaders::SAMPLER, count.then_some(COUNT_WORK)),
            &[("OP", f64::from(self.op.code())), ("WG", f64::from(WG))],
        );
        let spec = DispatchSpec { params, storage, views: Vec::new(), workgroups: grid_1d(groups, caps) };
        let mut prepared = build(gpu, self.name(), &key, vec![spec], self.work(caps)?)?;
        prepared.keep_alive(placeholder_rw);
        prepared.keep_alive(placeholder_ro);
        Ok(prepared)
    }
}

/// The rectified-flow schedule of `steps` Euler (or Heun) steps on the uniform grid from t = 1
/// (noise) to 0, optionally starting at `start` < 1 (img2img strength).
pub fn rectified_flow_schedule(steps: u32, start: f32) -> Vec<ScheduleEntry> {
    let n = steps.max(1);
    (0..n)
        .map(|i| ScheduleEntry {
            t: start * (1.0 - i as f32 / n as f32),
            t_next: start * (1.0 - (i + 1) as f32 / n as f32),
            alpha_bar: 0.0,
            alpha_bar_next: 0.0,
        })
        .collect()
}

/// The DDIM schedule of the original DiT for `steps` steps: linear betas from 1e-4 to 0.02 over
/// 1000 training steps, respaced to evenly spaced timesteps ending at 0 (for 4 steps: 750, 500,
/// 250, 0; DiT's "ddim4"), alpha_bar of the next step 1 after the last. `t` is timestep / 1000,
/// so the timestep embedding with a time scale of 1000 sees the original timestep.
pub fn ddim_schedule(steps: u32) -> Vec<ScheduleEntry> {
    let train = 1000usize;
    let mut alpha_bar = Vec::with_capacity(train);
    let mut acc = 1f64;
    for i in 0..train {
        let beta = 1e-4 + (0.02 - 1e-4) * i as f64 / (train - 1) as f64;
        acc *= 1.0 - beta;
        alpha_bar.push(acc);
    }
    let n = steps.clamp(1, train as u32) as usize;
    // DiT's space_timesteps with "ddimN": stride = train / N, timesteps 0, stride, 2 stride, ...
    let stride = train / n;
    let mut ts: Vec<usize> = (0..n).map(|i| i * stride).collect();
    ts.reverse();
    ts.iter()
        .enumerate()
        .map(|(i, &t)| ScheduleEntry {
            t: t as f32 / 1000.0,
            t_next: ts.get(i + 1).map_or(0.0, |&u| u as f32 / 1000.0),
            alpha_bar: alpha_bar[t] as f32,
            alpha_bar_next: ts.get(i + 1).map_or(1.0, |&u| alpha_bar[u] as f32),
        })
        .collect()
}
