//! The cases: each kernel against its CPU twin on a covering set of shapes that are not multiples
//! of any tile (1, 7, 33, 127, 1000, 1001, 4095 …), f32 and f16, subgroups on and off, vec4 and
//! scalar loads, weights split past the binding limit, and the typed errors.

use half::f16;
use milliwatt::cpu::{self, Element};
use milliwatt::kernels::probe::ProbeParams;
use milliwatt::kernels::{
    Activation, Broadcast, Elem, Elementwise, EltOp, Epilogue, FmaProbe, Gemm, GemmVariant, Gemv, GemvReduce,
    GemvVariant, MatmulNaive, MatmulParams, MatmulShape,
};
use milliwatt::{Error, Gpu, Kernel};

use crate::util::{Rng, compare, need_f16, rel_tol};
use crate::{Backend, Case, Failure, Outcome};

pub fn all() -> Vec<(&'static str, Case)> {
    vec![
        ("gemm_f32", |b| gemm_cases::<f32>(&b.gpu)),
        ("gemm_f16", |b| gemm_cases::<f16>(&b.gpu)),
        ("gemm_split_weights", |b| split_case(&b.small_bindings, true)),
        ("gemm_epilogues_f32", |b| epilogue_cases::<f32>(&b.gpu)),
        ("gemm_epilogues_f16", |b| epilogue_cases::<f16>(&b.gpu)),
        ("gemv_epilogues", |b| gemv_epilogue_case(&b.gpu)),
        ("gemv_f32_subgroups", |b| gemv_cases::<f32>(&b.gpu, GemvReduce::Subgroup)),
        ("gemv_f32_shared", |b| gemv_cases::<f32>(&b.gpu, GemvReduce::Shared)),
        ("gemv_f16_subgroups", |b| gemv_cases::<f16>(&b.gpu, GemvReduce::Subgroup)),
        ("gemv_f16_shared", |b| gemv_cases::<f16>(&b.gpu, GemvReduce::Shared)),
        ("gemv_variants", |b| gemv_variant_cases(&b.gpu)),
        ("gemv_split_weights", |b| split_case(&b.small_bindings, false)),
        ("gemv_forced_fallback", |b| fallback_case(&b.fallback)),
        ("matmul_naive_f32", |b| naive_cases::<f32>(&b.gpu)),
        ("matmul_naive_f16", |b| naive_cases::<f16>(&b.gpu)),
        ("elementwise_f32", |b| elementwise_cases::<f32>(&b.gpu)),
        ("elementwise_f16", |b| elementwise_cases::<f16>(&b.gpu)),
        ("fma_probe_f32", |b| probe_case::<f32>(&b.gpu)),
        ("fma_probe_f16", |b| probe_case::<f16>(&b.gpu)),
        ("prepared_reuse_creates_nothing", |b| reuse_case(&b.gpu)),
        ("typed_errors", |b| error_cases(b)),
        ("gpu_errors_are_captured", |b| captured_error_case(&b.gpu)),
        ("pipeline_cache_on_disk", |b| disk_cache_case(&b.gpu)),
        ("list_adapters_reports_this_one", |b| list_case(&b.gpu)),
    ]
}

fn gpu_err(e: Error) -> String {
    e.to_string()
}

struct MatmulData<E> {
    x: Vec<E>,
    w: Vec<E>,
    /// Per output element, the sum of |x| * |w| over k.
    scale: Vec<f32>,
}

fn matmul_data<E: Element>(shape: MatmulShape, seed: u64) -> MatmulData<E> {
    let (m, n, k) = (shape.m as usize, shape.n as usize, shape.k as usize);
    let mut rng = Rng::new(seed);
    let x: Vec<E> = rng.vec(n * k);
    let w: Vec<E> = rng.vec(m * k);
    let xa: Vec<f32> = x.iter().map(|v| v.to_f32().abs()).collect();
    let wa: Vec<f32> = w.iter().map(|v| v.to_f32().abs()).collect();
    let scale = cpu::matmul::reference(m, n, k, &xa, &wa);
    MatmulData { x, w, scale }
}

