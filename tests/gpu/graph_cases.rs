//! The graph host: planner reuse, fusion, the executor's buffers and objects, the step loop
//! (step counter, preview, completion, cancellation), the profiler, weight splits and the ledger.

use std::ops::ControlFlow;

use milliwatt::cpu;
use milliwatt::graph::{DType, ExecOptions, Executor, Graph, PackedWeight, Phase, TensorId};
use milliwatt::kernels::{
    Act, ActQuant, Attention, Broadcast, Elem, Elementwise, EltOp, Gemm, Gemv, MatmulShape, Norm, QGemm, SamplerOp,
    SamplerStep, rectified_flow_schedule,
};
use milliwatt::quant::{Format, Packed, Quantized, ScaleMode, quantize};
use milliwatt::{Error, Gpu};

use crate::util::{Rng, compare, err};
use crate::{Backend, Case, Failure, Outcome};

pub fn all() -> Vec<(&'static str, Case)> {
    vec![
        ("graph_block_reuse_fusion_reference", |b| block_case(&b.gpu)),
        ("graph_second_run_creates_no_objects", |b| second_run_case(&b.gpu)),
        ("graph_step_loop_preview_cancel", |b| step_loop_case(&b.gpu)),
        ("graph_profiler_covers_every_dispatch", |b| profiler_case(&b.gpu)),
        ("graph_weight_split_and_limits", |b| split_case(b)),
    ]
}

const T: u32 = 29; // tokens (odd: no tile divides it)
const D: u32 = 48; // features
const HEADS: u32 = 2;

/// Tensors and data of the test block.
struct Block {
    graph: Graph,
    out: TensorId,
    floats: Vec<(TensorId, Vec<f32>)>,
    w1: PackedWeight,
    w1_packed: Packed,
    w1_q: Quantized,
}

