//! Dense ternary formats: [`Format::Ternary2`] (2 bits per weight) and [`Format::Ternary5`]
//! (1.6 bits per weight, 5 trits per byte). Both share the BitNet b1.58 quantizer.

use super::{Format, Packed, Quantized, RowLayout, ScaleMode, byte, put_byte, round_half_even, unpack_row_scales};
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

// ---- Ternary5 ----------------------------------------------------------------------------------

/// Powers of 3 for the five digits of a Ternary5 byte, most significant (weight `5j`) first.
const POW3: [u32; 5] = [81, 27, 9, 3, 1];

/// Encodes five ternary levels (-1, 0, +1; weight `5j + i` at index `i`) as one Ternary5 byte:
/// digits `d_i = level_i + 1`, `v = 81 d_0 + 27 d_1 + 9 d_2 + 3 d_3 + d_4`, byte
/// `ceil(v * 256 / 243)`. Levels outside -1..=1 are clamped. Five zero levels give 128.
pub const fn ternary5_encode(levels: [i8; 5]) -> u8 {
    let mut v = 0u32;
    let mut i = 0;
    while i < 5 {
        let l = if levels[i] < -1 {
            -1
        } else if levels[i] > 1 {
            1
        } else {
            levels[i]
        };
        v += (l + 1) as u32 * POW3[i];
        i += 1;
    }
    // ceil(v * 256 / 243) = (v * 256 + 242) / 243; v <= 242, so the result is <= 255.
    (v * 256).div_ceil(243) as u8
}

/// Digit `i` (0..=4, weight `5j + i`) of a Ternary5 byte, 0..=2 (the level plus 1), without a
/// base-3 loop: `t = (byte * 3^i) & 255; d = (t * 3) >> 8`. Multiplying by `3^i` modulo 256 shifts
/// the base-3 fraction `byte / 256 ≈ v / 243` left by `i` digits; `* 3 >> 8` reads the leading one.
/// This is what the shaders do (mirror it exactly in WGSL). `i > 4` returns 1 (level 0).
pub const fn ternary5_digit(byte: u8, i: u32) -> u8 {
    if i > 4 {
        return 1;
    }
    let t = (byte as u32 * POW3[4 - i as usize]) & 255;
    ((t * 3) >> 8) as u8
}

/// The five levels of a Ternary5 byte, via [`ternary5_digit`].
fn decode5(b: u8) -> [i8; 5] {
    let mut out = [0i8; 5];
    for (i, l) in out.iter_mut().enumerate() {
        *l = ternary5_digit(b, i as u32) as i8 - 1;
    }
    out
}

/// Byte `j` of a row holds weights `5j..5j+4`, padding level 0 (digit 1).
pub(super) fn pack5(q: &Quantized, layout: &RowLayout, p: &mut Packed) {
    let (k, rw) = (q.k as usize, layout.row_words as usize);
    p.data = vec![0; q.m as usize * rw];
    for (row, out) in q.levels.chunks_exact(k).zip(p.data.chunks_exact_mut(rw)) {
        for j in 0..rw * 4 {
            let five: [i8; 5] = std::array::from_fn(|i| row.get(5 * j + i).copied().unwrap_or(0));
            put_byte(out, j, ternary5_encode(five));
        }
    }
    p.scales = q.scales.iter().map(|s| s.to_bits()).collect();
}

pub(super) fn unpack5(p: &Packed, layout: &RowLayout) -> Result<Quantized> {
    let (k, rw) = (p.k as usize, layout.row_words as usize);
    let mut levels = Vec::with_capacity(p.m as usize * k);
    for (row, words) in p.data.chunks_exact(rw).enumerate() {
        for j in 0..rw * 4 {
            let b = byte(words, j);
            let five = decode5(b);
            // 13 of the 256 byte values are no encoding; they decode to digits that re-encode to a
            // different byte. The packer never writes them.
            if ternary5_encode(five) != b {
                return Err(p.format.error(format!("byte {j} of row {row} is {b}, which is no Ternary5 encoding")));
            }
            for (i, &l) in five.iter().enumerate() {
                let col = 5 * j + i;
                if col < k {
                    levels.push(l);
                } else if l != 0 {
                    return Err(p.format.error(format!("padding weight [{row}, {col}] has level {l}, not 0")));
                }
            }
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

    #[test]
    fn encode_decode_round_trip() {
        for v in 0..243u32 {
            let levels: [i8; 5] = std::array::from_fn(|i| ((v / POW3[i]) % 3) as i8 - 1);
            assert_eq!(decode5(ternary5_encode(levels)), levels, "v = {v}");
        }
        assert_eq!(ternary5_encode([0; 5]), 128);
    }
}
