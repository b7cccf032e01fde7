//! Twins of elementwise.wgsl and step_slice.wgsl.

use super::Element;
use crate::kernels::EltOp;
use crate::kernels::elementwise::Broadcast;

/// `out[i] = a[i] op b[i]` (or `alpha * a[i] + beta`, fused), computed in f32 and rounded once to
/// the element type. The vec4 and scalar variants compute the same values.
pub fn elementwise<E: Element>(op: EltOp, a: &[E], b: Option<&[E]>, out: &mut [E]) {
    elementwise_broadcast(op, a, b, None, out);
}

/// [`elementwise`] with `b` repeated over `a` as `broadcast` says.
pub fn elementwise_broadcast<E: Element>(
    op: EltOp,
    a: &[E],
    b: Option<&[E]>,
    broadcast: Option<Broadcast>,
    out: &mut [E],
) {
    let bi = |i: usize| broadcast.map_or(i, |br| br.index(i));
    for i in 0..out.len() {
        if op == EltOp::Copy {
            out[i] = a[bi(i)];
            continue;
        }
        let av = a[i].to_f32();
        out[i] = E::from_f32(match op {
            EltOp::Add => av + b.expect("add needs b")[bi(i)].to_f32(),
            EltOp::Mul => av * b.expect("mul needs b")[bi(i)].to_f32(),
            EltOp::Scale { alpha, beta } => av.mul_add(alpha, beta),
            EltOp::Silu => super::epilogue::silu(av),
            EltOp::GeluTanh => super::epilogue::gelu_tanh(av),
            EltOp::Copy => unreachable!("handled above"),
        });
    }
}

/// Twin of step_slice.wgsl: step `step`'s slice of `src` (`[steps, dst.len()]`), the last step's
/// when the counter is past it.
pub fn step_slice<E: Element>(step: u32, src: &[E], dst: &mut [E]) {
    let len = dst.len();
    let steps = src.len() / len.max(1);
    let s = (step as usize).min(steps.saturating_sub(1));
    dst.copy_from_slice(&src[s * len..(s + 1) * len]);
}
