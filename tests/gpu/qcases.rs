//! Low-bit kernels against their twins: activation quantization, and GEMV / small-N over every
//! packed format with f32, f16 and int8 activations, subgroups on and off, on odd shapes. The
//! twins decode the packed words themselves; each is also checked against a plain f32 matmul on
//! `crate::quant`'s dequantized weights, so a packing mistake cannot hide in shader and twin alike.

use half::f16;
use milliwatt::cpu::qmatmul::{ActIn, qgemv, quantize_act};
use milliwatt::cpu::{self, Element};
use milliwatt::kernels::qmatmul::{QMatmulParams, act_row_words, row_words};
use milliwatt::kernels::{Act, ActQuant, Elem, GemvReduce, MatmulShape, QGemv, QGemvVariant};
use milliwatt::quant::{Format, Packed, ScaleMode, quantize};
use milliwatt::{Gpu, Kernel};

use crate::util::{Rng, compare, err, need_f16};
use crate::{Case, Outcome};

pub fn all() -> Vec<(&'static str, Case)> {
    vec![
        ("quantize_act_f32", |b| act_quant_case::<f32>(&b.gpu)),
        ("quantize_act_f16", |b| act_quant_case::<f16>(&b.gpu)),
        ("qgemv_ternary", |b| qgemv_cases(&b.gpu, &[Format::Ternary2])),
        ("qgemv_int8", |b| qgemv_cases(&b.gpu, &[Format::Int8])),
        ("qgemv_int4", |b| {
            qgemv_cases(
                &b.gpu,
                &[
                    Format::Int4 { group: 32, zero_point: false },
                    Format::Int4 { group: 64, zero_point: true },
                    Format::Int4 { group: 128, zero_point: false },
                ],
            )
        }),
        ("qgemv_ternary24", |b| qgemv_cases(&b.gpu, &[Format::Ternary24])),
        ("qgemv_int4s24", |b| {
            qgemv_cases(
                &b.gpu,
                &[
                    Format::Int4Sparse24 { group: 32 },
                    Format::Int4Sparse24 { group: 64 },
                    Format::Int4Sparse24 { group: 128 },
                ],
            )
        }),
        ("qgemv_f16s24", |b| qgemv_cases(&b.gpu, &[Format::F16Sparse24])),
        ("qgemv_split_weights", |b| qgemv_split_case(&b.small_bindings)),
        ("qgemv_epilogues", |b| qgemv_epilogue_case(&b.gpu)),
    ]
}

/// GPU activation quantization of `x` (N x K): (xq words, scales).
pub(crate) fn gpu_act_quant<E: Element>(gpu: &Gpu, n: u32, k: u32, x: &[E]) -> Result<(Vec<u32>, Vec<f32>), String> {
    let xb = gpu.upload("x", x).map_err(err)?;
    let xq = gpu.upload("xq", &vec![0xDEAD_BEEFu32; (n * act_row_words(k)) as usize]).map_err(err)?;
    let xs = gpu.upload("xs", &vec![-1f32; n as usize]).map_err(err)?;
    let p = ActQuant { n, k, elem: E::ELEM }.prepare(gpu, &[(&xb).into(), (&xq).into(), (&xs).into()]).map_err(err)?;
    gpu.run(&[&p]).map_err(err)?;
    Ok((gpu.read(&xq).map_err(err)?, gpu.read(&xs).map_err(err)?))
}

fn act_quant_case<E: Element>(gpu: &Gpu) -> Outcome {
    need_f16::<E>(gpu)?;
    for (i, &(n, k)) in [(1u32, 1u32), (3, 7), (5, 1000), (2, 4095), (8, 64)].iter().enumerate() {
        let mut rng = Rng::new(1000 + i as u64);
        let mut x: Vec<E> = (0..n * k).map(|_| E::from_f32(rng.f32() * 3.0)).collect();
        if n > 2 {
            // An all-zero row takes scale 1.
            for v in &mut x[..k as usize] {
                *v = E::from_f32(0.0);
            }
        }
        let (xq, xs) = gpu_act_quant(gpu, n, k, &x)?;
        check_act_quant(n, k, &x, &xq, &xs)?;
    }
    Ok(())
}