/// Runs a matmul kernel on the GPU; the output starts filled with a sentinel so unwritten
/// elements show.
fn run_matmul<E: Element>(
    gpu: &Gpu,
    kernel: &dyn Kernel,
    shape: MatmulShape,
    d: &MatmulData<E>,
) -> Result<(Vec<E>, usize), String> {
    let x = gpu.upload("x", &d.x).map_err(gpu_err)?;
    let w = gpu.upload("w", &d.w).map_err(gpu_err)?;
    let y = gpu.upload("y", &vec![E::from_f32(7.0); (shape.m * shape.n) as usize]).map_err(gpu_err)?;
    let prepared = kernel.prepare(gpu, &[(&x).into(), (&w).into(), (&y).into()]).map_err(gpu_err)?;
    gpu.run(&[&prepared]).map_err(gpu_err)?;
    let out: Vec<E> = gpu.read(&y).map_err(gpu_err)?;
    Ok((out, prepared.dispatch_count()))
}

fn params(shape: MatmulShape) -> MatmulParams {
    MatmulParams::whole(shape, &Epilogue::default())
}

const GEMM_SHAPES: &[(u32, u32, u32)] = &[
    (1, 1, 1),
    (7, 33, 127),
    (127, 7, 1000),
    (64, 64, 64),
    (100, 65, 33),
    (33, 257, 4),
    (65, 1, 16),
    (130, 70, 1001),
    (200, 96, 4095),
];

fn gemm_cases<E: Element>(gpu: &Gpu) -> Outcome {
    need_f16::<E>(gpu)?;
    for (i, &(m, n, k)) in GEMM_SHAPES.iter().enumerate() {
        let shape = MatmulShape::new(m, n, k);
        let d = matmul_data::<E>(shape, 100 + i as u64);
        let mut twin = vec![E::default(); (m * n) as usize];
        cpu::matmul::gemm(&params(shape), &d.x, &d.w, &mut twin);
        // The chosen variant, and scalar loads where vec4 would be chosen.
        let mut variants = vec![None];
        if k % 4 == 0 {
            variants.push(Some(GemmVariant { vec4: false }));
        }
        for v in variants {
            let kernel = Gemm { shape, elem: E::ELEM, variant: v, epilogue: Default::default() };
            let (out, _) = run_matmul(gpu, &kernel, shape, &d)?;
            compare(&format!("gemm {shape:?} {:?}", kernel.choose()), &out, &twin, &d.scale, rel_tol(E::ELEM), 1e-6)?;
        }
    }
    Ok(())
}

const GEMV_SHAPES: &[(u32, u32, u32)] = &[
    (1, 1, 1),
    (7, 2, 33),
    (127, 3, 1000),
    (1000, 1, 4096),
    (33, 8, 127),
    (64, 5, 7),
    (257, 4, 1024),
    (5, 6, 2),
    (1001, 7, 64),
    (4, 8, 4095),
    (130, 1, 1001),
];

fn gemv_cases<E: Element>(gpu: &Gpu, reduce: GemvReduce) -> Outcome {
    need_f16::<E>(gpu)?;
    if reduce == GemvReduce::Subgroup && !gpu.capabilities().subgroups {
        return Err(Failure::Unsupported("no subgroups on this adapter".into()));
    }
    for (i, &(m, n, k)) in GEMV_SHAPES.iter().enumerate() {
        let shape = MatmulShape::new(m, n, k);
        let d = matmul_data::<E>(shape, 200 + i as u64);
        // What the choice function picks for this reduction.
        let caps = milliwatt::Capabilities { subgroups: reduce == GemvReduce::Subgroup, ..gpu.capabilities().clone() };
        let base = Gemv::new(shape, E::ELEM).choose(&caps);
        let mut variants = vec![GemvVariant { reduce, ..base }];
        if k % 4 == 0 {
            variants.push(GemvVariant { reduce, vec4: false, ..base });
        }
        for v in variants {
            let mut twin = vec![E::default(); (m * n) as usize];
            cpu::matmul::gemv(&params(shape), v.wg as usize, v.vec4, &d.x, &d.w, &mut twin);
            let kernel = Gemv { variant: Some(v), ..Gemv::new(shape, E::ELEM) };
            let (out, _) = run_matmul(gpu, &kernel, shape, &d)?;
            compare(&format!("gemv {shape:?} {v:?}"), &out, &twin, &d.scale, rel_tol(E::ELEM), 1e-6)?;
        }
    }
    Ok(())
}

