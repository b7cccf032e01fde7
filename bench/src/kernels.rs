//! The kernel suite: the dense baselines and the low-bit kernels against the copy and FMA probes
//! measured in the same run.
//!
//! Every figure is a median of repeats after warm-up, timed with GPU timestamps where the adapter
//! has them. Traffic is the bytes a kernel must move at least once (weights, activations, outputs)
//! divided by its time; the roofline fraction divides that by the copy traffic (2 x bytes / time of
//! a buffer-to-buffer copy) of this run; the FMA fraction divides GFLOP/s by the FMA probe's.

use milliwatt::bench::{Measurement, Repeats, time_copy, time_kernels};
use milliwatt::kernels::qmatmul::act_row_words;
use milliwatt::kernels::{
    Act, ActQuant, Elem, Elementwise, EltOp, Epilogue, FmaProbe, Gemm, Gemv, GemvReduce, GemvVariant, MatmulNaive,
    MatmulShape, Modulation, Norm, QGemm, QGemv,
};
use milliwatt::quant::{Format, ScaleMode, quantize};
use milliwatt::{Gpu, Kernel, Prepared, Result};

/// One timed kernel.
#[derive(serde::Serialize, Debug)]
pub struct Record {
    kernel: String,
    variant: String,
    shape: String,
    elem: String,
    seconds: f64,
    gbps: f64,
    gflops: f64,
    roofline_fraction: f64,
    fma_fraction: f64,
    clock: milliwatt::bench::Clock,
}

/// The suite's results on one adapter.
#[derive(serde::Serialize, Debug)]
pub struct KernelSuite {
    /// The memory roof: the faster of the two copy probes.
    copy_gbps: f64,
    /// Buffer-to-buffer copy (the copy command).
    copy_engine_gbps: f64,
    /// The same copy by a compute shader.
    copy_shader_gbps: f64,
    fma_gflops_f32: f64,
    fma_gflops_f16: Option<f64>,
    records: Vec<Record>,
    /// The low-bit kernels against the dense ones of this run, as printed.
    speedups: Vec<String>,
    /// The DiT MLP linear's ledger, W1.58A8 / dense f32 (laptop L2).
    ledger_ratio_w158a8: Option<f64>,
}

struct Bench<'a> {
    gpu: &'a Gpu,
    repeats: Repeats,
    copy_gbps: f64,
    fma_gflops: f64,
    filter: Option<String>,
    records: Vec<Record>,
}

impl Bench<'_> {
    fn wanted(&self, name: &str) -> bool {
        self.filter.as_ref().is_none_or(|f| name.contains(f.as_str()))
    }

    /// Times one prepared kernel and prints a table row.
    fn row(
        &mut self,
        name: &str,
        shape: &str,
        elem: Elem,
        prepared: &Prepared,
        min_bytes: u64,
        flops: u64,
    ) -> Result<f64> {
        let m: Measurement = time_kernels(self.gpu, &[prepared], self.repeats)?;
        let t = m.median();
        let gbps = min_bytes as f64 / t / 1e9;
        let gflops = flops as f64 / t / 1e9;
        let rec = Record {
            kernel: name.into(),
            variant: prepared.label().into(),
            shape: shape.into(),
            elem: format!("{elem:?}"),
            seconds: t,
            gbps,
            gflops,
            roofline_fraction: gbps / self.copy_gbps,
            fma_fraction: gflops / self.fma_gflops,
            clock: m.clock,
        };
        println!(
            "{:<22} {:<18} {:<4} {:>10.3} ms {:>8.2} GB/s {:>9.2} GFLOP/s  roof {:>5.2}  fma {:>5.3}  {}",
            rec.kernel,
            rec.shape,
            rec.elem,
            t * 1e3,
            gbps,
            gflops,
            rec.roofline_fraction,
            rec.fma_fraction,
            rec.variant
        );
        self.records.push(rec);
        Ok(t)
    }

    fn matmul(&mut self, name: &str, kernel: &dyn Kernel, shape: MatmulShape, elem: Elem) -> Result<Option<f64>> {
        if !self.wanted(name) || kernel.requirements(self.gpu.capabilities()).is_err() {
            return Ok(None);
        }
        let (m, n, k) = (shape.m as usize, shape.n as usize, shape.k as usize);
        let eb = elem.size();
        let fill = |len: usize, name: &str| -> Result<wgpu::Buffer> {
            let b = self.gpu.buffer(
                name,
                (len as u64 * eb).next_multiple_of(4),
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            )?;
            // Small non-zero values: realistic for timing, no denormal slow paths.
            let data: Vec<u8> = match elem {
                Elem::F32 => bytemuck::cast_slice(&vec![0.01f32; len]).to_vec(),
                Elem::F16 => bytemuck::cast_slice(&vec![half::f16::from_f32(0.01); len]).to_vec(),
            };
            self.gpu.queue().write_buffer(&b, 0, &data[..(len as u64 * eb) as usize / 4 * 4]);
            Ok(b)
        };
        let x = fill(n * k, "bench.x")?;
        let w = fill(m * k, "bench.w")?;
        let y = fill(n * m, "bench.y")?;
        let p = kernel.prepare(self.gpu, &[(&x).into(), (&w).into(), (&y).into()])?;
        let bytes = ((n * k + m * k + n * m) as u64) * eb;
        let t = self.row(name, &format!("{}x{}x{}", shape.m, shape.n, shape.k), elem, &p, bytes, 2 * shape.macs())?;
        Ok(Some(t))
    }
}

