//! Fused attention against the plain softmax(Q K^T / sqrt(d)) V (f64 twin) on odd token counts,
//! 1 to 16 heads and head dims 32, 64, 72, 128; neighbourhood attention (windows 3, 5, 7, square and
//! non-square grids) against the same definition with the window mask; a random block mask that
//! is not a neighbourhood against the block-masked definition. The int8 variant against its step-
//! for-step twin and against the float definition within the stated tolerance. The int8 output
//! (a scale per token and head) against the same kernel's float output quantized by the twin.

use half::f16;
use milliwatt::cpu::Element;
use milliwatt::cpu::attention::{attention, attention_i8};
use milliwatt::kernels::attention::{KEY_TILE, QUERY_BLOCK};
use milliwatt::kernels::{
    Attention, AttentionNaive, Elem, Sparsity, block_list, neighbourhood_blocks, neighbourhood_tiles,
};
use milliwatt::{Gpu, Kernel};

use crate::util::{Rng, compare, err, need_f16, window_mask};
use crate::{Backend, Case, Outcome};

pub fn all() -> Vec<(&'static str, Case)> {
    vec![
        ("attention_dense_f32", |b| dense_case::<f32>(&b.gpu, full(b))),
        ("attention_dense_f16", |b| dense_case::<f16>(&b.gpu, full(b))),
        ("attention_neighbourhood", |b| neighbourhood_case(&b.gpu, full(b))),
        ("attention_block_mask", |b| block_mask_case(&b.gpu, full(b))),
        ("attention_naive_reference", |b| naive_case(&b.gpu)),
        ("attention_int8_f32", |b| int8_case::<f32>(&b.gpu, full(b))),
        ("attention_int8_f16", |b| int8_case::<f16>(&b.gpu, full(b))),
        ("attention_emit_i8", |b| emit_i8_case(&b.gpu, full(b))),
        ("attention_int8_qkv", |b| qkv_i8_case(&b.gpu, full(b))),
    ]
}

/// llvmpipe's GL compiler takes about a minute per head-dimension variant of this kernel without
/// its shader cache (a fresh CI machine): on GL the covering set is cut to its first two cases.
fn full(b: &Backend) -> usize {
    if b.name == "gl" { 2 } else { usize::MAX }
}

fn run<E: Element>(gpu: &Gpu, k: &Attention, qkv: &[E], blocks: Option<&[u32]>) -> Result<Vec<E>, String> {
    let n = (k.images * k.tokens * k.heads * k.head_dim) as usize;
    let qb = gpu.upload("qkv", qkv).map_err(err)?;
    let ob = gpu.upload("out", &vec![E::from_f32(7.0); n]).map_err(err)?;
    let bb = gpu.upload("blocks", blocks.unwrap_or(&[0])).map_err(err)?;
    let mut bufs: Vec<milliwatt::TensorRef<'_>> = vec![(&qb).into()];
    if blocks.is_some() {
        bufs.push((&bb).into());
    }
    bufs.push((&ob).into());
    let p = k.prepare(gpu, &bufs).map_err(err)?;
    gpu.run(&[&p]).map_err(err)?;
    gpu.read(&ob).map_err(err)
}

/// Runs an attention with [`Attention::emit_i8`]; returns the int8 words and the scales.
fn run_emit<E: Element>(
    gpu: &Gpu,
    k: &Attention,
    qkv: &[E],
    blocks: Option<&[u32]>,
) -> Result<(Vec<u32>, Vec<f32>), String> {
    let rows = (k.images * k.tokens * k.heads) as usize;
    let qb = gpu.upload("qkv", qkv).map_err(err)?;
    let oq = gpu.upload("out_q", &vec![0x0707_0707u32; rows * k.head_dim as usize / 4]).map_err(err)?;
    let os = gpu.upload("out_scales", &vec![7f32; rows]).map_err(err)?;
    let bb = gpu.upload("blocks", blocks.unwrap_or(&[0])).map_err(err)?;
    let mut bufs: Vec<milliwatt::TensorRef<'_>> = vec![(&qb).into()];
    if blocks.is_some() {
        bufs.push((&bb).into());
    }
    bufs.push((&oq).into());
    bufs.push((&os).into());
    let p = k.prepare(gpu, &bufs).map_err(err)?;
    gpu.run(&[&p]).map_err(err)?;
    Ok((gpu.read(&oq).map_err(err)?, gpu.read(&os).map_err(err)?))
}

