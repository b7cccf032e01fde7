//! Graph host benchmark at a DiT-S-sized step graph (hidden 384, depth 12, 6 heads,
//! 256 tokens per image, 2 images): host time per dispatch (recording + submit) and its share of
//! the step time, GPU time per op kind from the profiler, peak activation memory with and without
//! the planner, dispatches with and without fusion, and the energy ledger against the same graph
//! dense in f32. Weights are left as the zeros wgpu initialises buffers with: the work, and so the
//! timing and the ledger, do not depend on their values.
//!
//! `cargo bench --bench graph [-- --quick] [--json PATH] [--trace PATH]`

use std::ops::ControlFlow;
use std::time::Instant;

use clap::Parser;
use milliwatt::graph::{DType, ExecOptions, Executor, Graph, Phase, TensorId};
use milliwatt::kernels::qmatmul::act_row_words;
use milliwatt::kernels::{
    Act, ActQuant, Attention, ClassEmbed, Elem, Elementwise, EltOp, Gemm, Gemv, MatmulKind, MatmulShape, Modulation,
    Norm, PatchGeometry, Patchify, QGemm, SamplerOp, SamplerStep, TimestepEmbed, Unpatchify,
};
use milliwatt::quant::Format;
use milliwatt::{Gpu, Result};

/// How the block linears run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Linears {
    /// Dense f32 (the baseline).
    F32,
    /// Ternary weights, int8 activations (quantized in the norm or by `ActQuant`).
    Ternary,
}

struct Config {
    hidden: u32,
    depth: u32,
    heads: u32,
    images: u32,
    side: u32,
    patch: u32,
    channels: u32,
    steps: u32,
}