/// A DiT-like block described op by op, as model code would write it without knowing about
/// fusion: LN -> qkv (+bias) -> attention -> proj (+bias, *gate, +x) -> LN -> int8 quantization
/// -> ternary fc1 (+bias, GELU) -> fc2 (+bias, +residual). With `ternary: false` fc1 is a dense
/// f32 GEMM over the dequantized weights (the ledger baseline).
fn block(ternary: bool) -> Result<Block, String> {
    let (t, d) = (T, D);
    let mut rng = Rng::new(4242);
    let mut g = Graph::new();
    let f = DType::F32;
    let x = g.input("x", &[t, d], f);
    let gate = g.input("gate", &[1, d], f);
    let mut floats: Vec<(TensorId, Vec<f32>)> = Vec::new();
    let mut weight = |g: &mut Graph, name: &str, shape: &[u32], scale: f32| {
        let id = g.weight(name, shape, f);
        let n: u32 = shape.iter().product();
        floats.push((id, (0..n).map(|_| rng.f32() * scale).collect()));
        id
    };
    let wqkv = weight(&mut g, "wqkv", &[3 * d, d], 0.2);
    let bqkv = weight(&mut g, "bqkv", &[3 * d], 0.1);
    let wo = weight(&mut g, "wo", &[d, d], 0.2);
    let bo = weight(&mut g, "bo", &[d], 0.1);
    let b1 = weight(&mut g, "b1", &[4 * d], 0.1);
    let w2 = weight(&mut g, "w2", &[d, 4 * d], 0.1);
    let b2 = weight(&mut g, "b2", &[d], 0.1);
    let w1f: Vec<f32> = (0..4 * d * d).map(|_| rng.f32() * 0.3).collect();
    let w1_q = quantize(&w1f, 4 * d, d, Format::Ternary2, ScaleMode::PerRow).map_err(err)?;
    let w1_packed = w1_q.pack().map_err(err)?;
    let w1 = g.packed_weight("w1", Format::Ternary2, 4 * d, d).map_err(err)?;
    let w1_dense = g.weight("w1_dense", &[4 * d, d], f);
    floats.push((x, (0..t * d).map(|_| rng.f32()).collect()));
    floats.push((gate, (0..d).map(|_| rng.f32()).collect()));
    floats.push((w1_dense, w1_q.dequantize().map_err(err)?));

    let a = |g: &mut Graph, name: &str, shape: &[u32]| g.activation(name, shape, f);
    let h = a(&mut g, "h", &[t, d]);
    let q0 = a(&mut g, "q0", &[t, 3 * d]);
    let qkv = a(&mut g, "qkv", &[t, 3 * d]);
    let att = a(&mut g, "att", &[t, d]);
    let p0 = a(&mut g, "p0", &[t, d]);
    let p1 = a(&mut g, "p1", &[t, d]);
    let p2 = a(&mut g, "p2", &[t, d]);
    let x1 = a(&mut g, "x1", &[t, d]);
    let h2 = a(&mut g, "h2", &[t, d]);
    let h2q = g.activation("h2q", &[t, milliwatt::kernels::qmatmul::act_row_words(d)], DType::U32);
    let h2s = g.activation("h2s", &[t], f);
    let f0 = a(&mut g, "f0", &[t, 4 * d]);
    let f1 = a(&mut g, "f1", &[t, 4 * d]);
    let f2 = a(&mut g, "f2", &[t, 4 * d]);
    let o0 = a(&mut g, "o0", &[t, d]);
    let o1 = a(&mut g, "o1", &[t, d]);
    let out = g.output("out", &[t, d], f);

    let e = Elem::F32;
    let mm = |m: u32, k: u32| Gemm::new(MatmulShape::new(m, t, k), e);
    let bias = |m: u32| Elementwise::new(EltOp::Add, t * m, e).with_broadcast(Broadcast::row(m, t));
    let r = (|| -> milliwatt::Result<()> {
        g.op("norm1", Norm::layer_norm(t, d, e), &[x, h])?;
        g.op("qkv", mm(3 * d, d), &[h, wqkv, q0])?;
        g.op("qkv.bias", bias(3 * d), &[q0, bqkv, qkv])?;
        g.op("attention", Attention::dense(1, t, HEADS, d / HEADS, e), &[qkv, att])?;
        g.op("proj", mm(d, d), &[att, wo, p0])?;
        g.op("proj.bias", bias(d), &[p0, bo, p1])?;
        g.op(
            "proj.gate",
            Elementwise::new(EltOp::Mul, t * d, e).with_broadcast(Broadcast { cols: d, group: t }),
            &[p1, gate, p2],
        )?;
        g.op("proj.residual", Elementwise::new(EltOp::Add, t * d, e), &[x, p2, x1])?;
        g.op("norm2", Norm::layer_norm(t, d, e), &[x1, h2])?;
        if ternary {
            g.op("quantize", ActQuant { n: t, k: d, elem: e }, &[h2, h2q, h2s])?;
            let mut b = vec![h2q, h2s];
            b.extend(w1.streams());
            b.push(f0);
            g.op("fc1", QGemm::new(MatmulShape::new(4 * d, t, d), Format::Ternary2, Act::Int8 { out: e }), &b)?;
        } else {
            g.op("fc1", mm(4 * d, d), &[h2, w1_dense, f0])?;
        }
        g.op("fc1.bias", bias(4 * d), &[f0, b1, f1])?;
        g.op("fc1.gelu", Elementwise::new(EltOp::GeluTanh, t * 4 * d, e), &[f1, f2])?;
        g.op("fc2", mm(d, 4 * d), &[f2, w2, o0])?;
        g.op("fc2.bias", bias(d), &[o0, b2, o1])?;
        g.op("fc2.residual", Elementwise::new(EltOp::Add, t * d, e), &[o1, x1, out])?;
        Ok(())
    })();
    r.map_err(err)?;
    Ok(Block { graph: g, out, floats, w1, w1_packed, w1_q })
}

fn load(ex: &Executor, b: &Block) -> Result<(), String> {
    for (t, v) in &b.floats {
        ex.write(*t, v).map_err(err)?;
    }
    ex.write_packed(&b.w1, &b.w1_packed).map_err(err)
}

