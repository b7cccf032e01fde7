// Counter-based noise: Philox4x32-10 keyed by the 64-bit seed, with counter (block, image, stream,
// 0) where block = element / 4, so element e of image i is the same number on every backend, in any
// dispatch shape, and on the CPU twin (src/cpu/noise.rs). NORMAL turns each pair of u32 into two
// standard normals with Box–Muller; otherwise the raw u32 are written. Each invocation makes one
// block of four outputs of one image. Output: images x count, row-major.
// Reference: Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011.

// Keep in sync with `NoiseParams` in src/kernels/noise.rs.
struct NoiseParams {
    seed_lo: u32,
    seed_hi: u32,
    // Outputs per image.
    count: u32,
    images: u32,
    // Index of the first image (its counter), so a batch can be generated in parts.
    first_image: u32,
    // Independent streams from one seed (noise for sampling, for img2img, ...).
    stream: u32,
    _pad0: u32,
    _pad1: u32,
}

#import trig

@group(0) @binding(0) var<uniform> p: NoiseParams;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

override WG: u32 = 64u;

// The full 64-bit product a * b as (low, high), from 16-bit limbs (WGSL has no mulhi).
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xFFFFu;
    let a1 = a >> 16u;
    let b0 = b & 0xFFFFu;
    let b1 = b >> 16u;
    let ll = a0 * b0;
    let lh = a0 * b1;
    let hl = a1 * b0;
    let mid = (ll >> 16u) + (lh & 0xFFFFu) + (hl & 0xFFFFu);
    return vec2<u32>((ll & 0xFFFFu) | (mid << 16u), a1 * b1 + (lh >> 16u) + (hl >> 16u) + (mid >> 16u));
}

fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var r = 0u; r < 10u; r++) {
        let p0 = mul_wide(0xD2511F53u, c.x);
        let p1 = mul_wide(0xCD9E8D57u, c.z);
        c = vec4<u32>(p1.y ^ c.y ^ k.x, p1.x, p0.y ^ c.w ^ k.y, p0.x);
        k += vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
    }
    return c;
}

// Box–Muller needs ln, cos and sin. The builtins' accuracy differs by backend (WGSL allows cos an
// absolute error of 2^-11), so these are computed here with explicit fma and the same operation
// order as the CPU twin: normals then agree with the twin to about an ulp on every backend.

// ln(u) for a normal positive u: u = m 2^e with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s) with
// s = (m - 1) / (m + 1), |s| < 0.172, a 5-term series (truncation below 1e-9).
fn ln_f32(u: f32) -> f32 {
    let bits = bitcast<u32>(u);
    var e = f32(i32(bits >> 23u) - 127);
    var m = bitcast<f32>((bits & 0x007FFFFFu) | 0x3F800000u);
    if m > 1.4142135 {
        m *= 0.5;
        e += 1.0;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    var q = fma(s2, 1.0 / 9.0, 1.0 / 7.0);
    q = fma(s2, q, 1.0 / 5.0);
    q = fma(s2, q, 1.0 / 3.0);
    q = fma(s2, q, 1.0);
    return fma(e, 0.6931471805599453, 2.0 * s * q);
}

// A u32 to a float in (0, 1): the top 24 bits, centred in their interval (never 0, so log is finite).
fn unit(v: u32) -> f32 {
    return (f32(v >> 8u) + 0.5) * (1.0 / 16777216.0);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let block = gid.x + gid.y * nwg.x * WG;
    let image = gid.z;
    if 4u * block >= p.count || image >= p.images {
        return;
    }
    let bits = philox4x32_10(vec4<u32>(block, p.first_image + image, p.stream, 0u), vec2<u32>(p.seed_lo, p.seed_hi));
#ifdef NORMAL
    let two_pi = 6.283185307179586;
    let r0 = sqrt(-2.0 * ln_f32(unit(bits.x)));
    let r1 = sqrt(-2.0 * ln_f32(unit(bits.z)));
    let cs0 = cos_sin(two_pi * (unit(bits.y) - 0.5));
    let cs1 = cos_sin(two_pi * (unit(bits.w) - 0.5));
    let v = vec4<u32>(bitcast<u32>(r0 * cs0.x), bitcast<u32>(r0 * cs0.y), bitcast<u32>(r1 * cs1.x), bitcast<u32>(r1 * cs1.y));
#else
    let v = bits;
#endif
    let base = image * p.count + 4u * block;
    for (var j = 0u; j < 4u; j++) {
        if 4u * block + j < p.count {
            out[base + j] = v[j];
        }
    }
}
