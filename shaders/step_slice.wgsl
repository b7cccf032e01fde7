// One step's slice of a tensor made for every step at once: dst[i] = src[s * len + i], s the step
// counter (clamped to the last step). How a sampling step reads its adaLN modulation when the
// modulation of every step was computed in the request's setup (one GEMM per block instead of a
// GEMV per block and step). One element (or vec4 with VEC4) per invocation; a 2D grid of
// workgroups covers lengths past 65535 workgroups.
// COUNT_WORK counts the work done (shared/work_count.wgsl) for the test of `StepSlice::work`.
#import elem
#import grid
#import work_count

// Keep in sync with `StepSliceParams` in src/kernels/elementwise.rs.
struct StepSliceParams {
    // Elements (or vec4s with VEC4) of one step.
    len: u32,
    steps: u32,
    _pad0: u32,
    _pad1: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: StepSliceParams;
@group(0) @binding(1) var<storage, read> step: array<u32>;
#ifdef VEC4
const LANES: u32 = 4u;
@group(0) @binding(2) var<storage, read> src: array<elem4>;
@group(0) @binding(3) var<storage, read_write> dst: array<elem4>;
#else
const LANES: u32 = 1u;
@group(0) @binding(2) var<storage, read> src: array<elem>;
@group(0) @binding(3) var<storage, read_write> dst: array<elem>;
#endif

@compute @workgroup_size(WG)
fn main(g: Grid) {
    let i = workgroup_index(g) * WG + g.li;
    if i >= p.len {
        return;
    }
    let s = min(step[0], p.steps - 1u);
    count_dram_read(4u);
    dst[i] = src[s * p.len + i];
    count_dram_read(LANES * ELEM_BYTES);
    count_dram_write(LANES * ELEM_BYTES);
    count_flush();
}
