//! Twin of fma_probe.wgsl.

use super::Element;
use crate::kernels::probe::ProbeParams;

/// The value invocation `id` writes: 8 chains `a = fma(a, mul, add)` of `iters` steps, summed.
/// The probe computes in its element type (it measures that type's arithmetic roof): f16 chains
/// round after each step here, while a GPU may keep more precision, so tests compare f16 loosely.
pub fn fma_probe<E: Element>(p: &ProbeParams, iters: u32, id: u32) -> f32 {
    let s = E::from_f32((id % 7) as f32 * 0.001);
    let m = E::from_f32(p.mul).to_f32();
    let c = E::from_f32(p.add).to_f32();
    let offsets = [0.0f32, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7];
    let add = |x: f32, y: f32| E::from_f32(x + y).to_f32();
    let mut a: Vec<f32> = offsets.iter().map(|o| add(s.to_f32(), E::from_f32(*o).to_f32())).collect();
    for _ in 0..iters {
        for v in &mut a {
            *v = E::from_f32(v.mul_add(m, c)).to_f32();
        }
    }
    let pair = |i: usize, j: usize| add(a[i], a[j]);
    let t = add(add(add(pair(0, 1), pair(2, 3)), pair(4, 5)), pair(6, 7));
    // The four lanes hold equal values.
    add(add(add(t, t), t), t)
}
