//! Twins of quantize_act.wgsl and the low-bit GEMVs (gemv_ternary, gemv_int8, gemv_int4 over
//! shared/gemv_q.wgsl). They decode the packed words exactly as the shaders do, so a layout
//! mistake shows against `crate::quant`'s own unpacker in the tests.

use super::{Element, dot4};
use crate::kernels::qmatmul::{QMatmulParams, STEP};
use crate::quant::Format;

/// Twin of `act_scale` (shared/act_quant.wgsl).
pub fn act_scale(absmax: f32) -> f32 {
    if absmax == 0.0 { 1.0 } else { absmax / 127.0 }
}

/// Twin of `quantize4`: four values to four int8 in one u32, value j in byte j.
pub fn quantize4(v: [f32; 4], scale: f32) -> u32 {
    let mut word = 0u32;
    for (j, x) in v.iter().enumerate() {
        let q = (x / scale).round_ties_even().clamp(-127.0, 127.0) as i8;
        word |= u32::from(q as u8) << (8 * j);
    }
    word
}

/// Twin of quantize_act.wgsl: rows of `x` (N x K) to `xq` (N x `x_row_words`) and `scales` (N).
pub fn quantize_act<E: Element>(n: usize, k: usize, x_row_words: usize, x: &[E], xq: &mut [u32], scales: &mut [f32]) {
    for row in 0..n {
        let load4 = |kk: usize| -> [f32; 4] {
            std::array::from_fn(|j| if kk + j < k { x[row * k + kk + j].to_f32() } else { 0.0 })
        };
        let absmax = (0..x_row_words).flat_map(|w| load4(4 * w)).fold(0f32, |m, v| m.max(v.abs()));
        let scale = act_scale(absmax);
        for w in 0..x_row_words {
            xq[row * x_row_words + w] = quantize4(load4(4 * w), scale);
        }
        scales[row] = scale;
    }
}

/// One step of a packed row as the shaders' `load_step` sees it: words, scale, zero point.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    words: [u32; 4],
    scale: f32,
    zero: f32,
}

impl Step {
    /// The step's scale (the int4 group scale; 1 for per-row formats).
    pub fn scale(&self) -> f32 {
        self.scale
    }
}

/// Twin of the shaders' `load_step`.
pub fn load_step(format: Format, p: &QMatmulParams, w: &[u32], ws: &[u32], wz: &[u32], row: usize, s: usize) -> Step {
    let wr = p.w_row_words as usize;
    match format {
        Format::Ternary2 => Step { words: [w[row * wr + s], 0, 0, 0], scale: 1.0, zero: 0.0 },
        Format::Int8 => Step { words: std::array::from_fn(|q| w[row * wr + 4 * s + q]), scale: 1.0, zero: 0.0 },
        _ => {
            let g = (STEP as usize * s) / p.group as usize;
            let pair = ws[row * p.s_row_words as usize + g / 2];
            let scale = half::f16::from_bits((pair >> (16 * (g % 2))) as u16).to_f32();
            let zero = if wz.is_empty() {
                8.0
            } else {
                ((wz[row * p.a_row_words as usize + g / 8] >> (4 * (g % 8))) & 0xF) as f32
            };
            Step { words: [w[row * wr + 2 * s], w[row * wr + 2 * s + 1], 0, 0], scale, zero }
        }
    }
}

fn ternary_codes(st: &Step, q: usize) -> [u32; 4] {
    std::array::from_fn(|j| (st.words[0] >> (8 * q + 2 * j)) & 3)
}

fn int4_nibbles(st: &Step, q: usize) -> [u32; 4] {
    let word = st.words[q / 2] >> (16 * (q % 2));
    std::array::from_fn(|j| (word >> (4 * j)) & 0xF)
}

