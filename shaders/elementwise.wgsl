// Element-wise out = a + b, a * b, or alpha * a + beta (OP = 0, 1, 2; for OP = 2 `b` is unused),
// computed in f32 and rounded once to the element type.
// Each invocation handles one element, or one vec4 with VEC4 (length % 4 == 0). A 2D grid of
// workgroups covers lengths past the 65535-workgroup dimension limit.
#import elem

// Keep in sync with `EltParams` in src/kernels/elementwise.rs.
struct EltParams {
    // Elements (or vec4s with VEC4).
    len: u32,
    alpha: f32,
    beta: f32,
    _pad: u32,
}

override OP: u32 = 0u;
override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: EltParams;
#ifdef VEC4
alias vf = vec4<f32>;
alias ve = elem4;
@group(0) @binding(1) var<storage, read> a: array<elem4>;
@group(0) @binding(2) var<storage, read> b: array<elem4>;
@group(0) @binding(3) var<storage, read_write> out: array<elem4>;
#else
alias vf = f32;
alias ve = elem;
@group(0) @binding(1) var<storage, read> a: array<elem>;
@group(0) @binding(2) var<storage, read> b: array<elem>;
@group(0) @binding(3) var<storage, read_write> out: array<elem>;
#endif

@compute @workgroup_size(WG)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * WG + li;
    if i >= p.len {
        return;
    }
    let av = vf(a[i]);
    var r: vf;
    switch OP {
        case 0u: {
            r = av + vf(b[i]);
        }
        case 1u: {
            r = av * vf(b[i]);
        }
        default: {
            r = fma(av, vf(p.alpha), vf(p.beta));
        }
    }
    out[i] = ve(r);
}
