// Sampler updates, element-wise over the latent (or pixel) tensors of a batch. The per-step
// values come from `schedule[step]` with `step` read from a one-word state buffer, so one prepared
// dispatch serves every step: the host writes the step number, not a new bind group.
//   OP 0 GUIDE:        out = u + s (c - u), model output a = [cond rows; uncond rows] (2B x len)
//   OP 1 EULER:        x += (t_next - t) a                      (rectified flow, v = eps - x0)
//   OP 2 HEUN_PREDICT: out = x + (t_next - t) a
//   OP 3 HEUN_CORRECT: x += (t_next - t) (a + b) / 2            (a = v(x, t), b = v(out, t_next))
//   OP 4 DDIM:         eps-prediction DDIM (eta 0): x0 = (x - sqrt(1 - ab) a) / sqrt(ab),
//                      x = sqrt(ab_next) x0 + sqrt(1 - ab_next) a
//   OP 5 NOISE_INIT:   x = (1 - t) a + t x                      (img2img: a image, x noise)
//   OP 6 TIME:         out = t       OP 7 TIME_NEXT: out = t_next   (the model's timestep input)
//   OP 8 STEP_SIZE:    out = t - t_next                         (a shortcut model's step input)
//   OP 9, 10:          TIME and STEP_SIZE of every step at once, step-major (len x images values
//                      per step; the entry is the value's step, not the state's): a request's setup
//                      computing the modulation of every step.
// Unused bindings of an op are bound to a placeholder by the host. The CPU twin is
// src/cpu/sampler.rs.

// Keep in sync with `SamplerParams` in src/kernels/sampler.rs.
// COUNT_WORK counts the work done (shared/work_count.wgsl) for the test of `Sampler::work`: a
// square root is a multiply (as an inverse square root), a negation is not counted.
#import work_count

struct SamplerParams {
    // Elements per image.
    len: u32,
    images: u32,
    guidance: f32,
    steps: u32,
}

// Keep in sync with `ScheduleEntry` in src/kernels/sampler.rs.
struct ScheduleEntry {
    t: f32,
    t_next: f32,
    alpha_bar: f32,
    alpha_bar_next: f32,
}

override OP: u32 = 1u;
override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: SamplerParams;
@group(0) @binding(1) var<storage, read> schedule: array<ScheduleEntry>;
@group(0) @binding(2) var<storage, read> state: array<u32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
@group(0) @binding(4) var<storage, read> a: array<f32>;
@group(0) @binding(5) var<storage, read> b: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let every_step = OP >= 9u;
    let per_step = p.len * p.images;
    let total = per_step * select(1u, p.steps, every_step);
    if i >= total {
        return;
    }
    let e = schedule[select(state[0], i / per_step, every_step)];
    // The step's entry and the state word, and the one value every op writes.
    count_dram_read(20u);
    count_dram_write(4u);
    let dt = e.t_next - e.t;
    switch OP {
        case 0u: {
            let u = a[total + i];
            out[i] = fma(p.guidance, a[i] - u, u);
            count_dram_read(8u);
            count_f32_mul(1u);
            count_f32_add(2u);
        }
        case 1u: {
            x[i] = fma(dt, a[i], x[i]);
            count_dram_read(8u);
            count_f32_mul(1u);
            count_f32_add(2u);
        }
        case 2u: {
            out[i] = fma(dt, a[i], x[i]);
            count_dram_read(8u);
            count_f32_mul(1u);
            count_f32_add(2u);
        }
        case 3u: {
            x[i] = fma(dt * 0.5, a[i] + b[i], x[i]);
            count_dram_read(12u);
            count_f32_mul(2u);
            count_f32_add(3u);
        }
        case 4u: {
            let ai = a[i];
            let x0 = (x[i] - sqrt(1.0 - e.alpha_bar) * ai) / sqrt(e.alpha_bar);
            x[i] = fma(sqrt(e.alpha_bar_next), x0, sqrt(1.0 - e.alpha_bar_next) * ai);
            count_dram_read(8u);
            // Four square roots, two products, the divide and the fma; 1 - ᾱ twice, the
            // subtraction and the fma's add.
            count_f32_mul(8u);
            count_f32_add(4u);
        }
        case 5u: {
            x[i] = fma(1.0 - e.t, a[i], e.t * x[i]);
            count_dram_read(8u);
            count_f32_mul(2u);
            count_f32_add(2u);
        }
        case 6u, 9u: {
            out[i] = e.t;
        }
        case 7u: {
            out[i] = e.t_next;
        }
        default: {
            out[i] = -dt;
            count_f32_add(1u);
        }
    }
    count_flush();
}
