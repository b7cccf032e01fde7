//! The DiT forward pass as ops of a [`Graph`], exactly as facebookresearch/DiT `models.py`
//! computes it: patch embedding (a stride-p convolution, tokens row-major) plus the fixed 2D
//! sin-cos position embedding; conditioning `c` = timestep embedding (256 frequencies, max period
//! 10000, cos first, MLP with SiLU) + class embedding (null class = `num_classes`); per block
//! adaLN-Zero — `SiLU(c)` projected to shift, scale and gate for attention and MLP —
//! `x += gate_msa · attn(modulate(LN(x)))`, `x += gate_mlp · mlp(modulate(LN(x)))`; the final
//! layer (modulated LN, linear) and unpatchify (first `in_channels` of a `learn_sigma` output).
//!
//! Written in fused form: bias, GELU, gate and residual ride in the matmul epilogues; the norm
//! before a linear with int8 activations emits int8 itself. The adaLN projection of each block is
//! split on load into the shift/scale rows (read strided by the norms) and one projection per
//! gate, so each gate is a contiguous tensor for the gated-residual epilogue.

use super::config::{AttentionKind, DitConfig, FloatFormat, LinearFormat};
use super::weights::DitWeights;
use crate::error::{Error, Result};
use crate::graph::{DType, Executor, Graph, PackedWeight, TensorId};
use crate::kernels::qmatmul::act_row_words;
use crate::kernels::{
    Act, ActQuant, Activation, Attention, Broadcast, ClassEmbed, Convert, Elem, Elementwise, EltOp, Epilogue, Gemm,
    Gemv, MatmulKind, MatmulShape, MlpBlock, Modulation, Norm, PatchGeometry, Patchify, QGemm, QGemv, Sparsity,
    StepSlice, TimestepEmbed, Unpatchify, neighbourhood_blocks, timestep_freqs,
};
use crate::quant::Format;

/// Where the data of a graph weight comes from.
#[derive(Clone, Debug)]
enum Source {
    /// A float tensor of the checkpoint, whole.
    Float(String),
    /// Rows `ranges` of a float [rows, k] tensor (or of a vector, k = 1), concatenated.
    Rows(String, Vec<std::ops::Range<usize>>, usize),
    /// A packed weight of the checkpoint, and its streams in the graph.
    Packed(String, PackedWeight),
    /// Computed here.
    F32(Vec<f32>),
    /// Computed here.
    U32(Vec<u32>),
}

/// A linear layer's weights in the graph.
#[derive(Clone, Debug)]
enum LinearWeights {
    Dense { w: TensorId, b: TensorId, m: u32, k: u32 },
    Packed { w: PackedWeight, format: Format, b: TensorId, m: u32, k: u32 },
}

impl LinearWeights {
    /// Outputs and inputs.
    fn dims(&self) -> (u32, u32) {
        match *self {
            LinearWeights::Dense { m, k, .. } | LinearWeights::Packed { m, k, .. } => (m, k),
        }
    }
}

/// The weights of one block.
#[derive(Clone, Debug)]
struct BlockTensors {
    modulation: LinearWeights,
    gate_msa: LinearWeights,
    gate_mlp: LinearWeights,
    qkv: LinearWeights,
    proj: LinearWeights,
    fc1: LinearWeights,
    fc2: LinearWeights,
}

/// A DiT's weights declared in a graph for a batch of `images` (the model's batch: twice the
/// requested images under classifier-free guidance). [`DitGraph::forward`] adds one forward pass;
/// [`DitGraph::upload`] writes the weights once an executor exists.
#[derive(Clone, Debug)]
pub struct DitGraph {
    config: DitConfig,
    images: u32,
    elem: Elem,
    sources: Vec<(TensorId, Source)>,
    x_embed: LinearWeights,
    pos_embed: TensorId,
    t_freqs: TensorId,
    t_mlp: [LinearWeights; 2],
    /// The guidance and step-size embedders' MLPs, where the config has them.
    g_mlp: Option<[LinearWeights; 2]>,
    d_mlp: Option<[LinearWeights; 2]>,
    y_table: TensorId,
    blocks: Vec<BlockTensors>,
    final_mod: LinearWeights,
    final_linear: LinearWeights,
    attn_blocks: Option<TensorId>,
    /// Whether each block's MLP branch runs as one [`MlpBlock`] dispatch.
    fused_mlp: bool,
    /// Whether attention runs in int8 ([`Attention::int8`]).
    int8_attention: bool,
    /// Whether attention writes its output as int8 for the projection ([`Attention::emit_i8`]).
    int8_attention_output: bool,
    /// Whether the qkv GEMM writes Q, K, V as int8 for attention ([`Attention::qkv_i8`]).
    int8_qkv: bool,
    /// Whether 2:4 GEMMs with int8 activations skip their zero half ([`QGemm::skip_zeros`]).
    skip_zeros: bool,
}

/// The tensors a forward pass reads and writes.
#[derive(Clone, Debug)]
pub struct ForwardIo {
    /// Model input [images, C, H, W].
    pub x: TensorId,
    /// Output [images, C, H, W].
    pub out: TensorId,
    /// Where the conditioning and the adaLN modulation come from.
    pub cond: Conditioning,
}

/// Where a forward pass's conditioning comes from.
#[derive(Clone, Debug)]
pub enum Conditioning {
    /// The pass embeds its own and projects it to every block's modulation.
    Embedded {
        /// Timesteps `[images]` in sampler time (the model sees `time_scale · t`).
        t: TensorId,
        /// Class labels `[images]` (u32; `num_classes` is the null class).
        y: TensorId,
        /// The guidance scales' embedding [images, hidden] from [`DitGraph::embed_guidance`],
        /// for a model with `guidance_embed` (the scale is fixed per request: it is embedded
        /// once, not in every step); else `None`.
        guidance: Option<TensorId>,
        /// Step sizes t − t_next `[images]` in sampler time, for a model with `step_embed`;
        /// else `None`.
        step: Option<TensorId>,
    },
    /// Every step's conditioning and modulation, made once in the request's setup
    /// ([`DitGraph::modulation_every_step`]): the pass takes the step counter's slice.
    EveryStep(StepModulation),
}

