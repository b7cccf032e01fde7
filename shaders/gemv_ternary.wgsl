// Ternary (BitNet b1.58) GEMV / small-N: 2-bit weights, 16 per u32, decoded by shift and mask;
// f32/f16 activations (decode to ±1/0 floats) or int8 activations with ACT_I8 (W1.58A8: decode
// to packed int8 and dot4I8Packed). Layout: src/quant (Ternary2): code 0 = 0, 1 = +1, 2 = -1 at
// bits 2*(k % 16) of word k / 16 of the row; one f32 scale per row.
#import elem
#import gemv_q
#import dense_slice
#import ternary_codes

@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read> ws: array<f32>;

fn load_step(row: u32, s: u32) -> Step {
    count_dram_read(4u);
    return Step(vec4<u32>(w[row * p.w_row_words + s], 0u, 0u, 0u), 1.0, 0.0, 0u);
}

// The four 2-bit codes of weights 4q..4q+3.
fn codes(st: Step, q: u32) -> vec4<u32> {
    return (vec4<u32>(st.words.x >> (8u * q)) >> vec4<u32>(0u, 2u, 4u, 6u)) & vec4<u32>(3u);
}

// Shifts and masks of four codes, then plus - minus.
fn decode_f(st: Step, q: u32) -> DecF {
    count_bit_ops(17u);
    count_f32_add(4u);
    let c = codes(st, q);
    return vec4<f32>(c & vec4<u32>(1u)) - vec4<f32>(c >> vec4<u32>(1u));
}

// Four codes (one byte) to four int8 without a table: spread the 2-bit fields to byte lanes, then
// byte = plus-bit | minus-bit * 0xFF (the two are never both set, so no lane carries).
fn decode_i8(st: Step, q: u32) -> DecI {
    return codes_to_i8((st.words.x >> (8u * q)) & 0xFFu);
}

fn row_scale(row: u32) -> f32 {
    count_dram_read(4u);
    return ws[row];
}
