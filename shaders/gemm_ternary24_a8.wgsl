// 2:4 sparse ternary with int8 activations, tiled (Format::Ternary24): each group's 5-bit state
// (six per word, layout as gemv_ternary24.wgsl) becomes one packed int8 word while staging —
// its two kept ±1 at positions a < b, zeros elsewhere — then the dot4I8Packed tile loop of
// shared/gemm_a8.wgsl with i32 sums. The weight stream is 1.34 bits per weight against 2 for
// ternary; the multiply-adds are those of the dense tile (WGSL has no sparse dot product).
#import elem
#import gemm_a8

@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read> ws: array<f32>;

// Group g of `row` as four packed int8: byte a = 1 - 2 (s & 1), byte b = 1 - (s & 2), in
// two's complement; state 24 keeps nothing. Positions from the state bits as decode_f does.
// A group's state to one packed int8 word: extraction, positions, values, shifts (16).
fn group_i8(row: u32, g: u32) -> u32 {
    count_dram_read(4u);
    count_bit_ops(16u);
    let s = (w[row * p.w_row_words + g / 6u] >> (5u * (g % 6u))) & 31u;
    let a = select(select(0u, 1u, s >= 12u), 2u, s >= 20u);
    let b = select(select(3u, 2u, (s & 20u) == 4u), 1u, s < 4u);
    let va = select(1u, 0xFFu, (s & 1u) != 0u);
    let vb = select(1u, 0xFFu, (s & 2u) != 0u);
    return select(0u, (va << (8u * a)) | (vb << (8u * b)), s < 24u);
}

fn load_w_words(row: u32, q: u32) -> vec4<u32> {
    let g = 4u * q;
    return vec4<u32>(group_i8(row, g), group_i8(row, g + 1u), group_i8(row, g + 2u), group_i8(row, g + 3u));
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
