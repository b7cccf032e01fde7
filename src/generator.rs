//! The API an application calls: [`Generator::new`] with a GPU and a model, then
//! [`Generator::generate`] (async) or [`Generator::generate_blocking`] per request.
//!
//! A generator keeps one prepared executor per request shape (images, steps, sampler, guidance,
//! img2img, preview) and reuses it; concurrent requests each take an executor of their own — a
//! new one while fewer than [`GeneratorOptions::max_pools`] exist for that shape, else they wait —
//! so no two runs ever share activation memory. Weights are uploaded once and shared by all
//! executors. Initial noise is Philox4x32-10 per image seed (the GPU noise kernel's numbers, made by
//! its CPU twin and uploaded), so an image depends only on its own seed and label, not on the
//! batch it was generated in.
//!
//! ```no_run
//! use std::ops::ControlFlow;
//! use std::path::Path;
//! use milliwatt::model::{DitConfig, DitWeights};
//! use milliwatt::{Generator, GeneratorOptions, Gpu, Options, Request, Seeds};
//!
//! # fn main() -> milliwatt::Result<()> {
//! let dir = Path::new("tests/fixtures/dit-golden/dit-tiny-sigma");
//! let config = DitConfig::from_file(&dir.join("config.json"))?;          // quantization policy inside
//! let model = DitWeights::load(&dir.join("model.safetensors"), &config)?; // quantized on load
//! let gpu = Gpu::new_blocking(&Options::default())?;                     // or Gpu::from_device(app's device)
//! let generator = Generator::new(&gpu, model, GeneratorOptions::default())?;
//! let request = Request { seeds: Seeds::Base(42), steps: 8, ..Request::new(vec![3, 7]) };
//! let out = generator.generate_blocking(&request, |p| {
//!     println!("step {} of {}", p.step + 1, p.steps);
//!     ControlFlow::Continue(())                                          // Break(()) cancels
//! })?;
//! out.images[0].save("image.png").ok();
//! println!("{}\nvs dense f32: {:.3}", out.ledger, out.energy_ratio);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::graph::{ExecOptions, ExecPlan, Executor, SharedWeights, StepEvent};
use crate::kernel::{Kernel, Prepared as PreparedKernel};
use crate::kernels::{DecodeRgba8, MlpBlock, ScheduleEntry, ddim_schedule, rectified_flow_schedule};
use crate::ledger::Ledger;
use crate::model::{
    AttentionKind, DitConfig, DitWeights, GraphOptions, ModulationPlan, Prediction, QuantPolicy, SampleGraph,
    SampleSpec, SamplerKind,
};
use crate::profile::Profile;

/// How a [`Generator`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneratorOptions {
    /// Time every dispatch and return the profile (slower: one pass per dispatch).
    pub profile: bool,
    /// Fold element-wise ops into epilogues (the model is written fused already; this also
    /// catches what it left).
    pub fuse: bool,
    /// Executors (activation pools) per request shape; more concurrent requests wait.
    pub max_pools: usize,
    /// Request shapes (image count, steps, sampler, guidance, img2img, previews) whose idle
    /// executors are kept; the least recently used shape's are dropped past it, so an app that
    /// mixes many shapes does not grow its GPU memory without limit.
    pub max_shapes: usize,
    /// GPU memory this generator may hold, bytes: its weights and every executor's buffers. A
    /// request that needs a new executor first drops idle ones of other shapes (least recently
    /// used) to make room, and is refused ([`Error::Request`] naming the limit) before anything
    /// is allocated if that is not enough. `None`: no limit beyond the device's.
    pub memory_limit: Option<u64>,
    /// Where every request computes its adaLN modulation; `None` (the default): per request,
    /// the plan that moves fewer bytes ([`ModulationPlan::for_spec`]). A forced
    /// [`ModulationPlan::EveryStep`] refuses Heun requests ([`Error::Unsupported`]).
    pub modulation: Option<ModulationPlan>,
    /// Run each block's MLP branch as one dispatch ([`crate::kernels::MlpBlock`]: norm, fc1,
    /// GELU, fc2, gate and residual with a tile of tokens on chip) where the model's weights
    /// (ternary MLP) and the device allow; else, or with `false`, as its chain of kernels.
    pub fused_mlp: bool,
    /// Run attention with int8 products ([`crate::kernels::Attention::int8`], SageAttention-style)
    /// where the device offers packed int8 dot products; else, or with `false` (the default), in
    /// f32. Changes the images by int8 rounding (the quality table has both).
    pub int8_attention: bool,
    /// Have attention write its output as int8, a scale per (token, head), straight into the
    /// projection GEMM ([`crate::kernels::Attention::emit_i8`], [`crate::kernels::QGemm::x_group`])
    /// where the model allows (int8-input projection, head dimension 16, 32 or a multiple of 64); else, or
    /// with `false` (the default), a float output quantized per token by its own kernel. One
    /// kernel and a float round trip fewer per block; finer scales, so the images change by int8
    /// rounding (the quality table has both).
    pub int8_attention_output: bool,
    /// Have the qkv GEMM write Q, K and V as int8, a scale per (token, part, head), for attention
    /// to read ([`crate::kernels::QGemm::y_group`], [`crate::kernels::Attention::qkv_i8`]) where
    /// the model allows (int8-input qkv linear, head dimension 16, 32 or 64); else, or with
    /// `false` (the default), as floats. Half the bytes of f16 between the two kernels; the
    /// images change by int8 rounding (the quality table has both).
    pub int8_qkv: bool,
    /// Run the tiled GEMMs of 2:4 weights skipping the zero half of their multiply-adds
    /// ([`crate::kernels::QGemm::skip_zeros`]); the default `false` runs dense tiles with
    /// `dot4I8Packed`, faster where that is one instruction. The same images either way.
    pub skip_zeros: bool,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        Self {
            profile: false,
            fuse: true,
            max_pools: 2,
            max_shapes: 8,
            memory_limit: None,
            modulation: None,
            fused_mlp: true,
            int8_attention: false,
            int8_attention_output: false,
            int8_qkv: false,
            skip_zeros: false,
        }
    }
}

