//! The GPU-independent description of what to compute, and the engine that runs it.
//!
//! A [`Graph`] is a recording: named tensor proxies (shape, element type or packed weight format,
//! kind) and ops, each a [`crate::Kernel`] bound to tensors in the order of its requirements. Nothing
//! touches the GPU while a graph is built; adding an op checks its bindings against the kernel's
//! requirements right away, so a wrong shape fails where it was written. Ops belong to a
//! [`Phase`]: `Setup` runs once, `Step` once per sampler step, `Finish` once at the end.
//!
//! [`plan`] assigns activations to a pool of reused buffers by liveness; [`fuse`] folds
//! element-wise ops into the epilogues the matmuls offer and activation quantization into the
//! norm before it; [`Executor`] prepares the result once on a device and re-encodes it cheaply
//! every step.
//!
//! ```no_run
//! use std::ops::ControlFlow;
//! use milliwatt::graph::{DType, ExecOptions, Executor, Graph};
//! use milliwatt::kernels::{Activation, Elem, Epilogue, Gemm, MatmulShape};
//!
//! # fn main() -> milliwatt::Result<()> {
//! # let gpu = milliwatt::Gpu::new_blocking(&milliwatt::Options::default())?;
//! let mut g = Graph::new();                                    // no GPU needed to build it
//! let x = g.input("x", &[64, 128], DType::F32);
//! let w = g.weight("w", &[256, 128], DType::F32);
//! let b = g.weight("b", &[256], DType::F32);
//! let y = g.output("y", &[64, 256], DType::F32);
//! let fc = Gemm::new(MatmulShape::new(256, 64, 128), Elem::F32).with_epilogue(Epilogue::bias_act(Activation::GeluTanh));
//! g.op("fc", fc, &[x, w, y, b])?;                              // checked against the kernel's bindings now
//! let ex = Executor::new(&gpu, &g, ExecOptions { profile: true, ..ExecOptions::default() })?;
//! ex.write(w, &vec![0.01f32; 256 * 128])?;                     // weights: uploaded once
//! ex.write(b, &vec![0.0f32; 256])?;
//! ex.write(x, &vec![1.0f32; 64 * 128])?;
//! let report = ex.run(1, |_step| ControlFlow::Continue(()))?;  // one command buffer per step
//! println!("{}\n{}", report.ledger, report.profile.unwrap().table());
//! let out: Vec<f32> = ex.read(y)?;
//! # Ok(()) }
//! ```

mod exec;
mod fuse;
mod plan;

pub use crate::profile::Phase;
pub use exec::{AfterStep, ExecOptions, ExecPlan, Executor, MemoryReport, RunReport, SharedWeights, StepEvent};
pub use fuse::{FusionReport, fuse};
pub use plan::{Plan, PoolBuffer, plan, plan_with, size_class};

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::Capabilities;
use crate::kernels::fusion::GraphKernel;
use crate::quant::Format;

/// A tensor proxy in a [`Graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub usize);

/// What a tensor is, which decides where its memory comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorKind {
    /// Uploaded once and kept (weights, tables, schedules).
    Weight,
    /// Written by the caller before a run (noise, labels, the step counter).
    Input,
    /// Produced and consumed inside the graph: pooled by liveness.
    Activation,
    /// Read back by the caller after a run: kept for the whole run.
    Output,
}

/// Element type of a tensor proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// 32-bit unsigned integer (indices, counters, packed int8 activations).
    U32,
    /// One stream of a packed low-bit weight (`data`, `scales` or `aux` of
    /// [`crate::quant::Packed`]), as 32-bit words.
    Packed(Format),
}

impl DType {
    /// Bytes per element (per 32-bit word for packed streams).
    pub fn size(self) -> u64 {
        match self {
            DType::F16 => 2,
            DType::F32 | DType::U32 | DType::Packed(_) => 4,
        }
    }
}

impl From<crate::kernels::Elem> for DType {
    fn from(e: crate::kernels::Elem) -> Self {
        match e {
            crate::kernels::Elem::F32 => DType::F32,
            crate::kernels::Elem::F16 => DType::F16,
        }
    }
}

/// A tensor proxy: a name (`milliwatt.<name>` on the GPU), a shape, an element type and a kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorDesc {
    /// Name.
    pub name: String,
    /// Shape, outermost first.
    pub shape: Vec<u32>,
    /// Element type.
    pub dtype: DType,
    /// Bytes (elements times size, rounded up to 4).
    pub bytes: u64,
    /// Kind.
    pub kind: TensorKind,
}

pub use crate::kernels::fusion::DynKernel;