/// The conditioning and the adaLN modulation of every step of a request, `[steps × images, ·]`
/// with step-major rows, from [`DitGraph::modulation_every_step`].
#[derive(Clone, Debug)]
pub struct StepModulation {
    steps: u32,
    /// The conditioning vectors `c`, [steps × images, hidden].
    c: TensorId,
    /// Per block: shift and scale of both norms [steps × images, 4 hidden], the attention's gate
    /// and the MLP's gate [steps × images, hidden].
    blocks: Vec<[TensorId; 3]>,
    /// The final layer's shift and scale [steps × images, 2 hidden].
    final_mod: TensorId,
}

impl StepModulation {
    /// Steps it holds.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// The conditioning vectors of every step, [steps × images, hidden].
    pub fn c(&self) -> TensorId {
        self.c
    }
}

/// Declares a model's weights in a graph, remembering where each one's data comes from.
struct Declare<'a> {
    g: &'a mut Graph,
    elem: Elem,
    hidden: u32,
    sources: Vec<(TensorId, Source)>,
}

impl Declare<'_> {
    fn f32s(&mut self, name: &str, data: Vec<f32>) -> TensorId {
        let t = self.g.weight(name, &[data.len() as u32], DType::F32);
        self.sources.push((t, Source::F32(data)));
        t
    }

    fn u32s(&mut self, name: &str, data: Vec<u32>) -> TensorId {
        let t = self.g.weight(name, &[data.len() as u32], DType::U32);
        self.sources.push((t, Source::U32(data)));
        t
    }

    /// A float tensor of the checkpoint, in the graph's element type.
    fn float(&mut self, name: &str, shape: &[u32]) -> TensorId {
        let id = self.g.weight(name, shape, DType::from(self.elem));
        self.sources.push((id, Source::Float(name.into())));
        id
    }

    /// A linear layer `<name>.weight` [m, k] (a conv weight flattened to [m, C·p·p]) and
    /// `<name>.bias`, dense or packed in `format`.
    fn linear(&mut self, name: &str, m: u32, k: u32, format: Option<Format>) -> LinearWeights {
        let wname = format!("{name}.weight");
        let b = self.float(&format!("{name}.bias"), &[m]);
        match format {
            None => {
                let w = self.float(&wname, &[m, k]);
                LinearWeights::Dense { w, b, m, k }
            }
            Some(format) => {
                // `Format::layout` was checked for these K by `DitConfig::validate`.
                let w = self.g.packed_weight(&wname, format, m, k).expect("layout validated with the config");
                self.sources.push((w.data, Source::Packed(wname, w)));
                LinearWeights::Packed { w, format, b, m, k }
            }
        }
    }

    /// Rows `ranges` of the adaLN projection `name` ([6d, d] weight, [6d] bias) as a dense
    /// linear named `part`.
    fn rows(&mut self, name: &str, part: &str, ranges: Vec<std::ops::Range<usize>>) -> LinearWeights {
        let k = self.hidden as usize;
        let m: usize = ranges.iter().map(|r| r.len()).sum();
        let dt = DType::from(self.elem);
        let w = self.g.weight(format!("{name}.weight[{part}]"), &[m as u32, k as u32], dt);
        let b = self.g.weight(format!("{name}.bias[{part}]"), &[m as u32], dt);
        self.sources.push((w, Source::Rows(format!("{name}.weight"), ranges.clone(), k)));
        self.sources.push((b, Source::Rows(format!("{name}.bias"), ranges, 1)));
        LinearWeights::Dense { w, b, m: m as u32, k: k as u32 }
    }
}

/// Tensors one forward pass produced.
#[derive(Clone, Copy, Debug)]
pub struct ForwardTensors {
    /// The model output, unpatchified: [images, in_channels, H, W] (a `learn_sigma` model's
    /// first `in_channels` channels).
    pub out: TensorId,
    /// The conditioning vector `c` [images, hidden] (with [`Conditioning::EveryStep`], every
    /// step's: [steps × images, hidden]).
    pub c: TensorId,
    /// The token states after the first block [images, tokens, hidden].
    pub block0: TensorId,
}