/// Workgroup sizes and rows per workgroup other than the chosen ones, both reductions.
fn gemv_variant_cases(gpu: &Gpu) -> Outcome {
    let caps = gpu.capabilities();
    let mut reduces = vec![GemvReduce::Shared];
    if caps.subgroups {
        reduces.push(GemvReduce::Subgroup);
    }
    for (i, &(m, n, k, wg, rows)) in
        [(77u32, 1u32, 516u32, 32u32, 8u32), (33, 2, 1000, 256, 1), (9, 4, 129, 64, 8), (300, 1, 2048, 256, 4)]
            .iter()
            .enumerate()
    {
        for &reduce in &reduces {
            let shape = MatmulShape::new(m, n, k);
            let d = matmul_data::<f32>(shape, 300 + i as u64);
            let v = GemvVariant { reduce, vec4: k % 4 == 0, wg, rows };
            let mut twin = vec![0f32; (m * n) as usize];
            cpu::matmul::gemv(&params(shape), wg as usize, v.vec4, &d.x, &d.w, &mut twin);
            let kernel = Gemv { variant: Some(v), ..Gemv::new(shape, Elem::F32) };
            let (out, _) = run_matmul(gpu, &kernel, shape, &d)?;
            compare(&format!("gemv {shape:?} {v:?}"), &out, &twin, &d.scale, 1e-5, 1e-6)?;
        }
    }
    Ok(())
}

/// On a device whose storage-binding limit is (made) 64 KiB, weights of ~500 KB are split along M
/// into several bindings and dispatches, with the same result.
fn split_case(gpu: &Gpu, gemm: bool) -> Outcome {
    // Every binding but the weight must fit the 64 KiB limit: the split is along M only.
    for (i, &(m, n, k)) in [(500u32, 32u32, 128u32), (333, 12, 1001)].iter().enumerate() {
        let n = if gemm { n } else { n.min(8) };
        let shape = MatmulShape::new(m, n, k);
        let d = matmul_data::<f32>(shape, 400 + i as u64);
        let mut twin = vec![0f32; (m * n) as usize];
        let kernel: Box<dyn Kernel> = if gemm {
            cpu::matmul::gemm(&params(shape), &d.x, &d.w, &mut twin);
            Box::new(Gemm::new(shape, Elem::F32))
        } else {
            let v = Gemv::new(shape, Elem::F32).choose(gpu.capabilities());
            cpu::matmul::gemv(&params(shape), v.wg as usize, v.vec4, &d.x, &d.w, &mut twin);
            Box::new(Gemv::new(shape, Elem::F32))
        };
        let (out, dispatches) = run_matmul(gpu, kernel.as_ref(), shape, &d)?;
        let weight_bytes = u64::from(m * k) * 4;
        let expected = weight_bytes.div_ceil(gpu.capabilities().max_storage_binding) as usize;
        if dispatches < expected.max(2) {
            return Err(format!(
                "{shape:?}: {weight_bytes} weight bytes over a 64 KiB limit gave {dispatches} dispatches"
            )
            .into());
        }
        compare(&format!("split {shape:?}"), &out, &twin, &d.scale, 1e-5, 1e-6)?;
    }
    Ok(())
}

/// `Options { no_subgroups, force_f32 }` steer the choice without touching the environment.
fn fallback_case(gpu: &Gpu) -> Outcome {
    let caps = gpu.capabilities();
    if caps.subgroups || caps.f16 {
        return Err(format!("forced fallbacks not applied: {caps:?}").into());
    }
    let shape = MatmulShape::new(129, 2, 1000);
    let v = Gemv::new(shape, Elem::F32).choose(caps);
    if v.reduce != GemvReduce::Shared {
        return Err(format!("no_subgroups still chose {v:?}").into());
    }
    match Gemv::new(shape, Elem::F16).requirements(caps) {
        Err(Error::Unsupported { .. }) => {}
        other => return Err(format!("f16 on a force_f32 device gave {other:?}").into()),
    }
    let d = matmul_data::<f32>(shape, 500);
    let mut twin = vec![0f32; 258];
    cpu::matmul::gemv(&params(shape), v.wg as usize, v.vec4, &d.x, &d.w, &mut twin);
    let (out, _) = run_matmul(gpu, &Gemv::new(shape, Elem::F32), shape, &d)?;
    compare("gemv fallback", &out, &twin, &d.scale, 1e-5, 1e-6)?;
    Ok(())
}