/// The GPU's int8 activations `xq` and scales `xs` of `x` (N x K) against the CPU twin: scales
/// within 1e-6, levels within 1 LSB (WGSL division may be off by an ulp or two), padding zero;
/// and the twin against the plain definition.
pub(crate) fn check_act_quant<E: Element>(n: u32, k: u32, x: &[E], xq: &[u32], xs: &[f32]) -> Result<(), String> {
    let words = act_row_words(k) as usize;
    let mut tq = vec![0u32; n as usize * words];
    let mut ts = vec![0f32; n as usize];
    quantize_act(n as usize, k as usize, words, x, &mut tq, &mut ts);
    for r in 0..n as usize {
        // WGSL division may be off by an ulp or two: scales agree to 1e-6, levels within 1 LSB.
        if (xs[r] - ts[r]).abs() > 1e-6 * ts[r].abs() {
            return Err(format!("({n}, {k}) row {r}: scale {} vs twin {}", xs[r], ts[r]));
        }
        for w in 0..words {
            let (g, t) = (xq[r * words + w], tq[r * words + w]);
            for j in 0..4 {
                let (a, b) = ((g >> (8 * j)) as u8 as i8, (t >> (8 * j)) as u8 as i8);
                if (i16::from(a) - i16::from(b)).abs() > 1 {
                    return Err(format!("({n}, {k}) row {r} element {}: level {a} vs twin {b}", 4 * w + j));
                }
                if 4 * w + j >= k as usize && a != 0 {
                    return Err(format!("({n}, {k}) row {r}: padding element {} is {a}", 4 * w + j));
                }
            }
        }
        // The twin itself: levels are round(x / scale) of the plain definition.
        let absmax = x[r * k as usize..(r + 1) * k as usize].iter().fold(0f32, |m, v| m.max(v.to_f32().abs()));
        let scale = if absmax == 0.0 { 1.0 } else { absmax / 127.0 };
        if ts[r] != scale {
            return Err(format!("twin scale {} vs definition {scale}", ts[r]));
        }
    }
    Ok(())
}

pub(crate) fn params(shape: MatmulShape, format: Format) -> QMatmulParams {
    QGemv::new(shape, format, Act::Float(Elem::F32)).params().expect("format with a kernel")
}

const SHAPES: &[(u32, u32, u32)] =
    &[(1, 1, 1), (7, 2, 33), (127, 3, 1000), (33, 8, 1001), (300, 1, 4095), (65, 4, 64), (130, 1, 1152)];

pub(crate) struct Problem {
    pub(crate) packed: Packed,
    /// Dequantized weights (M x K) from `crate::quant`'s unpacker: the independent reference.
    pub(crate) dequant: Vec<f32>,
    pub(crate) x: Vec<f32>,
}

pub(crate) fn problem(shape: MatmulShape, format: Format, seed: u64) -> Result<Problem, String> {
    let mut rng = Rng::new(seed);
    let w: Vec<f32> = (0..shape.m * shape.k).map(|_| rng.f32()).collect();
    let x: Vec<f32> = (0..shape.n * shape.k).map(|_| rng.f32()).collect();
    let q = quantize(&w, shape.m, shape.k, format, ScaleMode::PerRow).map_err(err)?;
    let packed = q.pack().map_err(err)?;
    let dequant = packed.unpack().map_err(err)?.dequantize().map_err(err)?;
    let (wr, sr, ar) = row_words(format, shape.k).map_err(err)?;
    let expect = (shape.m * wr, shape.m * sr, shape.m * ar);
    let got = (packed.data.len() as u32, packed.scales.len() as u32, packed.aux.len() as u32);
    if expect != got {
        return Err(format!("{format:?} {shape:?}: kernel expects streams of {expect:?} words, packer wrote {got:?}"));
    }
    Ok(Problem { packed, dequant, x })
}

