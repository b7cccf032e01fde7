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
// The CPU twin is src/cpu/attention.rs. COUNT_WORK counts the work done (shared/work_count.wgsl)
// for the test of `Attention::work`.
#import elem
#import work_count

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
@group(0) @binding(1) var<storage, read> qkv: array<elem>;
#ifdef BLOCK_LIST
// blocks[qb] .. blocks[qb + 1] index into blocks[n_query_blocks + 1 ..]: key tiles of query block qb.
@group(0) @binding(2) var<storage, read> blocks: array<u32>;
#endif
@group(0) @binding(3) var<storage, read_write> out: array<elem>;

var<workgroup> k_tile: array<vec4<f32>, 512>; // BK * D4_MAX
var<workgroup> v_tile: array<vec4<f32>, 512>;

// Element offset of (image b, token t, part s in {q, k, v}, head h, dim 0).
fn qkv_at(b: u32, t: u32, s: u32, h: u32) -> u32 {
    return (((b * p.tokens + t) * 3u + s) * p.heads + h) * D;
}

fn load4(at: u32) -> vec4<f32> {
    count_dram_read(4u * ELEM_BYTES);
    return vec4<f32>(f32(qkv[at]), f32(qkv[at + 1u]), f32(qkv[at + 2u]), f32(qkv[at + 3u]));
}

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
    for (var i = 0u; i < d4; i++) {
        q[i] = load4(q_at + 4u * i) * p.scale;
        count_f32_mul(4u);
    }
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
        for (var e = li; e < BK * d4; e += WG) {
            let j = e / d4;
            let c = e % d4;
            var kv = vec4<f32>();
            var vv = vec4<f32>();
            if k0 + j < p.tokens {
                kv = load4(qkv_at(b, k0 + j, 1u, h) + 4u * c);
                vv = load4(qkv_at(b, k0 + j, 2u, h) + 4u * c);
            }
            k_tile[j * D4_MAX + c] = kv;
            v_tile[j * D4_MAX + c] = vv;
            count_sram_write(32u);
        }
        workgroupBarrier();
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
            var dot_qk = 0.0;
            for (var i = 0u; i < d4; i++) {
                dot_qk += dot(q[i], k_tile[j * D4_MAX + i]);
                count_sram_read(16u);
                count_f32_mul(4u);
                count_f32_add(4u);
            }
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
            m = m_new;
        }
        workgroupBarrier();
    }
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
    count_flush();
}
