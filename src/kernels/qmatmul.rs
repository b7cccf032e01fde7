//! Low-bit matmul kernels: activation quantization (A8) and GEMV / small-N over every packed format
//! of `crate::quant` (ternary 2-bit, int8, int4, and the 2:4 sparse ternary, int4 and f16), with
//! f32/f16 or int8 activations.

use crate::error::{Error, Result};
use crate::gpu::{Capabilities, Gpu, PipelineKey};
use crate::kernel::{BufferReq, DispatchSpec, Kernel, Prepared, TensorRef, Work, build, grid_1d, split_rows_multi};
use crate::kernels::Elem;
use crate::kernels::epilogue::Epilogue;
use crate::kernels::matmul::{GEMV_MAX_N, GemvReduce, MatmulShape};
use crate::kernels::work_count::{COUNT_WORK, counters_binding, counting};
use crate::quant::Format;
use crate::shaders::{self, Variant};

/// Weights per step of the low-bit GEMV (one decode unit; see shaders/shared/gemv_q.wgsl).
pub const STEP: u32 = 16;

/// u32 words per row of int8 activations: ceil(K / 16) * 4 (whole `vec4<u32>`, zero past K).
pub fn act_row_words(k: u32) -> u32 {
    k.div_ceil(16) * 4
}

/// Parameter block of shaders/quantize_act.wgsl. Keep in sync with `ActQuantParams` there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ActQuantParams {
    /// Rows (tokens).
    pub n: u32,
    /// Features per row.
    pub k: u32,
    /// Output words per row, [`act_row_words`].
    pub x_row_words: u32,
    /// Padding.
    pub _pad: u32,
}

/// Per-token absmax int8 quantization of activations (BitNet's A8).
/// Buffers: `x` (N x K of `elem`), `xq` (N x [`act_row_words`] u32), `scales` (N f32).
#[derive(Clone, Debug)]
pub struct ActQuant {
    /// Rows.
    pub n: u32,
    /// Features.
    pub k: u32,
    /// Element type of `x`.
    pub elem: Elem,
}

const ACT_QUANT_WG: u32 = 128;
/// vec4 groups of a row per invocation held in registers. Keep in sync with quantize_act.wgsl.
const ACT_QUANT_CACHED: u64 = 12;

impl ActQuant {
    /// Invocations per row: the row's words rounded up to a power of two, at most the workgroup
    /// (quantize_act.wgsl's LANES; the workgroup then holds WG / LANES rows).
    pub fn lanes(&self) -> u32 {
        act_row_words(self.k).next_power_of_two().min(ACT_QUANT_WG)
    }
}

