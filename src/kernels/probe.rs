//! The FMA-throughput probe: the compute roof the benchmarks compare against. (The copy probe
//! needs no shader: it is a buffer-to-buffer copy, timed in `crate::bench`.)

use crate::error::{Error, Result};
use crate::gpu::{Capabilities, Gpu, PipelineKey};
use crate::kernel::{BufferReq, DispatchSpec, Kernel, Prepared, TensorRef, Work, build, grid_1d};
use crate::kernels::Elem;
use crate::shaders::{self, Variant};

/// FMA probe: `invocations` (a multiple of 256) each run 8 vec4 FMA chains for `iters` steps.
/// Buffer: `out`, one f32 per invocation.
#[derive(Clone, Debug)]
pub struct FmaProbe {
    /// Invocations (rounded up to 256).
    pub invocations: u32,
    /// Steps per chain.
    pub iters: u32,
    /// Element type of the arithmetic.
    pub elem: Elem,
}

/// Multiply-adds per invocation per step: 8 chains of vec4.
pub const FMA_PER_STEP: u64 = 32;

impl FmaProbe {
    fn groups(&self) -> u32 {
        self.invocations.div_ceil(256)
    }
}

/// Parameter block of shaders/fma_probe.wgsl. Keep in sync with `ProbeParams` there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ProbeParams {
    /// Multiplier of every chain step.
    pub mul: f32,
    /// Addend of every chain step.
    pub add: f32,
    /// Padding.
    pub _pad: [u32; 2],
}

impl Kernel for FmaProbe {
    fn name(&self) -> &'static str {
        "fma_probe"
    }

    fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>> {
        if self.invocations == 0 || self.iters == 0 {
            return Err(Error::Shape { kernel: self.name(), message: "zero invocations or iterations".into() });
        }
        self.elem.check(self.name(), caps)?;
        Ok(vec![BufferReq::output("out", u64::from(self.groups()) * 256 * 4)])
    }

    fn work(&self, _caps: &Capabilities) -> Result<Work> {
        let inv = u64::from(self.groups()) * 256;
        let fmas = inv * u64::from(self.iters) * FMA_PER_STEP;
        let arith = match self.elem {
            Elem::F32 => Work { f32_mul: fmas, f32_add: fmas, ..Work::default() },
            Elem::F16 => Work { f16_mul: fmas, f16_add: fmas, ..Work::default() },
        };
        Ok(arith + Work { dram_write: inv * 4, ..Work::default() })
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
        let caps = gpu.capabilities();
        let key = PipelineKey::new(
            Variant::new(&shaders::FMA_PROBE, self.elem.define()),
            &[("ITERS", f64::from(self.iters))],
        );
        let spec = DispatchSpec::sequential(
            ProbeParams { mul: 0.999, add: 0.001, _pad: [0; 2] },
            vec![(buffers[0], reqs[0].size)],
            grid_1d(self.groups(), caps),
        );
        build(gpu, self.name(), &key, vec![spec], self.work(caps)?)
    }
}
