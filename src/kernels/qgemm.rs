//! Tiled low-bit GEMMs (N >= 32; 256 tokens is the DiT case): W1.58A8 and W8A8 with
//! `dot4I8Packed` and i32 accumulation (gemm_ternary_a8.wgsl, gemm_int8_a8.wgsl), and ternary, int8
//! and int4 weights with f32/f16 activations dequantized into workgroup-memory tiles
//! (gemm_qf.wgsl). Scales are applied in the epilogue, which can also fuse bias, activation and
//! (gated) residual.

use crate::error::{Error, Result};
use crate::gpu::{Capabilities, Gpu, PipelineKey};
use crate::kernel::{BufferReq, Kernel, Prepared, TensorRef, Work, build};
use crate::kernels::Elem;
use crate::kernels::epilogue::Epilogue;
use crate::kernels::matmul::{GemmTile, MatmulShape};
use crate::kernels::qmatmul::{Act, LowBitBindings, QMatmulParams, act_row_words, row_words};
use crate::kernels::work_count::{COUNT_WORK, counting};
use crate::quant::Format;
use crate::shaders::{self, Variant};

/// Tiled low-bit GEMM. Buffers: `x` (floats N x K, or int8 words N x [`act_row_words`]),
/// `x_scales` (int8 activations only), `w`, `w_scales`, `w_zeros` (int4 with zero point only),
/// `y` (N x M; with [`QGemm::y_group`] int8 words N x M / 4 and `y_scales`, N x M / `y_group`),
/// then the epilogue's `bias`, `residual`, `gate` as enabled.
#[derive(Clone, Debug)]
pub struct QGemm {
    /// Shape.
    pub shape: MatmulShape,
    /// Weight format: Ternary2, Int8, Ternary24 or Int4 (any activations; int8 activations need
    /// int4 groups that are a multiple of 64).
    pub format: Format,
    /// Activations.
    pub act: Act,
    /// Fused output epilogue.
    pub epilogue: Epilogue,
    /// 2:4 weights (Ternary24) with int8 activations only: skip the zero half of each group's
    /// multiply-adds (its two kept weights' bytes extracted and added with their signs) instead of
    /// a dense dot4 over the group. Fewer, cheaper operations on the ledger; more instructions
    /// where `dot4I8Packed` is one (BENCHMARKS.md has both).
    pub skip_zeros: bool,
    /// Int8 activations with a scale per row and group of `x_group` values of K (`x_scales` is
    /// N x K / `x_group`, row-major), e.g. the attention's output quantized per token and head
    /// ([`crate::kernels::Attention::emit_i8`]); 0: one scale per row. 16, 32 or a multiple of 64
    /// dividing K (so a group divides the 64-wide K slice or is made of them), at most
    /// [`QGemm::X_GROUPS_MAX`] groups, not with int4's group-wise weight scales.
    pub x_group: u32,
    /// Write Y as int8 with a scale per row and group of `y_group` columns (16, 32 or 64, dividing
    /// M), after the bias and activation: e.g. the qkv projection's output per (token, head) for
    /// attention to read ([`crate::kernels::Attention::qkv_i8`]); 0: Y in the element type. Int8
    /// activations; no residual or gate.
    pub y_group: u32,
}

impl QGemm {
    /// Tile of the shaders. Keep in sync with gemm_a8.wgsl (64 x 64, 64 int8 of K per slice) and
    /// gemm_tile.wgsl (64 x 64, 16 of K per slice).
    pub const TILE: GemmTile = GemmTile { bm: 64, bn: 64, bk: 16 };

    /// Largest K of the X-resident variant (gemm_a8.wgsl's XRES_WORDS words of int8).
    pub const X_RESIDENT_MAX_K: u32 = 256;

    /// Fewest 64-row tiles of X for which the int8-activation GEMM keeps X resident and walks all
    /// of M in each workgroup (so X is read once, not once per 64 columns): with fewer, the
    /// dispatch would have too few workgroups to fill a GPU.
    pub const X_RESIDENT_MIN_ROW_TILES: u32 = 64;

    /// Most activation scale groups per row ([`QGemm::x_group`]; gemm_a8.wgsl's X_GROUPS_MAX).
    pub const X_GROUPS_MAX: u32 = 16;

