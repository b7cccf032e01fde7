// DiT's whole MLP branch in one dispatch, W1.58A8 (ternary fc1 and fc2, int8 activations):
//   y = x + gate[image] * (fc2(q(GELU(fc1(q(modulate(LayerNorm(x))))))) + b2)
// where q is per-token absmax int8 quantization (shared/act_quant.wgsl). The unfused chain (norm
// with EMIT_I8, gemm_ternary_a8 with the GELU epilogue, quantize_act, gemm_ternary_a8 with the
// gated residual) writes the hidden activations (4 x the width, floats) to device memory and reads
// them twice; here a workgroup keeps a tile of TM tokens on chip from the norm to the residual, so
// device memory sees each token's row read (twice: the norm, the residual) and written once, plus
// the weights once per tile of TM tokens (re-read by the next tile: from the L2 on a GPU, where
// both matrices of a small DiT fit).
//
// A workgroup of 256 invocations takes TM tokens (8, 16 or 32; LANES = 256 / TM invocations per
// token):
//   1. LayerNorm (two-pass statistics over the row kept in registers), adaLN modulation, int8 with
//      the row's absmax: into workgroup memory (`tile`, rows of x_row_words words), scale in `sc`.
//   2. fc1: each invocation computes items of RB = 8 tokens x 4 hidden features (32 i32 sums of
//      dot4I8Packed over K, its four weight rows decoded from 2-bit codes per 16 K, once for the
//      item's 8 tokens). The weight words are staged through workgroup memory (`wst`: every
//      row's words of as many 16-K steps as fit), so each is read from device memory once per
//      tile, not once per item. Then the scales, bias and GELU, rounded to the element type as
//      the unfused chain stores them; kept in registers (at most MAX_ITEMS items) while the
//      tokens' absmax is reduced (workgroup atomics on the bits of |v|: non-negative floats
//      order as their bits), then quantized into the hidden tile (rows of h_row_words words
//      after the input tile).
//   3. fc2 likewise over the hidden tile, then bias, gate and residual, written out.
// The per-image rows every token reads — the norm's shift and scale, the gate — are staged once
// per tile into the weight stage (`wst`, free before fc1 and after fc2) for the tile's images
// (TM tokens span one image or two where an image has at least TM tokens), so device memory sees
// them once per tile instead of once per token; where the tile's images' rows do not fit the
// stage (images of very few tokens) every token reads them from memory as before. Likewise each
// linear's weight scales and biases, staged once per tile after its sums instead of read by each
// of the TM / RB items that share a column.
// Integer sums are exact and the absmax is order-free, so the result equals the unfused chain's
// but for the norm's float sums (another order) and what rounding a token's int8 differently does.
// The CPU twin is src/cpu/mlp.rs (that chain of twins). COUNT_WORK counts the work done
// (shared/work_count.wgsl) for the test of `MlpBlock::work`.
#import elem
#import work_count
#import epilogue
#import act_quant
#import ternary_codes

// Keep in sync with `MlpParams` in src/kernels/mlp.rs.
struct MlpParams {
    rows: u32,
    d: u32,
    hidden: u32,
    // Tokens sharing one modulation and one gate row (an image's).
    rows_per_image: u32,
    eps: f32,
    // adaLN projection: row stride, offsets of the norm's shift and scale chunks.
    mod_stride: u32,
    shift_offset: u32,
    scale_offset: u32,
    // u32 words per int8 row of the input (d) and of the hidden (hidden): ceil(n / 16) * 4.
    x_row_words: u32,
    h_row_words: u32,
    // u32 words per packed weight row of fc1 (K = d) and fc2 (K = hidden).
    w1_row_words: u32,
    w2_row_words: u32,
}

const WG: u32 = 256u;
// Tokens per workgroup (8, 16 or 32); keep the choice in sync with `MlpBlock::tokens_per_workgroup`.
override TM: u32 = 16u;
// vec4 groups of a row each invocation keeps in registers in the norm.
const CACHED: u32 = 8u;
// Tokens of an item, and the items an invocation holds at once.
const RB: u32 = 8u;
const MAX_ITEMS: u32 = 2u;
// Keep in sync with `MlpBlock::TILE_WORDS` and `MlpBlock::STAGE_WORDS`.
const TILE_WORDS: u32 = 5120u;
const STAGE_WORDS: u32 = 2048u;