fn naive_cases<E: Element>(gpu: &Gpu) -> Outcome {
    need_f16::<E>(gpu)?;
    for (i, &(m, n, k)) in [(1u32, 1u32, 1u32), (33, 7, 127), (100, 9, 1001)].iter().enumerate() {
        let shape = MatmulShape::new(m, n, k);
        let d = matmul_data::<E>(shape, 600 + i as u64);
        let mut twin = vec![E::default(); (m * n) as usize];
        cpu::matmul::matmul_naive(&params(shape), &d.x, &d.w, &mut twin);
        let (out, _) = run_matmul(gpu, &MatmulNaive { shape, elem: E::ELEM }, shape, &d)?;
        compare(&format!("naive {shape:?}"), &out, &twin, &d.scale, rel_tol(E::ELEM), 1e-6)?;
    }
    Ok(())
}

fn elementwise_cases<E: Element>(gpu: &Gpu) -> Outcome {
    need_f16::<E>(gpu)?;
    for (i, &len) in [1u32, 7, 1000, 1024, 100_003].iter().enumerate() {
        let mut rng = Rng::new(700 + i as u64);
        let a: Vec<E> = rng.vec(len as usize);
        let b: Vec<E> = rng.vec(len as usize);
        for op in [EltOp::Add, EltOp::Mul, EltOp::Scale { alpha: 0.75, beta: -0.25 }, EltOp::Silu, EltOp::GeluTanh] {
            let ab = gpu.upload("a", &a).map_err(gpu_err)?;
            let bb = gpu.upload("b", &b).map_err(gpu_err)?;
            let out = gpu.upload("out", &vec![E::from_f32(7.0); len as usize]).map_err(gpu_err)?;
            let kernel = Elementwise::new(op, len, E::ELEM);
            let bufs: Vec<milliwatt::TensorRef<'_>> = if op.inputs() == 2 {
                vec![(&ab).into(), (&bb).into(), (&out).into()]
            } else {
                vec![(&ab).into(), (&out).into()]
            };
            let p = kernel.prepare(gpu, &bufs).map_err(gpu_err)?;
            gpu.run(&[&p]).map_err(gpu_err)?;
            let got: Vec<E> = gpu.read(&out).map_err(gpu_err)?;
            let mut twin = vec![E::default(); len as usize];
            cpu::elementwise::elementwise(op, &a, (op.inputs() == 2).then_some(&b[..]), &mut twin);
            let scale = vec![1.0; len as usize];
            // One f32 operation, one rounding: equal up to an ulp of the element type (fused or not);
            // exp and tanh are the backend's, within a few ulps.
            let transcendental = matches!(op, EltOp::Silu | EltOp::GeluTanh);
            let rel = match (E::ELEM, transcendental) {
                (Elem::F16, _) => 1e-3,
                (_, false) => 2e-7,
                (_, true) => 2e-6,
            };
            compare(&format!("elementwise {op:?} len {len}"), &got, &twin, &scale, rel, 0.0)?;
        }
    }
    // Broadcast `b`: a bias row over odd and vec4-friendly shapes, and a per-image gate.
    for (i, &(rows, cols, group)) in
        [(5u32, 7u32, 5u32), (9, 12, 3), (64, 36, 64), (3, 1, 1), (10, 8, 4)].iter().enumerate()
    {
        let len = rows * cols;
        let br = Broadcast { cols, group };
        let mut rng = Rng::new(800 + i as u64);
        let a: Vec<E> = rng.vec(len as usize);
        let b: Vec<E> = rng.vec(br.b_len(len) as usize);
        for op in [EltOp::Add, EltOp::Mul, EltOp::Copy] {
            let ab = gpu.upload("a", &a).map_err(gpu_err)?;
            let bb = gpu.upload("b", &b).map_err(gpu_err)?;
            let out = gpu.upload("out", &vec![E::from_f32(7.0); len as usize]).map_err(gpu_err)?;
            let kernel = Elementwise::new(op, len, E::ELEM).with_broadcast(br);
            // `Copy` repeats its one input (here `b`, the smaller tensor).
            let bufs: Vec<milliwatt::TensorRef<'_>> = if op == EltOp::Copy {
                vec![(&bb).into(), (&out).into()]
            } else {
                vec![(&ab).into(), (&bb).into(), (&out).into()]
            };
            let p = kernel.prepare(gpu, &bufs).map_err(gpu_err)?;
            gpu.run(&[&p]).map_err(gpu_err)?;
            let got: Vec<E> = gpu.read(&out).map_err(gpu_err)?;
            let mut twin = vec![E::default(); len as usize];
            if op == EltOp::Copy {
                cpu::elementwise::elementwise_broadcast(op, &b, None, Some(br), &mut twin);
            } else {
                cpu::elementwise::elementwise_broadcast(op, &a, Some(&b), Some(br), &mut twin);
            }
            let rel = if E::ELEM == Elem::F16 { 1e-3 } else { 2e-7 };
            compare(
                &format!("elementwise {op:?} broadcast {br:?} x {rows}"),
                &got,
                &twin,
                &vec![1.0; len as usize],
                rel,
                0.0,
            )?;
        }
    }
    // A broadcast that does not tile `a` is a typed error.
    let bad = Elementwise::new(EltOp::Add, 10, E::ELEM).with_broadcast(Broadcast { cols: 3, group: 1 });
    if bad.requirements(gpu.capabilities()).is_ok() {
        return Err("broadcast rows of 3 over 10 elements accepted".into());
    }
    Ok(())
}

