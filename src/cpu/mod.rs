//! CPU twins: one function per kernel, taking the same parameter block and bindings as the shader
//! and written to read like it, so tests can compare the two on the same data.

pub mod attention;
pub mod decode;
pub mod elementwise;
pub mod embed;
pub mod epilogue;
pub mod matmul;
pub mod mlp;
pub mod noise;
pub mod norm;
pub mod probe;
pub mod qgemm;
pub mod qmatmul;
pub mod sampler;
pub mod trig;

use crate::kernels::Elem;

/// A storage element type. As in shaders/shared/elem.wgsl, f16 is storage only: values are
/// widened to f32, all arithmetic is f32, and results are rounded once when stored.
pub trait Element: Copy + Default + bytemuck::Pod + Send + Sync + std::fmt::Debug + 'static {
    /// The matching kernel element type.
    const ELEM: Elem;
    /// Widens to f32 (exact).
    fn to_f32(self) -> f32;
    /// Rounds from f32 (round to nearest, ties to even).
    fn from_f32(v: f32) -> Self;
}

impl Element for f32 {
    const ELEM: Elem = Elem::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Element for half::f16 {
    const ELEM: Elem = Elem::F16;
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
}

/// `dot(a, b)` of two 4-vectors in f32, in the order `dot` is usually lowered: ((a0 b0 + a1 b1) +
/// a2 b2) + a3 b3 (drivers may fuse or reorder: tests compare with a tolerance).
pub fn dot4(a: [f32; 4], b: [f32; 4]) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3]
}
