// The body of the int8-activation tiled GEMMs (W1.58A8, W8A8): Y = epilogue(X * W^T) with X int8
// (quantize_act.wgsl: four per u32, rows of x_row_words words) and W decoded to packed int8.
//
// A 16 x 16 workgroup computes a 64 x 64 tile of Y with 4 x 4 i32 accumulators per invocation.
// K is walked in slices of 64 (16 words): each invocation stages one vec4<u32> (16 int8) of X and
// of W per slice, transposed word-major into workgroup memory, so the inner loop reads one vec4 of
// X words and one of W words per word of K and does 16 dot4I8Packed (64 multiply-adds) with them.
// Integer sums are exact; scales (row of W, row of X) are applied once in the epilogue. With
// group-wise weight scales (GROUPED, groups a multiple of the 64-weight slice), each slice's i32
// sums are scaled by their group's scales into f32 accumulators instead (one fma per output per
// slice).
//
// With SKIP_ZEROS (2:4 weights, gemm_ternary24_a8.wgsl) the staged W words are each group's two
// picks instead — which byte of the X word each kept weight multiplies, and its sign — and the
// importer's `decode_picks` / `pick_row` form the products from them: two byte extractions and
// signed adds per group instead of a dense dot4 over its two zeros.
//
// With X_RESIDENT (K of at most 256 int8, many tiles of N) a workgroup owns a 64-row tile of X for
// all of M: it stages the rows' words once, the first time through K, keeps them in workgroup
// memory (16 KiB) and walks the tiles of M over them, so X and its scales are read once instead of
// once per tile of M.
//
// With X_GROUPED the activations carry a scale per row and group of XGW words of K
// (xs[row * groups + g]: the attention's output quantized per token and head), so the i32 sums
// are folded into f32 accumulators at the end of every group, times the rows' group scales (one
// fma per output per group); the groups' scales of the tile's rows are staged once per workgroup.
// Not with GROUPED weights.
//
// With Y_I8 the output is int8 with a scale per row and group of p.y_group columns (a head's
// slice of the qkv projection): the tile's values go through the epilogue (bias, activation) in
// f32, each (row, group)'s absmax is taken through workgroup memory (a group lies inside the
// 64-column tile), and each invocation writes its four columns of a row as one word; y holds
// the words (rows of p.ldy / 4), y_scales the scales (rows of p.ldy / p.y_group).
//
// The importing shader declares the weight bindings and
//   const GROUPED: bool
//   fn load_w_words(row: u32, q: u32) -> vec4<u32>   packed int8 of W[row, 16q .. 16q+15]
//   fn w_scale(row: u32) -> f32                       (not GROUPED)
//   fn group_scales(m: u32, g: u32) -> vec4<f32>      scales of group g, rows m .. m+3 (GROUPED)
// (row < p.m is checked by the caller for load_w_words; group_scales clamps its rows).
//
// COUNT_WORK counts the work done (shared/work_count.wgsl) for the test of `QGemm::work`: the
// body counts the activation loads, the staging, the products and the output; the importer counts
// its weight and scale loads and the decoding in `load_w_words`, `w_scale` and `group_scales`. A
// dot4I8Packed accumulated into a sum is 4 int8 multiplies and 4 i32 adds.
#import matmul_params_q
#import work_count

@group(0) @binding(0) var<uniform> p: QMatmulParams;
@group(0) @binding(1) var<storage, read> xq: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> xs: array<f32>;
#ifdef Y_I8
@group(0) @binding(6) var<storage, read_write> y: array<u32>;
@group(0) @binding(10) var<storage, read_write> y_scales: array<f32>;
// act_quant's workgroup reductions are sized by WG; this kernel uses only its scalar functions.
override WG: u32 = 256u;
#import act_quant
#else
@group(0) @binding(6) var<storage, read_write> y: array<elem>;
#endif

#import epilogue

// Keep in sync with `QGemm::TILE` in src/kernels/qgemm.rs.
const BM: u32 = 64u;
const BN: u32 = 64u;
// Words of K per slice (64 int8).
const BKW: u32 = 16u;

