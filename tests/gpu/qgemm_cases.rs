//! Tiled low-bit GEMMs against their twins: W1.58A8 and W8A8 bit-exact given the same int8
//! activations, ternary / int8 / int4 with f32 and f16 activations within tolerance, fused
//! epilogues; every twin also against a plain f32 matmul on `crate::quant`'s dequantized weights.

use half::f16;
use milliwatt::cpu::epilogue::EpilogueInputs;
use milliwatt::cpu::qgemm::{Weights, qgemm_a8, qgemm_float};
use milliwatt::cpu::{self, Element};
use milliwatt::kernels::qmatmul::{QMatmulParams, act_row_words};
use milliwatt::kernels::{Act, ActQuant, Activation, Elem, Epilogue, MatmulShape, QGemm};
use milliwatt::quant::{Format, Packed, ScaleMode, quantize};
use milliwatt::{Gpu, Kernel};

use crate::util::{Rng, compare, err, need_f16};
use crate::{Case, Outcome};

pub fn all() -> Vec<(&'static str, Case)> {
    vec![
        ("qgemm_a8_ternary_ternary24_int8_int4", |b| a8_cases(&b.gpu)),
        ("qgemm_a8_ternary24_skip_zeros", |b| skip_zeros_cases(&b.gpu)),
        ("qgemm_a8_x_resident", |b| x_resident_cases(&b.gpu)),
        ("qgemm_a8_grouped_activations", |b| x_grouped_cases(&b.gpu)),
        ("qgemm_a8_int8_output", |b| y_i8_cases(&b.gpu)),
        ("qgemm_float_f32", |b| float_cases::<f32>(&b.gpu)),
        ("qgemm_float_f16", |b| float_cases::<f16>(&b.gpu)),
        ("qgemm_epilogues", |b| epilogue_cases(&b.gpu)),
        ("qgemm_split_weights", |b| split_case(&b.small_bindings)),
    ]
}

const SHAPES: &[(u32, u32, u32)] = &[(1, 1, 1), (70, 33, 127), (65, 257, 1000), (130, 40, 1001), (33, 64, 4095)];

pub(crate) fn params(shape: MatmulShape, format: Format, gate_rows: u32) -> QMatmulParams {
    let epilogue = Epilogue { gate_rows: (gate_rows > 0).then_some(gate_rows), ..Epilogue::default() };
    QGemm::new(shape, format, Act::Float(Elem::F32)).with_epilogue(epilogue).params().expect("valid format")
}

pub(crate) struct Problem {
    pub(crate) packed: Packed,
    dequant: Vec<f32>,
    pub(crate) x: Vec<f32>,
    /// Per output, the sum over k of |x| |w|.
    pub(crate) scale: Vec<f32>,
}

pub(crate) fn problem(shape: MatmulShape, format: Format, seed: u64) -> Result<Problem, String> {
    problem_with(shape, format, seed, 0)
}

/// [`problem`] with every `zero_every`-th group of 4 weights of each row zero (none for 0).
fn problem_with(shape: MatmulShape, format: Format, seed: u64, zero_every: usize) -> Result<Problem, String> {
    let (m, n, k) = (shape.m as usize, shape.n as usize, shape.k as usize);
    let mut rng = Rng::new(seed);
    let mut w: Vec<f32> = (0..m * k).map(|_| rng.f32()).collect();
    if zero_every > 0 {
        for (i, v) in w.iter_mut().enumerate() {
            if ((i % k) / 4).is_multiple_of(zero_every) {
                *v = 0.0;
            }
        }
    }
    let x: Vec<f32> = (0..n * k).map(|_| rng.f32()).collect();
    let packed = quantize(&w, shape.m, shape.k, format, ScaleMode::PerRow).map_err(err)?.pack().map_err(err)?;
    let dequant = packed.unpack().map_err(err)?.dequantize().map_err(err)?;
    let xa: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    let da: Vec<f32> = dequant.iter().map(|v| v.abs()).collect();
    let scale = cpu::matmul::reference(m, n, k, &xa, &da);
    Ok(Problem { packed, dequant, x, scale })
}

