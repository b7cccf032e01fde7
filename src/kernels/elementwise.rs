//! Element-wise add, multiply and scale.

use crate::error::{Error, Result};
use crate::gpu::{Capabilities, Gpu, PipelineKey};
use crate::kernel::{BufferReq, DispatchSpec, Kernel, Prepared, TensorRef, Work, build, check_buffers, grid_1d};
use crate::kernels::Elem;
use crate::shaders::{Variant, shader};

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
    /// Padding.
    pub _pad: u32,
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
}

impl EltOp {
    fn code(self) -> u32 {
        match self {
            EltOp::Add => 0,
            EltOp::Mul => 1,
            EltOp::Scale { .. } => 2,
            EltOp::Silu => 3,
            EltOp::GeluTanh => 4,
        }
    }

    /// Number of input buffers.
    pub fn inputs(self) -> usize {
        if matches!(self, EltOp::Add | EltOp::Mul) { 2 } else { 1 }
    }
}

/// Element-wise kernel over `len` elements. Buffers: `a`, `b` (add and mul only), `out`.
#[derive(Clone, Debug)]
pub struct Elementwise {
    /// Operation.
    pub op: EltOp,
    /// Number of elements.
    pub len: u32,
    /// Element type.
    pub elem: Elem,
}

const WG: u32 = 256;

impl Elementwise {
    /// An element-wise `op` over `len` elements of `elem`.
    pub fn new(op: EltOp, len: u32, elem: Elem) -> Self {
        Self { op, len, elem }
    }

    /// vec4 loads when the length is a multiple of 4.
    pub fn vec4(&self) -> bool {
        self.len.is_multiple_of(4)
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
        let bytes = self.elem.bytes(u64::from(self.len));
        let mut reqs = vec![BufferReq::input("a", bytes)];
        if self.op.inputs() == 2 {
            reqs.push(BufferReq::input("b", bytes));
        }
        reqs.push(BufferReq::output("out", bytes));
        Ok(reqs)
    }

    fn work(&self, _caps: &Capabilities) -> Result<Work> {
        let n = u64::from(self.len);
        let eb = self.elem.size();
        let inputs = self.op.inputs() as u64;
        // Computed in f32 whatever the storage (elementwise.wgsl).
        let arith = match self.op {
            EltOp::Add => Work { f32_add: n, ..Work::default() },
            EltOp::Mul => Work { f32_mul: n, ..Work::default() },
            EltOp::Scale { .. } => Work::f32_mul_add(n),
            // As the epilogue counts them (kernels::epilogue).
            EltOp::Silu => Work { f32_mul: 3 * n, f32_add: 2 * n, ..Work::default() },
            EltOp::GeluTanh => Work { f32_mul: 8 * n, f32_add: 4 * n, ..Work::default() },
        };
        Ok(arith + Work { dram_read: inputs * n * eb, dram_write: n * eb, ..Work::default() })
    }

    fn prepare(&self, gpu: &Gpu, buffers: &[TensorRef<'_>]) -> Result<Prepared> {
        let caps = gpu.capabilities();
        let reqs = self.requirements(caps)?;
        check_buffers(self.name(), caps, &reqs, buffers)?;
        let vec4 = self.vec4();
        let len = if vec4 { self.len / 4 } else { self.len };
        let (alpha, beta) = match self.op {
            EltOp::Scale { alpha, beta } => (alpha, beta),
            _ => (1.0, 0.0),
        };
        // `Scale` binds `a` a second time in the unused `b` slot.
        let bytes = reqs[0].size;
        let (a, b, out) = match buffers {
            [a, out] => (*a, *a, *out),
            [a, b, out] => (*a, *b, *out),
            _ => unreachable!("checked by check_buffers"),
        };
        let key = PipelineKey::new(
            Variant::new(
                shader("elementwise").expect("elementwise shader"),
                self.elem.define().into_iter().chain(vec4.then_some("VEC4")),
            ),
            &[("OP", f64::from(self.op.code())), ("WG", f64::from(WG))],
        );
        let spec = DispatchSpec::sequential(
            EltParams { len, alpha, beta, _pad: 0 },
            vec![(a, bytes), (b, bytes), (out, bytes)],
            grid_1d(len.div_ceil(WG), caps),
        );
        build(gpu, self.name(), &key, vec![spec], self.work(caps)?)
    }
}