// Word-major slices: xt[kw][n] and wt[kw][m], read as vec4 along n and m.
#ifdef X_RESIDENT
// Every word of K of the tile's rows (K at most 256 int8: 64 words). Keep in sync with
// `QGemm::X_RESIDENT_MAX_K`.
const XRES_WORDS: u32 = 64u;
var<workgroup> xt: array<vec4<u32>, XRES_WORDS * BN / 4u>;
#else
var<workgroup> xt: array<vec4<u32>, 256>; // BKW * BN / 4
#endif
var<workgroup> wt: array<vec4<u32>, 256>; // BKW * BM / 4
// The tile's row scales of W, biases and activation scales, each loaded from memory once per
// workgroup and read by the 16 invocations that share a column or row.
var<workgroup> col_scale: array<f32, 64>; // BM
var<workgroup> col_bias: array<f32, 64>; // BM
var<workgroup> row_scale: array<f32, 64>; // BN
#ifdef X_GROUPED
// Activation scales of the tile's rows, group-major: group g, rows 4r .. 4r+3 in xgs[g * BN / 4 + r].
// Keep in sync with `QGemm::X_GROUPS_MAX`.
const X_GROUPS_MAX: u32 = 16u;
var<workgroup> xgs: array<vec4<f32>, X_GROUPS_MAX * BN / 4u>;
const X_GROUPED_ON: bool = true;
// Words of K per activation group (p.x_group_words as a pipeline constant, so the fold's test
// resolves at compile time): 4, 8 or a multiple of 16. Keep in sync with `QGemm::key`.
override XGW: u32 = 16u;
#else
const X_GROUPED_ON: bool = false;
#endif
#ifdef Y_I8
// |y| of each row's column quads: row r, quad c (4 columns) in y_absmax[r * BM / 4 + c].
var<workgroup> y_absmax: array<f32, 1024>; // BN * BM / 4

// Y_I8: the invocation's 4 x 4 block `yv` (rows n0 + 4 lid.y + i, columns m0 + 4 lid.x ..) as
// int8 with a scale per row and group of p.y_group columns. Every invocation calls it (barriers).
fn store_i8(yv: array<vec4<f32>, 4>, n0: u32, m0: u32, lid: vec3<u32>) {
    for (var i = 0u; i < 4u; i++) {
        let a = abs(yv[i]);
        y_absmax[(lid.y * 4u + i) * (BM / 4u) + lid.x] = max(max(a.x, a.y), max(a.z, a.w));
        count_sram_write(4u);
    }
    workgroupBarrier();
    let quads = p.y_group / 4u;
    let first = (lid.x / quads) * quads;
    let col = p.m_offset + m0 + lid.x * 4u;
    for (var i = 0u; i < 4u; i++) {
        var absmax = 0.0;
        for (var c = first; c < first + quads; c++) {
            absmax = max(absmax, y_absmax[(lid.y * 4u + i) * (BM / 4u) + c]);
            count_sram_read(4u);
        }
        let n = n0 + lid.y * 4u + i;
        if n < p.n && m0 + lid.x * 4u < p.m {
            let scale = act_scale(absmax);
            y[(n * p.ldy + col) / 4u] = quantize4(yv[i], scale);
            count_dram_write(4u);
            if lid.x == first {
                y_scales[n * (p.ldy / p.y_group) + col / p.y_group] = scale;
                count_dram_write(4u);
            }
        }
    }
    workgroupBarrier(); // y_absmax is read before the next tile of M writes it
}
#endif

fn load_x_words(row: u32, q: u32) -> vec4<u32> {
    if row < p.n && 4u * q < p.x_row_words {
        count_dram_read(16u);
        return xq[row * (p.x_row_words / 4u) + q];
    }
    return vec4<u32>();
}

// One X word (4 int8 of K of one row of X) against four rows of W: a dot4 each.
fn dot_row(a: u32, b: vec4<u32>) -> vec4<i32> {
    count_i8_mul(16u);
    count_i32_add(16u);
    return vec4<i32>(dot4I8Packed(a, b.x), dot4I8Packed(a, b.y), dot4I8Packed(a, b.z), dot4I8Packed(a, b.w));
}