impl Kernel for ActQuant {
    fn name(&self) -> &'static str {
        "quantize_act"
    }

    fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>> {
        if self.n == 0 || self.k == 0 {
            return Err(Error::Shape {
                kernel: self.name(),
                message: format!("empty activations {} x {}", self.n, self.k),
            });
        }
        self.elem.check(self.name(), caps)?;
        let (n, k) = (u64::from(self.n), u64::from(self.k));
        Ok(vec![
            BufferReq::input("x", self.elem.bytes(n * k)),
            BufferReq::output("xq", n * u64::from(act_row_words(self.k)) * 4),
            BufferReq::output("scales", n * 4),
        ])
    }

    fn work(&self, _caps: &Capabilities) -> Result<Work> {
        let (n, k) = (u64::from(self.n), u64::from(self.k));
        let words = u64::from(act_row_words(self.k));
        let eb = self.elem.size();
        let lanes = u64::from(self.lanes());
        // The absmax tree runs for every row slot of every workgroup, the last one's past N too.
        let slots = n.div_ceil(u64::from(ACT_QUANT_WG) / lanes) * (u64::from(ACT_QUANT_WG) / lanes);
        // x is read once when a row fits the invocations' registers (quantize_act.wgsl's
        // CACHED), else twice (absmax, then quantize), as the shader counts (shared/act_quant.wgsl):
        // every invocation of a row divides for the scale; per output value (padding included) a
        // divide, a round and 3 bit operations of packing; the absmax tree over the row's lanes
        // through workgroup memory.
        let values = 4 * words;
        Ok(Work {
            f32_add: n * values,
            f32_mul: n * (values + lanes),
            bit_ops: n * 3 * values,
            dram_read: if words <= ACT_QUANT_CACHED * lanes { 1 } else { 2 } * n * k * eb,
            dram_write: n * (words * 4 + 4),
            sram_write: slots * (lanes + (lanes - 1)) * 4,
            sram_read: slots * (2 * (lanes - 1) + lanes) * 4,
            ..Work::default()
        })
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
        let count = counting(reqs);
        let caps = gpu.capabilities();
        let defines = self.elem.define().into_iter().chain(count.then_some(COUNT_WORK));
        let lanes = self.lanes();
        let key = PipelineKey::new(
            Variant::new(&shaders::QUANTIZE_ACT, defines),
            &[("WG", f64::from(ACT_QUANT_WG)), ("LANES", f64::from(lanes))],
        );
        let mut spec = DispatchSpec::sequential(
            ActQuantParams { n: self.n, k: self.k, x_row_words: act_row_words(self.k), _pad: 0 },
            buffers.iter().zip(reqs).take(3).map(|(b, r)| (*b, r.size)).collect(),
            grid_1d(self.n.div_ceil(ACT_QUANT_WG / lanes), caps),
        );
        spec.storage.extend(counters_binding(buffers, count));
        build(gpu, self.name(), &key, vec![spec], self.work(caps)?)
    }
}

/// Parameter block of the low-bit matmuls. Keep in sync with `QMatmulParams` in
/// shaders/shared/matmul_params_q.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct QMatmulParams {
    /// Rows of W in this dispatch.
    pub m: u32,
    /// Activation rows.
    pub n: u32,
    /// Input features.
    pub k: u32,
    /// First output column this dispatch writes.
    pub m_offset: u32,
    /// Row stride of Y, elements.
    pub ldy: u32,
    /// 16-weight steps per row, ceil(K / 16).
    pub steps: u32,
    /// u32 words per row of the packed weights.
    pub w_row_words: u32,
    /// u32 words per row of the scales.
    pub s_row_words: u32,
    /// u32 words per row of the auxiliary stream (zero points).
    pub a_row_words: u32,
    /// u32 words per row of int8 activations.
    pub x_row_words: u32,
    /// Weights per scale group (int4), else 0.
    pub group: u32,
    /// Rows of Y sharing one gate row (gated epilogue), else 0.
    pub gate_rows: u32,
    /// Words of int8 activations per activation scale (a scale per row and group of K, the
    /// tiled GEMM's grouped activations), else 0 (one scale per row).
    pub x_group_words: u32,
    /// Columns of Y per output scale (the tiled GEMM's int8 output, a scale per row and group),
    /// else 0 (float output).
    pub y_group: u32,
    /// Padding to 16 bytes.
    pub _pad: [u32; 2],
}

/// Row geometry of a packed weight format, in u32 words: weights, scales (0 for
/// [`Format::F16Sparse24`], which has none), auxiliary stream (int4 zero points, 2:4 positions; 0
/// when absent). From [`Format::layout`]; errors as it does (bad group size, K = 0, K too large).
pub fn row_words(format: Format, k: u32) -> Result<(u32, u32, u32)> {
    let l = format.layout(k)?;
    Ok((l.row_words, l.scale_row_words, l.aux_row_words))
}

/// Activations of a low-bit matmul.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Act {
    /// Float activations of this element type (the output has the same type).
    Float(Elem),
    /// Int8 activations from [`ActQuant`] with per-row scales; output of the given type.
    Int8 {
        /// Output element type.
        out: Elem,
    },
}

impl Act {
    pub(crate) fn out(self) -> Elem {
        match self {
            Act::Float(e) | Act::Int8 { out: e } => e,
        }
    }
}

