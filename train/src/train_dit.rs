//! The DiT training loop: batches from the training digits, the conventional ε objective or the
//! rectified-flow velocity objective, AdamW with warm-up and cosine decay, EMA, logs, checkpoints
//! and exact resumption.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor, Var};
use milliwatt::eval::digits::{Digits, PIXELS, SIDE};
use milliwatt::kernels::ddim_schedule;
use milliwatt::model::{DitConfig, DitWeights, Prediction};
use serde::{Deserialize, Serialize};

use crate::ckpt::{self, HostF32};
use crate::distil::{DistilSpec, Teacher};
use crate::dit::{Dit, Quant};
use crate::optim::{Adam, AdamConfig};
use crate::rng::Rng;

/// Everything that decides a run (stored in its checkpoints; a resumed run must match it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub config: DitConfig,
    /// "fp32", "fp32-rf", "ternary", "ternary24", or a distilled "student" / "student24".
    pub kind: String,
    pub batch: usize,
    pub steps: u64,
    pub lr: f64,
    pub warmup: u64,
    pub ema_decay: f64,
    /// Probability of replacing a label by the null class (classifier-free guidance).
    pub label_dropout: f64,
    pub seed: u64,
    /// The checkpoint a fine-tune started from, if any.
    pub init: Option<PathBuf>,
    /// ε objective only: weight each sample's loss by clamp(1 / SNR, 1, cap) (Salimans & Ho's
    /// truncated-SNR weighting, capped), normalised to mean 1 over the timesteps; `None` is
    /// DiT's plain MSE.
    #[serde(default)]
    pub snr_cap: Option<f64>,
    /// A student's teacher and distillation settings (the student kinds only).
    #[serde(default)]
    pub distil: Option<DistilSpec>,
}

impl RunSpec {
    pub fn quant(&self) -> Result<Quant> {
        Ok(match self.kind.as_str() {
            "fp32" | "fp32-rf" => Quant::Float,
            "ternary" | "student" => Quant::Ternary,
            "ternary24" | "student24" => Quant::Ternary24,
            k => bail!("unknown model kind `{k}` (fp32, fp32-rf, ternary, ternary24, student, student24)"),
        })
    }

    /// Learning rate at `step`: linear warm-up, then cosine decay to a tenth.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = (self.steps - self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        self.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
    }
}

/// The run state stored beside the tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RunState {
    spec: RunSpec,
    step: u64,
    rng: u64,
    seconds: f64,
}

/// One training batch, built on the host: model input, time features' times, labels, target.
pub struct Batch {
    pub x: Vec<f32>,
    pub t: Vec<f32>,
    pub y: Vec<u32>,
    pub target: Vec<f32>,
    /// Each sample's loss weight (1 unless the run weights timesteps).
    pub weight: Vec<f32>,
}

/// Draws a batch: digits uniformly at random, pixels to [-1, 1], labels dropped to the null
/// class with `label_dropout`, and the noised input and target of the model's objective:
///
/// - velocity (rectified flow, the crate's convention): t logit-normal, x_t = (1 − t) x₀ + t ε,
///   target v = ε − x₀, model time 1000 t;
/// - epsilon (DDPM, DiT's recipe): timestep k uniform in 0..1000, x_k = √ᾱ_k x₀ + √(1 − ᾱ_k) ε,
///   target ε, model time k (sampler time k / 1000, as the crate's DDIM schedule passes it).
pub fn draw(spec: &RunSpec, data: &Digits, alpha_bar: &[f32], weights: &[f32], rng: &mut Rng) -> Batch {
    let n = spec.batch;
    let classes = spec.config.num_classes;
    let mut b = Batch {
        x: Vec::with_capacity(n * PIXELS),
        t: Vec::new(),
        y: Vec::new(),
        target: Vec::new(),
        weight: Vec::new(),
    };
    for _ in 0..n {
        let i = rng.below(data.len());
        let label = if rng.uniform() < spec.label_dropout { classes } else { u32::from(data.labels[i]) };
        b.y.push(label);
        let (a, s, t, w) = match spec.config.prediction {
            Prediction::Velocity => {
                let t = 1.0 / (1.0 + (-rng.normal()).exp());
                (1.0 - t, t, t, 1.0)
            }
            Prediction::Epsilon => {
                let k = rng.below(alpha_bar.len());
                let ab = alpha_bar[k];
                (ab.sqrt(), (1.0 - ab).sqrt(), k as f32 / 1000.0, weights[k])
            }
        };
        b.t.push(t);
        b.weight.push(w);
        for &p in data.image(i) {
            let x0 = f32::from(p) / 127.5 - 1.0;
            let eps = rng.normal();
            b.x.push(a * x0 + s * eps);
            b.target.push(match spec.config.prediction {
                Prediction::Velocity => eps - x0,
                Prediction::Epsilon => eps,
            });
        }
    }
    b
}

