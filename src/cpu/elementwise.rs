//! Twin of elementwise.wgsl.

use super::Element;
use crate::kernels::EltOp;

/// `out[i] = a[i] op b[i]` (or `alpha * a[i] + beta`), each result rounded to the element type.
/// The vec4 and scalar variants compute the same values.
pub fn elementwise<E: Element>(op: EltOp, a: &[E], b: Option<&[E]>, out: &mut [E]) {
    for i in 0..out.len() {
        let av = a[i].to_f32();
        out[i] = match op {
            EltOp::Add => E::from_f32(av + b.expect("add needs b")[i].to_f32()),
            EltOp::Mul => E::from_f32(av * b.expect("mul needs b")[i].to_f32()),
            EltOp::Scale { alpha, beta } => {
                let prod = E::from_f32(av * E::from_f32(alpha).to_f32()).to_f32();
                E::from_f32(prod + E::from_f32(beta).to_f32())
            }
        };
    }
}
