//! milliwatt's cross-vendor GPU benchmark. On every adapter found (or the one `WGPU_BACKEND` /
//! `WGPU_ADAPTER_NAME` choose) it measures the copy and FMA roofs, the dense and low-bit matmuls
//! and attention, and end-to-end digit generation with the shipped models; prints a table and
//! writes one JSON per adapter (fields documented in the README's benchmark section, which a test
//! checks every report against). `--compare` prints reports side by side.
//!
//! ```sh
//! cargo run --release -p milliwatt-bench -- --quick            # ≤ 3 minutes per adapter
//! cargo run --release -p milliwatt-bench                       # the full suite
//! WGPU_BACKEND=vulkan cargo run --release -p milliwatt-bench -- --quick --out results/bench
//! cargo run --release -p milliwatt-bench -- --compare a.json b.json
//! ```

mod attention;
mod compare;
mod e2e;
mod kernels;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use milliwatt::{Gpu, Options};

#[derive(Parser, Debug)]
#[command(about = "milliwatt's cross-vendor GPU benchmark: kernels and end-to-end generation, one JSON per adapter")]
struct Args {
    /// The quick form: fewer shapes and repeats, two models on 10 images (≤ 3 minutes per adapter).
    #[arg(long)]
    quick: bool,
    /// Where the JSON reports go, one per adapter.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Run only the kernels whose name contains this (the end-to-end rows and attention still run
    /// unless --no-e2e / --no-attention).
    #[arg(long)]
    filter: Option<String>,
    /// Skip the end-to-end generation.
    #[arg(long)]
    no_e2e: bool,
    /// Skip the attention pairs.
    #[arg(long)]
    no_attention: bool,
    /// Print these reports side by side (ratios to the first) instead of measuring.
    #[arg(long, num_args = 1.., value_name = "JSON")]
    compare: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if args.compare.is_empty() { measure(&args) } else { compare::print(&args.compare) };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

type BoxError = Box<dyn std::error::Error>;

/// The adapters to measure: the one the environment names, else every adapter found.
fn adapters() -> Result<Vec<Options>, BoxError> {
    let env = Options::default();
    if std::env::var_os("WGPU_BACKEND").is_some() || env.adapter_name.is_some() {
        return Ok(vec![env]);
    }
    let found = milliwatt::list_adapters_blocking(&env);
    if found.is_empty() {
        return Err(
            milliwatt::Error::NoAdapter { wanted: "any backend".into(), hint: milliwatt::INSTALL_HINT.into() }.into()
        );
    }
    Ok(found.iter().map(milliwatt::AdapterReport::options).collect())
}

fn measure(args: &Args) -> Result<(), BoxError> {
    std::fs::create_dir_all(&args.out)?;
    let mut written = Vec::new();
    for options in adapters()? {
        let gpu = Gpu::new_blocking(&options)?;
        println!("\n=== {} ({})", gpu.describe(), report::host_cpu());
        let start = std::time::Instant::now();
        let kernels = kernels::run(&gpu, args.quick, args.filter.clone())?;
        let attention = if args.no_attention { Vec::new() } else { attention::run(&gpu, args.quick)? };
        let end_to_end = if args.no_e2e { Vec::new() } else { e2e::run(&gpu, args.quick)? };
        milliwatt::bench::check_variants(&gpu)?;
        let r = report::Report::new(&gpu, args.quick, start.elapsed().as_secs_f64(), kernels, attention, end_to_end);
        let path = args.out.join(format!("{}.json", r.slug()));
        milliwatt::bench::write_json(&path.to_string_lossy(), &r)?;
        println!("\nwrote {} ({:.0} s)", path.display(), r.seconds);
        written.push(path);
    }
    if written.len() > 1 {
        compare::print(&written)?;
    }
    Ok(())
}
