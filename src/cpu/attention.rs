//! Twins of attention.wgsl: the plain definition softmax(Q K^T / sqrt(d)) V, with an optional
//! key mask (the neighbourhood window, or key tiles), in f64.

/// Which keys query `q` may see; `None` for all.
pub type Mask<'a> = Option<&'a dyn Fn(usize, usize) -> bool>;

/// softmax(Q K^T / sqrt(d)) V for qkv (images, tokens, 3, heads, d) into out (images, tokens,
/// heads, d), computed in f64 without tiling or online softmax.
pub fn attention(images: usize, tokens: usize, heads: usize, d: usize, qkv: &[f32], mask: Mask<'_>, out: &mut [f32]) {
    let at = |b: usize, t: usize, s: usize, h: usize| (((b * tokens + t) * 3 + s) * heads + h) * d;
    let scale = 1.0 / (d as f64).sqrt();
    for b in 0..images {
        for h in 0..heads {
            for q in 0..tokens {
                let qa = at(b, q, 0, h);
                let scores: Vec<Option<f64>> = (0..tokens)
                    .map(|k| {
                        if mask.is_some_and(|m| !m(q, k)) {
                            return None;
                        }
                        let ka = at(b, k, 1, h);
                        Some((0..d).map(|i| f64::from(qkv[qa + i]) * f64::from(qkv[ka + i])).sum::<f64>() * scale)
                    })
                    .collect();
                let max = scores.iter().flatten().fold(f64::NEG_INFINITY, |m, &s| m.max(s));
                let weights: Vec<f64> = scores.iter().map(|s| s.map_or(0.0, |s| (s - max).exp())).collect();
                let sum: f64 = weights.iter().sum();
                let oa = ((b * tokens + q) * heads + h) * d;
                for i in 0..d {
                    let v: f64 = (0..tokens).map(|k| weights[k] * f64::from(qkv[at(b, k, 2, h) + i])).sum();
                    out[oa + i] = (v / sum) as f32;
                }
            }
        }
    }
}
