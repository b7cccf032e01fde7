// Ternary GEMV / small-N at 1.6 bits (Format::Ternary5, llama.cpp's TQ1_0 packing): byte j of a
// row holds weights 5j..5j+4 as base-3 digits d = level + 1 scaled to a byte, 20 weights per u32;
// one f32 scale per row. f32/f16 activations, or int8 activations with ACT_I8 (levels packed to
// int8, dot4I8Packed). Layout and the digit formula: src/quant (Ternary5, ternary5_digit): digit i
// of byte b is (((b * 3^i) & 255) * 3) >> 8 — a multiply and a shift, no base-3 division loop.
//
// Steps and bytes: 5 steps are 80 weights = 16 bytes = one vec4<u32> of the row (rows are whole
// vec4s), so step s lies in vec4 s / 5. Its phase o = s % 5 places it at digit o of byte 3o
// (16 o = 5 * 3o + o), through byte 3o + 3: a 4-byte window at bits 24o of the vec4.
//
// load_step turns the window into 2-bit digit codes, weight i of the step at bits 2i, once per row
// and step; the slices then decode like Ternary2 (shift and mask, level = code - 1).
#import elem
#import gemv_q
#import dense_slice

@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read> ws: array<f32>;

// Digit d of two window bytes at once: the bytes sit in 20-bit lanes (bits 0 and 20), where
// byte * 3^d < 2^15 cannot reach the other lane; the digit lands at bits 0 and 20.
fn digit_pair(lanes: u32, pow3: u32) -> u32 {
    return ((((lanes * pow3) & 0x0FF000FFu) * 3u) >> 8u) & 0x00300003u;
}

// The five digits of two bytes, digit d at bits 2d (first byte) and 20 + 2d (second byte).
fn digits5(lanes: u32) -> u32 {
    return digit_pair(lanes, 1u) | (digit_pair(lanes, 3u) << 2u) | (digit_pair(lanes, 9u) << 4u)
        | (digit_pair(lanes, 27u) << 6u) | (digit_pair(lanes, 81u) << 8u);
}

// The window (bytes 3o..3o+3 of the vec4: words a = 3o / 4 and a + 1, funnel-shifted by
// 8 (3o % 4) bits; a + 1 is clamped to the vec4, where o = 0 and 4 need one word only), then all
// 20 digits of it as the 40-bit string of window positions p = 5k + d (byte k, digit d) at bits 2p:
// even bytes 0 and 2 give positions 0..4 and 10..14, odd bytes 1 and 3 give 5..9 and 15..19 (10
// bits higher). The step's 16 weights are positions o..o+15: one more funnel shift, by 2o.
fn load_step(row: u32, s: u32) -> Step {
    let o = s % 5u;
    let base = row * p.w_row_words + 4u * (s / 5u);
    let a = (3u * o) >> 2u;
    let sh = (24u * o) & 31u;
    let lo = w[base + a];
    let hi = w[base + min(a + 1u, 3u)];
    // (x << 1) << (31 - n) is x << (32 - n) without a 32-bit shift when n = 0.
    let win = (lo >> sh) | ((hi << 1u) << (31u - sh));
    let ev = digits5((win & 0xFFu) | ((win & 0xFF0000u) << 4u));
    let od = digits5(((win >> 8u) & 0xFFu) | (((win >> 8u) & 0xFF0000u) << 4u));
    let low = ev | (od << 10u); // positions 0..15
    let high = od >> 22u; // positions 16..19
    let so = 2u * o;
    return Step(vec4<u32>((low >> so) | ((high << 1u) << (31u - so)), 0u, 0u, 0u), 1.0, 0.0, 0u);
}

// The digits (levels + 1) of weights 4q..4q+3.
fn digits(st: Step, q: u32) -> vec4<u32> {
    return (vec4<u32>(st.words.x >> (8u * q)) >> vec4<u32>(0u, 2u, 4u, 6u)) & vec4<u32>(3u);
}

fn decode_f(st: Step, q: u32) -> DecF {
    return vec4<f32>(digits(st, q)) - vec4<f32>(1.0);
}

// Four 2-bit digits (one byte of codes) to four int8 levels: spread the fields to byte lanes, then
// level = digit - 1 in every byte at once without borrows between bytes: set each byte's top bit,
// subtract 1 per byte, clear the top bit (0x7F ^ 0x80 = 0xFF = -1, 0x80 -> 0, 0x81 -> 1).
fn decode_i8(st: Step, q: u32) -> DecI {
    let b = (st.words.x >> (8u * q)) & 0xFFu;
    let spread = (b & 0x3u) | ((b & 0xCu) << 6u) | ((b & 0x30u) << 12u) | ((b & 0xC0u) << 18u);
    return ((spread | 0x80808080u) - 0x01010101u) ^ 0x80808080u;
}

fn row_scale(row: u32) -> f32 {
    return ws[row];
}