pub(crate) fn weights(pr: &Problem) -> Weights<'_> {
    Weights { format: pr.packed.format, w: &pr.packed.data, ws: &pr.packed.scales, wz: &pr.packed.aux }
}

struct EpiBuffers {
    bias: Vec<f32>,
    residual: Vec<f32>,
    gate: Vec<f32>,
}

fn epi_data(shape: MatmulShape, gate_rows: u32, seed: u64) -> EpiBuffers {
    let mut rng = Rng::new(seed);
    let (m, n) = (shape.m as usize, shape.n as usize);
    EpiBuffers { bias: rng.vec(m), residual: rng.vec(m * n), gate: rng.vec(n.div_ceil(gate_rows as usize) * m) }
}

/// Runs a QGemm on the GPU; returns Y.
fn run<E: Element>(
    gpu: &Gpu,
    kernel: &QGemm,
    acts: &[&milliwatt::wgpu::Buffer],
    pk: &Packed,
    epi: &EpiBuffers,
) -> Result<(Vec<E>, usize), String> {
    let shape = kernel.shape;
    let up = |n: &str, d: &[u32]| gpu.upload(n, if d.is_empty() { &[0u32][..] } else { d }).map_err(err);
    let (w, ws, wz) = (up("w", &pk.data)?, up("ws", &pk.scales)?, up("wz", &pk.aux)?);
    let y = gpu.upload("y", &vec![E::from_f32(7.0); (shape.m * shape.n) as usize]).map_err(err)?;
    let cast = |v: &[f32]| -> Vec<E> { v.iter().map(|&a| E::from_f32(a)).collect() };
    let bias = gpu.upload("bias", &cast(&epi.bias)).map_err(err)?;
    let residual = gpu.upload("residual", &cast(&epi.residual)).map_err(err)?;
    let gate = gpu.upload("gate", &cast(&epi.gate)).map_err(err)?;
    let mut bufs: Vec<milliwatt::TensorRef<'_>> = acts.iter().map(|b| (*b).into()).collect();
    bufs.push((&w).into());
    bufs.push((&ws).into());
    if !pk.aux.is_empty() {
        bufs.push((&wz).into());
    }
    bufs.push((&y).into());
    let e = kernel.epilogue;
    if e.bias {
        bufs.push((&bias).into());
    }
    if e.residual {
        bufs.push((&residual).into());
    }
    if e.gate_rows.is_some() {
        bufs.push((&gate).into());
    }
    let p = kernel.prepare(gpu, &bufs).map_err(err)?;
    gpu.run(&[&p]).map_err(err)?;
    Ok((gpu.read(&y).map_err(err)?, p.dispatch_count()))
}

pub(crate) fn act_quant(gpu: &Gpu, n: u32, k: u32, x: &[f32]) -> Result<(Vec<u32>, Vec<f32>), String> {
    let xb = gpu.upload("x", x).map_err(err)?;
    let xq = gpu.upload("xq", &vec![0u32; (n * act_row_words(k)) as usize]).map_err(err)?;
    let xs = gpu.upload("xs", &vec![0f32; n as usize]).map_err(err)?;
    let p =
        ActQuant { n, k, elem: Elem::F32 }.prepare(gpu, &[(&xb).into(), (&xq).into(), (&xs).into()]).map_err(err)?;
    gpu.run(&[&p]).map_err(err)?;
    Ok((gpu.read(&xq).map_err(err)?, gpu.read(&xs).map_err(err)?))
}

fn dequant_acts(n: u32, k: u32, xq: &[u32], xs: &[f32]) -> Vec<f32> {
    let words = act_row_words(k) as usize;
    (0..(n * k) as usize)
        .map(|i| {
            let (r, kk) = (i / k as usize, i % k as usize);
            f32::from((xq[r * words + kk / 4] >> (8 * (kk % 4))) as u8 as i8) * xs[r]
        })
        .collect()
}

