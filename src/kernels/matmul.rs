//! Dense matmul kernels, f32 and f16: tiled GEMM, GEMV / small-N, and the naive reference.
//!
//! All compute `Y[n, m] = sum_k X[n, k] * W[m, k]` — a linear layer `y = x W^T` with the weight
//! stored as PyTorch stores it (M output rows of K inputs) and activations token-major.

use crate::error::{Error, Result};
use crate::gpu::{Capabilities, Gpu, PipelineKey};
use crate::kernel::{BufferReq, DispatchSpec, Kernel, Prepared, TensorRef, Work, build, grid_1d, split_rows};
use crate::kernels::Elem;
use crate::kernels::epilogue::Epilogue;
use crate::kernels::work_count::{COUNT_WORK, Counting, counters_binding, counting};
use crate::quant::Format;
use crate::shaders::{self, Variant};

/// Matmul shape: `m` output features (rows of W), `n` activation rows (tokens), `k` input features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct MatmulShape {
    /// Output features.
    pub m: u32,
    /// Activation rows.
    pub n: u32,
    /// Input features.
    pub k: u32,
}

impl MatmulShape {
    /// A shape `m x k` weights times `n` activation rows.
    pub fn new(m: u32, n: u32, k: u32) -> Self {
        Self { m, n, k }
    }

    /// Multiply-adds.
    pub fn macs(&self) -> u64 {
        u64::from(self.m) * u64::from(self.n) * u64::from(self.k)
    }

    fn check(&self, kernel: &'static str) -> Result<()> {
        if self.m == 0 || self.n == 0 || self.k == 0 {
            return Err(Error::Shape { kernel, message: format!("empty shape {self:?}") });
        }
        Ok(())
    }
}

/// Parameter block of the matmul shaders.
/// Keep in sync with `MatmulParams` in shaders/shared/matmul_params.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MatmulParams {
    /// Rows of W in this dispatch.
    pub m: u32,
    /// Rows of X.
    pub n: u32,
    /// Columns of X and W.
    pub k: u32,
    /// First output column this dispatch writes.
    pub m_offset: u32,
    /// Row stride of Y, elements.
    pub ldy: u32,
    /// Rows of Y sharing one gate row (gated epilogue), else 0.
    pub gate_rows: u32,
    /// Padding to 16 bytes.
    pub _pad: [u32; 2],
}

impl MatmulParams {
    /// The parameter block of the whole `shape` with `epilogue` (a dispatch split along M narrows
    /// `m` and `m_offset`).
    pub fn whole(shape: MatmulShape, epilogue: &Epilogue) -> Self {
        MatmulParams {
            m: shape.m,
            n: shape.n,
            k: shape.k,
            m_offset: 0,
            ldy: shape.m,
            gate_rows: epilogue.gate_rows.unwrap_or(0),
            _pad: [0; 2],
        }
    }
}

/// Shared preparation of the three matmul kernels (buffers already checked): split along M, dispatch specs. With
/// `count` (the key is then the COUNT_WORK variant) the last buffer is the work counters, bound in
/// every dispatch.
#[expect(clippy::too_many_arguments, reason = "private helper shared by the three dense matmul kernels")]
fn prepare_matmul(
    gpu: &Gpu,
    kernel: &(impl Kernel + ?Sized),
    shape: MatmulShape,
    elem: Elem,
    key: &PipelineKey,
    buffers: &[TensorRef<'_>],
    reqs: &[BufferReq],
    epilogue: Epilogue,
    count: bool,
    grid: impl Fn(u32) -> [u32; 3],
) -> Result<Prepared> {
    let caps = gpu.capabilities();
    let name = kernel.name();
    let counters = counters_binding(buffers, count);
    // Epilogue tensors follow x, w, y, at bindings 7.. (shaders/shared/epilogue.wgsl).
    let extra: Vec<(u32, TensorRef<'_>, u64)> = epilogue
        .requirements(shape.n, shape.m, elem)
        .into_iter()
        .zip(&buffers[3..])
        .map(|((binding, r), b)| (binding, *b, r.size))
        .collect();
    let row_bytes = u64::from(shape.k) * elem.size();
    let (x, w, y) = (buffers[0], buffers[1], buffers[2]);
    let specs = split_rows(name, caps, shape.m, row_bytes)?
        .into_iter()
        .map(|(first, count)| {
            let mut spec = DispatchSpec::sequential(
                MatmulParams { m: count, m_offset: first, ..MatmulParams::whole(shape, &epilogue) },
                vec![
                    (x, reqs[0].size),
                    (
                        TensorRef { buffer: w.buffer, offset: w.offset + u64::from(first) * row_bytes },
                        elem.bytes(u64::from(count) * u64::from(shape.k)),
                    ),
                    (y, reqs[2].size),
                ],
                grid(count),
            );
            spec.storage.extend(extra.iter().copied().chain(counters));
            spec
        })
        .collect();
    build(gpu, name, key, specs, kernel.work(caps)?)
}

fn matmul_reqs(shape: MatmulShape, elem: Elem) -> Vec<BufferReq> {
    let (m, n, k) = (u64::from(shape.m), u64::from(shape.n), u64::from(shape.k));
    vec![
        BufferReq::input("x", elem.bytes(n * k)),
        BufferReq::weight("w", elem.bytes(m * k)),
        BufferReq::output("y", elem.bytes(n * m)),
    ]
}

/// Tile of one GEMM variant: `bm x bn` outputs per workgroup of 256 invocations, k-slices of `bk`.
/// Keep in sync with the constants of shaders/gemm.wgsl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmTile {
    /// Rows of W per tile.
    pub bm: u32,
    /// Rows of X per tile.
    pub bn: u32,
    /// K per slice.
    pub bk: u32,
}

/// Variant of [`Gemm`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmVariant {
    /// 4-wide loads (needs `k % 4 == 0`).
    pub vec4: bool,
}

