//! Typed wrappers of the WGSL kernels, each implementing [`crate::Kernel`].

pub mod attention;
pub mod decode;
pub mod elementwise;
pub mod embed;
pub mod epilogue;
pub mod fusion;
pub mod matmul;
pub mod mlp;
pub mod noise;
pub mod norm;
pub mod probe;
pub mod qgemm;
pub mod qmatmul;
pub mod sampler;
pub mod work_count;

pub use attention::{Attention, AttentionNaive, Sparsity, block_list, neighbourhood_blocks, neighbourhood_tiles};
pub use decode::{DecodeParams, DecodeRgba8};
pub use elementwise::{Broadcast, Convert, Elementwise, EltOp, StepSlice};
pub use embed::{ClassEmbed, PatchGeometry, Patchify, TimestepEmbed, Unpatchify, pos_embed_2d, timestep_freqs};
pub use epilogue::{Activation, Epilogue};
pub use matmul::{
    Gemm, GemmTile, GemmVariant, Gemv, GemvReduce, GemvVariant, MatmulKind, MatmulNaive, MatmulParams, MatmulShape,
};
pub use mlp::{MlpBlock, MlpParams};
pub use noise::{Noise, NoiseKind};
pub use norm::{Modulation, Norm, NormKind};
pub use probe::FmaProbe;
pub use qgemm::QGemm;
pub use qmatmul::{Act, ActQuant, QGemv, QGemvVariant, QMatmulParams};
pub use sampler::{SamplerOp, SamplerStep, ScheduleEntry, ddim_schedule, rectified_flow_schedule};
pub use work_count::{COUNTERS_BINDING, Counting, WorkCounters};

use crate::error::{Error, Result};
use crate::gpu::Capabilities;

/// Storage element type of a dense kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Elem {
    /// 32-bit float.
    F32,
    /// 16-bit float storage (needs `SHADER_F16`); arithmetic in f32.
    F16,
}

impl Elem {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            Elem::F32 => 4,
            Elem::F16 => 2,
        }
    }

    /// The preprocessor define of this element type, if any.
    pub(crate) fn define(self) -> Option<&'static str> {
        match self {
            Elem::F32 => None,
            Elem::F16 => Some("F16"),
        }
    }

    /// Errors if the device cannot run this element type.
    pub(crate) fn check(self, kernel: &'static str, caps: &Capabilities) -> Result<()> {
        if self == Elem::F16 && !caps.f16 {
            return Err(Error::Unsupported { kernel, needs: "SHADER_F16 (f16 kernels; unset MILLIWATT_FORCE_F32)" });
        }
        Ok(())
    }

    /// Bytes of `count` elements, rounded up to the 4-byte granularity of storage bindings.
    pub fn bytes(self, count: u64) -> u64 {
        (count * self.size()).next_multiple_of(4)
    }
}