fn run_once(ex: &Executor, b: &Block) -> Result<Vec<f32>, String> {
    ex.run(1, |_| ControlFlow::Continue(())).map_err(err)?;
    ex.read::<f32>(b.out).map_err(err)
}

/// The block on the CPU from the twins' definitions (LayerNorm, attention in f64, int8
/// activations times dequantized ternary weights).
fn reference(b: &Block) -> Vec<f32> {
    let (t, d) = (T as usize, D as usize);
    let get = |name: &str| -> Vec<f32> {
        let id = b.graph.find(name).unwrap();
        b.floats.iter().find(|(i, _)| *i == id).unwrap().1.clone()
    };
    let ln = |x: &[f32]| -> Vec<f32> {
        let mut y = vec![0.0; x.len()];
        for r in 0..t {
            let row = &x[r * d..(r + 1) * d];
            let mean = row.iter().sum::<f32>() / d as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
            for j in 0..d {
                y[r * d + j] = (row[j] - mean) / (var + 1e-6).sqrt();
            }
        }
        y
    };
    let lin = |x: &[f32], w: &[f32], bias: &[f32], m: usize, k: usize| -> Vec<f32> {
        let mut y = cpu::matmul::reference(m, t, k, x, w);
        for (i, v) in y.iter_mut().enumerate() {
            *v += bias[i % m];
        }
        y
    };
    let x = get("x");
    let h = ln(&x);
    let qkv = lin(&h, &get("wqkv"), &get("bqkv"), 3 * d, d);
    let mut att = vec![0.0; t * d];
    cpu::attention::attention(1, t, HEADS as usize, d / HEADS as usize, &qkv, None, &mut att);
    let p = lin(&att, &get("wo"), &get("bo"), d, d);
    let gate = get("gate");
    let x1: Vec<f32> = (0..t * d).map(|i| x[i] + gate[i % d] * p[i]).collect();
    let h2 = ln(&x1);
    let words = milliwatt::kernels::qmatmul::act_row_words(D) as usize;
    let (mut xq, mut xs) = (vec![0u32; t * words], vec![0f32; t]);
    cpu::qmatmul::quantize_act::<f32>(t, d, words, &h2, &mut xq, &mut xs);
    let h2_deq: Vec<f32> = (0..t * d)
        .map(|i| f32::from(xq[(i / d) * words + (i % d) / 4].to_le_bytes()[i % 4] as i8) * xs[i / d])
        .collect();
    let f = lin(&h2_deq, &b.w1_q.dequantize().unwrap(), &get("b1"), 4 * d, d);
    let f: Vec<f32> = f.into_iter().map(cpu::epilogue::gelu_tanh).collect();
    let o = lin(&f, &get("w2"), &get("b2"), d, 4 * d);
    (0..t * d).map(|i| o[i] + x1[i]).collect()
}

