// W4A8 tiled GEMM: group-wise int4 weights (src/quant Int4, groups a multiple of 64; ZERO_POINT
// for asymmetric groups) decoded to packed int8 (level - zero point) while staging, int8
// activations, dot4I8Packed with i32 sums per 64-weight slice, scaled by the group's f16 scale into
// f32 accumulators (shared/gemm_a8.wgsl, GROUPED).
#import elem
#import gemm_a8

@group(0) @binding(3) var<storage, read> w: array<u32>;
// Group scales, two f16 per word.
@group(0) @binding(4) var<storage, read> ws: array<u32>;
#ifdef ZERO_POINT
// Zero points, eight 4-bit per word.
@group(0) @binding(5) var<storage, read> wz: array<u32>;
#endif

const GROUPED: bool = true;

fn zero_point(row: u32, g: u32) -> u32 {
#ifdef ZERO_POINT
    count_dram_read(4u);
    return (wz[row * p.a_row_words + g / 8u] >> (4u * (g % 8u))) & 0xFu;
#else
    return 8u;
#endif
}

// Nibbles 4h .. 4h+3 of `word` as four int8 (nibble - z), two's complement bytes.
// Four nibbles to four int8: shift, mask, subtract (4 i32 adds), pack (14 bit operations).
fn nibbles_i8(word: u32, h: u32, z: u32) -> u32 {
    count_bit_ops(14u);
    count_i32_add(4u);
    let n = (vec4<u32>(word >> (16u * h)) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(0xFu);
    let b = (n - vec4<u32>(z)) & vec4<u32>(0xFFu);
    return b.x | (b.y << 8u) | (b.z << 16u) | (b.w << 24u);
}

// Weights 16q .. 16q+15: words 2q and 2q+1 of the row (eight nibbles each), one group.
fn load_w_words(row: u32, q: u32) -> vec4<u32> {
    let z = zero_point(row, (16u * q) / p.group);
    let a = w[row * p.w_row_words + 2u * q];
    let b = w[row * p.w_row_words + 2u * q + 1u];
    count_dram_read(8u);
    return vec4<u32>(nibbles_i8(a, 0u, z), nibbles_i8(a, 1u, z), nibbles_i8(b, 0u, z), nibbles_i8(b, 1u, z));
}

fn group_scale(row: u32, g: u32) -> f32 {
    let r = min(row, p.m - 1u);
    count_dram_read(4u);
    return unpack2x16float(ws[r * p.s_row_words + g / 2u])[g % 2u];
}

fn group_scales(m: u32, g: u32) -> vec4<f32> {
    return vec4<f32>(group_scale(m, g), group_scale(m + 1u, g), group_scale(m + 2u, g), group_scale(m + 3u, g));
}

fn w_scale(row: u32) -> f32 {
    return 1.0;
}
