// Fused multi-head attention, flash-attention style: softmax(Q K^T / sqrt(d)) V in one kernel,
// the N x N scores never written to memory.
//
// Layout (DiT's qkv linear): qkv is (B, T, 3, H, D) row-major per token, out is (B, T, H, D).
// A workgroup of WG invocations owns WG consecutive queries of one head of one image (grid:
// query blocks x heads x images); each invocation keeps its query and output row in registers.
// Keys and values are staged in tiles of BK tokens in workgroup memory, shared by all queries of
// the block; per tile the scores are formed, then one online-softmax rescale (running max m, sum l).
//
// Sparse variants visit only the key tiles that can contribute:
//   BLOCK_LIST: the tiles come from a list per query block (`blocks`: offsets then tile indices),
//   NEIGHBOURHOOD: in addition, each key is masked to the query's k x k window on the 2D token
//   grid, shifted inward at the borders so every query sees k^2 keys (NATTEN's definition).
// I8 (SageAttention-style, any sparsity): Q K^T and P V as int8 dot products (dot4I8Packed), i32
// sums. Each query is quantized per row (absmax) once. Per staged tile, keys are centred on the
// tile's mean key before they are quantized per key — the smoothing that keeps a channel-wide
// bias in K from eating the int8 range — and the query's dot with that mean is added back in f32,
// so the centring changes no score. Values are quantized per channel over the tile's 16 keys. The
// softmax weights exp(s - m) in [0, 1] become int8 as round(127 w); the running sum l adds the same
// codes (one dot4I8Packed with ones per 4 keys), so o / l is a convex combination of the values
// whatever the rounding.
// QKV_I8: Q, K and V arrive as int8 with a scale per (token, part, head) — the qkv GEMM's int8
// output (gemm_a8.wgsl's Y_I8) — and are dequantized as they are loaded (qkv: the words,
// qkv_scales: the scales), the rest of the kernel unchanged: half the bytes of f16 in memory.
// EMIT_I8: the output is written as int8 with a scale per (token, head) — the query's output row
// of its head quantized by its own absmax in registers, as quantize_act.wgsl would quantize it
// (out_q: rows of heads * D / 4 words, out_s: heads scales per row) — the int8 input of the
// projection GEMM with grouped activation scales (gemm_a8.wgsl's X_GROUPED), so the output makes
// no float round trip through memory and needs no quantizer of its own.
// The CPU twin is src/cpu/attention.rs (`attention`, f64, for the float kernel; `attention_i8`
// step for step for I8). COUNT_WORK counts the work done (shared/work_count.wgsl) for the test of
// `Attention::work`.
#import elem
#import work_count
#ifdef I8
#import act_quant
#else
#ifdef EMIT_I8
#import act_quant
#endif
#endif

// Keep in sync with `AttentionParams` in src/kernels/attention.rs.
struct AttentionParams {
    tokens: u32,
    heads: u32,
    head_dim: u32,
    scale: f32,
    grid_h: u32,
    grid_w: u32,
    window: u32,
    _pad: u32,
}

override WG: u32 = 64u;
// Head dimension: loops run to D / 4; registers and tiles are sized for at most 128.
override D: u32 = 64u;
const D4_MAX: u32 = 32u;
const BK: u32 = 16u;

@group(0) @binding(0) var<uniform> p: AttentionParams;
#ifdef QKV_I8
@group(0) @binding(1) var<storage, read> qkv: array<u32>;
@group(0) @binding(5) var<storage, read> qkv_scales: array<f32>;
#else
@group(0) @binding(1) var<storage, read> qkv: array<elem>;
#endif
#ifdef BLOCK_LIST
// blocks[qb] .. blocks[qb + 1] index into blocks[n_query_blocks + 1 ..]: key tiles of query block qb.
@group(0) @binding(2) var<storage, read> blocks: array<u32>;
#endif
#ifdef EMIT_I8
@group(0) @binding(3) var<storage, read_write> out_q: array<u32>;
@group(0) @binding(4) var<storage, read_write> out_s: array<f32>;
#else
@group(0) @binding(3) var<storage, read_write> out: array<elem>;
#endif

var<workgroup> k_tile: array<vec4<f32>, 512>; // BK * D4_MAX
var<workgroup> v_tile: array<vec4<f32>, 512>;
#ifdef I8
var<workgroup> k_mean: array<vec4<f32>, 32>; // D4_MAX
var<workgroup> k_i8: array<u32, 512>; // BK * D4_MAX: key j's dims 4c..4c+3 in word j * D4_MAX + c
var<workgroup> k_scale: array<f32, 16>; // BK
var<workgroup> v_i8: array<vec4<u32>, 128>; // 4 D4_MAX: channel i, keys 4g..4g+3 in component g
var<workgroup> v_scale: array<f32, 128>;