fn probe_case<E: Element>(gpu: &Gpu) -> Outcome {
    need_f16::<E>(gpu)?;
    let probe = FmaProbe { invocations: 512, iters: 100, elem: E::ELEM };
    let out = gpu.upload("out", &vec![0f32; 512]).map_err(gpu_err)?;
    let p = probe.prepare(gpu, &[(&out).into()]).map_err(gpu_err)?;
    gpu.run(&[&p]).map_err(gpu_err)?;
    let got: Vec<f32> = gpu.read(&out).map_err(gpu_err)?;
    let pp = ProbeParams { mul: 0.999, add: 0.001, _pad: [0; 2] };
    let twin: Vec<f32> = (0..512).map(|id| cpu::probe::fma_probe::<E>(&pp, 100, id)).collect();
    // The chains round at every step, and whether the GPU fuses f16 (or even f32) multiply-adds is
    // up to the driver: 100 steps drift by tens of ulps.
    let rel = if E::ELEM == Elem::F16 { 5e-3 } else { 1e-4 };
    let scale: Vec<f32> = twin.iter().map(|t| t.abs()).collect();
    compare("fma probe", &got, &twin, &scale, rel, 0.0)?;
    Ok(())
}

/// Preparing once and running again creates no pipeline, bind group or buffer, and gives the same
/// output.
fn reuse_case(gpu: &Gpu) -> Outcome {
    let shape = MatmulShape::new(100, 40, 64);
    let d = matmul_data::<f32>(shape, 800);
    let x = gpu.upload("x", &d.x).map_err(gpu_err)?;
    let w = gpu.upload("w", &d.w).map_err(gpu_err)?;
    let y = gpu.upload("y", &vec![0f32; 4000]).map_err(gpu_err)?;
    let p = Gemm::new(shape, Elem::F32).prepare(gpu, &[(&x).into(), (&w).into(), (&y).into()]).map_err(gpu_err)?;
    gpu.run(&[&p]).map_err(gpu_err)?;
    let first: Vec<f32> = gpu.read(&y).map_err(gpu_err)?;
    let before = gpu.object_counts();
    for _ in 0..3 {
        gpu.run(&[&p]).map_err(gpu_err)?;
    }
    let after = gpu.object_counts();
    if before != after {
        return Err(format!("re-running a prepared kernel created objects: {before:?} -> {after:?}").into());
    }
    // Preparing the same kernel again reuses the cached pipeline.
    let p2 = Gemm::new(shape, Elem::F32).prepare(gpu, &[(&x).into(), (&w).into(), (&y).into()]).map_err(gpu_err)?;
    if gpu.object_counts().pipelines != before.pipelines {
        return Err("re-preparing the same kernel compiled a new pipeline".into());
    }
    gpu.run(&[&p2]).map_err(gpu_err)?;
    let second: Vec<f32> = gpu.read(&y).map_err(gpu_err)?;
    if first != second {
        return Err("second run differs from the first".into());
    }
    Ok(())
}

