//! DiT's MLP branch as one dispatch (mlp_ternary_a8.wgsl): modulated LayerNorm, int8
//! quantization, ternary fc1 with GELU, int8 quantization, ternary fc2, gate and residual, a tile
//! of tokens kept in workgroup memory from the norm to the residual.
//!
//! The unfused chain writes the hidden activations (4 × the width, floats) and reads them back
//! twice; this kernel moves a token's row in and out once (read again for the residual) plus the
//! weights once per tile of tokens, staged through workgroup memory (every tile re-reads them: a
//! cache's traffic where they fit the L2: 2 × d × hidden ternary weights, 32 KiB at the MNIST
//! DiT's 128 × 512, 288 KiB at DiT-S's 384 × 1,536).

use crate::error::{Error, Result};
use crate::gpu::{Capabilities, Gpu, PipelineKey};
use crate::kernel::{BufferReq, DispatchSpec, Kernel, Prepared, TensorRef, Work, build, grid_1d};
use crate::kernels::Elem;
use crate::kernels::norm::Modulation;
use crate::kernels::qmatmul::{act_row_words, row_words};
use crate::kernels::work_count::{COUNT_WORK, counters_binding, counting};
use crate::quant::Format;
use crate::shaders::{self, Variant};

/// Parameter block of mlp_ternary_a8.wgsl. Keep in sync with `MlpParams` there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MlpParams {
    /// Tokens.
    pub rows: u32,
    /// Width.
    pub d: u32,
    /// Hidden features (fc1's outputs).
    pub hidden: u32,
    /// Tokens sharing one modulation row and one gate row.
    pub rows_per_image: u32,
    /// LayerNorm's epsilon.
    pub eps: f32,
    /// Row stride of the modulation tensor.
    pub mod_stride: u32,
    /// Offset of the norm's shift chunk in a modulation row.
    pub shift_offset: u32,
    /// Offset of the norm's scale chunk in a modulation row.
    pub scale_offset: u32,
    /// u32 words per int8 input row ([`act_row_words`] of `d`).
    pub x_row_words: u32,
    /// u32 words per int8 hidden row ([`act_row_words`] of `hidden`).
    pub h_row_words: u32,
    /// u32 words per packed fc1 row.
    pub w1_row_words: u32,
    /// u32 words per packed fc2 row.
    pub w2_row_words: u32,
}

/// DiT's MLP branch `y = x + gate ⊙ (fc2(GELU(fc1(modulate(LayerNorm(x))))))` with ternary
/// weights and int8 activations, as one dispatch. Buffers: `x` (rows × d), `modulation` (the
/// adaLN projection, one row per image), `w1`, `w1_scales`, `b1` (fc1: hidden × d), `w2`,
/// `w2_scales`, `b2` (fc2: d × hidden), `gate` (images × d), `y` (rows × d).
///
/// Equal to the unfused chain (a [`crate::kernels::Norm`] emitting int8, a W1.58A8
/// [`crate::kernels::QGemm`] with the GELU epilogue, [`crate::kernels::ActQuant`], a W1.58A8
/// GEMM with the gated residual) but for the norm's float sums, which are added in another order.
#[derive(Clone, Debug)]
pub struct MlpBlock {
    /// Tokens.
    pub rows: u32,
    /// Width (a multiple of 4).
    pub d: u32,
    /// Hidden features (a multiple of 4).
    pub hidden: u32,
    /// The norm's modulation (its `rows_per_image` also picks the gate row).
    pub modulation: Modulation,
    /// LayerNorm's epsilon (1e-6 for DiT).
    pub eps: f32,
    /// Weight format of fc1 and fc2 (ternary).
    pub format: Format,
    /// Element type of `x`, `modulation`, the biases, `gate` and `y`.
    pub elem: Elem,
}

const WG: u32 = 256;
/// Keep in sync with `CACHED` in mlp_ternary_a8.wgsl.
const CACHED: u32 = 8;
/// Tokens of an item, and the items an invocation holds. Keep in sync with `RB` and `MAX_ITEMS`
/// there.
const RB: u32 = 8;
const MAX_ITEMS: u32 = 2;
/// Workgroup memory besides the tile and the weight stage: the token scales, the absmax bits and
/// the reduction tree.
const OTHER_SHARED: u32 = 64 * 4 + 32 * 4 + 256 * 4;

