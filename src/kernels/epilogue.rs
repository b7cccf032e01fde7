//! Epilogues fused into the matmuls' output stores (shaders/shared/epilogue.wgsl):
//! `v = act(v + bias[m])`, then `y = v`, `y = residual + v`, or `y = residual + gate[g, m] * v`.

use crate::error::{Error, Result};
use crate::kernel::{BufferReq, Work};
use crate::kernels::Elem;

/// Activation applied after the bias.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Activation {
    /// Identity.
    #[default]
    None,
    /// GELU, tanh approximation (DiT's MLP).
    GeluTanh,
    /// SiLU (x * sigmoid(x)).
    Silu,
}

impl Activation {
    /// The shader's `ACT` override value.
    pub(crate) fn code(self) -> u32 {
        match self {
            Activation::None => 0,
            Activation::GeluTanh => 1,
            Activation::Silu => 2,
        }
    }
}

/// What to do with each output value before it is stored. `Default` stores it as is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Epilogue {
    /// Add a per-output-feature bias (buffer `bias`, M elements).
    pub bias: bool,
    /// Activation after the bias.
    pub act: Activation,
    /// Add a residual tensor of Y's shape (buffer `residual`).
    pub residual: bool,
    /// Multiply by a gate row shared by this many consecutive rows of Y (buffer `gate`,
    /// ceil(N / rows) x M) before the residual add: DiT's `x + gate * f(x)`.
    pub gate_rows: Option<u32>,
}

impl Epilogue {
    /// Bias, then activation.
    pub fn bias_act(act: Activation) -> Self {
        Self { bias: true, act, ..Self::default() }
    }

    /// The preprocessor defines the epilogue needs.
    pub(crate) fn defines(&self) -> impl Iterator<Item = &'static str> {
        [self.bias.then_some("BIAS"), self.residual.then_some("RESIDUAL"), self.gate_rows.map(|_| "GATED")]
            .into_iter()
            .flatten()
    }

    /// Checks the epilogue against the output shape.
    pub(crate) fn check(&self, kernel: &'static str, n: u32) -> Result<()> {
        if let Some(g) = self.gate_rows {
            if g == 0 {
                return Err(Error::Shape { kernel, message: "gate_rows must be at least 1".into() });
            }
            if !self.residual {
                return Err(Error::Shape {
                    kernel,
                    message: "a gated epilogue is a gated residual: set `residual` too".into(),
                });
            }
            let _ = n;
        }
        Ok(())
    }

    /// Extra buffers, in binding order (7 bias, 8 residual, 9 gate), for an N x M output.
    pub(crate) fn requirements(&self, n: u32, m: u32, elem: Elem) -> Vec<(u32, BufferReq)> {
        let (n64, m64) = (u64::from(n), u64::from(m));
        let mut out = Vec::new();
        if self.bias {
            out.push((7, BufferReq::input("bias", elem.bytes(m64))));
        }
        if self.residual {
            out.push((8, BufferReq::input("residual", elem.bytes(n64 * m64))));
        }
        if let Some(g) = self.gate_rows {
            out.push((9, BufferReq::input("gate", elem.bytes(u64::from(n.div_ceil(g.max(1))) * m64))));
        }
        out
    }

    /// Work for N x M outputs: reads of the extra tensors and the arithmetic per value.
    /// [`Epilogue::work`] for a tiled GEMM, whose invocations load each of their four columns'
    /// bias once (the 16 sharing a column, in each of `tiles_n` tiles of N) rather than once per
    /// output.
    pub(crate) fn work_tiled(&self, n: u32, m: u32, tiles_n: u64, elem: Elem) -> Work {
        let mut w = self.work(n, m, elem);
        if self.bias {
            // Each column's bias loaded once per tile of N into workgroup memory (64 slots per
            // workgroup, as f32), then read by the 16 invocations sharing the column.
            let tiles_m = u64::from(m.div_ceil(64));
            w.dram_read =
                w.dram_read - u64::from(n) * u64::from(m) * elem.size() + tiles_n * u64::from(m) * elem.size();
            w.sram_write += tiles_n * tiles_m * 64 * 4;
            w.sram_read += tiles_n * 16 * u64::from(m) * 4;
        }
        w
    }

    pub(crate) fn work(&self, n: u32, m: u32, elem: Elem) -> Work {
        let outs = u64::from(n) * u64::from(m);
        let mut w = Work::default();
        if self.bias {
            w.f32_add += outs;
            w.dram_read += outs * elem.size();
        }
        match self.act {
            Activation::None => {}
            // 0.5 v (1 + tanh(c (v + 0.044715 v^3))): 6 multiplies, 2 adds, tanh counted as an
            // exp (2 multiplies + 1 add), an add and a divide (1 multiply).
            Activation::GeluTanh => {
                w.f32_mul += outs * 9;
                w.f32_add += outs * 4;
            }
            // v / (1 + exp(-v)): exp as 2 multiplies + 1 add, then 1 add and a divide.
            Activation::Silu => {
                w.f32_mul += outs * 3;
                w.f32_add += outs * 2;
            }
        }
        if self.gate_rows.is_some() {
            w.f32_mul += outs;
            w.dram_read += outs * elem.size();
        }
        if self.residual {
            w.f32_add += outs;
            w.dram_read += outs * elem.size();
        }
        w
    }
}