/// Variant of [`QGemv`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QGemvVariant {
    /// Reduction.
    pub reduce: GemvReduce,
    /// 4-wide activation loads (float activations with `k % 4 == 0`).
    pub vec4: bool,
    /// Invocations per workgroup (power of two, 32..=256).
    pub wg: u32,
    /// Rows of W per workgroup.
    pub rows: u32,
}

/// Low-bit GEMV and small-N matmul (N = 1..=8) over packed weights.
///
/// Buffers: `x` (N x K floats, or N x [`act_row_words`] u32 of int8), `x_scales` (int8 activations
/// only, N f32), `w`, `w_scales` (absent for [`Format::F16Sparse24`], which has no scales),
/// `w_zeros` (int4 with zero point) or `w_positions` (the 2:4 formats except Ternary24, whose
/// positions live in its states), `y` (N x M of the output type). The weight streams are
/// `crate::quant::Packed`'s `data`, `scales` and `aux`; those that are empty are not passed.
#[derive(Clone, Debug)]
pub struct QGemv {
    /// Shape.
    pub shape: MatmulShape,
    /// Weight format.
    pub format: Format,
    /// Activations.
    pub act: Act,
    /// Forced variant; `None` chooses with [`QGemv::choose`].
    pub variant: Option<QGemvVariant>,
    /// Fused output epilogue (buffers after `y`).
    pub epilogue: Epilogue,
}

impl QGemv {
    /// A low-bit GEMV of `shape` over `format` weights and `act` activations.
    pub fn new(shape: MatmulShape, format: Format, act: Act) -> Self {
        Self { shape, format, act, variant: None, epilogue: Epilogue::default() }
    }

    /// The same GEMV with an epilogue.
    pub fn with_epilogue(self, epilogue: Epilogue) -> Self {
        Self { epilogue, ..self }
    }

    fn bindings(&self) -> LowBitBindings {
        LowBitBindings {
            shape: self.shape,
            format: self.format,
            act: self.act,
            epilogue: self.epilogue,
            x_group: 0,
            y_group: 0,
        }
    }

    /// The parameter block the kernel binds (of the whole matrix; a dispatch split along M
    /// narrows `m` and `m_offset`), as the CPU twins take it. Errors as the format's layout does.
    pub fn params(&self) -> Result<QMatmulParams> {
        self.bindings().params()
    }

    /// The variant for this device and shape: subgroups when present; vec4 activation loads when
    /// `k % 4 == 0`; 4 rows per workgroup (fewer as N grows); about four steps per invocation.
    pub fn choose(&self, caps: &Capabilities) -> QGemvVariant {
        if let Some(v) = self.variant {
            return v;
        }
        let n = self.shape.n.clamp(1, GEMV_MAX_N);
        let rows = (32 / n).clamp(1, 4);
        let steps = self.shape.k.div_ceil(STEP);
        let reduce = if caps.subgroups { GemvReduce::Subgroup } else { GemvReduce::Shared };
        let mut wg = (steps / 4).max(1).next_power_of_two().clamp(32, 256).min(caps.max_invocations.max(32));
        if reduce == GemvReduce::Shared {
            while rows * n * wg > 4096 {
                wg /= 2;
            }
        }
        let vec4 = matches!(self.act, Act::Float(_)) && self.shape.k.is_multiple_of(4);
        QGemvVariant { reduce, vec4, wg, rows }
    }