fn block_case(gpu: &Gpu) -> Outcome {
    let b = block(true)?;
    let mut outs = Vec::new();
    let mut executors = Vec::new();
    for (reuse, fuse) in [(false, false), (true, false), (true, true)] {
        let ex = Executor::new(gpu, &b.graph, ExecOptions { reuse, fuse, ..ExecOptions::default() }).map_err(err)?;
        load(&ex, &b)?;
        outs.push(run_once(&ex, &b)?);
        // The executor's real buffers are the plan's.
        let (m, p) = (ex.memory(), ex.plan());
        if m.buffers != p.buffers() || m.bytes != p.bytes() {
            return Err(format!(
                "reuse {reuse} fuse {fuse}: executor holds {m:?}, plan says {} buffers {} bytes",
                p.buffers(),
                p.bytes()
            )
            .into());
        }
        executors.push(ex);
    }
    // Reuse changes where tensors live, not what is computed: bit-identical.
    if outs[0] != outs[1] {
        return Err("output with the planner's reuse differs from output without it".into());
    }
    let (no_reuse, reuse) = (executors[0].memory(), executors[1].memory());
    if reuse.activation_bytes >= no_reuse.activation_bytes || reuse.buffers >= no_reuse.buffers {
        return Err(format!("reuse did not save memory: {reuse:?} vs {no_reuse:?}").into());
    }
    // Fusion: same values (int8 quantization inside the norm may move a rounding), fewer dispatches.
    let scale = vec![1.0; outs[1].len()];
    compare("fused vs unfused", &outs[2], &outs[1], &scale, 2e-3, 1e-5)?;
    let (unfused, fused) = (executors[1].dispatches_per_step(), executors[2].dispatches_per_step());
    let report = executors[2].fusion();
    if fused != 7 || unfused != 16 || report.folds.len() != 5 {
        return Err(format!("fusion: {unfused} -> {fused} dispatches, folds {:#?}", report.folds).into());
    }
    // Against the CPU definition.
    compare("block vs CPU reference", &outs[1], &reference(&b), &scale, 5e-3, 1e-4)?;
    // Ledger: counted from the dispatches made, equal to the graph's own estimate, and below
    // the same block with a dense f32 fc1.
    let run = executors[2].run(2, |_| ControlFlow::Continue(())).map_err(err)?;
    let estimate = executors[2].graph().ledger(gpu.capabilities(), 2).map_err(err)?;
    if run.ledger.work() != estimate.work() {
        return Err(
            format!("ledger from dispatches {:?} != graph estimate {:?}", run.ledger.work(), estimate.work()).into()
        );
    }
    let dense =
        milliwatt::graph::fuse(&block(false)?.graph).map_err(err)?.0.ledger(gpu.capabilities(), 2).map_err(err)?;
    let ratio = run.ledger.ratio_to(&dense);
    if !(ratio > 0.0 && ratio < 1.0) {
        return Err(format!("ternary block energy ratio to dense {ratio}").into());
    }
    Ok(())
}

fn counts(gpu: &Gpu) -> (milliwatt::ObjectCounts, [i64; 3]) {
    let hal = gpu.device().get_internal_counters().hal;
    (
        gpu.object_counts(),
        [hal.buffers.read() as i64, hal.bind_groups.read() as i64, hal.compute_pipelines.read() as i64],
    )
}

fn second_run_case(gpu: &Gpu) -> Outcome {
    let b = block(true)?;
    let opts = ExecOptions { preview: Some(b.out), ..ExecOptions::default() };
    let ex = Executor::new(gpu, &b.graph, opts).map_err(err)?;
    load(&ex, &b)?;
    ex.run(2, |_| ControlFlow::Continue(())).map_err(err)?;
    gpu.wait().map_err(err)?;
    let before = counts(gpu);
    let report = ex.run(3, |_| ControlFlow::Continue(())).map_err(err)?;
    gpu.wait().map_err(err)?;
    let after = counts(gpu);
    if before != after {
        return Err(format!("second run created objects: before {before:?}, after {after:?}").into());
    }
    if report.dispatches != 3 * ex.dispatches_per_step() as u64 {
        return Err(format!("{} dispatches for 3 steps of {}", report.dispatches, ex.dispatches_per_step()).into());
    }
    Ok(())
}

/// Setup (x = noise), steps (v = 0.5 x; Euler x += (t_next - t) v with t from the schedule at the
/// step counter), finish (out = 2 x).
fn loop_graph(len: u32, steps: u32) -> Result<(Graph, [TensorId; 4]), String> {
    let mut g = Graph::new();
    let f = DType::F32;
    let e = Elem::F32;
    let noise = g.input("noise", &[len], f);
    let schedule = g.weight("schedule", &[steps, 4], f);
    let step = g.step_index();
    let x = g.activation("x", &[len], f);
    let v = g.activation("v", &[len], f);
    let out = g.output("out", &[len], f);
    (|| -> milliwatt::Result<()> {
        g.set_phase(Phase::Setup);
        g.op("init", Elementwise::new(EltOp::Scale { alpha: 1.0, beta: 0.0 }, len, e), &[noise, x])?;
        g.set_phase(Phase::Step);
        g.op("model", Elementwise::new(EltOp::Scale { alpha: 0.5, beta: 0.0 }, len, e), &[x, v])?;
        g.op("euler", SamplerStep { op: SamplerOp::Euler, images: 1, len, steps }, &[schedule, step, x, v])?;
        g.set_phase(Phase::Finish);
        g.op("final", Elementwise::new(EltOp::Scale { alpha: 2.0, beta: 0.0 }, len, e), &[x, out])
    })()
    .map_err(err)?;
    Ok((g, [noise, schedule, x, out]))
}