fn a8_cases(gpu: &Gpu) -> Outcome {
    let none = EpilogueInputs::default();
    for format in [
        Format::Ternary2,
        Format::Ternary24,
        Format::Int8,
        Format::Int4 { group: 64, zero_point: false },
        Format::Int4 { group: 128, zero_point: true },
    ] {
        for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
            let shape = MatmulShape::new(m, n, k);
            let pr = problem(shape, format, 5000 + i as u64)?;
            let (xq, xs) = act_quant(gpu, n, k, &pr.x)?;
            let mut twin = vec![0f32; (m * n) as usize];
            qgemm_a8(&params(shape, format, 0), weights(&pr), &Epilogue::default(), &none, &xq, &xs, &mut twin);
            let xd = dequant_acts(n, k, &xq, &xs);
            let reference = cpu::matmul::reference(m as usize, n as usize, k as usize, &xd, &pr.dequant);
            compare(&format!("{format:?} A8 twin vs reference {shape:?}"), &twin, &reference, &pr.scale, 1e-5, 1e-6)?;
            let kernel = QGemm::new(shape, format, Act::Int8 { out: Elem::F32 });
            let xqb = gpu.upload("xq", &xq).map_err(err)?;
            let xsb = gpu.upload("xs", &xs).map_err(err)?;
            let epi = epi_data(shape, 1, 0);
            let (out, _) = run::<f32>(gpu, &kernel, &[&xqb, &xsb], &pr.packed, &epi)?;
            if out != twin {
                let j = out.iter().zip(&twin).position(|(a, b)| a != b).unwrap_or(0);
                return Err(format!(
                    "{format:?} A8 GEMM {shape:?} not bit-exact at {j}: {} vs twin {}",
                    out[j], twin[j]
                )
                .into());
            }
        }
    }
    Ok(())
}

/// 2:4 zero skipping: bit-exact against the twin on odd shapes, with all-zero groups inside K
/// (state 24: nothing kept) beside the padding; and, with fused epilogues, bit-exact against the
/// dense-tile kernel (the same integer sums).
fn skip_zeros_cases(gpu: &Gpu) -> Outcome {
    let none = EpilogueInputs::default();
    let format = Format::Ternary24;
    let act = Act::Int8 { out: Elem::F32 };
    let exact = |what: &str, out: &[f32], want: &[f32]| -> Result<(), String> {
        match out.iter().zip(want).position(|(a, b)| a != b) {
            None if out.len() == want.len() => Ok(()),
            j => Err(format!("{what}: not bit-exact at {j:?}")),
        }
    };
    for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
        let shape = MatmulShape::new(m, n, k);
        let pr = problem_with(shape, format, 5100 + i as u64, 3)?;
        let (xq, xs) = act_quant(gpu, n, k, &pr.x)?;
        let mut twin = vec![0f32; (m * n) as usize];
        qgemm_a8(&params(shape, format, 0), weights(&pr), &Epilogue::default(), &none, &xq, &xs, &mut twin);
        let (xqb, xsb) = (gpu.upload("xq", &xq).map_err(err)?, gpu.upload("xs", &xs).map_err(err)?);
        let kernel = QGemm::new(shape, format, act).with_skip_zeros(true);
        let (out, _) = run::<f32>(gpu, &kernel, &[&xqb, &xsb], &pr.packed, &epi_data(shape, 1, 0))?;
        exact(&format!("2:4 zero skipping {shape:?} vs twin"), &out, &twin)?;
    }
    for (i, e) in [
        Epilogue::bias_act(Activation::GeluTanh),
        Epilogue { bias: true, residual: true, gate_rows: Some(16), ..Epilogue::default() },
    ]
    .iter()
    .enumerate()
    {
        let shape = MatmulShape::new(97, 48, 300);
        let pr = problem_with(shape, format, 5200 + i as u64, 5)?;
        let (xq, xs) = act_quant(gpu, shape.n, shape.k, &pr.x)?;
        let (xqb, xsb) = (gpu.upload("xq", &xq).map_err(err)?, gpu.upload("xs", &xs).map_err(err)?);
        let epi = epi_data(shape, e.gate_rows.unwrap_or(1), 5300 + i as u64);
        let dense = QGemm::new(shape, format, act).with_epilogue(*e);
        let (want, _) = run::<f32>(gpu, &dense, &[&xqb, &xsb], &pr.packed, &epi)?;
        let (out, _) = run::<f32>(gpu, &dense.clone().with_skip_zeros(true), &[&xqb, &xsb], &pr.packed, &epi)?;
        exact(&format!("2:4 zero skipping with {e:?} vs the dense tile"), &out, &want)?;
    }
    // Other formats refuse it.
    let kernel = QGemm::new(MatmulShape::new(64, 64, 64), Format::Ternary2, act).with_skip_zeros(true);
    if kernel.requirements(gpu.capabilities()).is_ok() {
        return Err("zero skipping accepted for ternary weights".into());
    }
    Ok(())
}

