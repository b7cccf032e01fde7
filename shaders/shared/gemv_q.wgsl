// The body of the low-bit GEMV / small-N kernels (N = NCOLS = 1..8): Y = X * dequant(W)^T.
//
// K is walked in steps of 16 weights. A workgroup of WG invocations owns ROWS rows; invocation i
// takes steps i, i + WG, …, so each step of the workgroup reads consecutive packed words of a row
// (coalesced). The activations of a step are loaded once per column and reused from registers for
// all ROWS rows. With ACT_I8 they are int8 (from quantize_act.wgsl) and each 4-weight slice is one
// integer product (dot4I8Packed, or two multiply-adds for 2:4) with i32 sums; otherwise f32/f16
// activations meet weights decoded to f32.
//
// The importing shader binds W (bindings 3..5) and defines, for the 4-weight slice q of a step:
//   fn load_step(row: u32, s: u32) -> Step            packed words, scale, zero point and aux bits
//   struct DecF; fn decode_f(st: Step, q: u32) -> DecF, fn dot_f(d: DecF, x: vec4<f32>) -> f32
//   struct DecI; fn decode_i8(st: Step, q: u32) -> DecI, fn dot_i8(d: DecI, x: u32) -> i32
//                                                     (f32 where weights are no integers: F16Sparse24)
//   fn row_scale(row: u32) -> f32                     per-row scale (1 where scales are per group)
// Decoding happens once per row and slice and is reused for every column; dot_f / dot_i8 give the
// format its own product (a dense dot, or two multiply-adds for 2:4 sparse slices).
// The result is (sum over steps of step scale * level . x) * row scale * activation scale.
//
// COUNT_WORK counts the work done (shared/work_count.wgsl) for the test of `QGemv::work`: the body
// counts the activation loads, the combination of a step's four slice products and its scaled
// accumulation; each format counts its own loads and decoding in `load_step` (per step) and
// `decode_*` (per slice), and its products in `dot_*`: a dot4I8Packed is 4 int8 multiplies and
// 3 i32 adds, a float dot of four 4 multiplies and 3 adds.
#import matmul_params_q
#import work_count
#import reduce

struct Step {
    words: vec4<u32>,
    scale: f32,
    zero: f32,
    // Format-specific bits beside the words: the 2:4 position nibbles of the step's four groups
    // (F16Sparse24 fills all four words with values).
    aux: u32,
}


override WG: u32 = 128u;
override ROWS: u32 = 4u;
override NCOLS: u32 = 1u;

@group(0) @binding(0) var<uniform> p: QMatmulParams;
#ifdef ACT_I8
// x_row_words / 4 vec4s per row, 16 int8 each.
@group(0) @binding(1) var<storage, read> xq: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> xs: array<f32>;
#else
#ifdef VEC4
@group(0) @binding(1) var<storage, read> x: array<elem4>;
#else
@group(0) @binding(1) var<storage, read> x: array<elem>;
#endif
#endif
@group(0) @binding(6) var<storage, read_write> y: array<elem>;

#import epilogue

#ifndef ACT_I8
// Four activations of column c from k, zero past K.
fn load_x4(c: u32, k: u32) -> vec4<f32> {
#ifdef VEC4
    if k < p.k {
        count_dram_read(4u * ELEM_BYTES);
        return vec4<f32>(x[(c * p.k + k) / 4u]);
    }
    return vec4<f32>();
#else
    var v = vec4<f32>();
    for (var j = 0u; j < 4u; j++) {
        if k + j < p.k {
            v[j] = f32(x[c * p.k + k + j]);
            count_dram_read(ELEM_BYTES);
        }
    }
    return v;
#endif
}
#endif

@compute @workgroup_size(WG)
fn main(g: Grid) {
    let li = g.li;
    let m0 = workgroup_index(g) * ROWS;
    if m0 >= p.m {
        return; // uniform per workgroup: safe before the barriers
    }
    var acc: array<f32, MAX_ACC>;
    for (var s = li; s < p.steps; s += WG) {
#ifdef ACT_I8
        var xv: array<vec4<u32>, 8>;
        for (var c = 0u; c < NCOLS; c++) {
            xv[c] = xq[c * (p.x_row_words / 4u) + s];
            count_dram_read(16u);
        }
        for (var r = 0u; r < ROWS; r++) {
            // Rows past M re-read the last row (valid memory, never written) to keep the loop uniform.
            let st = load_step(min(m0 + r, p.m - 1u), s);
            let w0 = decode_i8(st, 0u);
            let w1 = decode_i8(st, 1u);
            let w2 = decode_i8(st, 2u);
            let w3 = decode_i8(st, 3u);
            for (var c = 0u; c < NCOLS; c++) {
                let d = dot_i8(w0, xv[c].x) + dot_i8(w1, xv[c].y) + dot_i8(w2, xv[c].z) + dot_i8(w3, xv[c].w);
                acc[r * NCOLS + c] = fma(st.scale, f32(d), acc[r * NCOLS + c]);
                count_step_sum();
            }
        }
#else
        var xv: array<vec4<f32>, 32>;
        for (var c = 0u; c < NCOLS; c++) {
            for (var q = 0u; q < 4u; q++) {
                xv[4u * c + q] = load_x4(c, 16u * s + 4u * q);
            }
        }
        for (var r = 0u; r < ROWS; r++) {
            let st = load_step(min(m0 + r, p.m - 1u), s);
            let w0 = decode_f(st, 0u);
            let w1 = decode_f(st, 1u);
            let w2 = decode_f(st, 2u);
            let w3 = decode_f(st, 3u);
            for (var c = 0u; c < NCOLS; c++) {
                let d = dot_f(w0, xv[4u * c]) + dot_f(w1, xv[4u * c + 1u]) + dot_f(w2, xv[4u * c + 2u])
                    + dot_f(w3, xv[4u * c + 3u]);
                acc[r * NCOLS + c] = fma(st.scale, d, acc[r * NCOLS + c]);
                count_f32_add(3u);
                count_f32_mul(1u);
                count_f32_add(1u);
            }
        }
#endif
    }
    reduce_sums(&acc, ROWS * NCOLS, g);
    if li < ROWS * NCOLS {
        let r = li / NCOLS;
        let c = li % NCOLS;
        if m0 + r < p.m {
#ifdef ACT_I8
            let xscale = xs[c];
            count_dram_read(4u);
#else
            let xscale = 1.0;
#endif
            let at = c * p.ldy + p.m_offset + m0 + r;
            y[at] = elem(epilogue(reduced(li) * row_scale(m0 + r) * xscale, c, p.m_offset + m0 + r, at));
            count_f32_mul(2u);
            count_dram_write(ELEM_BYTES);
        }
    }
    count_flush();
}
