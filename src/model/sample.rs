//! The sampling graph: a DiT forward pass (two for Heun) between sampler updates, with
//! classifier-free guidance by batch doubling.
//!
//! Setup: `x` = the initial noise (or, for img2img, `(1 − t₀)·image + t₀·noise`). Each step: the
//! model batch `[x; x]` (guided) or `x`; its timestep from the schedule at the step counter; the
//! forward pass with labels `[y; null]`; the guidance combine `u + s·(c − u)`; the update —
//! rectified-flow Euler `x += (t_next − t)·v`, Heun (predict, second forward at `t_next`,
//! correct), or DDIM for ε-prediction. Nothing is read back between steps.

use super::config::{DitConfig, FloatFormat, Prediction};
use super::dit::{Conditioning, DitGraph, ForwardIo, ForwardTensors};
use crate::error::{Error, Result};
use crate::graph::{DType, Graph, Phase, TensorId};
use crate::kernels::{Broadcast, Elem, Elementwise, EltOp, SamplerOp, SamplerStep};

/// The integrator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SamplerKind {
    /// Rectified flow, Euler (one model evaluation per step).
    #[default]
    Euler,
    /// Rectified flow, Heun (two evaluations per step).
    Heun,
    /// DDIM (eta 0) for ε-prediction models, DiT's linear β schedule.
    Ddim,
}

/// The shape of a sampling run: what the graph depends on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleSpec {
    /// Images generated.
    pub images: u32,
    /// Steps.
    pub steps: u32,
    /// Integrator.
    pub sampler: SamplerKind,
    /// Classifier-free guidance scale (`None`: no guidance and no batch doubling).
    pub guidance: Option<f32>,
    /// Start from an init image (img2img; the schedule starts at the strength).
    pub img2img: bool,
}

impl SampleSpec {
    /// Whether guidance doubles the model batch (conditional and null-class rows, combined by
    /// the sampler): when asked for, unless the model takes the scale as an input
    /// (`guidance_embed`, one forward per step).
    pub fn doubles_batch(&self, config: &DitConfig) -> bool {
        self.guidance.is_some() && !config.guidance_embed
    }

    /// Rows of the model batch: the images, twice over when guidance doubles the batch.
    pub fn model_batch(&self, config: &DitConfig) -> u64 {
        u64::from(self.images) * if self.doubles_batch(config) { 2 } else { 1 }
    }

    /// The guidance scale a `guidance_embed` model is given: the request's, or 1 (the
    /// conditional prediction) without guidance.
    pub fn embedded_guidance(&self) -> f32 {
        self.guidance.unwrap_or(1.0)
    }
}

/// Where a sampling graph computes its adaLN modulation (the conditioning of each step projected
/// to every block's shift, scale and gate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModulationPlan {
    /// In each step: one GEMV per block and step, the adaLN weights read in every step.
    PerStep,
    /// Every step's in the request's setup (its timesteps are known before sampling): one
    /// matmul per block over steps × images rows, the adaLN weights read once a request; each
    /// step copies its slice. Not for Heun (its second evaluation is at the next step's time).
    EveryStep,
}

impl ModulationPlan {
    /// The plan that moves fewer bytes for `spec`: per step, the adaLN weights (W elements)
    /// against, once, W plus the every-step modulation (S·B·M elements: written once, each step
    /// reading its slice and writing it), for S steps of B images and M modulation values per
    /// image — and only while that every-step modulation holds no more than the weights
    /// (S·B·M ≤ W), so memory does not grow with the request. In practice: requests of a few
    /// images (B < d/2 and S·B ≤ d for a model of width d), where the weights dominate a step.
    pub fn for_spec(config: &DitConfig, spec: &SampleSpec) -> Self {
        let batch = spec.model_batch(config);
        let (d, steps) = (u64::from(config.hidden_size), u64::from(spec.steps));
        let m = u64::from(config.depth) * 6 * d + 2 * d;
        let weights = m * (d + 1);
        let every_step = steps * batch * m;
        let per_step_bytes = steps * (weights + batch * m);
        let every_step_bytes = weights + 3 * every_step;
        if spec.sampler != SamplerKind::Heun && steps > 1 && every_step <= weights && every_step_bytes < per_step_bytes
        {
            ModulationPlan::EveryStep
        } else {
            ModulationPlan::PerStep
        }
    }
}

