//! Row normalisation (norm.wgsl): LayerNorm without affine or RMSNorm, optional adaLN modulation,
//! optional int8 output for the next low-bit matmul.

use crate::error::{Error, Result};
use crate::gpu::{Capabilities, Gpu, PipelineKey};
use crate::kernel::{BufferReq, DispatchSpec, Kernel, Prepared, TensorRef, Work, build, grid_1d};
use crate::kernels::Elem;
use crate::kernels::matmul::GemvReduce;
use crate::kernels::qmatmul::act_row_words;
use crate::kernels::work_count::{COUNT_WORK, counters_binding, counting};
use crate::shaders::{self, Variant};

/// Parameter block of norm.wgsl. Keep in sync with `NormParams` there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct NormParams {
    /// Rows (tokens).
    pub rows: u32,
    /// Features per row.
    pub d: u32,
    /// Rows sharing one modulation row.
    pub rows_per_image: u32,
    /// Epsilon inside the square root.
    pub eps: f32,
    /// Row stride of the modulation tensor.
    pub mod_stride: u32,
    /// Offset of the shift chunk in a modulation row.
    pub shift_offset: u32,
    /// Offset of the scale chunk in a modulation row.
    pub scale_offset: u32,
    /// u32 words per int8 output row.
    pub x_row_words: u32,
}

/// Which normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NormKind {
    /// LayerNorm without affine parameters.
    LayerNorm,
    /// RMSNorm, optionally with a per-feature weight (buffer `weight`).
    Rms {
        /// Multiply by a learned per-feature weight.
        affine: bool,
    },
}

/// adaLN modulation `y = n * (1 + scale) + shift`, with shift and scale chunks of a modulation
/// tensor (one row per image).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Modulation {
    /// Token rows per image (rows sharing one modulation row).
    pub rows_per_image: u32,
    /// Row stride of the modulation tensor, elements.
    pub stride: u32,
    /// Offset of the shift chunk within a row.
    pub shift_offset: u32,
    /// Offset of the scale chunk within a row.
    pub scale_offset: u32,
}

/// Row normalisation. Buffers: `x` (rows x d), `modulation` (with modulation), `weight` (affine
/// RMSNorm), then `y` (rows x d) — or, with `emit_i8`, `xq` (rows x ceil(d/16)*4 u32) and
/// `x_scales` (rows f32).
#[derive(Clone, Debug)]
pub struct Norm {
    /// Rows.
    pub rows: u32,
    /// Features.
    pub d: u32,
    /// LayerNorm or RMSNorm.
    pub kind: NormKind,
    /// Epsilon (1e-6 for DiT).
    pub eps: f32,
    /// adaLN modulation.
    pub modulation: Option<Modulation>,
    /// Write int8 (and per-row scales) instead of floats.
    pub emit_i8: bool,
    /// Element type of `x`, `modulation`, `weight` and `y`.
    pub elem: Elem,
}

const WG: u32 = 128;

/// Groups of four features each invocation keeps in registers. Keep in sync with `CACHED` in
/// shaders/norm.wgsl.
const CACHED: u32 = 8;

impl Norm {
    /// The parameter block the kernel binds, as the CPU twin takes it.
    pub fn params(&self) -> NormParams {
        let m =
            self.modulation.unwrap_or(Modulation { rows_per_image: 1, stride: 0, shift_offset: 0, scale_offset: 0 });
        NormParams {
            rows: self.rows,
            d: self.d,
            rows_per_image: m.rows_per_image,
            eps: self.eps,
            mod_stride: m.stride,
            shift_offset: m.shift_offset,
            scale_offset: m.scale_offset,
            x_row_words: act_row_words(self.d),
        }
    }

    /// DiT's LayerNorm epsilon.
    pub const DIT_EPS: f32 = 1e-6;

