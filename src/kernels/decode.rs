//! Samples to 8-bit RGBA on the GPU (decode_rgba8.wgsl): the output stage of a generation whose
//! pictures stay on the device ([`crate::Generator::generate_into`]). Images are tiled in a grid
//! of `columns`; the output is packed words with a row pitch (a buffer the host copies into a
//! texture, [`DecodeRgba8`] as a [`Kernel`]), or a write-only `rgba8unorm` storage texture
//! ([`DecodeRgba8::prepare_texture`]). Its twin is [`crate::cpu::decode`], which the CPU
//! [`crate::generator::PixelDecoder`] uses: both give the same bytes.

use crate::error::{Error, Result};
use crate::gpu::{Capabilities, Gpu, PipelineKey};
use crate::kernel::{BufferReq, DispatchSpec, Kernel, Prepared, TensorRef, Work, build, check_buffers, grid_1d};
use crate::kernels::work_count::{COUNT_WORK, counters_binding, counting, own};
use crate::shaders::{self, Variant};

const WG: u32 = 256;

/// Bytes per row of a buffer-to-texture copy must be a multiple of this (wgpu's
/// `COPY_BYTES_PER_ROW_ALIGNMENT`).
pub const ROW_ALIGNMENT: u32 = wgpu::COPY_BYTES_PER_ROW_ALIGNMENT;

/// Parameter block of decode_rgba8.wgsl. Keep in sync with `DecodeParams` there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DecodeParams {
    /// Images.
    pub images: u32,
    /// Channels per image (1 to 4).
    pub channels: u32,
    /// Height of an image.
    pub height: u32,
    /// Width of an image.
    pub width: u32,
    /// Images per row of the grid.
    pub columns: u32,
    /// Words per output row (buffer output).
    pub pitch: u32,
    /// Padding.
    pub _pad: [u32; 2],
}

/// Samples (images, C, H, W) f32 in [-1, 1] to RGBA8 pixels tiled `columns` images wide.
/// Buffers: `x` (the samples), `out` (rows of [`DecodeRgba8::pitch`] words, red in the low byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DecodeRgba8 {
    /// Images.
    pub images: u32,
    /// Channels (1 grey, 2 grey + alpha, 3 RGB, 4 RGBA).
    pub channels: u32,
    /// Image height.
    pub height: u32,
    /// Image width.
    pub width: u32,
    /// Images per grid row (the grid has `ceil(images / columns)` rows).
    pub columns: u32,
}

impl DecodeRgba8 {
    /// Pixels of the whole grid, (width, height).
    pub fn grid_size(&self) -> (u32, u32) {
        let rows = self.images.div_ceil(self.columns.max(1));
        (self.columns.min(self.images).max(1) * self.width, rows * self.height)
    }

    /// Words per output row: the grid's width, padded so a row is a whole number of
    /// [`ROW_ALIGNMENT`] bytes (what a buffer-to-texture copy needs).
    pub fn pitch(&self) -> u32 {
        self.grid_size().0.next_multiple_of(ROW_ALIGNMENT / 4)
    }

    /// The parameter block it binds (`pitch` as [`DecodeRgba8::pitch`]).
    pub fn params(&self) -> DecodeParams {
        DecodeParams {
            images: self.images,
            channels: self.channels,
            height: self.height,
            width: self.width,
            columns: self.columns,
            pitch: self.pitch(),
            _pad: [0; 2],
        }
    }

    fn pixels(&self) -> u64 {
        u64::from(self.images) * u64::from(self.height) * u64::from(self.width)
    }

    fn check(&self) -> Result<()> {
        let name = "decode_rgba8";
        if !(1..=4).contains(&self.channels) {
            return Err(Error::Unsupported {
                kernel: name,
                needs: "1 to 4 channels (plug a Decoder in for latent models)",
            });
        }
        if self.images == 0 || self.height == 0 || self.width == 0 || self.columns == 0 {
            return Err(Error::Shape { kernel: name, message: format!("empty image grid {self:?}") });
        }
        let (w, h) = self.grid_size();
        if u64::from(self.pitch()) * u64::from(h) * 4 > u64::from(u32::MAX) || w == 0 {
            return Err(Error::Shape { kernel: name, message: format!("image grid {w} x {h} past u32 indexing") });
        }
        Ok(())
    }

    fn key(&self, texture: bool, count: bool) -> PipelineKey {
        let defines = texture.then_some("TEXTURE").into_iter().chain(count.then_some(COUNT_WORK));
        PipelineKey::new(Variant::new(&shaders::DECODE_RGBA8, defines), &[("WG", f64::from(WG))])
    }

    fn grid(&self, caps: &Capabilities) -> [u32; 3] {
        grid_1d(u32::try_from(self.pixels().div_ceil(u64::from(WG))).unwrap_or(u32::MAX), caps)
    }

    /// Prepares the texture form: `x` decoded straight into `view`, a 2D view of an
    /// `Rgba8Unorm` texture with `STORAGE_BINDING` at least [`DecodeRgba8::grid_size`] large
    /// (the caller checks the texture: the view does not say).
    pub fn prepare_texture(&self, gpu: &Gpu, x: TensorRef<'_>, view: &wgpu::TextureView) -> Result<Prepared> {
        let caps = gpu.capabilities();
        let reqs = self.requirements(caps)?;
        check_buffers(self.name(), caps, &reqs[..1], &[x])?;
        let mut spec = DispatchSpec::sequential(self.params(), vec![(x, reqs[0].size)], self.grid(caps));
        spec.views.push((2, view));
        let mut work = self.work(caps)?;
        // The texture form converts each byte back to a float for the store instead of packing.
        work.bit_ops -= 6 * self.pixels();
        work.f32_mul += 4 * self.pixels();
        let mut prepared = build(gpu, self.name(), &self.key(true, false), vec![spec], work)?;
        prepared.set_footprint(crate::kernel::Footprint::of(&[
            reqs[0].clone(),
            BufferReq::output("texture", self.pixels() * 4),
        ]));
        Ok(prepared)
    }
}

impl Kernel for DecodeRgba8 {
    fn name(&self) -> &'static str {
        "decode_rgba8"
    }

    fn requirements(&self, _caps: &Capabilities) -> Result<Vec<BufferReq>> {
        self.check()?;
        let values = self.pixels() * u64::from(self.channels);
        let rows = u64::from(self.grid_size().1);
        Ok(vec![BufferReq::input("x", values * 4), BufferReq::output("out", rows * u64::from(self.pitch()) * 4)])
    }

    fn work(&self, _caps: &Capabilities) -> Result<Work> {
        let (n, values) = (self.pixels(), self.pixels() * u64::from(self.channels));
        // Per value: an add, a multiply, the +1 and the shift; per pixel six shifts and ors.
        Ok(Work {
            f32_add: values,
            f32_mul: values,
            i32_add: values,
            bit_ops: values + 6 * n,
            dram_read: values * 4,
            dram_write: n * 4,
            ..Work::default()
        })
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
        let caps = gpu.capabilities();
        let count = counting(reqs);
        let (mine, my_reqs) = own(buffers, reqs);
        let mut spec = DispatchSpec::sequential(
            self.params(),
            mine.iter().zip(my_reqs).map(|(b, r)| (*b, r.size)).collect(),
            self.grid(caps),
        );
        spec.storage.extend(counters_binding(buffers, count));
        build(gpu, self.name(), &self.key(false, count), vec![spec], self.work(caps)?)
    }
}
