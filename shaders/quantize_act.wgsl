// Activation quantization: each row of X (N x K, f32 or f16) to int8, four per u32, with one f32
// scale per row. LANES invocations per row (WG / LANES rows per workgroup): an absmax reduction
// over the row's segment, then every invocation packs whole words. A row of at most
// CACHED * 4 * LANES values (6,144 at 128 lanes: every DiT width up to XL's MLP) is read from
// device memory once and kept in registers between the two; a longer one is read twice. Output
// rows are x_row_words = ceil(K / 16) * 4 words (whole vec4<u32>, zero past K), the layout the
// int8-activation matmuls read. COUNT_WORK counts the work done (shared/work_count.wgsl)
// for the test of `ActQuant::work`.
#import elem
#import grid
#import work_count
#import act_quant

// Keep in sync with `ActQuantParams` in src/kernels/qmatmul.rs.
struct ActQuantParams {
    n: u32,
    k: u32,
    x_row_words: u32,
    _pad: u32,
}

override WG: u32 = 128u;
// Invocations per row (a power of two dividing WG): WG / LANES rows per workgroup, so a short row
// (DiT's 128 features: 32 words) keeps every invocation busy. Keep in sync with
// `ActQuant::lanes` in src/kernels/qmatmul.rs.
override LANES: u32 = 128u;
// vec4 groups of a row each invocation keeps in registers.
const CACHED: u32 = 12u;

@group(0) @binding(0) var<uniform> p: ActQuantParams;
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read_write> xq: array<u32>;
@group(0) @binding(3) var<storage, read_write> scales: array<f32>;

fn load4(row: u32, k: u32) -> vec4<f32> {
    var v = vec4<f32>();
    for (var j = 0u; j < 4u; j++) {
        if k + j < p.k {
            v[j] = f32(x[row * p.k + k + j]);
            count_dram_read(ELEM_BYTES);
        }
    }
    return v;
}

@compute @workgroup_size(WG)
fn main(g: Grid) {
    let li = g.li;
    let lane = li % LANES;
    let first_row = workgroup_index(g) * (WG / LANES);
    if first_row >= p.n {
        return; // uniform per workgroup: a grid rounded up past N
    }
    let row = first_row + li / LANES;
    // Rows past N (the last workgroup's) take part in the reduction only.
    let valid = row < p.n;
    var m = 0.0;
    if p.x_row_words <= CACHED * LANES {
        // Uniform branch: the whole workgroup takes the same side.
        var cache: array<vec4<f32>, CACHED>;
        for (var i = 0u; i < CACHED; i++) {
            let w = lane + i * LANES;
            if valid && w < p.x_row_words {
                cache[i] = load4(row, 4u * w);
                let v = abs(cache[i]);
                m = max(m, max(max(v.x, v.y), max(v.z, v.w)));
            }
        }
        let absmax = segment_max(m, li, LANES);
        if valid {
            let scale = act_scale(absmax);
            for (var i = 0u; i < CACHED; i++) {
                let w = lane + i * LANES;
                if w < p.x_row_words {
                    xq[row * p.x_row_words + w] = quantize4(cache[i], scale);
                    count_dram_write(4u);
                }
            }
            write_scale(row, lane, scale);
        }
    } else {
        if valid {
            for (var w = lane; w < p.x_row_words; w += LANES) {
                let v = abs(load4(row, 4u * w));
                m = max(m, max(max(v.x, v.y), max(v.z, v.w)));
            }
        }
        let absmax = segment_max(m, li, LANES);
        if valid {
            let scale = act_scale(absmax);
            for (var w = lane; w < p.x_row_words; w += LANES) {
                xq[row * p.x_row_words + w] = quantize4(load4(row, 4u * w), scale);
                count_dram_write(4u);
            }
            write_scale(row, lane, scale);
        }
    }
    count_flush();
}

fn write_scale(row: u32, lane: u32, scale: f32) {
    if lane == 0u {
        scales[row] = scale;
        count_dram_write(4u);
    }
}