/// The int8 output (EMIT_I8), float and int8 attention, dense and neighbourhood, f32 and f16 (where
/// the device has it), odd token counts: the scales and codes equal the same kernel's float output
/// quantized per (token, head) by the twin quantizer (a code may differ by one where a value lies
/// within rounding of a half: at most 1 in 1000 in f32), and the dequantized output lies within half a
/// code of the f64 definition (float attention).
fn emit_i8_case(gpu: &Gpu, limit: usize) -> Outcome {
    use milliwatt::cpu::qmatmul::quantize_act_grouped;
    let neighbourhood = Sparsity::Neighbourhood { grid_h: 9, grid_w: 13, window: 5 };
    let cases = [
        (1u32, 49u32, 4u32, 32u32, Sparsity::Dense, false, Elem::F32),
        (2, 77, 3, 64, Sparsity::Dense, true, Elem::F32),
        (1, 117, 2, 64, neighbourhood, false, Elem::F32),
        (1, 130, 2, 128, Sparsity::Dense, true, Elem::F16),
    ];
    for (i, (images, tokens, heads, d, sparsity, int8, elem)) in cases.into_iter().enumerate().take(limit) {
        if elem == Elem::F16 && !gpu.capabilities().f16 {
            continue;
        }
        let k = Attention { sparsity: sparsity.clone(), int8, ..Attention::dense(images, tokens, heads, d, elem) };
        let blocks = match sparsity {
            Sparsity::Neighbourhood { grid_h, grid_w, window } => {
                Some(neighbourhood_blocks(tokens, grid_h, grid_w, window))
            }
            _ => None,
        };
        let q32: Vec<f32> = int8_data::<f32>(16_000 + i as u64, images, tokens, heads, d);
        let (float, (codes, scales)) = if elem == Elem::F16 {
            let qkv: Vec<f16> = q32.iter().map(|&v| f16::from_f32(v)).collect();
            let float: Vec<f16> = run(gpu, &k, &qkv, blocks.as_deref())?;
            let emitted = run_emit(gpu, &Attention { emit_i8: true, ..k.clone() }, &qkv, blocks.as_deref())?;
            (float.iter().map(|v| v.to_f32()).collect::<Vec<f32>>(), emitted)
        } else {
            let float = run(gpu, &k, &q32, blocks.as_deref())?;
            (float, run_emit(gpu, &Attention { emit_i8: true, ..k.clone() }, &q32, blocks.as_deref())?)
        };
        let what = format!("int8 output of {elem:?} attention {images}x{tokens} heads {heads} d {d} int8 {int8}");
        let (rows, du) = ((images * tokens * heads) as usize, d as usize);
        let (mut want_q, mut want_s) = (vec![0u32; rows * du / 4], vec![0f32; rows]);
        quantize_act_grouped(rows, du, du, &float, &mut want_q, &mut want_s);
        // f16 output rounds the float values before the twin quantizes them: scales to f16's
        // rounding, codes within one.
        let scale_tol = if elem == Elem::F16 { 1e-3 } else { 1e-6 };
        for (r, (g, w)) in scales.iter().zip(&want_s).enumerate() {
            if (g - w).abs() > scale_tol * w.abs() {
                return Err(format!("{what}: scale of row {r}: {g} vs twin {w}").into());
            }
        }
        let byte = |words: &[u32], j: usize| i32::from((words[j / 4] >> (8 * (j % 4))) as u8 as i8);
        let mut off = 0;
        for j in 0..rows * du {
            let e = (byte(&codes, j) - byte(&want_q, j)).abs();
            if e > 1 {
                return Err(format!("{what}: code {j}: {} vs twin {}", byte(&codes, j), byte(&want_q, j)).into());
            }
            off += e as usize;
        }
        // f16: the twin quantizes values rounded to f16 (about 0.06 of a code near the row's
        // absmax), the kernel its f32 registers: up to 3 in 100 codes differ by one.
        let allowed = if elem == Elem::F16 { 30 } else { 1 };
        if off * 1000 > allowed * rows * du {
            return Err(format!("{what}: {off} of {} codes differ by one from the twin's", rows * du).into());
        }
        if !int8 {
            let mask = match sparsity {
                Sparsity::Neighbourhood { grid_h, grid_w, window } => Some(window_mask(grid_h, grid_w, window)),
                _ => None,
            };
            let mut exact = vec![0f32; rows * du];
            let mask_ref = mask.as_ref().map(|m| m as &dyn Fn(usize, usize) -> bool);
            attention(images as usize, tokens as usize, heads as usize, du, &q32, mask_ref, &mut exact);
            for (j, t) in exact.iter().enumerate() {
                let s = scales[j / du];
                let v = byte(&codes, j) as f32 * s;
                if (v - t).abs() > 0.5 * s * (1.0 + 1e-4) + 1e-5 {
                    return Err(format!("{what}: element {j}: {v} vs the definition {t} (scale {s})").into());
                }
            }
        }
    }
    Ok(())
}

