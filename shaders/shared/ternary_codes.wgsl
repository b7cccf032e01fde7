// Ternary 2-bit codes (src/quant Ternary2: 16 per u32, code of weight j at bits 2j: 0 is 0,
// 1 is +1, 2 is -1) to packed int8 for dot4I8Packed. The importer imports work_count: one byte of
// four codes is 15 bit operations and a multiply.

// One byte of four codes to four int8 (weight j in byte j).
fn codes_to_i8(b: u32) -> u32 {
    count_bit_ops(15u);
    count_i32_mul(1u);
    let spread = (b & 0x3u) | ((b & 0xCu) << 6u) | ((b & 0x30u) << 12u) | ((b & 0xC0u) << 18u);
    return (spread & 0x01010101u) | (((spread >> 1u) & 0x01010101u) * 0xFFu);
}

// A word of sixteen codes to sixteen int8.
fn word_to_i8(word: u32) -> vec4<u32> {
    return vec4<u32>(
        codes_to_i8(word & 0xFFu),
        codes_to_i8((word >> 8u) & 0xFFu),
        codes_to_i8((word >> 16u) & 0xFFu),
        codes_to_i8(word >> 24u),
    );
}
