// Slice type and float product of the 2:4 sparse formats for shared/gemv_q.wgsl. A 4-weight slice
// is exactly one 2:4 group: it keeps positions a < b (a in 0..2, b in 1..3) with values va and vb
// (both 0 for a group that keeps nothing). The product is two multiply-adds, x[a] va + x[b] vb:
// half the multiply-adds of a dense slice (the point of 2:4).
//
// x[a] and x[b] are picked by two selects each, from masks the format derives once per row and
// slice and every column reuses. A dynamic index x[a] would lower to the same select chain (three
// compares per index) or to scratch memory; explicit masks let each format test its own bits.
struct DecF {
    // x[a] = x.z if a2, else x.y if a1, else x.x.
    a1: bool,
    a2: bool,
    // x[b] = x.y if b1, else x.z if b2, else x.w.
    b1: bool,
    b2: bool,
    va: f32,
    vb: f32,
}

fn dot_f(d: DecF, x: vec4<f32>) -> f32 {
    count_bit_ops(4u);
    count_f32_mul(2u);
    count_f32_add(1u);
    let xa = select(select(x.x, x.y, d.a1), x.z, d.a2);
    let xb = select(select(x.w, x.z, d.b2), x.y, d.b1);
    return fma(xa, d.va, xb * d.vb);
}

// The slice of positions nibble n = a | b << 2 (Int4Sparse24, F16Sparse24; a < b is guaranteed by
// the packer, so a is never 3 and b never 0).
fn pair_f(n: u32, va: f32, vb: f32) -> DecF {
    let b = n & 12u;
    return DecF((n & 1u) != 0u, (n & 2u) != 0u, b == 4u, b == 8u, va, vb);
}

// Activation byte j of a packed int8 word, sign-extended, given sh = 24 - 8j: shift it to the top,
// then arithmetic-shift it back (two operations, no mask).
fn act_byte(x: u32, sh: u32) -> i32 {
    count_bit_ops(2u);
    return bitcast<i32>(x << sh) >> 24u;
}

// Adding a step's four slice products (`count_slice_sums`, the format's: integer or float) and
// accumulating the scaled sum.
fn count_step_sum() {
    count_slice_sums();
    count_f32_mul(1u);
    count_f32_add(1u);
}