// The softmax weights' int8 scale: w in [0, 1] is stored as round(127 w).
const P_CODES: f32 = 127.0;

fn unpack_i8(word: u32) -> vec4<f32> {
    count_bit_ops(12u);
    return vec4<f32>(unpack4xI8(word));
}

// The staged tile's int8 copy (keys < `keys` are tokens, the rest zero): the mean key and every
// value channel's scale and codes, then, after a barrier, each key's scale and centred codes.
// Every invocation calls it (it holds a barrier).
fn quantize_tile(li: u32, keys: u32) {
    let d4 = D / 4u;
    for (var c = li; c < d4; c += WG) {
        var sum = vec4<f32>();
        for (var j = 0u; j < keys; j++) {
            sum += k_tile[j * D4_MAX + c];
            count_sram_read(16u);
            count_f32_add(4u);
        }
        k_mean[c] = sum / f32(keys);
        count_f32_mul(4u);
        count_sram_write(16u);
    }
    for (var i = li; i < D; i += WG) {
        var v: array<f32, BK>;
        var absmax = 0.0;
        for (var j = 0u; j < BK; j++) {
            v[j] = v_tile[j * D4_MAX + i / 4u][i % 4u];
            absmax = max(absmax, abs(v[j]));
            count_sram_read(4u);
        }
        let scale = act_scale(absmax);
        var words: vec4<u32>;
        for (var g = 0u; g < BK / 4u; g++) {
            words[g] = quantize4(vec4<f32>(v[4u * g], v[4u * g + 1u], v[4u * g + 2u], v[4u * g + 3u]), scale);
        }
        v_i8[i] = words;
        v_scale[i] = scale;
        count_sram_write(20u);
    }
    workgroupBarrier();
    if li < BK {
        var absmax = 0.0;
        for (var c = 0u; c < d4; c++) {
            absmax = max(absmax, max_abs4(k_tile[li * D4_MAX + c] - k_mean[c]));
            count_sram_read(32u);
            count_f32_add(4u);
        }
        let scale = act_scale(absmax);
        for (var c = 0u; c < d4; c++) {
            k_i8[li * D4_MAX + c] = quantize4(k_tile[li * D4_MAX + c] - k_mean[c], scale);
            count_sram_read(32u);
            count_f32_add(4u);
            count_sram_write(4u);
        }
        k_scale[li] = scale;
        count_sram_write(4u);
    }
    workgroupBarrier();
}
#endif

// |v|'s largest component.
fn max_abs4(v: vec4<f32>) -> f32 {
    let a = abs(v);
    return max(max(a.x, a.y), max(a.z, a.w));
}

// Element offset of (image b, token t, part s in {q, k, v}, head h, dim 0).
fn qkv_at(b: u32, t: u32, s: u32, h: u32) -> u32 {
    return (((b * p.tokens + t) * 3u + s) * p.heads + h) * D;
}

#ifdef QKV_I8
// The scale of the (token, part, head) row that element `at` starts.
fn qkv_scale(at: u32) -> f32 {
    count_dram_read(4u);
    return qkv_scales[at / D];
}

// Elements at .. at + 3 (one word) of a row whose scale is `scale`.
fn load4(at: u32, scale: f32) -> vec4<f32> {
    count_dram_read(4u);
    count_bit_ops(12u);
    count_f32_mul(4u);
    return vec4<f32>(unpack4xI8(qkv[at / 4u])) * scale;
}
#else
fn qkv_scale(at: u32) -> f32 {
    return 1.0;
}

// Elements at .. at + 3 (`scale` is for int8 input).
fn load4(at: u32, scale: f32) -> vec4<f32> {
    count_dram_read(4u * ELEM_BYTES);
    return vec4<f32>(f32(qkv[at]), f32(qkv[at + 1u]), f32(qkv[at + 2u]), f32(qkv[at + 3u]));
}
#endif

