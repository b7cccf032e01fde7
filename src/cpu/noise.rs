//! Twin of noise.wgsl: Philox4x32-10 and Box–Muller.

pub use super::trig::cos_sin;

/// One Philox4x32-10 block.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for _ in 0..10 {
        let p0 = u64::from(0xD251_1F53u32) * u64::from(c[0]);
        let p1 = u64::from(0xCD9E_8D57u32) * u64::from(c[2]);
        c = [(p1 >> 32) as u32 ^ c[1] ^ k[0], p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k[1], p0 as u32];
        k = [k[0].wrapping_add(0x9E37_79B9), k[1].wrapping_add(0xBB67_AE85)];
    }
    c
}

/// Twin of `unit`: the top 24 bits as a float in (0, 1).
pub fn unit(v: u32) -> f32 {
    ((v >> 8) as f32 + 0.5) * (1.0 / 16_777_216.0)
}

/// The raw u32 of element `e` of image `image` (absolute image index) in `stream`.
pub fn bits(seed: u64, stream: u32, image: u32, e: u32) -> u32 {
    philox4x32_10([e / 4, image, stream, 0], [seed as u32, (seed >> 32) as u32])[(e % 4) as usize]
}

/// Twin of `ln_f32`: ln(u) = e ln 2 + 2 atanh((m - 1) / (m + 1)), same operations, same order.
pub fn ln_f32(u: f32) -> f32 {
    let bits = u.to_bits();
    let mut e = ((bits >> 23) as i32 - 127) as f32;
    let mut m = f32::from_bits((bits & 0x007F_FFFF) | 0x3F80_0000);
    if m > std::f32::consts::SQRT_2 {
        m *= 0.5;
        e += 1.0;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut q = s2.mul_add(1.0 / 9.0, 1.0 / 7.0);
    q = s2.mul_add(q, 1.0 / 5.0);
    q = s2.mul_add(q, 1.0 / 3.0);
    q = s2.mul_add(q, 1.0);
    e.mul_add(std::f32::consts::LN_2, 2.0 * s * q)
}

/// The standard normal of element `e` of image `image` in `stream`, as the shader computes it.
pub fn normal(seed: u64, stream: u32, image: u32, e: u32) -> f32 {
    let b = philox4x32_10([e / 4, image, stream, 0], [seed as u32, (seed >> 32) as u32]);
    let pair = ((e % 4) / 2) as usize;
    let r = (-2.0 * ln_f32(unit(b[2 * pair]))).sqrt();
    let (c, s) = cos_sin(std::f32::consts::TAU * (unit(b[2 * pair + 1]) - 0.5));
    if e.is_multiple_of(2) { r * c } else { r * s }
}
