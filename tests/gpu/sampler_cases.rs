//! Sampler updates against their twin at every step of a schedule, with the step changed by
//! writing the state word — the prepared dispatch (and its bind group) is reused; and the DDIM
//! schedule against the original DiT's respacing.

use milliwatt::cpu::sampler::{SamplerIo, sampler};
use milliwatt::kernels::{SamplerOp, SamplerStep, ScheduleEntry, ddim_schedule, rectified_flow_schedule};
use milliwatt::{Gpu, Kernel};

use crate::util::{Rng, compare, err};
use crate::{Case, Outcome};

pub fn all() -> Vec<(&'static str, Case)> {
    vec![
        ("sampler_ops_every_step", |b| ops_case(&b.gpu)),
        ("sampler_time_of_every_step_at_once", |b| every_step_case(&b.gpu)),
        ("ddim_schedule_matches_dit", |_| ddim_case()),
    ]
}

/// Every sampler op stepped through a schedule against the twin, creating nothing per step; its
/// counting variant counts what `work()` says.
fn ops_case(gpu: &Gpu) -> Outcome {
    let (images, len) = (3u32, 1001u32);
    let ops = [
        SamplerOp::Guide { scale: 2.5 },
        SamplerOp::Euler,
        SamplerOp::HeunPredict,
        SamplerOp::HeunCorrect,
        SamplerOp::Ddim,
        SamplerOp::NoiseInit,
        SamplerOp::Time,
        SamplerOp::TimeNext,
        SamplerOp::StepSize,
    ];
    for (oi, &op) in ops.iter().enumerate() {
        // The time ops write one value per image.
        let len = if matches!(op, SamplerOp::Time | SamplerOp::TimeNext | SamplerOp::StepSize) { 1 } else { len };
        let total = (images * len) as usize;
        let schedule: Vec<ScheduleEntry> =
            if op == SamplerOp::Ddim { ddim_schedule(4) } else { rectified_flow_schedule(4, 0.8) };
        let mut rng = Rng::new(9000 + oi as u64);
        let mut x: Vec<f32> = rng.vec(total);
        let a_len = if matches!(op, SamplerOp::Guide { .. }) { 2 * total } else { total };
        let a: Vec<f32> = rng.vec(a_len);
        let b: Vec<f32> = rng.vec(total);
        let sb = gpu.upload("schedule", &schedule).map_err(err)?;
        let state = gpu.upload("state", &[0u32]).map_err(err)?;
        let xb = gpu.upload("x", &x).map_err(err)?;
        let ab = gpu.upload("a", &a).map_err(err)?;
        let bb = gpu.upload("b", &b).map_err(err)?;
        let ob = gpu.upload("out", &vec![7f32; total]).map_err(err)?;
        let bufs: Vec<milliwatt::TensorRef<'_>> = match op {
            SamplerOp::Guide { .. } => vec![(&sb).into(), (&state).into(), (&ab).into(), (&ob).into()],
            SamplerOp::Time | SamplerOp::TimeNext | SamplerOp::StepSize => {
                vec![(&sb).into(), (&state).into(), (&ob).into()]
            }
            SamplerOp::HeunPredict => vec![(&sb).into(), (&state).into(), (&xb).into(), (&ab).into(), (&ob).into()],
            SamplerOp::HeunCorrect => vec![(&sb).into(), (&state).into(), (&xb).into(), (&ab).into(), (&bb).into()],
            _ => vec![(&sb).into(), (&state).into(), (&xb).into(), (&ab).into()],
        };
        let p = SamplerStep { op, images, len, steps: schedule.len() as u32 }.prepare(gpu, &bufs).map_err(err)?;
        let before = gpu.object_counts();
        for (step, e) in schedule.iter().enumerate() {
            gpu.queue().write_buffer(&state, 0, bytemuck::bytes_of(&(step as u32)));
            gpu.run(&[&p]).map_err(err)?;
            let mut out = vec![0f32; total];
            sampler(op, e, total, SamplerIo { x: &mut x, a: &a, b: &b, out: &mut out });
            // Relative to the value (DDIM's x₀ estimate divides by √ᾱ and reaches ~20): an adapter
            // that contracts a·b + c into one FMA (NVIDIA's does) rounds once where the twin
            // rounds twice.
            let writes_out = matches!(
                op,
                SamplerOp::Guide { .. }
                    | SamplerOp::HeunPredict
                    | SamplerOp::Time
                    | SamplerOp::TimeNext
                    | SamplerOp::StepSize
            );
            let scale: Vec<f32> = (if writes_out { &out } else { &x }).iter().map(|v| v.abs().max(4.0)).collect();
            if writes_out {
                let got: Vec<f32> = gpu.read(&ob).map_err(err)?;
                compare(&format!("{op:?} step {step}"), &got, &out, &scale, 1e-6, 1e-6)?;
            } else {
                let got: Vec<f32> = gpu.read(&xb).map_err(err)?;
                compare(&format!("{op:?} step {step}"), &got, &x, &scale, 1e-6, 1e-6)?;
                // Continue from the GPU's state so errors cannot compound between steps.
                x = got;
            }
        }
        let after = gpu.object_counts();
        if after.bind_groups != before.bind_groups || after.pipelines != before.pipelines {
            return Err(format!("{op:?}: stepping created GPU objects: {before:?} -> {after:?}").into());
        }
        // The counting variant (step 0 again, from the state the steps left): counts equal
        // `work()`, and it steps as the twin does.
        gpu.queue().write_buffer(&state, 0, bytemuck::bytes_of(&0u32));
        let kernel = SamplerStep { op, images, len, steps: schedule.len() as u32 };
        crate::ledger_cases::counts_agree(gpu, &format!("sampler {op:?}"), &kernel, &bufs)?;
        let mut out = vec![0f32; total];
        sampler(op, &schedule[0], total, SamplerIo { x: &mut x, a: &a, b: &b, out: &mut out });
        let (got, want): (Vec<f32>, &[f32]) = if op.buffers().contains(&"out") {
            (gpu.read(&ob).map_err(err)?, &out)
        } else {
            (gpu.read(&xb).map_err(err)?, &x)
        };
        // From the final state DDIM's first step scales x up (by 1 / √ᾱ of t = 750): relative
        // tolerance on its magnitude.
        let scale: Vec<f32> = want.iter().map(|v| v.abs().max(4.0)).collect();
        compare(&format!("{op:?} counting variant"), &got, want, &scale, 1e-6, 1e-6)?;
    }
    Ok(())
}

