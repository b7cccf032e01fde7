// Element type conversion: f32 -> f16 (F16 + TO_F16), f16 -> f32 (F16), or a plain f32 copy (no
// define). Moves an f32 sampler state into an f16 model graph and the model's output back.
// One element per invocation; a 2D grid of workgroups covers lengths past 65535 workgroups.
#import elem
#import grid

// Keep in sync with `ConvertParams` in src/kernels/elementwise.rs.
struct ConvertParams {
    len: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: ConvertParams;
#ifdef TO_F16
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<elem>;
#else
@group(0) @binding(1) var<storage, read> src: array<elem>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
#endif

@compute @workgroup_size(WG)
fn main(g: Grid) {
    let i = workgroup_index(g) * WG + g.li;
    if i >= p.len {
        return;
    }
#ifdef TO_F16
    dst[i] = elem(src[i]);
#else
    dst[i] = f32(src[i]);
#endif
}
