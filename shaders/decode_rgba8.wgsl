// Samples to 8-bit RGBA pixels, the last stage of a generation whose output stays on the GPU.
// Samples (images, C, H, W) in [-1, 1]; image i is tiled at column i % columns, row i / columns
// of W x H tiles. One channel is grey with opaque alpha, two grey and alpha, three RGB with
// opaque alpha, four RGBA. A value v becomes floor(x + 0.5) with x = (v + 1) * 127.5, computed as
// (floor((v + 1) * 255) + 1) >> 1: the same integer, with one rounding (a product) and no add
// after it that a compiler could fuse, so every backend and the CPU twin (src/cpu/decode.rs, used
// by `PixelDecoder`) give the same bytes.
// Output: packed words (red in the low byte) with `pitch` words per row, which the host copies
// into a texture; with TEXTURE, a write-only rgba8unorm storage texture.
// One invocation per pixel: consecutive invocations read consecutive samples of each channel
// plane and write consecutive words.
// COUNT_WORK counts its loads, stores and arithmetic (shared/work_count.wgsl).
#import work_count

// Keep in sync with `DecodeParams` in src/kernels/decode.rs.
struct DecodeParams {
    images: u32,
    channels: u32,
    height: u32,
    width: u32,
    columns: u32,
    // Words per output row (buffer output).
    pitch: u32,
    _pad0: u32,
    _pad1: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: DecodeParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
#ifdef TEXTURE
@group(0) @binding(2) var out: texture_storage_2d<rgba8unorm, write>;
#else
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
#endif

fn to_byte(v: f32) -> u32 {
    count_dram_read(4u);
    count_f32_add(1u);
    count_f32_mul(1u);
    count_i32_add(1u);
    count_bit_ops(1u);
    return (u32(floor((clamp(v, -1.0, 1.0) + 1.0) * 255.0)) + 1u) >> 1u;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * WG;
    let plane = p.height * p.width;
    if o >= p.images * plane {
        return;
    }
    let i = o / plane;
    let py = (o % plane) / p.width;
    let px = o % p.width;
    let base = i * p.channels * plane + py * p.width + px;
    var rgba = vec4<u32>(0u, 0u, 0u, 255u);
    switch p.channels {
        case 1u: {
            rgba = vec4<u32>(vec3<u32>(to_byte(x[base])), 255u);
        }
        case 2u: {
            rgba = vec4<u32>(vec3<u32>(to_byte(x[base])), to_byte(x[base + plane]));
        }
        case 3u: {
            rgba = vec4<u32>(to_byte(x[base]), to_byte(x[base + plane]), to_byte(x[base + 2u * plane]), 255u);
        }
        default: {
            rgba = vec4<u32>(
                to_byte(x[base]),
                to_byte(x[base + plane]),
                to_byte(x[base + 2u * plane]),
                to_byte(x[base + 3u * plane]),
            );
        }
    }
    let tx = (i % p.columns) * p.width + px;
    let ty = (i / p.columns) * p.height + py;
#ifdef TEXTURE
    // k / 255 converts back to unorm k exactly.
    textureStore(out, vec2<u32>(tx, ty), vec4<f32>(rgba) / 255.0);
    count_f32_mul(4u);
#else
    out[ty * p.pitch + tx] = rgba.x | (rgba.y << 8u) | (rgba.z << 16u) | (rgba.w << 24u);
    count_bit_ops(6u);
#endif
    count_dram_write(4u);
    count_flush();
}