/// The X-resident variant (K <= 256, 64 or more tiles of N, several tiles of M: each workgroup
/// walks M over its rows of X): bit-exact against the twin for every int8-activation format but
/// int4 (its group scales accumulate in f32: to rounding), odd M, N and K, and with a fused bias,
/// GELU and gated residual.
fn x_resident_cases(gpu: &Gpu) -> Outcome {
    let none = EpilogueInputs::default();
    let act = Act::Int8 { out: Elem::F32 };
    let cases = [
        (Format::Ternary2, 130u32, 4100u32, 200u32, false),
        (Format::Ternary24, 70, 4097, 127, false),
        (Format::Ternary24, 70, 4097, 127, true),
        (Format::Int8, 200, 4160, 256, false),
        (Format::Int4 { group: 64, zero_point: true }, 129, 4099, 192, false),
    ];
    for (i, &(format, m, n, k, skip)) in cases.iter().enumerate() {
        let shape = MatmulShape::new(m, n, k);
        let kernel = QGemm::new(shape, format, act).with_skip_zeros(skip);
        if !kernel.x_resident() {
            return Err(format!("{shape:?} does not select the X-resident variant").into());
        }
        let pr = problem(shape, format, 5400 + i as u64)?;
        let (xq, xs) = act_quant(gpu, n, k, &pr.x)?;
        let mut twin = vec![0f32; (m * n) as usize];
        qgemm_a8(&params(shape, format, 0), weights(&pr), &Epilogue::default(), &none, &xq, &xs, &mut twin);
        let (xqb, xsb) = (gpu.upload("xq", &xq).map_err(err)?, gpu.upload("xs", &xs).map_err(err)?);
        let (out, _) = run::<f32>(gpu, &kernel, &[&xqb, &xsb], &pr.packed, &epi_data(shape, 1, 0))?;
        let what = format!("X-resident {format:?} {shape:?}");
        if matches!(format, Format::Int4 { .. }) {
            // Group scales accumulate in f32 per slice: equal to rounding (the driver may contract
            // the multiply and add differently from the twin).
            compare(&what, &out, &twin, &pr.scale, 1e-6, 1e-6)?;
        } else if let Some(j) = out.iter().zip(&twin).position(|(a, b)| a != b) {
            return Err(format!("{what}: not bit-exact at {j}: {} vs {}", out[j], twin[j]).into());
        }
    }
    let e = Epilogue { bias: true, residual: true, gate_rows: Some(49), act: Activation::GeluTanh };
    let shape = MatmulShape::new(131, 4116, 128);
    let epi = epi_data(shape, 49, 5500);
    let t = EpilogueInputs { bias: &epi.bias, residual: &epi.residual, gate: &epi.gate };
    let pr = problem(shape, Format::Ternary2, 5501)?;
    let (xq, xs) = act_quant(gpu, shape.n, shape.k, &pr.x)?;
    let mut twin = vec![0f32; (shape.m * shape.n) as usize];
    qgemm_a8(&params(shape, Format::Ternary2, 49), weights(&pr), &e, &t, &xq, &xs, &mut twin);
    let (xqb, xsb) = (gpu.upload("xq", &xq).map_err(err)?, gpu.upload("xs", &xs).map_err(err)?);
    let kernel = QGemm::new(shape, Format::Ternary2, act).with_epilogue(e);
    let (out, _) = run::<f32>(gpu, &kernel, &[&xqb, &xsb], &pr.packed, &epi)?;
    let scale: Vec<f32> = pr.scale.iter().map(|s| s * 1.5 + 2.0).collect();
    compare("X-resident with bias, GELU, gated residual", &out, &twin, &scale, 1e-5, 1e-5)?;
    Ok(())
}

