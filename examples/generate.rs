//! The main command: draws digits with the shipped milliwatt model (ternary weights, int8
//! activations, 8 rectified-flow steps) and writes them as one enlarged grid, `out.png`, with the
//! generation parameters in its text chunks. Then it prints the time per image, the GPU profile
//! and the energy ledger against the conventional model (fp32, 50 DDIM steps, guided).
//!
//! ```sh
//! cargo run --release --example generate                      # 10 × 10 digits -> out.png
//! cargo run --release --example generate -- -c 3,7 -b 4 -s 42 --steps 16 -o sevens.png
//! cargo run --release --example generate -- -m mnist-fp32 --steps 50 --cfg-scale 4
//! cargo run --release --example generate -- -m mnist-fp32 --quant int4-g64 --steps 50
//! cargo run --release --example generate -- --all-adapters -b 10   # spread over every adapter
//! ```
//!
//! `-m` takes a model directory (config.json + model.safetensors) or the name of one under
//! `models/`. Flags follow stable-diffusion.cpp's names; a bad value is one line and exit code 2.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

mod common;

use clap::{Parser, ValueEnum};
use milliwatt::generator::InitImage;
use milliwatt::model::{DitConfig, DitWeights, FloatFormat, LinearFormat, SamplerKind};
use milliwatt::{Generator, GeneratorOptions, Gpu, Options, Request, Seeds, picture};