    fn shader(&self) -> &'static shaders::Shader {
        match self.format {
            Format::Ternary2 => &shaders::GEMV_TERNARY,
            Format::Int8 => &shaders::GEMV_INT8,
            Format::Int4 { .. } => &shaders::GEMV_INT4,
            Format::Ternary24 => &shaders::GEMV_TERNARY24,
            Format::Int4Sparse24 { .. } => &shaders::GEMV_INT4S24,
            Format::F16Sparse24 => &shaders::GEMV_F16S24,
        }
    }

    /// Whether slices are 2:4 groups (two multiply-adds per 4 weights instead of four).
    fn sparse24(&self) -> bool {
        matches!(self.format, Format::Ternary24 | Format::Int4Sparse24 { .. } | Format::F16Sparse24)
    }

    fn key(&self, v: QGemvVariant, count: bool) -> PipelineKey {
        let int8_act = matches!(self.act, Act::Int8 { .. });
        let zero = matches!(self.format, Format::Int4 { zero_point: true, .. });
        let defines = self
            .act
            .out()
            .define()
            .into_iter()
            .chain((v.vec4 && !int8_act).then_some("VEC4"))
            .chain((v.reduce == GemvReduce::Subgroup).then_some("SUBGROUPS"))
            .chain(int8_act.then_some("ACT_I8"))
            .chain(zero.then_some("ZERO_POINT"))
            .chain(self.epilogue.defines())
            .chain(count.then_some(COUNT_WORK));
        PipelineKey::new(
            Variant::new(self.shader(), defines),
            &[
                ("WG", f64::from(v.wg)),
                ("ROWS", f64::from(v.rows)),
                ("NCOLS", f64::from(self.shape.n)),
                ("ACT", f64::from(self.epilogue.act.code())),
            ],
        )
    }

    /// Decode operations per step and row (see the shaders' `load_step`, `decode_f` and
    /// `decode_i8`; conversions between integers and floats are not counted, address arithmetic
    /// neither): (bit ops, f32 adds, f32 multiplies, i32 adds, i32 multiplies). Bit ops include
    /// compares and selects.
    fn decode_cost(&self) -> (u64, u64, u64, u64, u64) {
        let int8_act = matches!(self.act, Act::Int8 { .. });
        match (self.format, int8_act) {
            // Per 4 weights: shifts and masks of 4 codes, then plus - minus.
            (Format::Ternary2, false) => (4 * 17, 16, 0, 0, 0),
            // Per 4 weights: spread a byte to byte lanes, split plus and minus bits, one multiply.
            (Format::Ternary2, true) => (4 * 15, 0, 0, 0, 4),
            // unpack4xI8: a shift and a sign extension per weight.
            (Format::Int8, false) => (32, 0, 0, 0, 0),
            (Format::Int8, true) => (0, 0, 0, 0, 0),
            // Per 4 weights: select the half word, 4 shifts, 4 masks; subtract the zero point; plus
            // the scale and zero-point unpack of the step.
            (Format::Int4 { .. }, false) => (4 * 9 + 4, 16, 0, 0, 0),
            // ... and pack4xI8 instead of the float subtract.
            (Format::Int4 { .. }, true) => (4 * 19 + 4, 0, 0, 16, 0),
            // Per step: the funnel shift of the vec2 (8). Per group: the state (2), live (2), the
            // four masks (5), sign bits (2), va = live - 2 neg (a multiply-add), vb = live - neg.
            (Format::Ternary24, false) => (8 + 4 * 11, 8, 4, 0, 0),
            // Per group: the state (2), the shift-table nibble (3), the two shifts (4), live (2),
            // sign bits (2 and 1), va and vb (2 subtracts).
            (Format::Ternary24, true) => (8 + 4 * 15, 0, 0, 8, 0),
            // Per step: the scale unpack (4) and the half of the position word (1). Per group:
            // values (shift and 3 masks and shifts) and - 8, positions (shift) and their four masks
            // (7).
            (Format::Int4Sparse24 { .. }, false) => (5 + 4 * 12, 8, 0, 0, 0),
            // ... or the two byte shifts (and, shift and subtract each) and integer values - 8.
            (Format::Int4Sparse24 { .. }, true) => (5 + 4 * 11, 0, 0, 8, 0),
            // Per step: the half of the position word. Per group: the f16 halves (2), positions
            // (shift) and their four masks (7) ...
            (Format::F16Sparse24, false) => (1 + 4 * 10, 0, 0, 0, 0),
            // ... or the two byte shifts (3 each).
            (Format::F16Sparse24, true) => (1 + 4 * 9, 0, 0, 0, 0),
        }
    }
}

