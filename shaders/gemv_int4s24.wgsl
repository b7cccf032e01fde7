// 2:4 sparse int4 GEMV / small-N (Format::Int4Sparse24 { group }): per group of 4 weights, two
// int4 values (nibble = level + 8) in `data` (two nibbles per group, 16 weights per u32) and the
// positions a | b << 2 as one nibble in `aux` (binding 5, eight groups per u32); one f16 scale per
// G = 32/64/128 weights (two per u32). f32/f16 activations (two multiply-adds per group,
// shared/sparse24_slice.wgsl) or int8 activations with ACT_I8 (the two activation bytes, two i32
// multiply-adds; the group scale applied per 16-weight step). Layout: src/quant (Int4Sparse24).
#import elem
#import gemv_q
#import sparse24_slice

@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read> ws: array<u32>;
@group(0) @binding(5) var<storage, read> wa: array<u32>;

// Step s: data word s (values of groups 4s..4s+3), half s % 2 of position word s / 2 (in aux), and
// the scale of G-group 16 s / G (G is a power of two: a shift, not a division per invocation).
fn load_step(row: u32, s: u32) -> Step {
    let g = (16u * s) >> countTrailingZeros(p.group);
    let scale = unpack2x16float(ws[row * p.s_row_words + g / 2u])[g % 2u];
    let pos = wa[row * p.a_row_words + s / 2u] >> (16u * (s % 2u));
    // Scale, positions and weight words; the scale unpack (4) and the half of the position word.
    count_dram_read(12u);
    count_bit_ops(5u);
    return Step(vec4<u32>(w[row * p.w_row_words + s], 0u, 0u, 0u), scale, 0.0, pos);
}

// Group q of the step: its two value nibbles (bits 8q..8q+7 of the data word) and its positions.
// Values (shift and 3 masks and shifts) and - 8, positions (shift) and their four masks (7).
fn decode_f(st: Step, q: u32) -> DecF {
    count_bit_ops(12u);
    count_f32_add(2u);
    let v = st.words.x >> (8u * q);
    return pair_f(st.aux >> (4u * q), f32(v & 0xFu) - 8.0, f32((v >> 4u) & 0xFu) - 8.0);
}

// int8 activations: the two activation bytes (shifts 24 - 8a, 24 - 8b) and two i32 multiply-adds.
struct DecI {
    sa: u32,
    sb: u32,
    va: i32,
    vb: i32,
}

// ... or the two byte shifts (and, shift and subtract each) and integer values - 8.
fn decode_i8(st: Step, q: u32) -> DecI {
    count_bit_ops(11u);
    count_i32_add(2u);
    let v = st.words.x >> (8u * q);
    let n = st.aux >> (4u * q);
    return DecI(24u - ((n & 3u) << 3u), 24u - ((n & 12u) << 1u), i32(v & 0xFu) - 8, i32((v >> 4u) & 0xFu) - 8);
}

fn dot_i8(d: DecI, x: u32) -> i32 {
    count_i8_mul(2u);
    count_i32_add(1u);
    return act_byte(x, d.sa) * d.va + act_byte(x, d.sb) * d.vb;
}

fn count_slice_sums() {
    count_i32_add(3u);
}

fn row_scale(row: u32) -> f32 {
    return 1.0;
}
