//! # milliwatt
//!
//! Image generation with sparse, low-precision kernels on any GPU through wgpu (Vulkan, Metal,
//! DX12, GL), with an energy ledger that shows what they save.
//!
//! The layers, each depending only on those before it (`tests/layers.rs` checks the order):
//!
//! - the GPU context ([`Gpu`], [`Capabilities`]: own device or the app's) and the embedded,
//!   validated WGSL ([`shaders`]);
//! - the kernel contract ([`Kernel`], [`Prepared`], [`Work`]) and the packed weight formats and
//!   quantizers ([`quant`]: ternary, int8, int4, 2:4);
//! - the kernels ([`kernels`]: dense and low-bit GEMV and GEMM, attention, norms, embeddings,
//!   sampler steps) with a CPU twin for each ([`cpu`]);
//! - the energy ledger ([`ledger`]) and the GPU profile ([`profile`]);
//! - the graph host ([`graph`]): ops over tensor proxies, epilogue fusion, buffer planning, and an
//!   executor that encodes each sampler step as one command buffer;
//! - the class-conditional DiT ([`model`]: config, weights, graph, CPU reference) and the
//!   [`Generator`] that samples it (rectified-flow Euler or Heun, DDIM, guidance, previews);
//! - at the edge: scoring ([`eval`]), image helpers ([`picture`]) and benchmark timing ([`mod@bench`]).
//!
//! One kernel on your own buffers:
//!
//! ```no_run
//! use milliwatt::{Gpu, Kernel, Options, kernels::{Elem, Gemm, MatmulShape}};
//! # fn main() -> milliwatt::Result<()> {
//! let gpu = Gpu::new_blocking(&Options::default())?;
//! let shape = MatmulShape::new(256, 64, 128); // M outputs, N tokens, K inputs
//! let x = gpu.upload("x", &vec![1.0f32; 64 * 128])?;
//! let w = gpu.upload("w", &vec![0.5f32; 256 * 128])?;
//! let y = gpu.upload("y", &vec![0.0f32; 64 * 256])?;
//! let gemm = Gemm::new(shape, Elem::F32).prepare(&gpu, &[(&x).into(), (&w).into(), (&y).into()])?;
//! gpu.run(&[&gemm])?;
//! let out: Vec<f32> = gpu.read(&y)?;
//! assert_eq!(out[0], 64.0);
//! # Ok(()) }
//! ```

pub mod bench;
pub mod cpu;
mod error;
pub mod eval;
pub mod generator;
pub mod gpu;
pub mod graph;
pub mod kernel;
pub mod kernels;
pub mod ledger;
pub mod model;
#[cfg(feature = "nvml")]
pub mod nvml;
pub mod picture;
pub mod profile;
pub mod quant;
pub mod shaders;
pub mod spread;

pub use error::{CheckpointProblem, Error, INSTALL_HINT, Result};
pub use generator::{Generation, Generator, GeneratorOptions, Request, Seeds, TextureTarget};
pub use gpu::{AdapterReport, Capabilities, Gpu, ObjectCounts, Options, list_adapters, list_adapters_blocking};
pub use kernel::{BufferReq, Footprint, Kernel, Prepared, TensorRef, Work};
pub use kernels::Elem;
pub use ledger::{Cache, Energy, EnergyTable, HOROWITZ_45NM, Ledger};
pub use spread::Spread;
pub use wgpu;

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        send_sync::<crate::Gpu>();
        send_sync::<crate::Prepared>();
        send_sync::<crate::Capabilities>();
        send_sync::<crate::Error>();
        send_sync::<crate::Generator>();
        send_sync::<crate::graph::Executor>();
    }

    /// An app keeps the generator beside its device in one struct, and may move it to a thread:
    /// `Generator` owns a handle to the `Gpu` instead of borrowing it.
    #[test]
    fn a_generator_lives_beside_its_gpu() {
        fn owned<T: Send + Sync + 'static>() {}
        #[allow(dead_code)]
        struct App {
            gpu: crate::Gpu,
            generator: crate::Generator,
        }
        owned::<App>();
    }
}