/// `kernel` is refused with a typed format error (`what` names the case).
fn refused(gpu: &Gpu, kernel: &QGemm, what: &str) -> Outcome {
    match kernel.requirements(gpu.capabilities()) {
        Err(milliwatt::Error::Format { .. }) => Ok(()),
        other => Err(format!("{what}: {other:?}, not a format error").into()),
    }
}

/// Activations with a scale per row and group of K (X_GROUPED: the attention's int8 output, a
/// group per head): against the twin (the groups' sums folded into f32 in the same order: equal
/// to the fma's rounding) and the twin against a plain matmul of the dequantized activations, on
/// odd M and N, K that pads its last slice, 16 groups, X resident, 2:4 skipping and a gated
/// residual; and the refusals.
fn x_grouped_cases(gpu: &Gpu) -> Outcome {
    let act = Act::Int8 { out: Elem::F32 };
    let cases = [
        (Format::Ternary2, 70u32, 33u32, 128u32, 32u32, false, false),
        (Format::Ternary24, 65, 257, 96, 16, false, false),
        (Format::Ternary24, 65, 257, 96, 16, true, false),
        (Format::Int8, 33, 64, 384, 64, false, true),
        (Format::Ternary2, 100, 50, 256, 16, false, false),
        (Format::Ternary2, 130, 4100, 192, 64, false, false),
        (Format::Int8, 129, 4099, 160, 32, false, false),
    ];
    for (i, &(format, m, n, k, group, skip, gated)) in cases.iter().enumerate() {
        let shape = MatmulShape::new(m, n, k);
        let e = if gated {
            Epilogue { bias: true, residual: true, gate_rows: Some(7), ..Epilogue::default() }
        } else {
            Epilogue::default()
        };
        let kernel = QGemm::new(shape, format, act).with_skip_zeros(skip).with_x_group(group).with_epilogue(e);
        let pr = problem(shape, format, 5600 + i as u64)?;
        let (nu, ku, gu) = (n as usize, k as usize, group as usize);
        let mut x = pr.x.clone();
        // Groups of very different magnitude, so one scale per row would not do.
        for (j, v) in x.iter_mut().enumerate() {
            *v *= [1.0, 40.0, 0.02, 3.0][(j % ku / gu) % 4];
        }
        let (mut xq, mut xs) = (vec![0u32; nu * ku / 4], vec![0f32; nu * ku / gu]);
        cpu::qmatmul::quantize_act_grouped(nu, ku, gu, &x, &mut xq, &mut xs);
        let epi = epi_data(shape, 7, 5700 + i as u64);
        let t = EpilogueInputs { bias: &epi.bias, residual: &epi.residual, gate: &epi.gate };
        let mut p = params(shape, format, if gated { 7 } else { 0 });
        p.x_group_words = group / 4;
        let mut twin = vec![0f32; (m * n) as usize];
        qgemm_a8(&p, weights(&pr), &e, &t, &xq, &xs, &mut twin);
        let what = format!("{format:?} {shape:?} activation groups of {group} (skip {skip}, gated {gated})");
        let xd: Vec<f32> = (0..nu * ku)
            .map(|j| f32::from((xq[j / 4] >> (8 * (j % 4))) as u8 as i8) * xs[(j / ku) * (ku / gu) + j % ku / gu])
            .collect();
        // Per output, the sum of |x| |w| (and the residual and gate's share where gated).
        let xa: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        let da: Vec<f32> = pr.dequant.iter().map(|v| v.abs()).collect();
        let mut scale = cpu::matmul::reference(m as usize, nu, ku, &xa, &da);
        if gated {
            scale.iter_mut().for_each(|s| *s = *s * 1.5 + 2.0);
        } else {
            let reference = cpu::matmul::reference(m as usize, nu, ku, &xd, &pr.dequant);
            compare(&format!("{what}: twin vs reference"), &twin, &reference, &scale, 1e-5, 1e-6)?;
        }
        let (xqb, xsb) = (gpu.upload("xq", &xq).map_err(err)?, gpu.upload("xs", &xs).map_err(err)?);
        let (out, _) = run::<f32>(gpu, &kernel, &[&xqb, &xsb], &pr.packed, &epi)?;
        compare(&what, &out, &twin, &scale, 1e-6, 1e-6)?;
    }
    let refuse = |kernel: QGemm, what: &str| refused(gpu, &kernel, what);
    let shape = MatmulShape::new(64, 64, 512);
    refuse(QGemm::new(shape, Format::Ternary2, act).with_x_group(24), "groups of 24")?;
    refuse(QGemm::new(shape, Format::Ternary2, act).with_x_group(48), "groups that do not divide K")?;
    refuse(QGemm::new(shape, Format::Ternary2, act).with_x_group(16), "32 groups")?;
    refuse(QGemm::new(shape, Format::Ternary2, Act::Float(Elem::F32)).with_x_group(64), "float activations")?;
    let int4 = Format::Int4 { group: 64, zero_point: false };
    refuse(QGemm::new(shape, int4, act).with_x_group(64), "int4 weights")?;
    Ok(())
}