impl Bench<'_> {
    /// A low-bit GEMV row: packed weights of `format` (random values), activations `act`.
    /// Minimum bytes: packed weights and scales, activations, output.
    fn qgemv(&mut self, name: &str, shape: MatmulShape, format: Format, act: Act) -> Result<Option<f64>> {
        self.quant_row(name, &QGemv::new(shape, format, act), shape, format, act)
    }

    /// A row for any low-bit matmul kernel taking (activations, packed weights, y).
    fn quant_row(
        &mut self,
        name: &str,
        kernel: &dyn Kernel,
        shape: MatmulShape,
        format: Format,
        act: Act,
    ) -> Result<Option<f64>> {
        if !self.wanted(name) || kernel.requirements(self.gpu.capabilities()).is_err() {
            return Ok(None);
        }
        let (m, n, k) = (shape.m, shape.n, shape.k);
        let mut seed = 0x9E37_79B9u32;
        let w: Vec<f32> = (0..m * k)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect();
        let packed = quantize(&w, m, k, format, ScaleMode::PerRow)?.pack()?;
        let gpu = self.gpu;
        let up = |name: &str, d: &[u32]| gpu.upload(name, if d.is_empty() { &[0u32][..] } else { d });
        let (wb, sb, zb) =
            (up("bench.w", &packed.data)?, up("bench.ws", &packed.scales)?, up("bench.wz", &packed.aux)?);
        let usage = wgpu::BufferUsages::STORAGE;
        let (x_bytes, mut acts) = match act {
            Act::Float(e) => {
                let x = gpu.buffer("bench.x", e.bytes(u64::from(n * k)), usage | wgpu::BufferUsages::COPY_DST)?;
                let ones: Vec<u8> = match e {
                    Elem::F32 => bytemuck::cast_slice(&vec![0.01f32; (n * k) as usize]).to_vec(),
                    Elem::F16 => bytemuck::cast_slice(&vec![half::f16::from_f32(0.01); (n * k) as usize]).to_vec(),
                };
                gpu.queue().write_buffer(&x, 0, &ones[..ones.len() / 4 * 4]);
                (e.bytes(u64::from(n * k)), vec![x])
            }
            Act::Int8 { .. } => {
                let words = vec![0x0102_0304u32; (n * act_row_words(k)) as usize];
                let xq = gpu.upload("bench.xq", &words)?;
                let xs = gpu.upload("bench.xs", &vec![0.01f32; n as usize])?;
                (u64::from(n * k) + u64::from(n) * 4, vec![xq, xs])
            }
        };
        let out = match act {
            Act::Float(e) | Act::Int8 { out: e } => e,
        };
        let y = gpu.buffer("bench.y", out.bytes(u64::from(n * m)), usage)?;
        acts.push(wb);
        // F16Sparse24 has no scales: its kernels take no w_scales buffer.
        if !packed.scales.is_empty() {
            acts.push(sb);
        }
        if !packed.aux.is_empty() {
            acts.push(zb);
        }
        acts.push(y);
        let refs: Vec<milliwatt::TensorRef<'_>> = acts.iter().map(|b| b.into()).collect();
        let p = kernel.prepare(gpu, &refs)?;
        let bytes = packed.weight_bytes() + x_bytes + out.bytes(u64::from(n * m));
        let label = format!("{name} {}", act_label(act));
        let t = self.row(&label, &format!("{m}x{n}x{k}"), out, &p, bytes, 2 * shape.macs())?;
        Ok(Some(t))
    }
}

