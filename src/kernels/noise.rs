//! Counter-based noise on the GPU (noise.wgsl): Philox4x32-10 keyed by (seed, image, element),
//! raw u32 or standard normals. The same numbers on every backend and on the CPU (`crate::cpu::noise`).

use crate::error::{Error, Result};
use crate::gpu::{Capabilities, Gpu, PipelineKey};
use crate::kernel::{BufferReq, DispatchSpec, Kernel, Prepared, TensorRef, Work, build};
use crate::shaders::{self, Variant};

/// Parameter block of noise.wgsl. Keep in sync with `NoiseParams` there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct NoiseParams {
    /// Low half of the seed.
    pub seed_lo: u32,
    /// High half of the seed.
    pub seed_hi: u32,
    /// Outputs per image.
    pub count: u32,
    /// Images in this dispatch.
    pub images: u32,
    /// Counter of the first image.
    pub first_image: u32,
    /// Stream.
    pub stream: u32,
    /// Padding.
    pub _pad: [u32; 2],
}

/// What the noise kernel writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoiseKind {
    /// The raw Philox u32.
    Bits,
    /// Standard normals (f32), Box–Muller on pairs.
    Normal,
}

/// Noise for `images` images of `count` elements each, into one buffer (`out`: images x count
/// u32 or f32).
#[derive(Clone, Debug)]
pub struct Noise {
    /// Seed.
    pub seed: u64,
    /// Stream (independent sequences from one seed).
    pub stream: u32,
    /// Counter of the first image (image indices are part of the key: image i of a batch gets
    /// the same noise as image i generated alone).
    pub first_image: u32,
    /// Images.
    pub images: u32,
    /// Elements per image.
    pub count: u32,
    /// Output kind.
    pub kind: NoiseKind,
}

const WG: u32 = 64;

impl Kernel for Noise {
    fn name(&self) -> &'static str {
        "noise"
    }

    fn requirements(&self, _caps: &Capabilities) -> Result<Vec<BufferReq>> {
        if self.images == 0 || self.count == 0 {
            return Err(Error::Shape { kernel: self.name(), message: "zero images or elements".into() });
        }
        Ok(vec![BufferReq::output("out", u64::from(self.images) * u64::from(self.count) * 4)])
    }

    fn work(&self, _caps: &Capabilities) -> Result<Work> {
        let blocks = u64::from(self.images) * u64::from(self.count.div_ceil(4));
        // Per Philox round: two 32 x 32 -> 64-bit products from four 16-bit multiplies each (8
        // i32 multiplies), ~14 adds and 14 bitwise ops; 10 rounds per block of 4.
        let mut w = Work { i32_mul: blocks * 80, i32_add: blocks * 160, bit_ops: blocks * 140, ..Work::default() };
        w.dram_write = u64::from(self.images) * u64::from(self.count) * 4;
        if self.kind == NoiseKind::Normal {
            // Per pair: 2 conversions, log, sqrt, cos, sin — about 20 f32 multiplies and adds.
            w.f32_mul += blocks * 2 * 20;
            w.f32_add += blocks * 2 * 12;
        }
        Ok(w)
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
        let caps = gpu.capabilities();
        if self.images > caps.max_workgroups_per_dim {
            return Err(Error::Shape {
                kernel: self.name(),
                message: format!("{} images in one dispatch", self.images),
            });
        }
        let blocks = self.count.div_ceil(4);
        let groups = blocks.div_ceil(WG);
        let max = caps.max_workgroups_per_dim.max(1);
        let gy = groups.div_ceil(max);
        let key = PipelineKey::new(
            Variant::new(&shaders::NOISE, (self.kind == NoiseKind::Normal).then_some("NORMAL")),
            &[("WG", f64::from(WG))],
        );
        let params = NoiseParams {
            seed_lo: self.seed as u32,
            seed_hi: (self.seed >> 32) as u32,
            count: self.count,
            images: self.images,
            first_image: self.first_image,
            stream: self.stream,
            _pad: [0; 2],
        };
        let spec =
            DispatchSpec::sequential(params, vec![(buffers[0], reqs[0].size)], [groups.div_ceil(gy), gy, self.images]);
        build(gpu, self.name(), &key, vec![spec], self.work(caps)?)
    }
}
