// Int8-weight GEMV / small-N: four int8 per u32 (byte k % 4 of word k / 4 of the row), one f32
// scale per row; f32/f16 activations, or int8 activations with ACT_I8 (W8A8, dot4I8Packed).
// Layout: src/quant (Int8).
#import elem
#import gemv_q
#import dense_slice

// Rows are whole vec4<u32> (16 weights): step s of a row is one 16-byte load.
@group(0) @binding(3) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> ws: array<f32>;

fn load_step(row: u32, s: u32) -> Step {
    count_dram_read(16u);
    return Step(w[row * (p.w_row_words / 4u) + s], 1.0, 0.0, 0u);
}

// unpack4xI8: a shift and a sign extension per weight.
fn decode_f(st: Step, q: u32) -> DecF {
    count_bit_ops(8u);
    return vec4<f32>(unpack4xI8(st.words[q]));
}

fn decode_i8(st: Step, q: u32) -> DecI {
    return st.words[q];
}

fn row_scale(row: u32) -> f32 {
    count_dram_read(4u);
    return ws[row];
}
