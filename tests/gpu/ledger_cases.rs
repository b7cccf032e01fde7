//! Ledger honesty: the COUNT_WORK variants of GEMV, GEMM and attention count their own loads,
//! stores and operations with atomic counters (shaders/shared/work_count.wgsl), and on odd shapes
//! the counts equal `Kernel::work` field by field — vec4 and scalar loads, subgroup and
//! workgroup-memory reductions, f32 and f16, weights split past the binding limit, epilogues,
//! dense, block-list and neighbourhood attention. The counting variant's output still equals the
//! CPU twin, so it computes what the normal variant computes.

use half::f16;
use milliwatt::cpu::attention::{attention, attention_i8};
use milliwatt::cpu::epilogue::{EpilogueInputs, epilogue};
use milliwatt::cpu::{self, Element};
use milliwatt::kernels::attention::{KEY_TILE, QUERY_BLOCK};
use milliwatt::kernels::qmatmul::act_row_words;
use milliwatt::kernels::{
    Act, ActQuant, Activation, Attention, Counting, Elem, Epilogue, Gemm, GemmVariant, Gemv, GemvReduce, GemvVariant,
    MatmulParams, MatmulShape, QGemm, QGemv, Sparsity, WorkCounters, block_list, neighbourhood_blocks,
    neighbourhood_tiles,
};
use milliwatt::quant::Format;
use milliwatt::{Gpu, Kernel, TensorRef, Work};

use crate::util::{Rng, compare, err, need_f16, rel_tol, window_mask};
use crate::{Backend, Case, Outcome};

pub fn all() -> Vec<(&'static str, Case)> {
    vec![
        ("ledger_gemv_f32", |b| gemv_case::<f32>(&b.gpu)),
        ("ledger_gemv_f32_no_subgroups", |b| gemv_case::<f32>(&b.fallback)),
        ("ledger_gemv_f16", |b| gemv_case::<f16>(&b.gpu)),
        ("ledger_gemv_epilogues", |b| epilogue_case(&b.gpu, false)),
        ("ledger_gemv_split_weights", |b| split_case(&b.small_bindings, false)),
        ("ledger_gemm_f32", |b| gemm_case::<f32>(&b.gpu)),
        ("ledger_gemm_f16", |b| gemm_case::<f16>(&b.gpu)),
        ("ledger_gemm_epilogues", |b| epilogue_case(&b.gpu, true)),
        ("ledger_gemm_split_weights", |b| split_case(&b.small_bindings, true)),
        ("ledger_attention_dense_f32", |b| attention_dense_case::<f32>(&b.gpu, full(b))),
        ("ledger_attention_dense_f16", |b| attention_dense_case::<f16>(&b.gpu, full(b))),
        ("ledger_attention_block_list", |b| attention_blocks_case(&b.gpu, full(b))),
        ("ledger_attention_neighbourhood", |b| attention_neighbourhood_case(&b.gpu, full(b))),
        ("ledger_attention_int8", |b| attention_int8_case(&b.gpu, full(b))),
        ("ledger_attention_emit_i8", |b| attention_emit_case(&b.gpu, full(b))),
        ("ledger_attention_int8_qkv", |b| attention_qkv_i8_case(&b.gpu, full(b))),
        ("ledger_qgemv_dense_formats", |b| qgemv_case(&b.gpu, &DENSE_FORMATS, full(b))),
        ("ledger_qgemv_24_formats", |b| qgemv_case(&b.gpu, &SPARSE_FORMATS, full(b))),
        ("ledger_qgemv_no_subgroups", |b| qgemv_case(&b.fallback, &[Format::Ternary2, Format::Ternary24], 1)),
        ("ledger_qgemm_a8", |b| qgemm_case(&b.gpu, true, full(b))),
        ("ledger_qgemm_a8_epilogue", |b| qgemm_epilogue_case(&b.gpu)),
        ("ledger_qgemm_a8_grouped_activations", |b| qgemm_grouped_case(&b.gpu)),
        ("ledger_qgemm_a8_int8_output", |b| qgemm_int8_output_case(&b.gpu)),
        ("ledger_qgemm_float", |b| qgemm_case(&b.gpu, false, full(b))),
        ("ledger_elementwise", |b| elementwise_case(&b.gpu)),
        ("ledger_step_slice_f32", |b| step_slice_case::<f32>(&b.gpu)),
        ("ledger_step_slice_f16", |b| step_slice_case::<f16>(&b.gpu)),
        ("ledger_patchify_embeddings", |b| embed_case(&b.gpu)),
        ("ledger_quantize_act_f32", |b| act_quant_case::<f32>(&b.gpu)),
        ("ledger_quantize_act_f16", |b| act_quant_case::<f16>(&b.gpu)),
        ("ledger_counts_past_u32", |b| past_u32_case(&b.gpu)),
    ]
}

/// llvmpipe's GL compiler takes about a minute per attention pipeline without its cache (see
/// attention_cases.rs): on GL each attention case runs its first shape only.
fn full(b: &Backend) -> usize {
    if b.name == "gl" { 1 } else { usize::MAX }
}

/// Activation quantization on odd shapes (one word, a padded last word, rows past the workgroup,
/// the longest row held in registers and one past it):
/// the counts equal `ActQuant::work`, and the counting variant still quantizes as the twin does.
fn act_quant_case<E: Element>(gpu: &Gpu) -> Outcome {
    need_f16::<E>(gpu)?;
    // Rows of 4 to 128 invocations (32 to 1 rows a workgroup, the last workgroup part-empty); the
    // last row is longer than the registers hold (12 · 4 · 128 = 6,144): read twice.
    let shapes = [(1u32, 3u32), (3, 37), (147, 128), (9, 200), (5, 1000), (2, 6144), (2, 6145)];
    for (i, &(n, k)) in shapes.iter().enumerate() {
        let x: Vec<E> = Rng::new(70 + i as u64).vec((n * k) as usize);
        let kernel = ActQuant { n, k, elem: E::ELEM };
        let words = (n * act_row_words(k)) as usize;
        let up = |name, v: &[u32]| gpu.upload(name, v).map_err(err);
        let (xb, xq, xs) =
            (gpu.upload("x", &x).map_err(err)?, up("xq", &vec![7; words])?, up("xs", &vec![7; n as usize])?);
        counts_agree(gpu, &format!("quantize_act ({n}, {k})"), &kernel, &[(&xb).into(), (&xq).into(), (&xs).into()])?;
        let (q, s): (Vec<u32>, Vec<f32>) = (gpu.read(&xq).map_err(err)?, gpu.read(&xs).map_err(err)?);
        crate::qcases::check_act_quant(n, k, &x, &q, &s)?;
    }
    Ok(())
}

const DENSE_FORMATS: [Format; 4] = [
    Format::Ternary2,
    Format::Int8,
    Format::Int4 { group: 32, zero_point: false },
    Format::Int4 { group: 64, zero_point: true },
];
const SPARSE_FORMATS: [Format; 3] = [Format::Ternary24, Format::Int4Sparse24 { group: 64 }, Format::F16Sparse24];

