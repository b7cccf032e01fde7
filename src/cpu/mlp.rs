//! Twin of mlp_ternary_a8.wgsl: the unfused chain it replaces, twin by twin — the modulated
//! LayerNorm emitting int8, the W1.58A8 GEMM with bias and GELU (its output stored as the
//! element type), per-token int8 quantization, the W1.58A8 GEMM with bias, gate and residual.

use super::Element;
use super::epilogue::EpilogueInputs;
use super::norm::{NormOut, norm};
use super::qgemm::{Weights, qgemm_a8};
use super::qmatmul::quantize_act;
use crate::error::Result;
use crate::kernels::epilogue::{Activation, Epilogue};
use crate::kernels::matmul::MatmulShape;
use crate::kernels::mlp::MlpParams;
use crate::kernels::norm::{NormKind, NormParams};
use crate::kernels::qgemm::QGemm;
use crate::kernels::qmatmul::Act;

/// One linear of the MLP: packed weights and bias.
#[derive(Clone, Copy, Debug)]
pub struct Linear<'a, E> {
    /// Packed weights (output rows × input features).
    pub w: Weights<'a>,
    /// Bias, one per output.
    pub b: &'a [E],
}

/// Twin of mlp_ternary_a8.wgsl: `y = x + gate ⊙ (fc2(GELU(fc1(modulate(LayerNorm(x))))))`.
/// Errors as the weight format's layout does.
#[allow(clippy::too_many_arguments)]
pub fn mlp<E: Element>(
    p: &MlpParams,
    x: &[E],
    modulation: &[E],
    fc1: Linear<'_, E>,
    fc2: Linear<'_, E>,
    gate: &[E],
    y: &mut [E],
) -> Result<()> {
    let (rows, d, hidden) = (p.rows as usize, p.d as usize, p.hidden as usize);
    let (xw, hw) = (p.x_row_words as usize, p.h_row_words as usize);
    let f32s = |v: &[E]| v.iter().map(|e| e.to_f32()).collect::<Vec<f32>>();
    let np = NormParams {
        rows: p.rows,
        d: p.d,
        rows_per_image: p.rows_per_image,
        eps: p.eps,
        mod_stride: p.mod_stride,
        shift_offset: p.shift_offset,
        scale_offset: p.scale_offset,
        x_row_words: p.x_row_words,
    };
    let (mut xq, mut xs) = (vec![0u32; rows * xw], vec![0f32; rows]);
    norm(&np, NormKind::LayerNorm, true, x, modulation, &[], NormOut::Int8(&mut xq, &mut xs));

    let act = Act::Int8 { out: E::ELEM };
    let gelu = Epilogue { bias: true, act: Activation::GeluTanh, ..Epilogue::default() };
    let p1 = QGemm::new(MatmulShape::new(p.hidden, p.rows, p.d), fc1.w.format, act).with_epilogue(gelu).params()?;
    let b1 = f32s(fc1.b);
    let mut h = vec![E::default(); rows * hidden];
    let t1 = EpilogueInputs { bias: &b1, residual: &[], gate: &[] };
    qgemm_a8(&p1, fc1.w, &gelu, &t1, &xq, &xs, &mut h);

    let (mut hq, mut hs) = (vec![0u32; rows * hw], vec![0f32; rows]);
    quantize_act(rows, hidden, hw, &h, &mut hq, &mut hs);

    let gated = Epilogue { bias: true, residual: true, gate_rows: Some(p.rows_per_image), ..Epilogue::default() };
    let p2 = QGemm::new(MatmulShape::new(p.d, p.rows, p.hidden), fc2.w.format, act).with_epilogue(gated).params()?;
    let (b2, residual, gate) = (f32s(fc2.b), f32s(&x[..rows * d]), f32s(gate));
    let t2 = EpilogueInputs { bias: &b2, residual: &residual, gate: &gate };
    qgemm_a8(&p2, fc2.w, &gated, &t2, &hq, &hs, y);
    Ok(())
}
