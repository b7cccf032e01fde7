// Image to patch tokens, as DiT's PatchEmbed (a stride-p convolution) sees them: images
// (B, C, H, W) to tokens (B, T, C*p*p) with T = (H/p)(W/p) row-major over the patch grid and
// feature (c, i, j) at c*p*p + i*p + j — the order of the convolution weight flattened to
// (hidden, C*p*p), so the patch embedding is then one GEMM. One invocation per output element.
// COUNT_WORK counts its loads and stores (shared/work_count.wgsl) for the test of `work()`.
#import elem
#import work_count

#import patch_params

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: PatchParams;
@group(0) @binding(1) var<storage, read> image: array<elem>;
@group(0) @binding(2) var<storage, read_write> tokens: array<elem>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let pp = p.patch_size * p.patch_size;
    let features = p.channels * pp;
    let gw = p.width / p.patch_size;
    let tokens_per_image = (p.height / p.patch_size) * gw;
    if i >= p.images * tokens_per_image * features {
        return;
    }
    let f = i % features;
    let t = (i / features) % tokens_per_image;
    let b = i / (features * tokens_per_image);
    let c = f / pp;
    let y = (t / gw) * p.patch_size + (f % pp) / p.patch_size;
    let x = (t % gw) * p.patch_size + f % p.patch_size;
    tokens[i] = image[((b * p.channels + c) * p.height + y) * p.width + x];
    count_dram_read(ELEM_BYTES);
    count_dram_write(ELEM_BYTES);
    count_flush();
}
