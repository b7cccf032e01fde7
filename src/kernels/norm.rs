//! Row normalisation (norm.wgsl): LayerNorm without affine or RMSNorm, optional adaLN modulation,
//! optional int8 output for the next low-bit matmul.

use crate::error::{Error, Result};
use crate::gpu::{Capabilities, Gpu, PipelineKey};
use crate::kernel::{BufferReq, DispatchSpec, Kernel, Prepared, TensorRef, Work, build, grid_1d};
use crate::kernels::Elem;
use crate::kernels::qmatmul::act_row_words;
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

    /// DiT's LayerNorm: no affine, eps 1e-6.
    pub fn layer_norm(rows: u32, d: u32, elem: Elem) -> Self {
        Self { rows, d, kind: NormKind::LayerNorm, eps: 1e-6, modulation: None, emit_i8: false, elem }
    }

    fn key(&self, caps: &Capabilities) -> PipelineKey {
        let defines = self
            .elem
            .define()
            .into_iter()
            .chain(caps.subgroups.then_some("SUBGROUPS"))
            .chain(matches!(self.kind, NormKind::Rms { .. }).then_some("RMS"))
            .chain(matches!(self.kind, NormKind::Rms { affine: true }).then_some("AFFINE"))
            .chain(self.modulation.map(|_| "MODULATE"))
            .chain(self.emit_i8.then_some("EMIT_I8"));
        PipelineKey::new(Variant::new(&shaders::NORM, defines), &[("WG", f64::from(WG))])
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
        let (rows, d) = (u64::from(self.rows), u64::from(self.d));
        let eb = self.elem.size();
        let layer = self.kind == NormKind::LayerNorm;
        // Passes over the row: mean (LayerNorm), variance, [absmax], output.
        let passes = 2 + u64::from(layer) + u64::from(self.emit_i8);
        let mut w = Work { dram_read: rows * d * eb * passes, ..Work::default() };
        if layer {
            w.f32_add += rows * d;
        }
        w.f32_add += rows * d * 2; // centre, accumulate
        w.f32_mul += rows * d; // square
        // Output value: centre, scale, [weight], [modulation fma + 1 + scale], per pass that needs it.
        let out_passes = 1 + u64::from(self.emit_i8);
        w.f32_add += rows * d * out_passes;
        w.f32_mul += rows * d * out_passes;
        if self.modulation.is_some() {
            w.f32_mul += rows * d * out_passes;
            w.f32_add += rows * d * out_passes * 2;
            w.dram_read += rows * d * 2 * eb * out_passes;
        }
        if self.kind == (NormKind::Rms { affine: true }) {
            w.f32_mul += rows * d * out_passes;
            w.dram_read += rows * d * eb * out_passes;
        }
        if self.emit_i8 {
            w.f32_add += rows * d * 4; // abs, max; round, clamp
            w.f32_mul += rows * d; // divide
            w.bit_ops += rows * d * 3;
            w.dram_write += rows * (u64::from(act_row_words(self.d)) * 4 + 4);
        } else {
            w.dram_write += rows * d * eb;
        }
        // Reductions: 1 or 2 sums (and a max) over the workgroup.
        let wg = u64::from(WG);
        let reductions = 1 + u64::from(layer) + u64::from(self.emit_i8);
        w.f32_add += rows * reductions * (wg - 1);
        let sgs = if caps.subgroups { wg.div_ceil(u64::from(caps.subgroup_min_size.max(4))) } else { wg };
        w.sram_write += rows * reductions * (sgs + 1) * 4;
        w.sram_read += rows * reductions * (sgs + 1) * 4;
        Ok(w)
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
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
        let storage = bindings.into_iter().zip(buffers.iter().zip(reqs)).map(|(i, (b, r))| (i, *b, r.size)).collect();
        let spec = DispatchSpec { params, storage, workgroups: grid_1d(self.rows, caps) };
        build(gpu, self.name(), &self.key(caps), vec![spec], self.work(caps)?)
    }
}
