// W1.58A8 tiled GEMM: ternary 2-bit weights (src/quant Ternary2) decoded to packed int8 while
// staging, int8 activations, dot4I8Packed with i32 sums (shared/gemm_a8.wgsl).
#import elem
#import gemm_a8

@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read> ws: array<f32>;

// One byte of four 2-bit codes to four int8: as gemv_ternary.wgsl's decode_i8.
fn codes_to_i8(b: u32) -> u32 {
    count_bit_ops(15u);
    count_i32_mul(1u);
    let spread = (b & 0x3u) | ((b & 0xCu) << 6u) | ((b & 0x30u) << 12u) | ((b & 0xC0u) << 18u);
    return (spread & 0x01010101u) | (((spread >> 1u) & 0x01010101u) * 0xFFu);
}

fn load_w_words(row: u32, q: u32) -> vec4<u32> {
    let word = w[row * p.w_row_words + q];
    count_dram_read(4u);
    return vec4<u32>(
        codes_to_i8(word & 0xFFu),
        codes_to_i8((word >> 8u) & 0xFFu),
        codes_to_i8((word >> 16u) & 0xFFu),
        codes_to_i8(word >> 24u),
    );
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
