//! The generator: request semantics (seeds, batches, guidance, img2img, progress, cancellation,
//! errors), threads, backends, pre-packed weights, and the GPU sampling graph against the CPU
//! reference (`model::reference`) for every attention kind and quantization policy.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use milliwatt::generator::InitImage;
use milliwatt::graph::Phase;
use milliwatt::kernels::{SamplerOp, ddim_schedule, rectified_flow_schedule};
use milliwatt::model::{
    AttentionKind, DitConfig, DitWeights, GraphOptions, HostTensor, ModulationPlan, Prediction, SampleGraph,
    SampleSpec, SamplerKind,
};
use milliwatt::{Error, Generation, Generator, GeneratorOptions, Gpu, Options, Request, Seeds, model};

use crate::util::{Rng, err, read_texture, rgba_texture};
use crate::{Backend, Case, Failure, Outcome};

pub fn all() -> Vec<(&'static str, Case)> {
    vec![
        ("generator_requests", |b| requests_case(&b.gpu)),
        ("generator_threads_match_sequential", |b| threads_case(&b.gpu)),
        ("generator_4_threads_x_50_mixed_requests", |b| load_case(&b.gpu)),
        ("generator_device_lost_mid_run", device_lost_case),
        ("generator_out_of_memory_and_memory_limit", |b| memory_case(&b.gpu)),
        ("generator_packed_equals_quantize_on_load", |b| packed_case(&b.gpu)),
        ("generator_policies_match_cpu_reference", |b| policies_case(&b.gpu)),
        ("generator_heun_ddim_match_cpu_reference", |b| samplers_case(&b.gpu)),
        ("generator_same_seed_vulkan_and_gl", vulkan_gl_case),
        ("generator_f16_policy_close_to_f32", |b| f16_case(&b.gpu)),
        ("generator_distilled_student_matches_cpu_reference", |b| student_case(&b.gpu)),
        ("generator_fused_mlp_matches_the_chain", |b| fused_mlp_case(&b.gpu)),
        ("generator_int8_attention", |b| int8_attention_case(&b.gpu)),
        ("generator_int8_attention_output", |b| int8_attention_output_case(&b.gpu)),
        ("generator_int8_qkv", |b| int8_qkv_case(&b.gpu)),
        ("generator_into_texture_equals_images", |b| into_texture_case(&b.gpu)),
        ("spread_over_two_adapters_equals_one", spread_case),
    ]
}

/// A small pixel-space DiT (3 channels, so images decode as RGB).
fn config(input: u32, policy: &str, attention: AttentionKind) -> DitConfig {
    let mut c = DitConfig::from_json(&format!(
        r#"{{"input_size": {input}, "patch_size": 2, "in_channels": 3, "hidden_size": 32, "depth": 2,
            "num_heads": 2, "num_classes": 5, "learn_sigma": true, "quantization": {policy}}}"#
    ))
    .expect("test config");
    c.attention = attention;
    c
}

/// Random weights for `config` (seeded), quantized per its policy.
fn random(config: &DitConfig, seed: u64) -> Result<DitWeights, String> {
    let mut rng = Rng::new(seed);
    let mut tensors = BTreeMap::new();
    for (name, shape) in DitWeights::expected(config) {
        if name == "pos_embed" {
            continue;
        }
        let n: usize = shape.iter().product();
        let scale = if name.ends_with("bias") { 0.05 } else { 0.3 };
        tensors.insert(name, HostTensor { shape, data: (0..n).map(|_| rng.f32() * scale).collect() });
    }
    DitWeights::from_float(config, tensors).map_err(err)
}

fn f32_policy() -> &'static str {
    r#"{"attention": "f32", "mlp": "f32", "other": "f32"}"#
}

fn request(labels: Vec<u32>, seeds: Seeds, steps: u32) -> Request {
    Request { seeds, steps, guidance: Some(2.0), ..Request::new(labels) }
}

fn run(g: &Generator, r: &Request) -> Result<Generation, String> {
    g.generate_blocking(r, |_| ControlFlow::Continue(())).map_err(err)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(if a.len() == b.len() { 0.0 } else { f32::INFINITY }, f32::max)
}

