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
use crate::quant::Format;
use crate::shaders::{self, Variant};

/// Tiled low-bit GEMM. Buffers: `x` (floats N x K, or int8 words N x [`act_row_words`]),
/// `x_scales` (int8 activations only), `w`, `w_scales`, `w_zeros` (int4 with zero point only),
/// `y` (N x M), then the epilogue's `bias`, `residual`, `gate` as enabled.
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
}

impl QGemm {
    /// Tile of the shaders. Keep in sync with gemm_a8.wgsl (64 x 64, 64 int8 of K per slice) and
    /// gemm_tile.wgsl (64 x 64, 16 of K per slice).
    pub const TILE: GemmTile = GemmTile { bm: 64, bn: 64, bk: 16 };

    /// A low-bit GEMM of `shape`.
    pub fn new(shape: MatmulShape, format: Format, act: Act) -> Self {
        Self { shape, format, act, epilogue: Epilogue::default() }
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

    fn key(&self) -> Result<PipelineKey> {
        let (name, defines): (&'static shaders::Shader, Vec<&'static str>) = match (self.format, self.int8_act()) {
            (Format::Ternary2, true) => (&shaders::GEMM_TERNARY_A8, vec![]),
            (Format::Int8, true) => (&shaders::GEMM_INT8_A8, vec![]),
            (Format::Ternary24, true) => (&shaders::GEMM_TERNARY24_A8, vec![]),
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
        Ok(PipelineKey::new(Variant::new(name, defines), &[("ACT", f64::from(self.epilogue.act.code()))]))
    }

    fn layout(&self) -> Result<(u32, u32, u32)> {
        row_words(self.format, self.shape.k)
    }

    fn bindings(&self) -> LowBitBindings {
        LowBitBindings { shape: self.shape, format: self.format, act: self.act, epilogue: self.epilogue }
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
        self.key()?;
        self.epilogue.check(name, n)?;
        self.bindings().requirements()
    }

    fn work(&self, _caps: &Capabilities) -> Result<Work> {
        let MatmulShape { m, n, k } = self.shape;
        let (wr, _, ar) = self.layout()?;
        let (m64, n64) = (u64::from(m), u64::from(n));
        let tiles_m = u64::from(m.div_ceil(64));
        let tiles_n = u64::from(n.div_ceil(64));
        let groups = tiles_m * tiles_n;
        let out = self.out().size();
        let mut work = Work { dram_write: m64 * n64 * out, ..Work::default() } + self.epilogue.work(n, m, self.out());
        if self.int8_act() {
            // Slices of 64 K; every workgroup stages its rows of X (16 int8 per invocation) and W
            // (decoded to int8 in the same shape), then 16 x 16 dot4 per invocation per slice word.
            let words = u64::from(act_row_words(k));
            let slices = words.div_ceil(16);
            let w_row_bytes = match self.format {
                Format::Ternary2 => words,              // 2 bits per weight
                Format::Ternary24 => u64::from(wr) * 4, // the packed row (1.34 bits per weight)
                _ => words * 4,                         // 8 bits per weight
            };
            work.dram_read += tiles_m * n64 * (words * 4 + 4) + tiles_n * m64 * (w_row_bytes + 4);
            let padded_words = groups * 64 * 64 * slices * 16;
            work.i8_mul += padded_words * 4;
            work.i32_add += padded_words * 4;
            work.sram_write += groups * slices * 16 * 128 * 4;
            work.sram_read += groups * slices * 16 * 256 * 2 * 16;
            if self.format == Format::Ternary2 {
                // Decoding one byte of codes to four int8: 15 bit operations and a multiply.
                work.bit_ops += tiles_n * m64 * words * 15;
                work.i32_mul += tiles_n * m64 * words;
            }
            if self.format == Format::Ternary24 {
                // A group's state to one packed int8 word: extraction, positions, values, shifts.
                work.bit_ops += tiles_n * m64 * words * 16;
            }
            if let Format::Int4 { .. } = self.format {
                // Four nibbles to four int8 (shift, mask, subtract, pack), per staged word.
                work.bit_ops += tiles_n * m64 * words * 14;
                work.i32_add += tiles_n * m64 * words * 4;
                // Each slice's sums scaled into f32 accumulators (one fma per output), then the
                // activation scale.
                let padded_outputs = groups * 64 * 64;
                work.f32_mul += padded_outputs * slices + m64 * n64;
                work.f32_add += padded_outputs * slices;
            } else {
                // Output: two scale multiplies per value.
                work.f32_mul += 2 * m64 * n64;
            }
        } else {
            let GemmTile { bm, bn, bk } = Self::TILE;
            let slices = u64::from(k.div_ceil(bk));
            let x_elem = self.out().size();
            let k64 = u64::from(k);
            // Packed weight bytes per row actually read (K rounded up to the staging width of 4).
            let w_bytes = u64::from(wr) * 4 * u64::from(k.div_ceil(4) * 4) / u64::from(self.format.layout(k)?.padded_k);
            let scale_bytes = match self.format {
                // One scale (and zero-point) word per staged group of 4.
                Format::Int4 { .. } => u64::from(k.div_ceil(4)) * 4 * (1 + u64::from(ar > 0)),
                _ => 0,
            };
            work.dram_read += tiles_m * n64 * k64 * x_elem + tiles_n * m64 * (w_bytes + scale_bytes);
            if !matches!(self.format, Format::Int4 { .. }) {
                work.dram_read += tiles_n * m64 * 4;
            }
            let padded_macs = groups * u64::from(bm * bn) * slices * u64::from(bk);
            work += Work::f32_mul_add(padded_macs);
            // Decode per staged group of 4 weights.
            let staged = tiles_n * m64 * u64::from(k.div_ceil(4));
            match self.format {
                Format::Ternary2 => {
                    work.bit_ops += staged * 13;
                    work.f32_add += staged * 4;
                    work.f32_mul += m64 * n64;
                }
                Format::Int8 => {
                    work.bit_ops += staged * 8;
                    work.f32_mul += m64 * n64;
                }
                Format::Ternary24 => {
                    // State extraction, positions and values, and the two lane selects.
                    work.bit_ops += staged * 12;
                    work.f32_add += staged * 6;
                    work.f32_mul += staged * 2 + m64 * n64;
                }
                _ => {
                    work.bit_ops += staged * 13;
                    work.f32_add += staged * 4;
                    work.f32_mul += staged * 4;
                }
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
        let specs =
            self.bindings().specs(self.name(), caps, reqs, buffers, |count| [count.div_ceil(64), n.div_ceil(64), 1])?;
        build(gpu, self.name(), &self.key()?, specs, self.work(caps)?)
    }
}
