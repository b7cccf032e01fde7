//! Twins of the tiled low-bit GEMMs (gemm_ternary_a8, gemm_int8_a8 over shared/gemm_a8.wgsl, and
//! gemm_qf over shared/gemm_tile.wgsl). Weights are decoded with the GEMV twins' step decoders,
//! which mirror the shaders' bit layouts.

use super::Element;
use super::epilogue::{EpilogueInputs, epilogue};
use super::qmatmul::{decode_f, decode_i8, dot4_i8, load_step};
use crate::kernels::epilogue::Epilogue;
use crate::kernels::qmatmul::QMatmulParams;
use crate::quant::Format;

/// The packed weight streams of a twin call.
#[derive(Clone, Copy, Debug)]
pub struct Weights<'a> {
    /// Format.
    pub format: Format,
    /// Packed data words.
    pub w: &'a [u32],
    /// Scale words.
    pub ws: &'a [u32],
    /// Zero-point words (empty if none).
    pub wz: &'a [u32],
}

/// Twin of the int8-activation GEMMs: exact i32 sums of dot4 over the words of K, then
/// `f32(sum) * w_scale[m] * x_scale[n]` and the epilogue. Int4 (group-wise scales, groups a
/// multiple of 64): the i32 sum of each 64-weight slice goes into an f32 accumulator with one fma
/// by its group's scale, in increasing K, and the result times `x_scale[n]`. Grouped activation
/// scales (`p.x_group_words` > 0, `xs` N x groups): the i32 sum of each group of K goes into an f32
/// accumulator with one fma by the row's scale of that group, in increasing K, and the result
/// times `w_scale[m]`.
pub fn qgemm_a8<E: Element>(
    p: &QMatmulParams,
    wt: Weights<'_>,
    e: &Epilogue,
    t: &EpilogueInputs<'_>,
    xq: &[u32],
    xs: &[f32],
    y: &mut [E],
) {
    let (m, n) = (p.m as usize, p.n as usize);
    let xw = p.x_row_words as usize;
    let xg = p.x_group_words as usize;
    for nn in 0..n {
        for mm in 0..m {
            let grouped = matches!(wt.format, Format::Int4 { .. });
            let (mut acc, mut facc) = (0i32, 0f32);
            for q in 0..xw / 4 {
                let st = load_step(wt.format, p, wt.w, wt.ws, wt.wz, mm, q);
                for j in 0..4 {
                    acc += dot4_i8(decode_i8(wt.format, &st, j), xq[nn * xw + 4 * q + j]);
                    let word = 4 * q + j;
                    if xg > 0 && (word + 1) % xg == 0 {
                        facc = (acc as f32).mul_add(xs[nn * (xw / xg) + word / xg], facc);
                        acc = 0;
                    }
                }
                // The end of a 64-weight slice (4 steps), or of K.
                if grouped && (q % 4 == 3 || q == xw / 4 - 1) {
                    facc = (acc as f32).mul_add(st.scale(), facc);
                    acc = 0;
                }
            }
            let v = if grouped {
                facc * xs[nn]
            } else if xg > 0 {
                facc * f32::from_bits(wt.ws[mm])
            } else {
                acc as f32 * f32::from_bits(wt.ws[mm]) * xs[nn]
            };
            let col = p.m_offset as usize + mm;
            let at = nn * p.ldy as usize + col;
            y[at] = E::from_f32(epilogue(e, t, p.ldy as usize, v, nn, col, at));
        }
    }
}

/// Twin of gemm_qf.wgsl: weights decoded per group of 4 (ternary and int8 as levels, int4 as
/// level * group scale rounded to the element type), one f32 accumulator per output in increasing
/// k, then the row scale (ternary, int8) and the epilogue.
pub fn qgemm_float<E: Element>(
    p: &QMatmulParams,
    wt: Weights<'_>,
    e: &Epilogue,
    t: &EpilogueInputs<'_>,
    x: &[E],
    y: &mut [E],
) {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let per_row = matches!(wt.format, Format::Ternary2 | Format::Int8 | Format::Ternary24);
    for mm in 0..m {
        // Row mm of W as the staging loads produce it.
        let row: Vec<f32> = (0..k)
            .map(|kk| {
                let st = load_step(wt.format, p, wt.w, wt.ws, wt.wz, mm, kk / 16);
                let level = decode_f(wt.format, &st, (kk % 16) / 4)[kk % 4];
                if per_row { E::from_f32(level).to_f32() } else { E::from_f32(level * st.scale()).to_f32() }
            })
            .collect();
        let out_scale = if per_row { f32::from_bits(wt.ws[mm]) } else { 1.0 };
        for nn in 0..n {
            let mut acc = 0f32;
            for (kk, wv) in row.iter().enumerate() {
                acc = wv.mul_add(x[nn * k + kk].to_f32(), acc);
            }
            let col = p.m_offset as usize + mm;
            let at = nn * p.ldy as usize + col;
            y[at] = E::from_f32(epilogue(e, t, p.ldy as usize, acc * out_scale, nn, col, at));
        }
    }
}