@group(0) @binding(0) var<uniform> p: MlpParams;
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read> modulation: array<elem>;
@group(0) @binding(3) var<storage, read> w1: array<u32>;
@group(0) @binding(4) var<storage, read> ws1: array<f32>;
@group(0) @binding(5) var<storage, read> b1: array<elem>;
@group(0) @binding(6) var<storage, read> w2: array<u32>;
@group(0) @binding(7) var<storage, read> ws2: array<f32>;
@group(0) @binding(8) var<storage, read> b2: array<elem>;
@group(0) @binding(9) var<storage, read> gate: array<elem>;
@group(0) @binding(10) var<storage, read_write> y: array<elem>;

// The int8 input rows (TM x x_row_words), then the hidden rows (TM x h_row_words).
var<workgroup> tile: array<u32, TILE_WORDS>;
// Weight code words of a stage: row r's word of 16-K step s at r * steps_in_stage + s.
var<workgroup> wst: array<u32, STAGE_WORDS>;
// Per token: the input's scale (0..31) and the hidden's (32..63).
var<workgroup> sc: array<f32, 64>;
// Per token: the bits of the hidden's absmax.
var<workgroup> hmax: array<atomic<u32>, 32>;

// The sum (or, with `is_max`, the maximum) of `v` over the invocations of a token.
fn token_reduce(v: f32, li: u32, is_max: bool) -> f32 {
    return segment_reduce(v, li, WG / TM, is_max);
}

// Four consecutive features of `row` (d is a multiple of 4).
fn load_x4(row: u32, j: u32) -> vec4<f32> {
    let at = row * p.d + j;
    count_dram_read(4u * ELEM_BYTES);
    return vec4<f32>(f32(x[at]), f32(x[at + 1u]), f32(x[at + 2u]), f32(x[at + 3u]));
}

// The images of the tile of tokens from `row0`: the first, and how many (0 past the last token).
struct TileImages {
    first: u32,
    count: u32,
}

fn tile_images(row0: u32) -> TileImages {
    if row0 >= p.rows {
        return TileImages(0u, 0u);
    }
    let first = row0 / p.rows_per_image;
    return TileImages(first, (min(row0 + TM, p.rows) - 1u) / p.rows_per_image - first + 1u);
}

// Stages `width` values of each of the tile's images, value j of image i from the norm's scale
// (j < d) and shift chunks of `modulation` (`from_gate` false) or from `gate`, into
// wst[at + i * width + j] as f32 bits. Every invocation calls it (a barrier follows).
fn stage_rows(images: TileImages, width: u32, at: u32, li: u32, from_gate: bool) {
    for (var e = li; e < images.count * width; e += WG) {
        let i = e / width;
        let j = e % width;
        var v: f32;
        if from_gate {
            v = f32(gate[(images.first + i) * p.d + j]);
        } else {
            // Scale, then shift: the norm's two chunks of the image's adaLN row.
            let base = (images.first + i) * p.mod_stride;
            v = f32(modulation[base + select(p.shift_offset + j - p.d, p.scale_offset + j, j < p.d)]);
        }
        wst[at + e] = bitcast<u32>(v);
        count_dram_read(ELEM_BYTES);
        count_sram_write(4u);
    }
    workgroupBarrier();
}

// Stages the `n` weight scales and biases of fc1 (`second` false) or fc2 into wst[0 .. 2n] as
// f32 bits (scales, then biases), after the linear's sums have consumed the weight stage. Every
// invocation calls it (barriers).
fn stage_columns(n: u32, li: u32, second: bool) {
    workgroupBarrier(); // the last weight stage is consumed
    for (var c = li; c < n; c += WG) {
        if second {
            wst[c] = bitcast<u32>(ws2[c]);
            wst[n + c] = bitcast<u32>(f32(b2[c]));
        } else {
            wst[c] = bitcast<u32>(ws1[c]);
            wst[n + c] = bitcast<u32>(f32(b1[c]));
        }
        count_dram_read(4u + ELEM_BYTES);
        count_sram_write(8u);
    }
}

