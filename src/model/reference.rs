//! CPU reference of the DiT graph (src/model/dit.rs) and its sampling loop (src/model/sample.rs),
//! built from the kernels' twins in the graph's op order, so a GPU run can be checked against it
//! under every quantization policy and attention kind.
//!
//! Each op of the graph is its twin here, with the graph's choices: a linear over at most 8 rows is
//! a GEMV (2:4 formats always are), else a GEMM; ternary, int8 and 2:4 ternary weights take int8
//! activations (the norm before `attn.qkv` / `mlp.fc1` emits them, `attn.proj` / `mlp.fc2` inputs
//! go through `ActQuant`), int4 takes floats; bias, GELU, gate and residual are applied in the
//! epilogue of the linear that produces the value. Arithmetic is f32 (f64 inside attention, as its
//! twin). The GEMV twins reduce in a different order than a device with subgroups: compare with a
//! tolerance.

use crate::cpu::attention::attention;
use crate::cpu::elementwise::{elementwise, elementwise_broadcast};
use crate::cpu::embed::{class_embed, patchify, timestep_embed, unpatchify};
use crate::cpu::epilogue::{EpilogueInputs, epilogue};
use crate::cpu::matmul::{gemm_epilogue, gemv};
use crate::cpu::norm::{NormOut, norm};
use crate::cpu::qgemm::{Weights, qgemm_a8, qgemm_float};
use crate::cpu::qmatmul::{ActIn, qgemv, quantize_act};
use crate::cpu::sampler::{SamplerIo, sampler};
use crate::error::{Error, Result};
use crate::kernels::attention::window_start;
use crate::kernels::embed::PatchGeometry;
use crate::kernels::epilogue::{Activation, Epilogue};
use crate::kernels::matmul::{MatmulKind, MatmulParams};
use crate::kernels::norm::{NormKind, NormParams};
use crate::kernels::qmatmul::{QMatmulParams, STEP, act_row_words};
use crate::kernels::sampler::{SamplerOp, ScheduleEntry};
use crate::kernels::{Broadcast, Elem, EltOp, Norm, timestep_freqs};
use crate::model::config::{AttentionKind, FloatFormat, LinearFormat};
use crate::model::sample::{SampleSpec, SamplerKind};
use crate::model::weights::{DitWeights, WeightData};
use crate::quant::{Format, Packed};

/// DiT's timestep embedding: frequencies and maximum period (`TimestepEmbedder`).
const FREQ_DIM: usize = 256;
const MAX_PERIOD: f32 = 10000.0;

/// Invocations per workgroup the GEMV twins reduce over (any power of two; the device's choice
/// only changes the summation order).
const GEMV_WG: usize = 64;

/// One forward pass's outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward {
    /// The model output, unpatchified: [images, in_channels, H, W] (a `learn_sigma` model's first
    /// `in_channels` channels).
    pub out: Vec<f32>,
    /// The conditioning vector `c` [images, hidden].
    pub c: Vec<f32>,
    /// The token states after the first block [images, tokens, hidden].
    pub block0: Vec<f32>,
}

/// A linear layer's weights: dense `[m, k]` (owned when cut from the adaLN projection) or packed.
enum Linear<'a> {
    Dense { w: std::borrow::Cow<'a, [f32]>, b: std::borrow::Cow<'a, [f32]>, m: usize, k: usize },
    Packed { p: &'a Packed, b: &'a [f32] },
}