/// The seeds of a request's images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seeds {
    /// Image `i` gets seed `base + i`.
    Base(u64),
    /// One seed per image.
    List(Vec<u64>),
}

/// An init image for img2img: samples in the model's value range ([-1, 1] for pixels),
/// [images, C, H, W], and how much noise to add (0 returns it unchanged, 1 ignores it).
#[derive(Clone, Debug, PartialEq)]
pub struct InitImage {
    /// Values, [images, C, H, W].
    pub pixels: Vec<f32>,
    /// Strength in [0, 1]: the time the schedule starts from.
    pub strength: f32,
}

/// One generation request.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Class label of each image (`num_classes` is the unconditional class).
    pub labels: Vec<u32>,
    /// Seeds.
    pub seeds: Seeds,
    /// Sampler steps.
    pub steps: u32,
    /// Integrator; `None` picks from the model's prediction (Euler for velocity, DDIM for ε).
    pub sampler: Option<SamplerKind>,
    /// Classifier-free guidance scale; `None` for none (no batch doubling).
    pub guidance: Option<f32>,
    /// Explicit initial noise [images, C, H, W] instead of the seeds'.
    pub noise: Option<Vec<f32>>,
    /// img2img.
    pub init: Option<InitImage>,
    /// Copy the sample back after every step for [`Progress::preview`].
    pub preview: bool,
}

impl Request {
    /// Images of `labels`, seed 0 + index, 50 steps, the model's sampler, guidance 4.
    pub fn new(labels: Vec<u32>) -> Self {
        Self {
            labels,
            seeds: Seeds::Base(0),
            steps: 50,
            sampler: None,
            guidance: Some(4.0),
            noise: None,
            init: None,
            preview: false,
        }
    }
}

/// What the progress callback sees after each step.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The step that finished (0-based).
    pub step: u32,
    /// Steps in the request.
    pub steps: u32,
    /// The sample after this step [images, C, H, W], when the request asked for previews.
    pub preview: Option<Vec<f32>>,
    /// Time since the request started.
    pub elapsed: Duration,
}

/// A caller's texture a generation draws into ([`Generator::generate_into`]): images tiled
/// `columns` wide from the top-left corner, each pixel one texel. The texture is `Rgba8Unorm`, 2D,
/// single-sampled, with `STORAGE_BINDING` (written by the decoder directly) or `COPY_DST` (decoded
/// into a buffer and copied), and at least [`TextureTarget::size`] texels large.
#[derive(Clone, Copy, Debug)]
pub struct TextureTarget<'a> {
    /// The texture (of the generator's device).
    pub texture: &'a wgpu::Texture,
    /// Images per row of the grid; `None` puts every image in one row.
    pub columns: Option<u32>,
}

impl<'a> TextureTarget<'a> {
    /// Every image in one row.
    pub fn row(texture: &'a wgpu::Texture) -> Self {
        Self { texture, columns: None }
    }

    /// Texels the grid of `images` images of `width` x `height` needs, (width, height).
    pub fn size(&self, images: u32, width: u32, height: u32) -> (u32, u32) {
        self.decoder(images, 1, width, height).grid_size()
    }

    fn decoder(&self, images: u32, channels: u32, width: u32, height: u32) -> DecodeRgba8 {
        DecodeRgba8 { images, channels, height, width, columns: self.columns.unwrap_or(images).clamp(1, images.max(1)) }
    }
}