/// The shipped models, beside Cargo.toml (so the command works from any directory).
const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
/// The model drawn by default: quantization-aware ternary, rectified flow.
const DEFAULT_MODEL: &str = "mnist-ternary";
/// Guidance of the default model. 3 reads 98 of 100 digits right at 8 steps (the GPU test's
/// gate); the quality table's sweep rows (`examples/eval --rows ternary-8-cfg1.5,ternary-8-cfg5`)
/// are there to confirm or replace it.
const DEFAULT_CFG: f32 = 3.0;
/// Pixels per digit pixel in the grid.
const SCALE: u32 = 4;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Sampler {
    Euler,
    Heun,
    Ddim,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Floats {
    F32,
    F16,
}

impl From<Floats> for FloatFormat {
    fn from(f: Floats) -> Self {
        match f {
            Floats::F32 => FloatFormat::F32,
            Floats::F16 => FloatFormat::F16,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Backend {
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

#[derive(Parser, Debug)]
#[command(about = "Draw digits with a class-conditional DiT on any GPU (Vulkan, Metal, DX12, GL)")]
struct Args {
    /// Classes to draw, one grid row each (default: 0 to 9).
    #[arg(short = 'c', long = "class", value_delimiter = ',')]
    classes: Vec<u32>,
    /// Images per class (grid columns).
    #[arg(short = 'b', long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    batch: u32,
    /// Seed of the first image of each row (image j of a row gets seed + j); -1 picks one at random.
    #[arg(short = 's', long, default_value_t = 0, allow_negative_numbers = true, value_parser = clap::value_parser!(i64).range(-1..))]
    seed: i64,
    /// Sampler steps.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    steps: u32,
    /// Classifier-free guidance scale; 0 turns guidance off (half the work).
    #[arg(long = "cfg-scale", value_parser = parse_cfg)]
    cfg_scale: Option<f32>,
    /// Integrator (default: euler for velocity models, ddim for ε models).
    #[arg(long, value_enum)]
    sampler: Option<Sampler>,
    /// Model directory, or the name of one under models/.
    #[arg(short = 'm', long, default_value = DEFAULT_MODEL)]
    model: String,
    /// Re-quantize a float model's block linears on load: f16, int8, int4, int4-g32, int4-g64,
    /// int4-g128, ternary, ternary-2:4.
    #[arg(long, value_parser = parse_format)]
    quant: Option<LinearFormat>,
    /// Float format of the layers that stay float (embeddings, adaLN, final layer) and of the
    /// activations between kernels: f32 or f16 (default: the model's own). f16 halves their
    /// memory traffic.
    #[arg(long, value_enum)]
    floats: Option<Floats>,
    /// Attention with int8 products (SageAttention-style; `GeneratorOptions::int8_attention`):
    /// less energy, the same digits to int8 rounding.
    #[arg(long = "int8-attention")]
    int8_attention: bool,
    /// Attention writes its output as int8 (a scale per token and head) straight into the
    /// projection (`GeneratorOptions::int8_attention_output`): one kernel fewer per block.
    #[arg(long = "int8-attention-output")]
    int8_attention_output: bool,
    /// The qkv linear writes Q, K and V as int8 (a scale per token, part and head) for attention
    /// to read (`GeneratorOptions::int8_qkv`): half the bytes between the two kernels.
    #[arg(long = "int8-qkv")]
    int8_qkv: bool,
    /// img2img: start from this picture (resized to the model's input, grey).
    #[arg(long = "init-img")]
    init_img: Option<PathBuf>,
    /// img2img strength in [0, 1]: 0 returns the picture, 1 ignores it.
    #[arg(long, default_value_t = 0.6, value_parser = parse_strength)]
    strength: f32,
    /// Graphics API (default: WGPU_BACKEND, else the best available).
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// Adapter name substring (default: WGPU_ADAPTER_NAME, else the preferred adapter).
    #[arg(long)]
    adapter: Option<String>,
    /// Output PNG.
    #[arg(short = 'o', long, default_value = "out.png")]
    output: PathBuf,
    /// Spread the images over every adapter found (of --backend, if given), split by measured
    /// speed; the same seeds give the same digits as on one adapter.
    #[arg(long)]
    all_adapters: bool,
}

fn parse_cfg(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a guidance scale (a number ≥ 0; 0 turns guidance off)")),
    }
}

fn parse_strength(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a strength in [0, 1]")),
    }
}

fn parse_format(s: &str) -> Result<LinearFormat, String> {
    s.parse()
}

/// A usage error: one line, exit code 2 (as clap's own).
fn usage(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn model_dir(name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_dir() || p.components().count() > 1 { p.to_path_buf() } else { Path::new(MODELS).join(name) }
}

fn run(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let dir = model_dir(&args.model);
    if !dir.join("config.json").is_file() {
        return Ok(usage(format!("--model {}: no config.json in {}", args.model, dir.display())));
    }
    let own = DitConfig::from_file(&dir.join("config.json"))?.quantization;
    let policy = own.overridden(args.quant, args.floats.map(FloatFormat::from));
    let weights = match DitWeights::open(&dir, policy) {
        Ok(w) => w,
        Err(e @ (milliwatt::Error::Checkpoint { .. } | milliwatt::Error::Config { .. })) if policy.is_some() => {
            return Ok(usage(format!("--quant/--floats: {e}")));
        }
        Err(e) => return Err(e.into()),
    };
    let c = weights.config.clone();
    let classes: Vec<u32> =
        if args.classes.is_empty() { (0..c.num_classes.min(10)).collect() } else { args.classes.clone() };
    if let Some(&bad) = classes.iter().find(|&&k| k >= c.num_classes) {
        return Ok(usage(format!(
            "--class {bad}: the model has {} classes (0 to {})",
            c.num_classes,
            c.num_classes - 1
        )));
    }
    let seed = if args.seed < 0 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64 % 1_000_000_007)
    } else {
        args.seed as u64
    };
    let cfg = args.cfg_scale.unwrap_or(DEFAULT_CFG);
    let sampler = args.sampler.map(|s| match s {
        Sampler::Euler => SamplerKind::Euler,
        Sampler::Heun => SamplerKind::Heun,
        Sampler::Ddim => SamplerKind::Ddim,
    });

    let mut options = Options::default();
    if let Some(b) = args.backend {
        options.backends = match b {
            Backend::Vulkan => milliwatt::wgpu::Backends::VULKAN,
            Backend::Metal => milliwatt::wgpu::Backends::METAL,
            Backend::Dx12 => milliwatt::wgpu::Backends::DX12,
            Backend::Gl => milliwatt::wgpu::Backends::GL,
        };
    }
    if let Some(a) = &args.adapter {
        options.adapter_name = Some(a.clone());
    }
    let gpu = Gpu::new_blocking(&options)?;
    let info = gpu.adapter_info();
    println!("adapter: {}", gpu.describe());
    if info.backend == milliwatt::wgpu::Backend::Gl && info.device_type == milliwatt::wgpu::DeviceType::Cpu {
        println!(
            "note: this is the GL software fallback; Vulkan's lavapipe is about 10× faster here: `sudo apt-get \
             install mesa-vulkan-drivers` (or `bash scripts/setup`)"
        );
    }

    let labels: Vec<u32> = classes.iter().flat_map(|&k| std::iter::repeat_n(k, args.batch as usize)).collect();
    let seeds: Vec<u64> = classes.iter().flat_map(|_| (0..u64::from(args.batch)).map(|j| seed + j)).collect();
    let n = labels.len();
    let init = match &args.init_img {
        None => None,
        Some(path) => {
            let img = image::open(path)
                .map_err(|e| format!("--init-img {}: {e}", path.display()))?
                .resize_exact(c.input_size, c.input_size, image::imageops::FilterType::Triangle)
                .to_luma8();
            let one: Vec<f32> = img.as_raw().iter().map(|&p| f32::from(p) / 127.5 - 1.0).collect();
            let one = one.repeat(c.in_channels as usize);
            Some(InitImage { pixels: one.repeat(n), strength: args.strength })
        }
    };
    let request = Request {
        labels: labels.clone(),
        seeds: Seeds::List(seeds),
        steps: args.steps,
        sampler,
        guidance: (cfg != 0.0).then_some(cfg),
        noise: None,
        init,
        preview: false,
    };
    println!(
        "drawing {n} digits ({} × {}) with {} at {} steps, guidance {cfg}, seed {seed}",
        classes.len(),
        args.batch,
        dir.display(),
        args.steps
    );
    let generator_options = GeneratorOptions {
        int8_attention: args.int8_attention,
        int8_attention_output: args.int8_attention_output,
        int8_qkv: args.int8_qkv,
        ..GeneratorOptions::default()
    };
    let out = if args.all_adapters {
        let mut generators = Vec::new();
        for adapter in milliwatt::list_adapters_blocking(&options) {
            let gpu = Gpu::new_blocking(&adapter.options())?;
            println!("  + {}", gpu.describe());
            generators.push(Generator::new(&gpu, weights.clone(), generator_options)?);
        }
        let spread = milliwatt::Spread::new(generators)?;
        let bar = common::step_bar(request.steps, String::new());
        let out = spread.generate_blocking(&request, |p| {
            bar.set_position(u64::from(p.step + 1));
            std::ops::ControlFlow::Continue(())
        })?;
        bar.finish();
        println!(
            "spread over {} adapters; the next request would split {n} images {:?}",
            spread.generators().len(),
            spread.shares(n)
        );
        out
    } else {
        let generator = Generator::new(&gpu, weights, GeneratorOptions { profile: true, ..generator_options })?;
        common::generate_with_bar(&generator, &request, String::new())?
    };

    let grid = picture::grid(&out.images, args.batch as usize, SCALE, SCALE)?;
    let sampler_name = format!("{:?}", request.sampler.unwrap_or(generator_sampler(&c))).to_lowercase();
    let classes_text = classes.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let text = [
        ("Software", "milliwatt".to_string()),
        (
            "parameters",
            format!(
                "classes: {classes_text}, batch: {}, steps: {}, sampler: {sampler_name}, cfg scale: {cfg}, seed: {seed}, \
                 model: {}",
                args.batch,
                args.steps,
                dir.display()
            ),
        ),
        ("model", dir.display().to_string()),
        ("quantization", serde_json::to_string(&c.quantization)?),
        ("classes", classes_text.clone()),
        ("batch", args.batch.to_string()),
        ("seed", seed.to_string()),
        ("steps", args.steps.to_string()),
        ("sampler", sampler_name.clone()),
        ("cfg_scale", cfg.to_string()),
        ("attention", if args.int8_attention { "int8" } else { "f32" }.to_string()),
        ("attention_output", if args.int8_attention_output { "int8" } else { "float" }.to_string()),
        ("qkv", if args.int8_qkv { "int8" } else { "float" }.to_string()),
        ("adapter", gpu.describe()),
    ];
    picture::save_png(&args.output, &image::DynamicImage::ImageLuma8(grid), &text)?;
    println!("wrote {} (row r: class {}; {} seeds from {seed})", args.output.display(), classes_text, args.batch);

    let t = out.timings;
    println!(
        "\ntime: {:.2} s in all, {:.1} ms per image, {:.1} ms per step ({n} images; prepare {:.2} s)",
        t.total.as_secs_f64(),
        1e3 * t.total.as_secs_f64() / n as f64,
        1e3 * t.per_step.as_secs_f64(),
        t.prepare.as_secs_f64()
    );
    if let Some(p) = &out.profile {
        let total = p.total().max(f64::MIN_POSITIVE);
        println!("GPU profile ({:.1} ms of GPU time; top kinds):", 1e3 * total);
        for k in p.by_kind().iter().take(6) {
            println!(
                "  {:<18} {:>6} dispatches {:>10.1} ms {:>5.1} %",
                k.kind,
                k.count,
                1e3 * k.seconds,
                100.0 * k.seconds / total
            );
        }
    }
    let per_image = |l: &milliwatt::Ledger| l.energy().total() / n as f64;
    println!("\n{}", out.ledger);
    println!(
        "\nenergy per image (Horowitz 45 nm ledger): {:.3} mJ; the conventional model of the same size (fp32 weights, \
         50 DDIM steps, guided, one image a request): {:.3} mJ; ratio {:.4} (1/{:.0})",
        1e3 * per_image(&out.ledger),
        1e3 * per_image(&out.baseline),
        out.energy_ratio,
        1.0 / out.energy_ratio
    );
    Ok(ExitCode::SUCCESS)
}

/// The sampler the generator picks when the request names none.
fn generator_sampler(c: &milliwatt::model::DitConfig) -> SamplerKind {
    match c.prediction {
        milliwatt::model::Prediction::Velocity => SamplerKind::Euler,
        milliwatt::model::Prediction::Epsilon => SamplerKind::Ddim,
    }
}