/// Runs a QGemm with int8 output and a bias; returns the words and the scales.
pub(crate) fn run_int8_out(
    gpu: &Gpu,
    kernel: &QGemm,
    acts: &[&milliwatt::wgpu::Buffer],
    pk: &Packed,
    bias: &[f32],
) -> Result<(Vec<u32>, Vec<f32>), String> {
    let MatmulShape { m, n, .. } = kernel.shape;
    let up = |n: &str, d: &[u32]| gpu.upload(n, if d.is_empty() { &[0u32][..] } else { d }).map_err(err);
    let (w, ws, wz) = (up("w", &pk.data)?, up("ws", &pk.scales)?, up("wz", &pk.aux)?);
    let yq = gpu.upload("yq", &vec![0x0707_0707u32; (m * n / 4) as usize]).map_err(err)?;
    let ys = gpu.upload("ys", &vec![7f32; (n * m / kernel.y_group) as usize]).map_err(err)?;
    let bias = gpu.upload("bias", bias).map_err(err)?;
    let mut bufs: Vec<milliwatt::TensorRef<'_>> = acts.iter().map(|b| (*b).into()).collect();
    bufs.push((&w).into());
    bufs.push((&ws).into());
    if !pk.aux.is_empty() {
        bufs.push((&wz).into());
    }
    bufs.push((&yq).into());
    bufs.push((&ys).into());
    if kernel.epilogue.bias {
        bufs.push((&bias).into());
    }
    let p = kernel.prepare(gpu, &bufs).map_err(err)?;
    gpu.run(&[&p]).map_err(err)?;
    Ok((gpu.read(&yq).map_err(err)?, gpu.read(&ys).map_err(err)?))
}

/// Int8 words and scales against the twin's float output quantized per (row, group) by the twin
/// quantizer: equal, but for values within rounding of a half where the kernel's float value
/// differs from the twin's by rounding (GELU's tanh): a code off by one in at most 1 in 1,000,
/// scales within 1e-5.
pub(crate) fn compare_int8_output(
    what: &str,
    (words, scales): (&[u32], &[f32]),
    y: &[f32],
    (n, m, group): (usize, usize, usize),
) -> Result<(), String> {
    let (mut want_q, mut want_s) = (vec![0u32; n * m / 4], vec![0f32; n * m / group]);
    cpu::qmatmul::quantize_act_grouped(n, m, group, y, &mut want_q, &mut want_s);
    for (r, (g, w)) in scales.iter().zip(&want_s).enumerate() {
        if (g - w).abs() > 1e-5 * w.abs() {
            return Err(format!("{what}: scale {r}: {g} vs twin {w}"));
        }
    }
    let byte = |v: &[u32], j: usize| i32::from((v[j / 4] >> (8 * (j % 4))) as u8 as i8);
    let mut off = 0;
    for j in 0..n * m {
        let e = (byte(words, j) - byte(&want_q, j)).abs();
        if e > 1 {
            return Err(format!("{what}: code {j}: {} vs twin {}", byte(words, j), byte(&want_q, j)));
        }
        off += e as usize;
    }
    if off * 1000 > n * m {
        return Err(format!("{what}: {off} of {} codes off by one", n * m));
    }
    Ok(())
}