impl Linear<'_> {
    fn m(&self) -> usize {
        match self {
            Linear::Dense { m, .. } => *m,
            Linear::Packed { p, .. } => p.m as usize,
        }
    }

    fn k(&self) -> usize {
        match self {
            Linear::Dense { k, .. } => *k,
            Linear::Packed { p, .. } => p.k as usize,
        }
    }

    fn bias(&self) -> &[f32] {
        match self {
            Linear::Dense { b, .. } => b,
            Linear::Packed { b, .. } => b,
        }
    }

    /// `DitGraph::int8_input`: ternary, 2:4 ternary, int8, and int4 with groups a multiple of 64
    /// take int8 activations.
    fn int8_input(&self) -> bool {
        match self {
            Linear::Packed { p, .. } => match p.format {
                Format::Ternary2 | Format::Ternary24 | Format::Int8 => true,
                Format::Int4 { group, .. } => group.is_multiple_of(64),
                _ => false,
            },
            Linear::Dense { .. } => false,
        }
    }
}

/// What a linear reads: floats [rows, k], or int8 words [rows, act_row_words(k)] with per-row
/// scales.
enum Input {
    Float(Vec<f32>),
    Int8 { xq: Vec<u32>, xs: Vec<f32> },
}

/// `<name>.weight` (a conv weight flattened to [m, C·p·p]) and `<name>.bias`, as the checkpoint
/// holds them.
fn linear<'a>(weights: &'a DitWeights, name: &str) -> Result<Linear<'a>> {
    let b = &weights.float(&format!("{name}.bias"))?.data;
    let m = b.len();
    match weights.get(&format!("{name}.weight"))? {
        WeightData::Float(t) => {
            let k = t.data.len() / m.max(1);
            Ok(Linear::Dense { w: (&t.data[..]).into(), b: (&b[..]).into(), m, k })
        }
        WeightData::Packed(p) => Ok(Linear::Packed { p, b }),
    }
}

/// Rows `ranges` of the adaLN projection `name` ([6d, d] weight, [6d] bias), concatenated: what
/// `DitGraph::rows` uploads.
fn ada_rows(weights: &DitWeights, name: &str, ranges: &[std::ops::Range<usize>]) -> Result<Linear<'static>> {
    let k = weights.config.hidden_size as usize;
    let w = &weights.float(&format!("{name}.weight"))?.data;
    let b = &weights.float(&format!("{name}.bias"))?.data;
    let m = ranges.iter().map(|r| r.len()).sum();
    let w: Vec<f32> = ranges.iter().flat_map(|r| w[r.start * k..r.end * k].iter().copied()).collect();
    let b: Vec<f32> = ranges.iter().flat_map(|r| b[r.clone()].iter().copied()).collect();
    Ok(Linear::Dense { w: w.into(), b: b.into(), m, k })
}

/// The weights of one block, split as `DitGraph::declare` splits them.
struct Block<'a> {
    modulation: Linear<'static>,
    gate_msa: Linear<'static>,
    gate_mlp: Linear<'static>,
    qkv: Linear<'a>,
    proj: Linear<'a>,
    fc1: Linear<'a>,
    fc2: Linear<'a>,
}

