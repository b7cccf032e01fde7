//! Shortcut-model distillation (Frans et al., "One Step Diffusion via Shortcut Models", 2024)
//! of a guided rectified-flow teacher into a student that takes the guidance scale and the step
//! size as inputs (`guidance_embed`, `step_embed`), so a guided image costs one forward per step
//! and one to four steps draw a digit.
//!
//! Why this method on two cores: it needs no teacher trajectories (reflow would integrate the
//! teacher for every training pair, tens of guided forwards per sample) and no ODE solve per
//! step (consistency distillation runs the teacher and an EMA target on every sample). A step
//! costs the student's forward and backward, the teacher's guided forward on the base rows, and
//! two gradient-free student forwards on the self-consistency rows.
//!
//! The objective, per sample (x_t = (1 − t) x₀ + t ε, the crate's convention; the student s
//! predicts the velocity, so an Euler step of size d is x_{t−d} = x_t − d · s(x_t, t, d, w)):
//! - **base rows** (d = 0): the teacher's guided velocity, u + w (c − u) with c and u its
//!   conditional and null-class outputs, at a logit-normal t and a guidance scale w drawn
//!   uniformly from the range;
//! - **self-consistency rows** (d = 2⁻ᵏ, k < levels, t a multiple of d in (0, 1]): one step of
//!   size d equals two of size d/2, s(x_t, t, d) = ½ (s₁ + s₂) with s₁ = s(x_t, t, d/2) and
//!   s₂ = s(x_t − d/2 · s₁, t − d/2, d/2), both without gradient; the smallest level's halves use
//!   the base (d = 0).
//!
//! A null label (label dropout) asks for the teacher's unconditional velocity at every w.

use std::path::{Path, PathBuf};

use anyhow::{Result, ensure};
use candle_core::{Device, Tensor};
use milliwatt::eval::digits::{Digits, SIDE};
use milliwatt::model::{DitConfig, DitWeights, Prediction};
use serde::{Deserialize, Serialize};

use crate::dit::Dit;
use crate::optim::Adam;
use crate::rng::Rng;

/// What a distillation run learns from (part of its [`crate::train_dit::RunSpec`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistilSpec {
    /// The teacher's model directory (as shipped: its pre-packed weights are what it computes).
    pub teacher: PathBuf,
    /// The range of guidance scales w, drawn uniformly.
    pub guidance: [f32; 2],
    /// Step-size levels 1, 1/2, …, 2^−(levels−1): the student samples well at 1 … 2^(levels−1) steps.
    pub levels: u32,
    /// The fraction of each batch given to self-consistency rows (Frans et al. use a quarter).
    pub bootstrap: f64,
}

/// The teacher: the shipped model, run as the crate runs it (packed linears dequantized).
pub struct Teacher {
    model: Dit,
}

impl Teacher {
    /// Loads `spec.teacher` and checks it can teach a student of `student`'s shape.
    pub fn load(spec: &DistilSpec, student: &DitConfig) -> Result<Self> {
        let weights = DitWeights::open(&spec.teacher, None)?;
        let c = &weights.config;
        ensure!(
            c.prediction == Prediction::Velocity,
            "{}: the teacher must predict the rectified-flow velocity",
            spec.teacher.display()
        );
        ensure!(
            !c.guidance_embed && !c.step_embed,
            "{}: the teacher must be a guided model, not a student",
            spec.teacher.display()
        );
        ensure!(
            (c.input_size, c.in_channels, c.num_classes)
                == (student.input_size, student.in_channels, student.num_classes),
            "{}: the teacher draws {}×{}×{} images of {} classes, the student {}×{}×{} of {}",
            spec.teacher.display(),
            c.in_channels,
            c.input_size,
            c.input_size,
            c.num_classes,
            student.in_channels,
            student.input_size,
            student.input_size,
            student.num_classes
        );
        ensure!(spec.levels >= 1, "distillation needs at least one step-size level");
        ensure!(spec.guidance[0] <= spec.guidance[1], "guidance range {:?} is empty", spec.guidance);
        ensure!((0.0..1.0).contains(&spec.bootstrap), "bootstrap fraction {} is not in [0, 1)", spec.bootstrap);
        Ok(Self { model: crate::export::model_of(&weights)? })
    }