fn error_cases(b: &Backend) -> Outcome {
    let gpu = &b.gpu;
    let shape = MatmulShape::new(16, 2, 32);
    let x = gpu.upload("x", &[0f32; 64]).map_err(gpu_err)?;
    let w_small = gpu.upload("w", &[0f32; 100]).map_err(gpu_err)?;
    let y = gpu.upload("y", &[0f32; 32]).map_err(gpu_err)?;
    match Gemv::new(shape, Elem::F32).prepare(gpu, &[(&x).into(), (&w_small).into(), (&y).into()]) {
        Err(Error::BufferTooSmall { binding: "w", needed: 2048, got: 400, .. }) => {}
        other => return Err(format!("short weight buffer gave {other:?}").into()),
    }
    match Gemm::new(shape, Elem::F32).prepare(gpu, &[(&x).into(), (&y).into()]) {
        Err(Error::BindingCount { expected: 3, got: 2, .. }) => {}
        other => return Err(format!("two buffers for gemm gave {other:?}").into()),
    }
    match Gemv::new(MatmulShape::new(16, 9, 32), Elem::F32).requirements(gpu.capabilities()) {
        Err(Error::Shape { kernel: "gemv", .. }) => {}
        other => return Err(format!("gemv with n = 9 gave {other:?}").into()),
    }
    match Gemm::new(MatmulShape::new(0, 2, 32), Elem::F32).requirements(gpu.capabilities()) {
        Err(Error::Shape { .. }) => {}
        other => return Err(format!("empty gemm gave {other:?}").into()),
    }
    let uniform = gpu.uniform("not_storage", &[0u32; 64]).map_err(gpu_err)?;
    match Gemm::new(MatmulShape::new(4, 4, 4), Elem::F32)
        .prepare(gpu, &[(&uniform).into(), (&uniform).into(), (&uniform).into()])
    {
        Err(Error::BadBinding { binding: "x", .. }) => {}
        other => return Err(format!("a uniform buffer as storage gave {other:?}").into()),
    }
    if !gpu.capabilities().f16 {
        match Gemm::new(shape, Elem::F16).requirements(gpu.capabilities()) {
            Err(Error::Unsupported { .. }) => {}
            other => return Err(format!("f16 without SHADER_F16 gave {other:?}").into()),
        }
    }
    Ok(())
}

/// A buffer past the device limit is refused before wgpu sees it (`Error::Request` naming the
/// limit); a wgpu validation error (a usage wgpu refuses) comes back as `Error::Validation`, not
/// as a panic from wgpu's default handler.
fn captured_error_case(gpu: &Gpu) -> Outcome {
    let too_big = gpu.capabilities().max_buffer_size.saturating_add(4);
    match gpu.buffer("too_big", too_big, milliwatt::wgpu::BufferUsages::STORAGE) {
        Err(e @ Error::Request { .. }) if e.to_string().contains("max_buffer_size") => {}
        other => return Err(format!("a buffer over max_buffer_size gave {other:?}").into()),
    }
    let usage = milliwatt::wgpu::BufferUsages::MAP_READ | milliwatt::wgpu::BufferUsages::STORAGE;
    match gpu.buffer("mappable_storage", 16, usage) {
        Err(Error::Validation { context, .. }) if context.contains("milliwatt.mappable_storage") => Ok(()),
        other => Err(format!("a MAP_READ | STORAGE buffer gave {other:?}").into()),
    }
}