/// Low-bit GEMVs on odd shapes (K off the 16-weight step and the vec4, M off the rows per
/// workgroup, N of 2 and 5; GL and the no-subgroup device the first only), float and int8
/// activations: the counts equal `QGemv::work`, and
/// the counting variant still computes what the twin computes.
fn qgemv_case(gpu: &Gpu, formats: &[Format], shapes: usize) -> Outcome {
    use milliwatt::cpu::qmatmul::{ActIn, qgemv};
    for &format in formats {
        for (i, &(m, n, k)) in [(7u32, 2u32, 33u32), (130, 5, 1000)].iter().take(shapes).enumerate() {
            let shape = MatmulShape::new(m, n, k);
            let pr = crate::qcases::problem(shape, format, 4100 + i as u64)?;
            let pk = &pr.packed;
            let quantized = crate::qcases::gpu_act_quant(gpu, n, k, &pr.x)?;
            for act in [Act::Float(Elem::F32), Act::Int8 { out: Elem::F32 }] {
                let kernel = QGemv::new(shape, format, act);
                let up = |name, v: &[u32]| gpu.upload(name, v).map_err(err);
                let acts = match act {
                    Act::Float(_) => vec![gpu.upload("x", &pr.x).map_err(err)?],
                    Act::Int8 { .. } => vec![up("xq", &quantized.0)?, gpu.upload("xs", &quantized.1).map_err(err)?],
                };
                let streams = [up("w", &pk.data)?, up("w_scales", &pk.scales)?, up("w_aux", &pk.aux)?];
                let y = gpu.upload("y", &vec![7f32; (m * n) as usize]).map_err(err)?;
                let mut bufs: Vec<TensorRef<'_>> = acts.iter().map(TensorRef::from).collect();
                // Empty streams (no scales for F16Sparse24, no aux for most) are not passed.
                for (b, len) in streams.iter().zip([pk.data.len(), pk.scales.len(), pk.aux.len()]) {
                    if len > 0 {
                        bufs.push(b.into());
                    }
                }
                bufs.push((&y).into());
                let what = format!("qgemv {format:?} {act:?} ({m}, {n}, {k})");
                counts_agree(gpu, &what, &kernel, &bufs)?;
                let out: Vec<f32> = gpu.read(&y).map_err(err)?;
                let mut twin = vec![0f32; (m * n) as usize];
                let input = match act {
                    Act::Float(_) => ActIn::Float(&pr.x),
                    Act::Int8 { .. } => ActIn::Int8(&quantized.0, &quantized.1),
                };
                let v = kernel.choose(gpu.capabilities());
                let p = crate::qcases::params(shape, format);
                qgemv(format, &p, v.wg as usize, input, &pk.data, &pk.scales, &pk.aux, &mut twin);
                compare(&what, &out, &twin, &vec![k as f32; out.len()], 1e-5, 1e-6)?;
            }
        }
    }
    Ok(())
}

/// Tiled low-bit GEMMs on odd shapes (M, N off the 64 tile, K off the slice and the vec4 on the
/// second), int8 activations (every format with an A8 kernel) and float ones: the counts equal
/// `QGemm::work`, and the counting variant still computes what the twin computes.
/// The tiled low-bit GEMMs (int8 and float activations) with the whole epilogue (bias, GELU,
/// gated residual: each column's bias loaded once per invocation), on odd shapes and fewer rows
/// than an invocation column: counts equal `QGemm::work`, output equals the twin.
fn qgemm_epilogue_case(gpu: &Gpu) -> Outcome {
    use crate::qgemm_cases::{act_quant, params, problem, weights};
    use milliwatt::cpu::qgemm::{qgemm_a8, qgemm_float};
    let cases = [(Format::Ternary2, 70u32, 37u32, 200u32), (Format::Int8, 131, 70, 64), (Format::Ternary24, 9, 5, 33)];
    for (i, &(format, m, n, k)) in cases.iter().enumerate() {
        for int8 in [true, false] {
            let shape = MatmulShape::new(m, n, k);
            let pr = problem(shape, format, 4300 + i as u64)?;
            let pk = &pr.packed;
            let gate_rows = 10;
            let ep = Epilogue { bias: true, act: Activation::GeluTanh, residual: true, gate_rows: Some(gate_rows) };
            let act = if int8 { Act::Int8 { out: Elem::F32 } } else { Act::Float(Elem::F32) };
            let kernel = QGemm::new(shape, format, act).with_epilogue(ep);
            let mut rng = Rng::new(4400 + i as u64);
            let bias: Vec<f32> = rng.vec(m as usize);
            let residual: Vec<f32> = rng.vec((m * n) as usize);
            let gate: Vec<f32> = rng.vec((n.div_ceil(gate_rows) * m) as usize);
            let (xq, xs) = act_quant(gpu, n, k, &pr.x)?;
            let mut owned = if int8 {
                vec![gpu.upload("xq", &xq).map_err(err)?, gpu.upload("xs", &xs).map_err(err)?]
            } else {
                vec![gpu.upload("x", &pr.x).map_err(err)?]
            };
            owned.push(gpu.upload("w", &pk.data).map_err(err)?);
            owned.push(gpu.upload("w_scales", &pk.scales).map_err(err)?);
            if !pk.aux.is_empty() {
                owned.push(gpu.upload("w_aux", &pk.aux).map_err(err)?);
            }
            let y = gpu.upload("y", &vec![7f32; (m * n) as usize]).map_err(err)?;
            let extra = [
                gpu.upload("bias", &bias).map_err(err)?,
                gpu.upload("residual", &residual).map_err(err)?,
                gpu.upload("gate", &gate).map_err(err)?,
            ];
            let mut bufs: Vec<TensorRef<'_>> = owned.iter().map(TensorRef::from).collect();
            bufs.push((&y).into());
            bufs.extend(extra.iter().map(TensorRef::from));
            let what = format!("qgemm {format:?} {act:?} with bias, GELU, gated residual ({m}, {n}, {k})");
            counts_agree(gpu, &what, &kernel, &bufs)?;
            let out: Vec<f32> = gpu.read(&y).map_err(err)?;
            let mut twin = vec![0f32; (m * n) as usize];
            let p = params(shape, format, gate_rows);
            let t = EpilogueInputs { bias: &bias, residual: &residual, gate: &gate };
            if int8 {
                qgemm_a8(&p, weights(&pr), &ep, &t, &xq, &xs, &mut twin);
            } else {
                qgemm_float(&p, weights(&pr), &ep, &t, &pr.x, &mut twin);
            }
            let scale: Vec<f32> = pr.scale.iter().map(|s| s + 2.0).collect();
            compare(&what, &out, &twin, &scale, 1e-5, 1e-5)?;
        }
    }
    Ok(())
}