impl Kernel for QGemv {
    fn name(&self) -> &'static str {
        "gemv_q"
    }

    fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>> {
        let name = self.name();
        let MatmulShape { m, n, k } = self.shape;
        if m == 0 || n == 0 || k == 0 {
            return Err(Error::Shape { kernel: name, message: format!("empty shape {:?}", self.shape) });
        }
        if n > GEMV_MAX_N {
            return Err(Error::Shape { kernel: name, message: format!("n = {n} > {GEMV_MAX_N}") });
        }
        self.act.out().check(name, caps)?;
        let v = self.choose(caps);
        if v.reduce == GemvReduce::Subgroup && !caps.subgroups {
            return Err(Error::Unsupported { kernel: name, needs: "SUBGROUP (unset MILLIWATT_NO_SUBGROUPS)" });
        }
        if !v.wg.is_power_of_two() || !(32..=256).contains(&v.wg) || v.rows == 0 || v.rows * n > 32 {
            return Err(Error::Shape { kernel: name, message: format!("invalid variant {v:?} for n = {n}") });
        }
        if v.reduce == GemvReduce::Shared && v.rows * n * v.wg > 4096 {
            return Err(Error::Shape { kernel: name, message: format!("variant {v:?} exceeds the reduction space") });
        }
        if v.vec4 && (!k.is_multiple_of(4) || !matches!(self.act, Act::Float(_))) {
            return Err(Error::Shape {
                kernel: name,
                message: "vec4 loads need float activations and k % 4 == 0".into(),
            });
        }
        self.epilogue.check(name, n)?;
        self.bindings().requirements()
    }

    fn work(&self, caps: &Capabilities) -> Result<Work> {
        // As the COUNT_WORK variant counts (shaders/shared/gemv_q.wgsl and the format shaders).
        let v = self.choose(caps);
        let MatmulShape { m, n, k } = self.shape;
        let (_, _, ar) = row_words(self.format, k)?;
        let (m64, n64) = (u64::from(m), u64::from(n));
        let steps = u64::from(k.div_ceil(STEP));
        // Workgroups of every dispatch (one per range of W rows split past the binding limit); rows
        // past M in the last workgroup of a dispatch re-read its last row.
        let groups = self
            .bindings()
            .parts(self.name(), caps)?
            .into_iter()
            .map(|(_, rows)| u64::from(rows.div_ceil(v.rows)))
            .sum::<u64>();
        let rows = groups * u64::from(v.rows);
        let (bits, fadd, fmul, iadd, imul) = self.decode_cost();
        // Per row and step, the loads of `load_step`: the weight words (Ternary24's vec2 holds three
        // steps and each of them loads it), the group scale, zero-point and position words.
        let step_bytes = match self.format {
            Format::Ternary2 => 4,
            Format::Int8 => 16,
            Format::Int4 { .. } => 8 + 4 * (1 + u64::from(ar > 0)),
            Format::Ternary24 => 8,
            Format::Int4Sparse24 { .. } => 12,
            Format::F16Sparse24 => 20,
        };
        // The per-row scale, read for every output (the group-scaled formats have none).
        let row_scale_bytes = match self.format {
            Format::Ternary2 | Format::Int8 | Format::Ternary24 => m64 * n64 * 4,
            _ => 0,
        };
        // Every workgroup reads all activations: K values of a float row (the tail of the last
        // step is not loaded), or whole 16-byte steps of int8 plus the row's scale per output.
        let x_bytes = match self.act {
            Act::Float(e) => groups * n64 * u64::from(k) * e.size(),
            Act::Int8 { .. } => groups * n64 * steps * 16 + m64 * n64 * 4,
        };
        let out = self.act.out().size();
        let mut work = Work {
            dram_read: rows * steps * step_bytes + row_scale_bytes + x_bytes,
            dram_write: m64 * n64 * out,
            bit_ops: rows * steps * bits,
            f32_add: rows * steps * fadd,
            f32_mul: rows * steps * fmul,
            i32_add: rows * steps * iadd,
            i32_mul: rows * steps * imul,
            ..Work::default()
        };
        // Per step, row and column: the four slice products, their sum and the scaled accumulation.
        // A dense float slice is a dot of four (4 multiplies, 3 adds), an int8 one a dot4I8Packed
        // (4 int8 multiplies, 3 i32 adds). The 2:4 formats do two multiply-adds per slice instead
        // of four, and pick their two activations with 4 selects (float) or 4 shifts (int8 bytes;
        // F16Sparse24 then converts the two bytes to f32 and multiplies in f32, counted with the
        // shifts as 6 bit ops per slice).
        let per = rows * steps * n64;
        let scaled_sum = Work { f32_mul: per, f32_add: per, ..Work::default() };
        work += scaled_sum
            + match (self.act, self.sparse24()) {
                (Act::Float(_), false) => Work { f32_mul: per * 16, f32_add: per * 15, ..Work::default() },
                (Act::Int8 { .. }, false) => Work { i8_mul: per * 16, i32_add: per * 15, ..Work::default() },
                (Act::Float(_), true) => {
                    Work { f32_mul: per * 8, f32_add: per * 7, bit_ops: per * 16, ..Work::default() }
                }
                (Act::Int8 { .. }, true) if self.format == Format::F16Sparse24 => {
                    Work { f32_mul: per * 8, f32_add: per * 7, bit_ops: per * 24, ..Work::default() }
                }
                (Act::Int8 { .. }, true) => {
                    Work { i8_mul: per * 8, i32_add: per * 7, bit_ops: per * 16, ..Work::default() }
                }
            };
        // The workgroup reduction (as the dense GEMV), each sum read back once, and the row and
        // activation scales applied to it.
        work += v.reduce.work(caps, u64::from(v.wg), u64::from(v.rows) * n64) * groups;
        work += Work { f32_mul: m64 * n64 * 2, sram_read: m64 * n64 * 4, ..Work::default() };
        Ok(work + self.epilogue.work(n, m, self.act.out()))
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
        let caps = gpu.capabilities();
        let v = self.choose(caps);
        let specs =
            self.bindings().specs(self.name(), caps, reqs, buffers, |count| grid_1d(count.div_ceil(v.rows), caps))?;
        build(gpu, self.name(), &self.key(v, counting(reqs)), specs, self.work(caps)?)
    }
}

