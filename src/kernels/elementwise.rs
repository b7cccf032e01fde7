//! Element-wise add, multiply, scale and activations, with an optional broadcast second operand
//! (a bias row or a per-image gate), which is what the graph's fusion pass folds into matmul
//! epilogues.

use crate::error::{Error, Result};
use crate::gpu::{Capabilities, Gpu, PipelineKey};
use crate::kernel::{BufferReq, DispatchSpec, Kernel, Prepared, TensorRef, Work, build, grid_1d};
use crate::kernels::Elem;
use crate::kernels::work_count::{COUNT_WORK, counters_binding, counting, own};
use crate::shaders::{self, Variant};

/// Parameter block of shaders/elementwise.wgsl. Keep in sync with `EltParams` there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct EltParams {
    /// Elements, or vec4s in the VEC4 variant.
    pub len: u32,
    /// Scale of `Scale`.
    pub alpha: f32,
    /// Offset of `Scale`.
    pub beta: f32,
    /// With a broadcast `b`: elements (vec4s in the VEC4 variant) per row of `b`.
    pub b_cols: u32,
    /// With a broadcast `b`: rows of `a` sharing one row of `b`.
    pub b_group: u32,
    /// Padding.
    pub _pad: [u32; 3],
}

/// How a smaller `b` repeats over `a` (row-major, rows of `cols` elements): row `r` of `a` uses
/// row `r / group` of `b`. A bias is `{ cols: M, group: N }`; DiT's gate is `{ cols: M, group:
/// tokens }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Broadcast {
    /// Elements per row.
    pub cols: u32,
    /// Rows of `a` per row of `b`.
    pub group: u32,
}

impl Broadcast {
    /// A single row of `cols` elements shared by every row (a bias).
    pub fn row(cols: u32, rows: u32) -> Self {
        Self { cols, group: rows.max(1) }
    }

    /// Elements of `b` for `len` elements of `a`.
    pub fn b_len(self, len: u32) -> u64 {
        let rows = len.div_ceil(self.cols.max(1));
        u64::from(rows.div_ceil(self.group.max(1))) * u64::from(self.cols)
    }

    /// The index into `b` of element `i` of `a`.
    pub fn index(self, i: usize) -> usize {
        let (c, g) = (self.cols as usize, self.group as usize);
        (i / (c * g)) * c + i % c
    }
}

/// The operation of an [`Elementwise`] kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EltOp {
    /// `out = a + b`.
    Add,
    /// `out = a * b`.
    Mul,
    /// `out = alpha * a + beta`.
    Scale {
        /// Multiplier.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `out = a * sigmoid(a)`.
    Silu,
    /// `out = GELU(a)`, tanh form.
    GeluTanh,
    /// `out = a`, through the broadcast when there is one (`a` repeated: a guided batch's
    /// `[x; x]` is `Copy` of `x` with `Broadcast { cols: len(x), group: 2 }`).
    Copy,
}

impl EltOp {
    fn code(self) -> u32 {
        match self {
            EltOp::Add => 0,
            EltOp::Mul => 1,
            EltOp::Scale { .. } => 2,
            EltOp::Silu => 3,
            EltOp::GeluTanh => 4,
            EltOp::Copy => 5,
        }
    }

    /// Number of input buffers.
    pub fn inputs(self) -> usize {
        if matches!(self, EltOp::Add | EltOp::Mul) { 2 } else { 1 }
    }

    /// Whether a [`Broadcast`] applies (to `b`, or to `a` for `Copy`).
    pub fn broadcasts(self) -> bool {
        matches!(self, EltOp::Add | EltOp::Mul | EltOp::Copy)
    }
}

/// Element-wise kernel over `len` elements. Buffers: `a`, `b` (add and mul only; smaller with a
/// [`Broadcast`]), `out`.
#[derive(Clone, Debug)]
pub struct Elementwise {
    /// Operation.
    pub op: EltOp,
    /// Number of elements.
    pub len: u32,
    /// Element type.
    pub elem: Elem,
    /// `b` repeats over `a` (add and mul only).
    pub broadcast: Option<Broadcast>,
}

const WG: u32 = 256;

impl Elementwise {
    /// An element-wise `op` over `len` elements of `elem`.
    pub fn new(op: EltOp, len: u32, elem: Elem) -> Self {
        Self { op, len, elem, broadcast: None }
    }

    /// The same kernel with `b` broadcast over `a`.
    pub fn with_broadcast(self, broadcast: Broadcast) -> Self {
        Self { broadcast: Some(broadcast), ..self }
    }

    /// vec4 loads when the length (and a broadcast row) is a multiple of 4.
    pub fn vec4(&self) -> bool {
        self.len.is_multiple_of(4) && self.broadcast.is_none_or(|b| b.cols.is_multiple_of(4))
    }

    fn b_bytes(&self) -> u64 {
        self.elem.bytes(self.broadcast.map_or(u64::from(self.len), |b| b.b_len(self.len)))
    }
}

