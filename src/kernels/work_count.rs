//! The work-counting debug variants of the dense kernels (shaders/shared/work_count.wgsl).
//!
//! [`Counting`] wraps a [`Gemv`], [`Gemm`] or [`Attention`] and runs its `COUNT_WORK` shader
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
use crate::kernels::{Attention, Gemm, Gemv};

/// Binding of the counters in the counting variants.
/// Keep in sync with shaders/shared/work_count.wgsl.
pub const COUNTERS_BINDING: u32 = 15;

/// The define that selects the counting variant of a shader.
pub(crate) const COUNT_WORK: &str = "COUNT_WORK";

/// The counters buffer: one 64-bit (lo, hi) pair of u32 per [`Work`] field, in `Work`'s order,
/// plus spares. Keep in sync with shaders/shared/work_count.wgsl (counter i is field i).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct WorkCounters {
    /// f32 additions.
    pub f32_add: [u32; 2],
    /// f32 multiplications.
    pub f32_mul: [u32; 2],
    /// f16 additions.
    pub f16_add: [u32; 2],
    /// f16 multiplications.
    pub f16_mul: [u32; 2],
    /// 8-bit integer multiplications.
    pub i8_mul: [u32; 2],
    /// 8-bit integer additions.
    pub i8_add: [u32; 2],
    /// 32-bit integer additions.
    pub i32_add: [u32; 2],
    /// 32-bit integer multiplications.
    pub i32_mul: [u32; 2],
    /// Bitwise and shift operations on data.
    pub bit_ops: [u32; 2],
    /// Bytes read from device memory.
    pub dram_read: [u32; 2],
    /// Bytes written to device memory.
    pub dram_write: [u32; 2],
    /// Bytes read from workgroup memory.
    pub sram_read: [u32; 2],
    /// Bytes written to workgroup memory.
    pub sram_write: [u32; 2],
    /// Unused (the shader's array has 16 counters).
    pub _spare: [[u32; 2]; 3],
}

impl WorkCounters {
    /// Size of the counters buffer, bytes.
    pub const SIZE: u64 = size_of::<Self>() as u64;

    /// The counts as [`Work`].
    pub fn to_work(&self) -> Work {
        let v = |[lo, hi]: [u32; 2]| u64::from(lo) | (u64::from(hi) << 32);
        Work {
            f32_add: v(self.f32_add),
            f32_mul: v(self.f32_mul),
            f16_add: v(self.f16_add),
            f16_mul: v(self.f16_mul),
            i8_mul: v(self.i8_mul),
            i8_add: v(self.i8_add),
            i32_add: v(self.i32_add),
            i32_mul: v(self.i32_mul),
            bit_ops: v(self.bit_ops),
            dram_read: v(self.dram_read),
            dram_write: v(self.dram_write),
            sram_read: v(self.sram_read),
            sram_write: v(self.sram_write),
        }
    }

    /// The counters buffer a counting variant binds last. The shaders add into it: zero it
    /// before a run.
    pub fn requirement() -> BufferReq {
        BufferReq::read_write("counters", Self::SIZE)
    }
}

/// The work-counting variant of a dense kernel: buffers as the kernel's, then a
/// [`WorkCounters`] buffer (zeroed by the caller) that the run adds its counts into.
#[derive(Clone, Debug)]
pub struct Counting<K>(pub K);

/// Preparation of a kernel's normal (`count == false`) or counting variant, sharing one path.
pub(crate) trait PrepareVariant {
    fn prepare_variant(
        &self,
        gpu: &Gpu,
        buffers: &[TensorRef<'_>],
        reqs: &[BufferReq],
        count: bool,
    ) -> Result<Prepared>;
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
                self.0.prepare_variant(gpu, buffers, reqs, true)
            }
        }
    )*};
}

counting!(Gemv, Gemm, Attention);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_match_the_shader_array_and_carry_into_hi() {
        assert_eq!(WorkCounters::SIZE, 16 * 8);
        let c = WorkCounters { f32_add: [5, 1], sram_write: [u32::MAX, 2], ..WorkCounters::default() };
        let w = c.to_work();
        assert_eq!(w.f32_add, (1 << 32) + 5);
        assert_eq!(w.sram_write, (3 << 32) - 1);
        assert_eq!(Work { f32_add: 0, sram_write: 0, ..w }, Work::default());
    }
}
