// Dense tiled GEMM, f32 or f16: Y = epilogue(X * W^T). The tile loop is shared/gemm_tile.wgsl;
// this file binds dense weights. With VEC4 (K % 4 == 0) every invocation stages one vec4 of X and
// one of W per slice with single 16-byte (8-byte for f16) loads; otherwise four scalars each.
// COUNT_WORK counts the work done (shared/work_count.wgsl) for the test of `Gemm::work`.
#import elem
#import matmul_params
#import work_count

@group(0) @binding(0) var<uniform> p: MatmulParams;
#ifdef VEC4
@group(0) @binding(1) var<storage, read> x: array<elem4>;
@group(0) @binding(2) var<storage, read> w: array<elem4>;
#else
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read> w: array<elem>;
#endif
@group(0) @binding(3) var<storage, read_write> y: array<elem>;

#import epilogue
#import gemm_tile

fn load_w(row: u32, k: u32) -> elem4 {
#ifdef VEC4
    if k < p.k {
        count_dram_read(4u * ELEM_BYTES);
        return w[(row * p.k + k) / 4u];
    }
    return elem4();
#else
    var v = elem4();
    for (var j = 0u; j < 4u; j++) {
        if k + j < p.k {
            v[j] = w[row * p.k + k + j];
            count_dram_read(ELEM_BYTES);
        }
    }
    return v;
#endif
}

// Dense weights have no scale (the multiply by 1.0 folds away, and is not counted).
fn out_scale(m: u32) -> f32 {
    return 1.0;
}

fn count_out_scale() {}