/// The tiled int8 GEMMs with a scale per row and group of K (X_GROUPED), on odd shapes: K that
/// pads its last slice (folds past K), X resident, 2:4 zero skipping, a gated residual: the counts
/// equal `QGemm::work`, and the counting variant still computes what the twin computes.
fn qgemm_grouped_case(gpu: &Gpu) -> Outcome {
    use crate::qgemm_cases::{params, problem, weights};
    use milliwatt::cpu::qgemm::qgemm_a8;
    use milliwatt::cpu::qmatmul::quantize_act_grouped;
    let cases = [
        (Format::Ternary2, 70u32, 37u32, 96u32, 16u32, false),
        (Format::Ternary24, 65, 70, 128, 32, true),
        (Format::Int8, 130, 4150, 192, 64, false),
    ];
    for (i, &(format, m, n, k, group, skip)) in cases.iter().enumerate() {
        let shape = MatmulShape::new(m, n, k);
        let pr = problem(shape, format, 4500 + i as u64)?;
        let pk = &pr.packed;
        let ep = Epilogue { bias: true, residual: true, gate_rows: Some(9), ..Epilogue::default() };
        let kernel = QGemm::new(shape, format, Act::Int8 { out: Elem::F32 })
            .with_epilogue(ep)
            .with_skip_zeros(skip)
            .with_x_group(group);
        let (nu, ku, gu) = (n as usize, k as usize, group as usize);
        let (mut xq, mut xs) = (vec![0u32; nu * ku / 4], vec![0f32; nu * ku / gu]);
        quantize_act_grouped(nu, ku, gu, &pr.x, &mut xq, &mut xs);
        let mut rng = Rng::new(4600 + i as u64);
        let bias: Vec<f32> = rng.vec(m as usize);
        let residual: Vec<f32> = rng.vec((m * n) as usize);
        let gate: Vec<f32> = rng.vec((n.div_ceil(9) * m) as usize);
        let mut owned = vec![gpu.upload("xq", &xq).map_err(err)?, gpu.upload("xs", &xs).map_err(err)?];
        owned.push(gpu.upload("w", &pk.data).map_err(err)?);
        owned.push(gpu.upload("w_scales", &pk.scales).map_err(err)?);
        if !pk.aux.is_empty() {
            owned.push(gpu.upload("w_aux", &pk.aux).map_err(err)?);
        }
        let y = gpu.upload("y", &vec![7f32; (m * n) as usize]).map_err(err)?;
        owned.extend([
            gpu.upload("bias", &bias).map_err(err)?,
            gpu.upload("residual", &residual).map_err(err)?,
            gpu.upload("gate", &gate).map_err(err)?,
        ]);
        let mut bufs: Vec<TensorRef<'_>> = owned[..owned.len() - 3].iter().map(TensorRef::from).collect();
        bufs.push((&y).into());
        bufs.extend(owned[owned.len() - 3..].iter().map(TensorRef::from));
        let what = format!("qgemm {format:?} ({m}, {n}, {k}) activation groups of {group}, skip zeros {skip}");
        counts_agree(gpu, &what, &kernel, &bufs)?;
        let out: Vec<f32> = gpu.read(&y).map_err(err)?;
        let mut p = params(shape, format, 9);
        p.x_group_words = group / 4;
        let mut twin = vec![0f32; (m * n) as usize];
        let t = EpilogueInputs { bias: &bias, residual: &residual, gate: &gate };
        qgemm_a8(&p, weights(&pr), &ep, &t, &xq, &xs, &mut twin);
        let scale: Vec<f32> = pr.scale.iter().map(|s| s * 1.5 + 2.0).collect();
        compare(&what, &out, &twin, &scale, 1e-5, 1e-5)?;
    }
    Ok(())
}

/// The tiled int8 GEMMs writing int8 with a scale per row and group of columns (Y_I8), odd N and
/// K, a bias and GELU, X resident, 2:4 zero skipping: counts equal `QGemm::work`, and the
/// counting variant's output equals the twin's quantized.
fn qgemm_int8_output_case(gpu: &Gpu) -> Outcome {
    use crate::qgemm_cases::{act_quant, compare_int8_output, params, problem, run_int8_out, weights};
    use milliwatt::cpu::qgemm::qgemm_a8;
    let cases = [
        (Format::Ternary2, 96u32, 37u32, 200u32, 32u32, false, Activation::GeluTanh),
        (Format::Ternary24, 48, 70, 128, 16, true, Activation::None),
        (Format::Int8, 192, 4150, 128, 64, false, Activation::None),
    ];
    for (i, &(format, m, n, k, group, skip, a)) in cases.iter().enumerate() {
        let shape = MatmulShape::new(m, n, k);
        let pr = problem(shape, format, 4700 + i as u64)?;
        let pk = &pr.packed;
        let ep = Epilogue::bias_act(a);
        let kernel = QGemm::new(shape, format, Act::Int8 { out: Elem::F32 })
            .with_epilogue(ep)
            .with_skip_zeros(skip)
            .with_int8_output(group);
        let (xq, xs) = act_quant(gpu, n, k, &pr.x)?;
        let bias: Vec<f32> = Rng::new(4800 + i as u64).vec(m as usize);
        let (xqb, xsb) = (gpu.upload("xq", &xq).map_err(err)?, gpu.upload("xs", &xs).map_err(err)?);
        let mut owned = vec![gpu.upload("w", &pk.data).map_err(err)?, gpu.upload("w_scales", &pk.scales).map_err(err)?];
        if !pk.aux.is_empty() {
            owned.push(gpu.upload("w_aux", &pk.aux).map_err(err)?);
        }
        let yq = gpu.upload("yq", &vec![0u32; (m * n / 4) as usize]).map_err(err)?;
        let ys = gpu.upload("ys", &vec![7f32; (n * m / group) as usize]).map_err(err)?;
        let bb = gpu.upload("bias", &bias).map_err(err)?;
        let mut bufs: Vec<TensorRef<'_>> = vec![(&xqb).into(), (&xsb).into()];
        bufs.extend(owned.iter().map(TensorRef::from));
        bufs.extend([TensorRef::from(&yq), TensorRef::from(&ys), TensorRef::from(&bb)]);
        let what = format!("qgemm {format:?} ({m}, {n}, {k}) int8 output, groups of {group}, {a:?}, skip {skip}");
        counts_agree(gpu, &what, &kernel, &bufs)?;
        let (words, scales): (Vec<u32>, Vec<f32>) = (gpu.read(&yq).map_err(err)?, gpu.read(&ys).map_err(err)?);
        let mut y = vec![0f32; (m * n) as usize];
        let t = EpilogueInputs { bias: &bias, ..EpilogueInputs::default() };
        qgemm_a8(&params(shape, format, 0), weights(&pr), &ep, &t, &xq, &xs, &mut y);
        compare_int8_output(&what, (&words, &scales), &y, (n as usize, m as usize, group as usize))?;
        // The plain kernel writes what the counting one wrote.
        let plain = run_int8_out(gpu, &kernel, &[&xqb, &xsb], pk, &bias)?;
        if plain.0 != words || plain.1 != scales {
            return Err(format!("{what}: the counting variant's output differs from the kernel's").into());
        }
    }
    Ok(())
}

fn qgemm_case(gpu: &Gpu, int8: bool, shapes: usize) -> Outcome {
    use crate::qgemm_cases::{act_quant, params, problem, weights};
    use milliwatt::cpu::epilogue::EpilogueInputs;
    use milliwatt::cpu::qgemm::{qgemm_a8, qgemm_float};
    let formats: &[Format] = if int8 {
        &[Format::Ternary2, Format::Ternary24, Format::Int8, Format::Int4 { group: 64, zero_point: true }]
    } else {
        &[Format::Ternary2, Format::Ternary24, Format::Int8, Format::Int4 { group: 32, zero_point: true }]
    };
    for &format in formats {
        // The last shape runs the X-resident variant with int8 activations (K <= 256, 65 tiles of N).
        for (i, &(m, n, k)) in
            [(70u32, 37u32, 200u32), (65, 70, 1001), (130, 4150, 200)].iter().take(shapes).enumerate()
        {
            let shape = MatmulShape::new(m, n, k);
            let pr = problem(shape, format, 4200 + i as u64)?;
            let pk = &pr.packed;
            let (act, acts) = if int8 {
                let (xq, xs) = act_quant(gpu, n, k, &pr.x)?;
                (Act::Int8 { out: Elem::F32 }, Some((xq, xs)))
            } else {
                (Act::Float(Elem::F32), None)
            };
            let kernels = if int8 && format == Format::Ternary24 {
                vec![QGemm::new(shape, format, act), QGemm::new(shape, format, act).with_skip_zeros(true)]
            } else {
                vec![QGemm::new(shape, format, act)]
            };
            let mut bufs_owned = match &acts {
                Some((xq, xs)) => vec![gpu.upload("xq", xq).map_err(err)?, gpu.upload("xs", xs).map_err(err)?],
                None => vec![gpu.upload("x", &pr.x).map_err(err)?],
            };
            bufs_owned.push(gpu.upload("w", &pk.data).map_err(err)?);
            bufs_owned.push(gpu.upload("w_scales", &pk.scales).map_err(err)?);
            if !pk.aux.is_empty() {
                bufs_owned.push(gpu.upload("w_zeros", &pk.aux).map_err(err)?);
            }
            let y = gpu.upload("y", &vec![7f32; (m * n) as usize]).map_err(err)?;
            let mut bufs: Vec<TensorRef<'_>> = bufs_owned.iter().map(TensorRef::from).collect();
            bufs.push((&y).into());
            for kernel in &kernels {
                let what = format!("qgemm {format:?} {act:?} ({m}, {n}, {k}) skip zeros {}", kernel.skip_zeros);
                counts_agree(gpu, &what, kernel, &bufs)?;
                let out: Vec<f32> = gpu.read(&y).map_err(err)?;
                let mut twin = vec![0f32; (m * n) as usize];
                let (p, none) = (params(shape, format, 0), EpilogueInputs::default());
                match &acts {
                    Some((xq, xs)) => qgemm_a8(&p, weights(&pr), &Epilogue::default(), &none, xq, xs, &mut twin),
                    None => qgemm_float(&p, weights(&pr), &Epilogue::default(), &none, &pr.x, &mut twin),
                }
                compare(&what, &out, &twin, &pr.scale, 1e-5, 1e-6)?;
            }
        }
    }
    Ok(())
}

