// Slice types and products of the dense low-bit formats for shared/gemv_q.wgsl: a 4-weight slice
// decodes to four float levels (dot with four activations) or four packed int8 (dot4I8Packed).
// 2:4 sparse formats define their own (two multiply-adds per slice).
alias DecF = vec4<f32>;
alias DecI = u32;

fn dot_f(d: DecF, x: vec4<f32>) -> f32 {
    count_f32_mul(4u);
    count_f32_add(3u);
    return dot(d, x);
}

fn dot_i8(d: DecI, x: u32) -> i32 {
    count_i8_mul(4u);
    count_i32_add(3u);
    return dot4I8Packed(d, x);
}

// Adding a step's four integer slice products and accumulating the scaled sum.
fn count_step_sum() {
    count_i32_add(3u);
    count_f32_mul(1u);
    count_f32_add(1u);
}