/// Int8 output with a scale per row and group of columns (Y_I8: Q, K, V per token and head for
/// attention), groups of 16, 32 and 64, odd N and K, X resident, 2:4 zero skipping, bias and
/// GELU: against the twin's float output quantized by the twin quantizer; and the refusals.
fn y_i8_cases(gpu: &Gpu) -> Outcome {
    let act = Act::Int8 { out: Elem::F32 };
    let cases = [
        (Format::Ternary2, 96u32, 70u32, 128u32, 32u32, false, Activation::None),
        (Format::Int8, 192, 33, 200, 64, false, Activation::GeluTanh),
        (Format::Ternary24, 48, 257, 96, 16, true, Activation::None),
        (Format::Ternary2, 384, 4100, 128, 32, false, Activation::None),
    ];
    for (i, &(format, m, n, k, group, skip, a)) in cases.iter().enumerate() {
        let shape = MatmulShape::new(m, n, k);
        let e = Epilogue::bias_act(a);
        let kernel = QGemm::new(shape, format, act).with_skip_zeros(skip).with_epilogue(e).with_int8_output(group);
        let pr = problem(shape, format, 5800 + i as u64)?;
        let (xq, xs) = act_quant(gpu, n, k, &pr.x)?;
        let bias = Rng::new(5900 + i as u64).vec(m as usize);
        let t = EpilogueInputs { bias: &bias, ..EpilogueInputs::default() };
        let mut y = vec![0f32; (m * n) as usize];
        qgemm_a8(&params(shape, format, 0), weights(&pr), &e, &t, &xq, &xs, &mut y);
        let (xqb, xsb) = (gpu.upload("xq", &xq).map_err(err)?, gpu.upload("xs", &xs).map_err(err)?);
        let (words, scales) = run_int8_out(gpu, &kernel, &[&xqb, &xsb], &pr.packed, &bias)?;
        let what = format!("{format:?} {shape:?} int8 output, groups of {group}, {a:?}, skip {skip}");
        compare_int8_output(&what, (&words, &scales), &y, (n as usize, m as usize, group as usize))?;
    }
    let refuse = |kernel: QGemm, what: &str| refused(gpu, &kernel, what);
    let shape = MatmulShape::new(96, 64, 128);
    refuse(QGemm::new(shape, Format::Ternary2, act).with_int8_output(48), "groups of 48")?;
    refuse(QGemm::new(MatmulShape::new(80, 64, 128), Format::Ternary2, act).with_int8_output(32), "M = 80")?;
    refuse(QGemm::new(shape, Format::Ternary2, Act::Float(Elem::F32)).with_int8_output(32), "float activations")?;
    let gated = Epilogue { residual: true, gate_rows: Some(4), ..Epilogue::default() };
    refuse(QGemm::new(shape, Format::Ternary2, act).with_epilogue(gated).with_int8_output(32), "a gated residual")?;
    Ok(())
}

fn float_cases<E: Element>(gpu: &Gpu) -> Outcome {
    need_f16::<E>(gpu)?;
    let none = EpilogueInputs::default();
    let formats = [
        Format::Ternary2,
        Format::Ternary24,
        Format::Int8,
        Format::Int4 { group: 32, zero_point: false },
        Format::Int4 { group: 64, zero_point: true },
        Format::Int4 { group: 128, zero_point: false },
    ];
    for (fi, &format) in formats.iter().enumerate() {
        for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
            let shape = MatmulShape::new(m, n, k);
            let pr = problem(shape, format, 6000 + 10 * fi as u64 + i as u64)?;
            let x: Vec<E> = pr.x.iter().map(|&v| E::from_f32(v)).collect();
            let mut twin = vec![E::default(); (m * n) as usize];
            qgemm_float(&params(shape, format, 0), weights(&pr), &Epilogue::default(), &none, &x, &mut twin);
            let tol = if E::ELEM == Elem::F16 { 2e-3 } else { 1e-5 };
            if E::ELEM == Elem::F32 {
                let reference = cpu::matmul::reference(m as usize, n as usize, k as usize, &pr.x, &pr.dequant);
                let twin32: Vec<f32> = twin.iter().map(|v| v.to_f32()).collect();
                compare(
                    &format!("{format:?} float twin vs reference {shape:?}"),
                    &twin32,
                    &reference,
                    &pr.scale,
                    tol,
                    1e-6,
                )?;
            }
            let xb = gpu.upload("x", &x).map_err(err)?;
            let kernel = QGemm::new(shape, format, Act::Float(E::ELEM));
            let (out, _) = run::<E>(gpu, &kernel, &[&xb], &pr.packed, &epi_data(shape, 1, 0))?;
            compare(&format!("{format:?} {:?} GEMM {shape:?}", E::ELEM), &out, &twin, &pr.scale, tol, 1e-6)?;
        }
    }
    Ok(())
}

