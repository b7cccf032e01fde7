// Per-token absmax int8 quantization (BitNet's A8), as functions so that a kernel producing
// activations (a norm, later) can quantize in the same pass. q = clamp(round(x / scale), -127, 127)
// with scale = absmax / 127 (1 for an all-zero row); WGSL's round() is round-half-to-even, as is
// the CPU twin (src/cpu/qmatmul.rs). The importer imports work_count (COUNT_WORK counts here):
// the scale is a divide; per lane a divide, a round (an add) and the packing (3 bit operations);
// clamp, abs and max are not counted (min/max). The absmax reduction moves WG values through
// workgroup memory once plus its tree, and every invocation reads the result.

fn act_scale(absmax: f32) -> f32 {
    count_div();
    return select(absmax / 127.0, 1.0, absmax == 0.0);
}

// Four values to four int8 in one u32 (value j in byte j), for dot4I8Packed.
fn quantize4(v: vec4<f32>, scale: f32) -> u32 {
    count_f32_mul(4u);
    count_f32_add(4u);
    count_bit_ops(12u);
    return pack4xI8(vec4<i32>(clamp(round(v / scale), vec4<f32>(-127.0), vec4<f32>(127.0))));
}

// The workgroup's maximum of one value per invocation, for the absmax of a row (WG a power of two,
// at most 256; the importer declares `override WG: u32`). Every invocation calls it.
var<workgroup> maxes: array<f32, 256>;

fn workgroup_max(v: f32, li: u32) -> f32 {
    return segment_max(v, li, WG);
}

// The maximum over each segment of `lanes` consecutive invocations (a power of two dividing WG):
// one row per segment when a workgroup quantizes several rows. Every invocation calls it.
fn segment_max(v: f32, li: u32, lanes: u32) -> f32 {
    return segment_reduce(v, li, lanes, true);
}

// The sum (or, with `is_max`, the maximum) of `v` over each segment of `lanes` consecutive
// invocations, a tree in `maxes`; every invocation reads its segment's result (counted), and the
// space is free again on return. Every invocation calls it.
fn segment_reduce(v: f32, li: u32, lanes: u32, is_max: bool) -> f32 {
    maxes[li] = v;
    count_sram_write(4u);
    workgroupBarrier();
    let lane = li % lanes;
    for (var s = lanes / 2u; s > 0u; s >>= 1u) {
        if lane < s {
            let o = maxes[li + s];
            if is_max {
                maxes[li] = max(maxes[li], o);
            } else {
                maxes[li] = maxes[li] + o;
                count_f32_add(1u);
            }
            count_sram_read(8u);
            count_sram_write(4u);
        }
        workgroupBarrier();
    }
    let r = maxes[li - lane];
    count_sram_read(4u);
    workgroupBarrier(); // read before the space is reused
    return r;
}