fn requests_case(gpu: &Gpu) -> Outcome {
    let w = random(&config(8, f32_policy(), AttentionKind::Dense), 1)?;
    let g = Generator::new(gpu, w, GeneratorOptions::default()).map_err(err)?;
    let per = 3 * 8 * 8;
    // Same seed, same image; an image does not depend on its batch.
    let batch = run(&g, &request(vec![0, 1, 2, 5], Seeds::Base(100), 3))?;
    let again = run(&g, &request(vec![0, 1, 2, 5], Seeds::Base(100), 3))?;
    if batch.samples != again.samples {
        return Err("same request twice gave different samples".into());
    }
    for (i, &label) in [0u32, 1, 2, 5].iter().enumerate() {
        let single = run(&g, &request(vec![label], Seeds::List(vec![100 + i as u64]), 3))?;
        let d = max_diff(&single.samples, &batch.samples[i * per..(i + 1) * per]);
        if d > 1e-5 {
            return Err(format!("image {i} of a batch of 4 differs from its single run by {d}").into());
        }
    }
    if batch.images.len() != 4 || batch.images[0].width() != 8 || batch.images[0].color() != image::ColorType::Rgb8 {
        return Err(format!("decoded {} images, first {:?}", batch.images.len(), batch.images[0].color()).into());
    }
    // Guidance 1 equals no guidance.
    let one = run(&g, &Request { guidance: Some(1.0), ..request(vec![3], Seeds::Base(7), 3) })?;
    let none = run(&g, &Request { guidance: None, ..request(vec![3], Seeds::Base(7), 3) })?;
    let d = max_diff(&one.samples, &none.samples);
    if d > 1e-5 {
        return Err(format!("guidance 1 differs from no guidance by {d}").into());
    }
    // img2img: strength 0 returns the init image; strength 0.5 moves it.
    let init: Vec<f32> = Rng::new(5).vec(per);
    let img = |strength| Request {
        init: Some(InitImage { pixels: init.clone(), strength }),
        ..request(vec![1], Seeds::Base(3), 4)
    };
    let kept = run(&g, &img(0.0))?;
    if kept.samples != init {
        return Err(format!("strength 0 changed the init image by {}", max_diff(&kept.samples, &init)).into());
    }
    if max_diff(&run(&g, &img(0.5))?.samples, &init) < 1e-3 {
        return Err("strength 0.5 left the init image unchanged".into());
    }
    // Progress after each step, previews, and the last preview is the result.
    let mut seen = Vec::new();
    let r = Request { preview: true, ..request(vec![2, 4], Seeds::Base(9), 4) };
    let out = g
        .generate_blocking(&r, |p| {
            seen.push((p.step, p.preview.clone()));
            ControlFlow::Continue(())
        })
        .map_err(err)?;
    if seen.iter().map(|s| s.0).collect::<Vec<_>>() != [0, 1, 2, 3] || seen[3].1.as_deref() != Some(&out.samples[..]) {
        return Err(format!("progress {:?}", seen.iter().map(|s| s.0).collect::<Vec<_>>()).into());
    }
    // Cancellation: a typed error within one step, and the generator keeps working.
    let mut calls = 0;
    match g.generate_blocking(&request(vec![1], Seeds::Base(1), 6), |p| {
        calls += 1;
        if p.step == 1 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    }) {
        Err(Error::Cancelled { completed, total: 6 }) if completed <= 3 => {}
        other => return Err(format!("cancel gave {:?}", other.map(|g| g.shape)).into()),
    }
    if calls > 3 {
        return Err(format!("{calls} progress calls after cancelling at step 1").into());
    }
    run(&g, &request(vec![1], Seeds::Base(1), 2))?;
    // The ledger counts the run; the baseline is 50 guided dense f32 steps.
    let five = request(vec![1], Seeds::Base(1), 5);
    let r = run(&g, &five)?;
    if !(r.energy_ratio > 0.0 && r.energy_ratio < 0.5) || r.timings.per_step.is_zero() {
        return Err(format!("5 of 50 steps: energy ratio {}", r.energy_ratio).into());
    }
    // The estimate counted from the graph is what the run recorded, priced alike.
    let estimate = g.estimate(&five).map_err(err)?;
    if estimate.work() != r.ledger.work() || estimate.traffic() != r.ledger.traffic() {
        return Err(format!("estimate {:?} != run's ledger {:?}", estimate.work(), r.ledger.work()).into());
    }
    let (e, l) = (estimate.energy().total(), r.ledger.energy().total());
    if (e - l).abs() > 1e-9 * l || estimate.energy_no_cache().total() < l {
        return Err(format!("estimate {e} J, run {l} J, no-cache bound {}", estimate.energy_no_cache().total()).into());
    }
    // Bad requests: typed errors, not panics.
    for bad in [
        request(vec![6], Seeds::Base(0), 2),
        request(vec![1, 2], Seeds::List(vec![1]), 2),
        Request { noise: Some(vec![0.0; 5]), ..request(vec![1], Seeds::Base(0), 2) },
        Request {
            init: Some(InitImage { pixels: vec![0.0; per], strength: 1.5 }),
            ..request(vec![1], Seeds::Base(0), 2)
        },
        request(vec![], Seeds::Base(0), 2),
        Request { noise: Some(vec![f32::NAN; per]), ..request(vec![1], Seeds::Base(0), 2) },
        Request {
            init: Some(InitImage { pixels: vec![f32::INFINITY; per], strength: 0.5 }),
            ..request(vec![1], Seeds::Base(0), 2)
        },
    ] {
        if !matches!(g.generate_blocking(&bad, |_| ControlFlow::Continue(())), Err(Error::Request { .. })) {
            return Err(format!("bad request {bad:?} was accepted").into());
        }
    }
    // Under a user's buffer limit: a model whose weights do not fit is refused before any
    // upload, and so is a request whose activations do not.
    let small =
        Gpu::from_device(gpu.device(), gpu.queue(), &Options { max_buffer_size: Some(4096), ..Options::default() });
    match Generator::new(
        &small,
        random(&config(8, f32_policy(), AttentionKind::Dense), 1)?,
        GeneratorOptions::default(),
    ) {
        Err(e @ Error::Request { .. }) if e.to_string().contains("max_buffer_size") => {}
        other => return Err(format!("weights past a 4 KiB buffer limit gave {:?}", other.map(|_| ())).into()),
    }
    let roomy =
        Gpu::from_device(gpu.device(), gpu.queue(), &Options { max_buffer_size: Some(1 << 20), ..Options::default() });
    let g_roomy =
        Generator::new(&roomy, random(&config(8, f32_policy(), AttentionKind::Dense), 1)?, GeneratorOptions::default())
            .map_err(err)?;
    let before = roomy.object_counts();
    match g_roomy.generate_blocking(&request(vec![1; 4000], Seeds::Base(0), 1), |_| ControlFlow::Continue(())) {
        Err(e @ Error::Request { .. }) if e.to_string().contains("max_buffer_size") => {}
        other => {
            return Err(format!("4,000 images under a 1 MiB buffer limit gave {:?}", other.map(|g| g.shape)).into());
        }
    }
    if roomy.object_counts() != before {
        return Err("a refused request allocated".into());
    }
    // A batch past the device's buffer limits is refused up front, naming the limit.
    let huge = request(vec![1; 5_000_000], Seeds::Base(0), 1);
    match g.generate_blocking(&huge, |_| ControlFlow::Continue(())) {
        Err(e @ Error::Request { .. }) if e.to_string().contains("max_") && e.to_string().contains("at most") => {}
        other => return Err(format!("5,000,000 images gave {:?}", other.map(|g| g.shape)).into()),
    }
    Ok(())
}

fn threads_case(gpu: &Gpu) -> Outcome {
    let w = random(&config(8, f32_policy(), AttentionKind::Dense), 2)?;
    let g = Generator::new(gpu, w, GeneratorOptions::default()).map_err(err)?;
    let reqs = [request(vec![1, 2], Seeds::Base(10), 3), request(vec![3, 4], Seeds::Base(20), 3)];
    let sequential: Vec<Vec<f32>> = reqs.iter().map(|r| run(&g, r).map(|o| o.samples)).collect::<Result<_, _>>()?;
    let concurrent: Vec<Result<Vec<f32>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (g, r) = (&g, &reqs[i % 2]);
                s.spawn(move || run(g, r).map(|o| o.samples))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into()))).collect()
    });
    for (i, c) in concurrent.into_iter().enumerate() {
        if c? != sequential[i % 2] {
            return Err(format!("thread {i} differs from the sequential run").into());
        }
    }
    // One pool for the shape: three concurrent requests take turns and agree.
    let g1 = Generator::new(
        gpu,
        random(&config(8, f32_policy(), AttentionKind::Dense), 2)?,
        GeneratorOptions { max_pools: 1, ..GeneratorOptions::default() },
    )
    .map_err(err)?;
    let turns: Vec<Result<Vec<f32>, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3).map(|_| s.spawn(|| run(&g1, &reqs[0]).map(|o| o.samples))).collect();
        hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into()))).collect()
    });
    for t in turns {
        if t? != sequential[0] {
            return Err("a request that waited for the pool differs".into());
        }
    }
    // Mixed shapes keep the executors of the two most recent only; an evicted shape comes back
    // with the same result.
    let g2 = Generator::new(
        gpu,
        random(&config(8, f32_policy(), AttentionKind::Dense), 2)?,
        GeneratorOptions { max_shapes: 2, ..GeneratorOptions::default() },
    )
    .map_err(err)?;
    let first = run(&g2, &request(vec![1], Seeds::Base(4), 2))?.samples;
    for images in 2..5 {
        run(&g2, &request(vec![1; images], Seeds::Base(4), 2))?;
    }
    if g2.pooled() != (2, 2) {
        return Err(format!("after four shapes with max_shapes 2: (shapes, executors) = {:?}", g2.pooled()).into());
    }
    if run(&g2, &request(vec![1], Seeds::Base(4), 2))?.samples != first {
        return Err("a shape rebuilt after eviction gave another result".into());
    }
    if Generator::new(
        gpu,
        random(&config(8, f32_policy(), AttentionKind::Dense), 2)?,
        GeneratorOptions { max_shapes: 0, ..GeneratorOptions::default() },
    )
    .is_ok()
    {
        return Err("max_shapes 0 was accepted".into());
    }
    Ok(())
}

