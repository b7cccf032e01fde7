// Deliberately naive matmul, one invocation per output element, scalar loads straight from
// device memory. A benchmark reference only: the tiled kernels are measured against it.
#import elem
#import matmul_params

@group(0) @binding(0) var<uniform> p: MatmulParams;
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read> w: array<elem>;
@group(0) @binding(3) var<storage, read_write> y: array<elem>;

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let m = gid.x;
    let n = gid.y;
    if m >= p.m || n >= p.n {
        return;
    }
    var acc = 0.0;
    for (var k = 0u; k < p.k; k++) {
        acc += f32(x[n * p.k + k]) * f32(w[m * p.k + k]);
    }
    y[n * p.ldy + p.m_offset + m] = elem(acc);
}