/// Q, K, V as int8 with a scale per (token, part, head), as the qkv GEMM's int8 output writes
/// them.
pub fn quantize_qkv(images: u32, tokens: u32, heads: u32, d: u32, qkv: &[f32]) -> (Vec<u32>, Vec<f32>, Vec<f32>) {
    let (rows, k) = ((images * tokens) as usize, (3 * heads * d) as usize);
    let (mut words, mut scales) = (vec![0u32; rows * k / 4], vec![0f32; rows * k / d as usize]);
    milliwatt::cpu::qmatmul::quantize_act_grouped(rows, k, d as usize, qkv, &mut words, &mut scales);
    let dequant = (0..rows * k)
        .map(|j| f32::from((words[j / 4] >> (8 * (j % 4))) as u8 as i8) * scales[j / d as usize])
        .collect();
    (words, scales, dequant)
}

/// Int8 Q, K, V input (QKV_I8): float and int8 attention, dense and neighbourhood, f32 output
/// and int8 output, odd token counts: against the twins on the dequantized input (the kernel
/// dequantizes exactly as the twin does).
fn qkv_i8_case(gpu: &Gpu, limit: usize) -> Outcome {
    let neighbourhood = Sparsity::Neighbourhood { grid_h: 9, grid_w: 13, window: 5 };
    let cases = [
        (1u32, 49u32, 4u32, 32u32, Sparsity::Dense, false),
        (2, 77, 3, 64, Sparsity::Dense, true),
        (1, 117, 2, 16, neighbourhood.clone(), true),
        (1, 117, 2, 64, neighbourhood, false),
    ];
    for (i, (images, tokens, heads, d, sparsity, int8)) in cases.into_iter().enumerate().take(limit) {
        let q32: Vec<f32> = int8_data::<f32>(17_000 + i as u64, images, tokens, heads, d);
        let (words, scales, dequant) = quantize_qkv(images, tokens, heads, d, &q32);
        let k = Attention {
            sparsity: sparsity.clone(),
            int8,
            qkv_i8: true,
            ..Attention::dense(images, tokens, heads, d, Elem::F32)
        };
        let (lists, mask) = match sparsity {
            Sparsity::Neighbourhood { grid_h, grid_w, window } => {
                (Some(neighbourhood_tiles(tokens, grid_h, grid_w, window)), Some(window_mask(grid_h, grid_w, window)))
            }
            _ => (None, None),
        };
        let blocks = lists.as_ref().map(|l| block_list(l));
        let n = (images * tokens * heads * d) as usize;
        let (wb, sb) = (gpu.upload("qkv", &words).map_err(err)?, gpu.upload("qkv_scales", &scales).map_err(err)?);
        let ob = gpu.upload("out", &vec![7f32; n]).map_err(err)?;
        let bb = gpu.upload("blocks", blocks.as_deref().unwrap_or(&[0])).map_err(err)?;
        let mut bufs: Vec<milliwatt::TensorRef<'_>> = vec![(&wb).into(), (&sb).into()];
        if blocks.is_some() {
            bufs.push((&bb).into());
        }
        bufs.push((&ob).into());
        let p = k.prepare(gpu, &bufs).map_err(err)?;
        gpu.run(&[&p]).map_err(err)?;
        let got: Vec<f32> = gpu.read(&ob).map_err(err)?;
        let mask_ref = mask.as_ref().map(|m| m as &dyn Fn(usize, usize) -> bool);
        let (ii, tt, hh, dd) = (images as usize, tokens as usize, heads as usize, d as usize);
        let mut twin = vec![0f32; n];
        let what = format!("int8 Q, K, V into {images}x{tokens} heads {heads} d {d} {sparsity:?} int8 {int8}");
        if int8 {
            attention_i8(ii, tt, hh, dd, &dequant, mask_ref, lists.as_deref(), &mut twin);
            compare_int8(&what, &got, &twin, 2.0)?;
        } else {
            attention(ii, tt, hh, dd, &dequant, mask_ref, &mut twin);
            compare(&what, &got, &twin, &vec![2.0; n], 2e-5, 1e-5)?;
        }
    }
    Ok(())
}

