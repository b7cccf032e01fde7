//! The work-counting debug variants of the dense kernels (shaders/shared/work_count.wgsl).
//!
//! [`Counting`] wraps a [`Gemv`], [`Gemm`], [`Attention`], [`ActQuant`] or [`Norm`] and runs its `COUNT_WORK` shader
//! variant: the same computation, plus private tallies beside every load, store and arithmetic
//! operation, added into a [`WorkCounters`] buffer at the end. Tests compare the counts with
//! [`Kernel::work`], so the energy ledger prices what the shaders really do. The wrapper's `work`
//! is the inner kernel's (the model of the normal variant; the counting atomics are not part of
//! it).
//!
//! A wrapper rather than a flag on the kernels: their fields are public and built with struct
//! literals by callers, and the debug variant is a different kernel (one more binding).

use crate::error::Result;
use crate::gpu::{Capabilities, Gpu};
use crate::kernel::{BufferReq, Kernel, Prepared, TensorRef, Work};
use crate::kernels::{
    ActQuant, Attention, ClassEmbed, DecodeRgba8, Elementwise, Gemm, Gemv, MlpBlock, Norm, Patchify, QGemm, QGemv,
    SamplerStep, StepSlice, TimestepEmbed, Unpatchify,
};

/// Binding of the counters in the counting variants.
/// Keep in sync with shaders/shared/work_count.wgsl.
pub const COUNTERS_BINDING: u32 = 15;

/// The define that selects the counting variant of a shader.
pub(crate) const COUNT_WORK: &str = "COUNT_WORK";

/// The counters buffer: one 64-bit (lo, hi) pair of u32 per [`Work`] field, in
/// [`Work::FIELDS`] order, plus spares. Keep in sync with shaders/shared/work_count.wgsl (counter
/// i is field i; a test reads its `WC_*` indices).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct WorkCounters {
    /// (lo, hi) per counter.
    pub counts: [[u32; 2]; WORK_COUNTERS],
}

/// Counters in the shader's array (`WC_COUNTERS`): the [`Work`] fields and spares.
pub const WORK_COUNTERS: usize = 16;

impl WorkCounters {
    /// Size of the counters buffer, bytes.
    pub const SIZE: u64 = size_of::<Self>() as u64;

    /// The counts as [`Work`].
    pub fn to_work(&self) -> Work {
        let v = |[lo, hi]: [u32; 2]| u64::from(lo) | (u64::from(hi) << 32);
        Work::from_array(std::array::from_fn(|i| v(self.counts[i])))
    }

    /// The counters buffer a counting variant binds last. The shaders add into it: zero it
    /// before a run.
    pub fn requirement() -> BufferReq {
        BufferReq::read_write("counters", Self::SIZE)
    }
}

/// A kernel's own buffers and requirements: without a counting variant's counters (its last),
/// for kernels that bind their buffers in order.
pub(crate) fn own<'b, 'a>(
    buffers: &'b [TensorRef<'a>],
    reqs: &'b [BufferReq],
) -> (&'b [TensorRef<'a>], &'b [BufferReq]) {
    let n = reqs.len() - usize::from(counting(reqs));
    (&buffers[..n.min(buffers.len())], &reqs[..n])
}

/// The storage binding of the counters for a counting variant (`count`): the last of the kernel's
/// buffers, at [`COUNTERS_BINDING`]; `None` for the normal variant.
pub(crate) fn counters_binding<'a>(buffers: &[TensorRef<'a>], count: bool) -> Option<(u32, TensorRef<'a>, u64)> {
    buffers.last().filter(|_| count).map(|b| (COUNTERS_BINDING, *b, WorkCounters::SIZE))
}

/// The work-counting variant of a dense kernel: buffers as the kernel's, then a
/// [`WorkCounters`] buffer (zeroed by the caller) that the run adds its counts into.
#[derive(Clone, Debug)]
pub struct Counting<K>(pub K);

/// Whether `reqs` are a counting variant's: the kernel's own, then the counters
/// ([`WorkCounters::requirement`], which only `Counting` appends). A kernel with a counting
/// variant builds it from the same `dispatches` when this holds.
pub(crate) fn counting(reqs: &[BufferReq]) -> bool {
    reqs.last() == Some(&WorkCounters::requirement())
}

macro_rules! counting {
    ($($kernel:ty),*) => {$(
        impl Kernel for Counting<$kernel> {
            fn name(&self) -> &'static str {
                self.0.name()
            }

            fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>> {
                let mut reqs = self.0.requirements(caps)?;
                reqs.push(WorkCounters::requirement());
                Ok(reqs)
            }

            fn work(&self, caps: &Capabilities) -> Result<Work> {
                self.0.work(caps)
            }

            fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
                self.0.dispatches(gpu, buffers, reqs)
            }
        }
    )*};
}

counting!(
    Gemv,
    Gemm,
    Attention,
    ActQuant,
    Norm,
    QGemv,
    QGemm,
    Elementwise,
    StepSlice,
    Patchify,
    Unpatchify,
    ClassEmbed,
    SamplerStep,
    TimestepEmbed,
    DecodeRgba8,
    MlpBlock
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_match_the_shader_array_and_carry_into_hi() {
        assert_eq!(WorkCounters::SIZE, 16 * 8);
        assert!(Work::FIELDS.len() <= WORK_COUNTERS);
        let mut c = WorkCounters::default();
        c.counts[0] = [5, 1];
        c.counts[Work::FIELDS.len() - 1] = [u32::MAX, 2];
        let w = c.to_work();
        assert_eq!(w.f32_add, (1 << 32) + 5);
        assert_eq!(w.sram_write, (3 << 32) - 1);
        assert_eq!(Work { f32_add: 0, sram_write: 0, ..w }, Work::default());
    }

    /// The shader's counter indices are the positions of the `Work` fields they name.
    #[test]
    fn shader_counter_indices_follow_the_work_fields() {
        let wgsl = include_str!("../../shaders/shared/work_count.wgsl");
        let mut seen = 0;
        for line in wgsl.lines().filter_map(|l| l.trim().strip_prefix("const WC_")) {
            let (name, rest) = line.split_once(": u32 = ").expect("const WC_NAME: u32 = Nu;");
            let index: usize = rest.trim_end_matches(';').trim_end_matches('u').parse().unwrap();
            if name == "COUNTERS" {
                assert_eq!(index, WORK_COUNTERS);
            } else {
                assert_eq!(Work::FIELDS.get(index).copied(), Some(name.to_lowercase().as_str()), "WC_{name}");
            }
            seen += 1;
        }
        assert!(seen > 4, "no WC_ constants found");
    }
}