/// A sampling graph and its interface tensors.
#[derive(Clone, Debug)]
pub struct SampleGraph {
    /// The graph.
    pub graph: Graph,
    /// The model's weights in it.
    pub dit: DitGraph,
    /// Input: initial noise [images, C, H, W].
    pub noise: TensorId,
    /// Input: the init image (img2img).
    pub init: Option<TensorId>,
    /// Input: class labels [model batch] (u32): the requested labels, then (guided) as many null
    /// labels.
    pub labels: TensorId,
    /// Weight: the schedule, `[steps]` of `ScheduleEntry`.
    pub schedule: TensorId,
    /// Weight: the guidance scale of every image, `[images]` (f32), for a `guidance_embed` model.
    pub guidance: Option<TensorId>,
    /// How the graph computes its modulation.
    pub plan: ModulationPlan,
    /// Output: the sample [images, C, H, W].
    pub x: TensorId,
    /// The first forward pass's tensors (the model output of the last step).
    pub forward: ForwardTensors,
}

/// How a sampling graph computes the model: choices that change the work and the dispatches, not
/// what is computed (beyond int8 rounding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GraphOptions {
    /// Where the adaLN modulation is computed.
    pub plan: ModulationPlan,
    /// Each block's MLP branch as one dispatch where the model allows
    /// ([`DitGraph::mlp_fusable`]; a device must run [`crate::kernels::MlpBlock`]), else its
    /// chain of kernels.
    pub fused_mlp: bool,
    /// Attention with int8 products ([`crate::kernels::Attention::int8`]; a device must offer
    /// packed int8 dot products), else f32.
    pub int8_attention: bool,
    /// Attention writes its output as int8 with a scale per (token, head) for the projection
    /// where the model allows ([`DitGraph::set_int8_attention_output`]), else a float output
    /// that a quantizer reads.
    pub int8_attention_output: bool,
    /// The qkv GEMM writes Q, K, V as int8 with a scale per (token, part, head) for attention
    /// where the model allows ([`DitGraph::set_int8_qkv`]), else floats.
    pub int8_qkv: bool,
    /// 2:4 GEMMs with int8 activations skip their zero half
    /// ([`crate::kernels::QGemm::skip_zeros`]), else run dense tiles.
    pub skip_zeros: bool,
}

impl GraphOptions {
    /// `plan`, the MLP branch fused where the model allows, attention in f32, 2:4 GEMMs over dense
    /// tiles.
    pub fn new(plan: ModulationPlan) -> Self {
        Self {
            plan,
            fused_mlp: true,
            int8_attention: false,
            int8_attention_output: false,
            int8_qkv: false,
            skip_zeros: false,
        }
    }
}

impl SampleGraph {
    /// The largest tensor the graph for `spec` holds besides the weights (the MLP's hidden
    /// activations, or the attention's QKV where the MLP ratio is small), as (bytes, elements),
    /// without building the graph: what a device's buffer and binding limits must hold before a
    /// request is accepted. Computed in u64, so no request size overflows it.
    pub fn largest_activation(config: &DitConfig, spec: &SampleSpec) -> (u64, u64) {
        Self::largest_activation_with(config, spec, ModulationPlan::for_spec(config, spec))
    }

    /// [`SampleGraph::largest_activation`] of the graph with `plan`.
    pub fn largest_activation_with(config: &DitConfig, spec: &SampleSpec, plan: ModulationPlan) -> (u64, u64) {
        let c = config;
        let batch = spec.model_batch(c);
        // Every step's conditioning rows: their timestep features (256), c and the widest
        // modulation (4 hidden: both norms' shift and scale).
        let every_step = match plan {
            ModulationPlan::EveryStep => {
                u64::from(spec.steps) * batch * [256, 4 * u64::from(c.hidden_size)].into_iter().max().unwrap_or(0)
            }
            ModulationPlan::PerStep => 0,
        };
        let rows = batch * u64::from(c.tokens());
        let out_channels = u64::from(c.in_channels) * if c.learn_sigma { 2 } else { 1 };
        let per_row =
            [u64::from(c.mlp_hidden()), 3 * u64::from(c.hidden_size), u64::from(c.patch_size).pow(2) * out_channels];
        let elements = (rows * per_row.into_iter().max().unwrap_or(0))
            .max(batch * 6 * u64::from(c.hidden_size))
            .max(batch * u64::from(c.in_channels) * u64::from(c.input_size).pow(2))
            .max(every_step);
        let size = match c.quantization.other {
            FloatFormat::F32 => 4,
            FloatFormat::F16 => 2,
        };
        (elements * size, elements)
    }