fn ddim_case() -> Outcome {
    let s = ddim_schedule(4);
    let ts: Vec<f32> = s.iter().map(|e| e.t * 1000.0).collect();
    if ts != [750.0, 500.0, 250.0, 0.0] {
        return Err(format!("ddim4 timesteps {ts:?}, DiT uses 750, 500, 250, 0").into());
    }
    // alpha_bar(0) = 1 - beta_0 = 0.9999; the last step goes to alpha_bar 1.
    if (s[3].alpha_bar - 0.9999).abs() > 1e-7 || s[3].alpha_bar_next != 1.0 || s[0].alpha_bar_next != s[1].alpha_bar {
        return Err(format!("ddim schedule {s:?}").into());
    }
    Ok(())
}

/// The every-step time ops (a request's setup making every step's modulation): every step's `t`
/// or step size for every image, step-major, whatever the step counter says, as the twin writes
/// them; their counts equal `work()`.
fn every_step_case(gpu: &Gpu) -> Outcome {
    use milliwatt::cpu::sampler::sampler_every_step;
    for (op, schedule) in [
        (SamplerOp::TimeEveryStep, rectified_flow_schedule(5, 0.8)),
        (SamplerOp::StepSizeEveryStep, rectified_flow_schedule(5, 1.0)),
        (SamplerOp::TimeEveryStep, ddim_schedule(3)),
    ] {
        let (images, steps) = (3u32, schedule.len() as u32);
        let sb = gpu.upload("schedule", &schedule).map_err(err)?;
        let state = gpu.upload("state", &[2u32]).map_err(err)?;
        let ob = gpu.upload("out", &vec![7f32; (images * steps) as usize]).map_err(err)?;
        let kernel = SamplerStep { op, images, len: 1, steps };
        let bufs: Vec<milliwatt::TensorRef<'_>> = vec![(&sb).into(), (&state).into(), (&ob).into()];
        crate::ledger_cases::counts_agree(gpu, &format!("{op:?}"), &kernel, &bufs)?;
        let got: Vec<f32> = gpu.read(&ob).map_err(err)?;
        let mut twin = vec![0f32; got.len()];
        sampler_every_step(op, &schedule, images as usize, &mut twin);
        if got != twin {
            return Err(format!("{op:?}: {got:?} against the twin's {twin:?}").into());
        }
    }
    Ok(())
}
