// 2:4 sparse ternary with int8 activations, tiled (Format::Ternary24): each group's 5-bit state
// (six per word, layout as gemv_ternary24.wgsl) becomes one packed int8 word while staging —
// its two kept ±1 at positions a < b, zeros elsewhere — then the dot4I8Packed tile loop of
// shared/gemm_a8.wgsl with i32 sums. The weight stream is 1.34 bits per weight against 2 for
// ternary; the multiply-adds are those of the dense tile (WGSL has no sparse dot product).
// SKIP_ZEROS skips the zero half instead: a group stages as its two picks (the bytes of the X word
// its kept weights multiply, as bit offsets, and their signs), and each product is a signed byte
// extraction and an add: per group and output 2 extractions and 4 i32 adds (2 negations, the
// pair's sum, the accumulation) against 4 int8 multiplies and 4 adds.
#import elem
#import gemm_a8

@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read> ws: array<f32>;

// Group g of `row`: its state s (six per word, layout as gemv_ternary24.wgsl) and the positions
// a < b of its two kept weights, as decode_f computes them: state extraction (2) and b's test (1).
struct GroupState {
    s: u32,
    a: u32,
    b: u32,
}

fn group_state(row: u32, g: u32) -> GroupState {
    count_dram_read(4u);
    count_bit_ops(3u);
    let s = (w[row * p.w_row_words + g / 6u] >> (5u * (g % 6u))) & 31u;
    let a = select(select(0u, 1u, s >= 12u), 2u, s >= 20u);
    let b = select(select(3u, 2u, (s & 20u) == 4u), 1u, s < 4u);
    return GroupState(s, a, b);
}

#ifdef SKIP_ZEROS
// Group g of `row` as its picks: bits 0..4 the bit offset of kept weight a's byte (8 a), 8..12
// b's (8 b), bit 16 set if a is -1, bit 17 if b is. State 24 (nothing kept) picks byte 0 twice with
// opposite signs, which sums to zero. Positions from the state bits as decode_f does.
fn group_picks(row: u32, g: u32) -> u32 {
    // The offsets and signs put together (7).
    count_bit_ops(7u);
    let st = group_state(row, g);
    return select(1u << 17u, (8u * st.a) | ((8u * st.b) << 8u) | ((st.s & 3u) << 16u), st.s < 24u);
}

fn load_w_words(row: u32, q: u32) -> vec4<u32> {
    let g = 4u * q;
    return vec4<u32>(group_picks(row, g), group_picks(row, g + 1u), group_picks(row, g + 2u), group_picks(row, g + 3u));
}

// The picks of four rows of W for one group, decoded once for the invocation's four X rows.
struct Picks {
    a: vec4<u32>,
    b: vec4<u32>,
    neg_a: vec4<bool>,
    neg_b: vec4<bool>,
}

fn decode_picks(w: vec4<u32>) -> Picks {
    count_bit_ops(16u);
    let mask = vec4<u32>(31u);
    return Picks(w & mask, (w >> vec4<u32>(8u)) & mask, (w & vec4<u32>(1u << 16u)) != vec4<u32>(),
        (w & vec4<u32>(1u << 17u)) != vec4<u32>());
}

// One X word (a group of 4 int8 of K) against the picks of four rows: per row the two signed
// bytes, each negated where its weight is -1, summed (the caller's vector add accumulates).
fn pick_row(x: u32, picks: Picks) -> vec4<i32> {
    count_bit_ops(8u);
    count_i32_add(16u);
    let xi = bitcast<i32>(x);
    var r: vec4<i32>;
    for (var j = 0u; j < 4u; j++) {
        let xa = extractBits(xi, picks.a[j], 8u);
        let xb = extractBits(xi, picks.b[j], 8u);
        r[j] = select(xa, -xa, picks.neg_a[j]) + select(xb, -xb, picks.neg_b[j]);
    }
    return r;
}
#else
// Group g of `row` as four packed int8: byte a = 1 - 2 (s & 1), byte b = 1 - (s & 2), in
// two's complement; state 24 keeps nothing. Positions from the state bits as decode_f does.
// A group's state to one packed int8 word: extraction, positions, values, shifts (16).
fn group_i8(row: u32, g: u32) -> u32 {
    count_bit_ops(13u);
    let st = group_state(row, g);
    let va = select(1u, 0xFFu, (st.s & 1u) != 0u);
    let vb = select(1u, 0xFFu, (st.s & 2u) != 0u);
    return select(0u, (va << (8u * st.a)) | (vb << (8u * st.b)), st.s < 24u);
}

fn load_w_words(row: u32, q: u32) -> vec4<u32> {
    let g = 4u * q;
    return vec4<u32>(group_i8(row, g), group_i8(row, g + 1u), group_i8(row, g + 2u), group_i8(row, g + 3u));
}

#endif

fn w_scale(row: u32) -> f32 {
    count_dram_read(4u);
    return ws[row];
}

// One scale per row (applied in the epilogue), no groups.
const GROUPED: bool = false;

fn group_scales(m: u32, g: u32) -> vec4<f32> {
    return vec4<f32>();
}