/// Concurrency under load: 4 threads × 50 requests of mixed shapes on one generator (with
/// fewer pools than threads, so requests wait for each other) give the images sequential calls
/// give, and all finish within a deadline instead of deadlocking.
fn load_case(gpu: &Gpu) -> Outcome {
    let g = Generator::new(
        gpu,
        random(&config(8, f32_policy(), AttentionKind::Dense), 6)?,
        GeneratorOptions { max_pools: 1, max_shapes: 3, ..GeneratorOptions::default() },
    )
    .map_err(err)?;
    let per = (3 * 8 * 8) as usize;
    let mixed = |i: usize| -> Request {
        let label = (i % 5) as u32;
        let base = request(vec![label; 1 + i % 3], Seeds::Base(i as u64), 1 + (i % 4) as u32);
        match i % 4 {
            0 => Request { guidance: None, ..base },
            1 => Request { preview: true, ..base },
            2 => Request { init: Some(InitImage { pixels: vec![0.1; per * (1 + i % 3)], strength: 0.7 }), ..base },
            _ => base,
        }
    };
    let (threads, each) = (4, 50);
    let sequential: Vec<Vec<f32>> =
        (0..threads * each).map(|i| run(&g, &mixed(i)).map(|o| o.samples)).collect::<Result<_, _>>()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (g, tx, mixed) = (&g, tx.clone(), &mixed);
            s.spawn(move || {
                for k in 0..each {
                    let i = k * threads + t;
                    let _ = tx.send((i, run(g, &mixed(i)).map(|o| o.samples)));
                }
            });
        }
        drop(tx);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
        let mut done = 0;
        while done < threads * each {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok((i, got)) => {
                    if got? != sequential[i] {
                        return Err(format!("request {i} differs from its sequential run").into());
                    }
                    done += 1;
                }
                Err(_) => {
                    // The threads would hang the scope: report and abort instead.
                    eprintln!("{done} of {} concurrent requests finished within 600 s: deadlock?", threads * each);
                    std::process::abort();
                }
            }
        }
        Ok(())
    })
}

/// Device loss on a device of its own (the harness's shared one stays up): destroyed from the
/// progress callback mid-run, the request ends with `Error::DeviceLost` (no hang), so does every
/// later call, and a new `Gpu` and `Generator` work. An app's own device reports its loss through
/// `Gpu::mark_lost`.
fn device_lost_case(b: &Backend) -> Outcome {
    let backends: milliwatt::wgpu::Backends = b.gpu.adapter_info().backend.into();
    let gpu = Gpu::new_blocking(&Options { backends, ..Options::default() }).map_err(err)?;
    let weights = random(&config(8, f32_policy(), AttentionKind::Dense), 7)?;
    let g = Generator::new(&gpu, weights.clone(), GeneratorOptions::default()).map_err(err)?;
    run(&g, &request(vec![1], Seeds::Base(0), 2))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let r = g.generate_blocking(&request(vec![1, 2], Seeds::Base(0), 6), |p| {
                if p.step == 1 {
                    gpu.device().destroy();
                }
                ControlFlow::Continue(())
            });
            let _ = tx.send(r.map(|_| ()));
        });
        match rx.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(Err(Error::DeviceLost { .. })) => Ok(()),
            Ok(other) => Err(format!("a run whose device was destroyed gave {other:?}")),
            Err(_) => {
                eprintln!("a run whose device was destroyed did not return within 120 s");
                std::process::abort();
            }
        }
    })?;
    match g.generate_blocking(&request(vec![1], Seeds::Base(0), 2), |_| ControlFlow::Continue(())) {
        Err(Error::DeviceLost { .. }) => {}
        other => return Err(format!("the next request after the loss gave {:?}", other.map(|g| g.shape)).into()),
    }
    if !matches!(gpu.upload("x", &[1f32]), Err(Error::DeviceLost { .. })) {
        return Err("an upload after the loss was not DeviceLost".into());
    }
    // A new device works.
    let fresh = Gpu::new_blocking(&Options { backends, ..Options::default() }).map_err(err)?;
    run(
        &Generator::new(&fresh, weights, GeneratorOptions::default()).map_err(err)?,
        &request(vec![1], Seeds::Base(0), 2),
    )?;
    // An app's device: it tells milliwatt.
    let app = Gpu::from_device(fresh.device(), fresh.queue(), &Options::default());
    app.mark_lost("the app's callback said so");
    match app.wait() {
        Err(Error::DeviceLost { reason }) if reason.contains("app") => Ok(()),
        other => Err(format!("mark_lost then wait gave {other:?}").into()),
    }
}

/// Out of memory through the `fail_allocations_after` seam: the request fails with a typed error
/// (no hang, no panic) and the generator's pools stay consistent. A generator's `memory_limit`
/// drops idle executors of other shapes to make room and refuses, before allocating, a request
/// that cannot fit.
fn memory_case(gpu: &Gpu) -> Outcome {
    let weights = random(&config(8, f32_policy(), AttentionKind::Dense), 8)?;
    let starved = Gpu::from_device(
        gpu.device(),
        gpu.queue(),
        &Options { fail_allocations_after: Some(64 << 10), ..Options::default() },
    );
    let g = Generator::new(&starved, weights.clone(), GeneratorOptions::default()).map_err(err)?;
    for _ in 0..2 {
        match g.generate_blocking(&request(vec![1; 8], Seeds::Base(0), 2), |_| ControlFlow::Continue(())) {
            Err(Error::OutOfMemory { context }) if context.contains("fail_allocations_after") => {}
            other => return Err(format!("an allocation past the seam gave {:?}", other.map(|g| g.shape)).into()),
        }
        if g.pooled() != (0, 0) || g.memory_held() != 0 {
            return Err(format!("after out-of-memory: pooled {:?}, held {}", g.pooled(), g.memory_held()).into());
        }
    }
    // A limit that holds the weights and one of two shapes' executors, not both.
    let probe = Generator::new(gpu, weights.clone(), GeneratorOptions::default()).map_err(err)?;
    run(&probe, &request(vec![1; 2], Seeds::Base(0), 2))?;
    run(&probe, &request(vec![1; 3], Seeds::Base(0), 2))?;
    let limit = probe.memory_held() - 1;
    let limited =
        Generator::new(gpu, weights, GeneratorOptions { memory_limit: Some(limit), ..GeneratorOptions::default() })
            .map_err(err)?;
    let a = run(&limited, &request(vec![1; 2], Seeds::Base(0), 2))?.samples;
    run(&limited, &request(vec![1; 3], Seeds::Base(0), 2))?;
    if limited.memory_held() > limit || limited.pooled().0 != 1 {
        return Err(
            format!("under the limit {limit}: held {}, pooled {:?}", limited.memory_held(), limited.pooled()).into()
        );
    }
    if run(&limited, &request(vec![1; 2], Seeds::Base(0), 2))?.samples != a {
        return Err("a shape rebuilt under the memory limit gave another result".into());
    }
    let before = gpu.object_counts();
    match limited.generate_blocking(&request(vec![1; 512], Seeds::Base(0), 2), |_| ControlFlow::Continue(())) {
        Err(e @ Error::Request { .. }) if e.to_string().contains("memory_limit") => {}
        other => return Err(format!("512 images past the memory limit gave {:?}", other.map(|g| g.shape)).into()),
    }
    if gpu.object_counts() != before {
        return Err("a request refused by the memory limit allocated".into());
    }
    Ok(())
}