/// Where the time went.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Timings {
    /// Preparing an executor (zero when one was reused) and uploading weights.
    pub prepare: Duration,
    /// Sampling, from the first submission to the sample on the host.
    pub sampling: Duration,
    /// `sampling / steps`.
    pub per_step: Duration,
    /// The whole request.
    pub total: Duration,
}

/// A finished request.
#[derive(Clone, Debug)]
pub struct Generation {
    /// The samples [images, C, H, W], in the model's value range.
    pub samples: Vec<f32>,
    /// Their shape.
    pub shape: [u32; 4],
    /// The samples as images (pixel-space models; see [`Decoder`]).
    pub images: Vec<image::DynamicImage>,
    /// Timings.
    pub timings: Timings,
    /// GPU profile (with [`GeneratorOptions::profile`]).
    pub profile: Option<Profile>,
    /// Energy ledger of the dispatches this request made.
    pub ledger: Ledger,
    /// Ledger of the conventional recipe for the same images: the same model with dense f32
    /// weights and dense attention, 50 steps, guided, one image a request as the recipe runs
    /// (counted from its graph, not run).
    pub baseline: Ledger,
    /// `ledger / baseline`.
    pub energy_ratio: f64,
    /// The buffers of the executor that ran it (activations; weights shared with other
    /// executors are counted too).
    pub memory: crate::graph::MemoryReport,
}

/// Turns samples into images. The default, [`PixelDecoder`], maps pixel-space samples; a latent
/// model plugs its decoder in here.
pub trait Decoder: Send + Sync + std::fmt::Debug {
    /// Images of `samples` [images, C, H, W].
    fn decode(&self, samples: &[f32], shape: [u32; 4]) -> Result<Vec<image::DynamicImage>>;
}

/// Pixel space: values in [-1, 1] to 8-bit, floor(x + 0.5) of x = (v + 1) · 127.5 (the GPU
/// decoder's rounding, [`crate::cpu::decode::to_byte`]); 1 channel is grey, 2 grey + alpha, 3 RGB,
/// 4 RGBA.
#[derive(Clone, Copy, Debug, Default)]
pub struct PixelDecoder;

impl Decoder for PixelDecoder {
    fn decode(&self, samples: &[f32], shape: [u32; 4]) -> Result<Vec<image::DynamicImage>> {
        let [n, c, h, w] = shape.map(|v| v as usize);
        let to8 = crate::cpu::decode::to_byte;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let img = &samples[i * c * h * w..(i + 1) * c * h * w];
            let px: Vec<u8> = (0..h * w).flat_map(|p| (0..c).map(move |ch| to8(img[ch * h * w + p]))).collect();
            let (w32, h32) = (w as u32, h as u32);
            let bad = || Error::Graph { message: "decoded image buffer size".into() };
            out.push(match c {
                1 => image::DynamicImage::ImageLuma8(image::GrayImage::from_raw(w32, h32, px).ok_or_else(bad)?),
                2 => image::DynamicImage::ImageLumaA8(image::GrayAlphaImage::from_raw(w32, h32, px).ok_or_else(bad)?),
                3 => image::DynamicImage::ImageRgb8(image::RgbImage::from_raw(w32, h32, px).ok_or_else(bad)?),
                4 => image::DynamicImage::ImageRgba8(image::RgbaImage::from_raw(w32, h32, px).ok_or_else(bad)?),
                _ => {
                    return Err(Error::Unsupported {
                        kernel: "pixel decoder",
                        needs: "1 to 4 channels (plug a Decoder in for latent models)",
                    });
                }
            });
        }
        Ok(out)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PoolKey {
    images: u32,
    steps: u32,
    sampler: SamplerKind,
    guidance: Option<u32>,
    img2img: bool,
    preview: bool,
}

/// The output stage of [`Generator::generate_into`], recorded after a step.
struct Output {
    kernel: PreparedKernel,
    /// The buffer the decoder writes and its row bytes, width and height, when the texture is
    /// filled by a copy.
    copy: Option<(wgpu::Buffer, u32, u32, u32)>,
    texture: wgpu::Texture,
}

impl Output {
    fn encode(&self, enc: &mut wgpu::CommandEncoder) {
        self.kernel.encode(enc);
        if let Some((buffer, row_bytes, width, height)) = &self.copy {
            enc.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset: 0,
                        bytes_per_row: Some(*row_bytes),
                        rows_per_image: None,
                    },
                },
                self.texture.as_image_copy(),
                wgpu::Extent3d { width: *width, height: *height, depth_or_array_layers: 1 },
            );
        }
    }
}

struct Prepared {
    ex: Executor,
    graph: SampleGraph,
    /// Bytes of the buffers it created (the weights too, for the first one).
    bytes: u64,
}

#[derive(Default)]
struct Pools {
    idle: HashMap<PoolKey, Vec<Prepared>>,
    made: HashMap<PoolKey, usize>,
    /// When each shape was last used (a counter, not a time).
    used: HashMap<PoolKey, u64>,
    clock: u64,
    shared: Option<SharedWeights>,
    /// Bytes of the buffers of every executor alive (and of the weights they share).
    held: u64,
}

