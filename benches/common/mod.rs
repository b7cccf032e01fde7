//! What the benchmark binaries share: their command line and their device.

use clap::Args;

/// The command line of a benchmark with no flags of its own.
#[derive(clap::Parser, Debug)]
#[allow(dead_code, reason = "used by the benchmarks without flags of their own, not by every binary")]
pub struct Cli {
    #[command(flatten)]
    pub flags: BenchFlags,
}

/// The benchmark's device: the default adapter (`WGPU_BACKEND` / `WGPU_ADAPTER_NAME` choose),
/// named on stdout so every figure printed after it says where it was measured.
pub fn gpu() -> milliwatt::Result<milliwatt::Gpu> {
    let gpu = milliwatt::Gpu::new_blocking(&milliwatt::Options::default())?;
    println!("adapter: {}", gpu.describe());
    Ok(gpu)
}

/// The flags every benchmark takes (`cargo bench --bench NAME -- [--quick] [--json PATH]`).
#[derive(Args, Debug)]
pub struct BenchFlags {
    /// A shorter run (fewer shapes and repeats).
    #[arg(long)]
    pub quick: bool,
    /// Where the JSON report goes (default `target/bench/<bench>.json`).
    #[arg(long)]
    json: Option<String>,
    /// Passed by `cargo bench` to every benchmark binary; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

impl BenchFlags {
    /// The JSON report's path for benchmark `name`.
    pub fn json(&self, name: &str) -> String {
        self.json.clone().unwrap_or_else(|| format!("target/bench/{name}.json"))
    }
}
