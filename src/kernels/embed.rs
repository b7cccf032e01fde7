//! Embeddings with the exact conventions of the original DiT: patchify / unpatchify, the
//! sinusoidal timestep embedding, the class-embedding lookup, and the fixed 2D sin-cos position
//! embedding (computed once on the host, in f64 like DiT's numpy code).

use crate::error::{Error, Result};
use crate::gpu::{Capabilities, Gpu, PipelineKey};
use crate::kernel::{BufferReq, DispatchSpec, Kernel, Prepared, TensorRef, Work, build, grid_1d};
use crate::kernels::Elem;
use crate::kernels::work_count::{COUNT_WORK, counters_binding, counting, own};
use crate::shaders::{self, Variant};

const WG: u32 = 256;

/// Image geometry of patchify / unpatchify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PatchGeometry {
    /// Images.
    pub images: u32,
    /// Image channels.
    pub channels: u32,
    /// Height in pixels (a multiple of `patch`).
    pub height: u32,
    /// Width in pixels (a multiple of `patch`).
    pub width: u32,
    /// Patch size p.
    pub patch: u32,
}

impl PatchGeometry {
    /// Tokens per image.
    pub fn tokens(&self) -> u32 {
        (self.height / self.patch.max(1)) * (self.width / self.patch.max(1))
    }

    fn pixels(&self) -> u64 {
        u64::from(self.images) * u64::from(self.channels) * u64::from(self.height) * u64::from(self.width)
    }

    fn check(&self, kernel: &'static str) -> Result<()> {
        let ok = self.images > 0
            && self.channels > 0
            && self.patch > 0
            && self.height > 0
            && self.width > 0
            && self.height.is_multiple_of(self.patch)
            && self.width.is_multiple_of(self.patch);
        if !ok {
            return Err(Error::Shape { kernel, message: format!("invalid patch geometry {self:?}") });
        }
        Ok(())
    }
}

/// Parameter block of patchify.wgsl and unpatchify.wgsl. Keep in sync with
/// shaders/shared/patch_params.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PatchParams {
    /// Images.
    pub images: u32,
    /// Image channels.
    pub channels: u32,
    /// Height.
    pub height: u32,
    /// Width.
    pub width: u32,
    /// Patch size.
    pub patch_size: u32,
    /// Channels per patch position in the tokens (2C for learn_sigma outputs; C for patchify).
    pub token_channels: u32,
    /// Padding.
    pub _pad: [u32; 2],
}

impl PatchGeometry {
    /// One invocation per pixel: the shared dispatch of patchify and unpatchify.
    #[expect(clippy::too_many_arguments, reason = "private helper shared by patchify and unpatchify")]
    fn prepare(
        &self,
        gpu: &Gpu,
        kernel: &dyn Kernel,
        shader: &'static shaders::Shader,
        elem: Elem,
        token_channels: u32,
        buffers: &[TensorRef<'_>],
        reqs: &[BufferReq],
    ) -> Result<Prepared> {
        let count = counting(reqs);
        let defines = elem.define().into_iter().chain(count.then_some(COUNT_WORK));
        let key = PipelineKey::new(Variant::new(shader, defines), &[("WG", f64::from(WG))]);
        let params = PatchParams {
            images: self.images,
            channels: self.channels,
            height: self.height,
            width: self.width,
            patch_size: self.patch,
            token_channels,
            _pad: [0; 2],
        };
        let groups = u32::try_from(self.pixels().div_ceil(u64::from(WG))).unwrap_or(u32::MAX);
        simple(gpu, kernel, key, params, buffers, reqs, grid_1d(groups, gpu.capabilities()))
    }

    /// Reading or writing every pixel once.
    fn work(&self, elem: Elem) -> Work {
        let n = self.pixels();
        // Index arithmetic only (address computation, not priced).
        Work { dram_read: n * elem.size(), dram_write: n * elem.size(), ..Work::default() }
    }
}

fn simple(
    gpu: &Gpu,
    kernel: &dyn Kernel,
    key: PipelineKey,
    params: impl bytemuck::NoUninit,
    buffers: &[TensorRef<'_>],
    reqs: &[BufferReq],
    grid: [u32; 3],
) -> Result<Prepared> {
    let caps = gpu.capabilities();
    // A counting variant's counters (its last requirement) go to binding 15, not in order.
    let (mine, my_reqs) = own(buffers, reqs);
    let mut spec =
        DispatchSpec::sequential(params, mine.iter().zip(my_reqs).map(|(b, r)| (*b, r.size)).collect(), grid);
    spec.storage.extend(counters_binding(buffers, counting(reqs)));
    build(gpu, kernel.name(), &key, vec![spec], kernel.work(caps)?)
}

/// Images (B, C, H, W) to patch tokens (B, T, C p p). Buffers: `image`, `tokens`.
#[derive(Clone, Debug)]
pub struct Patchify {
    /// Geometry.
    pub geometry: PatchGeometry,
    /// Element type.
    pub elem: Elem,
}

impl Kernel for Patchify {
    fn name(&self) -> &'static str {
        "patchify"
    }

    fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>> {
        self.geometry.check(self.name())?;
        self.elem.check(self.name(), caps)?;
        let n = self.geometry.pixels();
        Ok(vec![BufferReq::input("image", self.elem.bytes(n)), BufferReq::output("tokens", self.elem.bytes(n))])
    }

    fn work(&self, _caps: &Capabilities) -> Result<Work> {
        Ok(self.geometry.work(self.elem))
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
        self.geometry.prepare(gpu, self, &shaders::PATCHIFY, self.elem, self.geometry.channels, buffers, reqs)
    }
}

/// Patch tokens (B, T, p p C') to images (B, C, H, W), reading the first C of C' channels.
/// Buffers: `tokens`, `image`.
#[derive(Clone, Debug)]
pub struct Unpatchify {
    /// Geometry (channels = the image's C).
    pub geometry: PatchGeometry,
    /// Channels per patch position in the tokens (C, or 2C for learn_sigma).
    pub token_channels: u32,
    /// Element type.
    pub elem: Elem,
}

impl Kernel for Unpatchify {
    fn name(&self) -> &'static str {
        "unpatchify"
    }

    fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>> {
        self.geometry.check(self.name())?;
        self.elem.check(self.name(), caps)?;
        if self.token_channels < self.geometry.channels {
            return Err(Error::Shape {
                kernel: self.name(),
                message: format!("token channels {} < image channels {}", self.token_channels, self.geometry.channels),
            });
        }
        let g = self.geometry;
        let token_elems =
            u64::from(g.images) * u64::from(g.tokens()) * u64::from(g.patch * g.patch * self.token_channels);
        Ok(vec![
            BufferReq::input("tokens", self.elem.bytes(token_elems)),
            BufferReq::output("image", self.elem.bytes(g.pixels())),
        ])
    }

    fn work(&self, _caps: &Capabilities) -> Result<Work> {
        Ok(self.geometry.work(self.elem))
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
        self.geometry.prepare(gpu, self, &shaders::UNPATCHIFY, self.elem, self.token_channels, buffers, reqs)
    }
}

/// Parameter block of timestep_embed.wgsl. Keep in sync with `TimestepParams` there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TimestepParams {
    /// Images.
    pub images: u32,
    /// Embedding width (256 for DiT).
    pub dim: u32,
    /// Padding.
    pub _pad: u32,
    /// Sampler time to model time (1000 for DiT).
    pub time_scale: f32,
}

/// The frequency table of the timestep embedding, f_i = exp(-ln(max_period) i / (dim / 2)),
/// computed in f64 and rounded once. Upload it once as the `freqs` buffer of [`TimestepEmbed`].
pub fn timestep_freqs(dim: u32, max_period: f32) -> Vec<f32> {
    let half = dim / 2;
    (0..half).map(|i| (-(f64::from(max_period)).ln() * f64::from(i) / f64::from(half)).exp() as f32).collect()
}

/// Sinusoidal timestep embedding, cos before sin. Buffers: `t` (B f32, sampler time), `freqs`
/// (dim / 2 f32, from [`timestep_freqs`]), `emb` (B x dim).
#[derive(Clone, Debug)]
pub struct TimestepEmbed {
    /// Images.
    pub images: u32,
    /// Width (256 for DiT).
    pub dim: u32,
    /// Max period (10000 for DiT): checked here, used by [`timestep_freqs`].
    pub max_period: f32,
    /// Model time per unit of sampler time (1000 for DiT's rectified flow: t in [0, 1]).
    pub time_scale: f32,
    /// Output element type.
    pub elem: Elem,
}