impl DitGraph {
    /// Declares the weights of a model of `config` in `g` for batches of `images`. The block
    /// linears are packed as `config.quantization` says (as [`DitWeights`] loads them); the data
    /// comes later, with [`DitGraph::upload`].
    pub fn declare(g: &mut Graph, config: &DitConfig, images: u32) -> Result<Self> {
        let config = config.clone();
        config.validate()?;
        if images == 0 {
            return Err(Error::Graph { message: "a DiT graph needs at least one image".into() });
        }
        // The float format of `other` is the graph's: its float weights and its activations
        // (arithmetic is f32 either way). Dense block linears must match it.
        let elem = match config.quantization.other {
            FloatFormat::F32 => Elem::F32,
            FloatFormat::F16 => Elem::F16,
        };
        for f in [config.quantization.attention, config.quantization.mlp] {
            let mismatch = matches!((f, elem), (LinearFormat::F16, Elem::F32) | (LinearFormat::F32, Elem::F16));
            if mismatch {
                return Err(Error::Graph {
                    message: format!(
                        "dense block linears in {f:?} need the other weights in the same format (`other` is {:?})",
                        config.quantization.other
                    ),
                });
            }
        }
        let d = config.hidden_size as usize;
        let h = config.hidden_size;
        let mut w = Declare { g, elem, hidden: h, sources: Vec::new() };
        let x_embed = w.linear("x_embedder.proj", h, config.patch_dim(), None);
        let pos_embed = w.float("pos_embed", &[config.tokens(), h]);
        let t_freqs = w.f32s("t_embedder.freqs", timestep_freqs(256, 10000.0));
        let mut embedder = |name: &str| {
            [w.linear(&format!("{name}.mlp.0"), h, 256, None), w.linear(&format!("{name}.mlp.2"), h, h, None)]
        };
        let t_mlp = embedder("t_embedder");
        let g_mlp = config.guidance_embed.then(|| embedder("g_embedder"));
        let d_mlp = config.step_embed.then(|| embedder("d_embedder"));
        let y_table = w.float("y_embedder.embedding_table.weight", &[config.num_classes + 1, h]);
        let (att, mlp) = (config.quantization.attention.packed(), config.quantization.mlp.packed());
        let mh = config.mlp_hidden();
        let blocks = (0..config.depth)
            .map(|i| {
                let p = format!("blocks.{i}");
                let ada = format!("{p}.adaLN_modulation.1");
                // Chunks: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp.
                let chunk = |c: usize| c * d..(c + 1) * d;
                BlockTensors {
                    modulation: w.rows(&ada, "modulation", vec![chunk(0), chunk(1), chunk(3), chunk(4)]),
                    gate_msa: w.rows(&ada, "gate_msa", vec![chunk(2)]),
                    gate_mlp: w.rows(&ada, "gate_mlp", vec![chunk(5)]),
                    qkv: w.linear(&format!("{p}.attn.qkv"), 3 * h, h, att),
                    proj: w.linear(&format!("{p}.attn.proj"), h, h, att),
                    fc1: w.linear(&format!("{p}.mlp.fc1"), mh, h, mlp),
                    fc2: w.linear(&format!("{p}.mlp.fc2"), h, mh, mlp),
                }
            })
            .collect();
        let final_mod = w.linear("final_layer.adaLN_modulation.1", 2 * h, h, None);
        let pout = config.patch_size * config.patch_size * config.out_channels();
        let final_linear = w.linear("final_layer.linear", pout, h, None);
        let attn_blocks = match config.attention {
            AttentionKind::Neighbourhood { window } => {
                let grid = config.grid();
                Some(w.u32s("attention.blocks", neighbourhood_blocks(config.tokens(), grid, grid, window)))
            }
            AttentionKind::Dense => None,
        };
        Ok(Self {
            sources: w.sources,
            config,
            images,
            elem,
            x_embed,
            pos_embed,
            t_freqs,
            t_mlp,
            g_mlp,
            d_mlp,
            y_table,
            blocks,
            final_mod,
            final_linear,
            attn_blocks,
            fused_mlp: false,
            int8_attention: false,
            int8_attention_output: false,
            int8_qkv: false,
            skip_zeros: false,
        })
    }

    /// Whether the blocks' MLP branches can run as one [`MlpBlock`] dispatch each: ternary fc1
    /// and fc2 (int8 activations) of widths the kernel's tile holds.
    pub fn mlp_fusable(&self) -> bool {
        let ternary = |l: &LinearWeights| matches!(l, LinearWeights::Packed { format: Format::Ternary2, .. });
        let d = self.config.hidden_size;
        MlpBlock::tokens_per_workgroup(d, self.config.mlp_hidden()).is_some()
            && self.blocks.iter().all(|b| ternary(&b.fc1) && ternary(&b.fc2))
    }

    /// Runs each block's MLP branch as one [`MlpBlock`] dispatch (`on`, where
    /// [`DitGraph::mlp_fusable`]; the device must run it: [`MlpBlock::runs_on`]) or as the chain
    /// of norm, GEMM, quantization and GEMM (the default). Affects the passes added after it.
    pub fn set_fused_mlp(&mut self, on: bool) {
        self.fused_mlp = on && self.mlp_fusable();
    }

    /// Whether the passes run the fused MLP branch.
    pub fn fused_mlp(&self) -> bool {
        self.fused_mlp
    }

    /// Runs attention with int8 products ([`Attention::int8`]; the device must offer
    /// [`crate::Capabilities::packed_dot4`]) or in f32 (the default). Affects the passes added
    /// after it.
    pub fn set_int8_attention(&mut self, on: bool) {
        self.int8_attention = on;
    }

    /// Whether the passes run int8 attention.
    pub fn int8_attention(&self) -> bool {
        self.int8_attention
    }

    /// Has attention write its output as int8 with a scale per (token, head)
    /// ([`Attention::emit_i8`]) that the projection GEMM reads directly ([`QGemm::x_group`]),
    /// instead of a float output quantized per token by its own kernel (the default), where the
    /// projection takes int8 (ternary, 2:4 ternary or int8 weights), runs as a tiled GEMM, head
    /// dimensions are 16, 32 or a multiple of 64 and there are at most [`QGemm::X_GROUPS_MAX`] heads
    /// ([`DitGraph::attention_output_group`]). Affects the passes added after it.
    pub fn set_int8_attention_output(&mut self, on: bool) {
        self.int8_attention_output = on;
    }

    /// The activation group of the projection's int8 input when attention emits it (the head
    /// dimension), for `rows` rows; `None` where the passes quantize a float output instead.
    pub fn attention_output_group(&self, rows: u32) -> Option<u32> {
        let c = &self.config;
        let d = c.head_dim();
        let proj_takes_it = self.blocks.iter().all(|b| Self::int8_gemm(&b.proj, rows));
        (self.int8_attention_output && proj_takes_it && QGemm::x_group_fits(c.hidden_size, d)).then_some(d)
    }

    /// Has the qkv GEMM write Q, K and V as int8 with a scale per (token, part, head)
    /// ([`QGemm::y_group`]) that attention reads ([`Attention::qkv_i8`]), instead of floats (the
    /// default), where the qkv linear takes int8 (ternary, 2:4 ternary or int8 weights), runs as a
    /// tiled GEMM, and the head dimension is 16, 32 or 64 ([`DitGraph::qkv_output_group`]).
    /// Affects the passes added after it.
    pub fn set_int8_qkv(&mut self, on: bool) {
        self.int8_qkv = on;
    }