/// Every element-wise operation, vec4 and scalar lengths, with and without a broadcast `b`: the
/// counts equal `Elementwise::work`, and the counting variant computes what the twin computes.
fn elementwise_case(gpu: &Gpu) -> Outcome {
    use milliwatt::cpu::elementwise::elementwise_broadcast;
    use milliwatt::kernels::{Broadcast, Elementwise, EltOp};
    let ops =
        [EltOp::Add, EltOp::Mul, EltOp::Scale { alpha: 0.5, beta: -1.0 }, EltOp::Silu, EltOp::GeluTanh, EltOp::Copy];
    for (i, &op) in ops.iter().enumerate() {
        for (len, broadcast) in [(1001u32, None), (1000, None), (1000, Some(Broadcast { cols: 40, group: 5 }))] {
            if broadcast.is_some() && !op.broadcasts() {
                continue;
            }
            let mut kernel = Elementwise::new(op, len, Elem::F32);
            if let Some(b) = broadcast {
                kernel = kernel.with_broadcast(b);
            }
            let mut rng = Rng::new(4300 + i as u64);
            let b_len = broadcast.map_or(len, |b| len / (b.cols * b.group) * b.cols) as usize;
            let (a, b): (Vec<f32>, Vec<f32>) = (rng.vec(len as usize), rng.vec(b_len));
            let out = gpu.upload("out", &vec![7f32; len as usize]).map_err(err)?;
            let (ab, bb) = (gpu.upload("a", &a).map_err(err)?, gpu.upload("b", &b).map_err(err)?);
            let bufs: Vec<TensorRef<'_>> = match op {
                EltOp::Copy => vec![(&bb).into(), (&out).into()],
                EltOp::Add | EltOp::Mul => vec![(&ab).into(), (&bb).into(), (&out).into()],
                _ => vec![(&ab).into(), (&out).into()],
            };
            let what = format!("elementwise {op:?} {len} {broadcast:?}");
            counts_agree(gpu, &what, &kernel, &bufs)?;
            let got: Vec<f32> = gpu.read(&out).map_err(err)?;
            let mut twin = vec![0f32; len as usize];
            let (src, other) = if op == EltOp::Copy { (&b, None) } else { (&a, Some(&b[..])) };
            elementwise_broadcast(op, src, other, broadcast, &mut twin);
            compare(&what, &got, &twin, &vec![1.0; got.len()], 1e-5, 1e-6)?;
        }
    }
    Ok(())
}

/// A step's slice of an every-step tensor, vec4 and scalar lengths, at the first, a middle and the
/// last step and with the counter past the last (it reads the last): the counts equal
/// `StepSlice::work`, and the counting variant copies what the twin copies.
fn step_slice_case<E: Element>(gpu: &Gpu) -> Outcome {
    use milliwatt::kernels::StepSlice;
    need_f16::<E>(gpu)?;
    for (len, steps) in [(1001u32, 3u32), (1000, 3), (36, 1), (7, 50)] {
        let mut rng = Rng::new(4400 + u64::from(len));
        let src: Vec<E> = rng.vec((len * steps) as usize);
        let src_buf = gpu.upload("src", &src).map_err(err)?;
        for step in [0, steps / 2, steps - 1, steps + 4] {
            let step_buf = gpu.upload("step", &[step]).map_err(err)?;
            let dst = gpu.upload("dst", &vec![E::from_f32(7.0); len as usize]).map_err(err)?;
            let kernel = StepSlice { len, steps, elem: E::ELEM };
            let what = format!("step_slice {:?} len {len} steps {steps} at {step}", E::ELEM);
            counts_agree(gpu, &what, &kernel, &[(&step_buf).into(), (&src_buf).into(), (&dst).into()])?;
            let got: Vec<E> = gpu.read(&dst).map_err(err)?;
            let mut twin = vec![E::from_f32(0.0); len as usize];
            cpu::elementwise::step_slice(step, &src, &mut twin);
            if got.iter().zip(&twin).any(|(g, t)| g.to_f32().to_bits() != t.to_f32().to_bits()) {
                return Err(format!("{what}: the slice differs from the twin's").into());
            }
        }
    }
    Ok(())
}

/// Patchify, unpatchify (with extra token channels), the timestep embedding (even and odd
/// widths) and the class-embedding lookup on odd geometries: the counts equal `work()`, and the counting variants compute what the twins do.
fn embed_case(gpu: &Gpu) -> Outcome {
    use milliwatt::kernels::{ClassEmbed, PatchGeometry, Patchify, TimestepEmbed, Unpatchify};
    for (i, &(images, channels, height, width, patch)) in
        [(2u32, 3u32, 8u32, 12u32, 2u32), (3, 1, 9, 6, 3)].iter().enumerate()
    {
        let g = PatchGeometry { images, channels, height, width, patch };
        let mut rng = Rng::new(4400 + i as u64);
        let image: Vec<f32> = rng.vec((images * channels * height * width) as usize);
        let (ib, tb) =
            (gpu.upload("image", &image).map_err(err)?, gpu.upload("tokens", &vec![7f32; image.len()]).map_err(err)?);
        let kernel = Patchify { geometry: g, elem: Elem::F32 };
        let what = format!("patchify {g:?}");
        counts_agree(gpu, &what, &kernel, &[(&ib).into(), (&tb).into()])?;
        let mut twin = vec![0f32; image.len()];
        cpu::embed::patchify(&g, &image, &mut twin);
        if gpu.read::<f32>(&tb).map_err(err)? != twin {
            return Err(format!("{what}: the counting variant differs from the twin").into());
        }
        let token_channels = channels + 1;
        let tokens: Vec<f32> = rng.vec((images * g.tokens() * patch * patch * token_channels) as usize);
        let (tb, ob) =
            (gpu.upload("tokens", &tokens).map_err(err)?, gpu.upload("image", &vec![7f32; image.len()]).map_err(err)?);
        let kernel = Unpatchify { geometry: g, token_channels, elem: Elem::F32 };
        let what = format!("unpatchify {g:?}");
        counts_agree(gpu, &what, &kernel, &[(&tb).into(), (&ob).into()])?;
        let mut twin = vec![0f32; image.len()];
        cpu::embed::unpatchify(&g, token_channels as usize, &tokens, &mut twin);
        if gpu.read::<f32>(&ob).map_err(err)? != twin {
            return Err(format!("{what}: the counting variant differs from the twin").into());
        }
    }
    // The timestep embedding, odd width (its last value 0), f32.
    for dim in [256u32, 37] {
        let kernel = TimestepEmbed { images: 3, dim, max_period: 10_000.0, time_scale: 1000.0, elem: Elem::F32 };
        let freqs = milliwatt::kernels::timestep_freqs(dim, 10_000.0);
        let t = [0.0f32, 0.25, 1.0];
        let (tb, fb) = (gpu.upload("t", &t).map_err(err)?, gpu.upload("freqs", &freqs).map_err(err)?);
        let eb = gpu.upload("emb", &vec![7f32; (3 * dim) as usize]).map_err(err)?;
        counts_agree(gpu, &format!("timestep_embed {dim}"), &kernel, &[(&tb).into(), (&fb).into(), (&eb).into()])?;
        let mut twin = vec![0f32; (3 * dim) as usize];
        cpu::embed::timestep_embed(dim as usize, &freqs, 1000.0, &t, &mut twin);
        let got: Vec<f32> = gpu.read(&eb).map_err(err)?;
        compare(&format!("timestep_embed {dim} counting variant"), &got, &twin, &vec![1.0; got.len()], 1e-6, 1e-6)?;
    }
    let (images, dim, classes) = (5u32, 37u32, 10u32);
    let mut rng = Rng::new(4410);
    let table: Vec<f32> = rng.vec(((classes + 1) * dim) as usize);
    let labels: Vec<u32> = vec![0, 9, 10, 3, 42];
    let kernel = ClassEmbed { images, dim, classes, elem: Elem::F32 };
    let (lb, tb) = (gpu.upload("labels", &labels).map_err(err)?, gpu.upload("table", &table).map_err(err)?);
    let eb = gpu.upload("emb", &vec![7f32; (images * dim) as usize]).map_err(err)?;
    counts_agree(gpu, "class_embed", &kernel, &[(&lb).into(), (&tb).into(), (&eb).into()])?;
    let mut twin = vec![0f32; (images * dim) as usize];
    cpu::embed::class_embed(dim as usize, (classes + 1) as usize, &labels, &table, &mut twin);
    if gpu.read::<f32>(&eb).map_err(err)? != twin {
        return Err("class_embed: the counting variant differs from the twin".into());
    }
    Ok(())
}

