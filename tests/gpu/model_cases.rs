//! The DiT on the GPU against the golden fixtures (outputs of the original implementation):
//! forward pass (`out` and the taps `c`, `block0_out`), the 4-step guided Euler sample, and the
//! 4-step guided DDIM sample of the `learn_sigma` model.

use std::ops::ControlFlow;

use milliwatt::Gpu;
use milliwatt::graph::{DType, ExecOptions, Executor, Graph};
use milliwatt::kernels::{ScheduleEntry, ddim_schedule, rectified_flow_schedule};
use milliwatt::model::{DitGraph, ForwardIo, SampleGraph, SampleSpec, SamplerKind};

use crate::golden::Golden;
use crate::util::{compare, err};
use crate::{Case, Outcome};

pub fn all() -> Vec<(&'static str, Case)> {
    vec![
        ("dit_golden_forward", |b| forward_case(&b.gpu)),
        ("dit_golden_euler_sample", |b| euler_case(&b.gpu)),
        ("dit_golden_ddim_sample", |b| ddim_case(&b.gpu)),
    ]
}

/// Within 1e-4 of the reference, absolute, plus 1e-5 of the value (the agreed 1e-4).
fn close(what: &str, got: &[f32], want: &[f32], abs: f32) -> Result<(), String> {
    let scale: Vec<f32> = want.iter().map(|v| v.abs()).collect();
    compare(what, got, want, &scale, 1e-5, abs)
}

fn forward_case(gpu: &Gpu) -> Outcome {
    for name in ["dit-tiny", "dit-tiny-sigma"] {
        let golden = Golden::load(name)?;
        let c = golden.weights.config.clone();
        let images = 3;
        let mut g = Graph::new();
        let dit = DitGraph::declare(&mut g, &golden.weights.config, images).map_err(err)?;
        let shape = [images, c.in_channels, c.input_size, c.input_size];
        let x = g.input("x", &shape, DType::F32);
        let t = g.input("t", &[images], DType::F32);
        let y = g.input("y", &[images], DType::U32);
        let out = g.output("out", &shape, DType::F32);
        let taps =
            dit.forward(&mut g, "", ForwardIo { x, t, y, out, guidance: None, step: None }, true).map_err(err)?;
        let ex = Executor::new(gpu, &g, ExecOptions::default()).map_err(err)?;
        dit.upload(&ex, &golden.weights).map_err(err)?;
        let (xv, tv, labels) = golden.inputs()?;
        ex.write(x, &xv).map_err(err)?;
        ex.write(t, &tv).map_err(err)?;
        ex.write(y, &labels).map_err(err)?;
        ex.run(1, |_| ControlFlow::Continue(())).map_err(err)?;
        close(&format!("{name} c"), &ex.read::<f32>(taps.c).map_err(err)?, &golden.get("c")?, 1e-4)?;
        close(
            &format!("{name} block0_out"),
            &ex.read::<f32>(taps.block0).map_err(err)?,
            &golden.get("block0_out")?,
            1e-4,
        )?;
        // The model output: `out` holds all output channels of the fixture; ours the first C.
        let want = golden.get("out")?;
        let per = (c.input_size * c.input_size) as usize;
        let (cin, cout) = (c.in_channels as usize, c.out_channels() as usize);
        let want: Vec<f32> =
            (0..images as usize).flat_map(|i| want[i * cout * per..(i * cout + cin) * per].to_vec()).collect();
        close(&format!("{name} out"), &ex.read::<f32>(out).map_err(err)?, &want, 1e-4)?;
    }
    Ok(())
}

/// Runs a guided 4-step sample of 2 images from `xt` with labels [3, 7] and returns x0.
fn sample(
    gpu: &Gpu,
    golden: &Golden,
    sampler: SamplerKind,
    xt: &[f32],
    schedule: &[ScheduleEntry],
) -> Result<Vec<f32>, String> {
    let c = &golden.weights.config;
    let spec = SampleSpec { images: 2, steps: 4, sampler, guidance: Some(2.0), img2img: false };
    let sg = SampleGraph::new(&golden.weights.config, &spec).map_err(err)?;
    let ex = Executor::new(gpu, &sg.graph, ExecOptions::default()).map_err(err)?;
    sg.dit.upload(&ex, &golden.weights).map_err(err)?;
    ex.write(sg.noise, xt).map_err(err)?;
    ex.write(sg.labels, &[3u32, 7, c.num_classes, c.num_classes]).map_err(err)?;
    ex.write(sg.schedule, bytemuck::cast_slice::<ScheduleEntry, f32>(schedule)).map_err(err)?;
    ex.run(4, |_| ControlFlow::Continue(())).map_err(err)?;
    ex.read::<f32>(sg.x).map_err(err)
}

fn euler_case(gpu: &Gpu) -> Outcome {
    for name in ["dit-tiny", "dit-tiny-sigma"] {
        let golden = Golden::load(name)?;
        let got =
            sample(gpu, &golden, SamplerKind::Euler, &golden.get("sample_xT")?, &rectified_flow_schedule(4, 1.0))?;
        close(&format!("{name} sample_x0"), &got, &golden.get("sample_x0")?, 1e-4)?;
    }
    Ok(())
}

fn ddim_case(gpu: &Gpu) -> Outcome {
    let mut golden = Golden::load("dit-tiny-sigma")?;
    // The fixture's config leaves `prediction` at its default; its DDIM sample treats the output as ε.
    golden.weights.config.prediction = milliwatt::model::Prediction::Epsilon;
    let got = sample(gpu, &golden, SamplerKind::Ddim, &golden.get("ddim_xT")?, &ddim_schedule(4))?;
    close("dit-tiny-sigma ddim_x0", &got, &golden.get("ddim_x0")?, 1e-3)?;
    Ok(())
}