fn epilogue_cases(gpu: &Gpu) -> Outcome {
    let epilogues = [
        Epilogue::bias_act(Activation::GeluTanh),
        Epilogue::bias_act(Activation::Silu),
        Epilogue { residual: true, ..Epilogue::default() },
        Epilogue { bias: true, residual: true, gate_rows: Some(16), ..Epilogue::default() },
    ];
    for (i, e) in epilogues.iter().enumerate() {
        let shape = MatmulShape::new(97, 48, 300);
        let gate_rows = e.gate_rows.unwrap_or(1);
        let epi = epi_data(shape, gate_rows, 7100 + i as u64);
        let t = EpilogueInputs { bias: &epi.bias, residual: &epi.residual, gate: &epi.gate };
        let scale_of = |pr: &Problem| -> Vec<f32> { pr.scale.iter().map(|s| s * 1.5 + 2.0).collect() };
        // W1.58A8 with the epilogue.
        let pr = problem(shape, Format::Ternary2, 7000 + i as u64)?;
        let (xq, xs) = act_quant(gpu, shape.n, shape.k, &pr.x)?;
        let mut twin = vec![0f32; (shape.m * shape.n) as usize];
        qgemm_a8(&params(shape, Format::Ternary2, gate_rows), weights(&pr), e, &t, &xq, &xs, &mut twin);
        let xqb = gpu.upload("xq", &xq).map_err(err)?;
        let xsb = gpu.upload("xs", &xs).map_err(err)?;
        let kernel = QGemm::new(shape, Format::Ternary2, Act::Int8 { out: Elem::F32 }).with_epilogue(*e);
        let (out, _) = run::<f32>(gpu, &kernel, &[&xqb, &xsb], &pr.packed, &epi)?;
        compare(&format!("A8 epilogue {e:?}"), &out, &twin, &scale_of(&pr), 1e-5, 1e-5)?;
        // Int4 with f32 activations and the epilogue.
        let format = Format::Int4 { group: 64, zero_point: false };
        let pr = problem(shape, format, 7200 + i as u64)?;
        let mut twin = vec![0f32; (shape.m * shape.n) as usize];
        qgemm_float(&params(shape, format, gate_rows), weights(&pr), e, &t, &pr.x, &mut twin);
        let xb = gpu.upload("x", &pr.x).map_err(err)?;
        let kernel = QGemm::new(shape, format, Act::Float(Elem::F32)).with_epilogue(*e);
        let (out, _) = run::<f32>(gpu, &kernel, &[&xb], &pr.packed, &epi)?;
        compare(&format!("int4 epilogue {e:?}"), &out, &twin, &scale_of(&pr), 1e-5, 1e-5)?;
    }
    Ok(())
}

fn split_case(gpu: &Gpu) -> Outcome {
    let shape = MatmulShape::new(1000, 12, 256);
    let format = Format::Int4 { group: 32, zero_point: true };
    let pr = problem(shape, format, 7300)?;
    let mut twin = vec![0f32; (shape.m * shape.n) as usize];
    qgemm_float(
        &params(shape, format, 0),
        weights(&pr),
        &Epilogue::default(),
        &EpilogueInputs::default(),
        &pr.x,
        &mut twin,
    );
    let xb = gpu.upload("x", &pr.x).map_err(err)?;
    let (out, dispatches) =
        run::<f32>(gpu, &QGemm::new(shape, format, Act::Float(Elem::F32)), &[&xb], &pr.packed, &epi_data(shape, 1, 0))?;
    if dispatches < 2 {
        return Err("int4 weights past a 64 KiB binding limit were not split".into());
    }
    compare("split int4 GEMM", &out, &twin, &pr.scale, 1e-5, 1e-6)?;
    Ok(())
}