    /// DiT's LayerNorm: no affine, eps [`Norm::DIT_EPS`].
    pub fn layer_norm(rows: u32, d: u32, elem: Elem) -> Self {
        Self { rows, d, kind: NormKind::LayerNorm, eps: Self::DIT_EPS, modulation: None, emit_i8: false, elem }
    }

    /// Whether a row fits the invocations' registers (read from device memory once) or is read
    /// again in every pass.
    pub fn cached(&self) -> bool {
        self.d.div_ceil(4) <= CACHED * WG
    }

    /// Invocations per row: the row's groups of four rounded up to a power of two, at most the
    /// workgroup (norm.wgsl's LANES; the workgroup then holds WG / LANES rows).
    pub fn lanes(&self) -> u32 {
        self.d.div_ceil(4).next_power_of_two().min(WG)
    }

    fn key(&self, caps: &Capabilities, count: bool) -> PipelineKey {
        let defines = self
            .elem
            .define()
            .into_iter()
            .chain(caps.subgroups.then_some("SUBGROUPS"))
            .chain(matches!(self.kind, NormKind::Rms { .. }).then_some("RMS"))
            .chain(matches!(self.kind, NormKind::Rms { affine: true }).then_some("AFFINE"))
            .chain(self.modulation.map(|_| "MODULATE"))
            .chain(self.emit_i8.then_some("EMIT_I8"))
            .chain(count.then_some(COUNT_WORK));
        PipelineKey::new(
            Variant::new(&shaders::NORM, defines),
            &[("WG", f64::from(WG)), ("LANES", f64::from(self.lanes()))],
        )
    }
}

