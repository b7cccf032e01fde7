// The body of the float tiled GEMMs: Y = epilogue(X * W^T), X float (f32/f16), W dense or
// dequantized on the fly (gemm.wgsl, gemm_int4.wgsl, gemm_ternary.wgsl).
//
// A 16 x 16 workgroup computes a 64 (rows of X) x 64 (rows of W) tile of Y; each invocation holds a
// 4 x 4 register block. K is walked in slices of BK = 16: the X and W slices are staged in
// workgroup memory k-major, so the inner loop reads one vec4 of X and one vec4 of W per k and does
// 16 multiply-adds with them. Low-bit weights are dequantized once per slice while staging, so
// the inner loop is the dense one. Out-of-range elements are staged as zero: any M, N, K work.
//
// The importing shader declares `p` (with fields m, n, k, m_offset, ldy), the bindings `x` (elem4
// with VEC4, else elem) and `y`, the weights, and
//   fn load_w(row: u32, k: u32) -> elem4   W[row, k .. k+3] dequantized, zero outside M x K
// (k is a multiple of 4; row < p.m is checked by the caller).
//
// The body counts its work with shared/work_count.wgsl (empty helpers unless COUNT_WORK): the
// importer counts its own loads in `load_w` and `out_scale` (once per invocation and column), and
// in `count_out_scale` the multiply by it per output where it is not 1.
#import work_count

// Keep in sync with `Gemm::TILE` in src/kernels/matmul.rs.
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
const TM: u32 = 4u;
const TN: u32 = 4u;

// k-major slices: x_tile[k][n] and w_tile[k][m], read as vec4 along n and m.
var<workgroup> x_tile: array<elem4, 256>; // BK * BN / 4
var<workgroup> w_tile: array<elem4, 256>; // BK * BM / 4
#ifdef BIAS
// The tile's biases, loaded from memory once per workgroup, read by the 16 invocations of a column.
var<workgroup> col_bias: array<f32, 64>; // BM
#endif

// Four consecutive k of row `row` of X, zero outside N x K.
fn load_x(row: u32, k: u32) -> elem4 {
    if row >= p.n {
        return elem4();
    }
#ifdef VEC4
    if k < p.k {
        count_dram_read(4u * ELEM_BYTES);
        return x[(row * p.k + k) / 4u];
    }
    return elem4();
#else
    var v = elem4();
    for (var j = 0u; j < 4u; j++) {
        if k + j < p.k {
            v[j] = x[row * p.k + k + j];
            count_dram_read(ELEM_BYTES);
        }
    }
    return v;
#endif
}

@compute @workgroup_size(16, 16)
fn main(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let m0 = wid.x * BM;
    let n0 = wid.y * BN;
    // Staging role: row `sr` of the tile, k columns 4*sc .. 4*sc+3 of the slice.
    let sr = li / 4u;
    let sc = li % 4u;

    // The 4 x 4 register block, one vec4 (4 consecutive m) per row n; explicit variables rather
    // than an array so no compiler has to prove the indexing away.
    var acc0 = vec4<f32>();
    var acc1 = vec4<f32>();
    var acc2 = vec4<f32>();
    var acc3 = vec4<f32>();
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        let xv = load_x(n0 + sr, k0 + 4u * sc);
        var wv = elem4();
        if m0 + sr < p.m {
            wv = load_w(m0 + sr, k0 + 4u * sc);
        }
        for (var j = 0u; j < 4u; j++) {
            let at = (4u * sc + j) * BN + sr;
            x_tile[at / 4u][at % 4u] = xv[j];
            w_tile[at / 4u][at % 4u] = wv[j];
            count_sram_write(2u * ELEM_BYTES);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let a = x_tile[(kk * BN) / 4u + lid.y];
            let b = w_tile[(kk * BM) / 4u + lid.x];
            acc0 = mul_acc4(acc0, a.x, b);
            acc1 = mul_acc4(acc1, a.y, b);
            acc2 = mul_acc4(acc2, a.z, b);
            acc3 = mul_acc4(acc3, a.w, b);
            count_sram_read(8u * ELEM_BYTES);
            count_f32_mul(16u);
            count_f32_add(16u);
        }
        workgroupBarrier();
    }

    let mm = m0 + lid.x * TM;
    let acc = array<vec4<f32>, TN>(acc0, acc1, acc2, acc3);
    // The output scales of the invocation's four columns (1 for dense weights), loaded once.
    var os = vec4<f32>(1.0);
    for (var j = 0u; j < TM; j++) {
        if mm + j < p.m {
            os[j] = out_scale(mm + j);
        }
    }
    // Their biases, staged by the first 64 invocations.
    var bsc = vec4<f32>();
#ifdef BIAS
    if li < BM {
        var b = 0.0;
        if m0 + li < p.m {
            b = f32(bias[p.m_offset + m0 + li]);
            count_dram_read(ELEM_BYTES);
        }
        col_bias[li] = b;
        count_sram_write(4u);
    }
    workgroupBarrier();
    for (var j = 0u; j < TM; j++) {
        if mm + j < p.m {
            bsc[j] = col_bias[lid.x * TM + j];
            count_sram_read(4u);
        }
    }
#endif
    for (var i = 0u; i < TN; i++) {
        let n = n0 + lid.y * TN + i;
        if n < p.n {
            for (var j = 0u; j < TM; j++) {
                if mm + j < p.m {
                    let at = n * p.ldy + p.m_offset + mm + j;
                    var v = acc[i][j] * os[j];
#ifdef BIAS
                    v += bsc[j];
                    count_f32_add(1u);
#endif
                    y[at] = elem(epilogue_past_bias(v, n, p.m_offset + mm + j, at));
                    count_out_scale();
                    count_dram_write(ELEM_BYTES);
                }
            }
        }
    }
    count_flush();
}