/// `DitGraph::apply`: `y = epilogue(x Wᵀ + b)` over `rows` rows, with the bias always on;
/// `residual` and `gate` as the epilogue uses them.
fn apply(l: &Linear<'_>, input: &Input, rows: usize, e: Epilogue, residual: &[f32], gate: &[f32]) -> Result<Vec<f32>> {
    let (m, k) = (l.m(), l.k());
    let e = Epilogue { bias: true, ..e };
    let t = EpilogueInputs { bias: l.bias(), residual, gate };
    let gate_rows = e.gate_rows.unwrap_or(0);
    let mut y = vec![0f32; rows * m];
    // The GEMV kernels apply the epilogue to each reduced value as they store it.
    let finish = |y: &mut [f32]| {
        for n in 0..rows {
            for col in 0..m {
                let at = n * m + col;
                y[at] = epilogue(&e, &t, m, y[at], n, col, at);
            }
        }
    };
    match (l, input) {
        (Linear::Dense { w, .. }, Input::Float(x)) => {
            let p = MatmulParams {
                m: m as u32,
                n: rows as u32,
                k: k as u32,
                m_offset: 0,
                ldy: m as u32,
                gate_rows,
                _pad: [0; 2],
            };
            if MatmulKind::of(rows as u32, None) == MatmulKind::Gemv {
                gemv(&p, GEMV_WG, k % 4 == 0, x, w, &mut y);
                finish(&mut y);
            } else {
                gemm_epilogue(&p, &e, &t, x, w, &mut y);
            }
        }
        (Linear::Packed { p: packed, .. }, input) => {
            let format = packed.format;
            let group = match format {
                Format::Int4 { group, .. } | Format::Int4Sparse24 { group } => group,
                _ => 0,
            };
            let p = QMatmulParams {
                m: packed.m,
                n: rows as u32,
                k: packed.k,
                m_offset: 0,
                ldy: packed.m,
                steps: packed.k.div_ceil(STEP),
                w_row_words: packed.row_words,
                s_row_words: packed.scale_row_words,
                a_row_words: packed.aux_row_words,
                x_row_words: act_row_words(packed.k),
                group,
                gate_rows,
                x_group_words: 0,
                y_group: 0,
                _pad: [0; 2],
            };
            if MatmulKind::of(rows as u32, Some(format)) == MatmulKind::Gemv {
                let act = match input {
                    Input::Float(x) => ActIn::Float(&x[..]),
                    Input::Int8 { xq, xs } => ActIn::Int8(&xq[..], &xs[..]),
                };
                let wg = ((p.steps / 4).max(1).next_power_of_two() as usize).clamp(32, 256);
                qgemv(format, &p, wg, act, &packed.data, &packed.scales, &packed.aux, &mut y);
                finish(&mut y);
            } else {
                let wt = Weights { format, w: &packed.data, ws: &packed.scales, wz: &packed.aux };
                match input {
                    Input::Int8 { xq, xs } => qgemm_a8(&p, wt, &e, &t, xq, xs, &mut y),
                    Input::Float(x) => qgemm_float(&p, wt, &e, &t, x, &mut y),
                }
            }
        }
        (Linear::Dense { .. }, Input::Int8 { .. }) => {
            return Err(Error::Graph { message: "int8 input to a dense linear".into() });
        }
    }
    Ok(y)
}

/// `DitGraph::input_for`: `x` [rows, k] as is, or through `ActQuant` when `l` takes int8.
fn input_for(l: &Linear<'_>, x: Vec<f32>, rows: usize, k: usize) -> Input {
    if !l.int8_input() {
        return Input::Float(x);
    }
    let words = act_row_words(k as u32) as usize;
    let (mut xq, mut xs) = (vec![0u32; rows * words], vec![0f32; rows]);
    quantize_act(rows, k, words, &x, &mut xq, &mut xs);
    Input::Int8 { xq, xs }
}

/// `DitGraph::norm_for`: the modulated LayerNorm of `h` [rows, d] (shift and scale at offsets of
/// the modulation rows, `stride` apart, one row per image), emitting int8 when `l` takes it.
#[expect(clippy::too_many_arguments, reason = "the norm op's parameters, as DitGraph::norm_for takes them")]
fn norm_for(
    l: &Linear<'_>,
    h: &[f32],
    modulation: &[f32],
    rows: usize,
    d: usize,
    tokens: usize,
    shift: usize,
    scale: usize,
    stride: usize,
) -> Input {
    let p = NormParams {
        rows: rows as u32,
        d: d as u32,
        rows_per_image: tokens as u32,
        eps: Norm::layer_norm(rows as u32, d as u32, Elem::F32).eps,
        mod_stride: stride as u32,
        shift_offset: shift as u32,
        scale_offset: scale as u32,
        x_row_words: act_row_words(d as u32),
    };
    if l.int8_input() {
        let words = p.x_row_words as usize;
        let (mut xq, mut xs) = (vec![0u32; rows * words], vec![0f32; rows]);
        norm(&p, NormKind::LayerNorm, true, h, modulation, &[], NormOut::Int8(&mut xq, &mut xs));
        Input::Int8 { xq, xs }
    } else {
        let mut y = vec![0f32; rows * d];
        norm(&p, NormKind::LayerNorm, true, h, modulation, &[], NormOut::Float(&mut y));
        Input::Float(y)
    }
}