impl Kernel for Norm {
    fn name(&self) -> &'static str {
        "norm"
    }

    fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>> {
        if self.rows == 0 || self.d == 0 {
            return Err(Error::Shape { kernel: self.name(), message: format!("empty {} x {}", self.rows, self.d) });
        }
        if !(self.eps >= 0.0 && self.eps.is_finite()) {
            return Err(Error::Shape {
                kernel: self.name(),
                message: format!("eps {} is not a finite non-negative number", self.eps),
            });
        }
        self.elem.check(self.name(), caps)?;
        let (rows, d) = (u64::from(self.rows), u64::from(self.d));
        let mut reqs = vec![BufferReq::input("x", self.elem.bytes(rows * d))];
        if let Some(m) = self.modulation {
            if m.rows_per_image == 0 || m.shift_offset.max(m.scale_offset) + self.d > m.stride {
                return Err(Error::Shape {
                    kernel: self.name(),
                    message: format!("modulation {m:?} does not fit rows of {} features", self.d),
                });
            }
            let images = u64::from(self.rows.div_ceil(m.rows_per_image));
            reqs.push(BufferReq::input("modulation", self.elem.bytes(images * u64::from(m.stride))));
        }
        if self.kind == (NormKind::Rms { affine: true }) {
            reqs.push(BufferReq::input("weight", self.elem.bytes(d)));
        }
        if self.emit_i8 {
            reqs.push(BufferReq::output("xq", rows * u64::from(act_row_words(self.d)) * 4));
            reqs.push(BufferReq::output("x_scales", rows * 4));
        } else {
            reqs.push(BufferReq::output("y", self.elem.bytes(rows * d)));
        }
        Ok(reqs)
    }

    fn work(&self, caps: &Capabilities) -> Result<Work> {
        // As the shader counts (COUNT_WORK; shared/work_count.wgsl conventions): per row, and per
        // row slot for what every invocation of a row does (the statistics and the reductions),
        // where the last workgroup's slots past the rows take part too.
        let (rows, d) = (u64::from(self.rows), u64::from(self.d));
        let eb = self.elem.size();
        let lanes = u64::from(self.lanes());
        let per_wg = u64::from(WG) / lanes;
        let slots = rows.div_ceil(per_wg) * per_wg;
        let layer = self.kind == NormKind::LayerNorm;
        let affine = self.kind == (NormKind::Rms { affine: true });
        let modulate = self.modulation.is_some();
        let mut w = Work::default();
        let mut slot = Work::default();
        // LayerNorm's mean: an add per feature, the sum's divide in every invocation.
        if layer {
            w += Work { f32_add: d, ..Work::default() };
            slot += Work { f32_mul: lanes, ..Work::default() };
        }
        // Centred squares: a subtraction and a multiply-add per feature; then a divide, the
        // epsilon and the inverse square root (a divide) in every invocation.
        w += Work { f32_add: 2 * d, f32_mul: d, ..Work::default() };
        slot += Work { f32_add: lanes, f32_mul: 2 * lanes, ..Work::default() };
        // Rows of at most CACHED * 4 * WG features are read once and normalised once in
        // registers; longer rows are read again in every pass and normalised in each output pass
        // (the absmax pass too with EMIT_I8). Normalising is a subtraction and a multiply; the
        // affine weight a load and a multiply; the modulation two loads, 1 + scale and a
        // multiply-add.
        let cached = self.cached();
        let passes = if cached { 1 } else { 1 + u64::from(self.emit_i8) };
        let reads_of_x = if cached { 1 } else { u64::from(layer) + 1 + passes };
        w.dram_read += reads_of_x * d * eb;
        let per = Work {
            dram_read: eb * (u64::from(affine) + 2 * u64::from(modulate)),
            f32_add: 1 + 2 * u64::from(modulate),
            f32_mul: 1 + u64::from(affine) + u64::from(modulate),
            ..Work::default()
        };
        w += per * (passes * d);
        // The sums, each result read by every invocation: the workgroup reduction with one row a
        // workgroup, else a tree over the row's lanes.
        let sums = 1 + u64::from(layer);
        if per_wg == 1 {
            slot += GemvReduce::on(caps).work(caps, lanes, 1) * sums;
        } else {
            slot += Work {
                f32_add: lanes - 1,
                sram_write: (lanes + lanes - 1) * 4,
                sram_read: 2 * (lanes - 1) * 4,
                ..Work::default()
            } * sums;
        }
        slot.sram_read += sums * lanes * 4;
        if self.emit_i8 {
            // The absmax tree and the packing, as activation quantization counts them; cached
            // rows write the padding words as zeros without packing them.
            let words = u64::from(act_row_words(self.d));
            let packed = if cached { d.div_ceil(4) } else { words };
            w += Work {
                f32_add: 4 * packed,
                f32_mul: lanes + 4 * packed,
                bit_ops: 12 * packed,
                dram_write: words * 4 + 4,
                ..Work::default()
            };
            slot += Work {
                sram_write: (lanes + (lanes - 1)) * 4,
                sram_read: (2 * (lanes - 1) + lanes) * 4,
                ..Work::default()
            };
        } else {
            w.dram_write += d * eb;
        }
        Ok(w * rows + slot * slots)
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
        let count = counting(reqs);
        let caps = gpu.capabilities();
        let params = self.params();
        // Bindings: x 1, modulation 2, weight 3, then y 4 or xq 4 + x_scales 5 — in the order of
        // the requirements, skipping the absent ones.
        let mut bindings = vec![1];
        if self.modulation.is_some() {
            bindings.push(2);
        }
        if self.kind == (NormKind::Rms { affine: true }) {
            bindings.push(3);
        }
        bindings.push(4);
        if self.emit_i8 {
            bindings.push(5);
        }
        let storage = bindings
            .into_iter()
            .zip(buffers.iter().zip(reqs))
            .map(|(i, (b, r))| (i, *b, r.size))
            .chain(counters_binding(buffers, count))
            .collect();
        let workgroups = grid_1d(self.rows.div_ceil(WG / self.lanes()), caps);
        let spec = DispatchSpec { params, storage, views: Vec::new(), workgroups };
        build(gpu, self.name(), &self.key(caps, count), vec![spec], self.work(caps)?)
    }
}
