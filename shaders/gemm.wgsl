// Dense tiled GEMM: Y = X * W^T (see shared/matmul_params.wgsl for the layout).
//
// A 16 x 16 workgroup computes a 64 (rows of X) x 64 (rows of W) tile of Y; each invocation holds a
// 4 x 4 register block. K is walked in slices of BK = 16: the X and W slices are staged in
// workgroup memory k-major, so the inner loop reads one vec4 of X and one vec4 of W per k and does
// 16 multiply-adds with them. With VEC4 (K % 4 == 0) every invocation stages one vec4 of X and one
// of W per slice with single 16-byte (8-byte for f16) loads; otherwise it gathers four scalars.
// Out-of-range elements are staged as zero, so any M, N and K are correct.
#import elem
#import matmul_params

@group(0) @binding(0) var<uniform> p: MatmulParams;
#ifdef VEC4
@group(0) @binding(1) var<storage, read> x: array<elem4>;
@group(0) @binding(2) var<storage, read> w: array<elem4>;
#else
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read> w: array<elem>;
#endif
@group(0) @binding(3) var<storage, read_write> y: array<elem>;

// Keep in sync with `Gemm::TILE` in src/kernels/matmul.rs.
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
const TM: u32 = 4u;
const TN: u32 = 4u;

// k-major slices: xs[k][n] and ws[k][m], read as vec4 along n and m.
var<workgroup> xs: array<elem4, 256>; // BK * BN / 4
var<workgroup> ws: array<elem4, 256>; // BK * BM / 4

// Loads four consecutive k of row `row` of a K-wide matrix, zero outside rows x cols.
#ifdef VEC4
fn load_x(row: u32, k: u32) -> elem4 {
    if row < p.n && k < p.k {
        return x[(row * p.k + k) / 4u];
    }
    return elem4();
}
fn load_w(row: u32, k: u32) -> elem4 {
    if row < p.m && k < p.k {
        return w[(row * p.k + k) / 4u];
    }
    return elem4();
}
#else
fn load_x(row: u32, k: u32) -> elem4 {
    var v = elem4();
    if row < p.n {
        for (var j = 0u; j < 4u; j++) {
            if k + j < p.k {
                v[j] = x[row * p.k + k + j];
            }
        }
    }
    return v;
}
fn load_w(row: u32, k: u32) -> elem4 {
    var v = elem4();
    if row < p.m {
        for (var j = 0u; j < 4u; j++) {
            if k + j < p.k {
                v[j] = w[row * p.k + k + j];
            }
        }
    }
    return v;
}
#endif

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
        let wv = load_w(m0 + sr, k0 + 4u * sc);
        for (var j = 0u; j < 4u; j++) {
            let at = (4u * sc + j) * BN + sr;
            xs[at / 4u][at % 4u] = xv[j];
            ws[at / 4u][at % 4u] = wv[j];
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let a = xs[(kk * BN) / 4u + lid.y];
            let b = ws[(kk * BM) / 4u + lid.x];
            acc0 = mul_acc4(acc0, a.x, b);
            acc1 = mul_acc4(acc1, a.y, b);
            acc2 = mul_acc4(acc2, a.z, b);
            acc3 = mul_acc4(acc3, a.w, b);
        }
        workgroupBarrier();
    }

    let mm = m0 + lid.x * TM;
    let acc = array<vec4<f32>, TN>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < TN; i++) {
        let n = n0 + lid.y * TN + i;
        if n < p.n {
            for (var j = 0u; j < TM; j++) {
                if mm + j < p.m {
                    y[n * p.ldy + p.m_offset + mm + j] = elem(acc[i][j]);
                }
            }
        }
    }
}
