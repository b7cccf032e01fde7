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

// The workgroup's maximum of one value per invocation, for the absmax of a row (WG a power of two,
// at most 256; the importer declares `override WG: u32`). Every invocation calls it.
var<workgroup> maxes: array<f32, 256>;

fn workgroup_max(v: f32, li: u32) -> f32 {
    maxes[li] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if li < s {
            maxes[li] = max(maxes[li], maxes[li + s]);
        }
        workgroupBarrier();
    }
    return maxes[0];
}
