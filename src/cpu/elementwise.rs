//! Twin of elementwise.wgsl.

use super::Element;
use crate::kernels::EltOp;

/// `out[i] = a[i] op b[i]` (or `alpha * a[i] + beta`, fused), computed in f32 and rounded once to
/// the element type. The vec4 and scalar variants compute the same values.
pub fn elementwise<E: Element>(op: EltOp, a: &[E], b: Option<&[E]>, out: &mut [E]) {
    for i in 0..out.len() {
        let av = a[i].to_f32();
        out[i] = E::from_f32(match op {
            EltOp::Add => av + b.expect("add needs b")[i].to_f32(),
            EltOp::Mul => av * b.expect("mul needs b")[i].to_f32(),
            EltOp::Scale { alpha, beta } => av.mul_add(alpha, beta),
            EltOp::Silu => super::epilogue::silu(av),
            EltOp::GeluTanh => super::epilogue::gelu_tanh(av),
        });
    }
}