/// The counts agree with the model, field by field; the error names every field that differs.
pub(crate) fn agree(what: &str, counted: Work, model: Work) -> Result<(), String> {
    let fields = [
        ("f32_add", counted.f32_add, model.f32_add),
        ("f32_mul", counted.f32_mul, model.f32_mul),
        ("f16_add", counted.f16_add, model.f16_add),
        ("f16_mul", counted.f16_mul, model.f16_mul),
        ("i8_mul", counted.i8_mul, model.i8_mul),
        ("i8_add", counted.i8_add, model.i8_add),
        ("i32_add", counted.i32_add, model.i32_add),
        ("i32_mul", counted.i32_mul, model.i32_mul),
        ("bit_ops", counted.bit_ops, model.bit_ops),
        ("dram_read", counted.dram_read, model.dram_read),
        ("dram_write", counted.dram_write, model.dram_write),
        ("sram_read", counted.sram_read, model.sram_read),
        ("sram_write", counted.sram_write, model.sram_write),
    ];
    let diffs: Vec<String> = fields
        .iter()
        .filter(|(_, c, m)| c != m)
        .map(|(f, c, m)| format!("{f}: shader counted {c}, work() says {m} ({:+})", *m as i128 - *c as i128))
        .collect();
    if diffs.is_empty() { Ok(()) } else { Err(format!("{what}: {}", diffs.join("; "))) }
}

