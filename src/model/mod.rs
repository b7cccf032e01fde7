//! The class-conditional diffusion transformer (DiT): its configuration, its weights loaded from
//! safetensors in the original state-dict naming (quantized on load per a policy, or pre-packed),
//! and the graph that runs it.

pub mod config;
pub mod dit;
pub mod reference;
pub mod sample;
pub mod weights;

pub use config::{AttentionKind, DitConfig, FloatFormat, LinearFormat, Prediction, QuantPolicy};
pub use dit::{Conditioning, DitGraph, ForwardIo, ForwardTensors, StepModulation};
pub use sample::{GraphOptions, ModulationPlan, SampleGraph, SampleSpec, SamplerKind};
pub use weights::{DitWeights, HostTensor, WeightData};