/// Runs a low-bit GEMV on the GPU with the given activation buffers; returns Y as f32.
fn run_qgemv<E: Element>(
    gpu: &Gpu,
    kernel: &QGemv,
    acts: &[&milliwatt::wgpu::Buffer],
    pk: &Packed,
) -> Result<(Vec<E>, usize), String> {
    let shape = kernel.shape;
    let w = gpu.upload("w", &pk.data).map_err(err)?;
    let ws = gpu.upload("w_scales", &pk.scales).map_err(err)?;
    let wz = gpu.upload("w_zeros", &pk.aux).map_err(err)?;
    let y = gpu.upload("y", &vec![E::from_f32(7.0); (shape.m * shape.n) as usize]).map_err(err)?;
    let mut bufs: Vec<milliwatt::TensorRef<'_>> = acts.iter().map(|b| (*b).into()).collect();
    bufs.push((&w).into());
    // F16Sparse24 has no scales: the kernel takes no w_scales buffer then.
    if !pk.scales.is_empty() {
        bufs.push((&ws).into());
    }
    if !pk.aux.is_empty() {
        bufs.push((&wz).into());
    }
    bufs.push((&y).into());
    let epi: Vec<milliwatt::wgpu::Buffer> =
        EPI.with(|e| e.borrow().iter().map(|v| gpu.upload("epilogue", v)).collect::<Result<_, _>>()).map_err(err)?;
    bufs.extend(epi.iter().map(milliwatt::TensorRef::from));
    let p = kernel.prepare(gpu, &bufs).map_err(err)?;
    gpu.run(&[&p]).map_err(err)?;
    Ok((gpu.read(&y).map_err(err)?, p.dispatch_count()))
}