    /// Whether this GEMM runs the X-resident variant: int8 activations, K at most
    /// [`QGemm::X_RESIDENT_MAX_K`], more than one tile of M and at least
    /// [`QGemm::X_RESIDENT_MIN_ROW_TILES`] tiles of N.
    pub fn x_resident(&self) -> bool {
        let MatmulShape { m, n, k } = self.shape;
        self.int8_act()
            && act_row_words(k) * 4 <= Self::X_RESIDENT_MAX_K
            && m > Self::TILE.bm
            && n.div_ceil(Self::TILE.bn) >= Self::X_RESIDENT_MIN_ROW_TILES
    }

    /// Whether activation groups of `x_group` values fit a K of `k` ([`QGemm::x_group`]): 16, 32
    /// or a multiple of 64, dividing K, at most [`QGemm::X_GROUPS_MAX`] groups.
    pub fn x_group_fits(k: u32, x_group: u32) -> bool {
        (x_group == 16 || x_group == 32 || (x_group > 0 && x_group.is_multiple_of(64)))
            && k.is_multiple_of(x_group)
            && k / x_group <= Self::X_GROUPS_MAX
    }

    /// Whether output groups of `y_group` columns fit an M of `m` ([`QGemm::y_group`]): 16, 32 or
    /// 64, dividing M.
    pub fn y_group_fits(m: u32, y_group: u32) -> bool {
        [16, 32, 64].contains(&y_group) && m.is_multiple_of(y_group)
    }

    /// What makes this GEMM's options unrunnable, if anything: zero skipping, grouped activation
    /// scales or int8 output where the format, activations, shape or epilogue do not allow them.
    fn fault(&self) -> Option<String> {
        let MatmulShape { m, k, .. } = self.shape;
        let int8 = self.int8_act();
        if self.skip_zeros && !(self.format == Format::Ternary24 && int8) {
            Some(format!("zero skipping is for Ternary24 weights with int8 activations, not {:?}", self.act))
        } else if self.x_group > 0 && !int8 {
            Some(format!("grouped activation scales are for int8 activations, not {:?}", self.act))
        } else if self.x_group > 0 && matches!(self.format, Format::Int4 { .. }) {
            Some("grouped activation scales with group-wise weight scales".to_string())
        } else if self.x_group > 0 && !Self::x_group_fits(k, self.x_group) {
            Some(format!(
                "activation groups of {} must be 16, 32 or a multiple of 64 dividing K = {k}, at most {} of them",
                self.x_group,
                Self::X_GROUPS_MAX
            ))
        } else if self.y_group > 0 && !int8 {
            Some(format!("int8 output is for int8 activations, not {:?}", self.act))
        } else if self.y_group > 0 && !Self::y_group_fits(m, self.y_group) {
            Some(format!("output groups of {} must be 16, 32 or 64 and divide M = {m}", self.y_group))
        } else if self.y_group > 0 && (self.epilogue.residual || self.epilogue.gate_rows.is_some()) {
            Some("int8 output with a residual or gate epilogue".to_string())
        } else {
            None
        }
    }

    /// A low-bit GEMM of `shape`.
    pub fn new(shape: MatmulShape, format: Format, act: Act) -> Self {
        Self { shape, format, act, epilogue: Epilogue::default(), skip_zeros: false, x_group: 0, y_group: 0 }
    }

    /// The same GEMM writing int8 with a scale per row and group of `y_group` columns
    /// ([`QGemm::y_group`]).
    pub fn with_int8_output(self, y_group: u32) -> Self {
        Self { y_group, ..self }
    }

    /// The same GEMM taking activations with a scale per row and group of `x_group` values of K
    /// ([`QGemm::x_group`]).
    pub fn with_x_group(self, x_group: u32) -> Self {
        Self { x_group, ..self }
    }

    /// The same GEMM skipping the zero half of 2:4 weights ([`QGemm::skip_zeros`]).
    pub fn with_skip_zeros(self, on: bool) -> Self {
        Self { skip_zeros: on, ..self }
    }