impl MlpBlock {
    /// Words of the on-chip tile (input and hidden rows). Keep in sync with `TILE_WORDS` there.
    pub const TILE_WORDS: u32 = 5120;
    /// Words of the weight stage (one per weight row and 16-K step). Keep in sync with
    /// `STAGE_WORDS` there.
    pub const STAGE_WORDS: u32 = 2048;

    /// Workgroup memory the kernel declares, bytes (29.4 KiB: every native Vulkan, Metal and
    /// DX12 device offers 32 KiB; WebGPU's default limit of 16 KiB does not).
    pub const WORKGROUP_BYTES: u32 = (Self::TILE_WORDS + Self::STAGE_WORDS) * 4 + OTHER_SHARED;

    /// Tokens a workgroup takes for a width `d` and `hidden` features (32, 16 or 8: the most
    /// whose int8 rows fit the tile and whose items the invocations can hold), or `None` if not
    /// even 8 fit, the widths are not multiples of 4, or a matrix has more rows than the stage.
    pub fn tokens_per_workgroup(d: u32, hidden: u32) -> Option<u32> {
        if d == 0 || hidden == 0 || !d.is_multiple_of(4) || !hidden.is_multiple_of(4) {
            return None;
        }
        if d.max(hidden) > Self::STAGE_WORDS {
            return None;
        }
        let words = u64::from(act_row_words(d)) + u64::from(act_row_words(hidden));
        let most = u64::from(MAX_ITEMS * WG);
        [32u32, 16, 8].into_iter().find(|&tm| {
            let lanes = WG / tm;
            words * u64::from(tm) <= u64::from(Self::TILE_WORDS)
                && u64::from(d / 4) <= u64::from(CACHED * lanes)
                && u64::from(hidden.max(d) / 4) * u64::from(tm / RB) <= most
        })
    }

    /// Whether a device with `caps` runs the kernel at these widths (its bindings, workgroup
    /// memory and size): where not, the model runs the unfused chain.
    pub fn runs_on(caps: &Capabilities, d: u32, hidden: u32) -> bool {
        Self::tokens_per_workgroup(d, hidden).is_some()
            && caps.max_storage_buffers >= 10
            && caps.max_workgroup_storage >= Self::WORKGROUP_BYTES
            && caps.max_invocations >= WG
            && caps.packed_dot4
    }

    fn tm(&self) -> Result<u32> {
        Self::tokens_per_workgroup(self.d, self.hidden).ok_or_else(|| Error::Shape {
            kernel: self.name(),
            message: format!(
                "width {} and {} hidden features: not multiples of 4, more than {} rows, or no tile of 8 \
                 tokens fits {} words",
                self.d,
                self.hidden,
                Self::STAGE_WORDS,
                Self::TILE_WORDS
            ),
        })
    }

    fn workgroups(&self, caps: &Capabilities) -> Result<[u32; 3]> {
        Ok(grid_1d(self.rows.div_ceil(self.tm()?), caps))
    }

    /// The parameter block the kernel binds, as the CPU twin takes it.
    pub fn params(&self) -> Result<MlpParams> {
        let (w1_row_words, _, _) = row_words(self.format, self.d)?;
        let (w2_row_words, _, _) = row_words(self.format, self.hidden)?;
        Ok(MlpParams {
            rows: self.rows,
            d: self.d,
            hidden: self.hidden,
            rows_per_image: self.modulation.rows_per_image,
            eps: self.eps,
            mod_stride: self.modulation.stride,
            shift_offset: self.modulation.shift_offset,
            scale_offset: self.modulation.scale_offset,
            x_row_words: act_row_words(self.d),
            h_row_words: act_row_words(self.hidden),
            w1_row_words,
            w2_row_words,
        })
    }

    fn key(&self, count: bool) -> Result<PipelineKey> {
        let defines = self.elem.define().into_iter().chain(count.then_some(COUNT_WORK));
        Ok(PipelineKey::new(Variant::new(&shaders::MLP_TERNARY_A8, defines), &[("TM", f64::from(self.tm()?))]))
    }
}

