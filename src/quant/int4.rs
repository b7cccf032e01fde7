//! [`Format::Int4`](super::Format::Int4): int4 with an f16 scale per group of G weights along K,
//! symmetric (nibble = level + 8) or asymmetric with a 4-bit zero point per group.

use super::{
    Format, Packed, Quantized, RowLayout, f16_scale, nibble, pack_f16_pairs, put_nibble, round_half_even,
    unpack_f16_pairs,
};
use crate::error::Result;

/// Quantizes each group of `G` weights (the last one of a row may be partial: its scale is taken
/// over its real weights only). `levels` receives the stored nibble.
pub(super) fn quantize(w: &[f32], m: u32, layout: &RowLayout, group: u32, zero_point: bool) -> Result<Quantized> {
    let format = Format::Int4 { group, zero_point };
    let (k, g, groups) = (layout.k as usize, group as usize, layout.scale_groups as usize);
    let mut levels = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(m as usize * groups);
    let mut zeros = Vec::with_capacity(if zero_point { m as usize * groups } else { 0 });
    for (row, ws) in w.chunks_exact(k).enumerate() {
        // Kp = ceil(K / G) * G, so every group has at least one real weight.
        for (gi, wg) in ws.chunks(g).enumerate() {
            if zero_point {
                let lo = wg.iter().fold(0.0f32, |a, &x| a.min(x));
                let hi = wg.iter().fold(0.0f32, |a, &x| a.max(x));
                // Quantize with the f16-rounded scale so levels and the stored scale agree.
                let s = f16_scale(format, (hi - lo) / 15.0, row, gi)?;
                let z = round_half_even(-lo / s).clamp(0.0, 15.0);
                levels.extend(wg.iter().map(|&x| (round_half_even(x / s) + z).clamp(0.0, 15.0) as i8));
                scales.push(s);
                zeros.push(z as u8);
            } else {
                let max = wg.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
                let s = f16_scale(format, max / 7.0, row, gi)?;
                levels.extend(wg.iter().map(|&x| (round_half_even(x / s).clamp(-8.0, 7.0) + 8.0) as i8));
                scales.push(s);
            }
        }
    }
    Ok(Quantized { format, m, k: layout.k, levels, values_f16: Vec::new(), scales, zeros })
}

/// `(nibble - zero) * scale`, zero = 8 without a zero point.
pub(super) fn dequantize(
    levels: &[i8],
    scales: &[f32],
    zeros: &[u8],
    k: usize,
    layout: &RowLayout,
    group: u32,
    zero_point: bool,
) -> Vec<f32> {
    let (g, groups) = (group as usize, layout.scale_groups as usize);
    levels
        .iter()
        .enumerate()
        .map(|(i, &nib)| {
            let gi = (i / k) * groups + (i % k) / g;
            let zero = if zero_point { i32::from(zeros[gi]) } else { 8 };
            (i32::from(nib) - zero) as f32 * scales[gi]
        })
        .collect()
}

/// Nibble `k` of a row at bits `4 * (k % 8)` of word `k / 8`; padding nibbles hold the code of
/// weight 0 (8, or the group's zero point). Scales as f16 pairs, zero points as nibbles.
pub(super) fn pack(q: &Quantized, layout: &RowLayout, p: &mut Packed) {
    let zero_point = matches!(q.format, Format::Int4 { zero_point: true, .. });
    let (k, rw, groups) = (q.k as usize, layout.row_words as usize, layout.scale_groups as usize);
    let g = layout.scale_group as usize;
    let (srw, arw) = (layout.scale_row_words as usize, layout.aux_row_words as usize);
    p.data = vec![0; q.m as usize * rw];
    p.scales = vec![0; q.m as usize * srw];
    p.aux = vec![0; q.m as usize * arw];
    for row in 0..q.m as usize {
        let levels = &q.levels[row * k..][..k];
        let zeros = if zero_point { &q.zeros[row * groups..][..groups] } else { &[] };
        let out = &mut p.data[row * rw..][..rw];
        for i in 0..layout.padded_k as usize {
            let nib = match levels.get(i) {
                Some(&l) => l as u8,
                None if zero_point => zeros[i / g],
                None => 8,
            };
            put_nibble(out, i, nib);
        }
        pack_f16_pairs(&q.scales[row * groups..][..groups], &mut p.scales[row * srw..][..srw]);
        for (gi, &z) in zeros.iter().enumerate() {
            put_nibble(&mut p.aux[row * arw..][..arw], gi, z);
        }
    }
}

pub(super) fn unpack(p: &Packed, layout: &RowLayout) -> Result<Quantized> {
    let zero_point = matches!(p.format, Format::Int4 { zero_point: true, .. });
    let (k, rw, groups) = (p.k as usize, layout.row_words as usize, layout.scale_groups as usize);
    let g = layout.scale_group as usize;
    let (srw, arw) = (layout.scale_row_words as usize, layout.aux_row_words as usize);
    let m = p.m as usize;
    let mut levels = Vec::with_capacity(m * k);
    let mut scales = Vec::with_capacity(m * groups);
    let mut zeros = Vec::with_capacity(if zero_point { m * groups } else { 0 });
    for row in 0..m {
        scales.extend(unpack_f16_pairs(p.format, &p.scales[row * srw..][..srw], groups, row)?);
        let row_zeros: Vec<u8> = if zero_point {
            let aux = &p.aux[row * arw..][..arw];
            for gi in groups..arw * 8 {
                if nibble(aux, gi) != 0 {
                    return Err(p.format.error(format!("unused zero-point nibble {gi} of row {row} is not 0")));
                }
            }
            (0..groups).map(|gi| nibble(aux, gi)).collect()
        } else {
            vec![8; groups]
        };
        let words = &p.data[row * rw..][..rw];
        for i in 0..layout.padded_k as usize {
            let nib = nibble(words, i);
            if i < k {
                levels.push(nib as i8);
            } else if nib != row_zeros[i / g] {
                return Err(p.format.error(format!(
                    "padding weight [{row}, {i}] has nibble {nib}, not the zero code {}",
                    row_zeros[i / g]
                )));
            }
        }
        if zero_point {
            zeros.extend(row_zeros);
        }
    }
    Ok(Quantized { format: p.format, m: p.m, k: p.k, levels, values_f16: Vec::new(), scales, zeros })
}