/// One op: a kernel bound to tensors in the order of its requirements.
#[derive(Clone)]
pub struct Op {
    /// Name (where in the model, e.g. `block3.fc1`); the kernel's name is its kind.
    pub name: String,
    /// The kernel.
    pub kernel: DynKernel,
    /// Tensors, in the order of the kernel's requirements.
    pub bindings: Vec<TensorId>,
    /// Tensors read (bindings the kernel does not write).
    pub reads: Vec<TensorId>,
    /// Tensors written (a tensor both read and written, like a sampler's `x`, is in both).
    pub writes: Vec<TensorId>,
    /// When it runs.
    pub phase: Phase,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op")
            .field("name", &self.name)
            .field("kernel", &self.kernel.name())
            .field("bindings", &self.bindings)
            .field("phase", &self.phase)
            .finish()
    }
}

impl Op {
    /// An op; reads and writes come from the kernel's requirements (on a device with every
    /// feature). Errors if the binding count is wrong.
    pub(crate) fn new(name: String, kernel: DynKernel, bindings: Vec<TensorId>, phase: Phase) -> Result<Self> {
        let reqs = kernel.requirements(&Capabilities::permissive())?;
        if reqs.len() != bindings.len() {
            let names: Vec<&str> = reqs.iter().map(|r| r.name).collect();
            return Err(Error::Graph {
                message: format!(
                    "op `{name}` ({}) takes {} tensors ({}), got {}",
                    kernel.name(),
                    reqs.len(),
                    names.join(", "),
                    bindings.len()
                ),
            });
        }
        let pick = |f: fn(&crate::kernel::BufferReq) -> bool| -> Vec<TensorId> {
            reqs.iter().zip(&bindings).filter(|(r, _)| f(r)).map(|(_, &t)| t).collect()
        };
        let (reads, writes) = (pick(|r| r.read), pick(|r| r.written));
        Ok(Self { name, kernel, bindings, reads, writes, phase })
    }

    /// The kernel's name: the op kind in profiles and the ledger.
    pub fn kind(&self) -> &'static str {
        self.kernel.name()
    }
}

/// The streams of a packed low-bit weight in a graph (see [`Graph::packed_weight`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedWeight {
    /// Packed values.
    pub data: TensorId,
    /// Scales, when the format has them.
    pub scales: Option<TensorId>,
    /// Zero points or 2:4 positions, when the format has them.
    pub aux: Option<TensorId>,
}

impl PackedWeight {
    /// The streams present, in the order the low-bit matmuls bind them.
    pub fn streams(&self) -> Vec<TensorId> {
        [Some(self.data), self.scales, self.aux].into_iter().flatten().collect()
    }
}

/// A recording of ops over tensor proxies.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    tensors: Vec<TensorDesc>,
    ops: Vec<Op>,
    phase: Phase,
    step: Option<TensorId>,
}

impl Graph {
    /// An empty graph; ops go to [`Phase::Step`] until [`Graph::set_phase`] says otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a tensor of `shape` and `dtype`.
    pub fn tensor(&mut self, name: impl Into<String>, shape: &[u32], dtype: DType, kind: TensorKind) -> TensorId {
        let elems: u64 = shape.iter().map(|&d| u64::from(d)).product();
        let bytes = (elems * dtype.size()).next_multiple_of(4).max(4);
        self.tensors.push(TensorDesc { name: name.into(), shape: shape.to_vec(), dtype, bytes, kind });
        TensorId(self.tensors.len() - 1)
    }

    /// A weight (uploaded once).
    pub fn weight(&mut self, name: impl Into<String>, shape: &[u32], dtype: DType) -> TensorId {
        self.tensor(name, shape, dtype, TensorKind::Weight)
    }

    /// An input (written by the caller before a run).
    pub fn input(&mut self, name: impl Into<String>, shape: &[u32], dtype: DType) -> TensorId {
        self.tensor(name, shape, dtype, TensorKind::Input)
    }

    /// An activation (pooled).
    pub fn activation(&mut self, name: impl Into<String>, shape: &[u32], dtype: DType) -> TensorId {
        self.tensor(name, shape, dtype, TensorKind::Activation)
    }

    /// An output (read back after a run).
    pub fn output(&mut self, name: impl Into<String>, shape: &[u32], dtype: DType) -> TensorId {
        self.tensor(name, shape, dtype, TensorKind::Output)
    }

    /// The streams of an `m` x `k` weight packed in `format`, named `<name>.data`,
    /// `<name>.scales`, `<name>.aux`.
    pub fn packed_weight(&mut self, name: &str, format: Format, m: u32, k: u32) -> Result<PackedWeight> {
        let l = format.layout(k)?;
        let dt = DType::Packed(format);
        let data = self.weight(format!("{name}.data"), &[m, l.row_words], dt);
        let scales =
            (l.scale_row_words > 0).then(|| self.weight(format!("{name}.scales"), &[m, l.scale_row_words], dt));
        let aux = (l.aux_row_words > 0).then(|| self.weight(format!("{name}.aux"), &[m, l.aux_row_words], dt));
        Ok(PackedWeight { data, scales, aux })
    }