/// Runs `kernel`'s counting variant over `bufs` and checks its counts equal `kernel.work()`.
pub(crate) fn counts_agree<K: Kernel + Clone>(gpu: &Gpu, what: &str, kernel: &K, bufs: &[TensorRef<'_>]) -> Outcome
where
    Counting<K>: Kernel,
{
    let counted = run_counting(gpu, &Counting(kernel.clone()), bufs)?;
    Ok(agree(what, counted, kernel.work(gpu.capabilities()).map_err(err)?)?)
}

/// Runs a counting kernel over `bufs` plus a zeroed counters buffer; returns the counts.
pub(crate) fn run_counting(gpu: &Gpu, kernel: &dyn Kernel, bufs: &[TensorRef<'_>]) -> Result<Work, String> {
    let counters = gpu.upload("counters", &[WorkCounters::default()]).map_err(err)?;
    let mut all = bufs.to_vec();
    all.push((&counters).into());
    let p = kernel.prepare(gpu, &all).map_err(err)?;
    if !p.label().contains("COUNT_WORK") {
        return Err(format!("{} is not the counting variant", p.label()));
    }
    if p.work() != kernel.work(gpu.capabilities()).map_err(err)? {
        return Err("the prepared work is not the kernel's model".into());
    }
    gpu.run(&[&p]).map_err(err)?;
    let c: Vec<WorkCounters> = gpu.read(&counters).map_err(err)?;
    Ok(c[0].to_work())
}

struct MatmulData<E> {
    shape: MatmulShape,
    x: Vec<E>,
    w: Vec<E>,
    bias: Vec<E>,
    residual: Vec<E>,
    gate: Vec<E>,
    /// Per output element, the sum of |x| * |w| over k.
    scale: Vec<f32>,
}

const GATE_ROWS: u32 = 2;

fn matmul_data<E: Element>(shape: MatmulShape, seed: u64) -> MatmulData<E> {
    let (m, n, k) = (shape.m as usize, shape.n as usize, shape.k as usize);
    let mut rng = Rng::new(seed);
    let x: Vec<E> = rng.vec(n * k);
    let w: Vec<E> = rng.vec(m * k);
    let abs = |v: &[E]| -> Vec<f32> { v.iter().map(|e| e.to_f32().abs()).collect() };
    let scale = cpu::matmul::reference(m, n, k, &abs(&x), &abs(&w));
    let bias = rng.vec(m);
    let residual = rng.vec(m * n);
    let gate = rng.vec(n.div_ceil(GATE_ROWS as usize) * m);
    MatmulData { shape, x, w, bias, residual, gate, scale }
}

fn params(shape: MatmulShape) -> MatmulParams {
    MatmulParams::whole(shape, &Epilogue { gate_rows: Some(GATE_ROWS), ..Epilogue::default() })
}

fn f32s<E: Element>(v: &[E]) -> Vec<f32> {
    v.iter().map(|e| e.to_f32()).collect()
}

/// Runs the counting variant of a GEMV or GEMM with epilogue `e`: its output and its counts.
fn run_matmul<E: Element>(
    gpu: &Gpu,
    kernel: &dyn Kernel,
    e: &Epilogue,
    d: &MatmulData<E>,
) -> Result<(Vec<E>, Work), String> {
    let up = |name, v: &[E]| gpu.upload(name, v).map_err(err);
    let (x, w, y) = (up("x", &d.x)?, up("w", &d.w)?, up("y", &vec![E::from_f32(7.0); d.residual.len()])?);
    let (bias, residual, gate) = (up("bias", &d.bias)?, up("residual", &d.residual)?, up("gate", &d.gate)?);
    let mut bufs: Vec<TensorRef<'_>> = vec![(&x).into(), (&w).into(), (&y).into()];
    if e.bias {
        bufs.push((&bias).into());
    }
    if e.residual {
        bufs.push((&residual).into());
    }
    if e.gate_rows.is_some() {
        bufs.push((&gate).into());
    }
    let counted = run_counting(gpu, kernel, &bufs)?;
    Ok((gpu.read(&y).map_err(err)?, counted))
}

/// The twin of a GEMV (`gemv: Some(variant)`) or GEMM with epilogue `e`.
fn twin<E: Element>(d: &MatmulData<E>, e: &Epilogue, gemv: Option<GemvVariant>) -> Vec<E> {
    let shape = d.shape;
    let (m, n) = (shape.m as usize, shape.n as usize);
    let (bias, residual, gate) = (f32s(&d.bias), f32s(&d.residual), f32s(&d.gate));
    let t = EpilogueInputs { bias: &bias, residual: &residual, gate: &gate };
    let mut acc = vec![0f32; m * n];
    match gemv {
        // The GEMV twin rounds to the element type: its epilogue cases are f32.
        Some(v) => cpu::matmul::gemv(&params(shape), v.wg as usize, v.vec4, &f32s(&d.x), &f32s(&d.w), &mut acc),
        None => cpu::matmul::gemm(&params(shape), &f32s(&d.x), &f32s(&d.w), &mut acc),
    }
    (0..m * n).map(|j| E::from_f32(epilogue(e, &t, m, acc[j], j / m, j % m, j))).collect()
}

/// Checks one counting matmul: counts against the model, output against the twin.
fn check_matmul<E: Element>(
    gpu: &Gpu,
    kernel: &dyn Kernel,
    e: &Epilogue,
    d: &MatmulData<E>,
    gemv: Option<GemvVariant>,
    what: &str,
) -> Result<(), String> {
    let (out, counted) = run_matmul(gpu, kernel, e, d)?;
    agree(what, counted, kernel.work(gpu.capabilities()).map_err(err)?)?;
    let scale: Vec<f32> = d.scale.iter().map(|s| s * 2.0 + 2.0).collect();
    compare(what, &out, &twin(d, e, gemv), &scale, rel_tol(E::ELEM) * 2.0, 1e-5)
}

/// GEMV shapes: M = 37 (not a multiple of the rows per workgroup), K odd and K % 4 == 0, N = 1..3
/// and 8; the chosen variant, scalar loads, both reductions, and rows / workgroup sizes other
/// than the chosen ones.
fn gemv_case<E: Element>(gpu: &Gpu) -> Outcome {
    need_f16::<E>(gpu)?;
    let caps = gpu.capabilities();
    let mut reduces = vec![GemvReduce::Shared];
    if caps.subgroups {
        reduces.push(GemvReduce::Subgroup);
    }
    let shapes = [(37u32, 1u32, 53u32), (37, 2, 52), (37, 3, 53), (37, 3, 52), (5, 8, 7), (130, 1, 1000)];
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        let shape = MatmulShape::new(m, n, k);
        let d = matmul_data::<E>(shape, 20_000 + i as u64);
        let chosen = Gemv::new(shape, E::ELEM).choose(caps);
        let mut variants = vec![chosen];
        for &reduce in &reduces {
            variants.push(GemvVariant { reduce, vec4: false, ..chosen });
            variants.push(GemvVariant { reduce, wg: 32, rows: 3.min(32 / n), ..chosen });
        }
        for v in variants {
            let kernel = Gemv { variant: Some(v), ..Gemv::new(shape, E::ELEM) };
            let what = format!("gemv {shape:?} {v:?}");
            check_matmul(gpu, &kernel.counting(), &Epilogue::default(), &d, Some(v), &what)?;
        }
    }
    Ok(())
}

/// GEMM shapes: part-filled tiles (67 x 45 x 29: two tile rows, one tile column, two slices), more
/// than a tile in every direction, K odd (scalar loads) and K % 4 == 0 (vec4, and scalar forced).
fn gemm_case<E: Element>(gpu: &Gpu) -> Outcome {
    need_f16::<E>(gpu)?;
    let shapes = [(67u32, 45u32, 29u32), (67, 45, 28), (130, 70, 37), (130, 70, 36), (1, 1, 1)];
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        let shape = MatmulShape::new(m, n, k);
        let d = matmul_data::<E>(shape, 21_000 + i as u64);
        let mut variants = vec![None];
        if k % 4 == 0 {
            variants.push(Some(GemmVariant { vec4: false }));
        }
        for v in variants {
            let kernel = Gemm { variant: v, ..Gemm::new(shape, E::ELEM) };
            let what = format!("gemm {shape:?} {:?}", kernel.choose());
            check_matmul(gpu, &kernel.counting(), &Epilogue::default(), &d, None, &what)?;
        }
    }
    Ok(())
}

/// Every epilogue part: bias, GELU, SiLU, residual, gate.
fn epilogue_case(gpu: &Gpu, gemm: bool) -> Outcome {
    let epilogues = [
        Epilogue::bias_act(Activation::GeluTanh),
        Epilogue::bias_act(Activation::Silu),
        Epilogue { act: Activation::GeluTanh, residual: true, gate_rows: Some(GATE_ROWS), ..Epilogue::default() },
    ];
    for (i, e) in epilogues.iter().enumerate() {
        let shape = if gemm { MatmulShape::new(67, 45, 29) } else { MatmulShape::new(37, 3, 53) };
        let d = matmul_data::<f32>(shape, 22_000 + i as u64);
        let what = format!("{} {shape:?} {e:?}", if gemm { "gemm" } else { "gemv" });
        if gemm {
            let kernel = Gemm::new(shape, Elem::F32).with_epilogue(*e);
            check_matmul(gpu, &kernel.counting(), e, &d, None, &what)?;
        } else {
            let kernel = Gemv::new(shape, Elem::F32).with_epilogue(*e);
            let v = kernel.choose(gpu.capabilities());
            check_matmul(gpu, &kernel.counting(), e, &d, Some(v), &what)?;
        }
    }
    Ok(())
}

/// A 64 KiB binding limit splits 350 rows of 384 bytes into 170 + 170 + 10: each dispatch has its
/// own part-filled last workgroup (89 GEMV workgroups of 4 rows, not 88; 7 GEMM tile rows, not 6).
fn split_case(gpu: &Gpu, gemm: bool) -> Outcome {
    let shape = MatmulShape::new(350, if gemm { 45 } else { 3 }, 96);
    let d = matmul_data::<f32>(shape, 23_000);
    let e = Epilogue::default();
    let what = format!("split {} {shape:?}", if gemm { "gemm" } else { "gemv" });
    if gemm {
        check_matmul(gpu, &Gemm::new(shape, Elem::F32).counting(), &e, &d, None, &what)?;
    } else {
        let kernel = Gemv::new(shape, Elem::F32);
        let v = kernel.choose(gpu.capabilities());
        check_matmul(gpu, &kernel.counting(), &e, &d, Some(v), &what)?;
    }
    Ok(())
}

/// Runs a counting attention and checks its counts; returns its output.
fn run_attention<E: Element>(gpu: &Gpu, k: &Attention, qkv: &[E], blocks: Option<&[u32]>) -> Result<Vec<E>, String> {
    let n = (k.images * k.tokens * k.heads * k.head_dim) as usize;
    let qb = gpu.upload("qkv", qkv).map_err(err)?;
    let ob = gpu.upload("out", &vec![E::from_f32(7.0); n]).map_err(err)?;
    let bb = gpu.upload("blocks", blocks.unwrap_or(&[0])).map_err(err)?;
    let mut bufs: Vec<TensorRef<'_>> = vec![(&qb).into()];
    if blocks.is_some() {
        bufs.push((&bb).into());
    }
    bufs.push((&ob).into());
    let counting = k.clone().counting();
    let counted = run_counting(gpu, &counting, &bufs)?;
    let what =
        format!("attention {}x{} heads {} d {} {:?} {:?}", k.images, k.tokens, k.heads, k.head_dim, k.sparsity, k.elem);
    agree(&what, counted, k.work(gpu.capabilities()).map_err(err)?)?;
    gpu.read(&ob).map_err(err)
}

type Mask<'a> = Option<&'a dyn Fn(usize, usize) -> bool>;

/// The int8 output (EMIT_I8) of float and int8 attention, dense and neighbourhood, odd shapes:
/// counts equal `Attention::work`, and the dequantized output lies within a code (plus the int8
/// twin's own tolerance) of the twin's.
fn attention_emit_case(gpu: &Gpu, limit: usize) -> Outcome {
    let neighbourhood = Sparsity::Neighbourhood { grid_h: 11, grid_w: 7, window: 3 };
    let cases = [
        (1u32, 77u32, 3u32, 36u32, Sparsity::Dense, false),
        (2, 130, 2, 64, Sparsity::Dense, true),
        (1, 77, 2, 64, neighbourhood, true),
    ];
    for (i, (images, tokens, heads, d, sparsity, int8)) in cases.into_iter().enumerate().take(limit) {
        let qkv: Vec<f32> = Rng::new(29_000 + i as u64).vec((images * tokens * 3 * heads * d) as usize);
        let k = Attention {
            sparsity: sparsity.clone(),
            int8,
            emit_i8: true,
            ..Attention::dense(images, tokens, heads, d, Elem::F32)
        };
        let rows = (images * tokens * heads) as usize;
        let qb = gpu.upload("qkv", &qkv).map_err(err)?;
        let oq = gpu.upload("out_q", &vec![0u32; rows * d as usize / 4]).map_err(err)?;
        let os = gpu.upload("out_scales", &vec![7f32; rows]).map_err(err)?;
        let window = match sparsity {
            Sparsity::Neighbourhood { grid_h, grid_w, window } => Some((grid_h, grid_w, window)),
            _ => None,
        };
        let blocks = window.map(|(gh, gw, w)| neighbourhood_blocks(tokens, gh, gw, w));
        let mask = window.map(|(gh, gw, w)| window_mask(gh, gw, w));
        let bb = gpu.upload("blocks", blocks.as_deref().unwrap_or(&[0])).map_err(err)?;
        let mut bufs: Vec<TensorRef<'_>> = vec![(&qb).into()];
        if blocks.is_some() {
            bufs.push((&bb).into());
        }
        bufs.push((&oq).into());
        bufs.push((&os).into());
        let what = format!("attention {images}x{tokens} heads {heads} d {d} {sparsity:?} int8 {int8} emitting int8");
        counts_agree(gpu, &what, &k, &bufs)?;
        let (codes, scales): (Vec<u32>, Vec<f32>) = (gpu.read(&oq).map_err(err)?, gpu.read(&os).map_err(err)?);
        let (du, mut twin) = (d as usize, vec![0f32; rows * d as usize]);
        let (ii, tt, hh) = (images as usize, tokens as usize, heads as usize);
        let mask_ref = mask.as_ref().map(|m| m as &dyn Fn(usize, usize) -> bool);
        if int8 {
            let lists = window.map(|(gh, gw, w)| neighbourhood_tiles(tokens, gh, gw, w));
            attention_i8(ii, tt, hh, du, &qkv, mask_ref, lists.as_deref(), &mut twin);
        } else {
            attention(ii, tt, hh, du, &qkv, mask_ref, &mut twin);
        }
        for (j, t) in twin.iter().enumerate() {
            let s = scales[j / du];
            let v = f32::from((codes[j / 4] >> (8 * (j % 4))) as u8 as i8) * s;
            if (v - t).abs() > 1.01 * s + 2e-4 {
                return Err(format!("{what}: element {j}: {v} vs twin {t} (scale {s})").into());
            }
        }
    }
    Ok(())
}

/// Int8 Q, K, V input (QKV_I8) to float and int8 attention, dense and neighbourhood, float and
/// int8 output: counts equal `Attention::work`.
fn attention_qkv_i8_case(gpu: &Gpu, limit: usize) -> Outcome {
    use crate::attention_cases::quantize_qkv;
    let neighbourhood = Sparsity::Neighbourhood { grid_h: 11, grid_w: 7, window: 3 };
    let cases = [
        (1u32, 77u32, 3u32, 32u32, Sparsity::Dense, false, false),
        (2, 130, 2, 64, Sparsity::Dense, true, true),
        (1, 77, 2, 16, neighbourhood, true, false),
    ];
    for (i, (images, tokens, heads, d, sparsity, int8, emit)) in cases.into_iter().enumerate().take(limit) {
        let qkv: Vec<f32> = Rng::new(29_500 + i as u64).vec((images * tokens * 3 * heads * d) as usize);
        let (words, scales, _) = quantize_qkv(images, tokens, heads, d, &qkv);
        let k = Attention {
            sparsity: sparsity.clone(),
            int8,
            emit_i8: emit,
            qkv_i8: true,
            ..Attention::dense(images, tokens, heads, d, Elem::F32)
        };
        let rows = (images * tokens * heads) as usize;
        let (wb, sb) = (gpu.upload("qkv", &words).map_err(err)?, gpu.upload("qkv_scales", &scales).map_err(err)?);
        let out = gpu.upload("out", &vec![0f32; rows * d as usize]).map_err(err)?;
        let os = gpu.upload("out_scales", &vec![0f32; rows]).map_err(err)?;
        let blocks = match sparsity {
            Sparsity::Neighbourhood { grid_h, grid_w, window } => {
                Some(neighbourhood_blocks(tokens, grid_h, grid_w, window))
            }
            _ => None,
        };
        let bb = gpu.upload("blocks", blocks.as_deref().unwrap_or(&[0])).map_err(err)?;
        let mut bufs: Vec<TensorRef<'_>> = vec![(&wb).into(), (&sb).into()];
        if blocks.is_some() {
            bufs.push((&bb).into());
        }
        bufs.push((&out).into());
        if emit {
            bufs.push((&os).into());
        }
        let what = format!(
            "attention {images}x{tokens} heads {heads} d {d} {sparsity:?} int8 {int8}, int8 Q, K, V, int8 output {emit}"
        );
        counts_agree(gpu, &what, &k, &bufs)?;
    }
    Ok(())
}

fn check_attention<E: Element>(k: &Attention, qkv: &[E], got: &[E], mask: Mask<'_>) -> Result<(), String> {
    let mut twin = vec![0f32; got.len()];
    let (images, tokens, heads, d) = (k.images as usize, k.tokens as usize, k.heads as usize, k.head_dim as usize);
    attention(images, tokens, heads, d, &f32s(qkv), mask, &mut twin);
    let twin: Vec<E> = twin.into_iter().map(E::from_f32).collect();
    let rel = if E::ELEM == Elem::F16 { 2e-3 } else { 2e-5 };
    compare(&format!("attention output {:?}", k.sparsity), got, &twin, &vec![2.0; got.len()], rel, 1e-5)
}

fn attention_dense_case<E: Element>(gpu: &Gpu, limit: usize) -> Outcome {
    need_f16::<E>(gpu)?;
    for (i, &(images, tokens, heads, d)) in
        [(1u32, 77u32, 3u32, 36u32), (1, 77, 3, 64), (2, 130, 2, 36), (1, 5, 1, 64)].iter().enumerate().take(limit)
    {
        let mut rng = Rng::new(24_000 + i as u64);
        let qkv: Vec<E> = rng.vec((images * tokens * 3 * heads * d) as usize);
        let k = Attention::dense(images, tokens, heads, d, E::ELEM);
        let got = run_attention(gpu, &k, &qkv, None)?;
        check_attention(&k, &qkv, &got, None)?;
    }
    Ok(())
}

/// Random key-tile lists per query block, the partial last tile among them, with and without the
/// lists given to the work model (without them it assumes full tiles: exact when no list holds the
/// partial last tile).
fn attention_blocks_case(gpu: &Gpu, limit: usize) -> Outcome {
    for (i, &(tokens, heads, d)) in [(77u32, 3u32, 36u32), (200, 3, 64), (130, 1, 36)].iter().enumerate().take(limit) {
        let mut rng = Rng::new(25_000 + i as u64);
        let qkv: Vec<f32> = rng.vec((tokens * 3 * heads * d) as usize);
        let n_tiles = tokens.div_ceil(KEY_TILE);
        let mut per_block: Vec<Vec<u32>> = (0..tokens.div_ceil(QUERY_BLOCK))
            .map(|_| (0..n_tiles).filter(|_| rng.next_u64().is_multiple_of(2)).collect())
            .collect();
        per_block[0].retain(|&t| t != n_tiles - 1);
        per_block[0].push(n_tiles - 1);
        let k = Attention::block_sparse(1, tokens, heads, d, Elem::F32, &per_block);
        let list = block_list(&per_block);
        let got = run_attention(gpu, &k, &qkv, Some(&list))?;
        let mask = |q: usize, key: usize| per_block[q / QUERY_BLOCK as usize].contains(&(key as u32 / KEY_TILE));
        check_attention(&k, &qkv, &got, Some(&mask))?;
        // Only the count of tiles: exact once the partial last tile is in no list.
        if tokens % KEY_TILE != 0 {
            for tiles in &mut per_block {
                tiles.retain(|&t| t != n_tiles - 1);
            }
        }
        let visited = per_block.iter().map(|t| t.len() as u64).sum();
        let k = Attention {
            sparsity: Sparsity::Blocks,
            visited_tiles: Some(visited),
            ..Attention::dense(1, tokens, heads, d, Elem::F32)
        };
        run_attention(gpu, &k, &qkv, Some(&block_list(&per_block)))?;
    }
    Ok(())
}

/// Neighbourhood windows on grids whose query blocks reach tiles some of their queries' windows
/// miss (those queries skip the softmax update there).
fn attention_neighbourhood_case(gpu: &Gpu, limit: usize) -> Outcome {
    for (i, &(gh, gw, window, heads, d)) in
        [(11u32, 7u32, 3u32, 3u32, 36u32), (9, 7, 5, 3, 64), (16, 13, 5, 2, 36), (20, 20, 3, 1, 36)]
            .iter()
            .enumerate()
            .take(limit)
    {
        let tokens = gh * gw;
        let mut rng = Rng::new(26_000 + i as u64);
        let qkv: Vec<f32> = rng.vec((tokens * 3 * heads * d) as usize);
        let k = Attention {
            sparsity: Sparsity::Neighbourhood { grid_h: gh, grid_w: gw, window },
            ..Attention::dense(1, tokens, heads, d, Elem::F32)
        };
        let got = run_attention(gpu, &k, &qkv, Some(&neighbourhood_blocks(tokens, gh, gw, window)))?;
        let mask = window_mask(gh, gw, window);
        check_attention(&k, &qkv, &got, Some(&mask))?;
    }
    Ok(())
}

/// The int8 variant: dense on odd shapes (f32 and f16), random block lists with the partial
/// last tile, neighbourhood windows; outputs against the step-for-step twin.
fn attention_int8_case(gpu: &Gpu, limit: usize) -> Outcome {
    let check = |k: &Attention, got: &[f32], qkv: &[f32], lists: Option<&[Vec<u32>]>, mask: Mask<'_>| {
        let mut twin = vec![0f32; got.len()];
        let (images, tokens, heads, d) = (k.images as usize, k.tokens as usize, k.heads as usize, k.head_dim as usize);
        attention_i8(images, tokens, heads, d, qkv, mask, lists, &mut twin);
        crate::attention_cases::compare_int8(&format!("int8 attention {:?}", k.sparsity), got, &twin, 1.0)
    };
    for (i, &(images, tokens, heads, d)) in
        [(1u32, 77u32, 3u32, 36u32), (2, 130, 2, 64), (1, 5, 1, 64)].iter().enumerate().take(limit)
    {
        let qkv: Vec<f32> = Rng::new(28_000 + i as u64).vec((images * tokens * 3 * heads * d) as usize);
        let k = Attention { int8: true, ..Attention::dense(images, tokens, heads, d, Elem::F32) };
        let got = run_attention(gpu, &k, &qkv, None)?;
        check(&k, &got, &qkv, None, None)?;
    }
    if limit == usize::MAX {
        need_f16::<f16>(gpu)?;
        let qkv: Vec<f16> = Rng::new(28_010).vec(77 * 3 * 2 * 36);
        let k = Attention { int8: true, ..Attention::dense(1, 77, 2, 36, Elem::F16) };
        let got = f32s(&run_attention(gpu, &k, &qkv, None)?);
        let mut twin = vec![0f32; got.len()];
        attention_i8(1, 77, 2, 36, &f32s(&qkv), None, None, &mut twin);
        crate::attention_cases::compare_int8::<f16>(
            "int8 attention f16",
            &got.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>(),
            &twin,
            1.0,
        )?;

        let (tokens, heads, d) = (200u32, 2u32, 36u32);
        let mut rng = Rng::new(28_020);
        let qkv: Vec<f32> = rng.vec((tokens * 3 * heads * d) as usize);
        let n_tiles = tokens.div_ceil(KEY_TILE);
        let per_block: Vec<Vec<u32>> = (0..tokens.div_ceil(QUERY_BLOCK))
            .map(|_| {
                let mut t: Vec<u32> = (0..n_tiles - 1).filter(|_| rng.next_u64().is_multiple_of(2)).collect();
                t.push(n_tiles - 1);
                t
            })
            .collect();
        let k = Attention { int8: true, ..Attention::block_sparse(1, tokens, heads, d, Elem::F32, &per_block) };
        let got = run_attention(gpu, &k, &qkv, Some(&block_list(&per_block)))?;
        let mask = |q: usize, key: usize| per_block[q / QUERY_BLOCK as usize].contains(&(key as u32 / KEY_TILE));
        check(&k, &got, &qkv, Some(&per_block), Some(&mask))?;

        let (gh, gw, window, heads, d) = (11u32, 7u32, 3u32, 3u32, 36u32);
        let tokens = gh * gw;
        let qkv: Vec<f32> = Rng::new(28_030).vec((tokens * 3 * heads * d) as usize);
        let k = Attention {
            sparsity: Sparsity::Neighbourhood { grid_h: gh, grid_w: gw, window },
            int8: true,
            ..Attention::dense(1, tokens, heads, d, Elem::F32)
        };
        let got = run_attention(gpu, &k, &qkv, Some(&neighbourhood_blocks(tokens, gh, gw, window)))?;
        let mask = window_mask(gh, gw, window);
        check(&k, &got, &qkv, Some(&neighbourhood_tiles(tokens, gh, gw, window)), Some(&mask))?;
    }
    Ok(())
}

/// A launch whose workgroup-memory reads pass 2^32 bytes: the device sums carry into the high
/// words of the counters (counts only; the output is checked by the other cases). Head dim 36,
/// the pipeline of the first dense case (GL compiles no other).
fn past_u32_case(gpu: &Gpu) -> Outcome {
    let k = Attention::dense(1, 1024, 17, 36, Elem::F32);
    let model = k.work(gpu.capabilities()).map_err(err)?;
    if model.sram_read <= u64::from(u32::MAX) {
        return Err(format!("{} workgroup bytes do not pass 2^32", model.sram_read).into());
    }
    let qkv: Vec<f32> = Rng::new(27_000).vec((k.tokens * 3 * k.heads * k.head_dim) as usize);
    run_attention(gpu, &k, &qkv, None)?;
    Ok(())
}