/// How the low-bit matmuls (GEMV and GEMM) bind the caller's buffers, which come in the order of
/// their requirements: activations (x at binding 1, x_scales at 2 for int8 activations), the
/// weight streams present (w 3, w_scales 4, w_zeros / w_positions 5), y (6), then the epilogue's
/// tensors (7 bias, 8 residual, 9 gate). Weight streams are split along M together, one dispatch
/// and parameter block per row range.
pub(crate) struct LowBitBindings {
    pub shape: MatmulShape,
    pub format: Format,
    pub act: Act,
    pub epilogue: Epilogue,
    /// Int8 activations per activation scale (the tiled GEMM's grouped activations), else 0.
    pub x_group: u32,
    /// Columns of Y per output scale (the tiled GEMM's int8 output), else 0.
    pub y_group: u32,
}

impl LowBitBindings {
    /// The parameter block of the whole matrix (a split dispatch narrows `m` and `m_offset`).
    pub(crate) fn params(&self) -> Result<QMatmulParams> {
        let MatmulShape { m, n, k } = self.shape;
        let (wr, sr, ar) = row_words(self.format, k)?;
        Ok(QMatmulParams {
            m,
            n,
            k,
            m_offset: 0,
            ldy: m,
            steps: k.div_ceil(STEP),
            w_row_words: wr,
            s_row_words: sr,
            a_row_words: ar,
            x_row_words: act_row_words(k),
            group: match self.format {
                Format::Int4 { group, .. } | Format::Int4Sparse24 { group } => group,
                _ => 0,
            },
            gate_rows: self.epilogue.gate_rows.unwrap_or(0),
            x_group_words: self.x_group / 4,
            y_group: self.y_group,
            _pad: [0; 2],
        })
    }