    /// The guided velocity u + w (c − u) at `x` [n, C, H, W], one w per row.
    fn guided(&self, x: &Tensor, t: &[f32], y: &[u32], w: &[f32]) -> Result<Tensor> {
        let n = t.len();
        let null = self.model.config.num_classes;
        let dev = Device::Cpu;
        let x2 = Tensor::cat(&[x, x], 0)?;
        let t2: Vec<f32> = t.iter().chain(t).copied().collect();
        let y2: Vec<u32> = y.iter().copied().chain(std::iter::repeat_n(null, n)).collect();
        let out = self.model.forward(&x2, &self.model.time_features(&t2)?, &Tensor::from_vec(y2, 2 * n, &dev)?)?;
        let (c, u) = (out.narrow(0, 0, n)?, out.narrow(0, n, n)?);
        let w = Tensor::from_vec(w.to_vec(), (n, 1, 1, 1), &dev)?;
        Ok(u.add(&c.sub(&u)?.broadcast_mul(&w)?)?.detach())
    }
}

/// The host-side rows of one distillation batch.
#[derive(Default)]
struct Rows {
    x: Vec<f32>,
    t: Vec<f32>,
    y: Vec<u32>,
    w: Vec<f32>,
    /// The step size the student is told (0 on base rows).
    d: Vec<f32>,
}

impl Rows {
    fn len(&self) -> usize {
        self.t.len()
    }

    fn x(&self) -> Result<Tensor> {
        Ok(Tensor::from_vec(self.x.clone(), (self.len(), 1, SIDE, SIDE), &Device::Cpu)?)
    }
}

/// The step size of level `k`: 2^−k.
pub fn level_step(k: u32) -> f32 {
    (-(k as f32)).exp2()
}

/// Draws one batch of `n` rows: `n − round(n · bootstrap)` base rows, then the self-consistency
/// rows, each from a random training digit and fresh noise.
fn draw(spec: &DistilSpec, n: usize, label_dropout: f64, classes: u32, data: &Digits, rng: &mut Rng) -> (Rows, Rows) {
    let boot = (n as f64 * spec.bootstrap).round() as usize;
    let (mut base, mut consistency) = (Rows::default(), Rows::default());
    for row in 0..n {
        let i = rng.below(data.len());
        let label = if rng.uniform() < label_dropout { classes } else { u32::from(data.labels[i]) };
        let w = spec.guidance[0] + (spec.guidance[1] - spec.guidance[0]) * rng.uniform() as f32;
        let (rows, t, d) = if row < n - boot {
            (&mut base, 1.0 / (1.0 + (-rng.normal()).exp()), 0.0)
        } else {
            let d = level_step(rng.below(spec.levels as usize) as u32);
            // t on the grid of an n-step sampler: d, 2d, …, 1.
            let j = 1 + rng.below((1.0 / d).round() as usize);
            (&mut consistency, d * j as f32, d)
        };
        for &p in data.image(i) {
            let x0 = f32::from(p) / 127.5 - 1.0;
            rows.x.push((1.0 - t) * x0 + t * rng.normal());
        }
        rows.t.push(t);
        rows.y.push(label);
        rows.w.push(w);
        rows.d.push(d);
    }
    (base, consistency)
}

/// The student's velocity at `x` for the rows' t, labels, guidance scales and step sizes `d`.
fn student(model: &Dit, x: &Tensor, rows: &Rows, t: &[f32], d: &[f32]) -> Result<Tensor> {
    let y = Tensor::from_vec(rows.y.clone(), rows.len(), &Device::Cpu)?;
    let g = model.time_features(&rows.w)?;
    let d = model.time_features(d)?;
    model.forward_student(x, &model.time_features(t)?, &y, Some(&g), Some(&d))
}