    /// Builds the graph for `spec`, its modulation planned by [`ModulationPlan::for_spec`].
    pub fn new(config: &DitConfig, spec: &SampleSpec) -> Result<Self> {
        Self::with_plan(config, spec, ModulationPlan::for_spec(config, spec))
    }

    /// Builds the graph for `spec` with the modulation computed as `plan` says, each block's MLP
    /// branch one fused dispatch where the model allows ([`DitGraph::mlp_fusable`]), attention in
    /// f32.
    pub fn with_plan(config: &DitConfig, spec: &SampleSpec, plan: ModulationPlan) -> Result<Self> {
        Self::with_options(config, spec, GraphOptions::new(plan))
    }

    /// Builds the graph for `spec` as `options` say.
    pub fn with_options(config: &DitConfig, spec: &SampleSpec, options: GraphOptions) -> Result<Self> {
        let GraphOptions { plan, fused_mlp, int8_attention, int8_attention_output, int8_qkv, skip_zeros } = options;
        let c = config;
        if spec.images == 0 || spec.steps == 0 {
            return Err(Error::Graph { message: format!("sampling needs images and steps, got {spec:?}") });
        }
        let prediction_fits = match spec.sampler {
            SamplerKind::Euler | SamplerKind::Heun => c.prediction == Prediction::Velocity,
            SamplerKind::Ddim => c.prediction == Prediction::Epsilon,
        };
        if !prediction_fits {
            return Err(Error::Graph {
                message: format!("sampler {:?} does not fit a model predicting {:?}", spec.sampler, c.prediction),
            });
        }
        if spec.img2img && spec.sampler == SamplerKind::Ddim {
            return Err(Error::Unsupported {
                kernel: "sampler",
                needs: "img2img noising for DDIM (the init noising is rectified flow's)",
            });
        }
        if plan == ModulationPlan::EveryStep && spec.sampler == SamplerKind::Heun {
            return Err(Error::Unsupported {
                kernel: "sampler",
                needs: "the per-step modulation for Heun (its second evaluation is at the next step's time)",
            });
        }
        let guided = spec.doubles_batch(c);
        let batch = if guided { 2 * spec.images } else { spec.images };
        let mut g = Graph::new();
        let mut dit = DitGraph::declare(&mut g, config, batch)?;
        dit.set_fused_mlp(fused_mlp);
        dit.set_int8_attention(int8_attention);
        dit.set_int8_attention_output(int8_attention_output);
        dit.set_int8_qkv(int8_qkv);
        dit.set_skip_zeros(skip_zeros);
        let f = DType::F32;
        let image_shape = [spec.images, c.in_channels, c.input_size, c.input_size];
        let model_shape = [batch, c.in_channels, c.input_size, c.input_size];
        let len = c.in_channels * c.input_size * c.input_size;
        let n = spec.images * len;
        let noise = g.input("noise", &image_shape, f);
        let init = spec.img2img.then(|| g.input("init_image", &image_shape, f));
        let labels = g.input("labels", &[batch], DType::U32);
        let schedule = g.weight("schedule", &[spec.steps, 4], f);
        let guidance = c.guidance_embed.then(|| g.weight("guidance", &[batch], f));
        let step = g.step_index();
        let x = g.output("x", &image_shape, f);
        let sampler = |op| SamplerStep { op, images: spec.images, len, steps: spec.steps };
        let time = |op| SamplerStep { op, images: batch, len: 1, steps: spec.steps };

        g.set_phase(Phase::Setup);
        g.op("init.noise", Elementwise::new(EltOp::Copy, n, Elem::F32), &[noise, x])?;
        let guidance_emb = guidance.map(|w| dit.embed_guidance(&mut g, "setup.", w)).transpose()?;
        if let Some(image) = init {
            g.op("init.img2img", sampler(SamplerOp::NoiseInit), &[schedule, step, x, image])?;
        }
        // Every step's timesteps (and step sizes) from the schedule, then every step's
        // modulation: the adaLN weights read here, once.
        let every_step = match plan {
            ModulationPlan::EveryStep => {
                let rows = spec.steps * batch;
                let every = |g: &mut Graph, name: &str, op| -> Result<TensorId> {
                    let v = g.activation(format!("setup.{name}"), &[rows], f);
                    g.op(format!("setup.{name}"), time(op), &[schedule, step, v])?;
                    Ok(v)
                };
                let times = every(&mut g, "times", SamplerOp::TimeEveryStep)?;
                let sizes =
                    c.step_embed.then(|| every(&mut g, "step_sizes", SamplerOp::StepSizeEveryStep)).transpose()?;
                Some(dit.modulation_every_step(&mut g, "setup.", spec.steps, times, labels, guidance_emb, sizes)?)
            }
            ModulationPlan::PerStep => None,
        };

        g.set_phase(Phase::Step);
        // One model evaluation of `input` at the schedule's t (or t_next): its guided output.
        let eval =
            |g: &mut Graph, name: &str, input: TensorId, t_op: SamplerOp| -> Result<(TensorId, ForwardTensors)> {
                let model_in = if guided {
                    let xin = g.activation(format!("{name}.batch"), &model_shape, f);
                    let doubled = Elementwise::new(EltOp::Copy, batch * len, Elem::F32)
                        .with_broadcast(Broadcast { cols: n, group: 2 });
                    g.op(format!("{name}.batch"), doubled, &[input, xin])?;
                    xin
                } else {
                    input
                };
                let cond = match &every_step {
                    Some(every) => Conditioning::EveryStep(every.clone()),
                    None => {
                        let tt = g.activation(format!("{name}.t"), &[batch], f);
                        g.op(format!("{name}.t"), time(t_op), &[schedule, step, tt])?;
                        // A shortcut model is told the step size (Heun's second evaluation the
                        // same one).
                        let step_size = if c.step_embed {
                            let d = g.activation(format!("{name}.step_size"), &[batch], f);
                            g.op(format!("{name}.step_size"), time(SamplerOp::StepSize), &[schedule, step, d])?;
                            Some(d)
                        } else {
                            None
                        };
                        Conditioning::Embedded { t: tt, y: labels, guidance: guidance_emb, step: step_size }
                    }
                };
                let out = g.activation(format!("{name}.out"), &model_shape, f);
                let io = ForwardIo { x: model_in, out, cond };
                let fw = dit.forward(g, &format!("{name}."), io, false)?;
                let Some(scale) = spec.guidance.filter(|_| guided) else { return Ok((out, fw)) };
                let v = g.activation(format!("{name}.guided"), &image_shape, f);
                g.op(format!("{name}.guide"), sampler(SamplerOp::Guide { scale }), &[schedule, step, out, v])?;
                Ok((v, fw))
            };
        let (v, forward) = eval(&mut g, "model", x, SamplerOp::Time)?;
        match spec.sampler {
            SamplerKind::Euler => g.op("euler", sampler(SamplerOp::Euler), &[schedule, step, x, v])?,
            SamplerKind::Ddim => g.op("ddim", sampler(SamplerOp::Ddim), &[schedule, step, x, v])?,
            SamplerKind::Heun => {
                let xp = g.activation("heun.x", &image_shape, f);
                g.op("heun.predict", sampler(SamplerOp::HeunPredict), &[schedule, step, x, v, xp])?;
                let (v2, _) = eval(&mut g, "model2", xp, SamplerOp::TimeNext)?;
                g.op("heun.correct", sampler(SamplerOp::HeunCorrect), &[schedule, step, x, v, v2])?;
            }
        }
        Ok(Self { graph: g, dit, noise, init, labels, schedule, guidance, plan, x, forward })
    }
}