impl Bench<'_> {
    /// A tiled int8 GEMM (ternary weights) as the attention block runs it, its buffers sized by
    /// its own requirements: activations and scales filled with small values, outputs zero. Time
    /// against the compulsory bytes (weights, X and its scales, Y and its scales).
    fn attention_gemm_row(&mut self, name: &str, kernel: &QGemm) -> Result<Option<f64>> {
        if !self.wanted(name) || kernel.requirements(self.gpu.capabilities()).is_err() {
            return Ok(None);
        }
        let MatmulShape { m, n, k } = kernel.shape;
        let w: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 13) as f32 - 6.0) / 6.0).collect();
        let packed = quantize(&w, m, k, kernel.format, ScaleMode::PerRow)?.pack()?;
        let gpu = self.gpu;
        let mut owned = Vec::new();
        let mut bytes = 0;
        for r in kernel.requirements(gpu.capabilities())? {
            bytes += r.size;
            let words = (r.size / 4) as usize;
            let data: Vec<u32> = match r.name {
                "x" => vec![0x0102_03FD; words],
                "x_scales" => vec![0.01f32.to_bits(); words],
                "w" => packed.data.clone(),
                "w_scales" => packed.scales.clone(),
                "bias" => vec![0; words],
                _ => vec![0; words],
            };
            owned.push(gpu.upload(&format!("bench.{}", r.name), &data)?);
        }
        let refs: Vec<milliwatt::TensorRef<'_>> = owned.iter().map(|b| b.into()).collect();
        let p = kernel.prepare(gpu, &refs)?;
        let t = self.row(name, &format!("{m}x{n}x{k}"), Elem::F16, &p, bytes, 2 * kernel.shape.macs())?;
        Ok(Some(t))
    }
}

fn act_label(act: Act) -> &'static str {
    match act {
        Act::Float(Elem::F32) => "xf32",
        Act::Float(Elem::F16) => "xf16",
        Act::Int8 { .. } => "xi8",
    }
}

fn format_label(f: Format) -> String {
    match f {
        Format::Ternary2 => "ternary".into(),
        Format::Int8 => "int8".into(),
        Format::Int4 { group, zero_point } => format!("int4g{group}{}", if zero_point { "z" } else { "" }),
        Format::Ternary24 => "ternary24".into(),
        Format::Int4Sparse24 { group } => format!("int4s24g{group}"),
        Format::F16Sparse24 => "f16s24".into(),
    }
}

use milliwatt::wgpu;