impl Pools {
    fn touch(&mut self, key: &PoolKey) {
        self.clock += 1;
        self.used.insert(key.clone(), self.clock);
    }

    /// Drops the idle executors of the least recently used shapes until at most `max` shapes
    /// keep any.
    fn evict(&mut self, max: usize) {
        while self.idle.len() > max && self.evict_oldest(None) {}
    }

    /// Drops the idle executors of the least recently used shape other than `keep`; false when
    /// there are none.
    fn evict_oldest(&mut self, keep: Option<&PoolKey>) -> bool {
        let oldest = self
            .idle
            .keys()
            .filter(|k| Some(*k) != keep)
            .min_by_key(|k| self.used.get(*k).copied().unwrap_or(0))
            .cloned();
        let Some(oldest) = oldest else { return false };
        let dropped = self.idle.remove(&oldest).unwrap_or_default();
        self.held -= dropped.iter().map(|p| p.bytes).sum::<u64>().min(self.held);
        if let Some(made) = self.made.get_mut(&oldest) {
            *made -= dropped.len().min(*made);
            if *made == 0 {
                self.made.remove(&oldest);
                self.used.remove(&oldest);
            }
        }
        true
    }
}

/// A model on a GPU, ready to generate. `Send + Sync`: share it between threads.
pub struct Generator {
    gpu: Gpu,
    weights: DitWeights,
    options: GeneratorOptions,
    decoder: Box<dyn Decoder>,
    pools: Mutex<Pools>,
    returned: Condvar,
    baseline: Mutex<Option<Ledger>>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator").field("config", &self.weights.config).field("options", &self.options).finish()
    }
}

impl Generator {
    /// A generator of `model` on `gpu`. Nothing is prepared until the first request.
    pub fn new(gpu: &Gpu, model: DitWeights, options: GeneratorOptions) -> Result<Self> {
        model.config.validate()?;
        // Every weight (each stream of a packed one) must fit one device buffer: refused here,
        // naming the limit, before anything is allocated.
        let limit = gpu.capabilities().max_buffer_size;
        for name in model.names() {
            let bytes = match model.get(name)? {
                crate::model::WeightData::Float(t) => 4 * t.data.len() as u64,
                crate::model::WeightData::Packed(p) => {
                    4 * [p.data.len(), p.scales.len(), p.aux.len()].into_iter().max().unwrap_or(0) as u64
                }
            };
            if bytes > limit {
                return Err(Error::Request {
                    message: format!(
                        "weight `{name}` needs a buffer of {bytes} bytes, past this device's max_buffer_size of {limit}"
                    ),
                });
            }
        }
        if options.max_pools == 0 || options.max_shapes == 0 {
            return Err(Error::Request {
                message: format!(
                    "max_pools ({}) and max_shapes ({}) must be at least 1",
                    options.max_pools, options.max_shapes
                ),
            });
        }
        Ok(Self {
            gpu: gpu.clone(),
            weights: model,
            options,
            decoder: Box::new(PixelDecoder),
            pools: Mutex::new(Pools::default()),
            returned: Condvar::new(),
            baseline: Mutex::new(None),
        })
    }

    /// The same generator with another decoder.
    pub fn with_decoder(self, decoder: Box<dyn Decoder>) -> Self {
        Self { decoder, ..self }
    }

    /// The model's configuration.
    pub fn config(&self) -> &DitConfig {
        &self.weights.config
    }

    fn spec(&self, r: &Request) -> Result<SampleSpec> {
        let c = &self.weights.config;
        let bad = |message: String| Err(Error::Request { message });
        let Ok(images) = u32::try_from(r.labels.len()) else {
            return bad(format!("{} labels: more images than one request can hold", r.labels.len()));
        };
        if images == 0 || r.steps == 0 {
            return bad(format!("a request needs labels and steps (got {images} labels, {} steps)", r.steps));
        }
        if let Some(&l) = r.labels.iter().find(|&&l| l > c.num_classes) {
            return bad(format!("label {l} is past the null class {}", c.num_classes));
        }
        if let Seeds::List(s) = &r.seeds
            && s.len() != images as usize
        {
            return bad(format!("{} seeds for {images} images", s.len()));
        }
        let n = u64::from(images) * u64::from(c.in_channels) * u64::from(c.input_size).pow(2);
        if let Some(noise) = &r.noise {
            if noise.len() as u64 != n {
                return bad(format!("initial noise has {} values, the request needs {n}", noise.len()));
            }
            if let Some(i) = noise.iter().position(|v| !v.is_finite()) {
                return bad(format!("initial noise value {i} is {}", noise[i]));
            }
        }
        if let Some(init) = &r.init {
            if init.pixels.len() as u64 != n {
                return bad(format!("init image has {} values, the request needs {n}", init.pixels.len()));
            }
            if let Some(i) = init.pixels.iter().position(|v| !v.is_finite()) {
                return bad(format!("init image value {i} is {}", init.pixels[i]));
            }
            if !(0.0..=1.0).contains(&init.strength) {
                return bad(format!("img2img strength {} is not in [0, 1]", init.strength));
            }
        }
        if let Some(g) = r.guidance
            && !g.is_finite()
        {
            return bad(format!("guidance scale {g}"));
        }
        let sampler = r.sampler.unwrap_or(match c.prediction {
            Prediction::Velocity => SamplerKind::Euler,
            Prediction::Epsilon => SamplerKind::Ddim,
        });
        let spec = SampleSpec { images, steps: r.steps, sampler, guidance: r.guidance, img2img: r.init.is_some() };
        self.fits(&spec)?;
        Ok(spec)
    }