// 1. The norm of the workgroup's tokens into the input tile.
fn norm_tile(row0: u32, li: u32) {
    let images = tile_images(row0);
    let staged = images.count * 2u * p.d <= STAGE_WORDS;
    if staged {
        stage_rows(images, 2u * p.d, 0u, li, false);
    }
    let lanes = WG / TM;
    let r = li / lanes;
    let lane = li % lanes;
    let row = row0 + r;
    let live = row < p.rows;
    let groups = p.d / 4u;
    var cache: array<vec4<f32>, CACHED>;
    var s = 0.0;
    for (var i = 0u; i < CACHED; i++) {
        let q = lane + i * lanes;
        if live && q < groups {
            cache[i] = load_x4(row, 4u * q);
            s += (cache[i].x + cache[i].y) + (cache[i].z + cache[i].w);
            count_f32_add(4u);
        }
    }
    let mean = token_reduce(s, li, false) / f32(p.d);
    count_div();
    var sq = 0.0;
    for (var i = 0u; i < CACHED; i++) {
        let q = lane + i * lanes;
        if live && q < groups {
            let c = cache[i] - mean;
            sq += dot(c, c);
            count_f32_add(8u);
            count_f32_mul(4u);
        }
    }
    let inv = inverseSqrt(token_reduce(sq, li, false) / f32(p.d) + p.eps);
    count_div();
    count_f32_add(1u);
    count_div();
    var m = 0.0;
    let base = (row / p.rows_per_image) * p.mod_stride;
    let at = (row / p.rows_per_image - images.first) * 2u * p.d;
    for (var i = 0u; i < CACHED; i++) {
        let q = lane + i * lanes;
        if live && q < groups {
            for (var t = 0u; t < 4u; t++) {
                let j = 4u * q + t;
                let n = (cache[i][t] - mean) * inv;
                var scale: f32;
                var shift: f32;
                if staged {
                    scale = bitcast<f32>(wst[at + j]);
                    shift = bitcast<f32>(wst[at + p.d + j]);
                } else {
                    scale = f32(modulation[base + p.scale_offset + j]);
                    shift = f32(modulation[base + p.shift_offset + j]);
                }
                cache[i][t] = fma(n, 1.0 + scale, shift);
            }
            if staged {
                count_sram_read(32u);
            } else {
                count_dram_read(8u * ELEM_BYTES);
            }
            count_f32_add(12u);
            count_f32_mul(8u);
            let a = abs(cache[i]);
            m = max(m, max(max(a.x, a.y), max(a.z, a.w)));
        }
    }
    let scale = act_scale(token_reduce(m, li, true));
    for (var i = 0u; i < CACHED; i++) {
        let q = lane + i * lanes;
        if q < groups {
            var word = 0u;
            if live {
                word = quantize4(cache[i], scale);
            }
            tile[r * p.x_row_words + q] = word;
            count_sram_write(4u);
        }
    }
    // The words past the row's groups (rows are whole vec4<u32>) are zero.
    for (var w = groups + lane; w < p.x_row_words; w += lanes) {
        tile[r * p.x_row_words + w] = 0u;
        count_sram_write(4u);
    }
    if lane == 0u {
        sc[r] = scale;
        count_sram_write(4u);
    }
}

// Words 4q .. 4q+3 of the tile row at `at` (a row start plus 4q).
fn tile4(at: u32) -> vec4<u32> {
    count_sram_read(16u);
    return vec4<u32>(tile[at], tile[at + 1u], tile[at + 2u], tile[at + 3u]);
}

fn dot16(a: vec4<u32>, b: vec4<u32>) -> i32 {
    count_i8_mul(16u);
    count_i32_add(16u);
    return dot4I8Packed(a.x, b.x) + dot4I8Packed(a.y, b.y) + dot4I8Packed(a.z, b.z) + dot4I8Packed(a.w, b.w);
}