/// With `pipeline_cache_dir`, compiled pipelines are saved and a second device reads them back.
fn disk_cache_case(gpu: &Gpu) -> Outcome {
    if !gpu.capabilities().pipeline_cache {
        return Err(Failure::Unsupported("no PIPELINE_CACHE on this adapter".into()));
    }
    let dir = std::env::temp_dir().join(format!("milliwatt-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = milliwatt::Options { pipeline_cache_dir: Some(dir.clone()), ..milliwatt::Options::default() };
    let cached = Gpu::from_device(gpu.device(), gpu.queue(), &options);
    let shape = MatmulShape::new(8, 2, 8);
    let d = matmul_data::<f32>(shape, 900);
    run_matmul(&cached, &Gemm::new(shape, Elem::F32), shape, &d)?;
    cached.save_pipeline_cache().map_err(gpu_err)?;
    let files: Vec<_> = std::fs::read_dir(&dir).map_err(|e| e.to_string())?.flatten().collect();
    let size = files.first().and_then(|f| f.metadata().ok()).map_or(0, |m| m.len());
    if files.len() != 1 || size == 0 {
        return Err(
            format!("expected one non-empty cache file in {dir:?}, found {} ({size} bytes)", files.len()).into()
        );
    }
    // A second context starts from the saved data and still produces correct results.
    let again = Gpu::from_device(gpu.device(), gpu.queue(), &options);
    let mut twin = vec![0f32; 16];
    cpu::matmul::gemm(&params(shape), &d.x, &d.w, &mut twin);
    let (out, _) = run_matmul(&again, &Gemm::new(shape, Elem::F32), shape, &d)?;
    compare("gemm from cached pipeline", &out, &twin, &d.scale, 1e-5, 1e-6)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn list_case(gpu: &Gpu) -> Outcome {
    let options = milliwatt::Options { backends: gpu.adapter_info().backend.into(), ..milliwatt::Options::default() };
    let list = pollster::block_on(milliwatt::list_adapters(&options));
    if !list.iter().any(|a| a.info.name == gpu.adapter_info().name && a.info.backend == gpu.adapter_info().backend) {
        return Err(format!("list_adapters did not report {}: {list:?}", gpu.describe()).into());
    }
    Ok(())
}

/// Every epilogue (bias, GELU, SiLU, residual, gated residual) fused into the GEMM against the
/// twin, and fused against unfused: the same GEMM followed by the epilogue on the CPU.
fn epilogue_cases<E: Element>(gpu: &Gpu) -> Outcome {
    use milliwatt::cpu::epilogue::EpilogueInputs;
    need_f16::<E>(gpu)?;
    let epilogues = [
        Epilogue::bias_act(Activation::None),
        Epilogue::bias_act(Activation::GeluTanh),
        Epilogue::bias_act(Activation::Silu),
        Epilogue { act: Activation::GeluTanh, ..Epilogue::default() },
        Epilogue { residual: true, ..Epilogue::default() },
        Epilogue { bias: true, residual: true, gate_rows: Some(7), ..Epilogue::default() },
    ];
    for (i, e) in epilogues.iter().enumerate() {
        let shape = MatmulShape::new(70, 33, 1 + 40 * i as u32);
        let (m, n) = (shape.m as usize, shape.n as usize);
        let d = matmul_data::<E>(shape, 1100 + i as u64);
        let mut rng = Rng::new(1200 + i as u64);
        let bias: Vec<E> = rng.vec(m);
        let residual: Vec<E> = rng.vec(m * n);
        let gate: Vec<E> = rng.vec(n.div_ceil(7) * m);
        let f = |v: &[E]| -> Vec<f32> { v.iter().map(|x| x.to_f32()).collect() };
        let (bf, rf, gf) = (f(&bias), f(&residual), f(&gate));
        let inputs = EpilogueInputs { bias: &bf, residual: &rf, gate: &gf };
        let mut twin = vec![E::default(); m * n];
        cpu::matmul::gemm_epilogue(&params(shape), e, &inputs, &d.x, &d.w, &mut twin);

        let x = gpu.upload("x", &d.x).map_err(gpu_err)?;
        let w = gpu.upload("w", &d.w).map_err(gpu_err)?;
        let y = gpu.upload("y", &vec![E::from_f32(7.0); m * n]).map_err(gpu_err)?;
        let bb = gpu.upload("bias", &bias).map_err(gpu_err)?;
        let rb = gpu.upload("residual", &residual).map_err(gpu_err)?;
        let gb = gpu.upload("gate", &gate).map_err(gpu_err)?;
        let mut bufs: Vec<milliwatt::TensorRef<'_>> = vec![(&x).into(), (&w).into(), (&y).into()];
        if e.bias {
            bufs.push((&bb).into());
        }
        if e.residual {
            bufs.push((&rb).into());
        }
        if e.gate_rows.is_some() {
            bufs.push((&gb).into());
        }
        let kernel = Gemm::new(shape, E::ELEM).with_epilogue(*e);
        let p = kernel.prepare(gpu, &bufs).map_err(gpu_err)?;
        gpu.run(&[&p]).map_err(gpu_err)?;
        let out: Vec<E> = gpu.read(&y).map_err(gpu_err)?;
        // Scale: the matmul's terms plus the epilogue's inputs (GELU and SiLU are 1-Lipschitz-ish).
        let scale: Vec<f32> =
            (0..m * n).map(|j| d.scale[j] * (1.0 + gf.iter().fold(0f32, |a, v| a.max(v.abs()))) + 2.0).collect();
        compare(&format!("gemm epilogue {e:?} {shape:?}"), &out, &twin, &scale, rel_tol(E::ELEM) * 2.0, 1e-5)?;

        // Unfused: plain GEMM, then the epilogue on the CPU, equals fused.
        let mut plain = vec![E::default(); m * n];
        cpu::matmul::gemm(&params(shape), &d.x, &d.w, &mut plain);
        let mut unfused = vec![0f32; m * n];
        let mut acc_only = vec![0f32; m * n];
        cpu::matmul::gemm_epilogue(&params(shape), &Epilogue::default(), &inputs, &f(&d.x), &f(&d.w), &mut acc_only);
        for j in 0..m * n {
            unfused[j] = milliwatt::cpu::epilogue::epilogue(e, &inputs, m, acc_only[j], j / m, j % m, j);
        }
        let unfused: Vec<E> = unfused.into_iter().map(E::from_f32).collect();
        compare(&format!("fused vs unfused {e:?}"), &out, &unfused, &scale, rel_tol(E::ELEM) * 2.0, 1e-5)?;
    }
    // A gated epilogue without the residual it gates is a typed error.
    let bad = Gemm::new(MatmulShape::new(4, 4, 4), Elem::F32)
        .with_epilogue(Epilogue { gate_rows: Some(2), ..Epilogue::default() });
    match bad.requirements(gpu.capabilities()) {
        Err(Error::Shape { .. }) => {}
        other => return Err(format!("gate without residual gave {other:?}").into()),
    }
    Ok(())
}

/// The GEMV with fused epilogues (the DiT's timestep MLP and adaLN linears run at N = batch).
fn gemv_epilogue_case(gpu: &Gpu) -> Outcome {
    use milliwatt::cpu::epilogue::{EpilogueInputs, epilogue};
    let epilogues = [
        Epilogue::bias_act(Activation::Silu),
        Epilogue::bias_act(Activation::GeluTanh),
        Epilogue { bias: true, residual: true, gate_rows: Some(2), ..Epilogue::default() },
    ];
    for (i, e) in epilogues.iter().enumerate() {
        let shape = MatmulShape::new(129, 3 + i as u32, 1001);
        let (m, n) = (shape.m as usize, shape.n as usize);
        let d = matmul_data::<f32>(shape, 1300 + i as u64);
        let mut rng = Rng::new(1400 + i as u64);
        let (bias, residual, gate): (Vec<f32>, Vec<f32>, Vec<f32>) =
            (rng.vec(m), rng.vec(m * n), rng.vec(n.div_ceil(2) * m));
        let t = EpilogueInputs { bias: &bias, residual: &residual, gate: &gate };
        let kernel = Gemv::new(shape, Elem::F32).with_epilogue(*e);
        let v = kernel.choose(gpu.capabilities());
        let mut plain = vec![0f32; m * n];
        cpu::matmul::gemv(&params(shape), v.wg as usize, v.vec4, &d.x, &d.w, &mut plain);
        let twin: Vec<f32> = (0..m * n).map(|j| epilogue(e, &t, m, plain[j], j / m, j % m, j)).collect();
        let x = gpu.upload("x", &d.x).map_err(gpu_err)?;
        let w = gpu.upload("w", &d.w).map_err(gpu_err)?;
        let y = gpu.upload("y", &vec![7f32; m * n]).map_err(gpu_err)?;
        let (bb, rb, gb) = (
            gpu.upload("bias", &bias).map_err(gpu_err)?,
            gpu.upload("residual", &residual).map_err(gpu_err)?,
            gpu.upload("gate", &gate).map_err(gpu_err)?,
        );
        let mut bufs: Vec<milliwatt::TensorRef<'_>> = vec![(&x).into(), (&w).into(), (&y).into()];
        if e.bias {
            bufs.push((&bb).into());
        }
        if e.residual {
            bufs.push((&rb).into());
        }
        if e.gate_rows.is_some() {
            bufs.push((&gb).into());
        }
        let p = kernel.prepare(gpu, &bufs).map_err(gpu_err)?;
        gpu.run(&[&p]).map_err(gpu_err)?;
        let out: Vec<f32> = gpu.read(&y).map_err(gpu_err)?;
        let scale: Vec<f32> = d.scale.iter().map(|s| s * 2.0 + 2.0).collect();
        compare(&format!("gemv epilogue {e:?}"), &out, &twin, &scale, 1e-5, 1e-5)?;
    }
    Ok(())
}
