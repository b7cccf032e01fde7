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

/// A staged key tile as the I8 variant quantizes it (`quantize_tile` in attention.wgsl).
struct TileI8 {
    /// The mean key over the tile's tokens (d).
    mean: Vec<f32>,
    /// Each key's codes after centring, d / 4 words (KEY_TILE keys, zero keys past the end).
    k8: Vec<Vec<u32>>,
    /// Each key's scale.
    k_scale: Vec<f32>,
    /// Each value channel's codes, four keys per word.
    v8: Vec<[u32; 4]>,
    /// Each value channel's scale.
    v_scale: Vec<f32>,
}

fn unpack_i8(word: u32) -> [f32; 4] {
    std::array::from_fn(|j| f32::from((word >> (8 * j)) as u8 as i8))
}

fn dot4_i8(a: u32, b: u32) -> i32 {
    let (a, b) = (unpack_i8(a), unpack_i8(b));
    (0..4).map(|j| a[j] as i32 * b[j] as i32).sum()
}

/// Twin of attention.wgsl's I8 variant, step for step in f32 (the tile mean, per-key and
/// per-channel scales, the online softmax over the tiles in the order the kernel visits them, the
/// weights' codes), so the kernel can be checked to rounding. `tiles` lists the key tiles of each
/// query block as the `blocks` buffer does (`None`: every tile); `mask` as for [`attention`].
#[allow(clippy::too_many_arguments)]
pub fn attention_i8(
    images: usize,
    tokens: usize,
    heads: usize,
    d: usize,
    qkv: &[f32],
    mask: Mask<'_>,
    tiles: Option<&[Vec<u32>]>,
    out: &mut [f32],
) {
    use super::qmatmul::{act_scale, quantize4};
    use crate::kernels::attention::{KEY_TILE, QUERY_BLOCK};
    let (bk, qblock, d4) = (KEY_TILE as usize, QUERY_BLOCK as usize, d / 4);
    let at = |b: usize, t: usize, s: usize, h: usize| (((b * tokens + t) * 3 + s) * heads + h) * d;
    let scale = 1.0 / (d as f32).sqrt();
    let n_tiles = tokens.div_ceil(bk);
    let p_codes = 127.0f32;
    for b in 0..images {
        for h in 0..heads {
            let staged: Vec<TileI8> = (0..n_tiles)
                .map(|t| {
                    let k0 = t * bk;
                    let keys = bk.min(tokens - k0);
                    let load = |j: usize, s: usize, i: usize| if j < keys { qkv[at(b, k0 + j, s, h) + i] } else { 0.0 };
                    let mean: Vec<f32> =
                        (0..d).map(|i| (0..keys).fold(0.0f32, |acc, j| acc + load(j, 1, i)) / keys as f32).collect();
                    let (mut v8, mut v_scale) = (Vec::new(), Vec::new());
                    for i in 0..d {
                        let v: Vec<f32> = (0..bk).map(|j| load(j, 2, i)).collect();
                        let s = act_scale(v.iter().fold(0.0f32, |m, x| m.max(x.abs())));
                        v8.push(std::array::from_fn(|g| quantize4(std::array::from_fn(|k| v[4 * g + k]), s)));
                        v_scale.push(s);
                    }
                    let (mut k8, mut k_scale) = (Vec::new(), Vec::new());
                    for j in 0..bk {
                        let centred: Vec<f32> = (0..d).map(|i| load(j, 1, i) - mean[i]).collect();
                        let s = act_scale(centred.iter().fold(0.0f32, |m, x| m.max(x.abs())));
                        k8.push((0..d4).map(|c| quantize4(std::array::from_fn(|k| centred[4 * c + k]), s)).collect());
                        k_scale.push(s);
                    }
                    TileI8 { mean, k8, k_scale, v8, v_scale }
                })
                .collect();
            for q in 0..tokens {
                let qa = at(b, q, 0, h);
                let qf: Vec<f32> = (0..d).map(|i| qkv[qa + i] * scale).collect();
                let q_scale = act_scale(qf.iter().fold(0.0f32, |m, x| m.max(x.abs())));
                let q8: Vec<u32> =
                    (0..d4).map(|c| quantize4(std::array::from_fn(|k| qf[4 * c + k]), q_scale)).collect();
                let all: Vec<u32> = (0..n_tiles as u32).collect();
                let visit = tiles.map_or(&all[..], |t| &t[q / qblock][..]);
                let (mut m, mut l, mut o) = (-3.0e38f32, 0.0f32, vec![0.0f32; d]);
                for &t in visit {
                    let (t, k0) = (&staged[t as usize], t as usize * bk);
                    let mut q_mean = 0.0f32;
                    for (&word, mean) in q8.iter().zip(t.mean.chunks(4)) {
                        let x = unpack_i8(word);
                        q_mean += (0..4).fold(0.0f32, |acc, k| acc + x[k] * mean[k]);
                    }
                    q_mean *= q_scale;
                    let s: Vec<f32> = (0..bk)
                        .map(|j| {
                            let key = k0 + j;
                            let ok = key < tokens && mask.is_none_or(|m| m(q, key));
                            let acc: i32 = (0..d4).map(|c| dot4_i8(q8[c], t.k8[j][c])).sum();
                            if ok { acc as f32 * q_scale * t.k_scale[j] + q_mean } else { -3.0e38 }
                        })
                        .collect();
                    let tile_max = s.iter().fold(-3.0e38f32, |a, &b| a.max(b));
                    if tile_max <= -1.0e38 {
                        continue;
                    }
                    let m_new = m.max(tile_max);
                    let correction = (m - m_new).exp();
                    l *= correction;
                    o.iter_mut().for_each(|x| *x *= correction);
                    let w8: [u32; 4] = std::array::from_fn(|g| {
                        let w: [f32; 4] = std::array::from_fn(|k| {
                            let sj = s[4 * g + k];
                            if sj > -1.0e38 { (sj - m_new).exp() } else { 0.0 }
                        });
                        w.iter().enumerate().fold(0u32, |word, (k, x)| {
                            word | u32::from((x * p_codes).round_ties_even() as i8 as u8) << (8 * k)
                        })
                    });
                    l += w8.iter().map(|&w| dot4_i8(w, 0x0101_0101)).sum::<i32>() as f32;
                    for (i, o) in o.iter_mut().enumerate() {
                        let acc: i32 = (0..4).map(|g| dot4_i8(w8[g], t.v8[i][g])).sum();
                        *o = (acc as f32).mul_add(t.v_scale[i], *o);
                    }
                    m = m_new;
                }
                let inv = 1.0 / l;
                let oa = ((b * tokens + q) * heads + h) * d;
                for i in 0..d {
                    out[oa + i] = o[i] * inv;
                }
            }
        }
    }
}