/// The DiT forward pass of src/model/dit.rs on the CPU: `x` `[images, C, H, W]`, `t` `[images]` in
/// sampler time (the model sees `time_scale · t`), `y` `[images]` class labels (`num_classes` is the
/// null class; larger labels read it too). Returns the output and the taps `c` and `block0`.
///
/// Errors as `DitGraph::declare` does (invalid configuration, f16 formats it does not build yet,
/// no images), on a missing or mis-sized weight, or when `x` or `y` do not match `t`'s images.
/// A distilled student (`guidance_embed`, `step_embed`) takes [`forward_with`].
pub fn forward(weights: &DitWeights, x: &[f32], t: &[f32], y: &[u32]) -> Result<Forward> {
    forward_with(weights, x, t, y, Scalars::default())
}

/// A distilled student's inputs beside the timestep, one value per image: the guidance scale w
/// (`guidance_embed`) and the step size t − t_next in sampler time (`step_embed`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Scalars<'a> {
    /// Guidance scales, for a model with `guidance_embed`.
    pub guidance: Option<&'a [f32]>,
    /// Step sizes, for a model with `step_embed`.
    pub step: Option<&'a [f32]>,
}

/// [`forward`] with a student's extra inputs; each must be given exactly when the model has its
/// embedder, one value per image.
pub fn forward_with(weights: &DitWeights, x: &[f32], t: &[f32], y: &[u32], extra: Scalars<'_>) -> Result<Forward> {
    let c = &weights.config;
    c.validate()?;
    if c.quantization.other == FloatFormat::F16 {
        return Err(Error::Unsupported {
            kernel: "dit",
            needs: "f16 activations in the DiT graph (not built yet; use the f32 policy for `other`)",
        });
    }
    if [c.quantization.attention, c.quantization.mlp].contains(&LinearFormat::F16) {
        return Err(Error::Unsupported { kernel: "dit", needs: "f16 block linears in an f32 graph (not built yet)" });
    }
    let b = t.len();
    let (d, tokens) = (c.hidden_size as usize, c.tokens() as usize);
    let (ch, side) = (c.in_channels as usize, c.input_size as usize);
    let image_len = ch * side * side;
    if b == 0 {
        return Err(Error::Graph { message: "a DiT forward pass needs at least one image".into() });
    }
    if x.len() != b * image_len || y.len() != b {
        return Err(Error::Graph {
            message: format!(
                "forward: {b} timesteps need {} input values and {b} labels, got {} and {}",
                b * image_len,
                x.len(),
                y.len()
            ),
        });
    }
    let rows = b * tokens;
    let geo = PatchGeometry {
        images: b as u32,
        channels: c.in_channels,
        height: c.input_size,
        width: c.input_size,
        patch: c.patch_size,
    };
    let plain = Epilogue::default();

    // Embeddings.
    let mut patches = vec![0f32; rows * c.patch_dim() as usize];
    patchify(&geo, x, &mut patches);
    let h0 = apply(&linear(weights, "x_embedder.proj")?, &Input::Float(patches), rows, plain, &[], &[])?;
    let pos = &weights.float("pos_embed")?.data;
    if pos.len() != tokens * d {
        return Err(Error::Graph {
            message: format!("weight `pos_embed` has {} values, expected {}", pos.len(), tokens * d),
        });
    }
    let mut h = vec![0f32; rows * d];
    let broadcast = Broadcast { cols: (tokens * d) as u32, group: b as u32 };
    elementwise_broadcast(EltOp::Add, &h0, Some(pos), Some(broadcast), &mut h);
    // DiT's TimestepEmbedder of per-image scalars: sinusoidal features of time_scale · v, a
    // linear, SiLU, a linear.
    let embed = |name: &str, v: &[f32]| -> Result<Vec<f32>> {
        let mut features = vec![0f32; b * FREQ_DIM];
        timestep_embed(FREQ_DIM, &timestep_freqs(FREQ_DIM as u32, MAX_PERIOD), c.time_scale, v, &mut features);
        let silu = Epilogue { act: Activation::Silu, ..plain };
        let hidden = apply(&linear(weights, &format!("{name}.mlp.0"))?, &Input::Float(features), b, silu, &[], &[])?;
        apply(&linear(weights, &format!("{name}.mlp.2"))?, &Input::Float(hidden), b, plain, &[], &[])
    };
    let mut t2 = embed("t_embedder", t)?;
    // A distilled student's guidance scale and step size, embedded as the timestep and added.
    for (on, name, field, input) in [
        (c.guidance_embed, "g_embedder", "guidance_embed", extra.guidance),
        (c.step_embed, "d_embedder", "step_embed", extra.step),
    ] {
        match (on, input) {
            (true, Some(v)) if v.len() == b => {
                let e = embed(name, v)?;
                let mut sum = vec![0f32; b * d];
                elementwise(EltOp::Add, &t2, Some(&e), &mut sum);
                t2 = sum;
            }
            (false, None) => {}
            (true, Some(v)) => {
                return Err(Error::Graph { message: format!("forward: `{field}` needs {b} values, got {}", v.len()) });
            }
            (true, None) => {
                return Err(Error::Graph { message: format!("forward: a model with `{field}` needs its input") });
            }
            (false, Some(_)) => {
                return Err(Error::Graph {
                    message: format!("forward: an input for `{field}`, which the model has not"),
                });
            }
        }
    }
    let table = &weights.float("y_embedder.embedding_table.weight")?.data;
    let classes = c.num_classes as usize + 1;
    if table.len() != classes * d {
        return Err(Error::Graph {
            message: format!(
                "weight `y_embedder.embedding_table.weight` has {} values, expected {}",
                table.len(),
                classes * d
            ),
        });
    }
    let mut ye = vec![0f32; b * d];
    class_embed(d, classes, y, table, &mut ye);
    let mut cond = vec![0f32; b * d];
    elementwise(EltOp::Add, &t2, Some(&ye), &mut cond);
    let mut cs = vec![0f32; b * d];
    elementwise(EltOp::Silu, &cond, None, &mut cs);
    let cs = Input::Float(cs);

    // Blocks.
    let gated = Epilogue { residual: true, gate_rows: Some(tokens as u32), ..plain };
    let gelu = Epilogue { act: Activation::GeluTanh, ..plain };
    let (heads, head_dim) = (c.num_heads as usize, c.head_dim() as usize);
    let grid = c.grid();
    let window_mask = |window: u32| {
        move |q: usize, key: usize| {
            let (q, key) = (q as u32, key as u32);
            let (r0, c0) = (window_start(q / grid, grid, window), window_start(q % grid, grid, window));
            (r0..r0 + window).contains(&(key / grid)) && (c0..c0 + window).contains(&(key % grid))
        }
    };
    let mut block0 = None;
    for i in 0..c.depth as usize {
        let p = format!("blocks.{i}");
        let ada = format!("{p}.adaLN_modulation.1");
        // Chunks: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp.
        let chunk = |n: usize| n * d..(n + 1) * d;
        let blk = Block {
            modulation: ada_rows(weights, &ada, &[chunk(0), chunk(1), chunk(3), chunk(4)])?,
            gate_msa: ada_rows(weights, &ada, &[chunk(2)])?,
            gate_mlp: ada_rows(weights, &ada, &[chunk(5)])?,
            qkv: linear(weights, &format!("{p}.attn.qkv"))?,
            proj: linear(weights, &format!("{p}.attn.proj"))?,
            fc1: linear(weights, &format!("{p}.mlp.fc1"))?,
            fc2: linear(weights, &format!("{p}.mlp.fc2"))?,
        };
        let m4 = apply(&blk.modulation, &cs, b, plain, &[], &[])?;
        let gate_msa = apply(&blk.gate_msa, &cs, b, plain, &[], &[])?;
        let gate_mlp = apply(&blk.gate_mlp, &cs, b, plain, &[], &[])?;

        // Attention.
        let hn = norm_for(&blk.qkv, &h, &m4, rows, d, tokens, 0, d, 4 * d);
        let qkv = apply(&blk.qkv, &hn, rows, plain, &[], &[])?;
        let mut att = vec![0f32; rows * d];
        match c.attention {
            AttentionKind::Dense => attention(b, tokens, heads, head_dim, &qkv, None, &mut att),
            AttentionKind::Neighbourhood { window } => {
                let mask = window_mask(window);
                attention(b, tokens, heads, head_dim, &qkv, Some(&mask), &mut att);
            }
        }
        let att_in = input_for(&blk.proj, att, rows, d);
        let h1 = apply(&blk.proj, &att_in, rows, gated, &h, &gate_msa)?;

        // MLP.
        let hn = norm_for(&blk.fc1, &h1, &m4, rows, d, tokens, 2 * d, 3 * d, 4 * d);
        let mh = c.mlp_hidden() as usize;
        let f1 = apply(&blk.fc1, &hn, rows, gelu, &[], &[])?;
        let f_in = input_for(&blk.fc2, f1, rows, mh);
        let h2 = apply(&blk.fc2, &f_in, rows, gated, &h1, &gate_mlp)?;
        if i == 0 {
            block0 = Some(h2.clone());
        }
        h = h2;
    }

    // Final layer: shift is the first d of its modulation, scale the second.
    let fm = apply(&linear(weights, "final_layer.adaLN_modulation.1")?, &cs, b, plain, &[], &[])?;
    let final_linear = linear(weights, "final_layer.linear")?;
    let hn = norm_for(&final_linear, &h, &fm, rows, d, tokens, 0, d, 2 * d);
    let po = apply(&final_linear, &hn, rows, plain, &[], &[])?;
    let mut out = vec![0f32; b * image_len];
    unpatchify(&geo, c.out_channels() as usize, &po, &mut out);
    Ok(Forward { out, c: cond, block0: block0.unwrap_or(h) })
}