    /// The step counter: one u32 input the executor sets to the step index before each step, so
    /// kernels that read per-step values (sampler updates, the timestep) index a schedule with it
    /// instead of getting new bind groups. Made on first call.
    pub fn step_index(&mut self) -> TensorId {
        if let Some(t) = self.step {
            return t;
        }
        let t = self.input("step", &[1], DType::U32);
        self.step = Some(t);
        t
    }

    /// The step counter, if the graph has one.
    pub fn step_tensor(&self) -> Option<TensorId> {
        self.step
    }

    /// The phase of the ops added from now on.
    pub fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
    }

    /// Appends an op running `kernel` over `bindings` (in the order of its requirements).
    ///
    /// Checks now, without a device: the binding count and every tensor's size against the
    /// kernel's requirements (as on a device with every feature), that no weight is written,
    /// that every activation read was written by an earlier op, and that phases do not go
    /// backwards.
    pub fn op(
        &mut self,
        name: impl Into<String>,
        kernel: impl GraphKernel + 'static,
        bindings: &[TensorId],
    ) -> Result<()> {
        self.push(name.into(), Arc::new(kernel), bindings.to_vec(), self.phase)
    }

    pub(crate) fn push(
        &mut self,
        name: String,
        kernel: DynKernel,
        bindings: Vec<TensorId>,
        phase: Phase,
    ) -> Result<()> {
        let bad = |message: String| Err(Error::Graph { message });
        if let Some(last) = self.ops.last()
            && last.phase > phase
        {
            return bad(format!("op `{name}` is in phase {phase:?} after an op of phase {:?}", last.phase));
        }
        let op = Op::new(name, kernel, bindings, phase)?;
        let reqs = op.kernel.requirements(&Capabilities::permissive())?;
        let name = &op.name;
        for (i, (r, &t)) in reqs.iter().zip(&op.bindings).enumerate() {
            let Some(d) = self.tensors.get(t.0) else {
                return bad(format!("op `{name}` binds unknown tensor {} as `{}`", t.0, r.name));
            };
            if d.bytes < r.size {
                return bad(format!(
                    "op `{name}` ({}): tensor `{}` ({} bytes) is too small for binding `{}` ({} bytes)",
                    op.kind(),
                    d.name,
                    d.bytes,
                    r.name,
                    r.size
                ));
            }
            if r.written && d.kind == TensorKind::Weight {
                return bad(format!("op `{name}` writes weight `{}`", d.name));
            }
            if r.read && d.kind == TensorKind::Activation && !self.ops.iter().any(|o| o.writes.contains(&t)) {
                return bad(format!("op `{name}` reads activation `{}` before anything writes it", d.name));
            }
            if r.written && op.bindings.iter().enumerate().any(|(j, u)| j != i && *u == t) {
                return bad(format!(
                    "op `{name}` binds tensor `{}` as `{}`, which it writes, and again as another binding \
                     (a dispatch may not read and write one buffer through two bindings)",
                    d.name, r.name
                ));
            }
        }
        self.ops.push(op);
        Ok(())
    }

    /// The tensors.
    pub fn tensors(&self) -> &[TensorDesc] {
        &self.tensors
    }

    /// One tensor.
    pub fn tensor_desc(&self, t: TensorId) -> Result<&TensorDesc> {
        self.tensors.get(t.0).ok_or_else(|| Error::Graph { message: format!("unknown tensor {}", t.0) })
    }

    /// Looks a tensor up by name.
    pub fn find(&self, name: &str) -> Option<TensorId> {
        self.tensors.iter().position(|t| t.name == name).map(TensorId)
    }

    /// The ops in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The range of op indices in `phase`.
    pub fn phase_range(&self, phase: Phase) -> std::ops::Range<usize> {
        let start = self.ops.iter().position(|o| o.phase >= phase).unwrap_or(self.ops.len());
        let end = self.ops.iter().position(|o| o.phase > phase).unwrap_or(self.ops.len());
        start..end
    }

    /// The energy ledger of a run of `steps` steps on a device with `caps`, from the work each
    /// op's kernel reports — without a device. This is how a baseline (the same model dense in
    /// f32) is priced; [`Executor::run`]'s [`RunReport::ledger`] counts the dispatches it really made.
    pub fn ledger(&self, caps: &Capabilities, steps: u32) -> Result<crate::ledger::Ledger> {
        let mut ledger = crate::ledger::Ledger::default();
        for op in &self.ops {
            let times = if op.phase == Phase::Step { u64::from(steps) } else { 1 };
            ledger.add_kernel(op.kind(), &*op.kernel, caps, times)?;
        }
        Ok(ledger)
    }
}
