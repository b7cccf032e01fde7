//! CPU twins: one function per kernel, taking the same parameter block and bindings as the shader
//! and written to read like it, so tests can compare the two on the same data.

pub mod elementwise;
pub mod matmul;
pub mod probe;

use crate::kernels::Elem;

/// A storage element type, with the arithmetic rules of shaders/shared/elem.wgsl: products are
/// formed in the element type, sums accumulate in f32.
pub trait Element: Copy + Default + bytemuck::Pod + Send + Sync + std::fmt::Debug + 'static {
    /// The matching kernel element type.
    const ELEM: Elem;
    /// Widens to f32 (exact).
    fn to_f32(self) -> f32;
    /// Rounds from f32 (round to nearest, ties to even).
    fn from_f32(v: f32) -> Self;
    /// `a * b` rounded to the element type (`mul_acc4` in elem.wgsl).
    fn mul(a: Self, b: Self) -> f32 {
        // The f32 product of two f16 values is exact, so rounding it once gives the f16 product.
        Self::from_f32(a.to_f32() * b.to_f32()).to_f32()
    }
    /// `a + b` rounded to the element type.
    fn add(a: f32, b: f32) -> f32 {
        Self::from_f32(a + b).to_f32()
    }
    /// `dot(a, b)` of a 4-vector formed in the element type (`dot_acc` in elem.wgsl).
    fn dot4(a: [Self; 4], b: [Self; 4]) -> f32 {
        let mut s = Self::mul(a[0], b[0]);
        for j in 1..4 {
            s = Self::add(s, Self::mul(a[j], b[j]));
        }
        s
    }
}

impl Element for f32 {
    const ELEM: Elem = Elem::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    fn dot4(a: [f32; 4], b: [f32; 4]) -> f32 {
        a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3]
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
