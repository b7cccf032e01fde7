//! The shipped models (models/) on the GPU: the forward pass against the trainer's fidelity
//! fixture on every backend, and the default model and the distilled student drawing digits the
//! classifier reads.

use std::ops::ControlFlow;

use milliwatt::graph::{DType, ExecOptions, Executor, Graph};
use milliwatt::model::{Conditioning, DitGraph, DitWeights, ForwardIo};
use milliwatt::{Generator, GeneratorOptions, Gpu, Request, Seeds};

use crate::shipped::{MODELS, Shipped, agree, model_dir};
use crate::util::err;
use crate::{Backend, Case, Failure, Outcome};

/// The guidance the main command draws with (keep in sync with examples/generate.rs).
const DEFAULT_CFG: f32 = 3.0;

pub fn all() -> Vec<(&'static str, Case)> {
    vec![
        ("shipped_models_match_the_trainer", |b| forward_case(&b.gpu)),
        ("shipped_ternary_8_steps_draws_readable_digits", accuracy_case),
        ("shipped_student_4_steps_draws_readable_digits", student_accuracy_case),
        ("soak_memory_stops_growing", |b| soak_case(&b.gpu)),
    ]
}

/// The soak run's reduced form (examples/soak.rs runs 1,000): 30 generations of the shipped
/// ternary model over the cycle of request shapes; host RSS and the live wgpu buffers and bytes
/// over the last three within 2 % of generations 4–6.
fn soak_case(gpu: &Gpu) -> Outcome {
    let generator = Generator::new(
        gpu,
        DitWeights::open(&model_dir("mnist-ternary"), None).map_err(err)?,
        GeneratorOptions::default(),
    )
    .map_err(err)?;
    let report = crate::soak::run(&generator, gpu, 30, |_, _| {}).map_err(err)?;
    let grown = report.grown(0.02);
    if !grown.is_empty() {
        return Err(grown.join("; ").into());
    }
    if report.late.buffers == 0 {
        return Err("no wgpu buffer counts (the `counters` feature is off?)".into());
    }
    Ok(())
}

fn forward_case(gpu: &Gpu) -> Outcome {
    for name in MODELS {
        let s = Shipped::load(name)?;
        let c = s.weights.config.clone();
        let images = s.t.len() as u32;
        let mut g = Graph::new();
        let dit = DitGraph::declare(&mut g, &c, images).map_err(err)?;
        let shape = [images, c.in_channels, c.input_size, c.input_size];
        let x = g.input("x", &shape, DType::F32);
        let t = g.input("t", &[images], DType::F32);
        let y = g.input("y", &[images], DType::U32);
        let out = g.output("out", &shape, DType::F32);
        // A distilled student's scalars: the guidance embedding, the step sizes.
        let scales = s.guidance.as_ref().map(|_| g.input("guidance", &[images], DType::F32));
        let guidance = scales.map(|w| dit.embed_guidance(&mut g, "", w)).transpose().map_err(err)?;
        let step = s.step.as_ref().map(|_| g.input("step", &[images], DType::F32));
        let cond = Conditioning::Embedded { t, y, guidance, step };
        dit.forward(&mut g, "", ForwardIo { x, out, cond }, false).map_err(err)?;
        let ex = Executor::new(gpu, &g, ExecOptions::default()).map_err(err)?;
        dit.upload(&ex, &s.weights).map_err(err)?;
        ex.write(x, &s.x).map_err(err)?;
        ex.write(t, &s.t).map_err(err)?;
        ex.write(y, &s.y).map_err(err)?;
        for (tensor, values) in [(scales, &s.guidance), (step, &s.step)] {
            if let (Some(tensor), Some(values)) = (tensor, values) {
                ex.write(tensor, values).map_err(err)?;
            }
        }
        ex.run(1, |_| ControlFlow::Continue(())).map_err(err)?;
        println!("    {}", agree(name, s.int8(), &ex.read::<f32>(out).map_err(err)?, &s.out)?);
    }
    Ok(())
}

/// 100 digits (10 per class, seeds 0 to 9) from the shipped ternary model at 8 guided steps:
/// the classifier must read at least 90 of them as the class asked for. Vulkan only (the GL
/// software adapter takes several times longer, and the forward case covers GL).
fn accuracy_case(b: &Backend) -> Outcome {
    readable_digits(b, "mnist-ternary", 8)
}

/// The distilled student draws readable digits in 4 steps (one forward each, guidance embedded).
fn student_accuracy_case(b: &Backend) -> Outcome {
    readable_digits(b, "mnist-student", 4)
}

/// Shipped model `name` at `steps` guided steps: the classifier reads at least 90 of 100 digits
/// (ten seeds per class) as their class.
fn readable_digits(b: &Backend, name: &str, steps: u32) -> Outcome {
    if b.name != "vulkan" {
        return Err(Failure::Unsupported("run on Vulkan only (time); GL is covered by the forward case".into()));
    }
    let weights = DitWeights::open(&model_dir(name), None).map_err(err)?;
    let classifier =
        milliwatt::eval::Classifier::load(&model_dir("classifier").join("classifier.safetensors")).map_err(err)?;
    let generator = Generator::new(&b.gpu, weights, GeneratorOptions::default()).map_err(err)?;
    let labels: Vec<u32> = (0..10).flat_map(|k| std::iter::repeat_n(k, 10)).collect();
    let seeds: Vec<u64> = (0..10).flat_map(|_| 0..10).collect();
    let request =
        Request { seeds: Seeds::List(seeds), steps, guidance: Some(DEFAULT_CFG), ..Request::new(labels.clone()) };
    let out = generator.generate_blocking(&request, |_| ControlFlow::Continue(())).map_err(err)?;
    let pixels: Vec<u8> = out.images.iter().flat_map(|i| i.to_luma8().into_raw()).collect();
    let read = classifier.run_all(&pixels);
    let right = read.iter().zip(&labels).filter(|(o, l)| u32::from(o.class()) == **l).count();
    println!("    {name}, {steps} steps: the classifier reads {right} of 100 digits as their class");
    if right < 90 {
        return Err(format!(
            "{name}, {steps} steps: the classifier reads only {right} of 100 generated digits as their class (gate: 90)"
        )
        .into());
    }
    Ok(())
}