impl Kernel for Elementwise {
    fn name(&self) -> &'static str {
        "elementwise"
    }

    fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>> {
        if self.len == 0 {
            return Err(Error::Shape { kernel: self.name(), message: "zero elements".into() });
        }
        self.elem.check(self.name(), caps)?;
        if let Some(b) = self.broadcast
            && (!self.op.broadcasts() || b.cols == 0 || b.group == 0 || !self.len.is_multiple_of(b.cols))
        {
            return Err(Error::Shape {
                kernel: self.name(),
                message: format!("broadcast {b:?} over {} elements of {:?}", self.len, self.op),
            });
        }
        let bytes = self.elem.bytes(u64::from(self.len));
        // `Copy` reads its one input where the others read `b`.
        let a_bytes = if self.op == EltOp::Copy { self.b_bytes() } else { bytes };
        let mut reqs = vec![BufferReq::input("a", a_bytes)];
        if self.op.inputs() == 2 {
            reqs.push(BufferReq::input("b", self.b_bytes()));
        }
        reqs.push(BufferReq::output("out", bytes));
        Ok(reqs)
    }

    fn work(&self, _caps: &Capabilities) -> Result<Work> {
        let n = u64::from(self.len);
        let eb = self.elem.size();
        let b_reads = if self.op.inputs() == 2 { n } else { 0 };
        // `Copy` reads only through `b`; the others read all of `a`.
        let (a_reads, b_reads) = if self.op == EltOp::Copy { (0, n) } else { (n, b_reads) };
        // Computed in f32 whatever the storage (elementwise.wgsl).
        let arith = match self.op {
            EltOp::Add => Work { f32_add: n, ..Work::default() },
            EltOp::Mul => Work { f32_mul: n, ..Work::default() },
            EltOp::Scale { .. } => Work::f32_mul_add(n),
            // As the epilogue counts them (kernels::epilogue).
            EltOp::Silu => Work { f32_mul: 3 * n, f32_add: 2 * n, ..Work::default() },
            EltOp::GeluTanh => Work { f32_mul: 9 * n, f32_add: 4 * n, ..Work::default() },
            EltOp::Copy => Work::default(),
        };
        // Every element reads `b` (a broadcast `b` is re-read from memory, as the shader does).
        Ok(arith + Work { dram_read: (a_reads + b_reads) * eb, dram_write: n * eb, ..Work::default() })
    }

    fn dispatches(&self, gpu: &Gpu, all_buffers: &[TensorRef<'_>], all_reqs: &[BufferReq]) -> Result<Prepared> {
        let caps = gpu.capabilities();
        // The counting variant's counters come last (bound at binding 15).
        let count = counting(all_reqs);
        let (buffers, reqs) = own(all_buffers, all_reqs);
        let vec4 = self.vec4();
        let len = if vec4 { self.len / 4 } else { self.len };
        let (alpha, beta) = match self.op {
            EltOp::Scale { alpha, beta } => (alpha, beta),
            _ => (1.0, 0.0),
        };
        // `Scale` binds `a` a second time in the unused `b` slot.
        let bytes = reqs[reqs.len() - 1].size;
        let (a, b, b_bytes, out) = match buffers {
            [a, out] if self.op == EltOp::Copy => (*a, *a, reqs[0].size, *out),
            [a, out] => (*a, *a, bytes, *out),
            [a, b, out] => (*a, *b, reqs[1].size, *out),
            _ => unreachable!("checked by check_buffers"),
        };
        let width = if vec4 { 4 } else { 1 };
        let (b_cols, b_group) = self.broadcast.map_or((0, 0), |b| (b.cols / width, b.group));
        let key = PipelineKey::new(
            Variant::new(
                &shaders::ELEMENTWISE,
                self.elem
                    .define()
                    .into_iter()
                    .chain(vec4.then_some("VEC4"))
                    .chain(self.broadcast.map(|_| "BROADCAST"))
                    .chain(count.then_some(COUNT_WORK)),
            ),
            &[("OP", f64::from(self.op.code())), ("WG", f64::from(WG))],
        );
        let mut spec = DispatchSpec::sequential(
            EltParams { len, alpha, beta, b_cols, b_group, _pad: [0; 3] },
            vec![(a, reqs[0].size), (b, b_bytes), (out, bytes)],
            grid_1d(len.div_ceil(WG), caps),
        );
        spec.storage.extend(counters_binding(all_buffers, count));
        build(gpu, self.name(), &key, vec![spec], self.work(caps)?)
    }
}

/// Parameter block of shaders/step_slice.wgsl. Keep in sync with `StepSliceParams` there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepSliceParams {
    /// Elements (vec4s with the vec4 variant) of one step.
    pub len: u32,
    /// Steps in `src`.
    pub steps: u32,
    /// Padding.
    pub _pad: [u32; 2],
}

/// One step's slice of a tensor made for every step at once: `dst[i] = src[s · len + i]`, `s`
/// the step counter ([`crate::graph::Graph::step_index`]; a counter past the last step reads the
/// last). How a sampling step takes its adaLN modulation when the request's setup computed every
/// step's (`model::sample`). Buffers: `step` (one u32), `src` (`[steps, len]`), `dst` (`[len]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepSlice {
    /// Elements of one step.
    pub len: u32,
    /// Steps in `src`.
    pub steps: u32,
    /// Element type.
    pub elem: Elem,
}

