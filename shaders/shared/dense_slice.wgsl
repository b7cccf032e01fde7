// Slice types and products of the dense low-bit formats for shared/gemv_q.wgsl: a 4-weight slice
// decodes to four float levels (dot with four activations) or four packed int8 (dot4I8Packed).
// 2:4 sparse formats define their own (two multiply-adds per slice).
alias DecF = vec4<f32>;
alias DecI = u32;

fn dot_f(d: DecF, x: vec4<f32>) -> f32 {
    return dot(d, x);
}

fn dot_i8(d: DecI, x: u32) -> i32 {
    return dot4I8Packed(d, x);
}