fn packed_case(gpu: &Gpu) -> Outcome {
    let policy = r#"{"attention": "ternary", "mlp": "int4-g32", "other": "f32"}"#;
    let w = random(&config(8, policy, AttentionKind::Dense), 3)?;
    let path = std::env::temp_dir().join(format!("milliwatt-packed-{}.safetensors", std::process::id()));
    w.save_packed(&path).map_err(err)?;
    let loaded = DitWeights::load_packed(&path).map_err(err)?;
    let _ = std::fs::remove_file(&path);
    let r = request(vec![1, 4], Seeds::Base(5), 3);
    let a = run(&Generator::new(gpu, w, GeneratorOptions::default()).map_err(err)?, &r)?;
    let b = run(&Generator::new(gpu, loaded, GeneratorOptions::default()).map_err(err)?, &r)?;
    if a.samples != b.samples {
        return Err(
            format!("pre-packed weights differ from quantize-on-load by {}", max_diff(&a.samples, &b.samples)).into()
        );
    }
    Ok(())
}

/// Relative RMS error of `got` against `want`.
fn rel_rms(got: &[f32], want: &[f32]) -> f32 {
    let e: f32 = got.iter().zip(want).map(|(a, b)| (a - b) * (a - b)).sum();
    let n: f32 = want.iter().map(|b| b * b).sum();
    (e / n.max(1e-30)).sqrt()
}

/// The GPU sample of `spec` against `model::reference::sample` on the same quantized weights.
fn against_cpu(gpu: &Gpu, w: DitWeights, spec: SampleSpec, tol: f32, what: &str) -> Result<(), String> {
    against_cpu_with(gpu, w, spec, tol, what, GeneratorOptions::default()).map(|_| ())
}

/// [`against_cpu`] with a generator of `options`; returns the samples.
fn against_cpu_with(
    gpu: &Gpu,
    w: DitWeights,
    spec: SampleSpec,
    tol: f32,
    what: &str,
    options: GeneratorOptions,
) -> Result<Vec<f32>, String> {
    let c = w.config.clone();
    let labels: Vec<u32> = (0..spec.images).map(|i| i % c.num_classes).collect();
    let mut model_labels = labels.clone();
    if spec.doubles_batch(&c) {
        model_labels.extend(std::iter::repeat_n(c.num_classes, labels.len()));
    }
    let schedule = if spec.sampler == SamplerKind::Ddim {
        ddim_schedule(spec.steps)
    } else {
        rectified_flow_schedule(spec.steps, 1.0)
    };
    let g = Generator::new(gpu, w.clone(), options).map_err(err)?;
    let noise = g.noise(&(0..u64::from(spec.images)).collect::<Vec<_>>());
    let r = Request {
        labels,
        seeds: Seeds::Base(0),
        steps: spec.steps,
        sampler: Some(spec.sampler),
        guidance: spec.guidance,
        noise: Some(noise.clone()),
        init: None,
        preview: false,
    };
    let got = run(&g, &r)?.samples;
    let want = model::reference::sample(&w, &spec, &noise, None, &model_labels, &schedule).map_err(err)?;
    let e = rel_rms(&got, &want);
    if std::env::var("MILLIWATT_TEST_VERBOSE").is_ok() {
        println!("  {what}: relative RMS {e:.2e}");
    }
    if e.is_nan() || e > tol {
        return Err(format!("{what}: GPU vs CPU reference relative RMS {e} > {tol}"));
    }
    Ok(got)
}

/// The MLP branch fused into one dispatch per block (ternary MLP, the default where the device
/// runs it) and run as its chain of kernels: both match the CPU reference, and each other closely
/// (the fused norm adds in another order, so a token's int8 may round the other way); the fused
/// graph has one `mlp` op per block and forward, and a smaller ledger.
fn fused_mlp_case(gpu: &Gpu) -> Outcome {
    let policy = r#"{"attention": "ternary", "mlp": "ternary", "other": "f32"}"#;
    let c = config(8, policy, AttentionKind::Dense);
    if !milliwatt::kernels::MlpBlock::runs_on(gpu.capabilities(), c.hidden_size, c.mlp_hidden()) {
        return Err(Failure::Unsupported("the device does not run the fused MLP kernel".into()));
    }
    let w = random(&c, 90)?;
    let spec = SampleSpec { images: 3, steps: 2, sampler: SamplerKind::Euler, guidance: Some(2.0), img2img: false };
    let fused = against_cpu_with(gpu, w.clone(), spec, 2e-2, "fused MLP", GeneratorOptions::default())?;
    let options = GeneratorOptions { fused_mlp: false, ..GeneratorOptions::default() };
    let chain = against_cpu_with(gpu, w, spec, 2e-2, "MLP chain", options)?;
    let e = rel_rms(&fused, &chain);
    if e.is_nan() || e > 1e-2 {
        return Err(format!("fused MLP vs its chain: relative RMS {e}").into());
    }
    let plan = ModulationPlan::PerStep;
    let graph = |on: bool| {
        SampleGraph::with_options(&c, &spec, GraphOptions { fused_mlp: on, ..GraphOptions::new(plan) }).map_err(err)
    };
    let (g1, g0) = (graph(true)?, graph(false)?);
    let mlps = |g: &SampleGraph| g.graph.ops().iter().filter(|o| o.name.ends_with(".mlp")).count();
    if !g1.dit.fused_mlp() || mlps(&g1) != c.depth as usize || mlps(&g0) != 0 {
        return Err(format!("fused MLP ops: {} fused, {} in the chain's graph", mlps(&g1), mlps(&g0)).into());
    }
    let (j1, j0) = (fused_ledger(gpu, &g1, spec.steps)?, fused_ledger(gpu, &g0, spec.steps)?);
    if j1 >= j0 {
        return Err(format!("fused MLP ledger {j1} J, not below the chain's {j0} J").into());
    }
    Ok(())
}

/// The ledger total (laptop L2) of a sampling graph after the fusion pass, `steps` steps.
fn fused_ledger(gpu: &Gpu, g: &SampleGraph, steps: u32) -> Result<f64, String> {
    let fused = milliwatt::graph::fuse(&g.graph).map_err(err)?.0;
    Ok(fused.ledger(gpu.capabilities(), steps).map_err(err)?.energy().total())
}