fn dense_case<E: Element>(gpu: &Gpu, limit: usize) -> Outcome {
    need_f16::<E>(gpu)?;
    let cases = [(1u32, 49u32, 1u32, 32u32), (1, 1, 4, 64), (2, 196, 3, 64), (1, 257, 2, 72), (1, 70, 16, 128)];
    for (i, &(images, tokens, heads, d)) in cases.iter().enumerate().take(limit) {
        let mut rng = Rng::new(10_000 + i as u64);
        let qkv: Vec<E> = (0..images * tokens * 3 * heads * d).map(|_| E::from_f32(rng.f32() * 2.0)).collect();
        let k = Attention::dense(images, tokens, heads, d, E::ELEM);
        let got = run(gpu, &k, &qkv, None)?;
        let q32: Vec<f32> = qkv.iter().map(|v| v.to_f32()).collect();
        let mut twin = vec![0f32; got.len()];
        attention(images as usize, tokens as usize, heads as usize, d as usize, &q32, None, &mut twin);
        let twin: Vec<E> = twin.into_iter().map(E::from_f32).collect();
        let rel = if E::ELEM == Elem::F16 { 2e-3 } else { 2e-5 };
        compare(
            &format!("dense attention {images}x{tokens} heads {heads} d {d}"),
            &got,
            &twin,
            &vec![2.0; got.len()],
            rel,
            1e-5,
        )?;
    }
    Ok(())
}

fn neighbourhood_case(gpu: &Gpu, limit: usize) -> Outcome {
    for (i, &(gh, gw, window, heads, d)) in
        [(7u32, 7u32, 3u32, 2u32, 32u32), (9, 13, 5, 1, 72), (14, 14, 7, 3, 64), (16, 16, 7, 2, 64), (8, 8, 5, 1, 128)]
            .iter()
            .enumerate()
            .take(limit)
    {
        let tokens = gh * gw;
        let mut rng = Rng::new(11_000 + i as u64);
        let qkv: Vec<f32> = (0..tokens * 3 * heads * d).map(|_| rng.f32() * 2.0).collect();
        let k = Attention {
            sparsity: Sparsity::Neighbourhood { grid_h: gh, grid_w: gw, window },
            ..Attention::dense(1, tokens, heads, d, Elem::F32)
        };
        let blocks = neighbourhood_blocks(tokens, gh, gw, window);
        let got = run(gpu, &k, &qkv, Some(&blocks))?;
        let mask = window_mask(gh, gw, window);
        // Every query sees exactly window^2 keys (NATTEN's shifted windows).
        for q in 0..tokens as usize {
            let seen = (0..tokens as usize).filter(|&key| mask(q, key)).count();
            if seen != (window * window) as usize {
                return Err(format!("query {q} of {gh}x{gw} sees {seen} keys with window {window}").into());
            }
        }
        // The block list covers every key of every window.
        let tiles = neighbourhood_tiles(tokens, gh, gw, window);
        for q in 0..tokens {
            for key in 0..tokens {
                if mask(q as usize, key as usize) && !tiles[(q / QUERY_BLOCK) as usize].contains(&(key / KEY_TILE)) {
                    return Err(format!("key {key} of query {q} lies in a tile the list leaves out").into());
                }
            }
        }
        let mut twin = vec![0f32; got.len()];
        attention(1, tokens as usize, heads as usize, d as usize, &qkv, Some(&mask), &mut twin);
        compare(&format!("neighbourhood {gh}x{gw} window {window}"), &got, &twin, &vec![2.0; got.len()], 2e-5, 1e-5)?;
    }
    Ok(())
}

