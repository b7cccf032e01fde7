// Deliberately naive attention in three dispatches, a benchmark reference for attention.wgsl:
//   STAGE 0: scores S[b, h, q, k] = Q . K / sqrt(d) (one invocation per score, written to memory)
//   STAGE 1: softmax over each row of S, in place (one invocation per row)
//   STAGE 2: out[b, q, h, :] = S[b, h, q, :] V (one invocation per output element)
// Same qkv / out layouts as attention.wgsl; f32.

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

override STAGE: u32 = 0u;

@group(0) @binding(0) var<uniform> p: AttentionParams;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> scores: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn qkv_at(b: u32, t: u32, s: u32, h: u32) -> u32 {
    return (((b * p.tokens + t) * 3u + s) * p.heads + h) * p.head_dim;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = p.tokens;
    let bh = gid.z; // image * heads + head
    let b = bh / p.heads;
    let h = bh % p.heads;
    switch STAGE {
        case 0u: {
            let k = gid.x;
            let q = gid.y;
            if k >= n || q >= n {
                return;
            }
            var s = 0.0;
            for (var i = 0u; i < p.head_dim; i++) {
                s += qkv[qkv_at(b, q, 0u, h) + i] * qkv[qkv_at(b, k, 1u, h) + i];
            }
            scores[(bh * n + q) * n + k] = s * p.scale;
        }
        case 1u: {
            let q = gid.x + gid.y * 65535u * 64u;
            if q >= n {
                return;
            }
            let row = (bh * n + q) * n;
            var m = -3.0e38;
            for (var k = 0u; k < n; k++) {
                m = max(m, scores[row + k]);
            }
            var l = 0.0;
            for (var k = 0u; k < n; k++) {
                let e = exp(scores[row + k] - m);
                scores[row + k] = e;
                l += e;
            }
            for (var k = 0u; k < n; k++) {
                scores[row + k] /= l;
            }
        }
        default: {
            let i = gid.x;
            let q = gid.y;
            if i >= p.head_dim || q >= n {
                return;
            }
            let row = (bh * n + q) * n;
            var acc = 0.0;
            for (var k = 0u; k < n; k++) {
                acc += scores[row + k] * qkv[qkv_at(b, k, 2u, h) + i];
            }
            out[((b * n + q) * p.heads + h) * p.head_dim + i] = acc;
        }
    }
}
