//! Generates images with a DiT checkpoint: a directory with `config.json` and `model.safetensors`
//! (the original DiT state-dict naming; quantized on load per `--policy`), or a pre-packed file.
//! Writes one PNG per image and prints the timings, the GPU profile and the energy ledger.
//!
//! ```sh
//! cargo run --release --example generate -- tests/fixtures/dit-golden/dit-tiny-sigma --labels 3,7 --steps 8
//! cargo run --release --example generate -- MODEL_DIR --policy '{"attention":"ternary","mlp":"ternary","other":"f32"}'
//! ```

use std::ops::ControlFlow;
use std::path::PathBuf;

use clap::Parser;
use milliwatt::generator::InitImage;
use milliwatt::model::{DitConfig, DitWeights, SamplerKind};
use milliwatt::{Generator, GeneratorOptions, Gpu, Options, Request, Seeds};

#[derive(Parser, Debug)]
#[command(about = "Generate images with a class-conditional DiT on any GPU")]
struct Args {
    /// Model directory (config.json + model.safetensors) or a pre-packed .safetensors file.
    model: PathBuf,
    /// Class labels, one image each.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    labels: Vec<u32>,
    /// Seed of the first image (image i gets seed + i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sampler steps.
    #[arg(long, default_value_t = 25)]
    steps: u32,
    /// Classifier-free guidance scale (0 for none).
    #[arg(long, default_value_t = 4.0)]
    guidance: f32,
    /// euler, heun or ddim (default: from the model's prediction).
    #[arg(long)]
    sampler: Option<String>,
    /// Quantization policy as JSON, replacing config.json's (quantize on load).
    #[arg(long)]
    policy: Option<String>,
    /// img2img: start from this PNG (resized to the model's input) with `--strength`.
    #[arg(long)]
    init: Option<PathBuf>,
    /// img2img strength in [0, 1].
    #[arg(long, default_value_t = 0.6)]
    strength: f32,
    /// Time every dispatch and print the profile (writes a Chrome trace beside the images).
    #[arg(long)]
    profile: bool,
    /// Output directory.
    #[arg(long, default_value = "target/generate")]
    out: PathBuf,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let weights = if args.model.is_dir() {
        let mut config = DitConfig::from_file(&args.model.join("config.json"))?;
        if let Some(p) = &args.policy {
            config.quantization = serde_json::from_str(p)?;
        }
        DitWeights::load(&args.model.join("model.safetensors"), &config)?
    } else {
        DitWeights::load_packed(&args.model)?
    };
    let c = weights.config.clone();
    let gpu = Gpu::new_blocking(&Options::default())?;
    println!("adapter: {}", gpu.describe());
    let sampler = match args.sampler.as_deref() {
        None => None,
        Some("euler") => Some(SamplerKind::Euler),
        Some("heun") => Some(SamplerKind::Heun),
        Some("ddim") => Some(SamplerKind::Ddim),
        Some(other) => return Err(format!("unknown sampler `{other}` (euler, heun, ddim)").into()),
    };
    let init = match &args.init {
        None => None,
        Some(path) => {
            let img =
                image::open(path)?.resize_exact(c.input_size, c.input_size, image::imageops::FilterType::Triangle);
            let rgba = img.to_rgba8();
            let (ch, hw) = (c.in_channels as usize, (c.input_size * c.input_size) as usize);
            let one: Vec<f32> =
                (0..ch * hw).map(|i| rgba.as_raw()[(i % hw) * 4 + (i / hw).min(3)] as f32 / 127.5 - 1.0).collect();
            Some(InitImage { pixels: one.repeat(args.labels.len()), strength: args.strength })
        }
    };
    let request = Request {
        labels: args.labels.clone(),
        seeds: Seeds::Base(args.seed),
        steps: args.steps,
        sampler,
        guidance: (args.guidance != 0.0).then_some(args.guidance),
        noise: None,
        init,
        preview: false,
    };
    let generator =
        Generator::new(&gpu, weights, GeneratorOptions { profile: args.profile, ..GeneratorOptions::default() })?;
    let bar = indicatif::ProgressBar::new(u64::from(args.steps));
    let out = generator.generate_blocking(&request, |p| {
        bar.set_position(u64::from(p.step + 1));
        ControlFlow::Continue(())
    })?;
    bar.finish();
    std::fs::create_dir_all(&args.out)?;
    for (i, img) in out.images.iter().enumerate() {
        let path = args.out.join(format!("{i:03}-class{}-seed{}.png", args.labels[i], args.seed + i as u64));
        img.save(&path)?;
        println!("wrote {}", path.display());
    }
    println!(
        "prepare {:?}, sampling {:?} ({:?} per step), total {:?}",
        out.timings.prepare, out.timings.sampling, out.timings.per_step, out.timings.total
    );
    if let Some(p) = &out.profile {
        println!("\n{}", p.table());
        let trace = args.out.join("trace.json");
        p.write_chrome_trace(&trace)?;
        println!("chrome trace: {}", trace.display());
    }
    println!("\n{}", out.ledger);
    println!(
        "\nenergy vs the same model dense f32, 50 guided steps: {:.4} ({:.3} mJ vs {:.3} mJ)",
        out.energy_ratio,
        out.ledger.energy().total() * 1e3,
        out.baseline.energy().total() * 1e3
    );
    Ok(())
}