// The i32 sums of every item this invocation holds (item it = li + k * WG below `items`: output
// features 4cg .. 4cg+3 with cg = it % groups, tokens RB rb .. RB rb + RB - 1 with
// rb = it / groups; sums of item k at RB k ..) over the tile rows at `x_at` (`words` words each) against fc1's
// weights (`second` false) or fc2's.
fn item_sums(x_at: u32, words: u32, groups: u32, items: u32, li: u32, second: bool) -> array<vec4<i32>, 16> {
    var acc: array<vec4<i32>, 16>; // MAX_ITEMS * RB tokens
    let rows = 4u * groups;
    let steps = words / 4u;
    let per_stage = min(steps, STAGE_WORDS / rows);
    for (var q0 = 0u; q0 < steps; q0 += per_stage) {
        let n = min(per_stage, steps - q0);
        workgroupBarrier(); // the previous stage is consumed
        for (var i = li; i < rows * n; i += WG) {
            let r = i / n;
            let q = q0 + i % n;
            if second {
                wst[i] = w2[r * p.w2_row_words + q];
            } else {
                wst[i] = w1[r * p.w1_row_words + q];
            }
            count_dram_read(4u);
            count_sram_write(4u);
        }
        workgroupBarrier();
        for (var k = 0u; k < MAX_ITEMS; k++) {
            let it = li + k * WG;
            if it < items {
                let cg = it % groups;
                let rb = it / groups;
                for (var s = 0u; s < n; s++) {
                    var wv: array<vec4<u32>, 4>;
                    for (var j = 0u; j < 4u; j++) {
                        wv[j] = word_to_i8(wst[(4u * cg + j) * n + s]);
                    }
                    count_sram_read(16u);
                    for (var i = 0u; i < RB; i++) {
                        let a = tile4(x_at + (RB * rb + i) * words + 4u * (q0 + s));
                        acc[RB * k + i] += vec4<i32>(dot16(a, wv[0]), dot16(a, wv[1]), dot16(a, wv[2]), dot16(a, wv[3]));
                    }
                }
            }
        }
    }
    return acc;
}

// The weight scales and biases of output features 4cg .. 4cg+3 of fc1 (`second` false) or fc2.
struct Columns {
    scale: vec4<f32>,
    bias: vec4<f32>,
}