    /// Whether the device can hold the request's largest activation in one buffer and one
    /// binding (and the kernels can index it with u32); if not, the request is refused naming the
    /// limit and the largest batch that fits, before anything is built.
    fn fits(&self, spec: &SampleSpec) -> Result<()> {
        let caps = self.gpu.capabilities();
        let (bytes, elements) = SampleGraph::largest_activation_with(&self.weights.config, spec, self.plan(spec));
        let limits = [
            ("max_storage_buffer_binding_size", caps.max_storage_binding, bytes, "bytes"),
            ("max_buffer_size", caps.max_buffer_size, bytes, "bytes"),
            ("u32 indexing limit", u64::from(u32::MAX), elements, "elements"),
        ];
        for (name, limit, need, unit) in limits {
            if need > limit {
                let per_image = need.div_ceil(u64::from(spec.images).max(1));
                return Err(Error::Request {
                    message: format!(
                        "{} images need an activation buffer of {need} {unit}, past the {name} of {limit} \
                         {unit}; split the request into batches of at most {} images",
                        spec.images,
                        limit / per_image.max(1)
                    ),
                });
            }
        }
        Ok(())
    }

    /// Takes an executor for `key`: an idle one, a new one, or (at the limit) the next returned.
    fn acquire(&self, key: &PoolKey, spec: &SampleSpec) -> Result<(Prepared, Duration)> {
        let mut pools = self.pools.lock().expect("pools");
        loop {
            if let Some(p) = pools.idle.get_mut(key).and_then(Vec::pop) {
                pools.touch(key);
                return Ok((p, Duration::ZERO));
            }
            if pools.made.get(key).copied().unwrap_or(0) < self.options.max_pools {
                let shared = pools.shared.clone().unwrap_or_default();
                let graph = self.sample_graph(spec)?;
                let plan = ExecPlan::new(&graph.graph, self.exec_options(&graph, key.preview))?;
                let bytes = plan.bytes(&shared);
                if let Some(limit) = self.options.memory_limit {
                    while pools.held + bytes > limit && pools.evict_oldest(Some(key)) {}
                    if pools.held + bytes > limit {
                        return Err(Error::Request {
                            message: format!(
                                "{} images need {bytes} more bytes of GPU memory, {} are held: past this \
                                 generator's memory_limit of {limit}",
                                spec.images, pools.held
                            ),
                        });
                    }
                }
                pools.held += bytes;
                *pools.made.entry(key.clone()).or_default() += 1;
                drop(pools);
                let t = Instant::now();
                let made = self.prepare(graph, plan, &shared, bytes);
                let mut pools = self.pools.lock().expect("pools");
                match made {
                    Ok(p) => {
                        if pools.shared.is_none() {
                            let mut w = p.ex.weight_buffers();
                            // The schedule and the guidance scales are per request: never shared.
                            w.remove(&p.ex.graph().tensor_desc(p.graph.schedule)?.name);
                            if let Some(t) = p.graph.guidance {
                                w.remove(&p.ex.graph().tensor_desc(t)?.name);
                            }
                            pools.shared = Some(w);
                        }
                        return Ok((p, t.elapsed()));
                    }
                    Err(e) => {
                        *pools.made.get_mut(key).expect("counted") -= 1;
                        pools.held -= bytes.min(pools.held);
                        self.returned.notify_all();
                        return Err(e);
                    }
                }
            }
            pools = self.returned.wait(pools).expect("pools");
        }
    }

    /// How the executors of this generator run `graph`.
    fn exec_options(&self, graph: &SampleGraph, preview: bool) -> ExecOptions {
        ExecOptions {
            fuse: self.options.fuse,
            profile: self.options.profile,
            preview: preview.then_some(graph.x),
            ..ExecOptions::default()
        }
    }

