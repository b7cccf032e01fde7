// Row normalisation of token states, one workgroup per row (token):
//   LayerNorm without affine (DiT's norm1 / norm2 / final norm, eps from the params, 1e-6 there),
//   or RMSNorm (RMS; with AFFINE, times a per-feature weight);
//   MODULATE: adaLN modulation  y = n * (1 + scale[image]) + shift[image], the shift and scale
//   rows read from the adaLN projection of the row's image (rows_per_image tokens share one);
//   EMIT_I8: instead of writing floats, quantize the row to int8 (per-token absmax, as
//   quantize_act.wgsl) for the next W1.58A8 / W8A8 matmul, in the same pass.
// LayerNorm statistics are two-pass (mean, then centred variance) for accuracy. The CPU twin is
// src/cpu/norm.rs. COUNT_WORK counts the work done (shared/work_count.wgsl) for the test of
// `Norm::work`: every invocation computes the row statistics from the sums (a divide each, the
// inverse square root counted as one).
#import elem
#import work_count
#import reduce
#ifdef EMIT_I8
#import act_quant
#endif

// Keep in sync with `NormParams` in src/kernels/norm.rs.
struct NormParams {
    rows: u32,
    d: u32,
    rows_per_image: u32,
    eps: f32,
    // adaLN projection: row stride, and offsets of the shift and scale chunks within a row.
    mod_stride: u32,
    shift_offset: u32,
    scale_offset: u32,
    // u32 words per int8 output row (ceil(d / 16) * 4).
    x_row_words: u32,
}

override WG: u32 = 128u;

@group(0) @binding(0) var<uniform> p: NormParams;
@group(0) @binding(1) var<storage, read> x: array<elem>;
#ifdef MODULATE
@group(0) @binding(2) var<storage, read> modulation: array<elem>;
#endif
#ifdef AFFINE
@group(0) @binding(3) var<storage, read> weight: array<elem>;
#endif
#ifdef EMIT_I8
@group(0) @binding(4) var<storage, read_write> xq: array<u32>;
@group(0) @binding(5) var<storage, read_write> xs: array<f32>;
#else
@group(0) @binding(4) var<storage, read_write> y: array<elem>;
#endif

// The whole workgroup's sum of one value per invocation.
fn workgroup_sum(v: f32, g: Grid) -> f32 {
    var acc: array<f32, MAX_ACC>;
    acc[0] = v;
    reduce_sums(&acc, 1u, g);
    let s = reduced(0u);
    workgroupBarrier(); // everyone has read the result before the space is reused
    return s;
}

// Normalised (and modulated) value of feature j of `row`, given the row statistics.
fn normalized(row: u32, j: u32, mean: f32, inv: f32) -> f32 {
    var v = (f32(x[row * p.d + j]) - mean) * inv;
    count_dram_read(ELEM_BYTES);
    count_f32_add(1u);
    count_f32_mul(1u);
#ifdef AFFINE
    v *= f32(weight[j]);
    count_dram_read(ELEM_BYTES);
    count_f32_mul(1u);
#endif
#ifdef MODULATE
    let base = (row / p.rows_per_image) * p.mod_stride;
    v = fma(v, 1.0 + f32(modulation[base + p.scale_offset + j]), f32(modulation[base + p.shift_offset + j]));
    count_dram_read(2u * ELEM_BYTES);
    count_f32_add(2u);
    count_f32_mul(1u);
#endif
    return v;
}

@compute @workgroup_size(WG)
fn main(g: Grid) {
    let li = g.li;
    let row = workgroup_index(g);
    if row >= p.rows {
        return; // uniform per workgroup
    }
    let d = f32(p.d);
#ifdef RMS
    let mean = 0.0;
#else
    var s = 0.0;
    for (var j = li; j < p.d; j += WG) {
        s += f32(x[row * p.d + j]);
        count_dram_read(ELEM_BYTES);
        count_f32_add(1u);
    }
    let mean = workgroup_sum(s, g) / d;
    count_div();
#endif
    var q = 0.0;
    for (var j = li; j < p.d; j += WG) {
        let c = f32(x[row * p.d + j]) - mean;
        q = fma(c, c, q);
        count_dram_read(ELEM_BYTES);
        count_f32_add(2u);
        count_f32_mul(1u);
    }
    let inv = inverseSqrt(workgroup_sum(q, g) / d + p.eps);
    count_div();
    count_f32_add(1u);
    count_div(); // inverseSqrt
#ifdef EMIT_I8
    // Absmax of the output row (a max over non-negative values, via the same reduction space).
    var m = 0.0;
    for (var j = li; j < p.d; j += WG) {
        m = max(m, abs(normalized(row, j, mean, inv)));
    }
    let scale = act_scale(workgroup_max(m, li));
    for (var w = li; w < p.x_row_words; w += WG) {
        var v = vec4<f32>();
        for (var t = 0u; t < 4u; t++) {
            if 4u * w + t < p.d {
                v[t] = normalized(row, 4u * w + t, mean, inv);
            }
        }
        xq[row * p.x_row_words + w] = quantize4(v, scale);
        count_dram_write(4u);
    }
    if li == 0u {
        xs[row] = scale;
        count_dram_write(4u);
    }
#else
    for (var j = li; j < p.d; j += WG) {
        y[row * p.d + j] = elem(normalized(row, j, mean, inv));
        count_dram_write(ELEM_BYTES);
    }
#endif
    count_flush();
}

