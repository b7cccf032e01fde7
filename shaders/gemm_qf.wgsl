// Low-bit weights with float activations, tiled: ternary (W_TERNARY), 2:4 sparse ternary
// (W_TERNARY24: one 5-bit state per group of 4 expands to its two ±1 and two zeros), int8 (W_INT8)
// or group-wise int4 (otherwise; ZERO_POINT for asymmetric groups) weights are dequantized into the
// workgroup-memory tile of shared/gemm_tile.wgsl while staging, so the inner loop is the dense
// f32/f16 one. Ternary and int8 stage their integer levels and apply the row scale once per output;
// int4 stages level * group scale. Layouts: src/quant.
#import elem
#import matmul_params_q

@group(0) @binding(0) var<uniform> p: QMatmulParams;
#ifdef VEC4
@group(0) @binding(1) var<storage, read> x: array<elem4>;
#else
@group(0) @binding(1) var<storage, read> x: array<elem>;
#endif
@group(0) @binding(3) var<storage, read> w: array<u32>;
#ifdef W_TERNARY
@group(0) @binding(4) var<storage, read> ws: array<f32>;
#else
#ifdef W_TERNARY24
@group(0) @binding(4) var<storage, read> ws: array<f32>;
#else
#ifdef W_INT8
@group(0) @binding(4) var<storage, read> ws: array<f32>;
#else
@group(0) @binding(4) var<storage, read> ws: array<u32>;
#endif
#endif
#endif
#ifdef ZERO_POINT
@group(0) @binding(5) var<storage, read> wz: array<u32>;
#endif
@group(0) @binding(6) var<storage, read_write> y: array<elem>;

#import epilogue
#import gemm_tile

// W[row, k .. k+3] (k a multiple of 4): levels, or dequantized values for int4.
fn load_w(row: u32, k: u32) -> elem4 {
    if k >= p.k {
        return elem4();
    }
#ifdef W_TERNARY
    count_dram_read(4u);
    count_bit_ops(13u);
    count_f32_add(4u);
    let c = (vec4<u32>(w[row * p.w_row_words + k / 16u] >> (2u * (k % 16u))) >> vec4<u32>(0u, 2u, 4u, 6u)) & vec4<u32>(3u);
    return elem4(vec4<f32>(c & vec4<u32>(1u)) - vec4<f32>(c >> vec4<u32>(1u)));
#else
#ifdef W_TERNARY24
    // Group g = k / 4: state s (six per word, layout as gemv_ternary24.wgsl) keeps positions a < b
    // with values 1 - 2 (s & 1) and 1 - (s & 2); state 24 keeps nothing.
    let g = k / 4u;
    // State extraction, positions and values, and the two lane selects.
    count_dram_read(4u);
    count_bit_ops(12u);
    count_f32_add(6u);
    count_f32_mul(2u);
    let s = (w[row * p.w_row_words + g / 6u] >> (5u * (g % 6u))) & 31u;
    let live = select(0.0, 1.0, s < 24u);
    let a = select(select(0u, 1u, s >= 12u), 2u, s >= 20u);
    let b = select(select(3u, 2u, (s & 20u) == 4u), 1u, s < 4u);
    let lane = vec4<u32>(0u, 1u, 2u, 3u);
    let va = live - 2.0 * f32(s & 1u);
    let vb = live - f32(s & 2u);
    return elem4(select(vec4<f32>(), vec4<f32>(va), lane == vec4<u32>(a)) + select(vec4<f32>(), vec4<f32>(vb), lane == vec4<u32>(b)));
#else
#ifdef W_INT8
    count_dram_read(4u);
    count_bit_ops(8u);
    return elem4(vec4<f32>(unpack4xI8(w[row * p.w_row_words + k / 4u])));
#else
    let g = k / p.group;
    // The scale, (zero point) and weight words; nibbles, subtract and scale.
#ifdef ZERO_POINT
    count_dram_read(12u);
#else
    count_dram_read(8u);
#endif
    count_bit_ops(13u);
    count_f32_add(4u);
    count_f32_mul(4u);
    let scale = unpack2x16float(ws[row * p.s_row_words + g / 2u])[g % 2u];
#ifdef ZERO_POINT
    let zero = f32((wz[row * p.a_row_words + g / 8u] >> (4u * (g % 8u))) & 0xFu);
#else
    let zero = 8.0;
#endif
    let nib = (vec4<u32>(w[row * p.w_row_words + k / 8u] >> (4u * (k % 8u))) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(0xFu);
    return elem4((vec4<f32>(nib) - vec4<f32>(zero)) * scale);
#endif
#endif
#endif
}

// The row scale of output column m, loaded once per invocation and column (the body's multiply
// by it is counted beside it; for int4 the body multiplies by 1, not counted).
fn out_scale(m: u32) -> f32 {
#ifdef W_TERNARY
    count_row_scale();
    return ws[m];
#else
#ifdef W_TERNARY24
    count_row_scale();
    return ws[m];
#else
#ifdef W_INT8
    count_row_scale();
    return ws[m];
#else
    return 1.0;
#endif
#endif
#endif
}

fn count_row_scale() {
    count_dram_read(4u);
}

// The multiply by the row scale, per output (int4's scale is applied while staging).
fn count_out_scale() {
#ifdef W_TERNARY
    count_f32_mul(1u);
#else
#ifdef W_TERNARY24
    count_f32_mul(1u);
#else
#ifdef W_INT8
    count_f32_mul(1u);
#endif
#endif
#endif
}