/// Runs the suite on `gpu` (`quick`: fewer shapes and repeats), the kernels whose name contains
/// `filter` only when given; prints a table as it goes.
pub fn run(gpu: &Gpu, quick: bool, filter: Option<String>) -> Result<KernelSuite> {
    // The quick form (≤ 3 minutes per adapter with the rest of the tool on a software adapter):
    // the DiT shapes only, three repeats, no naive 1024³ reference.
    let repeats = if quick {
        Repeats { warmup: 1, reps: 3, min_seconds: 0.0 }
    } else {
        Repeats { warmup: 2, reps: 9, min_seconds: 0.3 }
    };

    // Probes first: the roofs every row is judged against.
    let copy_bytes: u64 = if quick { 64 << 20 } else { 256 << 20 };
    let copy = time_copy(gpu, copy_bytes, repeats)?;
    let copy_engine_gbps = 2.0 * copy_bytes as f64 / copy.median() / 1e9;
    println!(
        "copy probe (buffer to buffer): {} MiB, {:.3} ms, {copy_engine_gbps:.2} GB/s ({:?})",
        copy_bytes >> 20,
        copy.median() * 1e3,
        copy.clock
    );
    // The same bytes copied by a compute shader (vec4 loads and stores): on some drivers the
    // buffer-to-buffer copy is not the fastest way through memory (NVIDIA's Vulkan copy reached a
    // fifth of what an element-wise kernel moved on an H200), so the roof is the faster of the two.
    let copy_shader_gbps = {
        // One binding each way: no larger than the device binds.
        let bytes = copy_bytes.min(gpu.capabilities().max_storage_binding) / 16 * 16;
        let len = u32::try_from(bytes / 4).map_err(|_| milliwatt::Error::Unsupported {
            kernel: "copy probe",
            needs: "a copy of fewer than 2^32 elements",
        })?;
        let k = Elementwise::new(EltOp::Copy, len, Elem::F32);
        let src = gpu.buffer("copy_probe.shader.src", bytes, wgpu::BufferUsages::STORAGE)?;
        let dst = gpu.buffer("copy_probe.shader.dst", bytes, wgpu::BufferUsages::STORAGE)?;
        let p = k.prepare(gpu, &[(&src).into(), (&dst).into()])?;
        let t = time_kernels(gpu, &[&p], repeats)?.median();
        let gbps = 2.0 * bytes as f64 / t / 1e9;
        println!("copy probe (compute shader): {} MiB, {:.3} ms, {gbps:.2} GB/s", bytes >> 20, t * 1e3);
        gbps
    };
    let copy_gbps = copy_engine_gbps.max(copy_shader_gbps);
    let fma = |elem: Elem| -> Result<Option<f64>> {
        let probe = FmaProbe { invocations: 256 * 1024, iters: if quick { 256 } else { 1024 }, elem };
        if probe.requirements(gpu.capabilities()).is_err() {
            return Ok(None);
        }
        let out = gpu.buffer("bench.fma", 256 * 1024 * 4, wgpu::BufferUsages::STORAGE)?;
        let p = probe.prepare(gpu, &[(&out).into()])?;
        let t = time_kernels(gpu, &[&p], repeats)?.median();
        let gflops = p.work().flops() as f64 / t / 1e9;
        println!("fma probe {elem:?}: {:.3} ms, {gflops:.2} GFLOP/s", t * 1e3);
        Ok(Some(gflops))
    };
    let fma32 = fma(Elem::F32)?.ok_or(milliwatt::Error::Unsupported { kernel: "fma_probe", needs: "f32" })?;
    let fma16 = fma(Elem::F16)?;

    let mut b = Bench { gpu, repeats, copy_gbps, fma_gflops: fma32, filter, records: Vec::new() };
    println!(
        "\n{:<22} {:<18} {:<4} {:>13} {:>13} {:>17}  roofline / fma fraction  variant",
        "kernel", "M x N x K", "elem", "time", "traffic", "compute"
    );

    // GEMV, N = 1: the memory-bound case. The `floor` row is the NOTES reference configuration
    // (one 64-invocation workgroup per row, shared-memory reduction).
    let gemv_shapes = if quick {
        vec![(4096, 4096), (4608, 1152)]
    } else {
        vec![(4096, 4096), (14336, 4096), (4608, 1152), (1152, 1152)]
    };
    for &(m, k) in &gemv_shapes {
        let shape = MatmulShape::new(m, 1, k);
        for elem in [Elem::F32, Elem::F16] {
            b.matmul("gemv", &Gemv::new(shape, elem), shape, elem)?;
        }
        if (m, k) == (4096, 4096) {
            let floor = GemvVariant { reduce: GemvReduce::Shared, vec4: true, wg: 64, rows: 1 };
            b.matmul(
                "gemv.floor_config",
                &Gemv { variant: Some(floor), ..Gemv::new(shape, Elem::F32) },
                shape,
                Elem::F32,
            )?;
        }
    }
    // Low-bit GEMV at the same shapes, with the dense f32 GEMV time of this run as the yardstick.
    let mut speedups = Vec::new();
    let mut sparse_speedups = Vec::new();
    for &(m, k) in &gemv_shapes {
        let shape = MatmulShape::new(m, 1, k);
        let dense = b
            .records
            .iter()
            .find(|r| r.kernel == "gemv" && r.shape == format!("{m}x1x{k}") && r.elem == "F32")
            .map(|r| r.seconds);
        // The dense f16 GEMV (f16 weights and activations), yardstick of F16Sparse24: this run's
        // `gemv` row, or its own row (named so that the filters selecting F16Sparse24 select it)
        // when a filter left that out.
        let dense16 =
            match b.records.iter().find(|r| r.kernel == "gemv" && r.shape == format!("{m}x1x{k}") && r.elem == "F16") {
                Some(r) => Some(r.seconds),
                None => b.matmul("qgemv.f16s24.dense_gemv", &Gemv::new(shape, Elem::F16), shape, Elem::F16)?,
            };
        let int4 = Format::Int4 { group: 128, zero_point: false };
        let formats = [
            Format::Ternary2,
            Format::Int8,
            int4,
            Format::Ternary24,
            Format::Int4Sparse24 { group: 128 },
            Format::F16Sparse24,
        ];
        let mut times = Vec::new();
        for format in formats {
            let acts: &[Act] = if quick {
                &[Act::Float(Elem::F32), Act::Int8 { out: Elem::F32 }]
            } else {
                &[Act::Float(Elem::F32), Act::Float(Elem::F16), Act::Int8 { out: Elem::F32 }]
            };
            for &act in acts {
                let name = format!("qgemv.{}", format_label(format));
                let Some(t) = b.qgemv(&name, shape, format, act)? else { continue };
                if let Some(d) = dense {
                    speedups.push(format!("{name} {} {m}x{k}: {:.2}x dense f32", act_label(act), d / t));
                }
                // Beside the row: the 2:4 formats against the dense format of the same values and
                // activations (the goal is >= 1.3x).
                let same_act =
                    |f: Format| times.iter().find(|x: &&(Format, Act, f64)| x.0 == f && x.1 == act).map(|x| x.2);
                let base = match format {
                    Format::Ternary24 => {
                        Some((format!("qgemv.ternary {}", act_label(act)), same_act(Format::Ternary2)))
                    }
                    Format::Int4Sparse24 { .. } => {
                        Some((format!("qgemv.{} {}", format_label(int4), act_label(act)), same_act(int4)))
                    }
                    Format::F16Sparse24 => Some(("dense f16 gemv (f16 weights, xf16)".to_string(), dense16)),
                    _ => None,
                };
                if let Some((label, Some(bt))) = base {
                    let line = format!("{name} {} {m}x{k}: {:.2}x {label}", act_label(act), bt / t);
                    println!("    {line}");
                    sparse_speedups.push(line);
                }
                times.push((format, act, t));
            }
        }
    }
    // Activation quantization (the A8 producer) at the DiT MLP width.
    if b.wanted("quantize_act") {
        let (n, k) = (256u32, 4608u32);
        let x = gpu.buffer("bench.act", u64::from(n * k) * 4, wgpu::BufferUsages::STORAGE)?;
        let xq = gpu.buffer("bench.actq", u64::from(n * act_row_words(k)) * 4, wgpu::BufferUsages::STORAGE)?;
        let xs = gpu.buffer("bench.acts", u64::from(n) * 4, wgpu::BufferUsages::STORAGE)?;
        let p = ActQuant { n, k, elem: Elem::F32 }.prepare(gpu, &[(&x).into(), (&xq).into(), (&xs).into()])?;
        b.row("quantize_act", &format!("{n}x{k}"), Elem::F32, &p, u64::from(n * k) * 5 + u64::from(n) * 4, 0)?;
    }
    // The modulated LayerNorm of a DiT block at DiT-XL width, float and int8 output (the norm
    // the W1.58A8 qkv and fc1 read). Minimum bytes: x, the shift and scale rows, the output.
    for emit_i8 in [false, true] {
        let name = if emit_i8 { "norm.int8" } else { "norm" };
        if !b.wanted(name) {
            continue;
        }
        let (rows, d, per_image) = (256u32, 1152u32, 256u32);
        let modulation = Modulation { rows_per_image: per_image, stride: 6 * d, shift_offset: 0, scale_offset: d };
        let n = Norm { modulation: Some(modulation), emit_i8, ..Norm::layer_norm(rows, d, Elem::F32) };
        let usage = wgpu::BufferUsages::STORAGE;
        let x = gpu.buffer("bench.norm.x", u64::from(rows * d) * 4, usage)?;
        let m = gpu.buffer("bench.norm.mod", u64::from(6 * d) * 4, usage)?;
        let out_bytes = if emit_i8 { u64::from(rows * act_row_words(d)) * 4 } else { u64::from(rows * d) * 4 };
        let y = gpu.buffer("bench.norm.y", out_bytes, usage)?;
        let s = gpu.buffer("bench.norm.s", u64::from(rows) * 4, usage)?;
        let mut bufs: Vec<milliwatt::TensorRef<'_>> = vec![(&x).into(), (&m).into(), (&y).into()];
        if emit_i8 {
            bufs.push((&s).into());
        }
        let p = n.prepare(gpu, &bufs)?;
        let bytes = u64::from(rows * d) * 4 + u64::from(2 * d) * 4 + out_bytes;
        b.row(name, &format!("{rows}x{d}"), Elem::F32, &p, bytes, 0)?;
    }
    // Small N.
    for n in [2u32, 4, 8] {
        let shape = MatmulShape::new(4096, n, 4096);
        b.matmul("gemv.small_n", &Gemv::new(shape, Elem::F32), shape, Elem::F32)?;
    }
    // Low-bit tiled GEMM at the DiT shapes (256 tokens), against the dense GEMMs of this run.
    let mut gemm_speedups = Vec::new();
    let dit_shapes: &[(u32, u32)] = if quick { &[(4608, 1152)] } else { &[(4608, 1152), (1152, 4608)] };
    for &(m, k) in dit_shapes {
        let shape = MatmulShape::new(m, 256, k);
        for (i, (format, act)) in [
            (Format::Ternary2, Act::Int8 { out: Elem::F32 }),
            (Format::Int8, Act::Int8 { out: Elem::F32 }),
            (Format::Ternary2, Act::Float(Elem::F32)),
            (Format::Int4 { group: 128, zero_point: false }, Act::Float(Elem::F32)),
            (Format::Int4 { group: 128, zero_point: false }, Act::Float(Elem::F16)),
        ]
        .into_iter()
        .enumerate()
        {
            if quick && i > 2 {
                continue;
            }
            let name = format!("qgemm.{}", format_label(format));
            if let Some(t) = b.quant_row(&name, &QGemm::new(shape, format, act), shape, format, act)? {
                gemm_speedups.push((name, act, m, k, t));
            }
        }
    }
    // The attention block's GEMMs at DiT-S (hidden 384, 6 heads of 64, 256 tokens), ternary with
    // int8 activations: qkv writing f16 against int8 with a scale per (token, part, head), the
    // projection reading activations with one scale per token against one per (token, head).
    let act8 = Act::Int8 { out: Elem::F16 };
    let bias = Epilogue { bias: true, ..Epilogue::default() };
    let qkv = QGemm::new(MatmulShape::new(1152, 256, 384), Format::Ternary2, act8).with_epilogue(bias);
    let proj = QGemm::new(MatmulShape::new(384, 256, 384), Format::Ternary2, act8).with_epilogue(bias);
    let pairs = [
        ("qgemm.qkv f16 out", qkv.clone(), "qgemm.qkv int8 out", qkv.clone().with_int8_output(64)),
        ("qgemm.proj row scales", proj.clone(), "qgemm.proj head scales", proj.with_x_group(64)),
    ];
    let mut grouped = Vec::new();
    for (plain_name, plain, name, kernel) in pairs {
        if let (Some(t0), Some(t1)) = (b.attention_gemm_row(plain_name, &plain)?, b.attention_gemm_row(name, &kernel)?)
        {
            grouped.push(format!("{name}: {:.2}x the time of {plain_name}", t1 / t0));
        }
    }
    // Tiled GEMM against the naive reference.
    if !quick {
        let cube = MatmulShape::new(1024, 1024, 1024);
        for elem in [Elem::F32, Elem::F16] {
            b.matmul("gemm", &Gemm::new(cube, elem), cube, elem)?;
            b.matmul("matmul_naive", &MatmulNaive { shape: cube, elem }, cube, elem)?;
        }
    }
    // The DiT shapes (256 tokens).
    for &(m, k) in dit_shapes {
        let shape = MatmulShape::new(m, 256, k);
        for elem in [Elem::F32, Elem::F16] {
            b.matmul("gemm.dit", &Gemm::new(shape, elem), shape, elem)?;
        }
    }
    // Element-wise add over 16 Mi elements.
    for elem in [Elem::F32, Elem::F16] {
        let len = if quick { 4u32 << 20 } else { 16u32 << 20 };
        let k = Elementwise::new(EltOp::Add, len, elem);
        if !b.wanted("elementwise") || k.requirements(gpu.capabilities()).is_err() {
            continue;
        }
        let bytes = u64::from(len) * elem.size();
        let mk = |n: &str| gpu.buffer(n, bytes, wgpu::BufferUsages::STORAGE);
        let (x, y, z) = (mk("bench.a")?, mk("bench.b")?, mk("bench.out")?);
        let p = k.prepare(gpu, &[(&x).into(), (&y).into(), (&z).into()])?;
        b.row("elementwise.add", &format!("{len}"), elem, &p, 3 * bytes, u64::from(len))?;
    }

    for (name, act, m, k, t) in &gemm_speedups {
        let dense = |e: &str| {
            b.records
                .iter()
                .find(|r| r.kernel == "gemm.dit" && r.shape == format!("{m}x256x{k}") && r.elem == e)
                .map(|r| r.seconds)
        };
        if let (Some(d32), Some(d16)) = (dense("F32"), dense("F16")) {
            speedups.push(format!(
                "{name} {} {m}x256x{k}: {:.2}x dense f32 GEMM, {:.2}x dense f16 GEMM",
                act_label(*act),
                d32 / t,
                d16 / t
            ));
        }
    }
    if !speedups.is_empty() {
        println!("\nlow-bit GEMV speedup over the dense f32 GEMV of this run:");
        for l in &speedups {
            println!("  {l}");
        }
    }
    if !grouped.is_empty() {
        println!("\nthe attention block's int8 GEMMs at DiT-S against their plain form (same run):");
        for l in &grouped {
            println!("  {l}");
        }
    }
    if !sparse_speedups.is_empty() {
        println!("\n2:4 GEMV over the dense format of the same values (goal >= 1.3x):");
        for l in &sparse_speedups {
            println!("  {l}");
        }
    }
    // Weight bytes per format at 4096 x 4096 (packed data, scales, zero points) vs. f32.
    if b.wanted("bytes") {
        println!("\nweight bytes at 4096 x 4096 (f32: {} bytes):", 4096u64 * 4096 * 4);
        let w = vec![0.5f32; 4096 * 4096];
        for format in [
            Format::Ternary2,
            Format::Int8,
            Format::Int4 { group: 32, zero_point: false },
            Format::Int4 { group: 128, zero_point: false },
            Format::Int4 { group: 128, zero_point: true },
            Format::Ternary24,
            Format::Int4Sparse24 { group: 128 },
            Format::F16Sparse24,
        ] {
            let packed = quantize(&w, 4096, 4096, format, ScaleMode::PerRow)?.pack()?;
            let bytes = packed.weight_bytes();
            println!(
                "  {:<24} {:>10} bytes  {:>6.3} bits/weight  {:>6.1}x smaller than f32",
                format!("{format:?}"),
                bytes,
                packed.bits_per_weight(),
                (4096.0 * 4096.0 * 4.0) / bytes as f64
            );
        }
    }

    // Energy ledger (estimate, Horowitz 45 nm) of one DiT MLP linear, W1.58A8 against dense f32:
    // the counts are the kernels' own work reports for these launches.
    let mut ledger_ratio = None;
    if b.wanted("ledger") {
        let caps = gpu.capabilities();
        let shape = MatmulShape::new(4608, 256, 1152);
        let mut dense = milliwatt::Ledger::default();
        dense.add_kernel("gemm f32", &Gemm::new(shape, Elem::F32), caps, 1)?;
        let mut low = milliwatt::Ledger::default();
        low.add_kernel("quantize_act", &ActQuant { n: 256, k: 1152, elem: Elem::F32 }, caps, 1)?;
        low.add_kernel("gemm W1.58A8", &QGemm::new(shape, Format::Ternary2, Act::Int8 { out: Elem::F32 }), caps, 1)?;
        println!("\n{dense}\n\n{low}");
        println!("W1.58A8 / dense f32, 256 x 1152 -> 4608: {:.4} of the energy", low.ratio_to(&dense));
        ledger_ratio = Some(low.ratio_to(&dense));
    }

    let mut lines = speedups;
    lines.extend(sparse_speedups);
    Ok(KernelSuite {
        copy_gbps,
        copy_engine_gbps,
        copy_shader_gbps,
        fma_gflops_f32: fma32,
        fma_gflops_f16: fma16,
        records: b.records,
        speedups: lines,
        ledger_ratio_w158a8: ledger_ratio,
    })
}
