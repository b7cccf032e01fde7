//! The fusion side of the kernel contract: what a kernel tells the graph's fusion pass
//! (`graph::fuse`) about itself, and how it rebuilds itself with a fused epilogue or output.
//!
//! A graph holds its kernels as [`DynKernel`]s: a [`Kernel`] that is also [`Fusable`]. The pass
//! reads only [`Fusable::fusion_role`] and binding names from [`Kernel::requirements`], never a
//! concrete type or a binding position, and asks the producing kernel to rebuild itself with
//! [`Fusable::fused`]. A new matmul joins the fusion by describing itself as
//! [`FusionRole::Epilogue`]; a kernel that takes no part says [`FusionRole::None`] (every kernel
//! must say something: the trait has no defaults, so forgetting it does not compile).

use std::sync::Arc;

use crate::kernel::Kernel;
use crate::kernels::{
    ActQuant, Attention, AttentionNaive, Broadcast, ClassEmbed, Convert, Counting, Elem, Elementwise, EltOp, Epilogue,
    FmaProbe, Gemm, Gemv, MatmulNaive, MlpBlock, Noise, Norm, Patchify, QGemm, QGemv, SamplerStep, StepSlice,
    TimestepEmbed, Unpatchify,
};

/// A kernel a graph can hold: a [`Kernel`] with its [`Fusable`] description.
pub trait GraphKernel: Kernel + Fusable + Send + Sync {}

impl<T: Kernel + Fusable + Send + Sync> GraphKernel for T {}

/// A kernel held by a graph.
pub type DynKernel = Arc<dyn GraphKernel>;

/// What a kernel is to the fusion pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FusionRole {
    /// Nothing: it is never folded into another op nor takes one in.
    None,
    /// Writes `y` ([n, m] of `out`) through `epilogue`, and can take a larger one (bias, an
    /// activation, a gate, a residual: bindings `bias`, `residual`, `gate`). The matmuls.
    Epilogue {
        /// The epilogue it applies now.
        epilogue: Epilogue,
        /// Rows of `y`.
        n: u32,
        /// Columns of `y`.
        m: u32,
        /// Element type of `y`.
        out: Elem,
    },
    /// An element-wise op over `len` elements: `out = op(a, b)` (bindings `a`, `b` when
    /// binary, `out`), `b` broadcast as `broadcast` says.
    Elementwise {
        /// The operation.
        op: EltOp,
        /// Elements of `a` and `out`.
        len: u32,
        /// Element type.
        elem: Elem,
        /// How `b` is broadcast, if it is.
        broadcast: Option<Broadcast>,
    },
    /// Writes `y` ([rows, d] floats) and can write its int8 quantization instead (bindings
    /// `xq`, `x_scales`, as [`crate::kernels::ActQuant`] computes it). The norms.
    Int8Output {
        /// Rows.
        rows: u32,
        /// Row length.
        d: u32,
        /// Element type of `y`.
        elem: Elem,
    },
    /// Quantizes `x` ([n, k] floats) to int8 rows `xq` with per-row `scales`.
    ActQuant {
        /// Rows.
        n: u32,
        /// Row length.
        k: u32,
        /// Element type of `x`.
        elem: Elem,
    },
}

/// What a kernel is rebuilt with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fused {
    /// This epilogue instead of its own (for [`FusionRole::Epilogue`]).
    Epilogue(Epilogue),
    /// Its int8 quantization as the output (for [`FusionRole::Int8Output`]).
    Int8Output,
}

/// The fusion contract: every kernel a graph holds implements it.
pub trait Fusable {
    /// What the fusion pass may do with this kernel.
    fn fusion_role(&self) -> FusionRole;

    /// This kernel rebuilt with `with`, or `None` if its role does not offer it.
    fn fused(&self, with: Fused) -> Option<DynKernel>;
}

/// Kernels that take no part in fusion.
macro_rules! not_fusable {
    ($($t:ty),* $(,)?) => {
        $(impl Fusable for $t {
            fn fusion_role(&self) -> FusionRole {
                FusionRole::None
            }

            fn fused(&self, _: Fused) -> Option<DynKernel> {
                None
            }
        })*
    };
}

/// Matmuls: an epilogue site, rebuilt with `with_epilogue`.
macro_rules! epilogue_site {
    ($($t:ty => $out:expr),* $(,)?) => {
        $(impl Fusable for $t {
            fn fusion_role(&self) -> FusionRole {
                let out: fn(&$t) -> Elem = $out;
                FusionRole::Epilogue { epilogue: self.epilogue, n: self.shape.n, m: self.shape.m, out: out(self) }
            }

            fn fused(&self, with: Fused) -> Option<DynKernel> {
                match with {
                    Fused::Epilogue(e) => Some(Arc::new(self.clone().with_epilogue(e))),
                    Fused::Int8Output => None,
                }
            }
        })*
    };
}

epilogue_site!(
    Gemm => |k| k.elem,
    Gemv => |k| k.elem,
    QGemv => |k| k.act.out(),
    QGemm => |k| k.act.out(),
);

not_fusable!(
    MatmulNaive,
    Attention,
    AttentionNaive,
    Convert,
    StepSlice,
    Patchify,
    Unpatchify,
    TimestepEmbed,
    ClassEmbed,
    Noise,
    FmaProbe,
    SamplerStep,
    MlpBlock,
    Counting<Gemv>,
    Counting<Gemm>,
    Counting<Attention>,
);

impl Fusable for Elementwise {
    fn fusion_role(&self) -> FusionRole {
        FusionRole::Elementwise { op: self.op, len: self.len, elem: self.elem, broadcast: self.broadcast }
    }

    fn fused(&self, _: Fused) -> Option<DynKernel> {
        None
    }
}

impl Fusable for Norm {
    fn fusion_role(&self) -> FusionRole {
        if self.emit_i8 {
            return FusionRole::None;
        }
        FusionRole::Int8Output { rows: self.rows, d: self.d, elem: self.elem }
    }

    fn fused(&self, with: Fused) -> Option<DynKernel> {
        match with {
            Fused::Int8Output if !self.emit_i8 => Some(Arc::new(Norm { emit_i8: true, ..self.clone() })),
            _ => None,
        }
    }
}

impl Fusable for ActQuant {
    fn fusion_role(&self) -> FusionRole {
        FusionRole::ActQuant { n: self.n, k: self.k, elem: self.elem }
    }

    fn fused(&self, _: Fused) -> Option<DynKernel> {
        None
    }
}
