// DiT's sinusoidal timestep embedding: t (B) to (B, D) with D/2 frequencies
// f_i = exp(-ln(max_period) * i / (D/2)) (a table computed once on the host in f64, so no backend's
// exp enters the result), emb = [cos(t f), sin(t f)] (cos first), zero-padded when D is odd. Arguments reach t * 1 = 1000 in model time, where WGSL's cos and sin may be
// coarse (an absolute error of 2^-11 is allowed), so the reduction to [-pi, pi] is done here with a
// three-part 2 pi (exact products for |t f| < 2^15) and the polynomials of noise.wgsl's cos_sin.
// COUNT_WORK counts the work done (shared/work_count.wgsl) for the test of `TimestepEmbed::work`.
#import elem
#import trig
#import work_count

// Keep in sync with `TimestepParams` in src/kernels/embed.rs.
struct TimestepParams {
    images: u32,
    dim: u32,
    _pad: u32,
    // Multiplier from sampler time to model time (1000 for DiT); applied here.
    time_scale: f32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: TimestepParams;
@group(0) @binding(1) var<storage, read> t: array<f32>;
@group(0) @binding(2) var<storage, read> freqs: array<f32>;
@group(0) @binding(3) var<storage, read_write> emb: array<elem>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half_dim = p.dim / 2u;
    let j = gid.x;
    let b = gid.y;
    if j >= p.dim || b >= p.images {
        return;
    }
    var v = 0.0;
    if j < 2u * half_dim {
        let i = j % half_dim;
        let cs = cos_sin(reduce_2pi(t[b] * p.time_scale * freqs[i]));
        v = select(cs.y, cs.x, j < half_dim);
        // The two products; reduce_2pi: a product, a round (an add) and 3 fma; cos_sin: a
        // product, a round, 2 fma, r², r r², and 8 fma of the polynomials.
        count_dram_read(8u);
        count_f32_mul(19u);
        count_f32_add(15u);
    }
    emb[b * p.dim + j] = elem(v);
    count_dram_write(ELEM_BYTES);
    count_flush();
}
