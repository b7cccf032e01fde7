// FMA-throughput probe: the compute roof of the benchmarks. Each invocation runs 8 independent
// vec4 multiply-add chains for ITERS steps (8 chains hide FMA latency on real GPUs; 8 x vec4 fills
// a SIMD machine's registers without spilling) and writes one value so nothing is dead code.
// Work: invocations * ITERS * 8 * 4 multiply-adds.
#import elem

override ITERS: u32 = 1024u;

// Keep in sync with `ProbeParams` in src/kernels/probe.rs. Coming from a uniform, the chain
// constants cannot be folded by the shader compiler.
struct ProbeParams {
    mul: f32,
    add: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: ProbeParams;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.y * nwg.x * 256u + gid.x;
    let s = elem(f32(id % 7u) * 0.001);
    var a0 = elem4(s, s, s, s);
    var a1 = a0 + elem4(0.1);
    var a2 = a0 + elem4(0.2);
    var a3 = a0 + elem4(0.3);
    var a4 = a0 + elem4(0.4);
    var a5 = a0 + elem4(0.5);
    var a6 = a0 + elem4(0.6);
    var a7 = a0 + elem4(0.7);
    let m = elem4(elem(p.mul));
    let c = elem4(elem(p.add));
    for (var i = 0u; i < ITERS; i++) {
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a3 = fma(a3, m, c);
        a4 = fma(a4, m, c);
        a5 = fma(a5, m, c);
        a6 = fma(a6, m, c);
        a7 = fma(a7, m, c);
    }
    let t = (a0 + a1) + (a2 + a3) + (a4 + a5) + (a6 + a7);
    out[id] = f32(t.x + t.y + t.z + t.w);
}