/// The sampling loop of src/model/sample.rs on the CPU. Setup: `x` = `noise` [images, C, H, W]
/// (img2img: `NoiseInit` with `init` at the first schedule entry). Each of `spec.steps` steps at
/// `schedule[step]`: the model batch `[x; x]` (guided) or `x` at the step's `t` with `labels`,
/// the guidance combine, then the Euler, DDIM or Heun update (Heun's second evaluation at
/// `t_next`). Returns x.
///
/// `labels` is the model batch's labels, as the graph's `labels` input: the requested labels,
/// then (guided) as many null labels; under guidance the requested labels alone are accepted too
/// and the nulls appended. Errors as [`forward`] does, on sizes that do not match `spec`, a
/// schedule shorter than its steps, or an `init` image given exactly when `spec.img2img` is not
/// set.
pub fn sample(
    weights: &DitWeights,
    spec: &SampleSpec,
    noise: &[f32],
    init: Option<&[f32]>,
    labels: &[u32],
    schedule: &[ScheduleEntry],
) -> Result<Vec<f32>> {
    let c = &weights.config;
    let (images, steps) = (spec.images as usize, spec.steps as usize);
    if images == 0 || steps == 0 {
        return Err(Error::Graph { message: format!("sampling needs images and steps, got {spec:?}") });
    }
    let guided = spec.doubles_batch(c);
    let batch = if guided { 2 * images } else { images };
    let len = (c.in_channels * c.input_size * c.input_size) as usize;
    let n = images * len;
    let bad = |message: String| Err(Error::Graph { message });
    if noise.len() != n {
        return bad(format!("sample: noise has {} values, {images} images need {n}", noise.len()));
    }
    if schedule.len() < steps {
        return bad(format!("sample: a schedule of {} entries for {steps} steps", schedule.len()));
    }
    let labels: Vec<u32> = if labels.len() == batch {
        labels.to_vec()
    } else if guided && labels.len() == images {
        labels.iter().copied().chain(std::iter::repeat_n(c.num_classes, images)).collect()
    } else {
        return bad(format!("sample: {} labels for a model batch of {batch}", labels.len()));
    };
    let mut x = noise.to_vec();
    match (init, spec.img2img) {
        (Some(image), true) if image.len() == n => {
            sampler(SamplerOp::NoiseInit, &schedule[0], n, SamplerIo { x: &mut x, a: image, ..SamplerIo::default() });
        }
        (Some(image), true) => return bad(format!("sample: the init image has {} values, expected {n}", image.len())),
        (None, false) => {}
        (init, img2img) => {
            return bad(format!(
                "sample: img2img is {img2img} but an init image was {}given",
                if init.is_some() { "" } else { "not " }
            ));
        }
    }
    // One model evaluation of `input` at the entry's t (or t_next): its guided output.
    let eval = |input: &[f32], e: &ScheduleEntry, t_op: SamplerOp| -> Result<Vec<f32>> {
        let model_in = if guided {
            let mut doubled = vec![0f32; batch * len];
            let broadcast = Broadcast { cols: n as u32, group: 2 };
            elementwise_broadcast(EltOp::Copy, input, None, Some(broadcast), &mut doubled);
            doubled
        } else {
            input.to_vec()
        };
        let mut tt = vec![0f32; batch];
        sampler(t_op, e, batch, SamplerIo { out: &mut tt, ..SamplerIo::default() });
        // A student's scalars: the guidance scale, the step size.
        let guidance = vec![spec.embedded_guidance(); batch];
        let mut step_size = vec![0f32; batch];
        sampler(SamplerOp::StepSize, e, batch, SamplerIo { out: &mut step_size, ..SamplerIo::default() });
        let extra = Scalars {
            guidance: c.guidance_embed.then_some(&guidance[..]),
            step: c.step_embed.then_some(&step_size[..]),
        };
        let out = forward_with(weights, &model_in, &tt, &labels, extra)?.out;
        let Some(scale) = spec.guidance.filter(|_| guided) else { return Ok(out) };
        let mut v = vec![0f32; n];
        sampler(SamplerOp::Guide { scale }, e, n, SamplerIo { a: &out, out: &mut v, ..SamplerIo::default() });
        Ok(v)
    };
    for e in &schedule[..steps] {
        let v = eval(&x, e, SamplerOp::Time)?;
        match spec.sampler {
            SamplerKind::Euler => {
                sampler(SamplerOp::Euler, e, n, SamplerIo { x: &mut x, a: &v, ..SamplerIo::default() })
            }
            SamplerKind::Ddim => sampler(SamplerOp::Ddim, e, n, SamplerIo { x: &mut x, a: &v, ..SamplerIo::default() }),
            SamplerKind::Heun => {
                let mut xp = vec![0f32; n];
                sampler(
                    SamplerOp::HeunPredict,
                    e,
                    n,
                    SamplerIo { x: &mut x, a: &v, out: &mut xp, ..SamplerIo::default() },
                );
                let v2 = eval(&xp, e, SamplerOp::TimeNext)?;
                sampler(SamplerOp::HeunCorrect, e, n, SamplerIo { x: &mut x, a: &v, b: &v2, ..SamplerIo::default() });
            }
        }
    }
    Ok(x)
}