/// ᾱ for each of the 1000 training timesteps, from the crate's DDIM schedule (so training and
/// sampling share one β schedule): index k holds ᾱ_k.
pub fn alpha_bars() -> Vec<f32> {
    let mut ab: Vec<f32> = ddim_schedule(1000).iter().map(|e| e.alpha_bar).collect();
    ab.reverse();
    ab
}

/// The ε objective's loss weight of each training timestep: all 1 for DiT's plain MSE, else
/// clamp(1 / SNR_k, 1, cap) with SNR_k = ᾱ_k / (1 − ᾱ_k), normalised to mean 1. The weighted ε
/// loss is the x₀ loss where the noise dominates (1 / SNR > 1): an ε model's x₀ estimate divides
/// its error by √SNR, so at high noise the plain loss asks for far too little precision for DDIM
/// to find a digit.
pub fn timestep_weights(alpha_bar: &[f32], snr_cap: Option<f64>) -> Vec<f32> {
    let Some(cap) = snr_cap else { return vec![1.0; alpha_bar.len()] };
    let w: Vec<f64> = alpha_bar.iter().map(|&ab| ((1.0 - f64::from(ab)) / f64::from(ab)).clamp(1.0, cap)).collect();
    let mean = w.iter().sum::<f64>() / w.len() as f64;
    w.iter().map(|x| (x / mean) as f32).collect()
}

/// One optimizer step on `batch`; returns the loss.
pub fn train_step(model: &Dit, opt: &mut Adam, batch: &Batch, lr: f64, ema_decay: f64) -> Result<(f32, f64)> {
    let dev = Device::Cpu;
    let n = batch.t.len();
    let x = Tensor::from_vec(batch.x.clone(), (n, 1, SIDE, SIDE), &dev)?;
    let target = Tensor::from_vec(batch.target.clone(), (n, 1, SIDE, SIDE), &dev)?;
    let y = Tensor::from_vec(batch.y.clone(), n, &dev)?;
    let w = Tensor::from_vec(batch.weight.clone(), (n, 1, 1, 1), &dev)?;
    let out = model.forward(&x, &model.time_features(&batch.t)?, &y)?;
    let loss = out.sub(&target)?.sqr()?.broadcast_mul(&w)?.mean_all()?;
    let grads = loss.backward()?;
    let norm = opt.step(&grads, lr, ema_decay)?;
    Ok((loss.to_scalar::<f32>()?, norm))
}

fn state_tensors(model: &Dit, opt: &Adam) -> Result<BTreeMap<String, HostF32>> {
    let mut out = BTreeMap::new();
    for (i, (name, var)) in model.params.iter().enumerate() {
        out.insert(format!("param/{name}"), HostF32::of(var.as_tensor())?);
        out.insert(format!("m/{name}"), HostF32::of(&opt.m[i])?);
        out.insert(format!("v/{name}"), HostF32::of(&opt.v[i])?);
        out.insert(format!("ema/{name}"), HostF32::of(&opt.ema[i])?);
    }
    Ok(out)
}

/// Parameters of `prefix` ("param" or "ema") from a checkpoint's tensors, as variables.
pub fn params_from(tensors: &BTreeMap<String, HostF32>, prefix: &str) -> Result<BTreeMap<String, Var>> {
    let dev = Device::Cpu;
    let mut params = BTreeMap::new();
    for (k, t) in tensors {
        if let Some(name) = k.strip_prefix(&format!("{prefix}/")) {
            params.insert(name.to_string(), Var::from_tensor(&t.tensor(&dev)?)?);
        }
    }
    Ok(params)
}