/// Dense tiled GEMM: 64 x 64 tiles, 4 x 4 register blocks, k-slices of 16 staged in workgroup
/// memory.
#[derive(Clone, Debug)]
pub struct Gemm {
    /// Shape.
    pub shape: MatmulShape,
    /// Element type.
    pub elem: Elem,
    /// Forced variant; `None` chooses with [`Gemm::choose`].
    pub variant: Option<GemmVariant>,
    /// Fused output epilogue.
    pub epilogue: Epilogue,
}

/// The constructors and accessors the dense matmuls share (their fields are the same: shape,
/// element type, forced variant, epilogue).
macro_rules! dense_matmul {
    ($kernel:ident, $what:literal) => {
        impl $kernel {
            /// The parameter block the kernel binds (of the whole matrix; a dispatch split along M
            /// narrows `m` and `m_offset`), as the CPU twins take it.
            pub fn params(&self) -> MatmulParams {
                MatmulParams::whole(self.shape, &self.epilogue)
            }

            #[doc = concat!("A ", $what, " of `shape` over `elem`.")]
            pub fn new(shape: MatmulShape, elem: Elem) -> Self {
                Self { shape, elem, variant: None, epilogue: Epilogue::default() }
            }

            #[doc = concat!("The same ", $what, " with an epilogue.")]
            pub fn with_epilogue(self, epilogue: Epilogue) -> Self {
                Self { epilogue, ..self }
            }

            #[doc = concat!("The work-counting debug variant of this ", $what, ".")]
            pub fn counting(self) -> Counting<Self> {
                Counting(self)
            }
        }
    };
}

dense_matmul!(Gemm, "GEMM");
dense_matmul!(Gemv, "GEMV / small-N matmul");

impl Gemm {
    /// The tile of the shader. Keep in sync with the constants of shaders/gemm.wgsl.
    pub const TILE: GemmTile = GemmTile { bm: 64, bn: 64, bk: 16 };

    /// The variant for this shape: vec4 loads whenever rows are 16-byte aligned (`k % 4 == 0`).
    pub fn choose(&self) -> GemmVariant {
        self.variant.unwrap_or(GemmVariant { vec4: self.shape.k.is_multiple_of(4) })
    }

    fn key(&self, count: bool) -> PipelineKey {
        let v = self.choose();
        let defines = self
            .elem
            .define()
            .into_iter()
            .chain(v.vec4.then_some("VEC4"))
            .chain(self.epilogue.defines())
            .chain(count.then_some(COUNT_WORK));
        PipelineKey::new(Variant::new(&shaders::GEMM, defines), &[("ACT", f64::from(self.epilogue.act.code()))])
    }
}

