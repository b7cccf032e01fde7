//! Soak: many generations in one process over a fixed cycle of request shapes (image counts,
//! steps, guidance, previews, img2img), checking that host memory and the device's live buffers
//! stop growing once every shape has been seen.
//!
//! ```sh
//! cargo run --release --example soak                      # 1,000 generations, shipped ternary model
//! cargo run --release --example soak -- --generations 200 --json target/soak.json
//! ```
//!
//! Passes when host RSS, wgpu buffer count and wgpu buffer bytes over generations 901–1,000 (the
//! last tenth) are within 2 % of 101–200 (the second tenth); writes every figure as JSON.

use std::path::PathBuf;

use clap::Parser;
use milliwatt::model::DitWeights;
use milliwatt::{Generator, GeneratorOptions, Gpu, Options};

#[path = "../tests/common/soak.rs"]
mod soak;

#[derive(Parser, Debug)]
#[command(about = "Run many generations in one process and check that memory stops growing")]
struct Args {
    #[arg(long, default_value_t = 1000)]
    generations: usize,
    /// A model directory.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/models/mnist-ternary"))]
    model: PathBuf,
    /// Largest growth allowed, percent.
    #[arg(long, default_value_t = 2.0)]
    tolerance: f64,
    #[arg(long, default_value = "results/soak.json")]
    json: String,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

fn run(args: &Args) -> milliwatt::Result<bool> {
    let gpu = Gpu::new_blocking(&Options::default())?;
    println!("adapter: {}", gpu.describe());
    let generator = Generator::new(&gpu, DitWeights::open(&args.model, None)?, GeneratorOptions::default())?;
    let report = soak::run(&generator, &gpu, args.generations, |i, s| {
        if (i + 1) % 100 == 0 || i == 0 {
            println!(
                "generation {:>5}: RSS {:.1} MiB, {} buffers, {:.1} MiB of buffers",
                i + 1,
                s.rss as f64 / (1 << 20) as f64,
                s.buffers,
                s.buffer_bytes as f64 / (1 << 20) as f64
            );
        }
    })?;
    println!(
        "{} generations in {:.0} s; peaks over {}–{} vs {}–{}:",
        report.generations, report.seconds, report.early.first, report.early.last, report.late.first, report.late.last
    );
    for (what, g) in report.growth() {
        println!("  {what:<18} {:+.3} %", 100.0 * g);
    }
    milliwatt::bench::write_json(&args.json, &report)?;
    println!("json: {}", args.json);
    let grown = report.grown(args.tolerance / 100.0);
    for g in &grown {
        println!("GREW: {g}");
    }
    Ok(grown.is_empty())
}
