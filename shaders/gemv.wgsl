// Dense GEMV and small-N matmul (N = NCOLS = 1..8): Y = X * W^T, memory-bound on the weights.
//
// A workgroup of WG invocations owns ROWS consecutive rows of W. The invocations stride along K
// together, so each step of the workgroup reads WG consecutive vec4 of a row (coalesced); the NCOLS
// activation vectors loaded at a step are reused from registers for all ROWS rows, and each weight
// element is read exactly once. The ROWS * NCOLS partial sums are then reduced across the
// workgroup (shared/reduce.wgsl), and invocation i writes value i through the epilogue.
// VEC4 (K % 4 == 0) reads 4 elements per load; otherwise scalars.
// COUNT_WORK counts the work done (shared/work_count.wgsl) for the test of `Gemv::work`.
#import elem
#import matmul_params
#import reduce
#import work_count

override WG: u32 = 128u;
override ROWS: u32 = 4u;
override NCOLS: u32 = 1u;

@group(0) @binding(0) var<uniform> p: MatmulParams;
#ifdef VEC4
@group(0) @binding(1) var<storage, read> x: array<elem4>;
@group(0) @binding(2) var<storage, read> w: array<elem4>;
const LOAD_BYTES: u32 = 4u * ELEM_BYTES;
#else
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read> w: array<elem>;
const LOAD_BYTES: u32 = ELEM_BYTES;
#endif
@group(0) @binding(3) var<storage, read_write> y: array<elem>;

#import epilogue

@compute @workgroup_size(WG)
fn main(g: Grid) {
    let li = g.li;
    let m0 = workgroup_index(g) * ROWS;
    if m0 >= p.m {
        return; // uniform per workgroup: safe before the barriers
    }
    var acc: array<f32, MAX_ACC>;
#ifdef VEC4
    let kv = p.k / 4u;
    var xv: array<elem4, 8>;
#else
    let kv = p.k;
    var xv: array<elem, 8>;
#endif
    for (var k = li; k < kv; k += WG) {
        for (var c = 0u; c < NCOLS; c++) {
            xv[c] = x[c * kv + k];
            count_dram_read(LOAD_BYTES);
        }
        for (var r = 0u; r < ROWS; r++) {
            // Rows past M re-read the last row (valid memory, never written) to keep the loop uniform.
            let row = min(m0 + r, p.m - 1u);
            let wv = w[row * kv + k];
            count_dram_read(LOAD_BYTES);
            for (var c = 0u; c < NCOLS; c++) {
#ifdef VEC4
                acc[r * NCOLS + c] = dot_acc(acc[r * NCOLS + c], wv, xv[c]);
                count_f32_mul(4u);
                count_f32_add(4u);
#else
                acc[r * NCOLS + c] = fma(f32(wv), f32(xv[c]), acc[r * NCOLS + c]);
                count_f32_mul(1u);
                count_f32_add(1u);
#endif
            }
        }
    }
    reduce_sums(&acc, ROWS * NCOLS, g);
    if li < ROWS * NCOLS {
        let r = li / NCOLS;
        let c = li % NCOLS;
        if m0 + r < p.m {
            let at = c * p.ldy + p.m_offset + m0 + r;
            y[at] = elem(epilogue(reduced(li), c, p.m_offset + m0 + r, at));
            count_dram_write(ELEM_BYTES);
        }
    }
    count_flush();
}