// The invocation's f32 accumulators plus its i32 sums, row i's times `cols` (a scale per column:
// int4's group scales) times `rows[i]` (a scale per row: the activations' group scales); the
// caller clears the sums. By value: pointers to the accumulators would keep a compiler from
// holding them in registers (lavapipe's ran the grouped GEMM 1.7x slower so).
fn folded(acc: array<vec4<i32>, 4>, facc: array<vec4<f32>, 4>, cols: vec4<f32>, rows: vec4<f32>) -> array<vec4<f32>, 4> {
    var out = facc;
    for (var i = 0u; i < 4u; i++) {
        out[i] = fma(vec4<f32>(acc[i]), cols * rows[i], facc[i]);
    }
    count_f32_mul(16u);
    count_f32_add(16u);
    return out;
}

#ifdef X_GROUPED
// The end of the activation group holding word `kw` of K: its sums times the invocation's four
// rows' scales. (Groups past K, in a slice's zero padding, add zero sums times the last group's
// scale: only staged slots are read, workgroup memory is not zeroed.)
fn group_scale4(kw: u32, r: u32) -> vec4<f32> {
    let g = min(kw / XGW, p.x_row_words / XGW - 1u);
    count_sram_read(16u);
    return xgs[g * (BN / 4u) + r];
}
#endif