fn step_loop_case(gpu: &Gpu) -> Outcome {
    let (len, steps) = (1000u32, 5u32);
    let (g, [noise, schedule, x, out]) = loop_graph(len, steps)?;
    let ex = Executor::new(gpu, &g, ExecOptions { preview: Some(x), ..ExecOptions::default() }).map_err(err)?;
    let sched = rectified_flow_schedule(steps, 1.0);
    let n: Vec<f32> = Rng::new(9).vec(len as usize);
    ex.write(noise, &n).map_err(err)?;
    ex.write(schedule, bytemuck::cast_slice::<_, f32>(&sched)).map_err(err)?;
    // CPU: x_{s+1} = x_s + (t_next - t) * 0.5 * x_s.
    let mut want = vec![n.clone()];
    for s in &sched {
        let prev = want.last().unwrap();
        want.push(prev.iter().map(|&v| v + (s.t_next - s.t) * (0.5 * v)).collect());
    }
    let mut seen = Vec::new();
    ex.run(steps, |ev| {
        seen.push((ev.step, ev.preview.clone()));
        ControlFlow::Continue(())
    })
    .map_err(err)?;
    if seen.iter().map(|s| s.0).collect::<Vec<_>>() != (0..steps).collect::<Vec<_>>() {
        return Err(format!("steps seen {:?}", seen.iter().map(|s| s.0).collect::<Vec<_>>()).into());
    }
    let ones = vec![1.0; len as usize];
    for (s, p) in &seen {
        let p = p.as_ref().ok_or("no preview")?;
        compare(&format!("preview after step {s}"), p, &want[*s as usize + 1], &ones, 1e-6, 1e-7)?;
    }
    let final_want: Vec<f32> = want[steps as usize].iter().map(|v| 2.0 * v).collect();
    compare("finish", &ex.read::<f32>(out).map_err(err)?, &final_want, &ones, 1e-6, 1e-7)?;
    // Cancellation after step 1: a typed error once the step queued behind it is done.
    match ex.run(steps, |ev| if ev.step == 1 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }) {
        Err(Error::Cancelled { completed, total }) if (2..=3).contains(&completed) && total == steps => {}
        other => return Err(format!("cancel after step 1 gave {:?}", other.map(|r| r.steps)).into()),
    }
    // A wrongly sized write is a typed error naming the tensor.
    match ex.write(noise, &n[..10]) {
        Err(e @ Error::Graph { .. }) if e.to_string().contains("noise") => {}
        other => return Err(format!("short write gave {other:?}").into()),
    }
    Ok(())
}

