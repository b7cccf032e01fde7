//! Twins of gemm.wgsl, gemv.wgsl and matmul_naive.wgsl.

use super::epilogue::{EpilogueInputs, epilogue};
use super::{Element, dot4};
use crate::kernels::MatmulParams;
use crate::kernels::epilogue::Epilogue;

/// Twin of gemm.wgsl: every output is one f32 accumulator taking `x * w` products in increasing k,
/// as each invocation's register block does.
pub fn gemm<E: Element>(p: &MatmulParams, x: &[E], w: &[E], y: &mut [E]) {
    gemm_epilogue(p, &Epilogue::default(), &EpilogueInputs::default(), x, w, y);
}

/// [`gemm`] with a fused epilogue applied to the f32 accumulator before the store.
pub fn gemm_epilogue<E: Element>(
    p: &MatmulParams,
    e: &Epilogue,
    t: &EpilogueInputs<'_>,
    x: &[E],
    w: &[E],
    y: &mut [E],
) {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    for nn in 0..n {
        for mm in 0..m {
            let mut acc = 0f32;
            for kk in 0..k {
                acc = w[mm * k + kk].to_f32().mul_add(x[nn * k + kk].to_f32(), acc);
            }
            let col = p.m_offset as usize + mm;
            let at = nn * p.ldy as usize + col;
            y[at] = E::from_f32(epilogue(e, t, p.ldy as usize, acc, nn, col, at));
        }
    }
}

/// Twin of gemv.wgsl with the shared-memory reduction: `wg` invocations stride along K (in vec4
/// steps when `vec4`), each keeps one partial sum per (row, column), then a tree reduction.
pub fn gemv<E: Element>(p: &MatmulParams, wg: usize, vec4: bool, x: &[E], w: &[E], y: &mut [E]) {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let kv = if vec4 { k / 4 } else { k };
    for row in 0..m {
        for c in 0..n {
            let mut partial = vec![0f32; wg];
            for (li, acc) in partial.iter_mut().enumerate() {
                let mut kk = li;
                while kk < kv {
                    if vec4 {
                        let wv: [f32; 4] = std::array::from_fn(|j| w[row * k + 4 * kk + j].to_f32());
                        let xv: [f32; 4] = std::array::from_fn(|j| x[c * k + 4 * kk + j].to_f32());
                        *acc += dot4(wv, xv);
                    } else {
                        *acc = w[row * k + kk].to_f32().mul_add(x[c * k + kk].to_f32(), *acc);
                    }
                    kk += wg;
                }
            }
            let mut s = wg / 2;
            while s > 0 {
                for li in 0..s {
                    partial[li] += partial[li + s];
                }
                s /= 2;
            }
            y[c * p.ldy as usize + p.m_offset as usize + row] = E::from_f32(partial[0]);
        }
    }
}

/// Twin of matmul_naive.wgsl: one sequential f32 sum per output.
pub fn matmul_naive<E: Element>(p: &MatmulParams, x: &[E], w: &[E], y: &mut [E]) {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    for nn in 0..n {
        for mm in 0..m {
            let mut acc = 0f32;
            for kk in 0..k {
                acc += x[nn * k + kk].to_f32() * w[mm * k + kk].to_f32();
            }
            y[nn * p.ldy as usize + p.m_offset as usize + mm] = E::from_f32(acc);
        }
    }
}

/// Plain f32 reference `Y = X W^T` in f64 accumulation, independent of any kernel's structure:
/// tests check every twin against it so a shared mistake cannot hide in twin and shader alike.
pub fn reference(m: usize, n: usize, k: usize, x: &[f32], w: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; n * m];
    for nn in 0..n {
        for mm in 0..m {
            let s: f64 = (0..k).map(|kk| f64::from(x[nn * k + kk]) * f64::from(w[mm * k + kk])).sum();
            y[nn * m + mm] = s as f32;
        }
    }
    y
}