// NATTEN window start along one axis: centred, shifted inward at the borders.
fn window_start(i: u32, n: u32) -> u32 {
    let half = p.window / 2u;
    return min(max(i, half) - half, n - p.window);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let qb = wid.x;
    let h = wid.y;
    let b = wid.z;
    let query = qb * WG + li;
    let valid = query < p.tokens;
    let qt = min(query, p.tokens - 1u);
    let d4 = D / 4u;

    var q: array<vec4<f32>, D4_MAX>;
    var o: array<vec4<f32>, D4_MAX>;
    let q_at = qkv_at(b, qt, 0u, h);
    let q_scale_in = qkv_scale(q_at);
    for (var i = 0u; i < d4; i++) {
        q[i] = load4(q_at + 4u * i, q_scale_in) * p.scale;
        count_f32_mul(4u);
    }
#ifdef I8
    var q_absmax = 0.0;
    for (var i = 0u; i < d4; i++) {
        q_absmax = max(q_absmax, max_abs4(q[i]));
    }
    let q_scale = act_scale(q_absmax);
    var q8: array<u32, D4_MAX>;
    for (var i = 0u; i < d4; i++) {
        q8[i] = quantize4(q[i], q_scale);
    }
#endif
    var m = -3.0e38;
    var l = 0.0;
#ifdef NEIGHBOURHOOD
    let qr = qt / p.grid_w;
    let qc = qt % p.grid_w;
    let r0 = window_start(qr, p.grid_h);
    let c0 = window_start(qc, p.grid_w);
#endif

#ifdef BLOCK_LIST
    let n_qb = (p.tokens + WG - 1u) / WG;
    let first = blocks[qb];
    let count = blocks[qb + 1u] - first;
    count_dram_read(8u);
#else
    let count = (p.tokens + BK - 1u) / BK;
#endif
    for (var it = 0u; it < count; it++) {
#ifdef BLOCK_LIST
        let tile = blocks[n_qb + 1u + first + it];
        count_dram_read(4u);
#else
        let tile = it;
#endif
        let k0 = tile * BK;
        // Stage BK keys and values (zero past the last token).
#ifdef QKV_I8
        // A key or a value row per invocation: its scale loaded once.
        for (var e = li; e < 2u * BK; e += WG) {
            let j = e % BK;
            let part = 1u + e / BK;
            let ok = k0 + j < p.tokens;
            let at = qkv_at(b, min(k0 + j, p.tokens - 1u), part, h);
            var scale = 0.0;
            if ok {
                scale = qkv_scale(at);
            }
            for (var c = 0u; c < d4; c++) {
                var x = vec4<f32>();
                if ok {
                    x = load4(at + 4u * c, scale);
                }
                if part == 1u {
                    k_tile[j * D4_MAX + c] = x;
                } else {
                    v_tile[j * D4_MAX + c] = x;
                }
                count_sram_write(16u);
            }
        }
#else
        for (var e = li; e < BK * d4; e += WG) {
            let j = e / d4;
            let c = e % d4;
            var kv = vec4<f32>();
            var vv = vec4<f32>();
            if k0 + j < p.tokens {
                kv = load4(qkv_at(b, k0 + j, 1u, h) + 4u * c, 1.0);
                vv = load4(qkv_at(b, k0 + j, 2u, h) + 4u * c, 1.0);
            }
            k_tile[j * D4_MAX + c] = kv;
            v_tile[j * D4_MAX + c] = vv;
            count_sram_write(32u);
        }
#endif
        workgroupBarrier();
#ifdef I8
        quantize_tile(li, min(BK, p.tokens - k0));
        // The query's dot with the tile's mean key, which the centred codes leave out.
        var q_mean = 0.0;
        for (var i = 0u; i < d4; i++) {
            q_mean += dot(unpack_i8(q8[i]), k_mean[i]);
            count_sram_read(16u);
            count_f32_mul(4u);
            count_f32_add(4u);
        }
        q_mean *= q_scale;
        count_f32_mul(1u);
#endif
        var s: array<f32, BK>;
        var tile_max = -3.0e38;
        for (var j = 0u; j < BK; j++) {
            let key = k0 + j;
            var ok = key < p.tokens;
#ifdef NEIGHBOURHOOD
            let kr = key / p.grid_w;
            let kc = key % p.grid_w;
            ok = ok && kr >= r0 && kr < r0 + p.window && kc >= c0 && kc < c0 + p.window;
#endif
#ifdef I8
            var acc = 0i;
            for (var i = 0u; i < d4; i++) {
                acc += dot4I8Packed(q8[i], k_i8[j * D4_MAX + i]);
                count_sram_read(4u);
                count_i8_mul(4u);
                count_i32_add(4u);
            }
            let dot_qk = f32(acc) * q_scale * k_scale[j] + q_mean;
            count_sram_read(4u);
            count_f32_mul(2u);
            count_f32_add(1u);
#else
            var dot_qk = 0.0;
            for (var i = 0u; i < d4; i++) {
                dot_qk += dot(q[i], k_tile[j * D4_MAX + i]);
                count_sram_read(16u);
                count_f32_mul(4u);
                count_f32_add(4u);
            }
#endif
            s[j] = select(-3.0e38, dot_qk, ok);
            tile_max = max(tile_max, s[j]);
        }
        if tile_max > -1.0e38 {
            let m_new = max(m, tile_max);
            let correction = exp(m - m_new);
            l *= correction;
            count_f32_add(1u);
            count_exp();
            count_f32_mul(1u);
            for (var i = 0u; i < d4; i++) {
                o[i] *= correction;
                count_f32_mul(4u);
            }
#ifdef I8
            // The weights as int8 codes, 4 keys per word (exp is evaluated for masked keys too).
            var w8: vec4<u32>;
            for (var g = 0u; g < BK / 4u; g++) {
                var w: vec4<f32>;
                for (var k = 0u; k < 4u; k++) {
                    let sj = s[4u * g + k];
                    w[k] = select(0.0, exp(sj - m_new), sj > -1.0e38);
                    count_f32_add(1u);
                    count_exp();
                }
                w8[g] = pack4xI8(vec4<i32>(round(w * P_CODES)));
                count_f32_mul(4u);
                count_f32_add(4u);
                count_bit_ops(12u);
            }
            let ones = 0x01010101u;
            l += f32(dot4I8Packed(w8.x, ones) + dot4I8Packed(w8.y, ones) + dot4I8Packed(w8.z, ones)
                + dot4I8Packed(w8.w, ones));
            count_i8_mul(BK);
            count_i32_add(BK);
            count_f32_add(1u);
            for (var i = 0u; i < d4; i++) {
                var acc = vec4<i32>();
                for (var k = 0u; k < 4u; k++) {
                    let v = v_i8[4u * i + k];
                    acc[k] = dot4I8Packed(w8.x, v.x) + dot4I8Packed(w8.y, v.y) + dot4I8Packed(w8.z, v.z)
                        + dot4I8Packed(w8.w, v.w);
                    count_sram_read(16u);
                    count_i8_mul(BK);
                    count_i32_add(BK);
                }
                let scale = vec4<f32>(v_scale[4u * i], v_scale[4u * i + 1u], v_scale[4u * i + 2u], v_scale[4u * i + 3u]);
                o[i] = fma(vec4<f32>(acc), scale, o[i]);
                count_sram_read(16u);
                count_f32_mul(4u);
                count_f32_add(4u);
            }
#else
            for (var j = 0u; j < BK; j++) {
                // exp is evaluated for masked keys too (select keeps both operands).
                let w = select(0.0, exp(s[j] - m_new), s[j] > -1.0e38);
                l += w;
                count_f32_add(2u);
                count_exp();
                for (var i = 0u; i < d4; i++) {
                    o[i] = fma(vec4<f32>(w), v_tile[j * D4_MAX + i], o[i]);
                    count_sram_read(16u);
                    count_f32_mul(4u);
                    count_f32_add(4u);
                }
            }
#endif
            m = m_new;
        }
        workgroupBarrier();
    }
#ifdef EMIT_I8
    if valid {
        let inv = 1.0 / l;
        count_div();
        var absmax = 0.0;
        for (var i = 0u; i < d4; i++) {
            o[i] *= inv;
            absmax = max(absmax, max_abs4(o[i]));
            count_f32_mul(4u);
        }
        let scale = act_scale(absmax);
        let row = (b * p.tokens + query) * p.heads + h;
        for (var i = 0u; i < d4; i++) {
            out_q[row * d4 + i] = quantize4(o[i], scale);
            count_dram_write(4u);
        }
        out_s[row] = scale;
        count_dram_write(4u);
    }
#else
    if valid {
        let inv = 1.0 / l;
        count_div();
        let at = ((b * p.tokens + query) * p.heads + h) * D;
        for (var i = 0u; i < d4; i++) {
            let v = o[i] * inv;
            out[at + 4u * i] = elem(v.x);
            out[at + 4u * i + 1u] = elem(v.y);
            out[at + 4u * i + 2u] = elem(v.z);
            out[at + 4u * i + 3u] = elem(v.w);
            count_f32_mul(4u);
            count_dram_write(4u * ELEM_BYTES);
        }
    }
#endif
    count_flush();
}