    fn prepare(&self, graph: SampleGraph, plan: ExecPlan, shared: &SharedWeights, bytes: u64) -> Result<Prepared> {
        let ex = Executor::from_plan(&self.gpu, plan, shared)?;
        graph.dit.upload_except(&ex, &self.weights, shared)?;
        Ok(Prepared { ex, graph, bytes })
    }

    /// `e`, or [`Error::DeviceLost`] when the device was lost meanwhile (whatever failed then
    /// failed because of it).
    fn lost_or(&self, e: Error) -> Error {
        match self.gpu.lost() {
            Some(reason) => Error::DeviceLost { reason },
            None => e,
        }
    }

    /// Drops the count of an executor that is not coming back.
    fn forget(&self, key: &PoolKey, p: Prepared) {
        let mut pools = self.pools.lock().expect("pools");
        pools.held -= p.bytes.min(pools.held);
        if let Some(made) = pools.made.get_mut(key) {
            *made = made.saturating_sub(1);
        }
        drop(pools);
        self.returned.notify_all();
    }

    fn release(&self, key: PoolKey, p: Prepared) {
        let mut pools = self.pools.lock().expect("pools");
        pools.touch(&key);
        pools.idle.entry(key).or_default().push(p);
        pools.evict(self.options.max_shapes);
        drop(pools);
        self.returned.notify_all();
    }

    /// Request shapes holding idle executors, and the executors alive (idle or running): what
    /// [`GeneratorOptions::max_pools`] and [`GeneratorOptions::max_shapes`] bound.
    pub fn pooled(&self) -> (usize, usize) {
        let pools = self.pools.lock().expect("pools");
        (pools.idle.len(), pools.made.values().sum())
    }

    /// Bytes of GPU memory the generator holds (weights and executors), as
    /// [`GeneratorOptions::memory_limit`] counts them.
    pub fn memory_held(&self) -> u64 {
        self.pools.lock().expect("pools").held
    }

    /// The initial noise of each image: Philox4x32-10 normals of its seed (stream 0, counter
    /// image 0), the numbers `kernels::Noise` makes on the GPU.
    pub fn noise(&self, seeds: &[u64]) -> Vec<f32> {
        let c = &self.weights.config;
        let len = c.in_channels * c.input_size * c.input_size;
        seeds.iter().flat_map(|&s| (0..len).map(move |e| crate::cpu::noise::normal(s, 0, 0, e))).collect()
    }

    /// The baseline ledger of `images` images: dense f32, dense attention, 50 guided steps, one
    /// image a request (counted from the one-image graph, not run, and repeated).
    pub fn baseline_ledger(&self, images: u32) -> Result<Ledger> {
        Ok(self.one_image_baseline()?.repeated(u64::from(images)))
    }

    /// The modulation plan of a request: the options', else the rule's.
    fn plan(&self, spec: &SampleSpec) -> ModulationPlan {
        self.options.modulation.unwrap_or_else(|| ModulationPlan::for_spec(&self.weights.config, spec))
    }

    /// Whether this generator's graphs fuse the MLP branch: asked for, and the device runs it.
    fn fused_mlp(&self) -> bool {
        let c = &self.weights.config;
        self.options.fused_mlp && MlpBlock::runs_on(self.gpu.capabilities(), c.hidden_size, c.mlp_hidden())
    }

    /// The sampling graph of `spec` as this generator builds it.
    fn sample_graph(&self, spec: &SampleSpec) -> Result<SampleGraph> {
        let options = GraphOptions {
            plan: self.plan(spec),
            fused_mlp: self.fused_mlp(),
            int8_attention: self.options.int8_attention && self.gpu.capabilities().packed_dot4,
            int8_attention_output: self.options.int8_attention_output,
            int8_qkv: self.options.int8_qkv,
            skip_zeros: self.options.skip_zeros,
        };
        SampleGraph::with_options(&self.weights.config, spec, options)
    }

    /// The baseline recipe's ledger for one request of one image (computed once).
    fn one_image_baseline(&self) -> Result<Ledger> {
        if let Some(l) = self.baseline.lock().expect("baseline").as_ref() {
            return Ok(l.clone());
        }
        let config = DitConfig {
            quantization: QuantPolicy::default(),
            attention: AttentionKind::Dense,
            guidance_embed: false,
            step_embed: false,
            ..self.weights.config.clone()
        };
        let sampler = match config.prediction {
            Prediction::Velocity => SamplerKind::Euler,
            Prediction::Epsilon => SamplerKind::Ddim,
        };
        let spec = SampleSpec { images: 1, steps: 50, sampler, guidance: Some(4.0), img2img: false };
        // The conventional model's own graph as this crate builds it: it gets every lever that is
        // not an architecture choice (its modulation planned as any request's), so the ratios
        // measure precision, steps and guidance, not implementation.
        let g = SampleGraph::new(&config, &spec)?;
        let ledger = crate::graph::fuse(&g.graph)?.0.ledger(self.gpu.capabilities(), 50)?;
        *self.baseline.lock().expect("baseline") = Some(ledger.clone());
        Ok(ledger)
    }

