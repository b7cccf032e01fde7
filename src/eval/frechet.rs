//! The Fréchet distance between two sets of feature vectors, each summarised by a Gaussian
//! (mean, covariance) — FID's formula on the digit classifier's features:
//!
//! `FD = |μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½)`
//!
//! Square roots of the symmetric positive semi-definite matrices come from a Jacobi
//! eigendecomposition in f64 (negative eigenvalues of round-off are clamped to 0).

/// Mean and covariance (divided by n − 1) of `n` vectors of `dim` values, row after row.
#[derive(Clone, Debug, PartialEq)]
pub struct Gaussian {
    /// Dimension.
    pub dim: usize,
    /// Mean, `dim` values.
    pub mean: Vec<f64>,
    /// Covariance, `dim × dim` row-major.
    pub cov: Vec<f64>,
}

impl Gaussian {
    /// The statistics of `rows` (each `dim` long; at least two).
    pub fn of<R: AsRef<[f32]>>(rows: &[R], dim: usize) -> Self {
        let n = rows.len() as f64;
        let mut mean = vec![0f64; dim];
        for r in rows {
            for (m, &v) in mean.iter_mut().zip(r.as_ref()) {
                *m += f64::from(v) / n;
            }
        }
        let mut cov = vec![0f64; dim * dim];
        for r in rows {
            let d: Vec<f64> = r.as_ref().iter().zip(&mean).map(|(&v, m)| f64::from(v) - m).collect();
            for i in 0..dim {
                for j in i..dim {
                    cov[i * dim + j] += d[i] * d[j];
                }
            }
        }
        for i in 0..dim {
            for j in i..dim {
                let v = cov[i * dim + j] / (n - 1.0).max(1.0);
                cov[i * dim + j] = v;
                cov[j * dim + i] = v;
            }
        }
        Self { dim, mean, cov }
    }
}

/// Eigenvalues and eigenvectors (columns of the returned row-major matrix) of the symmetric
/// `n × n` matrix `a`, by cyclic Jacobi rotations until the off-diagonal mass is negligible.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let norm: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        if off <= 1e-30 * norm {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() <= 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// The square root of the symmetric positive semi-definite `n × n` matrix `a`.
pub fn sqrt_psd(a: &[f64], n: usize) -> Vec<f64> {
    let (values, v) = symmetric_eigen(a, n);
    let roots: Vec<f64> = values.iter().map(|&l| l.max(0.0).sqrt()).collect();
    let mut out = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            out[i * n + j] = (0..n).map(|k| v[i * n + k] * roots[k] * v[j * n + k]).sum();
        }
    }
    out
}

fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0f64; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                out[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    out
}

/// The Fréchet distance between `a` and `b` (same dimension).
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> f64 {
    assert_eq!(a.dim, b.dim, "Fréchet distance of Gaussians of different dimension");
    let n = a.dim;
    let mean: f64 = a.mean.iter().zip(&b.mean).map(|(x, y)| (x - y).powi(2)).sum();
    let s1 = sqrt_psd(&a.cov, n);
    let mut inner = matmul(&matmul(&s1, &b.cov, n), &s1, n);
    // Symmetrise the round-off away before the eigendecomposition.
    for i in 0..n {
        for j in i + 1..n {
            let m = 0.5 * (inner[i * n + j] + inner[j * n + i]);
            inner[i * n + j] = m;
            inner[j * n + i] = m;
        }
    }
    let cross: f64 = symmetric_eigen(&inner, n).0.iter().map(|&l| l.max(0.0).sqrt()).sum();
    let trace = |m: &[f64]| (0..n).map(|i| m[i * n + i]).sum::<f64>();
    (mean + trace(&a.cov) + trace(&b.cov) - 2.0 * cross).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn sqrt_of_a_known_matrix() {
        // [[5, 4], [4, 5]] = Q diag(9, 1) Qᵀ, whose root is [[2, 1], [1, 2]].
        let r = sqrt_psd(&[5.0, 4.0, 4.0, 5.0], 2);
        for (got, want) in r.iter().zip([2.0, 1.0, 1.0, 2.0]) {
            assert_relative_eq!(*got, want, epsilon = 1e-12);
        }
    }

    #[test]
    fn distance_of_diagonal_gaussians_has_a_closed_form() {
        // Commuting covariances: FD = |Δμ|² + Σ (√σ₁ − √σ₂)².
        let a = Gaussian { dim: 3, mean: vec![0.0, 1.0, 2.0], cov: vec![4.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 9.0] };
        let b = Gaussian { dim: 3, mean: vec![1.0, 1.0, 0.0], cov: vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 4.0] };
        assert_relative_eq!(frechet_distance(&a, &b), 5.0 + 1.0 + 0.0 + 1.0, epsilon = 1e-10);
        assert_relative_eq!(frechet_distance(&a, &a), 0.0, epsilon = 1e-9);
    }

    #[test]
    fn sample_statistics() {
        let rows = [[1.0f32, 2.0], [3.0, 2.0], [2.0, 5.0]];
        let g = Gaussian::of(&rows, 2);
        assert_relative_eq!(g.mean[0], 2.0, epsilon = 1e-12);
        assert_relative_eq!(g.mean[1], 3.0, epsilon = 1e-12);
        assert_relative_eq!(g.cov[0], 1.0, epsilon = 1e-12); // ((-1)² + 1² + 0²) / 2
        assert_relative_eq!(g.cov[1], 0.0, epsilon = 1e-12); // (-1·-1 + 1·-1 + 0·2) / 2
        assert_relative_eq!(g.cov[3], 3.0, epsilon = 1e-12);
    }
}