impl Kernel for Gemm {
    fn name(&self) -> &'static str {
        "gemm"
    }

    fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>> {
        self.shape.check(self.name())?;
        self.elem.check(self.name(), caps)?;
        if self.choose().vec4 && !self.shape.k.is_multiple_of(4) {
            return Err(Error::Shape {
                kernel: self.name(),
                message: format!("vec4 variant needs k % 4 == 0, k = {}", self.shape.k),
            });
        }
        self.epilogue.check(self.name(), self.shape.n)?;
        let mut reqs = matmul_reqs(self.shape, self.elem);
        reqs.extend(self.epilogue.requirements(self.shape.n, self.shape.m, self.elem).into_iter().map(|(_, r)| r));
        Ok(reqs)
    }

    fn work(&self, caps: &Capabilities) -> Result<Work> {
        let GemmTile { bm, bn, bk } = Self::TILE;
        let MatmulShape { m, n, k } = self.shape;
        let (m64, n64, k64) = (u64::from(m), u64::from(n), u64::from(k));
        let eb = self.elem.size();
        // Tile rows of every dispatch (one per range of W rows split past the binding limit).
        let tiles_m = split_rows(self.name(), caps, m, k64 * eb)?
            .into_iter()
            .map(|(_, rows)| u64::from(rows.div_ceil(bm)))
            .sum::<u64>();
        let tiles_n = u64::from(n.div_ceil(bn));
        let slices = u64::from(k.div_ceil(bk));
        // Each workgroup stages its (clamped) rows of X and W for all of K: X is read once per tile
        // column, W once per tile row. Zero padding is not loaded.
        let dram_read = (tiles_m * n64 * k64 + tiles_n * m64 * k64) * eb;
        // Every workgroup writes full BK x (BM + BN) slices, padding included; per k each of the
        // 256 invocations reads (BM + BN) / 64 vec4s.
        let groups = tiles_m * tiles_n;
        let sram_write = groups * slices * u64::from(bk * (bm + bn)) * eb;
        let sram_read = groups * slices * u64::from(bk) * 256 * u64::from((bm + bn) / 64) * 4 * eb;
        // Multiply-adds are done for the padded tile (the invocations compute zeros past the edge).
        let padded_macs = groups * u64::from(bm * bn) * slices * u64::from(bk);
        Ok(Work::f32_mul_add(padded_macs)
            + Work { dram_read, dram_write: n64 * m64 * eb, sram_read, sram_write, ..Work::default() }
            + self.epilogue.work_tiled(n, m, tiles_n, self.elem))
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
        let count = counting(reqs);
        let GemmTile { bm, bn, .. } = Self::TILE;
        let n = self.shape.n;
        prepare_matmul(
            gpu,
            self,
            self.shape,
            self.elem,
            &self.key(count),
            buffers,
            reqs,
            self.epilogue,
            count,
            |rows| [rows.div_ceil(bm), n.div_ceil(bn), 1],
        )
    }
}

/// How a [`Gemv`] reduces across its workgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemvReduce {
    /// `subgroupAdd`, then one slot per subgroup.
    Subgroup,
    /// Tree reduction in workgroup memory.
    Shared,
}

impl GemvReduce {
    /// The work of `shared/reduce.wgsl` summing `values` partial values per invocation over a
    /// workgroup of `wg` (`reduce_sums`; the reads of the results, `reduced`, are the caller's).
    /// Subgroups: S - 1 adds per subgroup of S, wg - sgs per value in all; one slot per subgroup,
    /// which the first `values` invocations sum from 0.0 (sgs adds): wg adds per value. Exact
    /// when the subgroup size is fixed (min = max); else sgs is an upper bound. Tree: wg - 1 adds
    /// per value, each reading two values and writing one.
    pub(crate) fn work(self, caps: &Capabilities, wg: u64, values: u64) -> Work {
        match self {
            GemvReduce::Subgroup => {
                let sgs = wg.div_ceil(u64::from(caps.subgroup_min_size.max(4)));
                Work {
                    f32_add: values * wg,
                    sram_write: values * (sgs + 1) * 4,
                    sram_read: values * sgs * 4,
                    ..Work::default()
                }
            }
            GemvReduce::Shared => Work {
                f32_add: values * (wg - 1),
                sram_write: values * (2 * wg - 1) * 4,
                sram_read: values * 2 * (wg - 1) * 4,
                ..Work::default()
            },
        }
    }

    /// The reduction a kernel uses on a device with `caps`: subgroups where present.
    pub(crate) fn on(caps: &Capabilities) -> Self {
        if caps.subgroups { GemvReduce::Subgroup } else { GemvReduce::Shared }
    }
}