fn block_mask_case(gpu: &Gpu, limit: usize) -> Outcome {
    let (tokens, heads, d) = if limit == usize::MAX { (257u32, 2u32, 64u32) } else { (130, 1, 32) };
    let mut rng = Rng::new(12_000);
    let qkv: Vec<f32> = (0..tokens * 3 * heads * d).map(|_| rng.f32() * 2.0).collect();
    let n_tiles = tokens.div_ceil(KEY_TILE);
    // A random non-empty, non-contiguous set of key tiles per query block.
    let per_block: Vec<Vec<u32>> = (0..tokens.div_ceil(QUERY_BLOCK))
        .map(|_| {
            let mut t: Vec<u32> = (0..n_tiles).filter(|_| rng.next_u64().is_multiple_of(3)).collect();
            if t.is_empty() {
                t.push((rng.next_u64() % u64::from(n_tiles)) as u32);
            }
            t
        })
        .collect();
    let k = Attention { sparsity: Sparsity::Blocks, ..Attention::dense(1, tokens, heads, d, Elem::F32) };
    let got = run(gpu, &k, &qkv, Some(&block_list(&per_block)))?;
    let mask = |q: usize, key: usize| per_block[q / QUERY_BLOCK as usize].contains(&(key as u32 / KEY_TILE));
    let mut twin = vec![0f32; got.len()];
    attention(1, tokens as usize, heads as usize, d as usize, &qkv, Some(&mask), &mut twin);
    compare("random block mask", &got, &twin, &vec![2.0; got.len()], 2e-5, 1e-5)?;
    Ok(())
}

/// The three-dispatch benchmark reference computes the same attention.
fn naive_case(gpu: &Gpu) -> Outcome {
    let (images, tokens, heads, d) = (2u32, 67u32, 3u32, 72u32);
    let mut rng = Rng::new(13_000);
    let qkv: Vec<f32> = (0..images * tokens * 3 * heads * d).map(|_| rng.f32() * 2.0).collect();
    let n = (images * tokens * heads * d) as usize;
    let qb = gpu.upload("qkv", &qkv).map_err(err)?;
    let sb = gpu.upload("scores", &vec![0f32; (images * heads * tokens * tokens) as usize]).map_err(err)?;
    let ob = gpu.upload("out", &vec![7f32; n]).map_err(err)?;
    let p = AttentionNaive { images, tokens, heads, head_dim: d }
        .prepare(gpu, &[(&qb).into(), (&sb).into(), (&ob).into()])
        .map_err(err)?;
    gpu.run(&[&p]).map_err(err)?;
    let got: Vec<f32> = gpu.read(&ob).map_err(err)?;
    let mut twin = vec![0f32; n];
    attention(images as usize, tokens as usize, heads as usize, d as usize, &qkv, None, &mut twin);
    compare("naive attention", &got, &twin, &vec![2.0; n], 2e-5, 1e-5)?;
    Ok(())
}

/// Int8 attention's data: uniform Q, K, V in [-2, 2) plus a bias per key channel (up to ±6, the
/// kind of channel-wide offset the tile-mean centring takes out; it changes no softmax).
fn int8_data<E: Element>(seed: u64, images: u32, tokens: u32, heads: u32, d: u32) -> Vec<E> {
    let mut rng = Rng::new(seed);
    let bias: Vec<f32> = (0..heads * d).map(|_| 6.0 * rng.f32()).collect();
    let mut qkv: Vec<f32> = (0..images * tokens * 3 * heads * d).map(|_| 2.0 * rng.f32()).collect();
    for (i, x) in qkv.iter_mut().enumerate() {
        let hd = i % (heads * d) as usize;
        if (i / (heads * d) as usize) % 3 == 1 {
            *x += bias[hd];
        }
    }
    qkv.into_iter().map(E::from_f32).collect()
}

/// The int8 kernel against its twin: equal to f32 rounding, except where a weight's code
/// round(127 w) falls within rounding of a half (a different exp rounds it the other way: one
/// code, at most 1/127 of a value in the output). So every element lies within 2/127 of the
/// largest |value| and all but 1 in 1000 within 1e-4 of it.
pub fn compare_int8<E: Element>(what: &str, got: &[E], twin: &[f32], v_max: f32) -> Result<(), String> {
    let tight = 1e-4 * v_max + if E::ELEM == Elem::F16 { 2e-3 * v_max } else { 0.0 };
    let (mut off, mut worst) = (0usize, (0usize, 0f32));
    for (i, (g, t)) in got.iter().zip(twin).enumerate() {
        let e = (g.to_f32() - t).abs();
        if !g.to_f32().is_finite() || e > 2.0 / 127.0 * v_max {
            return Err(format!("{what}: element {i}: gpu {} vs twin {t}", g.to_f32()));
        }
        if e > tight {
            off += 1;
        }
        if e > worst.1 {
            worst = (i, e);
        }
    }
    if off * 1000 > twin.len() {
        return Err(format!(
            "{what}: {off} of {} elements off the twin by more than {tight}; worst {worst:?}",
            twin.len()
        ));
    }
    Ok(())
}