/// Int8 attention in the model, dense and neighbourhood, guided: close to the CPU reference (f32
/// attention) and to the f32-attention generator; the same dispatches, each attention op int8; a
/// smaller ledger.
fn int8_attention_case(gpu: &Gpu) -> Outcome {
    if !gpu.capabilities().packed_dot4 {
        return Err(Failure::Unsupported("no packed int8 dot products on this adapter".into()));
    }
    let policy = r#"{"attention": "ternary", "mlp": "ternary", "other": "f32"}"#;
    for (seed, kind) in [(92, AttentionKind::Dense), (93, AttentionKind::Neighbourhood { window: 3 })] {
        let c = config(8, policy, kind);
        let w = random(&c, seed)?;
        let spec = SampleSpec { images: 2, steps: 2, sampler: SamplerKind::Euler, guidance: Some(2.0), img2img: false };
        let options = GeneratorOptions { int8_attention: true, ..GeneratorOptions::default() };
        let int8 = against_cpu_with(gpu, w.clone(), spec, 3e-2, &format!("int8 attention {kind:?}"), options)?;
        let float =
            against_cpu_with(gpu, w, spec, 2e-2, &format!("f32 attention {kind:?}"), GeneratorOptions::default())?;
        let e = rel_rms(&int8, &float);
        if e.is_nan() || e > 3e-2 {
            return Err(format!("int8 vs f32 attention {kind:?}: relative RMS {e}").into());
        }
        let graph = |on: bool| {
            let options = GraphOptions { int8_attention: on, ..GraphOptions::new(ModulationPlan::PerStep) };
            SampleGraph::with_options(&c, &spec, options).map_err(err)
        };
        let (g1, g0) = (graph(true)?, graph(false)?);
        let caps = gpu.capabilities();
        // An attention op is int8 when its work has int8 products (f32 attention has none).
        let int8_ops = |g: &SampleGraph| {
            let int8 = |o: &&milliwatt::graph::Op| o.kernel.work(caps).is_ok_and(|w| w.i8_mul > 0);
            g.graph.ops().iter().filter(|o| o.name.ends_with(".attn")).filter(int8).count()
        };
        if !g1.dit.int8_attention() || int8_ops(&g1) != c.depth as usize || int8_ops(&g0) != 0 {
            return Err(format!(
                "int8 attention ops: {} in the int8 graph, {} in the f32 one",
                int8_ops(&g1),
                int8_ops(&g0)
            )
            .into());
        }
        if g1.graph.ops().len() != g0.graph.ops().len() {
            return Err("int8 attention changed the dispatch count".into());
        }
        ledger_below(gpu, &g1, &g0, spec.steps, &format!("int8 attention {kind:?}"))?;
    }
    Ok(())
}

/// An option that changes the images by int8 rounding: the generator with it (`on`) and without it
/// (`base`) each within 3 % relative RMS of the CPU reference, and of each other.
fn close_with_and_without(
    gpu: &Gpu,
    w: DitWeights,
    spec: SampleSpec,
    (base, on): (GeneratorOptions, GeneratorOptions),
    what: &str,
) -> Outcome {
    let with = against_cpu_with(gpu, w.clone(), spec, 3e-2, &format!("{what}: with"), on)?;
    let without = against_cpu_with(gpu, w, spec, 3e-2, &format!("{what}: without"), base)?;
    let e = rel_rms(&with, &without);
    if e.is_nan() || e > 3e-2 {
        return Err(format!("{what}: with against without, relative RMS {e}").into());
    }
    Ok(())
}

/// The ledger of graph `with` (the option on) below that of `without`.
fn ledger_below(gpu: &Gpu, with: &SampleGraph, without: &SampleGraph, steps: u32, what: &str) -> Outcome {
    let (j1, j0) = (fused_ledger(gpu, with, steps)?, fused_ledger(gpu, without, steps)?);
    if j1 >= j0 {
        return Err(format!("{what}: ledger {j1} J with, not below {j0} J without").into());
    }
    Ok(())
}

/// Attention writing its output as int8 for the projection (a scale per token and head), dense and
/// neighbourhood, f32 and int8 attention, ternary and 2:4 projections: close to the CPU reference
/// (a float output quantized per token) and to the generator without it; one op fewer per block
/// (no quantizer between attention and projection), a smaller ledger; a float projection keeps
/// the float output.
fn int8_attention_output_case(gpu: &Gpu) -> Outcome {
    let ternary = r#"{"attention": "ternary", "mlp": "ternary", "other": "f32"}"#;
    let sparse = r#"{"attention": "ternary-2:4", "mlp": "ternary", "other": "f32"}"#;
    let cases =
        [(94, AttentionKind::Dense, ternary, false), (95, AttentionKind::Neighbourhood { window: 3 }, sparse, true)];
    for (seed, kind, policy, int8_attention) in cases {
        if int8_attention && !gpu.capabilities().packed_dot4 {
            return Err(Failure::Unsupported("no packed int8 dot products on this adapter".into()));
        }
        let c = config(8, policy, kind);
        let w = random(&c, seed)?;
        let spec = SampleSpec { images: 2, steps: 2, sampler: SamplerKind::Euler, guidance: Some(2.0), img2img: false };
        let what = format!("int8 attention output, {policy} {kind:?}, int8 attention {int8_attention}");
        let base = GeneratorOptions { int8_attention, ..GeneratorOptions::default() };
        let on = GeneratorOptions { int8_attention_output: true, ..base };
        close_with_and_without(gpu, w, spec, (base, on), &what)?;
        let graph = |on: bool| {
            let options = GraphOptions {
                int8_attention,
                int8_attention_output: on,
                ..GraphOptions::new(ModulationPlan::PerStep)
            };
            SampleGraph::with_options(&c, &spec, options).map_err(err)
        };
        let (g1, g0) = (graph(true)?, graph(false)?);
        let quantizers =
            |g: &SampleGraph| g.graph.ops().iter().filter(|o| o.name.ends_with(".attn.proj.quantize")).count();
        // The step's forward (run once per step), `depth` blocks.
        let per_graph = c.depth as usize;
        if quantizers(&g1) != 0
            || quantizers(&g0) != per_graph
            || g0.graph.ops().len() - g1.graph.ops().len() != per_graph
        {
            return Err(format!(
                "{what}: {} and {} projection quantizers, {} and {} ops with and without the int8 output",
                quantizers(&g1),
                quantizers(&g0),
                g1.graph.ops().len(),
                g0.graph.ops().len()
            )
            .into());
        }
        ledger_below(gpu, &g1, &g0, spec.steps, &what)?;
    }
    // A float projection: attention keeps its float output.
    let c = config(8, f32_policy(), AttentionKind::Dense);
    let spec = SampleSpec { images: 1, steps: 1, sampler: SamplerKind::Euler, guidance: None, img2img: false };
    let options = GraphOptions { int8_attention_output: true, ..GraphOptions::new(ModulationPlan::PerStep) };
    let g = SampleGraph::with_options(&c, &spec, options).map_err(err)?;
    if g.dit.attention_output_group(16).is_some() {
        return Err("an f32 projection takes the int8 attention output".into());
    }
    Ok(())
}