/// The self-consistency target ½ (s₁ + s₂) of two half steps, without gradient.
fn two_half_steps(model: &Dit, rows: &Rows, levels: u32) -> Result<Tensor> {
    let smallest = level_step(levels - 1);
    let half: Vec<f32> = rows.d.iter().map(|&d| if d <= smallest { 0.0 } else { d / 2.0 }).collect();
    let x = rows.x()?;
    let s1 = student(model, &x, rows, &rows.t, &half)?.detach();
    let step =
        Tensor::from_vec(rows.d.iter().map(|d| d / 2.0).collect::<Vec<f32>>(), (rows.len(), 1, 1, 1), &Device::Cpu)?;
    let x_mid = x.sub(&s1.broadcast_mul(&step)?)?;
    let t_mid: Vec<f32> = rows.t.iter().zip(&rows.d).map(|(t, d)| t - d / 2.0).collect();
    let s2 = student(model, &x_mid, rows, &t_mid, &half)?.detach();
    Ok(((s1 + s2)? * 0.5)?)
}

/// One distillation step of `model` (the student) on a fresh batch; returns the loss and the
/// gradient norm.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    spec: &DistilSpec,
    teacher: &Teacher,
    model: &Dit,
    opt: &mut Adam,
    batch: usize,
    label_dropout: f64,
    data: &Digits,
    rng: &mut Rng,
    lr: f64,
    ema_decay: f64,
) -> Result<(f32, f64)> {
    let classes = model.config.num_classes;
    let (base, consistency) = draw(spec, batch, label_dropout, classes, data, rng);
    let mut x = Vec::new();
    let mut targets = Vec::new();
    let mut all = Rows::default();
    for (rows, is_base) in [(&base, true), (&consistency, false)] {
        if rows.len() == 0 {
            continue;
        }
        x.push(rows.x()?);
        targets.push(if is_base {
            teacher.guided(&rows.x()?, &rows.t, &rows.y, &rows.w)?
        } else {
            two_half_steps(model, rows, spec.levels)?
        });
        all.t.extend(&rows.t);
        all.y.extend(&rows.y);
        all.w.extend(&rows.w);
        all.d.extend(&rows.d);
    }
    let out = student(model, &Tensor::cat(&x, 0)?, &all, &all.t, &all.d)?;
    let loss = out.sub(&Tensor::cat(&targets, 0)?)?.sqr()?.mean_all()?;
    let grads = loss.backward()?;
    let norm = opt.step(&grads, lr, ema_decay)?;
    Ok((loss.to_scalar::<f32>()?, norm))
}

/// The default teacher: the shipped milliwatt ternary model.
pub fn default_teacher() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("models").join("mnist-ternary")
}

#[cfg(test)]
mod tests {
    use super::*;
    use milliwatt::eval::digits::PIXELS;

    #[test]
    fn rows_sit_on_their_grids() {
        let data = Digits { images: vec![0; 3 * PIXELS], labels: vec![0, 1, 2] };
        let spec = DistilSpec { teacher: PathBuf::new(), guidance: [1.0, 5.0], levels: 4, bootstrap: 0.25 };
        let mut rng = Rng::new(3);
        for _ in 0..50 {
            let (base, boot) = draw(&spec, 16, 0.1, 10, &data, &mut rng);
            assert_eq!((base.len(), boot.len()), (12, 4));
            assert!(base.d.iter().all(|&d| d == 0.0));
            assert!(base.t.iter().all(|&t| t > 0.0 && t < 1.0));
            for (&t, &d) in boot.t.iter().zip(&boot.d) {
                assert!([1.0, 0.5, 0.25, 0.125].contains(&d), "step {d}");
                let j = t / d;
                assert!((j - j.round()).abs() < 1e-5 && t <= 1.0 && t >= d, "t {t} is not on the grid of d {d}");
            }
            assert!(base.w.iter().chain(&boot.w).all(|&w| (1.0..=5.0).contains(&w)));
        }
    }
}