impl StepSlice {
    /// vec4 loads when a step's length is a multiple of 4.
    pub fn vec4(&self) -> bool {
        self.len.is_multiple_of(4)
    }

    /// The parameter block the kernel binds.
    pub fn params(&self) -> StepSliceParams {
        let len = if self.vec4() { self.len / 4 } else { self.len };
        StepSliceParams { len, steps: self.steps, _pad: [0; 2] }
    }
}

impl Kernel for StepSlice {
    fn name(&self) -> &'static str {
        "step_slice"
    }

    fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>> {
        if self.len == 0 || self.steps == 0 {
            return Err(Error::Shape {
                kernel: self.name(),
                message: format!("{} elements over {} steps", self.len, self.steps),
            });
        }
        self.elem.check(self.name(), caps)?;
        let n = u64::from(self.len);
        Ok(vec![
            BufferReq::input("step", 4),
            BufferReq::input("src", self.elem.bytes(n * u64::from(self.steps))),
            BufferReq::output("dst", self.elem.bytes(n)),
        ])
    }

    fn work(&self, _caps: &Capabilities) -> Result<Work> {
        // As the COUNT_WORK variant counts: every invocation reads the step word and one element
        // (or vec4) of `src`, and writes one.
        let n = u64::from(self.params().len);
        let lane_bytes = self.elem.size() * if self.vec4() { 4 } else { 1 };
        Ok(Work { dram_read: n * (4 + lane_bytes), dram_write: n * lane_bytes, ..Work::default() })
    }

    fn dispatches(&self, gpu: &Gpu, all_buffers: &[TensorRef<'_>], all_reqs: &[BufferReq]) -> Result<Prepared> {
        let caps = gpu.capabilities();
        let count = counting(all_reqs);
        let (buffers, reqs) = own(all_buffers, all_reqs);
        let key = PipelineKey::new(
            Variant::new(
                &shaders::STEP_SLICE,
                self.elem.define().into_iter().chain(self.vec4().then_some("VEC4")).chain(count.then_some(COUNT_WORK)),
            ),
            &[("WG", f64::from(WG))],
        );
        let params = self.params();
        let mut spec = DispatchSpec::sequential(
            params,
            buffers.iter().zip(reqs).map(|(b, r)| (*b, r.size)).collect(),
            grid_1d(params.len.div_ceil(WG), caps),
        );
        spec.storage.extend(counters_binding(all_buffers, count));
        build(gpu, self.name(), &key, vec![spec], self.work(caps)?)
    }
}

/// Parameter block of shaders/convert.wgsl. Keep in sync with `ConvertParams` there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ConvertParams {
    /// Elements.
    pub len: u32,
    /// Padding.
    pub _pad: [u32; 3],
}

/// Element type conversion over `len` elements (f32 to f16, f16 to f32, or an f32 copy): how an
/// f32 sampler state enters an f16 model graph and how the model's output leaves it.
/// Buffers: `src`, `dst`.
#[derive(Clone, Debug)]
pub struct Convert {
    /// Elements.
    pub len: u32,
    /// Source element type.
    pub from: Elem,
    /// Destination element type.
    pub to: Elem,
}

impl Kernel for Convert {
    fn name(&self) -> &'static str {
        "convert"
    }

    fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>> {
        if self.len == 0 {
            return Err(Error::Shape { kernel: self.name(), message: "zero elements".into() });
        }
        if self.from == Elem::F16 && self.to == Elem::F16 {
            return Err(Error::Shape { kernel: self.name(), message: "f16 to f16 is not a conversion".into() });
        }
        self.from.check(self.name(), caps)?;
        self.to.check(self.name(), caps)?;
        let n = u64::from(self.len);
        Ok(vec![BufferReq::input("src", self.from.bytes(n)), BufferReq::output("dst", self.to.bytes(n))])
    }

    fn work(&self, _caps: &Capabilities) -> Result<Work> {
        let n = u64::from(self.len);
        Ok(Work { dram_read: n * self.from.size(), dram_write: n * self.to.size(), ..Work::default() })
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
        let caps = gpu.capabilities();
        let defines: &[&'static str] = match (self.from, self.to) {
            (Elem::F32, Elem::F16) => &["F16", "TO_F16"],
            (Elem::F16, Elem::F32) => &["F16"],
            _ => &[],
        };
        let key = PipelineKey::new(Variant::new(&shaders::CONVERT, defines.iter().copied()), &[("WG", f64::from(WG))]);
        let spec = DispatchSpec::sequential(
            ConvertParams { len: self.len, _pad: [0; 3] },
            buffers.iter().zip(reqs).map(|(b, r)| (*b, r.size)).collect(),
            grid_1d(self.len.div_ceil(WG), caps),
        );
        build(gpu, self.name(), &key, vec![spec], self.work(caps)?)
    }
}