/// Twin of `decode_f`: weights 4q..4q+3 of the step as float levels.
pub fn decode_f(format: Format, st: &Step, q: usize) -> [f32; 4] {
    match format {
        Format::Ternary2 => ternary_codes(st, q).map(|c| (c & 1) as f32 - (c >> 1) as f32),
        Format::Int8 => std::array::from_fn(|j| f32::from((st.words[q] >> (8 * j)) as u8 as i8)),
        _ => int4_nibbles(st, q).map(|v| v as f32 - st.zero),
    }
}

/// Twin of `decode_i8`: the same four weights as packed int8.
pub fn decode_i8(format: Format, st: &Step, q: usize) -> u32 {
    match format {
        Format::Ternary2 => {
            let b = (st.words[0] >> (8 * q)) & 0xFF;
            let spread = (b & 0x3) | ((b & 0xC) << 6) | ((b & 0x30) << 12) | ((b & 0xC0) << 18);
            (spread & 0x0101_0101) | (((spread >> 1) & 0x0101_0101) * 0xFF)
        }
        Format::Int8 => st.words[q],
        _ => int4_nibbles(st, q)
            .iter()
            .enumerate()
            .fold(0, |acc, (j, &v)| acc | (u32::from((v as i32 - st.zero as i32) as i8 as u8) << (8 * j))),
    }
}

/// `dot4I8Packed`.
pub fn dot4_i8(a: u32, b: u32) -> i32 {
    (0..4).map(|j| i32::from((a >> (8 * j)) as u8 as i8) * i32::from((b >> (8 * j)) as u8 as i8)).sum()
}

/// Activations of the twin: floats (N x K) or int8 words (N x x_row_words) with per-row scales.
#[derive(Clone, Copy, Debug)]
pub enum ActIn<'a, E> {
    /// Float activations.
    Float(&'a [E]),
    /// Int8 activations and their scales.
    Int8(&'a [u32], &'a [f32]),
}

/// Twin of the low-bit GEMV with the shared-memory reduction: `wg` invocations take steps
/// i, i + wg, …; per step and column, the 16-weight dot product is scaled by the step scale and
/// accumulated in f32; then a tree reduction, the row scale and the activation scale.
#[expect(clippy::too_many_arguments, reason = "mirrors the shader's bindings one to one")]
pub fn qgemv<E: Element>(
    format: Format,
    p: &QMatmulParams,
    wg: usize,
    x: ActIn<'_, E>,
    w: &[u32],
    ws: &[u32],
    wz: &[u32],
    y: &mut [E],
) {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let row_scale = |row: usize| match format {
        Format::Ternary2 | Format::Int8 => f32::from_bits(ws[row]),
        _ => 1.0,
    };
    for row in 0..m {
        for c in 0..n {
            let mut partial = vec![0f32; wg];
            for (li, acc) in partial.iter_mut().enumerate() {
                for s in (li..p.steps as usize).step_by(wg) {
                    let st = load_step(format, p, w, ws, wz, row, s);
                    let d = match x {
                        ActIn::Float(xf) => (0..4)
                            .map(|q| {
                                let xv: [f32; 4] = std::array::from_fn(|j| {
                                    let kk = 16 * s + 4 * q + j;
                                    if kk < k { xf[c * k + kk].to_f32() } else { 0.0 }
                                });
                                dot4(decode_f(format, &st, q), xv)
                            })
                            .fold(0.0, |a, b| a + b),
                        ActIn::Int8(xq, _) => {
                            let xw = p.x_row_words as usize;
                            (0..4).map(|q| dot4_i8(decode_i8(format, &st, q), xq[c * xw + 4 * s + q])).sum::<i32>()
                                as f32
                        }
                    };
                    *acc = st.scale.mul_add(d, *acc);
                }
            }
            let mut s = wg / 2;
            while s > 0 {
                for li in 0..s {
                    partial[li] += partial[li + s];
                }
                s /= 2;
            }
            let xscale = match x {
                ActIn::Float(_) => 1.0,
                ActIn::Int8(_, scales) => scales[c],
            };
            y[c * p.ldy as usize + p.m_offset as usize + row] = E::from_f32(partial[0] * row_scale(row) * xscale);
        }
    }
}