/// Builds the step graph of a DiT-like model: patch embedding, timestep and class conditioning,
/// `depth` adaLN-Zero blocks, final layer, unpatchify, and an Euler update. Written the way model
/// code writes it: the element-wise tails (bias, GELU, gate, residual) and int8 quantization as
/// separate ops, for the fusion pass to fold.
fn dit(c: &Config, linears: Linears) -> Result<(Graph, TensorId)> {
    let f = DType::F32;
    let e = Elem::F32;
    let d = c.hidden;
    let geo = PatchGeometry { images: c.images, channels: c.channels, height: c.side, width: c.side, patch: c.patch };
    let tokens = geo.tokens();
    let n = c.images * tokens;
    let pdim = c.patch * c.patch * c.channels;
    let mut g = Graph::new();
    let noise = g.input("noise", &[c.images, c.channels, c.side, c.side], f);
    let t_in = g.input("t", &[c.images], f);
    let labels = g.input("labels", &[c.images], DType::U32);
    let schedule = g.weight("schedule", &[c.steps, 4], f);
    let step = g.step_index();
    let x = g.activation("x", &[c.images, c.channels, c.side, c.side], f);
    let out = g.output("image", &[c.images, c.channels, c.side, c.side], f);
    g.set_phase(Phase::Setup);
    g.op("init", Elementwise::new(EltOp::Scale { alpha: 1.0, beta: 0.0 }, n * pdim, e), &[noise, x])?;
    g.set_phase(Phase::Step);

    let act = |g: &mut Graph, name: &str, shape: &[u32]| g.activation(name, shape, f);
    let w = |g: &mut Graph, name: &str, shape: &[u32]| g.weight(name, shape, f);
    // y = x W^T + b as model code writes it: a matmul, then a bias add.
    let linear = |g: &mut Graph, name: &str, x: TensorId, rows: u32, m: u32, k: u32, y: TensorId| -> Result<()> {
        let wt = w(g, &format!("{name}.weight"), &[m, k]);
        let b = w(g, &format!("{name}.bias"), &[m]);
        let y0 = g.activation(format!("{name}.mm"), &[rows, m], f);
        match MatmulKind::of(rows, None) {
            MatmulKind::Gemv => g.op(name, Gemv::new(MatmulShape::new(m, rows, k), e), &[x, wt, y0])?,
            MatmulKind::Gemm => g.op(name, Gemm::new(MatmulShape::new(m, rows, k), e), &[x, wt, y0])?,
        };
        let bias =
            Elementwise::new(EltOp::Add, rows * m, e).with_broadcast(milliwatt::kernels::Broadcast::row(m, rows));
        g.op(format!("{name}.bias"), bias, &[y0, b, y])
    };
    // The block linears: dense, or ternary over int8 activations (`xq`, `xs` from a norm or
    // `ActQuant`).
    let block_linear = |g: &mut Graph, name: &str, x: TensorId, m: u32, k: u32, y: TensorId| -> Result<()> {
        match linears {
            Linears::F32 => linear(g, name, x, n, m, k, y),
            Linears::Ternary => {
                let xq = g.activation(format!("{name}.xq"), &[n, act_row_words(k)], DType::U32);
                let xs = g.activation(format!("{name}.xs"), &[n], f);
                g.op(format!("{name}.quantize"), ActQuant { n, k, elem: e }, &[x, xq, xs])?;
                let wt = g.packed_weight(&format!("{name}.weight"), Format::Ternary2, m, k)?;
                let b = w(g, &format!("{name}.bias"), &[m]);
                let y0 = g.activation(format!("{name}.mm"), &[n, m], f);
                let mut bind = vec![xq, xs];
                bind.extend(wt.streams());
                bind.push(y0);
                g.op(name, QGemm::new(MatmulShape::new(m, n, k), Format::Ternary2, Act::Int8 { out: e }), &bind)?;
                let bias =
                    Elementwise::new(EltOp::Add, n * m, e).with_broadcast(milliwatt::kernels::Broadcast::row(m, n));
                g.op(format!("{name}.bias"), bias, &[y0, b, y])
            }
        }
    };

    // Embeddings.
    let patches = act(&mut g, "patches", &[n, pdim]);
    g.op("patchify", Patchify { geometry: geo, elem: e }, &[x, patches])?;
    let h0 = act(&mut g, "h0", &[n, d]);
    linear(&mut g, "x_embedder", patches, n, d, pdim, h0)?;
    let pos = w(&mut g, "pos_embed", &[n, d]);
    let mut h = act(&mut g, "h", &[n, d]);
    g.op("pos_embed", Elementwise::new(EltOp::Add, n * d, e), &[h0, pos, h])?;
    let freqs = w(&mut g, "t_freqs", &[128]);
    let temb0 = act(&mut g, "t_freq", &[c.images, 256]);
    g.op(
        "t_embedder.freq",
        TimestepEmbed { images: c.images, dim: 256, max_period: 10000.0, time_scale: 1000.0, elem: e },
        &[t_in, freqs, temb0],
    )?;
    let temb1 = act(&mut g, "t_mlp0", &[c.images, d]);
    linear(&mut g, "t_embedder.mlp0", temb0, c.images, d, 256, temb1)?;
    let temb2 = act(&mut g, "t_mlp0.silu", &[c.images, d]);
    g.op("t_embedder.silu", Elementwise::new(EltOp::Silu, c.images * d, e), &[temb1, temb2])?;
    let temb = act(&mut g, "t_emb", &[c.images, d]);
    linear(&mut g, "t_embedder.mlp2", temb2, c.images, d, d, temb)?;
    let table = w(&mut g, "y_embedder.table", &[1001, d]);
    let yemb = act(&mut g, "y_emb", &[c.images, d]);
    g.op("y_embedder", ClassEmbed { images: c.images, dim: d, classes: 1000, elem: e }, &[labels, table, yemb])?;
    let cond = act(&mut g, "c", &[c.images, d]);
    g.op("c", Elementwise::new(EltOp::Add, c.images * d, e), &[temb, yemb, cond])?;
    let cs = act(&mut g, "c.silu", &[c.images, d]);
    g.op("c.silu", Elementwise::new(EltOp::Silu, c.images * d, e), &[cond, cs])?;

    let modulate = |shift: u32, scale: u32| Modulation {
        rows_per_image: tokens,
        stride: 4 * d,
        shift_offset: shift,
        scale_offset: scale,
    };
    for l in 0..c.depth {
        let p = format!("blocks.{l}");
        // adaLN: shift/scale of both norms in one projection, the two gates in their own.
        let m4 = act(&mut g, &format!("{p}.mod"), &[c.images, 4 * d]);
        linear(&mut g, &format!("{p}.adaLN.mod"), cs, c.images, 4 * d, d, m4)?;
        let gates: Vec<TensorId> = (0..2)
            .map(|i| {
                let gt = act(&mut g, &format!("{p}.gate{i}"), &[c.images, d]);
                linear(&mut g, &format!("{p}.adaLN.gate{i}"), cs, c.images, d, d, gt).map(|_| gt)
            })
            .collect::<Result<_>>()?;
        let sub = |g: &mut Graph,
                   name: &str,
                   h: TensorId,
                   shift: u32,
                   body: &dyn Fn(&mut Graph, TensorId, TensorId) -> Result<()>,
                   gate: TensorId|
         -> Result<TensorId> {
            let hn = g.activation(format!("{p}.{name}.norm"), &[n, d], f);
            g.op(
                format!("{p}.{name}.norm"),
                Norm { modulation: Some(modulate(shift, shift + d)), ..Norm::layer_norm(n, d, e) },
                &[h, m4, hn],
            )?;
            let y = g.activation(format!("{p}.{name}.out"), &[n, d], f);
            body(g, hn, y)?;
            let gated = g.activation(format!("{p}.{name}.gated"), &[n, d], f);
            let gate_op = Elementwise::new(EltOp::Mul, n * d, e)
                .with_broadcast(milliwatt::kernels::Broadcast { cols: d, group: tokens });
            g.op(format!("{p}.{name}.gate"), gate_op, &[y, gate, gated])?;
            let next = g.activation(format!("{p}.{name}.residual"), &[n, d], f);
            g.op(format!("{p}.{name}.residual"), Elementwise::new(EltOp::Add, n * d, e), &[h, gated, next])?;
            Ok(next)
        };
        let attn = |g: &mut Graph, hn: TensorId, y: TensorId| -> Result<()> {
            let qkv = g.activation(format!("{p}.qkv"), &[n, 3 * d], f);
            block_linear(g, &format!("{p}.attn.qkv"), hn, 3 * d, d, qkv)?;
            let a = g.activation(format!("{p}.attn"), &[n, d], f);
            g.op(format!("{p}.attn"), Attention::dense(c.images, tokens, c.heads, d / c.heads, e), &[qkv, a])?;
            block_linear(g, &format!("{p}.attn.proj"), a, d, d, y)
        };
        let mlp = |g: &mut Graph, hn: TensorId, y: TensorId| -> Result<()> {
            let f1 = g.activation(format!("{p}.fc1"), &[n, 4 * d], f);
            block_linear(g, &format!("{p}.mlp.fc1"), hn, 4 * d, d, f1)?;
            let f2 = g.activation(format!("{p}.gelu"), &[n, 4 * d], f);
            g.op(format!("{p}.mlp.gelu"), Elementwise::new(EltOp::GeluTanh, n * 4 * d, e), &[f1, f2])?;
            block_linear(g, &format!("{p}.mlp.fc2"), f2, d, 4 * d, y)
        };
        h = sub(&mut g, "msa", h, 0, &attn, gates[0])?;
        h = sub(&mut g, "mlp", h, 2 * d, &mlp, gates[1])?;
    }
    // Final layer: modulated norm, linear to patches, unpatchify, Euler update.
    let mf = act(&mut g, "final.mod", &[c.images, 4 * d]);
    linear(&mut g, "final.adaLN", cs, c.images, 4 * d, d, mf)?;
    let hn = act(&mut g, "final.norm", &[n, d]);
    g.op("final.norm", Norm { modulation: Some(modulate(0, d)), ..Norm::layer_norm(n, d, e) }, &[h, mf, hn])?;
    let po = act(&mut g, "final.out", &[n, pdim]);
    linear(&mut g, "final.linear", hn, n, pdim, d, po)?;
    let v = act(&mut g, "v", &[c.images, c.channels, c.side, c.side]);
    g.op("unpatchify", Unpatchify { geometry: geo, token_channels: c.channels, elem: e }, &[po, v])?;
    g.op(
        "euler",
        SamplerStep { op: SamplerOp::Euler, images: c.images, len: tokens * pdim, steps: c.steps },
        &[schedule, step, x, v],
    )?;
    g.set_phase(Phase::Finish);
    g.op("output", Elementwise::new(EltOp::Scale { alpha: 1.0, beta: 0.0 }, n * pdim, e), &[x, out])?;
    Ok((g, out))
}

