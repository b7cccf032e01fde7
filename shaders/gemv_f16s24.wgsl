// 2:4 sparse f16 GEMV / small-N (Format::F16Sparse24): per group of 4 weights, one u32 holding the
// two kept values as f16 (lower position in the low half) in `data`, and the positions a | b << 2
// as one nibble in `aux` (binding 5, eight groups per u32). No scales: binding 4 is not declared
// (binding numbers of the others unchanged), step and row scales are 1. f32/f16 activations (two
// multiply-adds per group, shared/sparse24_slice.wgsl) or int8 activations with ACT_I8 (W16A8:
// the two activation bytes times the f16 values in f32 — the weights are no integers, so dot_i8
// returns an f32 — with a quarter of the activation bytes of f32). Layout: src/quant
// (F16Sparse24).
#import elem
#import gemv_q
#import sparse24_slice

// Step s is vec4 s of the row (four groups; rows are whole vec4s).
@group(0) @binding(3) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> wa: array<u32>;

// The four value words, and half s % 2 of position word s / 2.
fn load_step(row: u32, s: u32) -> Step {
    let pos = wa[row * p.a_row_words + s / 2u] >> (16u * (s % 2u));
    // Positions and the vec4 of f16 pairs; the half of the position word.
    count_dram_read(20u);
    count_bit_ops(1u);
    return Step(w[row * (p.w_row_words / 4u) + s], 1.0, 0.0, pos);
}

// The f16 halves (2), positions (shift) and their four masks (7).
fn decode_f(st: Step, q: u32) -> DecF {
    count_bit_ops(10u);
    let v = unpack2x16float(st.words[q]);
    return pair_f(st.aux >> (4u * q), v.x, v.y);
}

// int8 activations: the two activation bytes (shifts 24 - 8a, 24 - 8b) times the f16 values.
struct DecI {
    sa: u32,
    sb: u32,
    va: f32,
    vb: f32,
}

// ... or the two byte shifts (3 each).
fn decode_i8(st: Step, q: u32) -> DecI {
    count_bit_ops(9u);
    let v = unpack2x16float(st.words[q]);
    let n = st.aux >> (4u * q);
    return DecI(24u - ((n & 3u) << 3u), 24u - ((n & 12u) << 1u), v.x, v.y);
}

fn dot_i8(d: DecI, x: u32) -> f32 {
    // The two byte-to-float conversions beside the shifts.
    count_bit_ops(2u);
    count_f32_mul(2u);
    count_f32_add(1u);
    return fma(f32(act_byte(x, d.sa)), d.va, f32(act_byte(x, d.sb)) * d.vb);
}

fn count_slice_sums() {
    count_f32_add(3u);
}

fn row_scale(row: u32) -> f32 {
    return 1.0;
}