/// Variant of [`Gemv`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemvVariant {
    /// Reduction.
    pub reduce: GemvReduce,
    /// 4-wide loads (needs `k % 4 == 0`).
    pub vec4: bool,
    /// Invocations per workgroup (power of two, 32..=256).
    pub wg: u32,
    /// Rows of W per workgroup.
    pub rows: u32,
}

/// Dense GEMV and small-N matmul, N = 1..=8: one workgroup per `rows` rows of W, the
/// activations kept in registers, each weight read once.
#[derive(Clone, Debug)]
pub struct Gemv {
    /// Shape (`n` from 1 to 8).
    pub shape: MatmulShape,
    /// Element type.
    pub elem: Elem,
    /// Forced variant; `None` chooses with [`Gemv::choose`].
    pub variant: Option<GemvVariant>,
    /// Fused output epilogue.
    pub epilogue: Epilogue,
}

/// Largest N the GEMV kernel handles; larger N goes to [`Gemm`].
pub const GEMV_MAX_N: u32 = 8;

/// The two matmul kernels a linear layer can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKind {
    /// [`Gemv`] / [`crate::kernels::QGemv`]: GEMV and small N.
    Gemv,
    /// [`Gemm`] / [`crate::kernels::QGemm`]: the tiled GEMM.
    Gemm,
}

impl MatmulKind {
    /// The kernel for a linear over `rows` rows with weights in `format` (`None`: dense float):
    /// up to [`GEMV_MAX_N`] rows the GEMV, above it the tiled GEMM, except for the packed formats
    /// that have no tiled GEMM (int4 and f16 2:4), which always run as GEMV. The graph, the CPU
    /// reference and the benchmarks all choose here.
    pub fn of(rows: u32, format: Option<Format>) -> Self {
        let gemv_only = matches!(format, Some(Format::Int4Sparse24 { .. } | Format::F16Sparse24));
        if rows <= GEMV_MAX_N || gemv_only { Self::Gemv } else { Self::Gemm }
    }
}

impl Gemv {
    /// The variant for this device and shape: subgroups when present; vec4 loads when
    /// `k % 4 == 0`; 4 rows per workgroup (fewer as N grows, so `rows * n <= 32` partial sums stay
    /// in registers); and a workgroup wide enough that each invocation makes about four loads per
    /// row — enough parallelism per row for a GPU, little reduction overhead (measured on
    /// lavapipe with `examples/tune.rs`, see BENCHMARKS.md).
    pub fn choose(&self, caps: &Capabilities) -> GemvVariant {
        if let Some(v) = self.variant {
            return v;
        }
        let n = self.shape.n.clamp(1, GEMV_MAX_N);
        let rows = (32 / n).clamp(1, 4);
        let vec4 = self.shape.k.is_multiple_of(4);
        let per_row = if vec4 { self.shape.k / 4 } else { self.shape.k };
        let reduce = if caps.subgroups { GemvReduce::Subgroup } else { GemvReduce::Shared };
        let mut wg = (per_row / 4).max(1).next_power_of_two().clamp(32, 256).min(caps.max_invocations.max(32));
        if reduce == GemvReduce::Shared {
            // The tree reduction holds rows * n * wg values in 16 KiB of workgroup memory.
            while rows * n * wg > 4096 {
                wg /= 2;
            }
        }
        GemvVariant { reduce, vec4, wg, rows }
    }

    fn key(&self, v: GemvVariant, count: bool) -> PipelineKey {
        let defines = self
            .elem
            .define()
            .into_iter()
            .chain(v.vec4.then_some("VEC4"))
            .chain((v.reduce == GemvReduce::Subgroup).then_some("SUBGROUPS"))
            .chain(self.epilogue.defines())
            .chain(count.then_some(COUNT_WORK));
        PipelineKey::new(
            Variant::new(&shaders::GEMV, defines),
            &[
                ("WG", f64::from(v.wg)),
                ("ROWS", f64::from(v.rows)),
                ("NCOLS", f64::from(self.shape.n)),
                ("ACT", f64::from(self.epilogue.act.code())),
            ],
        )
    }
}

