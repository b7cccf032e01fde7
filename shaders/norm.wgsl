// Row normalisation of token states, LANES invocations per row (token), WG / LANES rows per
// workgroup (a short row, like DiT's 128 features, takes 32 lanes: four rows a workgroup):
//   LayerNorm without affine (DiT's norm1 / norm2 / final norm, eps from the params, 1e-6 there),
//   or RMSNorm (RMS; with AFFINE, times a per-feature weight);
//   MODULATE: adaLN modulation  y = n * (1 + scale[image]) + shift[image], the shift and scale
//   rows read from the adaLN projection of the row's image (rows_per_image tokens share one);
//   EMIT_I8: instead of writing floats, quantize the row to int8 (per-token absmax, as
//   quantize_act.wgsl) for the next W1.58A8 / W8A8 matmul, in the same pass.
// LayerNorm statistics are two-pass (mean, then centred variance) for accuracy. Rows of at most
// CACHED * 4 * WG features (4,096 at WG 128) are read from device memory once: each invocation
// keeps its groups of four features in registers across the passes. Longer rows are read again
// in every pass (then LANES is the whole workgroup). With several rows a workgroup, the row sums
// and maxima are trees over each row's segment of invocations in workgroup memory; with one, the
// workgroup reduction of shared/reduce.wgsl (subgroups where offered). The CPU twin is
// src/cpu/norm.rs. COUNT_WORK counts the work done (shared/work_count.wgsl) for the test of
// `Norm::work`: every invocation computes the row statistics from the sums (a divide each, the
// inverse square root counted as one).
#import elem
#import work_count
#import reduce
#import act_quant

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
// Invocations per row: a power of two dividing WG. Keep in sync with `Norm::lanes`.
override LANES: u32 = 128u;

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

// The sum over the invocations of a row (every invocation calls it).
fn row_sum(v: f32, g: Grid) -> f32 {
    if LANES == WG {
        return workgroup_sum(v, g);
    }
    return segment_reduce(v, g.li, LANES, false);
}

// Normalised (and modulated) value of feature j of `row` whose input is v, given the row
// statistics.
fn normalize(row: u32, j: u32, v: f32, mean: f32, inv: f32) -> f32 {
    var r = (v - mean) * inv;
    count_f32_add(1u);
    count_f32_mul(1u);
#ifdef AFFINE
    r *= f32(weight[j]);
    count_dram_read(ELEM_BYTES);
    count_f32_mul(1u);
#endif
#ifdef MODULATE
    let base = (row / p.rows_per_image) * p.mod_stride;
    r = fma(r, 1.0 + f32(modulation[base + p.scale_offset + j]), f32(modulation[base + p.shift_offset + j]));
    count_dram_read(2u * ELEM_BYTES);
    count_f32_add(2u);
    count_f32_mul(1u);
#endif
    return r;
}

// Feature j of `row` from device memory.
fn load(row: u32, j: u32) -> f32 {
    count_dram_read(ELEM_BYTES);
    return f32(x[row * p.d + j]);
}

// The inverse standard deviation from the sum of centred squares (every invocation).
fn inverse_std(q: f32, g: Grid) -> f32 {
    count_div();
    count_f32_add(1u);
    count_div(); // inverseSqrt
    return inverseSqrt(row_sum(q, g) / f32(p.d) + p.eps);
}

// Groups of four features per invocation kept in registers.
const CACHED: u32 = 8u;

// Features of group q (four consecutive features) that lie in the row.
fn lanes(q: u32) -> u32 {
    return min(4u, p.d - 4u * q);
}

// Group q of `row` from device memory, zero past the row.
fn load4(row: u32, q: u32) -> vec4<f32> {
    let j = row * p.d + 4u * q;
    let n = lanes(q);
    count_dram_read(n * ELEM_BYTES);
    if n == 4u {
        return vec4<f32>(f32(x[j]), f32(x[j + 1u]), f32(x[j + 2u]), f32(x[j + 3u]));
    }
    var v = vec4<f32>();
    for (var t = 0u; t < n; t++) {
        v[t] = f32(x[j + t]);
    }
    return v;
}

// Group q normalised (lanes past the row stay zero).
fn normalize4(row: u32, q: u32, v: vec4<f32>, mean: f32, inv: f32) -> vec4<f32> {
    let n = lanes(q);
    if n == 4u {
        return vec4<f32>(
            normalize(row, 4u * q, v.x, mean, inv),
            normalize(row, 4u * q + 1u, v.y, mean, inv),
            normalize(row, 4u * q + 2u, v.z, mean, inv),
            normalize(row, 4u * q + 3u, v.w, mean, inv),
        );
    }
    var r = vec4<f32>();
    for (var t = 0u; t < n; t++) {
        r[t] = normalize(row, 4u * q + t, v[t], mean, inv);
    }
    return r;
}

