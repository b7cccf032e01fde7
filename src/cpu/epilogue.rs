//! Twin of shaders/shared/epilogue.wgsl.

use crate::kernels::epilogue::{Activation, Epilogue};

/// GELU, tanh form, as the shader writes it.
pub fn gelu_tanh(v: f32) -> f32 {
    let c = 0.797_884_6_f32;
    0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
}

/// SiLU, as the shader writes it.
pub fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// The epilogue's tensors (as f32), where the epilogue uses them.
#[derive(Clone, Copy, Debug, Default)]
pub struct EpilogueInputs<'a> {
    /// M biases.
    pub bias: &'a [f32],
    /// Residual, Y's shape and stride.
    pub residual: &'a [f32],
    /// Gate rows, ldy apart.
    pub gate: &'a [f32],
}

/// Twin of `epilogue`: value `v` of output row `n`, column `m` (offset included), at Y index `at`.
pub fn epilogue(e: &Epilogue, t: &EpilogueInputs<'_>, ldy: usize, v: f32, n: usize, m: usize, at: usize) -> f32 {
    let mut v = v;
    if e.bias {
        v += t.bias[m];
    }
    v = match e.act {
        Activation::None => v,
        Activation::GeluTanh => gelu_tanh(v),
        Activation::Silu => silu(v),
    };
    if let Some(g) = e.gate_rows {
        v *= t.gate[(n / g as usize) * ldy + m];
    }
    if e.residual {
        v += t.residual[at];
    }
    v
}
