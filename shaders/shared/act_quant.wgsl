// Per-token absmax int8 quantization (BitNet's A8), as functions so that a kernel producing
// activations (a norm, later) can quantize in the same pass. q = clamp(round(x / scale), -127, 127)
// with scale = absmax / 127 (1 for an all-zero row); WGSL's round() is round-half-to-even, as is
// the CPU twin (src/cpu/qmatmul.rs).

fn act_scale(absmax: f32) -> f32 {
    return select(absmax / 127.0, 1.0, absmax == 0.0);
}

// Four values to four int8 in one u32 (value j in byte j), for dot4I8Packed.
fn quantize4(v: vec4<f32>, scale: f32) -> u32 {
    return pack4xI8(vec4<i32>(clamp(round(v / scale), vec4<f32>(-127.0), vec4<f32>(127.0))));
}
