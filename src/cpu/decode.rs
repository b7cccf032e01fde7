//! Twin of decode_rgba8.wgsl: samples in [-1, 1] to RGBA8 words in a tiled grid with a row
//! pitch, and the byte rounding [`crate::generator::PixelDecoder`] shares with it.

use crate::kernels::decode::DecodeParams;

/// A sample's byte: floor(x + 0.5) with x = (v + 1) * 127.5, computed as the shader does,
/// (floor((v + 1) * 255) + 1) >> 1 (one rounding, nothing for a compiler to fuse).
pub fn to_byte(v: f32) -> u8 {
    (((((v.clamp(-1.0, 1.0) + 1.0) * 255.0).floor() as u32) + 1) >> 1) as u8
}

/// `out` (rows of `p.pitch` words, red in the low byte; words outside the grid untouched) from
/// `x` (images, C, H, W).
pub fn decode_rgba8(p: &DecodeParams, x: &[f32], out: &mut [u32]) {
    let plane = (p.height * p.width) as usize;
    for o in 0..p.images as usize * plane {
        let (i, py, px) = (o / plane, (o % plane) / p.width as usize, o % p.width as usize);
        let base = i * p.channels as usize * plane + py * p.width as usize + px;
        let b = |c: usize| u32::from(to_byte(x[base + c * plane]));
        let rgba = match p.channels {
            1 => [b(0), b(0), b(0), 255],
            2 => [b(0), b(0), b(0), b(1)],
            3 => [b(0), b(1), b(2), 255],
            _ => [b(0), b(1), b(2), b(3)],
        };
        let tx = (i % p.columns as usize) * p.width as usize + px;
        let ty = (i / p.columns as usize) * p.height as usize + py;
        out[ty * p.pitch as usize + tx] = rgba[0] | (rgba[1] << 8) | (rgba[2] << 16) | (rgba[3] << 24);
    }
}
