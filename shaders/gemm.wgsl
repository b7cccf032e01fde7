// Dense tiled GEMM, f32 or f16: Y = epilogue(X * W^T). The tile loop is shared/gemm_tile.wgsl;
// this file binds dense weights. With VEC4 (K % 4 == 0) every invocation stages one vec4 of X and
// one of W per slice with single 16-byte (8-byte for f16) loads; otherwise four scalars each.
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

#import epilogue
#import gemm_tile

fn load_w(row: u32, k: u32) -> elem4 {
#ifdef VEC4
    if k < p.k {
        return w[(row * p.k + k) / 4u];
    }
    return elem4();
#else
    var v = elem4();
    for (var j = 0u; j < 4u; j++) {
        if k + j < p.k {
            v[j] = w[row * p.k + k + j];
        }
    }
    return v;
#endif
}

fn out_scale(m: u32) -> f32 {
    return 1.0;
}