    /// The ledger `request` would record, counted from its graph without running it (equal to
    /// [`Generation::ledger`] of a run: the GPU suite checks that the two agree).
    pub fn estimate(&self, request: &Request) -> Result<Ledger> {
        let spec = self.spec(request)?;
        let g = self.sample_graph(&spec)?;
        // The graph as an executor of this generator would run it (fused or not).
        ExecPlan::new(&g.graph, self.exec_options(&g, false))?.graph().ledger(self.gpu.capabilities(), spec.steps)
    }

    /// Runs `request`; `progress` sees every finished step and may cancel (the result is then
    /// [`Error::Cancelled`], within one step). Waiting for the GPU does not block the caller's
    /// thread; waiting for a free executor (more concurrent requests of one shape than
    /// [`GeneratorOptions::max_pools`]) and preparing a new one do.
    pub async fn generate(
        &self,
        request: &Request,
        mut progress: impl FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<Generation> {
        self.generate_inner(request, None, &mut progress).await
    }

    /// [`Generator::generate`], and the images drawn into the caller's texture on the GPU, in the
    /// last step's command buffer (after every step when the request asks for previews: then the
    /// texture is the preview and [`Progress::preview`] is `None`, no sample crosses to the CPU
    /// until the end). Nothing is copied through the host for the texture; the result is as
    /// `generate`'s (its `images` are the texture's pixels, byte for byte), and its ledger counts
    /// the decoding. A texture the decoder cannot write is [`Error::Request`], before anything
    /// runs.
    pub async fn generate_into(
        &self,
        request: &Request,
        target: &TextureTarget<'_>,
        mut progress: impl FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<Generation> {
        self.generate_inner(request, Some(target), &mut progress).await
    }

    /// [`Generator::generate_into`], blocking.
    pub fn generate_into_blocking(
        &self,
        request: &Request,
        target: &TextureTarget<'_>,
        progress: impl FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<Generation> {
        pollster::block_on(self.generate_into(request, target, progress))
    }

    /// Checks `target` for `spec`'s images; the decoder that fills it.
    fn check_target(&self, spec: &SampleSpec, target: &TextureTarget<'_>) -> Result<DecodeRgba8> {
        let c = &self.weights.config;
        let t = target.texture;
        let bad = |message: String| Err(Error::Request { message });
        if target.columns == Some(0) {
            return bad("a texture target needs at least one column".into());
        }
        let decoder = target.decoder(spec.images, c.in_channels, c.input_size, c.input_size);
        let (w, h) = decoder.grid_size();
        if t.format() != wgpu::TextureFormat::Rgba8Unorm {
            return bad(format!("the target texture is {:?}; generate_into writes Rgba8Unorm", t.format()));
        }
        let usage = wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST;
        if !t.usage().intersects(usage) {
            return bad(format!("the target texture's usage {:?} has neither STORAGE_BINDING nor COPY_DST", t.usage()));
        }
        if t.dimension() != wgpu::TextureDimension::D2 || t.sample_count() != 1 {
            return bad(format!(
                "the target texture is {:?} with {} samples; generate_into writes a single-sampled 2D texture",
                t.dimension(),
                t.sample_count()
            ));
        }
        if t.width() < w || t.height() < h {
            return bad(format!(
                "{} images of {}x{} in {} columns need a {w}x{h} texture, the target is {}x{}",
                spec.images,
                c.input_size,
                c.input_size,
                decoder.columns,
                t.width(),
                t.height()
            ));
        }
        Ok(decoder)
    }

    async fn generate_inner(
        &self,
        request: &Request,
        target: Option<&TextureTarget<'_>>,
        progress: &mut impl FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<Generation> {
        let start = Instant::now();
        self.gpu.check_alive()?;
        let spec = self.spec(request)?;
        let decoder = target.map(|t| self.check_target(&spec, t)).transpose()?;
        // Into a texture, previews are drawn there, not copied to the host.
        let cpu_preview = request.preview && target.is_none();
        let key = PoolKey {
            images: spec.images,
            steps: spec.steps,
            sampler: spec.sampler,
            guidance: spec.guidance.map(f32::to_bits),
            img2img: spec.img2img,
            preview: cpu_preview,
        };
        let (p, prepare) = self.acquire(&key, &spec).map_err(|e| self.lost_or(e))?;
        let output = match (target, decoder) {
            (Some(t), Some(d)) => Some(self.output(&p, t, d).map_err(|e| self.lost_or(e))),
            _ => None,
        }
        .transpose();
        let result = match output {
            Ok(output) => self.run(&p, &spec, request, output.as_ref(), progress, start).await,
            Err(e) => Err(e),
        };
        if self.gpu.lost().is_none() {
            self.release(key, p);
        } else {
            // Its buffers belong to a lost device: drop it, and let a waiting request find out.
            self.forget(&key, p);
        }
        let (samples, report, memory) = result.map_err(|e| self.lost_or(e))?;
        let c = &self.weights.config;
        let shape = [spec.images, c.in_channels, c.input_size, c.input_size];
        let images = self.decoder.decode(&samples, shape)?;
        let baseline = self.baseline_ledger(spec.images)?;
        let energy_ratio = report.ledger.ratio_to(&baseline);
        let sampling = report.wall;
        Ok(Generation {
            samples,
            shape,
            images,
            timings: Timings { prepare, sampling, per_step: sampling / spec.steps, total: start.elapsed() },
            profile: report.profile,
            ledger: report.ledger,
            baseline,
            energy_ratio,
            memory,
        })
    }

    /// The output stage of a texture target: the decoder bound to the executor's sample and to
    /// the texture (directly, or through a buffer copied into it).
    fn output(&self, p: &Prepared, target: &TextureTarget<'_>, decoder: DecodeRgba8) -> Result<Output> {
        let x = p.ex.buffer(p.graph.x)?;
        let texture = target.texture;
        if texture.usage().contains(wgpu::TextureUsages::STORAGE_BINDING) {
            let view = texture.create_view(&wgpu::TextureViewDescriptor {
                label: Some("milliwatt.output"),
                mip_level_count: Some(1),
                ..Default::default()
            });
            let kernel = decoder.prepare_texture(&self.gpu, x.into(), &view)?;
            return Ok(Output { kernel, copy: None, texture: texture.clone() });
        }
        let reqs = decoder.requirements(self.gpu.capabilities())?;
        let buffer = self.gpu.buffer(
            "output.rgba8",
            reqs[1].size,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        )?;
        let kernel = decoder.prepare(&self.gpu, &[x.into(), (&buffer).into()])?;
        let (width, height) = decoder.grid_size();
        Ok(Output { kernel, copy: Some((buffer, decoder.pitch() * 4, width, height)), texture: texture.clone() })
    }

    async fn run(
        &self,
        p: &Prepared,
        spec: &SampleSpec,
        request: &Request,
        output: Option<&Output>,
        progress: &mut impl FnMut(&Progress) -> ControlFlow<()>,
        start: Instant,
    ) -> Result<(Vec<f32>, crate::graph::RunReport, crate::graph::MemoryReport)> {
        let c = &self.weights.config;
        let (g, ex) = (&p.graph, &p.ex);
        let noise = match &request.noise {
            Some(n) => n.clone(),
            None => {
                let seeds: Vec<u64> = match &request.seeds {
                    Seeds::Base(b) => (0..spec.images).map(|i| b.wrapping_add(u64::from(i))).collect(),
                    Seeds::List(s) => s.clone(),
                };
                self.noise(&seeds)
            }
        };
        ex.write(g.noise, &noise)?;
        let mut labels = request.labels.clone();
        if spec.doubles_batch(c) {
            labels.extend(std::iter::repeat_n(c.num_classes, request.labels.len()));
        }
        ex.write(g.labels, &labels)?;
        if let Some(t) = g.guidance {
            ex.write(t, &vec![spec.embedded_guidance(); labels.len()])?;
        }
        let schedule: Vec<ScheduleEntry> = match (spec.sampler, &request.init) {
            (SamplerKind::Ddim, _) => ddim_schedule(spec.steps),
            (_, Some(init)) => rectified_flow_schedule(spec.steps, init.strength),
            _ => rectified_flow_schedule(spec.steps, 1.0),
        };
        ex.write(g.schedule, bytemuck::cast_slice::<ScheduleEntry, f32>(&schedule))?;
        if let (Some(t), Some(init)) = (g.init, &request.init) {
            ex.write(t, &init.pixels)?;
        }
        let last = spec.steps - 1;
        let every_step = request.preview;
        let decode = |enc: &mut wgpu::CommandEncoder, step: u32| {
            if let Some(o) = output.filter(|_| every_step || step == last) {
                o.encode(enc);
            }
        };
        let mut report = ex
            .run_async_then(spec.steps, output.is_some().then_some(&decode as _), |e: &StepEvent| {
                progress(&Progress {
                    step: e.step,
                    steps: e.steps,
                    preview: e.preview.clone(),
                    elapsed: start.elapsed(),
                })
            })
            .await?;
        if let Some(o) = output {
            let k = &o.kernel;
            let times = if every_step { u64::from(report.steps) } else { 1 };
            report.ledger.add(k.name(), k.work(), k.footprint(), times);
        }
        Ok((ex.read::<f32>(g.x)?, report, ex.memory()))
    }

    /// [`Generator::generate`], blocking.
    pub fn generate_blocking(
        &self,
        request: &Request,
        progress: impl FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<Generation> {
        pollster::block_on(self.generate(request, progress))
    }
}