/// Host cost of one step, seconds: recording its command buffer (median of 15), and submitting it
/// to an idle queue (median of 5; waiting for the device is not counted).
fn host_cost(gpu: &Gpu, ex: &Executor) -> Result<(f64, f64)> {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let encode = || {
        let mut enc = gpu.device().create_command_encoder(&Default::default());
        ex.encode_step(&mut enc);
        enc.finish()
    };
    let mut record = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        drop(encode());
        record.push(t.elapsed().as_secs_f64());
    }
    let mut submit = Vec::new();
    for s in 0..5 {
        let cb = encode();
        gpu.wait()?;
        let t = Instant::now();
        ex.set_step(s % 2)?;
        gpu.queue().submit([cb]);
        submit.push(t.elapsed().as_secs_f64());
    }
    gpu.wait()?;
    Ok((median(record), median(submit)))
}

#[derive(serde::Serialize)]
struct Row {
    linears: String,
    fused: bool,
    dispatches_per_step: usize,
    host_us_per_dispatch: f64,
    record_us_per_dispatch: f64,
    submit_us_per_step: f64,
    host_fraction_of_step: f64,
    step_s: f64,
    activation_bytes_reuse: u64,
    activation_bytes_no_reuse: u64,
    total_bytes_reuse: u64,
    total_bytes_no_reuse: u64,
    ledger_j_per_step: f64,
    ledger_ratio_to_dense_f32: f64,
}

