//! What the benchmark binaries share: their command line.

use clap::Args;

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