    /// The same GEMM with an epilogue.
    pub fn with_epilogue(self, epilogue: Epilogue) -> Self {
        Self { epilogue, ..self }
    }

    fn out(&self) -> Elem {
        match self.act {
            Act::Float(e) | Act::Int8 { out: e } => e,
        }
    }

    fn int8_act(&self) -> bool {
        matches!(self.act, Act::Int8 { .. })
    }

    fn key(&self, count: bool) -> Result<PipelineKey> {
        if let Some(message) = self.fault() {
            return Err(Error::Format { format: format!("{:?}", self.format), message });
        }
        let (name, defines): (&'static shaders::Shader, Vec<&'static str>) = match (self.format, self.int8_act()) {
            (Format::Ternary2, true) => (&shaders::GEMM_TERNARY_A8, vec![]),
            (Format::Int8, true) => (&shaders::GEMM_INT8_A8, vec![]),
            (Format::Ternary24, true) => {
                (&shaders::GEMM_TERNARY24_A8, self.skip_zeros.then_some("SKIP_ZEROS").into_iter().collect())
            }
            (Format::Int4 { group, zero_point }, true) if group.is_multiple_of(64) => {
                (&shaders::GEMM_INT4_A8, zero_point.then_some("ZERO_POINT").into_iter().collect())
            }
            (Format::Ternary2, false) => (&shaders::GEMM_QF, vec!["W_TERNARY"]),
            (Format::Ternary24, false) => (&shaders::GEMM_QF, vec!["W_TERNARY24"]),
            (Format::Int8, false) => (&shaders::GEMM_QF, vec!["W_INT8"]),
            (Format::Int4 { zero_point, .. }, false) => {
                (&shaders::GEMM_QF, zero_point.then_some("ZERO_POINT").into_iter().collect())
            }
            (other, _) => {
                return Err(Error::Format {
                    format: format!("{other:?}"),
                    message: format!("no tiled GEMM for this format with {:?} activations", self.act),
                });
            }
        };
        let vec4 = !self.int8_act() && self.shape.k.is_multiple_of(4);
        let defines =
            self.out().define().into_iter().chain(defines).chain(vec4.then_some("VEC4")).chain(self.epilogue.defines());
        let defines = defines
            .chain(count.then_some(COUNT_WORK))
            .chain(self.x_resident().then_some("X_RESIDENT"))
            .chain((self.x_group > 0).then_some("X_GROUPED"))
            .chain((self.y_group > 0).then_some("Y_I8"));
        let act = ("ACT", f64::from(self.epilogue.act.code()));
        Ok(if self.x_group > 0 {
            PipelineKey::new(Variant::new(name, defines), &[act, ("XGW", f64::from(self.x_group / 4))])
        } else {
            PipelineKey::new(Variant::new(name, defines), &[act])
        })
    }

    fn layout(&self) -> Result<(u32, u32, u32)> {
        row_words(self.format, self.shape.k)
    }

    fn bindings(&self) -> LowBitBindings {
        LowBitBindings {
            shape: self.shape,
            format: self.format,
            act: self.act,
            epilogue: self.epilogue,
            x_group: self.x_group,
            y_group: self.y_group,
        }
    }

    /// The parameter block the kernel binds (of the whole matrix; a dispatch split along M
    /// narrows `m` and `m_offset`), as the CPU twins take it. Errors as the format's layout does.
    pub fn params(&self) -> Result<QMatmulParams> {
        self.bindings().params()
    }
}

