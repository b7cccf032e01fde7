//! [`Format::Int8`](super::Format::Int8): symmetric int8 with an f32 scale per row (or per tensor).

use super::{Format, Packed, Quantized, RowLayout, ScaleMode, byte, put_byte, round_half_even, unpack_row_scales};
use crate::error::Result;

/// `max |w| / 127`, or 1.0 for an all-zero set (every level is then 0).
fn absmax_scale(w: &[f32]) -> f32 {
    let max = w.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
    if max == 0.0 { 1.0 } else { max / 127.0 }
}

pub(super) fn quantize(w: &[f32], m: u32, k: usize, mode: ScaleMode) -> Quantized {
    let scales: Vec<f32> = match mode {
        ScaleMode::PerRow => w.chunks_exact(k).map(absmax_scale).collect(),
        ScaleMode::PerTensor => vec![absmax_scale(w); m as usize],
    };
    let levels =
        w.iter().enumerate().map(|(i, &x)| round_half_even(x / scales[i / k]).clamp(-127.0, 127.0) as i8).collect();
    Quantized { format: Format::Int8, m, k: k as u32, levels, values_f16: Vec::new(), scales, zeros: Vec::new() }
}

/// Byte `k` of a row is the level as two's-complement i8; padding 0.
pub(super) fn pack(q: &Quantized, layout: &RowLayout, p: &mut Packed) {
    let (k, rw) = (q.k as usize, layout.row_words as usize);
    p.data = vec![0; q.m as usize * rw];
    for (row, out) in q.levels.chunks_exact(k).zip(p.data.chunks_exact_mut(rw)) {
        for (i, &l) in row.iter().enumerate() {
            put_byte(out, i, l as u8);
        }
    }
    p.scales = q.scales.iter().map(|s| s.to_bits()).collect();
}

pub(super) fn unpack(p: &Packed, layout: &RowLayout) -> Result<Quantized> {
    let (k, rw) = (p.k as usize, layout.row_words as usize);
    let mut levels = Vec::with_capacity(p.m as usize * k);
    for (row, words) in p.data.chunks_exact(rw).enumerate() {
        for i in 0..layout.padded_k as usize {
            let l = byte(words, i) as i8;
            if i >= k {
                if l != 0 {
                    return Err(p.format.error(format!("padding weight [{row}, {i}] is {l}, not 0")));
                }
            } else if l == i8::MIN {
                return Err(p.format.error(format!("weight [{row}, {i}] is -128, which is never written")));
            } else {
                levels.push(l);
            }
        }
    }
    let scales = unpack_row_scales(p)?;
    Ok(Quantized { format: p.format, m: p.m, k: p.k, levels, values_f16: Vec::new(), scales, zeros: Vec::new() })
}