/// The qkv GEMM writing Q, K, V as int8 for attention, dense with f32 attention and neighbourhood
/// with every int8 option: close to the CPU reference and to the generator without it; the same
/// dispatches, the attention ops reading int8, a smaller ledger; a float qkv linear keeps floats.
fn int8_qkv_case(gpu: &Gpu) -> Outcome {
    let ternary = r#"{"attention": "ternary", "mlp": "ternary", "other": "f32"}"#;
    let sparse = r#"{"attention": "ternary-2:4", "mlp": "ternary", "other": "f32"}"#;
    let cases =
        [(96, AttentionKind::Dense, ternary, false), (97, AttentionKind::Neighbourhood { window: 3 }, sparse, true)];
    for (seed, kind, policy, all) in cases {
        if all && !gpu.capabilities().packed_dot4 {
            return Err(Failure::Unsupported("no packed int8 dot products on this adapter".into()));
        }
        let c = config(8, policy, kind);
        let w = random(&c, seed)?;
        let spec = SampleSpec { images: 2, steps: 2, sampler: SamplerKind::Euler, guidance: Some(2.0), img2img: false };
        let what = format!("int8 Q, K, V, {policy} {kind:?}, other int8 options {all}");
        let base = GeneratorOptions { int8_attention: all, int8_attention_output: all, ..GeneratorOptions::default() };
        let on = GeneratorOptions { int8_qkv: true, ..base };
        close_with_and_without(gpu, w, spec, (base, on), &what)?;
        let graph = |on: bool| {
            let options = GraphOptions {
                int8_attention: all,
                int8_attention_output: all,
                int8_qkv: on,
                ..GraphOptions::new(ModulationPlan::PerStep)
            };
            SampleGraph::with_options(&c, &spec, options).map_err(err)
        };
        let (g1, g0) = (graph(true)?, graph(false)?);
        // An attention op reads int8 when its first binding (qkv) is words.
        let int8_inputs = |g: &SampleGraph| {
            let words = |o: &&milliwatt::graph::Op| {
                g.graph.tensor_desc(o.bindings[0]).is_ok_and(|t| t.dtype == milliwatt::graph::DType::U32)
            };
            g.graph.ops().iter().filter(|o| o.name.ends_with(".attn")).filter(words).count()
        };
        if g1.graph.ops().len() != g0.graph.ops().len() || int8_inputs(&g1) != c.depth as usize || int8_inputs(&g0) != 0
        {
            return Err(format!(
                "{what}: {} and {} ops, {} and {} attention ops reading int8, with and without",
                g1.graph.ops().len(),
                g0.graph.ops().len(),
                int8_inputs(&g1),
                int8_inputs(&g0)
            )
            .into());
        }
        ledger_below(gpu, &g1, &g0, spec.steps, &what)?;
    }
    let c = config(8, f32_policy(), AttentionKind::Dense);
    let spec = SampleSpec { images: 1, steps: 1, sampler: SamplerKind::Euler, guidance: None, img2img: false };
    let options = GraphOptions { int8_qkv: true, ..GraphOptions::new(ModulationPlan::PerStep) };
    let g = SampleGraph::with_options(&c, &spec, options).map_err(err)?;
    if g.dit.qkv_output_group(64).is_some() {
        return Err("an f32 qkv linear writes int8".into());
    }
    Ok(())
}