mod common;

/// The benchmark's command line.
#[derive(clap::Parser, Debug)]
struct Cli {
    #[command(flatten)]
    flags: common::BenchFlags,
    /// Where the Chrome trace of one profiled step goes.
    #[arg(long, default_value = "target/bench/graph-trace.json")]
    trace: String,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let quick = cli.flags.quick;
    let json = cli.flags.json("graph");
    let trace = cli.trace;
    let gpu = common::gpu()?;
    let steps = if quick { 2 } else { 4 };
    let cfg = Config { hidden: 384, depth: 12, heads: 6, images: 2, side: 32, patch: 2, channels: 4, steps };
    let caps = gpu.capabilities().clone();
    let (dense_graph, _) = dit(&cfg, Linears::F32)?;
    let baseline = milliwatt::graph::fuse(&dense_graph)?.0.ledger(&caps, 1)?;
    let mut rows = Vec::new();
    println!(
        "\nDiT-S-sized step graph ({} blocks, hidden {}, {} tokens x {} images), {steps} steps per run:",
        cfg.depth,
        cfg.hidden,
        (cfg.side / cfg.patch).pow(2),
        cfg.images
    );
    println!(
        "{:<8} {:>6} {:>11} {:>10} {:>10} {:>10} {:>9} {:>13} {:>13} {:>10} {:>8}",
        "linears",
        "fused",
        "dispatches",
        "record µs/d",
        "submit µs",
        "host/step",
        "step s",
        "act MB reuse",
        "act MB none",
        "ledger J",
        "vs f32"
    );
    for linears in [Linears::F32, Linears::Ternary] {
        let (graph, _) = dit(&cfg, linears)?;
        for fuse in [false, true] {
            if quick && !fuse && linears == Linears::Ternary {
                continue;
            }
            let ex = Executor::new(&gpu, &graph, ExecOptions { fuse, ..ExecOptions::default() })?;
            let no_reuse = Executor::new(&gpu, &graph, ExecOptions { fuse, reuse: false, ..ExecOptions::default() })?;
            // Warm up (first-use costs of the driver), then measure.
            ex.run(1, |_| ControlFlow::Continue(()))?;
            let r = ex.run(steps, |_| ControlFlow::Continue(()))?;
            let (record, submit) = host_cost(&gpu, &ex)?;
            let host = record + submit;
            let step_s = r.wall.as_secs_f64() / f64::from(steps);
            let per_step = ex.graph().ledger(&caps, 1)?;
            let row = Row {
                linears: format!("{linears:?}"),
                fused: fuse,
                dispatches_per_step: ex.dispatches_per_step(),
                host_us_per_dispatch: host * 1e6 / ex.dispatches_per_step() as f64,
                record_us_per_dispatch: record * 1e6 / ex.dispatches_per_step() as f64,
                submit_us_per_step: submit * 1e6,
                host_fraction_of_step: host / step_s,
                step_s,
                activation_bytes_reuse: ex.memory().activation_bytes,
                activation_bytes_no_reuse: no_reuse.memory().activation_bytes,
                total_bytes_reuse: ex.memory().bytes,
                total_bytes_no_reuse: no_reuse.memory().bytes,
                ledger_j_per_step: per_step.energy().total(),
                ledger_ratio_to_dense_f32: per_step.ratio_to(&baseline),
            };
            println!(
                "{:<8} {:>6} {:>11} {:>10.2} {:>10.0} {:>9.3}% {:>9.3} {:>13.1} {:>13.1} {:>10.4} {:>8.3}",
                row.linears,
                row.fused,
                row.dispatches_per_step,
                row.record_us_per_dispatch,
                row.submit_us_per_step,
                100.0 * row.host_fraction_of_step,
                row.step_s,
                row.activation_bytes_reuse as f64 / 1e6,
                row.activation_bytes_no_reuse as f64 / 1e6,
                row.ledger_j_per_step,
                row.ledger_ratio_to_dense_f32
            );
            rows.push(row);
        }
    }
    // One profiled run of the fused ternary graph: where the GPU time goes.
    let (graph, _) = dit(&cfg, Linears::Ternary)?;
    let ex = Executor::new(&gpu, &graph, ExecOptions { profile: true, ..ExecOptions::default() })?;
    let r = ex.run(if quick { 1 } else { 2 }, |_| ControlFlow::Continue(()))?;
    if let Some(p) = &r.profile {
        println!("\nGPU profile, fused ternary graph (one pass per dispatch):\n{}", p.table());
        if let Some(dir) = std::path::Path::new(&trace).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        p.write_chrome_trace(std::path::Path::new(&trace))?;
        println!("chrome trace: {trace}");
    }
    println!("\nledger of one step, fused ternary graph:\n{}", ex.graph().ledger(&caps, 1)?);
    // With `--features nvml` on an NVIDIA board: the measured board energy beside the estimate.
    #[cfg(feature = "nvml")]
    match milliwatt::nvml::EnergyCounter::open(0) {
        Ok(meter) => {
            let ex = Executor::new(&gpu, &graph, ExecOptions::default())?;
            let r = ex.run_measured(steps, &meter, |_| ControlFlow::Continue(()))?;
            println!("\nmeasured run of {steps} steps, fused ternary graph:\n{}", r.ledger);
        }
        Err(e) => println!("\nno measured cross-check: {e}"),
    }
    milliwatt::bench::write_json(&json, &serde_json::json!({ "device": gpu.describe(), "rows": rows }))?;
    println!("json: {json}");
    milliwatt::bench::check_variants(&gpu)?;
    Ok(())
}