impl Kernel for MlpBlock {
    fn name(&self) -> &'static str {
        "mlp"
    }

    fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>> {
        let name = self.name();
        if self.rows == 0 {
            return Err(Error::Shape { kernel: name, message: "no tokens".into() });
        }
        if self.format != Format::Ternary2 {
            return Err(Error::Format {
                format: format!("{:?}", self.format),
                message: "the fused MLP takes ternary (Ternary2) weights".into(),
            });
        }
        if !(self.eps >= 0.0 && self.eps.is_finite()) {
            return Err(Error::Shape {
                kernel: name,
                message: format!("eps {} is not a finite non-negative number", self.eps),
            });
        }
        self.tm()?;
        self.elem.check(name, caps)?;
        if !Self::runs_on(caps, self.d, self.hidden) {
            return Err(Error::Unsupported {
                kernel: name,
                needs: "10 storage buffers, 256 invocations, 29.4 KiB of workgroup memory and packed int8 dot products",
            });
        }
        let m = self.modulation;
        if m.rows_per_image == 0 || m.shift_offset.max(m.scale_offset) + self.d > m.stride {
            return Err(Error::Shape {
                kernel: name,
                message: format!("modulation {m:?} does not fit rows of {} features", self.d),
            });
        }
        let p = self.params()?;
        let (rows, d, hidden) = (u64::from(self.rows), u64::from(self.d), u64::from(self.hidden));
        let images = u64::from(self.rows.div_ceil(m.rows_per_image));
        let e = |n: u64| self.elem.bytes(n);
        Ok(vec![
            BufferReq::input("x", e(rows * d)),
            BufferReq::input("modulation", e(images * u64::from(m.stride))),
            BufferReq::input("w1", hidden * u64::from(p.w1_row_words) * 4),
            BufferReq::input("w1_scales", hidden * 4),
            BufferReq::input("b1", e(hidden)),
            BufferReq::input("w2", d * u64::from(p.w2_row_words) * 4),
            BufferReq::input("w2_scales", d * 4),
            BufferReq::input("b2", e(d)),
            BufferReq::input("gate", e(images * d)),
            BufferReq::output("y", e(rows * d)),
        ])
    }

    fn work(&self, caps: &Capabilities) -> Result<Work> {
        // As the COUNT_WORK variant counts (shared/work_count.wgsl conventions).
        let p = self.params()?;
        let tm = u64::from(self.tm()?);
        let [gx, gy, _] = self.workgroups(caps)?;
        let groups = u64::from(gx) * u64::from(gy);
        let invocations = groups * u64::from(WG);
        let lanes = u64::from(WG) / tm;
        let (rows, d, hidden) = (u64::from(self.rows), u64::from(self.d), u64::from(self.hidden));
        let (xw, hw) = (u64::from(p.x_row_words), u64::from(p.h_row_words));
        let eb = self.elem.size();
        let mut w = Work::default();

        // 1. The norm. Per token: the row read, its sum, its centred squares, normalised and
        // modulated (two loads, 1 + scale, a subtraction, a multiply and a multiply-add a
        // feature), quantized; per invocation the two statistics' divides, epsilon and inverse
        // square root, and the scale's divide; three reductions over each token's lanes.
        w += Work {
            dram_read: d * eb,
            f32_add: d + 2 * d + 3 * d + d,
            f32_mul: d + 2 * d + d,
            bit_ops: 3 * d,
            ..Work::default()
        } * rows;
        w += Work { f32_mul: 4, f32_add: 1, sram_write: 3 * 4, sram_read: 3 * 4, ..Work::default() } * invocations;
        let tree = groups * tm * (lanes - 1);
        w += Work { sram_read: 3 * 8 * tree, sram_write: 3 * 4 * tree, f32_add: 2 * tree, ..Work::default() };
        // Every token of the tile writes its int8 row and its scale.
        w.sram_write += groups * tm * (xw + 1) * 4;

        // 2 and 3. Every weight word staged once per tile (loaded, written to workgroup memory);
        // items of RB tokens × 4 outputs: per 16 of K, four staged words read and decoded (16
        // bytes of codes) once for the item, RB tile reads and 16 dot4 per token.
        let staged = hidden * (xw / 4) + d * (hw / 4);
        w += Work { dram_read: 4, sram_write: 4, ..Work::default() } * (groups * staged);
        let rb = u64::from(RB);
        let k_step = Work {
            bit_ops: 16 * 15,
            i32_mul: 16,
            sram_read: 16 + rb * 16,
            i8_mul: rb * 64,
            i32_add: rb * 64,
            ..Work::default()
        };
        let items1 = groups * (hidden / 4) * (tm / rb);
        let items2 = groups * (d / 4) * (tm / rb);
        w += k_step * (items1 * (xw / 4) + items2 * (hw / 4));
        // Each item's four weight scales and biases: staged once per tile (a scale and a bias a
        // column) where the linear's fit the weight stage twice over, then read by each item
        // from workgroup memory; else read by each item from device memory.
        let stage = u64::from(Self::STAGE_WORDS);
        for (n, items) in [(hidden, items1), (d, items2)] {
            if 2 * n <= stage {
                w += Work { dram_read: n * (4 + eb), sram_write: n * 8, ..Work::default() } * groups;
                w.sram_read += items * 32;
            } else {
                w.dram_read += items * 4 * (4 + eb);
            }
        }
        // fc1's outputs: per item token the activation scale, two scale multiplies, the bias
        // and GELU (6 multiplies, 2 adds and a tanh: 9 multiplies and 4 adds) per output, the
        // absmax update; per tile token its scale; per item token the quantization (a scale
        // read, the packing, the word written); the hidden rows' padding.
        let item_rows1 = items1 * rb;
        w += Work {
            sram_read: 4 + 4,
            f32_mul: 4 * (2 + 9) + 4,
            f32_add: 4 * (1 + 4) + 4,
            bit_ops: 12,
            sram_write: 4 + 4,
            ..Work::default()
        } * item_rows1;
        w += Work { f32_mul: 1, sram_read: 4, sram_write: 4, ..Work::default() } * (groups * tm);
        w.sram_write += groups * tm * (hw - hidden / 4) * 4;
        // fc2's outputs, live tokens only: the scale, two scale multiplies, bias, gate and
        // residual, the store.
        w += Work {
            sram_read: 4,
            f32_mul: 4 * 3,
            f32_add: 4 * 2,
            dram_read: 4 * eb,
            dram_write: 4 * eb,
            ..Work::default()
        } * (rows * (d / 4));
        // The per-image rows (the norm's shift and scale, the gate): staged once per tile for the
        // tile's images where they fit the weight stage, then read from workgroup memory by every
        // token (8 values per 4 features in the norm, 4 per output quad with the gate); else read
        // from device memory by every token.
        for g in 0..groups {
            let row0 = g * tm;
            if row0 >= rows {
                continue;
            }
            let rpi = u64::from(self.modulation.rows_per_image);
            let live = tm.min(rows - row0);
            let images = (row0 + live - 1) / rpi - row0 / rpi + 1;
            // The gate rows go after fc2's staged scales and biases.
            let gate_at = if 2 * d <= stage { 2 * d } else { 0 };
            for (at, width, per_token) in [(0, 2 * d, 2 * d), (gate_at, d, d)] {
                if at + images * width <= stage {
                    w += Work { dram_read: images * width * eb, sram_write: images * width * 4, ..Work::default() };
                    w.sram_read += live * per_token * 4;
                } else {
                    w.dram_read += live * per_token * eb;
                }
            }
        }
        Ok(w)
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
        let count = counting(reqs);
        let caps = gpu.capabilities();
        let storage = (1u32..=10)
            .zip(buffers.iter().zip(reqs))
            .map(|(i, (b, r))| (i, *b, r.size))
            .chain(counters_binding(buffers, count))
            .collect();
        let spec =
            DispatchSpec { params: self.params()?, storage, views: Vec::new(), workgroups: self.workgroups(caps)? };
        build(gpu, self.name(), &self.key(count)?, vec![spec], self.work(caps)?)
    }
}
