//! Twin of norm.wgsl.

use super::Element;
use super::qmatmul::{act_scale, quantize4};
use crate::kernels::norm::{NormKind, NormParams};

/// The outputs of the norm twin.
#[derive(Debug)]
pub enum NormOut<'a, E> {
    /// Floats, rows x d.
    Float(&'a mut [E]),
    /// Int8 words and per-row scales.
    Int8(&'a mut [u32], &'a mut [f32]),
}

/// Twin of norm.wgsl. `modulation` and `weight` are used when the kind / params say so.
/// Sums are formed sequentially here and by a tree on the GPU: tests compare with a tolerance.
pub fn norm<E: Element>(
    p: &NormParams,
    kind: NormKind,
    modulate: bool,
    x: &[E],
    modulation: &[E],
    weight: &[E],
    out: NormOut<'_, E>,
) {
    let (rows, d) = (p.rows as usize, p.d as usize);
    let mut out = out;
    for row in 0..rows {
        let xr: Vec<f32> = x[row * d..(row + 1) * d].iter().map(|v| v.to_f32()).collect();
        let mean = if kind == NormKind::LayerNorm { xr.iter().sum::<f32>() / d as f32 } else { 0.0 };
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let inv = 1.0 / (var + p.eps).sqrt();
        let value = |j: usize| -> f32 {
            let mut v = (xr[j] - mean) * inv;
            if kind == (NormKind::Rms { affine: true }) {
                v *= weight[j].to_f32();
            }
            if modulate {
                let base = (row / p.rows_per_image as usize) * p.mod_stride as usize;
                let scale = modulation[base + p.scale_offset as usize + j].to_f32();
                let shift = modulation[base + p.shift_offset as usize + j].to_f32();
                v = v.mul_add(1.0 + scale, shift);
            }
            v
        };
        match &mut out {
            NormOut::Float(y) => {
                for j in 0..d {
                    y[row * d + j] = E::from_f32(value(j));
                }
            }
            NormOut::Int8(xq, xs) => {
                let words = p.x_row_words as usize;
                let absmax = (0..d).fold(0f32, |m, j| m.max(value(j).abs()));
                let scale = act_scale(absmax);
                for w in 0..words {
                    let v: [f32; 4] = std::array::from_fn(|t| if 4 * w + t < d { value(4 * w + t) } else { 0.0 });
                    xq[row * words + w] = quantize4(v, scale);
                }
                xs[row] = scale;
            }
        }
    }
}