impl Kernel for QGemm {
    fn name(&self) -> &'static str {
        "gemm_q"
    }

    fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>> {
        let name = self.name();
        let MatmulShape { m, n, k } = self.shape;
        if m == 0 || n == 0 || k == 0 {
            return Err(Error::Shape { kernel: name, message: format!("empty shape {:?}", self.shape) });
        }
        self.out().check(name, caps)?;
        self.key(false)?;
        self.epilogue.check(name, n)?;
        self.bindings().requirements()
    }

    fn work(&self, caps: &Capabilities) -> Result<Work> {
        // As the COUNT_WORK variants count (shaders/shared/gemm_a8.wgsl, gemm_tile.wgsl and the
        // format shaders): loads as the instructions name them, so a weight word that several
        // staging loads share is counted each time (the ledger prices what repeats as cache
        // traffic when the footprint fits the L2).
        let MatmulShape { m, n, k } = self.shape;
        let (_, _, ar) = self.layout()?;
        let (m64, n64) = (u64::from(m), u64::from(n));
        let tiles_m = u64::from(m.div_ceil(64));
        let tiles_n = u64::from(n.div_ceil(64));
        let groups = tiles_m * tiles_n;
        let outputs = m64 * n64;
        let out = self.out().size();
        let mut work = self.epilogue.work_tiled(n, m, tiles_n, self.out());
        if self.y_group > 0 {
            // Int8 output: per row and quad of columns a scale (act_scale, from the quads' absmax
            // through workgroup memory: each invocation writes its 4 rows' maxima and reads its
            // group's) and one quantize4; the words and one scale per group written.
            let quads = outputs / 4;
            let group_quads = u64::from(self.y_group / 4);
            work.dram_write += outputs + n64 * (m64 / u64::from(self.y_group)) * 4;
            work.f32_mul += quads * 5;
            work.f32_add += quads * 4;
            work.bit_ops += quads * 12;
            work.sram_write += groups * 256 * 16;
            work.sram_read += groups * 256 * 4 * group_quads * 4;
        } else {
            work.dram_write += outputs * out;
        }
        // The per-row scale of W (int4 scales its groups instead), loaded once per invocation for
        // its four columns: by the 16 invocations sharing a column, in every tile of N.
        let row_scaled = !matches!(self.format, Format::Int4 { .. });
        if row_scaled && !self.int8_act() {
            work.dram_read += tiles_n * 16 * m64 * 4;
        }
        if self.int8_act() {
            // Slices of 64 K; every workgroup stages its rows of X (16 int8 per invocation) and W
            // (decoded to int8 in the same shape), then 16 x 16 dot4 per invocation per slice word.
            let words = u64::from(act_row_words(k));
            let slices = words.div_ceil(16);
            // Staging loads per row of W and tile of N, for its words / 4 vec4s of int8.
            let w_row_bytes = match self.format {
                Format::Ternary2 => words,                                    // one u32 of codes per vec4
                Format::Ternary24 => words * 4,                               // one u32 per group
                Format::Int4 { .. } => words * 2 + u64::from(ar > 0) * words, // two u32, a zero-point word
                _ => words * 4,                                               // the vec4 itself
            };
            // X rows per tile of M (once with X resident); the row scales of W (not int4) and each
            // row's activation scale loaded once per workgroup into 64 slots of workgroup memory,
            // read by the 16 invocations sharing a column or row.
            // (A dispatch split along M past the binding limit reads X once per part.)
            let x_passes =
                if self.x_resident() { self.bindings().parts(self.name(), caps)?.len() as u64 } else { tiles_m };
            // Activation scales: one per row, or one per row and group (X_GROUPED: all of a row's
            // groups staged with it, zero past N, and read as a vec4 of four rows per invocation
            // at the end of each group of the padded K, where the sums are folded into f32).
            let x_groups = u64::from(self.bindings().x_groups());
            work.dram_read += x_passes * n64 * words * 4 + tiles_n * m64 * w_row_bytes + x_passes * n64 * x_groups * 4;
            work.sram_write += x_passes * tiles_n * 64 * x_groups * 4;
            if self.x_group > 0 {
                let folds = slices * 16 / u64::from(self.x_group / 4);
                work.sram_read += groups * 256 * folds * 16;
                work.f32_mul += groups * 256 * folds * 16;
                work.f32_add += groups * 256 * folds * 16;
            } else {
                work.sram_read += tiles_m * 16 * n64 * 4;
            }
            if row_scaled {
                work.dram_read += tiles_n * m64 * 4;
                work.sram_write += groups * 64 * 4;
                work.sram_read += tiles_n * 16 * m64 * 4;
            }
            let padded_words = groups * 64 * 64 * slices * 16;
            if self.skip_zeros {
                // Per (output, word): two byte extractions and 4 adds; per invocation and word the
                // four rows' picks decoded once (16 bit operations).
                work.bit_ops += padded_words * 2 + groups * 256 * slices * 16 * 16;
                work.i32_add += padded_words * 4;
            } else {
                work.i8_mul += padded_words * 4;
                work.i32_add += padded_words * 4;
            }
            // Staging: 16 KiB a slice, half X (once with X resident), half W.
            work.sram_write += (x_passes * tiles_n + groups) * slices * 16 * 64 * 4;
            work.sram_read += groups * slices * 16 * 256 * 2 * 16;
            let staged_words = tiles_n * m64 * words;
            match self.format {
                // Decoding one byte of codes to four int8: 15 bit operations and a multiply.
                Format::Ternary2 => {
                    work.bit_ops += staged_words * 15;
                    work.i32_mul += staged_words;
                }
                // A group's state to one packed int8 word: extraction, positions, values, shifts;
                // or to its picks.
                Format::Ternary24 => work.bit_ops += staged_words * if self.skip_zeros { 10 } else { 16 },
                Format::Int4 { .. } => {
                    // Four nibbles to four int8 (shift, mask, subtract, pack), per staged word.
                    work.bit_ops += staged_words * 14;
                    work.i32_add += staged_words * 4;
                    // Each slice's sums scaled into f32 accumulators (one fma per output) by the
                    // group scales of the invocation's four rows, then the activation scale.
                    let padded_outputs = groups * 64 * 64;
                    work.f32_mul += padded_outputs * slices + outputs;
                    work.f32_add += padded_outputs * slices;
                    work.dram_read += groups * 256 * slices * 4 * 4;
                }
                _ => {}
            }
            if row_scaled {
                // Output: the row and activation scale multiplies (the row scale alone where the
                // activation scales were folded in per group).
                work.f32_mul += if self.x_group > 0 { outputs } else { 2 * outputs };
            }
        } else {
            let GemmTile { bm, bn, bk } = Self::TILE;
            let slices = u64::from(k.div_ceil(bk));
            let x_elem = self.out().size();
            let k64 = u64::from(k);
            // One staging load of W per 4 weights below K: a u32 of codes, states, int8 or
            // nibbles, plus int4's scale (and zero-point) word.
            let staged = tiles_n * m64 * u64::from(k.div_ceil(4));
            let stage_bytes = match self.format {
                Format::Int4 { .. } => 4 * (2 + u64::from(ar > 0)),
                _ => 4,
            };
            work.dram_read += tiles_m * n64 * k64 * x_elem + staged * stage_bytes;
            let padded_macs = groups * u64::from(bm * bn) * slices * u64::from(bk);
            work += Work::f32_mul_add(padded_macs);
            // Decode per staged group of 4 weights.
            match self.format {
                Format::Ternary2 => {
                    work.bit_ops += staged * 13;
                    work.f32_add += staged * 4;
                }
                Format::Int8 => work.bit_ops += staged * 8,
                Format::Ternary24 => {
                    // State extraction, positions and values, and the two lane selects.
                    work.bit_ops += staged * 12;
                    work.f32_add += staged * 6;
                    work.f32_mul += staged * 2;
                }
                _ => {
                    work.bit_ops += staged * 13;
                    work.f32_add += staged * 4;
                    work.f32_mul += staged * 4;
                }
            }
            if row_scaled {
                work.f32_mul += outputs;
            }
            let eb = self.out().size();
            work.sram_write += groups * slices * u64::from(bk * (bm + bn)) * eb;
            work.sram_read += groups * slices * u64::from(bk) * 256 * 2 * 4 * eb;
        }
        Ok(work)
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
        let caps = gpu.capabilities();
        let n = self.shape.n;
        // The X-resident variant walks M inside each workgroup.
        let resident = self.x_resident();
        if self.y_group > 0 && self.bindings().parts(self.name(), caps)?.len() > 1 {
            return Err(Error::Unsupported {
                kernel: self.name(),
                needs: "int8 output from weights within one storage binding (no split along M)",
            });
        }
        let specs = self.bindings().specs(self.name(), caps, reqs, buffers, |count| {
            [if resident { 1 } else { count.div_ceil(64) }, n.div_ceil(64), 1]
        })?;
        build(gpu, self.name(), &self.key(counting(reqs))?, specs, self.work(caps)?)
    }
}