impl Kernel for Gemv {
    fn name(&self) -> &'static str {
        "gemv"
    }

    fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>> {
        let name = self.name();
        self.shape.check(name)?;
        self.elem.check(name, caps)?;
        let v = self.choose(caps);
        let bad = |message: String| Err(Error::Shape { kernel: name, message });
        if self.shape.n > GEMV_MAX_N {
            return bad(format!("n = {} > {GEMV_MAX_N}; use Gemm", self.shape.n));
        }
        if v.vec4 && !self.shape.k.is_multiple_of(4) {
            return bad(format!("vec4 variant needs k % 4 == 0, k = {}", self.shape.k));
        }
        if !v.wg.is_power_of_two() || !(32..=256).contains(&v.wg) || v.wg > caps.max_invocations {
            return bad(format!("workgroup size {} is not a power of two in 32..=256", v.wg));
        }
        let partials = v.rows * self.shape.n;
        if v.rows == 0 || partials > 32 || (v.reduce == GemvReduce::Shared && partials * v.wg > 4096) {
            return bad(format!(
                "rows {} x n {} partial sums exceed the reduction space (wg {})",
                v.rows, self.shape.n, v.wg
            ));
        }
        if v.reduce == GemvReduce::Subgroup && !caps.subgroups {
            return Err(Error::Unsupported { kernel: name, needs: "SUBGROUP (unset MILLIWATT_NO_SUBGROUPS)" });
        }
        self.epilogue.check(name, self.shape.n)?;
        let mut reqs = matmul_reqs(self.shape, self.elem);
        reqs.extend(self.epilogue.requirements(self.shape.n, self.shape.m, self.elem).into_iter().map(|(_, r)| r));
        Ok(reqs)
    }

    fn work(&self, caps: &Capabilities) -> Result<Work> {
        let v = self.choose(caps);
        let MatmulShape { m, n, k } = self.shape;
        let (m64, n64, k64) = (u64::from(m), u64::from(n), u64::from(k));
        let eb = self.elem.size();
        // Workgroups of every dispatch (one per range of W rows split past the binding limit).
        let groups = split_rows(self.name(), caps, m, k64 * eb)?
            .into_iter()
            .map(|(_, rows)| u64::from(rows.div_ceil(v.rows)))
            .sum::<u64>();
        // Rows past M in the last workgroup of a dispatch re-read its last row.
        let padded_rows = groups * u64::from(v.rows);
        let partials = u64::from(v.rows) * n64;
        let dram_read = (padded_rows * k64 + groups * n64 * k64) * eb;
        let macs = padded_rows * n64 * k64;
        // vec4 steps are dot products: 4 multiplies, 3 adds and the accumulation.
        let arith = Work::f32_mul_add(macs);
        let mut work = arith + Work { dram_read, dram_write: m64 * n64 * eb, ..Work::default() };
        work += v.reduce.work(caps, u64::from(v.wg), partials) * groups;
        // Each sum is read back once from workgroup memory (rows past M are not).
        work.sram_read += m64 * n64 * 4;
        Ok(work + self.epilogue.work(n, m, self.elem))
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
        let count = counting(reqs);
        let caps = gpu.capabilities();
        let v = self.choose(caps);
        prepare_matmul(
            gpu,
            self,
            self.shape,
            self.elem,
            &self.key(v, count),
            buffers,
            reqs,
            self.epilogue,
            count,
            |rows| grid_1d(rows.div_ceil(v.rows), caps),
        )
    }
}

/// The deliberately naive matmul (one invocation per output, scalar loads): a benchmark
/// reference only.
#[derive(Clone, Debug)]
pub struct MatmulNaive {
    /// Shape.
    pub shape: MatmulShape,
    /// Element type.
    pub elem: Elem,
}

impl Kernel for MatmulNaive {
    fn name(&self) -> &'static str {
        "matmul_naive"
    }

    fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>> {
        self.shape.check(self.name())?;
        self.elem.check(self.name(), caps)?;
        Ok(matmul_reqs(self.shape, self.elem))
    }

    fn work(&self, _caps: &Capabilities) -> Result<Work> {
        let MatmulShape { m, n, .. } = self.shape;
        let eb = self.elem.size();
        Ok(Work::f32_mul_add(self.shape.macs())
            + Work {
                dram_read: 2 * self.shape.macs() * eb,
                dram_write: u64::from(m) * u64::from(n) * eb,
                ..Work::default()
            })
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
        let key = PipelineKey::new(Variant::new(&shaders::MATMUL_NAIVE, self.elem.define()), &[]);
        let n = self.shape.n;
        prepare_matmul(gpu, self, self.shape, self.elem, &key, buffers, reqs, Epilogue::default(), false, |rows| {
            [rows.div_ceil(8), n.div_ceil(8), 1]
        })
    }
}