/// The stated tolerance of int8 attention against the float definition: relative RMS error at
/// most 2 % and every element within 8 % of the largest |value|.
pub fn compare_int8_to_float<E: Element>(what: &str, got: &[E], exact: &[f32], v_max: f32) -> Result<(), String> {
    let (mut se, mut ss, mut worst) = (0f64, 0f64, 0f32);
    for (g, t) in got.iter().zip(exact) {
        let e = g.to_f32() - t;
        se += f64::from(e * e);
        ss += f64::from(t * t);
        worst = worst.max(e.abs());
    }
    let rms = (se / ss).sqrt();
    if rms > 0.02 || worst > 0.08 * v_max {
        return Err(format!("{what}: int8 vs float attention: relative RMS {rms:.4}, worst {worst} (|v| <= {v_max})"));
    }
    Ok(())
}

/// Which keys a query sees (query, key).
type KeyMask = Box<dyn Fn(usize, usize) -> bool>;

fn int8_case<E: Element>(gpu: &Gpu, limit: usize) -> Outcome {
    need_f16::<E>(gpu)?;
    // (images, tokens, heads, d, sparsity): a partial tile everywhere but the first.
    let neighbourhood = |gh, gw, window| Sparsity::Neighbourhood { grid_h: gh, grid_w: gw, window };
    let cases = [
        (1u32, 49u32, 4u32, 32u32, Sparsity::Dense),
        (2, 77, 3, 72, Sparsity::Dense),
        (1, 130, 2, 128, Sparsity::Dense),
        (1, 5, 1, 36, Sparsity::Dense),
        (1, 117, 2, 64, neighbourhood(9, 13, 5)),
        (1, 200, 1, 36, Sparsity::Blocks),
    ];
    for (i, (images, tokens, heads, d, sparsity)) in cases.into_iter().enumerate().take(limit) {
        let qkv: Vec<E> = int8_data(14_000 + i as u64, images, tokens, heads, d);
        let mut k =
            Attention { sparsity: sparsity.clone(), int8: true, ..Attention::dense(images, tokens, heads, d, E::ELEM) };
        let (lists, mask): (Option<Vec<Vec<u32>>>, KeyMask) = match sparsity {
            Sparsity::Dense => (None, Box::new(|_, _| true)),
            Sparsity::Neighbourhood { grid_h: gh, grid_w: gw, window } => {
                (Some(neighbourhood_tiles(tokens, gh, gw, window)), Box::new(window_mask(gh, gw, window)))
            }
            Sparsity::Blocks => {
                let mut rng = Rng::new(15_000);
                let n_tiles = tokens.div_ceil(KEY_TILE);
                let lists: Vec<Vec<u32>> = (0..tokens.div_ceil(QUERY_BLOCK))
                    .map(|_| {
                        let mut t: Vec<u32> = (0..n_tiles).filter(|_| rng.next_u64().is_multiple_of(2)).collect();
                        t.push(n_tiles - 1);
                        t.dedup();
                        t
                    })
                    .collect();
                k = Attention { int8: true, ..Attention::block_sparse(images, tokens, heads, d, E::ELEM, &lists) };
                let per_block = lists.clone();
                (
                    Some(lists),
                    Box::new(move |q, key| per_block[q / QUERY_BLOCK as usize].contains(&(key as u32 / KEY_TILE))),
                )
            }
        };
        let got = run(gpu, &k, &qkv, lists.as_ref().map(|l| block_list(l)).as_deref())?;
        let q32: Vec<f32> = qkv.iter().map(|v| v.to_f32()).collect();
        let (images, tokens, heads, d) = (images as usize, tokens as usize, heads as usize, d as usize);
        let mask: &dyn Fn(usize, usize) -> bool = &*mask;
        let mut twin = vec![0f32; got.len()];
        attention_i8(images, tokens, heads, d, &q32, Some(mask), lists.as_deref(), &mut twin);
        let mut exact = vec![0f32; got.len()];
        attention(images, tokens, heads, d, &q32, Some(mask), &mut exact);
        let what = format!("int8 attention {images}x{tokens} heads {heads} d {d} {:?}", k.sparsity);
        compare_int8(&what, &got, &twin, 2.0)?;
        compare_int8_to_float(&what, &got, &exact, 2.0)?;
    }
    Ok(())
}