thread_local! {
    /// Epilogue tensors (bias, residual, gate as enabled) that `run_qgemv` binds after `y`.
    static EPI: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Low-bit GEMV with fused epilogues (bias + SiLU, gated residual) against the twin followed by
/// the epilogue twin.
fn qgemv_epilogue_case(gpu: &Gpu) -> Outcome {
    use milliwatt::cpu::epilogue::{EpilogueInputs, epilogue};
    use milliwatt::kernels::{Activation, Epilogue};
    let epilogues = [
        Epilogue::bias_act(Activation::Silu),
        Epilogue { bias: true, residual: true, gate_rows: Some(2), ..Epilogue::default() },
    ];
    let cases = [
        (Format::Ternary2, Act::Int8 { out: Elem::F32 }),
        (Format::Int4 { group: 64, zero_point: true }, Act::Float(Elem::F32)),
    ];
    for (i, (e, &(format, act))) in epilogues.iter().zip(&cases).enumerate() {
        let shape = MatmulShape::new(77, 3, 300);
        let (m, n) = (shape.m as usize, shape.n as usize);
        let pr = problem(shape, format, 3500 + i as u64)?;
        let mut rng = Rng::new(3600 + i as u64);
        let (bias, residual, gate): (Vec<f32>, Vec<f32>, Vec<f32>) =
            (rng.vec(m), rng.vec(m * n), rng.vec(n.div_ceil(2) * m));
        let kernel = QGemv::new(shape, format, act).with_epilogue(*e);
        let v = kernel.choose(gpu.capabilities());
        let mut plain = vec![0f32; m * n];
        let (acts, twin_in): (Vec<milliwatt::wgpu::Buffer>, ActIn<'_, f32>);
        let quantized;
        match act {
            Act::Int8 { .. } => {
                quantized = gpu_act_quant(gpu, shape.n, shape.k, &pr.x)?;
                acts = vec![gpu.upload("xq", &quantized.0).map_err(err)?, gpu.upload("xs", &quantized.1).map_err(err)?];
                twin_in = ActIn::Int8(&quantized.0, &quantized.1);
            }
            Act::Float(_) => {
                acts = vec![gpu.upload("x", &pr.x).map_err(err)?];
                twin_in = ActIn::Float(&pr.x);
            }
        }
        qgemv(
            format,
            &params(shape, format),
            v.wg as usize,
            twin_in,
            &pr.packed.data,
            &pr.packed.scales,
            &pr.packed.aux,
            &mut plain,
        );
        let t = EpilogueInputs { bias: &bias, residual: &residual, gate: &gate };
        let twin: Vec<f32> = (0..m * n).map(|j| epilogue(e, &t, m, plain[j], j / m, j % m, j)).collect();
        let mut tensors = Vec::new();
        if e.bias {
            tensors.push(bias.clone());
        }
        if e.residual {
            tensors.push(residual.clone());
        }
        if e.gate_rows.is_some() {
            tensors.push(gate.clone());
        }
        EPI.with(|c| *c.borrow_mut() = tensors);
        let refs: Vec<&milliwatt::wgpu::Buffer> = acts.iter().collect();
        let result = run_qgemv::<f32>(gpu, &kernel, &refs, &pr.packed);
        EPI.with(|c| c.borrow_mut().clear());
        let (out, _) = result?;
        let scale: Vec<f32> = (0..m * n).map(|_| 300.0).collect();
        compare(&format!("{format:?} {act:?} epilogue {e:?}"), &out, &twin, &scale, 1e-6, 1e-5)?;
    }
    Ok(())
}

fn qgemv_cases(gpu: &Gpu, formats: &[Format]) -> Outcome {
    let caps = gpu.capabilities().clone();
    let mut reduces = vec![GemvReduce::Shared];
    if caps.subgroups {
        reduces.push(GemvReduce::Subgroup);
    }
    for &format in formats {
        for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
            let shape = MatmulShape::new(m, n, k);
            let pr = problem(shape, format, 2000 + i as u64)?;
            let reference = cpu::matmul::reference(m as usize, n as usize, k as usize, &pr.x, &pr.dequant);
            let xa: Vec<f32> = pr.x.iter().map(|v| v.abs()).collect();
            let da: Vec<f32> = pr.dequant.iter().map(|v| v.abs()).collect();
            let scale = cpu::matmul::reference(m as usize, n as usize, k as usize, &xa, &da);
            let p = params(shape, format);
            // Alternate the reduction over shapes (both are covered for every format).
            let reduce = reduces[i % reduces.len()];
            let vcaps = milliwatt::Capabilities { subgroups: reduce == GemvReduce::Subgroup, ..caps.clone() };

            // f32 activations.
            let kernel = QGemv::new(shape, format, Act::Float(Elem::F32));
            let v = QGemv { variant: None, ..kernel.clone() }.choose(&vcaps);
            let kernel = QGemv { variant: Some(v), ..kernel };
            let mut twin = vec![0f32; (m * n) as usize];
            qgemv(
                format,
                &p,
                v.wg as usize,
                ActIn::Float(&pr.x),
                &pr.packed.data,
                &pr.packed.scales,
                &pr.packed.aux,
                &mut twin,
            );
            compare(&format!("{format:?} twin vs f32 reference {shape:?}"), &twin, &reference, &scale, 1e-5, 1e-6)?;
            let xb = gpu.upload("x", &pr.x).map_err(err)?;
            let (out, _) = run_qgemv::<f32>(gpu, &kernel, &[&xb], &pr.packed)?;
            compare(&format!("{format:?} f32 {shape:?} {v:?}"), &out, &twin, &scale, 1e-5, 1e-6)?;
            if k % 4 == 0 {
                let scalar = QGemv { variant: Some(QGemvVariant { vec4: false, ..v }), ..kernel.clone() };
                let (out, _) = run_qgemv::<f32>(gpu, &scalar, &[&xb], &pr.packed)?;
                compare(&format!("{format:?} f32 scalar loads {shape:?}"), &out, &twin, &scale, 1e-5, 1e-6)?;
            }

            // f16 activations and output.
            if caps.f16 {
                let x16: Vec<f16> = pr.x.iter().map(|&v| f16::from_f32(v)).collect();
                let kernel = QGemv { act: Act::Float(Elem::F16), variant: Some(v), ..kernel.clone() };
                let mut twin = vec![f16::ZERO; (m * n) as usize];
                qgemv(
                    format,
                    &p,
                    v.wg as usize,
                    ActIn::Float(&x16),
                    &pr.packed.data,
                    &pr.packed.scales,
                    &pr.packed.aux,
                    &mut twin,
                );
                let xb = gpu.upload("x16", &x16).map_err(err)?;
                let (out, _) = run_qgemv::<f16>(gpu, &kernel, &[&xb], &pr.packed)?;
                compare(&format!("{format:?} f16 {shape:?}"), &out, &twin, &scale, 1e-3, 1e-4)?;
            }

            // int8 activations from the GPU quantizer: the same int8 inputs for GPU and twin.
            let (xq, xs) = gpu_act_quant(gpu, n, k, &pr.x)?;
            let kernel = QGemv {
                act: Act::Int8 { out: Elem::F32 },
                variant: Some(QGemvVariant { vec4: false, ..v }),
                ..kernel.clone()
            };
            let mut twin = vec![0f32; (m * n) as usize];
            qgemv::<f32>(
                format,
                &p,
                v.wg as usize,
                ActIn::Int8(&xq, &xs),
                &pr.packed.data,
                &pr.packed.scales,
                &pr.packed.aux,
                &mut twin,
            );
            let xqb = gpu.upload("xq", &xq).map_err(err)?;
            let xsb = gpu.upload("xs", &xs).map_err(err)?;
            let (out, _) = run_qgemv::<f32>(gpu, &kernel, &[&xqb, &xsb], &pr.packed)?;
            if matches!(format, Format::Ternary2 | Format::Int8 | Format::Ternary24) {
                // Integer dot products, integer-valued f32 sums, the same two final multiplies.
                if out != twin {
                    let i = out.iter().zip(&twin).position(|(a, b)| a != b).unwrap_or(0);
                    return Err(format!(
                        "{format:?} A8 {shape:?} {v:?}: not bit-exact at {i}: {} vs twin {}",
                        out[i], twin[i]
                    )
                    .into());
                }
            } else {
                compare(&format!("{format:?} A8 {shape:?}"), &out, &twin, &scale, 1e-5, 1e-6)?;
            }
            // The A8 twin against the f32 reference on dequantized activations.
            let words = act_row_words(k) as usize;
            let xd: Vec<f32> = (0..(n * k) as usize)
                .map(|i| {
                    let (r, kk) = (i / k as usize, i % k as usize);
                    f32::from((xq[r * words + kk / 4] >> (8 * (kk % 4))) as u8 as i8) * xs[r]
                })
                .collect();
            let ref8 = cpu::matmul::reference(m as usize, n as usize, k as usize, &xd, &pr.dequant);
            compare(&format!("{format:?} A8 twin vs reference {shape:?}"), &twin, &ref8, &scale, 1e-5, 1e-6)?;
        }
    }
    Ok(())
}

/// Packed weights past a (pretend) 64 KiB binding limit are split along M, scales included.
fn qgemv_split_case(gpu: &Gpu) -> Outcome {
    // F16Sparse24 splits data and positions with no scales stream; Ternary24's steps share words.
    let formats = [Format::Int8, Format::Int4 { group: 32, zero_point: true }, Format::F16Sparse24, Format::Ternary24];
    for (i, &format) in formats.iter().enumerate() {
        let shape = MatmulShape::new(2000, 2, 256);
        let pr = problem(shape, format, 3000 + i as u64)?;
        let kernel = QGemv::new(shape, format, Act::Float(Elem::F32));
        let v = kernel.choose(gpu.capabilities());
        let mut twin = vec![0f32; 4000];
        qgemv(
            format,
            &params(shape, format),
            v.wg as usize,
            ActIn::Float(&pr.x),
            &pr.packed.data,
            &pr.packed.scales,
            &pr.packed.aux,
            &mut twin,
        );
        let xb = gpu.upload("x", &pr.x).map_err(err)?;
        let (out, dispatches) = run_qgemv::<f32>(gpu, &kernel, &[&xb], &pr.packed)?;
        if dispatches < 2 {
            return Err(format!("{format:?}: {} weight bytes gave one dispatch", pr.packed.data.len() * 4).into());
        }
        let scale = vec![256.0f32; 4000];
        compare(&format!("{format:?} split"), &out, &twin, &scale, 1e-6, 1e-6)?;
    }
    Ok(())
}