    /// Activation scales per row: one, or K / `x_group`.
    pub(crate) fn x_groups(&self) -> u32 {
        if self.x_group == 0 { 1 } else { self.shape.k.div_ceil(self.x_group) }
    }

    /// The caller's buffers, in the order [`LowBitBindings::specs`] binds them.
    pub(crate) fn requirements(&self) -> Result<Vec<BufferReq>> {
        let MatmulShape { m, n, k } = self.shape;
        let (wr, sr, ar) = row_words(self.format, k)?;
        let (m64, n64, k64) = (u64::from(m), u64::from(n), u64::from(k));
        let mut reqs = match self.act {
            Act::Float(e) => vec![BufferReq::input("x", e.bytes(n64 * k64))],
            Act::Int8 { .. } => vec![
                BufferReq::input("x", n64 * u64::from(act_row_words(k)) * 4),
                BufferReq::input("x_scales", n64 * u64::from(self.x_groups()) * 4),
            ],
        };
        reqs.push(BufferReq::weight("w", m64 * u64::from(wr) * 4));
        if sr > 0 {
            reqs.push(BufferReq::weight("w_scales", m64 * u64::from(sr) * 4));
        }
        if ar > 0 {
            let name = if matches!(self.format, Format::Int4 { .. }) { "w_zeros" } else { "w_positions" };
            reqs.push(BufferReq::weight(name, m64 * u64::from(ar) * 4));
        }
        if self.y_group > 0 {
            reqs.push(BufferReq::output("y", n64 * m64));
            reqs.push(BufferReq::output("y_scales", n64 * (m64 / u64::from(self.y_group)) * 4));
        } else {
            reqs.push(BufferReq::output("y", self.act.out().bytes(n64 * m64)));
        }
        reqs.extend(self.epilogue.requirements(n, m, self.act.out()).into_iter().map(|(_, r)| r));
        Ok(reqs)
    }

    /// The weight streams present (absent ones, like F16Sparse24's scales or most formats' aux,
    /// are neither passed nor declared by the shaders): (binding, bytes per row of W).
    fn streams(&self) -> Result<Vec<(u32, u64)>> {
        let (wr, sr, ar) = row_words(self.format, self.shape.k)?;
        Ok([(3u32, wr), (4, sr), (5, ar)]
            .into_iter()
            .filter(|&(_, w)| w > 0)
            .map(|(b, w)| (b, u64::from(w) * 4))
            .collect())
    }

    /// The ranges of W rows (first, count) of the dispatches: one, or several where the weight
    /// streams pass the device's storage-binding limit.
    pub(crate) fn parts(&self, name: &'static str, caps: &Capabilities) -> Result<Vec<(u32, u32)>> {
        let row_bytes: Vec<u64> = self.streams()?.iter().map(|&(_, bytes)| bytes).collect();
        split_rows_multi(name, caps, self.shape.m, &row_bytes)
    }