fn columns(cg: u32, second: bool, staged: bool) -> Columns {
    var c: Columns;
    if staged {
        // Scales at 0, biases at n (fc1's hidden features or fc2's d).
        let n = select(p.hidden, p.d, second);
        for (var j = 0u; j < 4u; j++) {
            c.scale[j] = bitcast<f32>(wst[4u * cg + j]);
            c.bias[j] = bitcast<f32>(wst[n + 4u * cg + j]);
        }
        count_sram_read(32u);
        return c;
    }
    for (var j = 0u; j < 4u; j++) {
        if second {
            c.scale[j] = ws2[4u * cg + j];
            c.bias[j] = f32(b2[4u * cg + j]);
        } else {
            c.scale[j] = ws1[4u * cg + j];
            c.bias[j] = f32(b1[4u * cg + j]);
        }
    }
    count_dram_read(4u * (4u + ELEM_BYTES));
    return c;
}

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row0 = (wid.y * nwg.x + wid.x) * TM;
    if li < 32u {
        atomicStore(&hmax[li], 0u);
    }
    norm_tile(row0, li);
    workgroupBarrier();

    // 2. fc1: items (cg, rb) = (4 hidden features, RB tokens), item it = cg + rb * groups.
    let xw = p.x_row_words;
    let hw = p.h_row_words;
    let hgroups = p.hidden / 4u;
    let items1 = hgroups * (TM / RB);
    let acc1 = item_sums(0u, xw, hgroups, items1, li, false);
    let cols1_staged = 2u * p.hidden <= STAGE_WORDS;
    if cols1_staged {
        stage_columns(p.hidden, li, false);
    }
    workgroupBarrier();
    var hv: array<vec4<f32>, 16>; // MAX_ITEMS * RB tokens
    for (var k = 0u; k < MAX_ITEMS; k++) {
        let it = li + k * WG;
        if it < items1 {
            let cg = it % hgroups;
            let rb = it / hgroups;
            let cols = columns(cg, false, cols1_staged);
            let wsc = cols.scale;
            let bias = cols.bias;
            for (var i = 0u; i < RB; i++) {
                let xs = sc[RB * rb + i];
                count_sram_read(4u);
                var v: vec4<f32>;
                for (var j = 0u; j < 4u; j++) {
                    // As gemm_a8's output and the GELU epilogue, stored as the element type.
                    v[j] = f32(elem(gelu_tanh(f32(acc1[RB * k + i][j]) * wsc[j] * xs + bias[j])));
                }
                count_f32_mul(8u);
                count_f32_add(4u);
                hv[RB * k + i] = v;
                let a = abs(v);
                atomicMax(&hmax[RB * rb + i], bitcast<u32>(max(max(a.x, a.y), max(a.z, a.w))));
                count_sram_write(4u);
            }
        }
    }
    workgroupBarrier();
    if li < TM {
        sc[32u + li] = act_scale(bitcast<f32>(atomicLoad(&hmax[li])));
        count_sram_read(4u);
        count_sram_write(4u);
    }
    workgroupBarrier();
    let h_at = TM * xw;
    for (var k = 0u; k < MAX_ITEMS; k++) {
        let it = li + k * WG;
        if it < items1 {
            let cg = it % hgroups;
            let rb = it / hgroups;
            for (var i = 0u; i < RB; i++) {
                let r = RB * rb + i;
                tile[h_at + r * hw + cg] = quantize4(hv[RB * k + i], sc[32u + r]);
                count_sram_read(4u);
                count_sram_write(4u);
            }
        }
    }
    // The words past the hidden's groups are zero.
    let pad = hw - hgroups;
    for (var it = li; it < TM * pad; it += WG) {
        tile[h_at + (it / pad) * hw + hgroups + it % pad] = 0u;
        count_sram_write(4u);
    }
    workgroupBarrier();

    // 3. fc2, then bias, gate and residual (the gate rows staged once fc2's weights are used).
    let dgroups = p.d / 4u;
    let items2 = dgroups * (TM / RB);
    let acc2 = item_sums(h_at, hw, dgroups, items2, li, true);
    // fc2's scales and biases at 0 .. 2d, the gate rows after them.
    let cols2_staged = 2u * p.d <= STAGE_WORDS;
    if cols2_staged {
        stage_columns(p.d, li, true);
    }
    let images = tile_images(row0);
    let g_at = select(0u, 2u * p.d, cols2_staged);
    let staged = g_at + images.count * p.d <= STAGE_WORDS;
    workgroupBarrier(); // the stage is consumed (or the columns written)
    if staged {
        stage_rows(images, p.d, g_at, li, true);
    }
    for (var k = 0u; k < MAX_ITEMS; k++) {
        let it = li + k * WG;
        if it >= items2 {
            break;
        }
        let cg = it % dgroups;
        let rb = it / dgroups;
        let cols = columns(cg, true, cols2_staged);
        let wsc = cols.scale;
        let bias = cols.bias;
        for (var i = 0u; i < RB; i++) {
            let r = RB * rb + i;
            let row = row0 + r;
            if row < p.rows {
                let hs = sc[32u + r];
                count_sram_read(4u);
                let g0 = (row / p.rows_per_image) * p.d + 4u * cg;
                let gs = g_at + (row / p.rows_per_image - images.first) * p.d + 4u * cg;
                let x0 = row * p.d + 4u * cg;
                for (var j = 0u; j < 4u; j++) {
                    // As gemm_a8's output and the gated residual epilogue.
                    var v = f32(acc2[RB * k + i][j]) * wsc[j] * hs;
                    v += bias[j];
                    if staged {
                        v *= bitcast<f32>(wst[gs + j]);
                    } else {
                        v *= f32(gate[g0 + j]);
                    }
                    v += f32(x[x0 + j]);
                    y[x0 + j] = elem(v);
                }
                if staged {
                    count_sram_read(16u);
                    count_dram_read(4u * ELEM_BYTES);
                } else {
                    count_dram_read(8u * ELEM_BYTES);
                }
                count_f32_mul(12u);
                count_f32_add(8u);
                count_dram_write(4u * ELEM_BYTES);
            }
        }
    }
    count_flush();
}
