//! Twins of patchify.wgsl, unpatchify.wgsl, timestep_embed.wgsl and class_embed.wgsl.

use super::Element;
use super::trig::{cos_sin, reduce_2pi};
use crate::kernels::embed::PatchGeometry;

/// Twin of patchify.wgsl.
pub fn patchify<E: Element>(g: &PatchGeometry, image: &[E], tokens: &mut [E]) {
    let (c_n, h_n, w_n, p) = (g.channels as usize, g.height as usize, g.width as usize, g.patch as usize);
    let (pp, gw) = (p * p, w_n / p);
    let t_n = (h_n / p) * gw;
    let features = c_n * pp;
    for (i, out) in tokens.iter_mut().enumerate().take(g.images as usize * t_n * features) {
        let (f, t, b) = (i % features, (i / features) % t_n, i / (features * t_n));
        let (c, y, x) = (f / pp, (t / gw) * p + (f % pp) / p, (t % gw) * p + f % p);
        *out = image[((b * c_n + c) * h_n + y) * w_n + x];
    }
}

/// Twin of unpatchify.wgsl.
pub fn unpatchify<E: Element>(g: &PatchGeometry, token_channels: usize, tokens: &[E], image: &mut [E]) {
    let (c_n, h_n, w_n, p) = (g.channels as usize, g.height as usize, g.width as usize, g.patch as usize);
    let gw = w_n / p;
    let t_n = (h_n / p) * gw;
    let features = p * p * token_channels;
    for (o, out) in image.iter_mut().enumerate() {
        let (x, y, c, b) = (o % w_n, (o / w_n) % h_n, (o / (w_n * h_n)) % c_n, o / (w_n * h_n * c_n));
        let t = (y / p) * gw + x / p;
        let f = ((y % p) * p + x % p) * token_channels + c;
        *out = tokens[(b * t_n + t) * features + f];
    }
}

/// Twin of timestep_embed.wgsl (`freqs` from `kernels::embed::timestep_freqs`).
pub fn timestep_embed<E: Element>(dim: usize, freqs: &[f32], time_scale: f32, t: &[f32], emb: &mut [E]) {
    let half = dim / 2;
    for (b, &tb) in t.iter().enumerate() {
        for j in 0..dim {
            let v = if j < 2 * half {
                let (c, s) = cos_sin(reduce_2pi(tb * time_scale * freqs[j % half]));
                if j < half { c } else { s }
            } else {
                0.0
            };
            emb[b * dim + j] = E::from_f32(v);
        }
    }
}

/// Twin of class_embed.wgsl (labels past the table read the null class).
pub fn class_embed<E: Element>(dim: usize, rows: usize, labels: &[u32], table: &[E], emb: &mut [E]) {
    for (b, &l) in labels.iter().enumerate() {
        let row = (l as usize).min(rows - 1);
        emb[b * dim..(b + 1) * dim].copy_from_slice(&table[row * dim..(row + 1) * dim]);
    }
}
