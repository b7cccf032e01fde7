//! The sampling graph: a DiT forward pass (two for Heun) between sampler updates, with
//! classifier-free guidance by batch doubling.
//!
//! Setup: `x` = the initial noise (or, for img2img, `(1 − t₀)·image + t₀·noise`). Each step: the
//! model batch `[x; x]` (guided) or `x`; its timestep from the schedule at the step counter; the
//! forward pass with labels `[y; null]`; the guidance combine `u + s·(c − u)`; the update —
//! rectified-flow Euler `x += (t_next − t)·v`, Heun (predict, second forward at `t_next`,
//! correct), or DDIM for ε-prediction. Nothing is read back between steps.

use super::config::{DitConfig, FloatFormat, Prediction};
use super::dit::{DitGraph, ForwardIo, ForwardTensors};
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

    /// The guidance scale a `guidance_embed` model is given: the request's, or 1 (the
    /// conditional prediction) without guidance.
    pub fn embedded_guidance(&self) -> f32 {
        self.guidance.unwrap_or(1.0)
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
    /// Output: the sample [images, C, H, W].
    pub x: TensorId,
    /// The first forward pass's tensors (the model output of the last step).
    pub forward: ForwardTensors,
}

impl SampleGraph {
    /// The largest tensor the graph for `spec` holds besides the weights (the MLP's hidden
    /// activations, or the attention's QKV where the MLP ratio is small), as (bytes, elements),
    /// without building the graph: what a device's buffer and binding limits must hold before a
    /// request is accepted. Computed in u64, so no request size overflows it.
    pub fn largest_activation(config: &DitConfig, spec: &SampleSpec) -> (u64, u64) {
        let c = config;
        let batch = u64::from(spec.images) * if spec.doubles_batch(c) { 2 } else { 1 };
        let rows = batch * u64::from(c.tokens());
        let out_channels = u64::from(c.in_channels) * if c.learn_sigma { 2 } else { 1 };
        let per_row =
            [u64::from(c.mlp_hidden()), 3 * u64::from(c.hidden_size), u64::from(c.patch_size).pow(2) * out_channels];
        let elements = (rows * per_row.into_iter().max().unwrap_or(0))
            .max(batch * 6 * u64::from(c.hidden_size))
            .max(batch * u64::from(c.in_channels) * u64::from(c.input_size).pow(2));
        let size = match c.quantization.other {
            FloatFormat::F32 => 4,
            FloatFormat::F16 => 2,
        };
        (elements * size, elements)
    }

    /// Builds the graph for `spec`.
    pub fn new(config: &DitConfig, spec: &SampleSpec) -> Result<Self> {
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
        let guided = spec.doubles_batch(c);
        let batch = if guided { 2 * spec.images } else { spec.images };
        let mut g = Graph::new();
        let dit = DitGraph::declare(&mut g, config, batch)?;
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
                let tt = g.activation(format!("{name}.t"), &[batch], f);
                g.op(format!("{name}.t"), time(t_op), &[schedule, step, tt])?;
                // A shortcut model is told the step size (Heun's second evaluation the same one).
                let step_size = if c.step_embed {
                    let d = g.activation(format!("{name}.step_size"), &[batch], f);
                    g.op(format!("{name}.step_size"), time(SamplerOp::StepSize), &[schedule, step, d])?;
                    Some(d)
                } else {
                    None
                };
                let out = g.activation(format!("{name}.out"), &model_shape, f);
                let io = ForwardIo { x: model_in, t: tt, y: labels, out, guidance: guidance_emb, step: step_size };
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
        Ok(Self { graph: g, dit, noise, init, labels, schedule, guidance, x, forward })
    }
}