@compute @workgroup_size(16, 16)
fn main(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let n0 = wid.y * BN;
    // Staging role: row `sr` of the tile, words 4*sc .. 4*sc+3 of the slice.
    let sr = li / 4u;
    let sc = li % 4u;
#ifdef X_RESIDENT
    for (var mt = 0u; mt < (p.m + BM - 1u) / BM; mt++) {
        let m0 = mt * BM;
        let first = mt == 0u;
#else
    {
        let m0 = wid.x * BM;
        let first = true;
#endif
        // Rows i of the invocation's 4 x 4 block: i32 sums, and f32 accumulators where sums are
        // scaled as they go (GROUPED, X_GROUPED).
        var acc: array<vec4<i32>, 4>;
        var facc: array<vec4<f32>, 4>;
        let mm = m0 + lid.x * 4u;
#ifdef X_GROUPED
        if first {
            let x_groups = p.x_row_words / p.x_group_words;
            for (var e = li; e < x_groups * BN; e += 256u) {
                let row = n0 + e % BN;
                var s = 0.0;
                if row < p.n {
                    s = xs[row * x_groups + e / BN];
                    count_dram_read(4u);
                }
                xgs[e / 4u][e % 4u] = s;
                count_sram_write(4u);
            }
        }
#endif
        for (var kw0 = 0u; kw0 < p.x_row_words; kw0 += BKW) {
            let q = kw0 / 4u + sc;
            var wv = vec4<u32>();
            if m0 + sr < p.m && 4u * q < p.x_row_words {
                wv = load_w_words(m0 + sr, q);
            }
#ifdef X_RESIDENT
            // X's words of this slice at their place in K, the first time through.
            let xk = kw0;
            if first {
#else
            let xk = 0u;
            {
#endif
                let xv = load_x_words(n0 + sr, q);
                for (var j = 0u; j < 4u; j++) {
                    let at = (xk + 4u * sc + j) * BN + sr;
                    xt[at / 4u][at % 4u] = xv[j];
                    count_sram_write(4u);
                }
            }
            for (var j = 0u; j < 4u; j++) {
                let at = (4u * sc + j) * BN + sr;
                wt[at / 4u][at % 4u] = wv[j];
                count_sram_write(4u);
            }
            workgroupBarrier();
            for (var kw = 0u; kw < BKW; kw++) {
                let a = xt[((xk + kw) * BN) / 4u + lid.y];
                let b = wt[(kw * BM) / 4u + lid.x];
#ifdef SKIP_ZEROS
                let picks = decode_picks(b);
                acc[0] += pick_row(a.x, picks);
                acc[1] += pick_row(a.y, picks);
                acc[2] += pick_row(a.z, picks);
                acc[3] += pick_row(a.w, picks);
#else
                acc[0] += dot_row(a.x, b);
                acc[1] += dot_row(a.y, b);
                acc[2] += dot_row(a.z, b);
                acc[3] += dot_row(a.w, b);
#endif
                count_sram_read(32u);
#ifdef X_GROUPED
                // Groups shorter than a slice end inside it (kw0 is a multiple of BKW, which XGW
                // divides): their sums times the four rows' scales.
                if XGW < BKW && (kw + 1u) % XGW == 0u {
                    facc = folded(acc, facc, vec4<f32>(1.0), group_scale4(kw0 + kw, lid.y));
                    acc = array<vec4<i32>, 4>();
                }
#endif
            }
#ifdef X_GROUPED
            // Groups of whole slices end with one.
            if XGW >= BKW && (kw0 + BKW) % XGW == 0u {
                facc = folded(acc, facc, vec4<f32>(1.0), group_scale4(kw0 + BKW - 1u, lid.y));
                acc = array<vec4<i32>, 4>();
            }
#endif
            workgroupBarrier();
            if GROUPED {
                facc = folded(acc, facc, group_scales(mm, (kw0 * 4u) / p.group), vec4<f32>(1.0));
                acc = array<vec4<i32>, 4>();
            }
        }
        // Stage the tile's column values (invocations 0..63) and row scales (64..127).
        if li < BM {
            let col = m0 + li;
            if !GROUPED {
                var s = 1.0;
                if col < p.m {
                    s = w_scale(col);
                }
                col_scale[li] = s;
                count_sram_write(4u);
            }
#ifdef BIAS
            var b = 0.0;
            if col < p.m {
                b = f32(bias[p.m_offset + col]);
                count_dram_read(ELEM_BYTES);
            }
            col_bias[li] = b;
            count_sram_write(4u);
#endif
        } else if li < BM + BN && first && !X_GROUPED_ON {
            let row = n0 + li - BM;
            var s = 0.0;
            if row < p.n {
                s = xs[row];
                count_dram_read(4u);
            }
            row_scale[li - BM] = s;
            count_sram_write(4u);
        }
        workgroupBarrier();
        // The invocation's four columns' scales and biases, read once for its 4 x 4 block.
        var wsc = vec4<f32>(1.0);
        var bsc = vec4<f32>();
        for (var j = 0u; j < 4u; j++) {
            if mm + j < p.m {
                if !GROUPED {
                    wsc[j] = col_scale[lid.x * 4u + j];
                    count_sram_read(4u);
                }
#ifdef BIAS
                bsc[j] = col_bias[lid.x * 4u + j];
                count_sram_read(4u);
#endif
            }
        }
        // Y_I8: the block's values, zero outside Y.
        var yv: array<vec4<f32>, 4>;
        for (var i = 0u; i < 4u; i++) {
            let n = n0 + lid.y * 4u + i;
            if n < p.n {
                var xscale = 1.0;
                if !X_GROUPED_ON {
                    xscale = row_scale[lid.y * 4u + i];
                    count_sram_read(4u);
                }
                for (var j = 0u; j < 4u; j++) {
                    if mm + j < p.m {
                        let at = n * p.ldy + p.m_offset + mm + j;
                        var v: f32;
                        if GROUPED {
                            v = facc[i][j] * xscale;
                            count_f32_mul(1u);
                        } else if X_GROUPED_ON {
                            v = facc[i][j] * wsc[j];
                            count_f32_mul(1u);
                        } else {
                            v = f32(acc[i][j]) * wsc[j] * xscale;
                            count_f32_mul(2u);
                        }
#ifdef BIAS
                        v += bsc[j];
                        count_f32_add(1u);
#endif
#ifdef Y_I8
                        yv[i][j] = epilogue_past_bias(v, n, p.m_offset + mm + j, at);
#else
                        y[at] = elem(epilogue_past_bias(v, n, p.m_offset + mm + j, at));
                        count_dram_write(ELEM_BYTES);
#endif
                    }
                }
            }
        }
#ifdef Y_I8
        store_i8(yv, n0, m0, lid);
#endif
    }
    count_flush();
}
