//! Twins of gemm.wgsl, gemv.wgsl and matmul_naive.wgsl.

use super::Element;
use crate::kernels::MatmulParams;
use crate::kernels::matmul::GEMM_TILE;

/// Twin of gemm.wgsl: per 64 x 64 tile of Y, k-slices of 16, one f32 accumulator per output
/// taking `w * x` products rounded to the element type, in increasing k.
pub fn gemm<E: Element>(p: &MatmulParams, x: &[E], w: &[E], y: &mut [E]) {
    let (bm, bn, bk) = GEMM_TILE;
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    for m0 in (0..m).step_by(bm as usize) {
        for n0 in (0..n).step_by(bn as usize) {
            let mut acc = vec![[0f32; 64]; 64];
            for k0 in (0..k).step_by(bk as usize) {
                for (i, row) in acc
                    .iter_mut()
                    .enumerate()
                    .take(n.saturating_sub(n0).min(64))
                {
                    for (j, a) in row
                        .iter_mut()
                        .enumerate()
                        .take(m.saturating_sub(m0).min(64))
                    {
                        for kk in k0..(k0 + bk as usize).min(k) {
                            *a += E::mul(w[(m0 + j) * k + kk], x[(n0 + i) * k + kk]);
                        }
                    }
                }
            }
            for (i, row) in acc.iter().enumerate().take(n.saturating_sub(n0).min(64)) {
                for (j, a) in row.iter().enumerate().take(m.saturating_sub(m0).min(64)) {
                    y[(n0 + i) * p.ldy as usize + p.m_offset as usize + m0 + j] = E::from_f32(*a);
                }
            }
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
                        let wv: [E; 4] = std::array::from_fn(|j| w[row * k + 4 * kk + j]);
                        let xv: [E; 4] = std::array::from_fn(|j| x[c * k + 4 * kk + j]);
                        *acc += E::dot4(wv, xv);
                    } else {
                        *acc += E::mul(w[row * k + kk], x[c * k + kk]);
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
                acc += E::mul(x[nn * k + kk], w[mm * k + kk]);
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
            let s: f64 = (0..k)
                .map(|kk| f64::from(x[nn * k + kk]) * f64::from(w[mm * k + kk]))
                .sum();
            y[nn * m + mm] = s as f32;
        }
    }
    y
}
