// Group-quantized int4 GEMV / small-N: eight 4-bit weights per u32 (nibble k % 8 of word k / 8 of
// the row), one f16 scale per group of G = 32/64/128 weights (two per u32), symmetric (stored
// nibble - 8) or with a 4-bit zero point per group (ZERO_POINT; eight per u32). f32/f16
// activations, or int8 activations with ACT_I8 (nibbles widened to packed int8, dot4I8Packed, the
// group scale applied per 16-weight step). Layout: src/quant (Int4).
#import elem
#import gemv_q
#import dense_slice

// Step s of a row: words 2s and 2s + 1 (rows are whole vec4<u32>, so vec2 loads are aligned).
@group(0) @binding(3) var<storage, read> w: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read> ws: array<u32>;
#ifdef ZERO_POINT
@group(0) @binding(5) var<storage, read> wz: array<u32>;
#endif

fn load_step(row: u32, s: u32) -> Step {
    let g = (16u * s) / p.group;
    let scale = unpack2x16float(ws[row * p.s_row_words + g / 2u])[g % 2u];
#ifdef ZERO_POINT
    let zero = f32((wz[row * p.a_row_words + g / 8u] >> (4u * (g % 8u))) & 0xFu);
#else
    let zero = 8.0;
#endif
    let words = w[row * (p.w_row_words / 2u) + s];
    // The scale (and zero point) words and the vec2 of weights; unpacking the scale and zero point.
#ifdef ZERO_POINT
    count_dram_read(16u);
#else
    count_dram_read(12u);
#endif
    count_bit_ops(4u);
    return Step(vec4<u32>(words, 0u, 0u), scale, zero, 0u);
}

// The four nibbles of weights 4q..4q+3.
fn nibbles(st: Step, q: u32) -> vec4<u32> {
    let word = st.words[q / 2u] >> (16u * (q % 2u));
    return (vec4<u32>(word) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(0xFu);
}

// Select the half word, 4 shifts, 4 masks; subtract the zero point.
fn decode_f(st: Step, q: u32) -> DecF {
    count_bit_ops(9u);
    count_f32_add(4u);
    return vec4<f32>(nibbles(st, q)) - vec4<f32>(st.zero);
}

// ... and pack4xI8 instead of the float subtract.
fn decode_i8(st: Step, q: u32) -> DecI {
    count_bit_ops(19u);
    count_i32_add(4u);
    return pack4xI8(vec4<i32>(nibbles(st, q)) - vec4<i32>(i32(st.zero)));
}

fn row_scale(row: u32) -> f32 {
    return 1.0;
}