/// The weights a run fine-tunes from: a checkpoint's EMA weights, or an exported model's latent
/// state dict (`model.safetensors` of a directory `export` wrote with fp32 weights or `--latent`).
/// Tensors the model computes itself (`pos_embed`) or does not have are left out; those the init
/// lacks (a student's guidance and step-size embedders, fine-tuned from its teacher) keep the
/// initialisation of `fresh`.
pub fn init_params(init: &Path, config: &DitConfig, fresh: &Dit) -> Result<BTreeMap<String, Var>> {
    let mut params = loaded_params(init, config)?;
    for (name, v) in &fresh.params {
        if !params.contains_key(name) {
            println!("  `{name}` is not in the init: it starts from its initialisation");
            params.insert(name.clone(), Var::from_tensor(&v.as_tensor().copy()?)?);
        }
    }
    Ok(params)
}

fn loaded_params(init: &Path, config: &DitConfig) -> Result<BTreeMap<String, Var>> {
    let file = if init.is_dir() { init.join(milliwatt::model::weights::MODEL_FILE) } else { init.to_path_buf() };
    if ckpt::is_checkpoint(&file)? {
        let (_, _, tensors) = read_checkpoint(&file)?;
        println!("fine-tuning from the EMA weights of {}", file.display());
        return params_from(&tensors, "ema");
    }
    let tensors = ckpt::load_plain(&file)?;
    println!("fine-tuning from the state dict {}", file.display());
    let dev = Device::Cpu;
    DitWeights::expected(config)
        .into_iter()
        .filter(|(name, _)| name != "pos_embed")
        .filter_map(|(name, _)| tensors.get(&name).map(|t| (name, t)))
        .map(|(name, t)| Ok((name, Var::from_tensor(&t.tensor(&dev)?)?)))
        .collect()
}

/// Reads a run's checkpoint: its spec, step, and tensors.
pub fn read_checkpoint(path: &Path) -> Result<(RunSpec, u64, BTreeMap<String, HostF32>)> {
    let (tensors, state) = ckpt::load(path)?;
    let state: RunState = serde_json::from_value(state).context("checkpoint run state")?;
    Ok((state.spec, state.step, tensors))
}

/// Options of a training invocation that do not change the result.
pub struct Session {
    pub out: PathBuf,
    pub resume: bool,
    /// Stop (with a checkpoint) after this many minutes of this invocation.
    pub minutes: Option<f64>,
    pub checkpoint_minutes: f64,
    pub log_every: u64,
    /// Stop (with a checkpoint) after this many steps of this invocation (tests).
    pub stop_after: Option<u64>,
}

