//! Dense ternary format [`Format::Ternary2`] (2 bits per weight) and the BitNet b1.58 quantizer.

use super::{Format, Packed, Quantized, RowLayout, ScaleMode, round_half_even, unpack_row_scales};
use crate::error::Result;

/// Added to gamma before dividing, as BitNet b1.58 does, so an all-zero row divides safely.
const EPS: f32 = 1e-8;

/// `mean |w|` in f64 (the sum of up to 2^64 f32 magnitudes cannot overflow it), rounded to f32.
fn mean_abs(w: &[f32]) -> f32 {
    (w.iter().map(|&x| f64::from(x.abs())).sum::<f64>() / w.len() as f64) as f32
}

/// The ternary level of `w` under scale `gamma`: `clamp(round_half_even(w / (gamma + 1e-8)), -1, 1)`.
fn level(w: f32, gamma: f32) -> i8 {
    round_half_even(w / (gamma + EPS)).clamp(-1.0, 1.0) as i8
}

/// BitNet b1.58 quantization: gamma = mean |W| per row or over the tensor.
pub(super) fn quantize(w: &[f32], m: u32, k: usize, format: Format, mode: ScaleMode) -> Quantized {
    let scales: Vec<f32> = match mode {
        ScaleMode::PerRow => w.chunks_exact(k).map(mean_abs).collect(),
        ScaleMode::PerTensor => vec![mean_abs(w); m as usize],
    };
    let levels = w.iter().enumerate().map(|(i, &x)| level(x, scales[i / k])).collect();
    Quantized { format, m, k: k as u32, levels, values_f16: Vec::new(), scales, zeros: Vec::new() }
}

// ---- Ternary2 ----------------------------------------------------------------------------------

/// Ternary2 code of a level: 0 -> 0, +1 -> 1, -1 -> 2.
fn code2(level: i8) -> u32 {
    match level {
        1 => 1,
        -1 => 2,
        _ => 0,
    }
}

/// Weight `k` at bits `2 * (k % 16)` of word `k / 16`; padding code 0.
pub(super) fn pack2(q: &Quantized, layout: &RowLayout, p: &mut Packed) {
    let (k, rw) = (q.k as usize, layout.row_words as usize);
    p.data = vec![0; q.m as usize * rw];
    for (row, out) in q.levels.chunks_exact(k).zip(p.data.chunks_exact_mut(rw)) {
        for (i, &l) in row.iter().enumerate() {
            out[i / 16] |= code2(l) << (2 * (i % 16));
        }
    }
    p.scales = q.scales.iter().map(|s| s.to_bits()).collect();
}

pub(super) fn unpack2(p: &Packed, layout: &RowLayout) -> Result<Quantized> {
    let (k, rw) = (p.k as usize, layout.row_words as usize);
    let mut levels = Vec::with_capacity(p.m as usize * k);
    for (row, words) in p.data.chunks_exact(rw).enumerate() {
        for i in 0..layout.padded_k as usize {
            let code = (words[i / 16] >> (2 * (i % 16))) & 3;
            if i >= k {
                if code != 0 {
                    return Err(p.format.error(format!("padding weight [{row}, {i}] has code {code}, not 0")));
                }
                continue;
            }
            levels.push(match code {
                0 => 0,
                1 => 1,
                2 => -1,
                _ => return Err(p.format.error(format!("weight [{row}, {i}] has code 3, which is never written"))),
            });
        }
    }
    let scales = unpack_row_scales(p)?;
    Ok(Quantized { format: p.format, m: p.m, k: p.k, levels, values_f16: Vec::new(), scales, zeros: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_rounds_half_to_even() {
        // gamma + 1e-8 == gamma in f32 for gamma = 1, so w / gamma is exact.
        assert_eq!(level(0.5, 1.0), 0);
        assert_eq!(level(-0.5, 1.0), 0);
        assert_eq!(level(0.5000001, 1.0), 1);
        assert_eq!(level(1.5, 1.0), 1);
        assert_eq!(level(-7.0, 1.0), -1);
        assert_eq!(level(0.0, 0.0), 0);
    }
}
