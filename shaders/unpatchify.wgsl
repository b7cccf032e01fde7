// Patch tokens back to images, as DiT's unpatchify ('nhwpqc -> nchpwq'): tokens (B, T, p*p*C)
// with feature (i, j, c) at (i*p + j)*C + c, to images (B, C, H, W). When the model predicts
// more channels than the image has (learn_sigma: 2C), `token_channels` is the stride and only the
// first C channels are read. One invocation per output pixel.
// COUNT_WORK counts its loads and stores (shared/work_count.wgsl) for the test of `work()`.
#import elem
#import work_count

#import patch_params

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: PatchParams;
@group(0) @binding(1) var<storage, read> tokens: array<elem>;
@group(0) @binding(2) var<storage, read_write> image: array<elem>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * WG;
    if o >= p.images * p.channels * p.height * p.width {
        return;
    }
    let x = o % p.width;
    let y = (o / p.width) % p.height;
    let c = (o / (p.width * p.height)) % p.channels;
    let b = o / (p.width * p.height * p.channels);
    let gw = p.width / p.patch_size;
    let t = (y / p.patch_size) * gw + x / p.patch_size;
    let features = p.patch_size * p.patch_size * p.token_channels;
    let tokens_per_image = (p.height / p.patch_size) * gw;
    let f = ((y % p.patch_size) * p.patch_size + x % p.patch_size) * p.token_channels + c;
    image[o] = tokens[(b * tokens_per_image + t) * features + f];
    count_dram_read(ELEM_BYTES);
    count_dram_write(ELEM_BYTES);
    count_flush();
}