    pub(crate) fn specs<'a>(
        &self,
        name: &'static str,
        caps: &Capabilities,
        reqs: &[BufferReq],
        buffers: &[TensorRef<'a>],
        grid: impl Fn(u32) -> [u32; 3],
    ) -> Result<Vec<DispatchSpec<'a, QMatmulParams>>> {
        let MatmulShape { m, n, .. } = self.shape;
        let streams = self.streams()?;
        let n_act = if matches!(self.act, Act::Int8 { .. }) { 2 } else { 1 };
        let acts: Vec<(u32, TensorRef<'a>, u64)> =
            buffers[..n_act].iter().zip(reqs).zip(1u32..).map(|((b, r), i)| (i, *b, r.size)).collect();
        let weights = &buffers[n_act..n_act + streams.len()];
        let y_index = n_act + streams.len();
        let mut ys = vec![(6, buffers[y_index], reqs[y_index].size)];
        if self.y_group > 0 {
            ys.push((10, buffers[y_index + 1], reqs[y_index + 1].size));
        }
        let extra: Vec<(u32, TensorRef<'a>, u64)> = self
            .epilogue
            .requirements(n, m, self.act.out())
            .into_iter()
            .zip(&buffers[y_index + ys.len()..])
            .map(|((binding, r), b)| (binding, *b, r.size))
            .collect();
        let whole = self.params()?;
        Ok(self
            .parts(name, caps)?
            .into_iter()
            .map(|(first, count)| {
                let mut storage = acts.clone();
                for (b, &(binding, bytes)) in weights.iter().zip(&streams) {
                    storage.push((
                        binding,
                        TensorRef { buffer: b.buffer, offset: b.offset + u64::from(first) * bytes },
                        u64::from(count) * bytes,
                    ));
                }
                storage.extend(ys.iter().copied());
                storage.extend(extra.iter().copied());
                storage.extend(counters_binding(buffers, counting(reqs)));
                let params = QMatmulParams { m: count, m_offset: first, ..whole };
                DispatchSpec { params, storage, views: Vec::new(), workgroups: grid(count) }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> Capabilities {
        Capabilities {
            f16: true,
            subgroups: true,
            subgroup_min_size: 8,
            subgroup_max_size: 8,
            packed_dot4: true,
            timestamps: false,
            timestamps_inside: false,
            pipeline_cache: false,
            max_storage_binding: 1 << 27,
            max_buffer_size: 1 << 31,
            max_workgroup_storage: 32768,
            max_invocations: 256,
            max_workgroups_per_dim: 65535,
            max_storage_buffers: 8,
            storage_offset_alignment: 32,
        }
    }

    #[test]
    fn sparse_formats_do_half_the_multiply_adds() {
        let shape = MatmulShape::new(64, 2, 4096);
        let work = |format, act| QGemv::new(shape, format, act).work(&caps()).unwrap();
        let f = Act::Float(Elem::F32);
        let i = Act::Int8 { out: Elem::F32 };
        let int4 = Format::Int4 { group: 128, zero_point: false };
        for (sparse, dense) in [(Format::Ternary24, Format::Ternary2), (Format::Int4Sparse24 { group: 128 }, int4)] {
            // Per step and column: 8 products instead of 16 (the step scale and the decode aside).
            assert!(work(sparse, i).i8_mul * 2 == work(dense, i).i8_mul, "{sparse}");
            assert!(work(sparse, f).f32_mul < work(dense, f).f32_mul, "{sparse}");
        }
        assert!(work(Format::F16Sparse24, f).f32_mul < work(Format::Int8, f).f32_mul);
    }

    #[test]
    fn weight_bytes_follow_the_formats() {
        let shape = MatmulShape::new(64, 1, 4096);
        let read = |format| QGemv::new(shape, format, Act::Int8 { out: Elem::F32 }).work(&caps()).unwrap().dram_read;
        // 2:4 ternary's 20 bits per 16 weights sit in whole vec2 per 3 steps.
        assert!(read(Format::Ternary24) < read(Format::Ternary2) * 3 / 2);
        assert!(read(Format::F16Sparse24) < read(Format::Int8) * 2);
    }

    #[test]
    fn streams_follow_the_format() {
        let shape = MatmulShape::new(8, 1, 100);
        let names = |format| -> Vec<&'static str> {
            QGemv::new(shape, format, Act::Float(Elem::F32))
                .requirements(&caps())
                .unwrap()
                .iter()
                .map(|r| r.name)
                .collect()
        };
        assert_eq!(names(Format::F16Sparse24), ["x", "w", "w_positions", "y"]);
        assert_eq!(names(Format::Int4Sparse24 { group: 64 }), ["x", "w", "w_scales", "w_positions", "y"]);
        assert_eq!(names(Format::Int4 { group: 64, zero_point: true }), ["x", "w", "w_scales", "w_zeros", "y"]);
        assert_eq!(names(Format::Ternary24), ["x", "w", "w_scales", "y"]);
        // Bad group sizes are errors, not panics.
        assert!(
            QGemv::new(shape, Format::Int4Sparse24 { group: 48 }, Act::Float(Elem::F32)).requirements(&caps()).is_err()
        );
    }
}
