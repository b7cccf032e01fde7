//! Twin of sampler.wgsl.

use crate::kernels::sampler::{SamplerOp, ScheduleEntry};

/// The tensors of one sampler update (those the op uses).
#[derive(Debug, Default)]
pub struct SamplerIo<'a> {
    /// Updated in place (Euler, Heun correct, DDIM, noise init).
    pub x: &'a mut [f32],
    /// First input: the model output (Guide: cond then uncond rows), v, v1 or the init image.
    pub a: &'a [f32],
    /// Second input: v2 (Heun correct).
    pub b: &'a [f32],
    /// Output (Guide, Heun predict).
    pub out: &'a mut [f32],
}

/// Twin of sampler.wgsl for `total` elements at schedule entry `e`.
pub fn sampler(op: SamplerOp, e: &ScheduleEntry, total: usize, io: SamplerIo<'_>) {
    let dt = e.t_next - e.t;
    for i in 0..total {
        match op {
            SamplerOp::Guide { scale } => {
                let u = io.a[total + i];
                io.out[i] = scale.mul_add(io.a[i] - u, u);
            }
            SamplerOp::Euler => io.x[i] = dt.mul_add(io.a[i], io.x[i]),
            SamplerOp::HeunPredict => io.out[i] = dt.mul_add(io.a[i], io.x[i]),
            SamplerOp::HeunCorrect => io.x[i] = (dt * 0.5).mul_add(io.a[i] + io.b[i], io.x[i]),
            SamplerOp::Ddim => {
                let x0 = (io.x[i] - (1.0 - e.alpha_bar).sqrt() * io.a[i]) / e.alpha_bar.sqrt();
                io.x[i] = e.alpha_bar_next.sqrt().mul_add(x0, (1.0 - e.alpha_bar_next).sqrt() * io.a[i]);
            }
            SamplerOp::NoiseInit => io.x[i] = (1.0 - e.t).mul_add(io.a[i], e.t * io.x[i]),
            SamplerOp::Time | SamplerOp::TimeEveryStep => io.out[i] = e.t,
            SamplerOp::TimeNext => io.out[i] = e.t_next,
            SamplerOp::StepSize | SamplerOp::StepSizeEveryStep => io.out[i] = -dt,
        }
    }
}

/// Twin of the every-step ops ([`SamplerOp::TimeEveryStep`], [`SamplerOp::StepSizeEveryStep`]):
/// `per_step` values of each entry of `schedule`, step-major, into `out`.
pub fn sampler_every_step(op: SamplerOp, schedule: &[ScheduleEntry], per_step: usize, out: &mut [f32]) {
    for (e, chunk) in schedule.iter().zip(out.chunks_mut(per_step.max(1))) {
        sampler(op, e, chunk.len(), SamplerIo { out: chunk, ..Default::default() });
    }
}
