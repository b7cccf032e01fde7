// Work counters: the COUNT_WORK debug variant of a kernel counts its own operations and memory
// traffic, so tests can check that `Kernel::work` (src/kernel.rs) describes what the shader does.
//
// The kernel calls the `count_*` helpers right beside its real loads, stores and arithmetic, and
// `count_flush` once at the end of every path that counted. Without COUNT_WORK the helpers are
// empty and compile away; with it each invocation tallies in private registers (u32: an
// invocation doing 2^32 operations or moving 4 GiB on its own would wrap, far beyond any kernel
// here) and adds its tallies into `counters` with one atomicAdd per non-zero counter. The device
// sums are 64-bit: a (lo, hi) pair per counter, the carry added when an addition wraps lo.
//
// Counter i is the i-th field of `Work` (src/kernel.rs). Conventions, as the models in
// src/kernels/ use them: a multiply-add is one multiply and one add; a subtraction is an add;
// exp is 2 multiplies + 1 add, a divide is 1 multiply, tanh is an exp, an add and a divide;
// max, min, select and comparisons are not counted, nor is index arithmetic. Device bytes are the
// bytes a load or store names (a vec4<f16> load is 8), workgroup bytes likewise.
//
// Keep in sync with `WorkCounters` in src/kernels/work_count.rs (layout and binding).

// Bytes of one `elem` (shared/elem.wgsl).
#ifdef F16
const ELEM_BYTES: u32 = 2u;
#else
const ELEM_BYTES: u32 = 4u;
#endif

#ifdef COUNT_WORK
const WC_F32_ADD: u32 = 0u;
const WC_F32_MUL: u32 = 1u;
const WC_I8_MUL: u32 = 4u;
const WC_I32_ADD: u32 = 6u;
const WC_I32_MUL: u32 = 7u;
const WC_BIT_OPS: u32 = 8u;
const WC_DRAM_READ: u32 = 9u;
const WC_DRAM_WRITE: u32 = 10u;
const WC_SRAM_READ: u32 = 11u;
const WC_SRAM_WRITE: u32 = 12u;
const WC_COUNTERS: u32 = 16u;

// Binding 15: above every binding of the counting kernels (0..3, epilogue 7..9).
@group(0) @binding(15) var<storage, read_write> counters: array<atomic<u32>, 32>; // WC_COUNTERS (lo, hi)
var<private> wc: array<u32, 16>; // WC_COUNTERS

fn count_f32_add(n: u32) {
    wc[WC_F32_ADD] += n;
}

fn count_f32_mul(n: u32) {
    wc[WC_F32_MUL] += n;
}

fn count_i8_mul(n: u32) {
    wc[WC_I8_MUL] += n;
}

fn count_i32_add(n: u32) {
    wc[WC_I32_ADD] += n;
}

fn count_i32_mul(n: u32) {
    wc[WC_I32_MUL] += n;
}

fn count_bit_ops(n: u32) {
    wc[WC_BIT_OPS] += n;
}

fn count_dram_read(bytes: u32) {
    wc[WC_DRAM_READ] += bytes;
}

fn count_dram_write(bytes: u32) {
    wc[WC_DRAM_WRITE] += bytes;
}

fn count_sram_read(bytes: u32) {
    wc[WC_SRAM_READ] += bytes;
}

fn count_sram_write(bytes: u32) {
    wc[WC_SRAM_WRITE] += bytes;
}

fn count_flush() {
    for (var i = 0u; i < WC_COUNTERS; i++) {
        let v = wc[i];
        if v != 0u {
            let old = atomicAdd(&counters[2u * i], v);
            if old > 0xffffffffu - v {
                atomicAdd(&counters[2u * i + 1u], 1u);
            }
        }
        wc[i] = 0u;
    }
}
#else
fn count_f32_add(n: u32) {}
fn count_f32_mul(n: u32) {}
fn count_i8_mul(n: u32) {}
fn count_i32_add(n: u32) {}
fn count_i32_mul(n: u32) {}
fn count_bit_ops(n: u32) {}
fn count_dram_read(bytes: u32) {}
fn count_dram_write(bytes: u32) {}
fn count_sram_read(bytes: u32) {}
fn count_sram_write(bytes: u32) {}
fn count_flush() {}
#endif

// The conventions for the functions WGSL computes with several operations.
fn count_exp() {
    count_f32_mul(2u);
    count_f32_add(1u);
}

fn count_div() {
    count_f32_mul(1u);
}

fn count_tanh() {
    count_exp();
    count_f32_add(1u);
    count_div();
}