    /// The group of the qkv GEMM's int8 output (the head dimension) for `rows` rows; `None` where
    /// the passes write Q, K, V as floats.
    pub fn qkv_output_group(&self, rows: u32) -> Option<u32> {
        let d = self.config.head_dim();
        let qkv_takes_it = self.blocks.iter().all(|b| Self::int8_gemm(&b.qkv, rows));
        (self.int8_qkv && qkv_takes_it && QGemm::y_group_fits(3 * self.config.hidden_size, d)).then_some(d)
    }

    /// Whether linear `l` over `rows` rows runs as a tiled GEMM with int8 activations and
    /// per-row weight scales (ternary, 2:4 ternary, int8): the GEMM that takes grouped int8
    /// activations and writes grouped int8 output.
    fn int8_gemm(l: &LinearWeights, rows: u32) -> bool {
        match l {
            LinearWeights::Packed {
                format: format @ (Format::Ternary2 | Format::Ternary24 | Format::Int8), ..
            } => MatmulKind::of(rows, Some(*format)) == MatmulKind::Gemm,
            _ => false,
        }
    }

    /// Runs the tiled GEMMs of 2:4 linears with int8 activations skipping their zero half
    /// ([`QGemm::skip_zeros`]) or over dense tiles (the default). Affects the passes added after it.
    pub fn set_skip_zeros(&mut self, on: bool) {
        self.skip_zeros = on;
    }

    /// Whether the passes' 2:4 GEMMs skip zeros.
    pub fn skip_zeros(&self) -> bool {
        self.skip_zeros
    }

    /// The model's configuration.
    pub fn config(&self) -> &DitConfig {
        &self.config
    }

    /// Images per forward pass.
    pub fn images(&self) -> u32 {
        self.images
    }

    /// Writes every weight into `ex` (once per executor). `weights` must be of this graph's
    /// configuration (a mismatch is an error naming the tensor).
    pub fn upload(&self, ex: &Executor, weights: &DitWeights) -> Result<()> {
        self.upload_except(ex, weights, &Default::default())
    }

    /// [`DitGraph::upload`] of the weights not in `shared` (those the executor took from
    /// another one, already written).
    pub fn upload_except(
        &self,
        ex: &Executor,
        weights: &DitWeights,
        shared: &crate::graph::SharedWeights,
    ) -> Result<()> {
        if weights.config != self.config {
            return Err(Error::Graph { message: "the weights' configuration differs from the graph's".into() });
        }
        for (t, s) in &self.sources {
            if shared.contains_key(&ex.graph().tensor_desc(*t)?.name) {
                continue;
            }
            // Float weights in the graph's element type.
            let write = |values: &[f32]| match self.elem {
                Elem::F32 => ex.write(*t, values),
                Elem::F16 => ex.write(*t, &values.iter().map(|&v| half::f16::from_f32(v)).collect::<Vec<_>>()),
            };
            match s {
                Source::Float(name) => write(&weights.float(name)?.data)?,
                Source::Rows(name, ranges, k) => {
                    let data = &weights.float(name)?.data;
                    let rows: Vec<f32> =
                        ranges.iter().flat_map(|r| data[r.start * k..r.end * k].iter().copied()).collect();
                    write(&rows)?;
                }
                Source::Packed(name, w) => ex.write_packed(w, weights.packed(name)?)?,
                Source::F32(v) => ex.write(*t, v)?,
                Source::U32(v) => ex.write(*t, v)?,
            }
        }
        Ok(())
    }

    /// Whether a block linear takes int8 activations: ternary, 2:4 ternary, int8 and int4 with
    /// groups a multiple of 64 (W1.58A8, W8A8, W4A8; GEMV and tiled GEMM alike). Int4 with
    /// groups of 32 takes float activations.
    fn int8_input(l: &LinearWeights) -> bool {
        match l {
            LinearWeights::Packed { format: Format::Ternary2 | Format::Ternary24 | Format::Int8, .. } => true,
            LinearWeights::Packed { format: Format::Int4 { group, .. }, .. } => group.is_multiple_of(64),
            _ => false,
        }
    }

