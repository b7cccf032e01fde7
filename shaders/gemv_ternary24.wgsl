// 2:4 sparse ternary GEMV / small-N (Format::Ternary24): each group of 4 weights keeps two ±1 as a
// 5-bit state, six states per u32 (24 weights per word, bits 30..31 zero); one f32 scale per row.
// f32/f16 activations (two multiply-adds per group, shared/sparse24_slice.wgsl) or int8
// activations with ACT_I8 (the two activation bytes, two i32 multiply-adds). Layout: src/quant
// (Ternary24): state = 4 p + (neg_a | neg_b << 1) with pair p of (0,1) (0,2) (0,3) (1,2) (1,3)
// (2,3); state 24 keeps nothing (padding and all-zero groups).
#import elem
#import gemv_q
#import sparse24_slice

// A step (16 weights = 4 groups) never crosses a vec2: 3 steps are 12 groups = 2 words, so step s
// lies in vec2 s / 3 of the row (rows are whole vec4s, so the vec2 loads are aligned).
@group(0) @binding(3) var<storage, read> w: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read> ws: array<f32>;

// The four 5-bit states of step s, in bits 0..19 of words.x. With o = s % 3 they are groups 4o..4o+3
// of the 12 in the vec2 (x: groups 0..5, y: 6..11): x bits 0..19 (o = 0), x bits 20..29 and y bits
// 0..9 (o = 1), y bits 10..29 (o = 2) — one funnel shift of (base, y) by 0, 20 or 10 bits. Bits
// above 19 are never read.
fn load_step(row: u32, s: u32) -> Step {
    let o = s % 3u;
    let pair = w[row * (p.w_row_words / 2u) + s / 3u];
    // The vec2 holding the step (each of its three steps loads it) and the funnel shift.
    count_dram_read(8u);
    count_bit_ops(8u);
    let base = select(pair.x, pair.y, o == 2u);
    let sh = (0x0A1400u >> (8u * o)) & 0xFFu; // 0, 20, 10
    return Step(vec4<u32>((base >> sh) | (pair.y << (30u - sh)), 0u, 0u, 0u), 1.0, 0.0, 0u);
}

fn state(st: Step, q: u32) -> u32 {
    return (st.words.x >> (5u * q)) & 31u;
}

// Straight from the state bits, no table: pair p = s >> 2 has a >= 1 from p = 3 (s >= 12), a = 2
// at p = 5 (s >= 20), b = 1 at p = 0 (s < 4), b = 2 at p = 1 or 3 (s & 0b10100 = 0b00100), else
// b = 3. Values 1 - 2 neg, times live = (s < 24): state 24 gives 0 and 0.
// The state (2), live (2), the four masks (5), sign bits (2); va = live - 2 neg (a multiply-add),
// vb = live - neg.
fn decode_f(st: Step, q: u32) -> DecF {
    count_bit_ops(11u);
    count_f32_mul(1u);
    count_f32_add(2u);
    let s = state(st, q);
    let live = select(0.0, 1.0, s < 24u);
    return DecF(s >= 12u, s >= 20u, s < 4u, (s & 20u) == 4u, live - 2.0 * f32(s & 1u), live - f32(s & 2u));
}

// (3 - a) | (3 - b) << 2 for pair p in nibble p (bits 4p = s & 28): the shifts 8 (3 - a) and
// 8 (3 - b) that bring activation bytes a and b to the top of the word. Nibble 6 (state 24) is 0.
// Keep in sync with T24_SHIFTS in src/cpu/qmatmul.rs.
const T24_SHIFTS: u32 = 0x0012637Bu;

// int8 activations: the two activation bytes and two i32 multiply-adds.
struct DecI {
    sa: u32,
    sb: u32,
    va: i32,
    vb: i32,
}

// The state (2), the shift-table nibble (3), the two shifts (4), live (2), sign bits (2 and 1),
// va and vb (2 subtracts).
fn decode_i8(st: Step, q: u32) -> DecI {
    count_bit_ops(15u);
    count_i32_add(2u);
    let s = state(st, q);
    let n = (T24_SHIFTS >> (s & 28u)) & 15u;
    let live = select(0, 1, s < 24u);
    return DecI((n & 3u) << 3u, (n & 12u) << 1u, live - 2 * i32(s & 1u), live - i32(s & 2u));
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
    count_dram_read(4u);
    return ws[row];
}
