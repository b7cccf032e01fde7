// W8A8 tiled GEMM: int8 weights (src/quant Int8), int8 activations, dot4I8Packed with i32 sums
// (shared/gemm_a8.wgsl).
#import elem
#import gemm_a8

// Rows are whole vec4<u32> of 16 int8.
@group(0) @binding(3) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> ws: array<f32>;

fn load_w_words(row: u32, q: u32) -> vec4<u32> {
    count_dram_read(16u);
    return w[row * (p.w_row_words / 4u) + q];
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