/// A distilled student (the guidance scale and the step size as inputs, `g_embedder` and
/// `d_embedder`): the generator matches the CPU reference, guided and not, dense and ternary; the
/// scalars reach the output; a guided image costs the unguided dispatches; the embedders'
/// tensors are required.
fn student_case(gpu: &Gpu) -> Outcome {
    for (policy, tol) in [(f32_policy(), 1e-4), (r#"{"attention": "ternary", "mlp": "ternary", "other": "f32"}"#, 2e-2)]
    {
        let mut c = config(8, policy, AttentionKind::Dense);
        (c.guidance_embed, c.step_embed) = (true, true);
        let w = random(&c, 80)?;
        for guidance in [Some(3.0), None] {
            let spec = SampleSpec { images: 3, steps: 3, sampler: SamplerKind::Euler, guidance, img2img: false };
            against_cpu(gpu, w.clone(), spec, tol, &format!("student {policy} guidance {guidance:?}"))?;
        }
    }
    let mut c = config(8, f32_policy(), AttentionKind::Dense);
    (c.guidance_embed, c.step_embed) = (true, true);
    let w = random(&c, 81)?;
    // The scalars reach the output: another guidance scale, another step count (step size).
    let sample = |guidance: f32, steps: u32| -> Result<Vec<f32>, String> {
        let spec =
            SampleSpec { images: 2, steps, sampler: SamplerKind::Euler, guidance: Some(guidance), img2img: false };
        let x = vec![0.5f32; 2 * 3 * 64];
        let t = vec![0.7f32; 2];
        let mut d = vec![0f32; 2];
        let e = rectified_flow_schedule(steps, 1.0)[0];
        milliwatt::cpu::sampler::sampler(
            SamplerOp::StepSize,
            &e,
            2,
            milliwatt::cpu::sampler::SamplerIo { out: &mut d, ..Default::default() },
        );
        let g = vec![spec.embedded_guidance(); 2];
        let extra = model::reference::Scalars { guidance: Some(&g), step: Some(&d) };
        Ok(model::reference::forward_with(&w, &x, &t, &[1, 2], extra).map_err(err)?.out)
    };
    let base = sample(3.0, 4)?;
    if base == sample(1.5, 4)? || base == sample(3.0, 2)? {
        return Err("the guidance scale or the step size does not change the output".into());
    }
    // One forward per step whatever the guidance: as many step dispatches as unguided (the
    // guidance embedding is made once, in the setup), over one row per image.
    let per_step = |c: &DitConfig, guidance: Option<f32>| -> Result<usize, String> {
        let spec = SampleSpec { images: 2, steps: 4, sampler: SamplerKind::Euler, guidance, img2img: false };
        let g = SampleGraph::new(c, &spec).map_err(err)?;
        Ok(milliwatt::graph::fuse(&g.graph).map_err(err)?.0.phase_range(Phase::Step).len())
    };
    let plain = config(8, f32_policy(), AttentionKind::Dense);
    let (guided, unguided, cfg) = (per_step(&c, Some(3.0))?, per_step(&c, None)?, per_step(&plain, Some(3.0))?);
    if guided != unguided {
        return Err(
            format!("student dispatches per step: guided {guided}, unguided {unguided} (CFG model {cfg})").into()
        );
    }
    let spec = SampleSpec { images: 2, steps: 4, sampler: SamplerKind::Euler, guidance: Some(3.0), img2img: false };
    let (student, teacher) = (SampleGraph::new(&c, &spec).map_err(err)?, SampleGraph::new(&plain, &spec).map_err(err)?);
    let rows = |g: &SampleGraph| g.graph.tensor_desc(g.labels).map(|d| d.shape[0]).map_err(err);
    if rows(&student)? != 2 || rows(&teacher)? != 4 {
        return Err("a student's guided batch is not one row per image".into());
    }
    // Its embedders' tensors are required.
    let mut tensors = BTreeMap::new();
    for (name, shape) in DitWeights::expected(&plain) {
        let n: usize = shape.iter().product();
        tensors.insert(name, HostTensor { shape, data: vec![0.01; n] });
    }
    match DitWeights::from_float(&c, tensors) {
        Err(e) if e.to_string().contains("g_embedder") || e.to_string().contains("d_embedder") => Ok(()),
        other => Err(format!("a student without its embedders loaded: {:?}", other.map(|_| ())).into()),
    }
}

fn policies_case(gpu: &Gpu) -> Outcome {
    // Inputs 4x4 (4 tokens): with 2 unguided images every linear has 8 rows (the GEMV paths);
    // inputs 8x8 (16 tokens, guided) take the GEMM paths.
    let policies = [
        (f32_policy(), 1e-4),
        (r#"{"attention": "int8", "mlp": "int8", "other": "f32"}"#, 2e-2),
        // Groups of 32: float activations, so the GPU and the CPU agree closely.
        (r#"{"attention": "int4-g32", "mlp": "int4-g32", "other": "f32"}"#, 1e-4),
        // Groups of 64 and 128: W4A8, int8 activations (a rounding may land on the next level).
        (r#"{"attention": "int4-g64", "mlp": "int4", "other": "f32"}"#, 2e-2),
        (r#"{"attention": "ternary", "mlp": "ternary", "other": "f32"}"#, 2e-2),
        (r#"{"attention": "ternary-2:4", "mlp": "ternary-2:4", "other": "f32"}"#, 2e-2),
    ];
    for (pi, (policy, tol)) in policies.iter().enumerate() {
        for neighbourhood in [false, true] {
            for (input, guidance, images) in [(4u32, None, 2u32), (8, Some(2.0f32), 2)] {
                // Window 1 on the 2x2 token grid, 3 on the 4x4 one.
                let attention = if neighbourhood {
                    AttentionKind::Neighbourhood { window: input / 2 - 1 }
                } else {
                    AttentionKind::Dense
                };
                let w = random(&config(input, policy, attention), 40 + pi as u64)?;
                for steps in [1, 4] {
                    let spec = SampleSpec { images, steps, sampler: SamplerKind::Euler, guidance, img2img: false };
                    against_cpu(
                        gpu,
                        w.clone(),
                        spec,
                        *tol,
                        &format!("{policy} {attention:?} {input}x{input} {steps} steps"),
                    )?;
                }
            }
        }
    }
    Ok(())
}

fn samplers_case(gpu: &Gpu) -> Outcome {
    let w = random(&config(8, f32_policy(), AttentionKind::Dense), 50)?;
    let spec = SampleSpec { images: 2, steps: 3, sampler: SamplerKind::Heun, guidance: Some(2.0), img2img: false };
    against_cpu(gpu, w, spec, 1e-4, "Heun")?;
    let mut c = config(8, f32_policy(), AttentionKind::Dense);
    c.prediction = Prediction::Epsilon;
    let w = random(&c, 51)?;
    let spec = SampleSpec { images: 2, steps: 3, sampler: SamplerKind::Ddim, guidance: Some(2.0), img2img: false };
    against_cpu(gpu, w, spec, 1e-4, "DDIM")?;
    Ok(())
}

/// Runs once, on the GL backend's turn: the same request on Vulkan and on GL (f32 policy).
fn vulkan_gl_case(b: &Backend) -> Outcome {
    if b.name != "gl" {
        return Err(Failure::Unsupported("runs on the GL backend's turn, against a Vulkan device".into()));
    }
    let vulkan = match Gpu::new_blocking(&Options { backends: milliwatt::wgpu::Backends::VULKAN, ..Options::default() })
    {
        Ok(v) => v,
        Err(e) => return Err(Failure::Unsupported(format!("no Vulkan adapter: {e}"))),
    };
    let w = random(&config(8, f32_policy(), AttentionKind::Dense), 60)?;
    let r = request(vec![0, 4], Seeds::Base(42), 3);
    let gl = run(&Generator::new(&b.gpu, w.clone(), GeneratorOptions::default()).map_err(err)?, &r)?;
    let vk = run(&Generator::new(&vulkan, w, GeneratorOptions::default()).map_err(err)?, &r)?;
    let d = max_diff(&gl.samples, &vk.samples);
    if d > 1e-3 {
        return Err(format!("same seed on Vulkan and GL differs by {d}").into());
    }
    Ok(())
}

/// The f16 policy (f16 weights and activations, f32 arithmetic) against f32 on the same weights,
/// dense and with ternary block linears.
fn f16_case(gpu: &Gpu) -> Outcome {
    if !gpu.capabilities().f16 {
        return Err(Failure::Unsupported("no SHADER_F16".into()));
    }
    for (f32p, f16p) in [
        (f32_policy(), r#"{"attention": "f16", "mlp": "f16", "other": "f16"}"#),
        (
            r#"{"attention": "ternary", "mlp": "int4", "other": "f32"}"#,
            r#"{"attention": "ternary", "mlp": "int4", "other": "f16"}"#,
        ),
    ] {
        let r = request(vec![1, 3], Seeds::Base(11), 3);
        let a = run(
            &Generator::new(gpu, random(&config(8, f32p, AttentionKind::Dense), 70)?, GeneratorOptions::default())
                .map_err(err)?,
            &r,
        )?;
        let b = run(
            &Generator::new(gpu, random(&config(8, f16p, AttentionKind::Dense), 70)?, GeneratorOptions::default())
                .map_err(err)?,
            &r,
        )?;
        let e = rel_rms(&b.samples, &a.samples);
        // f16 moves int8 activation roundings of the low-bit policy to neighbouring levels too.
        let tol = if f16p.contains("ternary") { 3e-2 } else { 1e-2 };
        if e.is_nan() || e > tol || b.samples == a.samples {
            return Err(format!("{f16p}: relative RMS {e} from {f32p}").into());
        }
        if std::env::var("MILLIWATT_TEST_VERBOSE").is_ok() {
            println!("  {f16p} vs {f32p}: relative RMS {e:.2e}");
        }
    }
    // A dense f32 linear in an f16 graph is a typed error.
    let mixed = config(8, r#"{"attention": "f32", "mlp": "f32", "other": "f16"}"#, AttentionKind::Dense);
    let g = Generator::new(gpu, random(&mixed, 1)?, GeneratorOptions::default()).map_err(err)?;
    if !matches!(
        g.generate_blocking(&request(vec![1], Seeds::Base(0), 1), |_| ControlFlow::Continue(())),
        Err(Error::Graph { .. })
    ) {
        return Err("f32 block linears in an f16 graph were accepted".into());
    }
    Ok(())
}

/// The images of `out` tiled `columns` wide into a `width`-texel-wide RGBA8 grid (the rest zero).
fn tiled(out: &Generation, columns: usize, width: usize, height: usize) -> Vec<u8> {
    let mut grid = vec![0u8; width * height * 4];
    for (i, img) in out.images.iter().enumerate() {
        let img = img.to_rgba8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        for y in 0..h {
            let at = (((i / columns) * h + y) * width + (i % columns) * w) * 4;
            grid[at..at + w * 4].copy_from_slice(&img.as_raw()[y * w * 4..(y + 1) * w * 4]);
        }
    }
    grid
}

/// `generate_into`: the texture (written by the decoder directly, or through a copy) equals
/// `Generation::images` byte for byte; previews reach the texture before the last step; the
/// ledger counts the decoding once or once per step; a texture it cannot write is a typed error.
fn into_texture_case(gpu: &Gpu) -> Outcome {
    use milliwatt::TextureTarget;
    use milliwatt::wgpu::{TextureFormat, TextureUsages};
    let w = random(&config(8, f32_policy(), AttentionKind::Dense), 4)?;
    let g = Generator::new(gpu, w, GeneratorOptions::default()).map_err(err)?;
    let r = request(vec![0, 1, 2, 3, 4], Seeds::Base(21), 3);
    let plain = run(&g, &r)?;
    for (usage, columns, size) in [
        (TextureUsages::STORAGE_BINDING, Some(2), (17, 25)),
        (TextureUsages::COPY_DST, Some(3), (24, 16)),
        (TextureUsages::COPY_DST | TextureUsages::STORAGE_BINDING, None, (40, 8)),
    ] {
        let texture = rgba_texture(gpu, size.0, size.1, usage);
        let target = TextureTarget { texture: &texture, columns };
        let out = g.generate_into_blocking(&r, &target, |_| ControlFlow::Continue(())).map_err(err)?;
        if out.samples != plain.samples {
            return Err(format!("{usage:?}: generate_into changed the samples").into());
        }
        let want = tiled(&out, columns.unwrap_or(5) as usize, size.0 as usize, size.1 as usize);
        let got = read_texture(gpu, &texture)?;
        if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
            let (px, c) = (i / 4, i % 4);
            return Err(format!(
                "{usage:?}, {columns:?} columns: texel ({}, {}) channel {c} is {}, the image's {}",
                px % size.0 as usize,
                px / size.0 as usize,
                got[i],
                want[i]
            )
            .into());
        }
        let decodes: u64 = out.ledger.runs("decode_rgba8");
        if decodes != 1 {
            return Err(format!("{usage:?}: the ledger counts {decodes} decodes of a request without previews").into());
        }
    }
    // Previews: the texture holds a step's sample before the run ends, and each step is decoded.
    let previewed = Request { preview: true, ..request(vec![3, 1], Seeds::Base(5), 4) };
    let mut steps = Vec::new();
    let with_cpu = g
        .generate_blocking(&previewed, |p| {
            steps.push(p.preview.clone().unwrap_or_default());
            ControlFlow::Continue(())
        })
        .map_err(err)?;
    let texture = rgba_texture(gpu, 16, 8, TextureUsages::STORAGE_BINDING);
    let target = TextureTarget::row(&texture);
    let mut previews = 0;
    match g.generate_into_blocking(&previewed, &target, |p| {
        previews += usize::from(p.preview.is_some());
        if p.step == 0 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    }) {
        Err(Error::Cancelled { .. }) => {}
        other => return Err(format!("cancelling a texture run gave {:?}", other.map(|o| o.shape)).into()),
    }
    if previews != 0 {
        return Err("a texture run copied previews to the host".into());
    }
    let got = read_texture(gpu, &texture)?;
    let decoded = |samples: &[f32]| -> Result<Vec<u8>, String> {
        use milliwatt::generator::{Decoder, PixelDecoder};
        let images = PixelDecoder.decode(samples, with_cpu.shape).map_err(err)?;
        Ok(tiled(&Generation { images, ..with_cpu.clone() }, 2, 16, 8))
    };
    // Cancelled after step 0, the step queued behind it has run too: step 0's or step 1's preview.
    if got != decoded(&steps[0])? && got != decoded(&steps[1])? {
        return Err("after cancelling at step 0 the texture holds neither step 0 nor step 1".into());
    }
    let out = g.generate_into_blocking(&previewed, &target, |_| ControlFlow::Continue(())).map_err(err)?;
    let decodes: u64 = out.ledger.runs("decode_rgba8");
    if decodes != 4 || read_texture(gpu, &texture)? != decoded(&with_cpu.samples)? {
        return Err(format!("previews into a texture: {decodes} decodes of 4 steps, or the last differs").into());
    }
    // Textures it cannot write: typed errors naming the problem, nothing run.
    let cases = [
        (rgba_texture(gpu, 40, 7, TextureUsages::STORAGE_BINDING), "need a 40x8"),
        (rgba_texture(gpu, 40, 8, TextureUsages::TEXTURE_BINDING), "neither STORAGE_BINDING nor COPY_DST"),
        (
            gpu.device().create_texture(&milliwatt::wgpu::TextureDescriptor {
                label: None,
                size: milliwatt::wgpu::Extent3d { width: 40, height: 8, depth_or_array_layers: 1 },
                mip_level_count: 1,
                sample_count: 1,
                dimension: milliwatt::wgpu::TextureDimension::D2,
                format: TextureFormat::Bgra8Unorm,
                usage: TextureUsages::COPY_DST,
                view_formats: &[],
            }),
            "Bgra8Unorm",
        ),
    ];
    for (texture, says) in &cases {
        match g.generate_into_blocking(&r, &TextureTarget::row(texture), |_| ControlFlow::Continue(())) {
            Err(e @ Error::Request { .. }) if e.to_string().contains(says) => {}
            other => {
                return Err(
                    format!("texture {texture:?}: {:?}, not an error saying `{says}`", other.map(|o| o.shape)).into()
                );
            }
        }
    }
    Ok(())
}

/// A request spread over two generators gives the images of one: two generators on this device
/// (exactly), and on the GL turn a Vulkan and a GL adapter (within the cross-backend tolerance),
/// in request order; the split follows the measured speeds and keeps every image.
fn spread_case(b: &Backend) -> Outcome {
    use milliwatt::Spread;
    let w = random(&config(8, f32_policy(), AttentionKind::Dense), 61)?;
    let r = request(vec![0, 4, 1, 3, 2, 0, 4], Seeds::Base(77), 3);
    let one = run(&Generator::new(&b.gpu, w.clone(), GeneratorOptions::default()).map_err(err)?, &r)?;
    let mut gpus = vec![b.gpu.clone()];
    if b.name == "gl" {
        match Gpu::new_blocking(&Options { backends: milliwatt::wgpu::Backends::VULKAN, ..Options::default() }) {
            Ok(v) => gpus.push(v),
            Err(e) => return Err(Failure::Unsupported(format!("no Vulkan adapter: {e}"))),
        }
    } else {
        gpus.push(b.gpu.clone());
    }
    let generators = gpus
        .iter()
        .map(|g| Generator::new(g, w.clone(), GeneratorOptions::default()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    let spread = Spread::new(generators).map_err(err)?;
    if spread.shares(7).iter().sum::<usize>() != 7 {
        return Err(format!("shares {:?} of 7 images", spread.shares(7)).into());
    }
    // A part's batch may pick another matmul variant than the whole batch's (GEMV or GEMM).
    let tolerance = if b.name == "gl" { 1e-3 } else { 1e-5 };
    for round in 0..2 {
        let parts = spread.shares(7).iter().filter(|&&s| s > 0).count() as u64;
        let mut steps = Vec::new();
        let out = spread
            .generate_blocking(&r, |p| {
                steps.push(p.step);
                ControlFlow::Continue(())
            })
            .map_err(err)?;
        let d = max_diff(&out.samples, &one.samples);
        if d > tolerance || out.images.len() != 7 || out.shape != one.shape {
            return Err(
                format!("round {round}: the spread differs from one generator by {d} (shape {:?})", out.shape).into()
            );
        }
        if steps != [0, 1, 2] {
            return Err(format!("round {round}: progress {steps:?}").into());
        }
        // Both parts ran and the ledger holds them all: each part's attention launches (the
        // sampler's depend on the part's modulation plan, which depends on its size).
        let (a, o) = (out.ledger.runs("attention"), one.ledger.runs("attention"));
        if a != parts * o || o == 0 {
            return Err(format!(
                "round {round}: the spread's ledger has {a} attention launches, one generator {o} ({parts} parts)"
            )
            .into());
        }
    }
    let shares = spread.shares(7);
    if shares.iter().sum::<usize>() != 7 || shares.contains(&7) && b.name != "gl" {
        return Err(format!("after measuring, shares {shares:?} of 7 images on two equal generators").into());
    }
    Ok(())
}