    /// Adds `y = epilogue(x Wᵀ + b)` over `rows` rows to `g`.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        g: &mut Graph,
        name: &str,
        l: &LinearWeights,
        input: Input,
        rows: u32,
        epilogue: Epilogue,
        extras: &[TensorId],
        y: TensorId,
    ) -> Result<()> {
        let e = self.elem;
        let (m, k) = l.dims();
        let shape = MatmulShape::new(m, rows, k);
        let epilogue = Epilogue { bias: true, ..epilogue };
        let mut bind = Vec::new();
        match (l, input) {
            (LinearWeights::Dense { w, b, .. }, Input::Float(x)) => {
                bind.extend([x, *w, y, *b]);
                bind.extend_from_slice(extras);
                match MatmulKind::of(rows, None) {
                    MatmulKind::Gemv => g.op(name, Gemv::new(shape, e).with_epilogue(epilogue), &bind),
                    MatmulKind::Gemm => g.op(name, Gemm::new(shape, e).with_epilogue(epilogue), &bind),
                }
            }
            (LinearWeights::Packed { w, format, b, .. }, input) => {
                let mut x_group = 0;
                let act = match input {
                    Input::Float(x) => {
                        bind.push(x);
                        Act::Float(e)
                    }
                    Input::Int8 { xq, xs, group } => {
                        bind.extend([xq, xs]);
                        x_group = group;
                        Act::Int8 { out: e }
                    }
                };
                bind.extend(w.streams());
                bind.push(y);
                bind.push(*b);
                bind.extend_from_slice(extras);
                match MatmulKind::of(rows, Some(*format)) {
                    MatmulKind::Gemv if x_group > 0 => {
                        Err(Error::Graph { message: format!("`{name}`: grouped int8 activations into a GEMV") })
                    }
                    MatmulKind::Gemv => g.op(name, QGemv::new(shape, *format, act).with_epilogue(epilogue), &bind),
                    MatmulKind::Gemm => {
                        g.op(name, self.tiled(shape, *format, act, epilogue).with_x_group(x_group), &bind)
                    }
                }
            }
            (LinearWeights::Dense { .. }, Input::Int8 { .. }) => {
                Err(Error::Graph { message: format!("`{name}`: int8 input to a dense linear") })
            }
        }
    }

    /// The tiled low-bit GEMM of a linear, skipping the zero half of 2:4 weights where the graph
    /// asks and the kernel can ([`QGemm::skip_zeros`]).
    fn tiled(&self, shape: MatmulShape, format: Format, act: Act, epilogue: Epilogue) -> QGemm {
        let skip = self.skip_zeros && format == Format::Ternary24 && matches!(act, Act::Int8 { .. });
        QGemm::new(shape, format, act).with_epilogue(epilogue).with_skip_zeros(skip)
    }

    /// Adds `y = x Wᵀ + b` over `rows` rows to `g` as a tiled int8 GEMM writing int8 with a scale
    /// per row and group of `group` columns into `out` (words, scales): linears for which
    /// [`DitGraph::int8_gemm`] holds, with int8 input.
    #[allow(clippy::too_many_arguments)]
    fn apply_int8_out(
        &self,
        g: &mut Graph,
        name: &str,
        l: &LinearWeights,
        input: Input,
        rows: u32,
        group: u32,
        out: [TensorId; 2],
    ) -> Result<()> {
        let (LinearWeights::Packed { w, format, b, .. }, Input::Int8 { xq, xs, group: 0 }) = (l, input) else {
            return Err(Error::Graph {
                message: format!("`{name}`: int8 output needs a low-bit GEMM with int8 input"),
            });
        };
        let (m, k) = l.dims();
        let epilogue = Epilogue { bias: true, ..Epilogue::default() };
        let act = Act::Int8 { out: self.elem };
        let gemm = self.tiled(MatmulShape::new(m, rows, k), *format, act, epilogue).with_int8_output(group);
        let mut bind = vec![xq, xs];
        bind.extend(w.streams());
        bind.extend(out);
        bind.push(*b);
        g.op(name, gemm, &bind)
    }

    /// The input a linear wants from a float tensor `x` [rows, k]: as is, or quantized to int8 by
    /// an `ActQuant` op.
    fn input_for(&self, g: &mut Graph, name: &str, l: &LinearWeights, x: TensorId, rows: u32, k: u32) -> Result<Input> {
        if !Self::int8_input(l) {
            return Ok(Input::Float(x));
        }
        let xq = g.activation(format!("{name}.xq"), &[rows, act_row_words(k)], DType::U32);
        let xs = g.activation(format!("{name}.xs"), &[rows], DType::F32);
        g.op(format!("{name}.quantize"), ActQuant { n: rows, k, elem: self.elem }, &[x, xq, xs])?;
        Ok(Input::Int8 { xq, xs, group: 0 })
    }

    /// A modulated LayerNorm of `h` feeding linear `l`: emits int8 when `l` takes it.
    #[allow(clippy::too_many_arguments)]
    fn norm_for(
        &self,
        g: &mut Graph,
        name: &str,
        l: &LinearWeights,
        h: TensorId,
        modulation: TensorId,
        m: Modulation,
        rows: u32,
    ) -> Result<Input> {
        let d = self.config.hidden_size;
        let norm = Norm { modulation: Some(m), ..Norm::layer_norm(rows, d, self.elem) };
        if Self::int8_input(l) {
            let xq = g.activation(format!("{name}.xq"), &[rows, act_row_words(d)], DType::U32);
            let xs = g.activation(format!("{name}.xs"), &[rows], DType::F32);
            g.op(name, Norm { emit_i8: true, ..norm }, &[h, modulation, xq, xs])?;
            Ok(Input::Int8 { xq, xs, group: 0 })
        } else {
            let y = g.activation(name, &[rows, d], DType::from(self.elem));
            g.op(name, norm, &[h, modulation, y])?;
            Ok(Input::Float(y))
        }
    }

    /// The guidance embedding of a `guidance_embed` model: `g_embedder` of the per-image scales
    /// `scales` `[images]` (f32), `[images, hidden]`, for the `guidance` of
    /// [`Conditioning::Embedded`] (or of [`DitGraph::modulation_every_step`]). Made once per
    /// request (the sampling graph's setup), not in every step.
    pub fn embed_guidance(&self, g: &mut Graph, prefix: &str, scales: TensorId) -> Result<TensorId> {
        let mlp = self.g_mlp.as_ref().ok_or_else(|| Error::Graph {
            message: "a guidance embedding for a model without `guidance_embed`".into(),
        })?;
        self.embed_scalar(g, prefix, "g_embedder", scales, mlp, self.images)
    }

    /// `name`'s embedding of the `n` scalars `input` [n] (timesteps, guidance scales, step
    /// sizes), DiT's `TimestepEmbedder`: sinusoidal features of `time_scale · v`, a linear, SiLU,
    /// a linear. [n, hidden].
    fn embed_scalar(
        &self,
        g: &mut Graph,
        prefix: &str,
        name: &str,
        input: TensorId,
        mlp: &[LinearWeights; 2],
        n: u32,
    ) -> Result<TensorId> {
        let c = &self.config;
        let (b, d, e) = (n, c.hidden_size, self.elem);
        let f = DType::from(e);
        let freq = g.activation(format!("{prefix}{name}.freq"), &[b, 256], f);
        let features = TimestepEmbed { images: b, dim: 256, max_period: 10000.0, time_scale: c.time_scale, elem: e };
        g.op(format!("{prefix}{name}.freq"), features, &[input, self.t_freqs, freq])?;
        let hidden = g.activation(format!("{prefix}{name}.mlp0"), &[b, d], f);
        let silu = Epilogue { act: Activation::Silu, ..Epilogue::default() };
        self.apply(g, &format!("{prefix}{name}.mlp.0"), &mlp[0], Input::Float(freq), b, silu, &[], hidden)?;
        let out = g.activation(format!("{prefix}{name}.emb"), &[b, d], f);
        self.apply(
            g,
            &format!("{prefix}{name}.mlp.2"),
            &mlp[1],
            Input::Float(hidden),
            b,
            Epilogue::default(),
            &[],
            out,
        )?;
        Ok(out)
    }

    /// The conditioning `c` [n, hidden] of `n` rows (`n / images` steps of this graph's images,
    /// step-major): the timestep embedding of `t` [n], plus the guidance embedding [images,
    /// hidden] and the step-size embedding of `step` [n] where the model has them, plus the class
    /// embedding of `y` [images]. Errors when the inputs do not fit the model's embedders.
    #[allow(clippy::too_many_arguments)]
    fn conditioning(
        &self,
        g: &mut Graph,
        prefix: &str,
        n: u32,
        t: TensorId,
        y: TensorId,
        guidance: Option<TensorId>,
        step: Option<TensorId>,
        tap_c: bool,
    ) -> Result<TensorId> {
        let c = &self.config;
        let (b, d, e) = (self.images, c.hidden_size, self.elem);
        let f = DType::from(e);
        let a = |g: &mut Graph, name: &str, shape: &[u32]| g.activation(format!("{prefix}{name}"), shape, f);
        // Per-image rows [images, hidden] repeated over the steps.
        let per_image = |len: u32| {
            let add = Elementwise::new(EltOp::Add, len * d, e);
            if len == b { add } else { add.with_broadcast(Broadcast { cols: b * d, group: len / b }) }
        };
        let mut t2 = self.embed_scalar(g, prefix, "t_embedder", t, &self.t_mlp, n)?;
        // A distilled student's guidance embedding (made once per request, `embed_guidance`) and
        // step-size embedding are added to the timestep's.
        let mismatch = |field: &str, has: bool| Error::Graph {
            message: if has {
                format!("a model with `{field}` needs its input (Conditioning)")
            } else {
                format!("an input for `{field}`, which the model has not")
            },
        };
        if self.g_mlp.is_some() != guidance.is_some() {
            return Err(mismatch("guidance_embed", self.g_mlp.is_some()));
        }
        let step_emb = match (&self.d_mlp, step) {
            (Some(mlp), Some(s)) => Some(self.embed_scalar(g, prefix, "d_embedder", s, mlp, n)?),
            (None, None) => None,
            (mlp, _) => return Err(mismatch("step_embed", mlp.is_some())),
        };
        if let Some(emb) = guidance {
            let sum = a(g, "g_embedder.sum", &[n, d]);
            g.op(format!("{prefix}g_embedder.add"), per_image(n), &[t2, emb, sum])?;
            t2 = sum;
        }
        if let Some(emb) = step_emb {
            let sum = a(g, "d_embedder.sum", &[n, d]);
            g.op(format!("{prefix}d_embedder.add"), Elementwise::new(EltOp::Add, n * d, e), &[t2, emb, sum])?;
            t2 = sum;
        }
        let ye = a(g, "y_emb", &[b, d]);
        let classes = ClassEmbed { images: b, dim: d, classes: c.num_classes, elem: e };
        g.op(format!("{prefix}y_embedder"), classes, &[y, self.y_table, ye])?;
        let cond = if tap_c { g.output(format!("{prefix}c"), &[n, d], f) } else { a(g, "c", &[n, d]) };
        g.op(format!("{prefix}c"), per_image(n), &[t2, ye, cond])?;
        Ok(cond)
    }

    /// The conditioning and the adaLN modulation of every step of a request at once, for
    /// [`Conditioning::EveryStep`]: add it to the setup of a sampling graph. `times` are the
    /// timesteps `[steps × images]` (step-major, sampler time), `y` the labels `[images]`,
    /// `guidance` the guidance embedding [images, hidden] and `step_sizes` `[steps × images]`
    /// where the model has those embedders. Each block's modulation is one matmul over
    /// steps × images rows, so the adaLN weights are read once a request rather than once a step.
    #[allow(clippy::too_many_arguments)]
    pub fn modulation_every_step(
        &self,
        g: &mut Graph,
        prefix: &str,
        steps: u32,
        times: TensorId,
        y: TensorId,
        guidance: Option<TensorId>,
        step_sizes: Option<TensorId>,
    ) -> Result<StepModulation> {
        if steps == 0 {
            return Err(Error::Graph { message: "modulation of every step of zero steps".into() });
        }
        let d = self.config.hidden_size;
        let n = steps.checked_mul(self.images).ok_or_else(|| Error::Graph {
            message: format!("{steps} steps of {} images overflow a tensor", self.images),
        })?;
        let f = DType::from(self.elem);
        let cond = self.conditioning(g, prefix, n, times, y, guidance, step_sizes, false)?;
        let cs = g.activation(format!("{prefix}c.silu"), &[n, d], f);
        g.op(format!("{prefix}c.silu"), Elementwise::new(EltOp::Silu, n * d, self.elem), &[cond, cs])?;
        let project = |g: &mut Graph, name: String, l: &LinearWeights, width: u32| -> Result<TensorId> {
            let out = g.activation(name.clone(), &[n, width], f);
            self.apply(g, &name, l, Input::Float(cs), n, Epilogue::default(), &[], out)?;
            Ok(out)
        };
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for (i, blk) in self.blocks.iter().enumerate() {
            let p = format!("{prefix}blocks.{i}.adaLN");
            blocks.push([
                project(g, format!("{p}.mod"), &blk.modulation, 4 * d)?,
                project(g, format!("{p}.gate_msa"), &blk.gate_msa, d)?,
                project(g, format!("{p}.gate_mlp"), &blk.gate_mlp, d)?,
            ]);
        }
        let final_mod = project(g, format!("{prefix}final_layer.adaLN"), &self.final_mod, 2 * d)?;
        Ok(StepModulation { steps, c: cond, blocks, final_mod })
    }

    /// Adds one forward pass over `io`. `prefix` names this pass's activations; with `taps`
    /// the conditioning vector and the first block's output are graph outputs.
    pub fn forward(&self, g: &mut Graph, prefix: &str, io: ForwardIo, taps: bool) -> Result<ForwardTensors> {
        let ForwardIo { x, out, cond } = io;
        let c = &self.config;
        let (b, d) = (self.images, c.hidden_size);
        let tokens = c.tokens();
        let rows = b * tokens;
        let e = self.elem;
        let f = DType::from(e);
        let geo = PatchGeometry {
            images: b,
            channels: c.in_channels,
            height: c.input_size,
            width: c.input_size,
            patch: c.patch_size,
        };
        let a = |g: &mut Graph, name: &str, shape: &[u32]| g.activation(format!("{prefix}{name}"), shape, f);
        let tap = |g: &mut Graph, name: &str, shape: &[u32]| {
            if taps {
                g.output(format!("{prefix}{name}"), shape, f)
            } else {
                g.activation(format!("{prefix}{name}"), shape, f)
            }
        };

        // An f16 graph converts the f32 sampler state on the way in and out.
        let pixels = [b, c.in_channels, c.input_size, c.input_size];
        let len = b * c.in_channels * c.input_size * c.input_size;
        let (x, model_out) = if e == Elem::F16 {
            let x16 = a(g, "x.f16", &pixels);
            g.op(format!("{prefix}x.f16"), Convert { len, from: Elem::F32, to: Elem::F16 }, &[x, x16])?;
            (x16, a(g, "out.f16", &pixels))
        } else {
            (x, out)
        };

        // Embeddings.
        let patches = a(g, "patches", &[rows, c.patch_dim()]);
        g.op(format!("{prefix}patchify"), Patchify { geometry: geo, elem: e }, &[x, patches])?;
        let h0 = a(g, "x_embed", &[rows, d]);
        self.apply(
            g,
            &format!("{prefix}x_embedder"),
            &self.x_embed,
            Input::Float(patches),
            rows,
            Epilogue::default(),
            &[],
            h0,
        )?;
        let mut h = a(g, "h.embed", &[rows, d]);
        let pos = Elementwise::new(EltOp::Add, rows * d, e).with_broadcast(Broadcast { cols: tokens * d, group: b });
        g.op(format!("{prefix}pos_embed"), pos, &[h0, self.pos_embed, h])?;
        // The conditioning: embedded here and projected in every block, or this step's slice of
        // what the setup made for every step.
        let source = match cond {
            Conditioning::Embedded { t, y, guidance, step } => {
                let cond = self.conditioning(g, prefix, b, t, y, guidance, step, taps)?;
                let cs = a(g, "c.silu", &[b, d]);
                g.op(format!("{prefix}c.silu"), Elementwise::new(EltOp::Silu, b * d, e), &[cond, cs])?;
                ModulationSource::Project { c: cond, cs }
            }
            Conditioning::EveryStep(all) => {
                if taps {
                    return Err(Error::Graph {
                        message: "taps need a forward pass that embeds its own conditioning".into(),
                    });
                }
                ModulationSource::Slice { step: g.step_index(), all }
            }
        };
        // A modulation tensor [images, width] of this pass: `l`'s projection of SiLU(c), or the
        // step's slice of the every-step tensor `pick` names.
        let modulation_of = |g: &mut Graph,
                             name: &str,
                             op: &str,
                             l: &LinearWeights,
                             pick: &dyn Fn(&StepModulation) -> TensorId,
                             width: u32| {
            let m = a(g, name, &[b, width]);
            match &source {
                ModulationSource::Project { cs, .. } => {
                    self.apply(g, op, l, Input::Float(*cs), b, Epilogue::default(), &[], m)?
                }
                ModulationSource::Slice { step, all } => {
                    let slice = StepSlice { len: b * width, steps: all.steps, elem: e };
                    g.op(format!("{op}.step"), slice, &[*step, pick(all), m])?
                }
            }
            Ok::<TensorId, Error>(m)
        };

        // Blocks.
        let modulation = |shift: u32, scale: u32, stride: u32| Modulation {
            rows_per_image: tokens,
            stride,
            shift_offset: shift,
            scale_offset: scale,
        };
        let gated = |gate_rows: u32| Epilogue { residual: true, gate_rows: Some(gate_rows), ..Epilogue::default() };
        let mut block0 = None;
        for (i, blk) in self.blocks.iter().enumerate() {
            let p = format!("{prefix}blocks.{i}");
            let m4 = modulation_of(
                g,
                &format!("blocks.{i}.mod"),
                &format!("{p}.adaLN.mod"),
                &blk.modulation,
                &|all| all.blocks[i][0],
                4 * d,
            )?;
            let gate_msa = modulation_of(
                g,
                &format!("blocks.{i}.gate_msa"),
                &format!("{p}.adaLN.gate_msa"),
                &blk.gate_msa,
                &|all| all.blocks[i][1],
                d,
            )?;
            let gate_mlp = modulation_of(
                g,
                &format!("blocks.{i}.gate_mlp"),
                &format!("{p}.adaLN.gate_mlp"),
                &blk.gate_mlp,
                &|all| all.blocks[i][2],
                d,
            )?;

            // Attention.
            let hn = self.norm_for(g, &format!("{p}.norm1"), &blk.qkv, h, m4, modulation(0, d, 4 * d), rows)?;
            let mut attention =
                Attention { int8: self.int8_attention, ..Attention::dense(b, tokens, c.num_heads, c.head_dim(), e) };
            let mut bind = if let Some(group) = self.qkv_output_group(rows) {
                // Q, K, V as int8, a scale per (token, part, head).
                let q8 = g.activation(format!("{p}.attn.qkv.q8"), &[rows, 3 * d / 4], DType::U32);
                let qs = g.activation(format!("{p}.attn.qkv.scales"), &[rows, 3 * c.num_heads], DType::F32);
                self.apply_int8_out(g, &format!("{p}.attn.qkv"), &blk.qkv, hn, rows, group, [q8, qs])?;
                attention.qkv_i8 = true;
                vec![q8, qs]
            } else {
                let qkv = a(g, &format!("blocks.{i}.qkv"), &[rows, 3 * d]);
                self.apply(g, &format!("{p}.attn.qkv"), &blk.qkv, hn, rows, Epilogue::default(), &[], qkv)?;
                vec![qkv]
            };
            if let (AttentionKind::Neighbourhood { window }, Some(list)) = (c.attention, self.attn_blocks) {
                attention.sparsity = Sparsity::Neighbourhood { grid_h: c.grid(), grid_w: c.grid(), window };
                bind.push(list);
            }
            let att_in = if let Some(group) = self.attention_output_group(rows) {
                // The output as the projection's int8 input, a scale per (token, head).
                let xq = g.activation(format!("{p}.attn.xq"), &[rows, act_row_words(d)], DType::U32);
                let xs = g.activation(format!("{p}.attn.xs"), &[rows, c.num_heads], DType::F32);
                bind.extend([xq, xs]);
                g.op(format!("{p}.attn"), Attention { emit_i8: true, ..attention }, &bind)?;
                Input::Int8 { xq, xs, group }
            } else {
                let att = a(g, &format!("blocks.{i}.attn"), &[rows, d]);
                bind.push(att);
                g.op(format!("{p}.attn"), attention, &bind)?;
                self.input_for(g, &format!("{p}.attn.proj"), &blk.proj, att, rows, d)?
            };
            let h1 = a(g, &format!("blocks.{i}.h_msa"), &[rows, d]);
            self.apply(g, &format!("{p}.attn.proj"), &blk.proj, att_in, rows, gated(tokens), &[h, gate_msa], h1)?;

            // MLP.
            let mh = c.mlp_hidden();
            let norm2 = modulation(2 * d, 3 * d, 4 * d);
            let h2 =
                if i == 0 { tap(g, "block0", &[b, tokens, d]) } else { a(g, &format!("blocks.{i}.out"), &[rows, d]) };
            match (&blk.fc1, &blk.fc2) {
                (LinearWeights::Packed { w: w1, b: b1, format, .. }, LinearWeights::Packed { w: w2, b: b2, .. })
                    if self.fused_mlp =>
                {
                    let fused = MlpBlock {
                        rows,
                        d,
                        hidden: mh,
                        modulation: norm2,
                        eps: Norm::DIT_EPS,
                        format: *format,
                        elem: e,
                    };
                    let mut bind = vec![h1, m4];
                    bind.extend(w1.streams());
                    bind.push(*b1);
                    bind.extend(w2.streams());
                    bind.extend([*b2, gate_mlp, h2]);
                    g.op(format!("{p}.mlp"), fused, &bind)?;
                }
                _ => {
                    let hn = self.norm_for(g, &format!("{p}.norm2"), &blk.fc1, h1, m4, norm2, rows)?;
                    let f1 = a(g, &format!("blocks.{i}.fc1"), &[rows, mh]);
                    let gelu = Epilogue { act: Activation::GeluTanh, ..Epilogue::default() };
                    self.apply(g, &format!("{p}.mlp.fc1"), &blk.fc1, hn, rows, gelu, &[], f1)?;
                    let f_in = self.input_for(g, &format!("{p}.mlp.fc2"), &blk.fc2, f1, rows, mh)?;
                    self.apply(g, &format!("{p}.mlp.fc2"), &blk.fc2, f_in, rows, gated(tokens), &[h1, gate_mlp], h2)?;
                }
            }
            if i == 0 {
                block0 = Some(h2);
            }
            h = h2;
        }

        // Final layer.
        let fm = modulation_of(
            g,
            "final.mod",
            &format!("{prefix}final_layer.adaLN"),
            &self.final_mod,
            &|all| all.final_mod,
            2 * d,
        )?;
        let Input::Float(hn) = self.norm_for(
            g,
            &format!("{prefix}final_layer.norm"),
            &self.final_linear,
            h,
            fm,
            modulation(0, d, 2 * d),
            rows,
        )?
        else {
            unreachable!("the final linear is dense")
        };
        let pout = c.patch_size * c.patch_size * c.out_channels();
        let po = a(g, "final.out", &[rows, pout]);
        self.apply(
            g,
            &format!("{prefix}final_layer.linear"),
            &self.final_linear,
            Input::Float(hn),
            rows,
            Epilogue::default(),
            &[],
            po,
        )?;
        let unpatch = Unpatchify { geometry: geo, token_channels: c.out_channels(), elem: e };
        g.op(format!("{prefix}unpatchify"), unpatch, &[po, model_out])?;
        if e == Elem::F16 {
            g.op(format!("{prefix}out.f32"), Convert { len, from: Elem::F16, to: Elem::F32 }, &[model_out, out])?;
        }
        let c = match source {
            ModulationSource::Project { c, .. } => c,
            ModulationSource::Slice { all, .. } => all.c,
        };
        Ok(ForwardTensors { out, c, block0: block0.unwrap_or(h) })
    }
}

/// Where a forward pass takes its blocks' modulation from.
enum ModulationSource {
    /// Projected here from SiLU(`c`) (`cs`).
    Project { c: TensorId, cs: TensorId },
    /// The step counter's slice of the every-step tensors.
    Slice { step: TensorId, all: StepModulation },
}

/// What a linear reads.
#[derive(Clone, Copy, Debug)]
enum Input {
    Float(TensorId),
    /// Int8 words and their scales: one per row, or (`group` > 0) one per row and group of
    /// `group` values ([`QGemm::x_group`]).
    Int8 {
        xq: TensorId,
        xs: TensorId,
        group: u32,
    },
}