impl Kernel for TimestepEmbed {
    fn name(&self) -> &'static str {
        "timestep_embed"
    }

    fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>> {
        if self.images == 0 || self.dim == 0 || self.max_period.partial_cmp(&1.0) != Some(std::cmp::Ordering::Greater) {
            return Err(Error::Shape {
                kernel: self.name(),
                message: format!("{} images x {} dims, max period {}", self.images, self.dim, self.max_period),
            });
        }
        self.elem.check(self.name(), caps)?;
        let (b, d) = (u64::from(self.images), u64::from(self.dim));
        Ok(vec![
            BufferReq::input("t", b * 4),
            BufferReq::input("freqs", (d / 2).max(1) * 4),
            BufferReq::output("emb", self.elem.bytes(b * d)),
        ])
    }

    fn work(&self, _caps: &Capabilities) -> Result<Work> {
        let n = u64::from(self.images) * u64::from(self.dim);
        // As the COUNT_WORK variant counts (timestep_embed.wgsl): per value of the 2 (dim / 2)
        // sinusoids (an odd dim's last is 0) the time and frequency reads, two products, the 2 pi
        // reduction (a product, a round, 3 fma) and cos_sin (a product, a round, 2 fma, 2 products,
        // 8 fma of the polynomials).
        let values = u64::from(self.images) * u64::from(self.dim / 2 * 2);
        Ok(Work {
            f32_mul: values * 19,
            f32_add: values * 15,
            dram_read: values * 8,
            dram_write: n * self.elem.size(),
            ..Work::default()
        })
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
        let defines = self.elem.define().into_iter().chain(counting(reqs).then_some(COUNT_WORK));
        let key = PipelineKey::new(Variant::new(&shaders::TIMESTEP_EMBED, defines), &[("WG", 64.0)]);
        let params = TimestepParams { images: self.images, dim: self.dim, _pad: 0, time_scale: self.time_scale };
        simple(gpu, self, key, params, buffers, reqs, [self.dim.div_ceil(64), self.images, 1])
    }
}

/// Parameter block of class_embed.wgsl. Keep in sync with `ClassEmbedParams` there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ClassEmbedParams {
    /// Images.
    pub images: u32,
    /// Embedding width.
    pub dim: u32,
    /// Table rows (classes + 1).
    pub rows: u32,
    /// Padding.
    pub _pad: u32,
}

/// Class-embedding lookup; the last table row is the null class. Buffers: `labels` (B u32),
/// `table` ((classes + 1) x dim), `emb` (B x dim).
#[derive(Clone, Debug)]
pub struct ClassEmbed {
    /// Images.
    pub images: u32,
    /// Width.
    pub dim: u32,
    /// Classes (the null class is `classes`).
    pub classes: u32,
    /// Element type.
    pub elem: Elem,
}

impl Kernel for ClassEmbed {
    fn name(&self) -> &'static str {
        "class_embed"
    }

    fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>> {
        if self.images == 0 || self.dim == 0 {
            return Err(Error::Shape { kernel: self.name(), message: "zero images or width".into() });
        }
        self.elem.check(self.name(), caps)?;
        let (b, d) = (u64::from(self.images), u64::from(self.dim));
        Ok(vec![
            BufferReq::input("labels", b * 4),
            BufferReq::input("table", self.elem.bytes((u64::from(self.classes) + 1) * d)),
            BufferReq::output("emb", self.elem.bytes(b * d)),
        ])
    }

    fn work(&self, _caps: &Capabilities) -> Result<Work> {
        let n = u64::from(self.images) * u64::from(self.dim);
        // Every output reads its image's label and one table value.
        Ok(Work { dram_read: n * (self.elem.size() + 4), dram_write: n * self.elem.size(), ..Work::default() })
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
        let defines = self.elem.define().into_iter().chain(counting(reqs).then_some(COUNT_WORK));
        let key = PipelineKey::new(Variant::new(&shaders::CLASS_EMBED, defines), &[("WG", 64.0)]);
        let params = ClassEmbedParams { images: self.images, dim: self.dim, rows: self.classes + 1, _pad: 0 };
        simple(gpu, self, key, params, buffers, reqs, [self.dim.div_ceil(64), self.images, 1])
    }
}

/// DiT's fixed 2D sin-cos position embedding for a `grid_h x grid_w` token grid, (T, dim) row-major,
/// computed in f64 as DiT's numpy code does, then rounded to f32. The first half of the channels
/// encodes the column (w) index, the second half the row; each half is [sin, cos] of
/// pos * 10000^(-i / (dim / 4)).
pub fn pos_embed_2d(dim: u32, grid_h: u32, grid_w: u32) -> Result<Vec<f32>> {
    if dim == 0 || !dim.is_multiple_of(4) {
        return Err(Error::Shape {
            kernel: "pos_embed_2d",
            message: format!("dim {dim} is not a positive multiple of 4"),
        });
    }
    let quarter = (dim / 4) as usize;
    let mut out = Vec::with_capacity((grid_h * grid_w * dim) as usize);
    for h in 0..grid_h {
        for w in 0..grid_w {
            for pos in [f64::from(w), f64::from(h)] {
                let args: Vec<f64> = (0..quarter).map(|i| pos / 10000f64.powf(i as f64 / quarter as f64)).collect();
                out.extend(args.iter().map(|a| a.sin() as f32));
                out.extend(args.iter().map(|a| a.cos() as f32));
            }
        }
    }
    Ok(out)
}