// A row of at most CACHED * 4 * LANES features: read once, normalised in registers. An invalid
// row (past the last, in the last workgroup) takes part in the reductions only.
fn cached_row(g: Grid, row: u32, valid: bool, groups: u32) {
    let li = g.li;
    let lane = li % LANES;
    var cache: array<vec4<f32>, CACHED>;
    var s = 0.0;
    for (var i = 0u; i < CACHED; i++) {
        let q = lane + i * LANES;
        if valid && q < groups {
            cache[i] = load4(row, q);
#ifndef RMS
            s += (cache[i].x + cache[i].y) + (cache[i].z + cache[i].w);
            count_f32_add(lanes(q));
#endif
        }
    }
#ifdef RMS
    let mean = 0.0;
#else
    let mean = row_sum(s, g) / f32(p.d);
    count_div();
#endif
    var sq = 0.0;
    for (var i = 0u; i < CACHED; i++) {
        let q = lane + i * LANES;
        if valid && q < groups {
            // Lanes past the row are not centred: they add nothing.
            let live = vec4<u32>(4u * q) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.d);
            let c = select(vec4<f32>(), cache[i] - mean, live);
            sq += dot(c, c);
            count_f32_add(2u * lanes(q));
            count_f32_mul(lanes(q));
        }
    }
    let inv = inverse_std(sq, g);
    for (var i = 0u; i < CACHED; i++) {
        let q = lane + i * LANES;
        if valid && q < groups {
            cache[i] = normalize4(row, q, cache[i], mean, inv);
        }
    }
#ifdef EMIT_I8
    var m = 0.0;
    for (var i = 0u; i < CACHED; i++) {
        if valid && lane + i * LANES < groups {
            let a = abs(cache[i]);
            m = max(m, max(max(a.x, a.y), max(a.z, a.w)));
        }
    }
    let absmax = segment_max(m, li, LANES);
    if !valid {
        return;
    }
    let scale = act_scale(absmax);
    for (var i = 0u; i < CACHED; i++) {
        let q = lane + i * LANES;
        if q < groups {
            xq[row * p.x_row_words + q] = quantize4(cache[i], scale);
            count_dram_write(4u);
        }
    }
    // The words past the row's groups (rows are whole vec4<u32>) are zero.
    for (var w = groups + lane; w < p.x_row_words; w += LANES) {
        xq[row * p.x_row_words + w] = 0u;
        count_dram_write(4u);
    }
    if lane == 0u {
        xs[row] = scale;
        count_dram_write(4u);
    }
#else
    if !valid {
        return;
    }
    for (var i = 0u; i < CACHED; i++) {
        let q = lane + i * LANES;
        if q < groups {
            let base = row * p.d + 4u * q;
            let n = lanes(q);
            count_dram_write(n * ELEM_BYTES);
            if n == 4u {
                y[base] = elem(cache[i].x);
                y[base + 1u] = elem(cache[i].y);
                y[base + 2u] = elem(cache[i].z);
                y[base + 3u] = elem(cache[i].w);
            } else {
                for (var t = 0u; t < n; t++) {
                    y[base + t] = elem(cache[i][t]);
                }
            }
        }
    }
#endif
}

// A longer row: read from device memory in every pass.
fn streamed_row(g: Grid, row: u32) {
    let li = g.li;
#ifdef RMS
    let mean = 0.0;
#else
    var s = 0.0;
    for (var j = li; j < p.d; j += WG) {
        s += load(row, j);
        count_f32_add(1u);
    }
    let mean = row_sum(s, g) / f32(p.d);
    count_div();
#endif
    var sq = 0.0;
    for (var j = li; j < p.d; j += WG) {
        let c = load(row, j) - mean;
        sq = fma(c, c, sq);
        count_f32_add(2u);
        count_f32_mul(1u);
    }
    let inv = inverse_std(sq, g);
#ifdef EMIT_I8
    // Absmax of the output row, then the row quantized word by word.
    var m = 0.0;
    for (var j = li; j < p.d; j += WG) {
        m = max(m, abs(normalize(row, j, load(row, j), mean, inv)));
    }
    let scale = act_scale(workgroup_max(m, li));
    for (var w = li; w < p.x_row_words; w += WG) {
        var v = vec4<f32>();
        for (var t = 0u; t < 4u; t++) {
            if 4u * w + t < p.d {
                v[t] = normalize(row, 4u * w + t, load(row, 4u * w + t), mean, inv);
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
        y[row * p.d + j] = elem(normalize(row, j, load(row, j), mean, inv));
        count_dram_write(ELEM_BYTES);
    }
#endif
}

@compute @workgroup_size(WG)
fn main(g: Grid) {
    let first_row = workgroup_index(g) * (WG / LANES);
    if first_row >= p.rows {
        return; // uniform per workgroup
    }
    let row = first_row + g.li / LANES;
    let groups = (p.d + 3u) / 4u;
    if groups <= CACHED * LANES {
        cached_row(g, row, row < p.rows, groups);
    } else {
        // LANES is the workgroup here (the host's rule): one row, in range.
        streamed_row(g, row);
    }
    count_flush();
}