/// Trains `spec` on `data` into `session.out` (`checkpoint.safetensors`, `loss.csv`,
/// `log.txt` lines on stdout).
pub fn run(spec: RunSpec, data: &Digits, session: &Session) -> Result<()> {
    std::fs::create_dir_all(&session.out)?;
    let ckpt_path = session.out.join("checkpoint.safetensors");
    let dev = Device::Cpu;
    let quant = spec.quant()?;
    let (model, mut opt, mut step, mut rng, mut seconds) = if session.resume && ckpt_path.exists() {
        let (tensors, state) = ckpt::load(&ckpt_path)?;
        let state: RunState = serde_json::from_value(state)?;
        if state.spec != spec {
            bail!(
                "{} was trained with {:?}; resume with the same options (or start a new --out)",
                ckpt_path.display(),
                state.spec
            );
        }
        let model = Dit::with_params(&spec.config, quant, params_from(&tensors, "param")?, &dev)?;
        let mut opt = Adam::new(model.vars(), AdamConfig::default())?;
        for (i, name) in model.params.keys().enumerate() {
            opt.m[i] = tensors[&format!("m/{name}")].tensor(&dev)?;
            opt.v[i] = tensors[&format!("v/{name}")].tensor(&dev)?;
            opt.ema[i] = tensors[&format!("ema/{name}")].tensor(&dev)?;
        }
        opt.t = state.step;
        println!("resumed {} at step {}", ckpt_path.display(), state.step);
        (model, opt, state.step, Rng::new(state.rng), state.seconds)
    } else {
        if ckpt_path.exists() {
            bail!("{} exists: pass --resume to continue it, or choose another --out", ckpt_path.display());
        }
        let mut rng = Rng::new(spec.seed);
        let model = match &spec.init {
            // A fine-tune's fresh tensors come from their own stream, so the batches it draws
            // are those of a run without them.
            Some(init) => {
                let fresh = Dit::new(&spec.config, quant, &mut Rng::new(spec.seed.wrapping_add(1)), &dev)?;
                Dit::with_params(&spec.config, quant, init_params(init, &spec.config, &fresh)?, &dev)?
            }
            None => Dit::new(&spec.config, quant, &mut rng, &dev)?,
        };
        let opt = Adam::new(model.vars(), AdamConfig::default())?;
        (model, opt, 0, rng, 0.0)
    };
    std::fs::write(session.out.join("spec.json"), serde_json::to_string_pretty(&spec)? + "\n")?;
    // The log keeps the header and the steps up to the checkpoint: a resumed run rewrites what
    // came after it (the same values, as resuming is exact).
    let csv_path = session.out.join("loss.csv");
    let kept: String = std::fs::read_to_string(&csv_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(',').next().and_then(|s| s.parse::<u64>().ok()).is_none_or(|s| s <= step))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&csv_path, if step == 0 { "step,loss,grad_norm,lr,seconds\n".to_string() } else { kept })?;
    let mut csv = std::fs::OpenOptions::new().append(true).open(&csv_path)?;
    let first_step = step;
    let alpha_bar = alpha_bars();
    let weights = timestep_weights(&alpha_bar, spec.snr_cap);
    let teacher = match (&spec.distil, spec.kind.starts_with("student")) {
        (Some(d), true) => Some(Teacher::load(d, &spec.config)?),
        (None, false) => None,
        _ => bail!("a `{}` run {} a teacher", spec.kind, if spec.distil.is_some() { "takes no" } else { "needs" }),
    };
    let started = Instant::now();
    let mut last_ckpt = Instant::now();
    let (mut window, mut window_n) = (0f64, 0u64);
    let save = |step: u64, rng: &Rng, seconds: f64, opt: &Adam| -> Result<()> {
        let state = RunState { spec: spec.clone(), step, rng: rng.state, seconds };
        ckpt::save(&ckpt_path, &state_tensors(&model, opt)?, &serde_json::to_value(state)?)
    };
    while step < spec.steps {
        let t0 = Instant::now();
        let lr = spec.lr_at(step);
        let (loss, norm) = match (&teacher, &spec.distil) {
            (Some(teacher), Some(d)) => crate::distil::train_step(
                d,
                teacher,
                &model,
                &mut opt,
                spec.batch,
                spec.label_dropout,
                data,
                &mut rng,
                lr,
                spec.ema_decay,
            )?,
            _ => train_step(&model, &mut opt, &draw(&spec, data, &alpha_bar, &weights, &mut rng), lr, spec.ema_decay)?,
        };
        if !loss.is_finite() {
            bail!("loss is {loss} at step {step}: stopping (the last checkpoint is intact)");
        }
        step += 1;
        seconds += t0.elapsed().as_secs_f64();
        window += f64::from(loss);
        window_n += 1;
        writeln!(csv, "{step},{loss},{norm:.4},{lr:.3e},{seconds:.1}")?;
        if step % session.log_every == 0 || step == spec.steps {
            println!(
                "step {step}/{} loss {:.5} grad {norm:.3} lr {lr:.2e} {:.3} s/step ({:.0} s in all)",
                spec.steps,
                window / window_n as f64,
                seconds / step.max(1) as f64,
                seconds
            );
            (window, window_n) = (0.0, 0);
        }
        let out_of_time = session.minutes.is_some_and(|m| started.elapsed().as_secs_f64() > 60.0 * m)
            || session.stop_after.is_some_and(|n| step - first_step >= n);
        if last_ckpt.elapsed().as_secs_f64() > 60.0 * session.checkpoint_minutes || step == spec.steps || out_of_time {
            save(step, &rng, seconds, &opt)?;
            last_ckpt = Instant::now();
            println!("checkpoint at step {step}");
        }
        if out_of_time {
            println!("stopping after {:.1} minutes: resume with --resume", started.elapsed().as_secs_f64() / 60.0);
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use milliwatt::eval::digits::CLASSES;

    /// The trainer's smoke test (scripts/test runs it): a tiny model trains for a few steps,
    /// checkpoints, resumes to exactly the state of an uninterrupted run, and exports a model
    /// directory the crate loads and runs like the trainer.
    #[test]
    fn smoke_train_resume_export() {
        let root = std::env::temp_dir().join(format!("milliwatt-train-smoke-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let data = {
            let mut rng = Rng::new(1);
            let n = 40;
            Digits {
                images: (0..n * PIXELS).map(|_| (rng.below(4) * 85) as u8).collect(),
                labels: (0..n).map(|i| (i % CLASSES) as u8).collect(),
            }
        };
        // The student last: it distils the exported ternary model, fine-tuned from its run.
        for kind in ["ternary", "fp32", "student"] {
            let student = kind == "student";
            let spec = RunSpec {
                config: crate::dit_config(kind, 32, 1, 2).unwrap(),
                kind: kind.into(),
                batch: 8,
                steps: 6,
                lr: 1e-3,
                warmup: 2,
                ema_decay: 0.9,
                label_dropout: 0.1,
                seed: 4,
                init: student.then(|| root.join("ternary-straight").join("checkpoint.safetensors")),
                // The weighted ε objective on the fp32 run, so both losses are exercised.
                snr_cap: (kind == "fp32").then_some(100.0),
                distil: student.then(|| DistilSpec {
                    teacher: root.join("ternary-model"),
                    guidance: [1.0, 5.0],
                    levels: 3,
                    bootstrap: 0.25,
                }),
            };
            let session = |out: PathBuf, resume: bool, stop_after: Option<u64>| Session {
                out,
                resume,
                minutes: None,
                checkpoint_minutes: 100.0,
                log_every: 1000,
                stop_after,
            };
            let (straight, split) = (root.join(format!("{kind}-straight")), root.join(format!("{kind}-split")));
            run(spec.clone(), &data, &session(straight.clone(), false, None)).unwrap();
            run(spec.clone(), &data, &session(split.clone(), false, Some(3))).unwrap();
            assert_eq!(read_checkpoint(&split.join("checkpoint.safetensors")).unwrap().1, 3);
            run(spec.clone(), &data, &session(split.clone(), true, None)).unwrap();
            let (_, step_a, a) = read_checkpoint(&straight.join("checkpoint.safetensors")).unwrap();
            let (_, step_b, b) = read_checkpoint(&split.join("checkpoint.safetensors")).unwrap();
            assert_eq!((step_a, step_b), (6, 6));
            for (name, t) in &a {
                assert_eq!(t.data, b[name].data, "{kind}: `{name}` differs after resuming");
            }
            let csv = std::fs::read_to_string(split.join("loss.csv")).unwrap();
            assert_eq!(csv.lines().count(), 7, "header and one line per step:\n{csv}");
            assert!(csv.lines().skip(1).all(|l| l.split(',').nth(1).unwrap().parse::<f32>().unwrap().is_finite()));

            let model = root.join(format!("{kind}-model"));
            crate::export::export_run(&straight, &model, "ema", false).unwrap();
            let weights = milliwatt::model::DitWeights::open(&model, None).unwrap();
            assert_eq!(weights.config, spec.config);
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn truncated_snr_weights() {
        let ab = alpha_bars();
        assert!(timestep_weights(&ab, None).iter().all(|&w| w == 1.0));
        let w = timestep_weights(&ab, Some(100.0));
        let mean = w.iter().map(|&x| f64::from(x)).sum::<f64>() / w.len() as f64;
        assert!((mean - 1.0).abs() < 1e-5, "mean weight {mean}");
        // Flat at low noise (1 / SNR < 1), rising with the noise, flat again at the cap.
        assert_eq!(w[0], w[50]);
        assert!(w.windows(2).all(|p| p[1] >= p[0]));
        assert!((w[999] / w[0] - 100.0).abs() < 1e-3, "cap ratio {}", w[999] / w[0]);
    }

    #[test]
    fn alpha_bar_matches_ddim_betas() {
        let ab = alpha_bars();
        assert_eq!(ab.len(), 1000);
        assert!((ab[0] - (1.0 - 1e-4)).abs() < 1e-7);
        assert!(ab.windows(2).all(|w| w[1] < w[0]));
    }
}
