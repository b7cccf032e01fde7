// Element-wise out = a + b, a * b, alpha * a + beta, SiLU(a), GELU-tanh(a) or a copy of `b` (OP = 0
// .. 5; OP 2..4 read only `a`, the copy only `b`, which the host binds to the one input), computed in f32 and rounded once to the element type. The activations are
// those of shared/epilogue.wgsl (DiT applies SiLU to the conditioning vector before every adaLN
// projection, which is why it exists apart from the matmul epilogues).
// With BROADCAST, `b` is a smaller tensor repeated over `a`: rows of `b_cols` elements, each row
// shared by `b_group` consecutive rows of `a` (a bias row: b_group >= rows; DiT's per-image gate:
// b_group = tokens); b[(i / (b_cols * b_group)) * b_cols + i % b_cols].
// Each invocation handles one element, or one vec4 with VEC4 (length % 4 == 0). A 2D grid of
// workgroups covers lengths past the 65535-workgroup dimension limit.
// COUNT_WORK counts the work done (shared/work_count.wgsl) for the test of `Elementwise::work`.
#import elem
#import grid
#import work_count

// Keep in sync with `EltParams` in src/kernels/elementwise.rs.
struct EltParams {
    // Elements (or vec4s with VEC4).
    len: u32,
    alpha: f32,
    beta: f32,
    // BROADCAST: elements (or vec4s) per row of `b`, and rows of `a` sharing one row of `b`.
    b_cols: u32,
    b_group: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

fn b_index(i: u32) -> u32 {
#ifdef BROADCAST
    return (i / (p.b_cols * p.b_group)) * p.b_cols + i % p.b_cols;
#else
    return i;
#endif
}

override OP: u32 = 0u;
override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: EltParams;
#ifdef VEC4
const LANES: u32 = 4u;
alias vf = vec4<f32>;
alias ve = elem4;
@group(0) @binding(1) var<storage, read> a: array<elem4>;
@group(0) @binding(2) var<storage, read> b: array<elem4>;
@group(0) @binding(3) var<storage, read_write> out: array<elem4>;
#else
const LANES: u32 = 1u;
alias vf = f32;
alias ve = elem;
@group(0) @binding(1) var<storage, read> a: array<elem>;
@group(0) @binding(2) var<storage, read> b: array<elem>;
@group(0) @binding(3) var<storage, read_write> out: array<elem>;
#endif

@compute @workgroup_size(WG)
fn main(g: Grid) {
    let i = workgroup_index(g) * WG + g.li;
    if i >= p.len {
        return;
    }
    var r: vf;
    count_dram_write(LANES * ELEM_BYTES);
    if OP == 5u {
        out[i] = b[b_index(i)];
        count_dram_read(LANES * ELEM_BYTES);
        count_flush();
        return;
    }
    let av = vf(a[i]);
    count_dram_read(LANES * ELEM_BYTES);
    switch OP {
        case 0u: {
            r = av + vf(b[b_index(i)]);
            count_dram_read(LANES * ELEM_BYTES);
            count_f32_add(LANES);
        }
        case 1u: {
            r = av * vf(b[b_index(i)]);
            count_dram_read(LANES * ELEM_BYTES);
            count_f32_mul(LANES);
        }
        case 2u: {
            r = fma(av, vf(p.alpha), vf(p.beta));
            count_f32_mul(LANES);
            count_f32_add(LANES);
        }
        case 3u: {
            r = av / (vf(1.0) + exp(-av));
            for (var l = 0u; l < LANES; l++) {
                count_exp();
                count_f32_add(1u);
                count_div();
            }
        }
        default: {
            let c = 0.7978845608028654; // sqrt(2 / pi)
            r = 0.5 * av * (vf(1.0) + tanh(c * (av + 0.044715 * av * av * av)));
            // 0.5 a, its product, the cube (2) and its scale, the sum, the scale by c, tanh, 1 +.
            count_f32_mul(6u * LANES);
            count_f32_add(2u * LANES);
            for (var l = 0u; l < LANES; l++) {
                count_tanh();
            }
        }
    }
    out[i] = ve(r);
    count_flush();
}
