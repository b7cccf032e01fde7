// W1.58A8 tiled GEMM: ternary 2-bit weights (src/quant Ternary2) decoded to packed int8 while
// staging, int8 activations, dot4I8Packed with i32 sums (shared/gemm_a8.wgsl).
#import elem
#import gemm_a8
#import ternary_codes

@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read> ws: array<f32>;

fn load_w_words(row: u32, q: u32) -> vec4<u32> {
    let word = w[row * p.w_row_words + q];
    count_dram_read(4u);
    return word_to_i8(word);
}

fn w_scale(row: u32) -> f32 {
    count_dram_read(4u);
    return ws[row];
}

// One scale per row (applied in the epilogue), no groups.
const GROUPED: bool = false;

fn group_scales(m: u32, g: u32) -> vec4<f32> {
    return vec4<f32>();
}