fn profiler_case(gpu: &Gpu) -> Outcome {
    let b = block(true)?;
    let ex = Executor::new(gpu, &b.graph, ExecOptions { profile: true, ..ExecOptions::default() }).map_err(err)?;
    load(&ex, &b)?;
    let steps = 3;
    let report = ex.run(steps, |_| ControlFlow::Continue(())).map_err(err)?;
    let profile = report.profile.ok_or("no profile")?;
    if profile.scoped != report.dispatches || report.dispatches != u64::from(steps) * ex.dispatches_per_step() as u64 {
        return Err(format!("{} scopes for {} dispatches", profile.scoped, report.dispatches).into());
    }
    if !gpu.capabilities().timestamps {
        return Err(Failure::Unsupported("no TIMESTAMP_QUERY: scopes counted, not timed".into()));
    }
    if profile.untimed != 0 || profile.dispatches.len() as u64 != report.dispatches {
        return Err(format!("{} untimed of {}", profile.untimed, profile.scoped).into());
    }
    // Every op kind appears with its dispatch count times the steps.
    for op in ex.graph().ops() {
        let want = ex.graph().ops().iter().filter(|o| o.kind() == op.kind()).count() as u64 * u64::from(steps);
        let got = profile.by_kind().iter().find(|k| k.kind == op.kind()).map_or(0, |k| k.count);
        if got != want {
            return Err(format!("{}: {got} timed dispatches, expected {want}", op.kind()).into());
        }
    }
    if profile.by_step().len() != steps as usize
        || profile.dispatches.iter().any(|d| d.end.partial_cmp(&d.start).is_none_or(|o| o.is_lt()))
    {
        return Err(format!("per-step profile {:?}", profile.by_step()).into());
    }
    let trace: serde_json::Value = serde_json::from_str(&profile.chrome_trace()).map_err(|e| e.to_string())?;
    if trace["traceEvents"].as_array().map(Vec::len) != Some(profile.dispatches.len()) {
        return Err("chrome trace does not hold one event per dispatch".into());
    }
    Ok(())
}

/// A weight past the storage-binding limit runs through the kernels' split; an activation past
/// it is a typed error.
fn split_case(b: &Backend) -> Outcome {
    let (m, k, n) = (301u32, 97u32, 3u32);
    let mut g = Graph::new();
    let f = DType::F32;
    let x = g.input("x", &[n, k], f);
    let w = g.weight("w", &[m, k], f);
    let y = g.output("y", &[n, m], f);
    g.op("gemv", Gemv::new(MatmulShape::new(m, n, k), Elem::F32), &[x, w, y]).map_err(err)?;
    let mut rng = Rng::new(77);
    let (xv, wv): (Vec<f32>, Vec<f32>) = (rng.vec((n * k) as usize), rng.vec((m * k) as usize));
    let mut results = Vec::new();
    for gpu in [&b.gpu, &b.small_bindings] {
        let ex = Executor::new(gpu, &g, ExecOptions::default()).map_err(err)?;
        ex.write(x, &xv).map_err(err)?;
        ex.write(w, &wv).map_err(err)?;
        ex.run(1, |_| ControlFlow::Continue(())).map_err(err)?;
        results.push((ex.read::<f32>(y).map_err(err)?, ex.dispatches_per_step()));
    }
    if u64::from(m * k * 4) <= b.small_bindings.capabilities().max_storage_binding || results[1].1 < 2 {
        return Err(format!("weight of {} bytes was not split ({} dispatches)", m * k * 4, results[1].1).into());
    }
    let want = cpu::matmul::reference(m as usize, n as usize, k as usize, &xv, &wv);
    let scale: Vec<f32> = vec![k as f32; want.len()];
    compare("split gemv", &results[1].0, &want, &scale, 1e-6, 0.0)?;
    compare("unsplit gemv", &results[0].0, &want, &scale, 1e-6, 0.0)?;
    // An activation over the limit.
    let mut g = Graph::new();
    let big = 20_000u32;
    let a = g.input("a", &[big], f);
    let h = g.activation("h", &[big], f);
    let o = g.output("o", &[big], f);
    g.op("s1", Elementwise::new(EltOp::Silu, big, Elem::F32), &[a, h]).map_err(err)?;
    g.op("s2", Elementwise::new(EltOp::Silu, big, Elem::F32), &[h, o]).map_err(err)?;
    match Executor::new(&b.small_bindings, &g, ExecOptions::default()) {
        Err(e @ Error::Graph { .. }) if e.to_string().contains("storage-binding") => Ok(()),
        other => Err(format!("activation over the binding limit gave {:?}", other.map(|_| ())).into()),
    }
}
