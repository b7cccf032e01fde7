//! AdamW with its state in plain tensors (candle-nn's keeps its moments private, so a checkpoint
//! could not resume it exactly), gradient-norm clipping, and an exponential moving average of the
//! weights (DiT samples from its EMA weights).

use anyhow::Result;
use candle_core::{Tensor, Var, backprop::GradStore};

/// AdamW hyper-parameters.
#[derive(Clone, Copy, Debug)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Global gradient norm above which gradients are scaled down to it.
    pub clip: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, clip: 1.0 }
    }
}

/// AdamW over `vars`, with first and second moments and the EMA per variable. Every state
/// tensor is detached when it is replaced: otherwise each would record the op that made it from
/// the previous one, and the whole history would stay alive (a run grew to 23 GB and was killed).
pub struct Adam {
    pub config: AdamConfig,
    pub vars: Vec<Var>,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub ema: Vec<Tensor>,
    /// Optimizer steps taken.
    pub t: u64,
}

impl Adam {
    pub fn new(vars: Vec<Var>, config: AdamConfig) -> Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        let m = vars.iter().map(zeros).collect::<candle_core::Result<_>>()?;
        let v = vars.iter().map(zeros).collect::<candle_core::Result<_>>()?;
        let ema = vars.iter().map(|v| v.as_tensor().copy()).collect::<candle_core::Result<_>>()?;
        Ok(Self { config, vars, m, v, ema, t: 0 })
    }

    /// One step at learning rate `lr`; returns the gradient norm before clipping.
    pub fn step(&mut self, grads: &GradStore, lr: f64, ema_decay: f64) -> Result<f64> {
        let c = self.config;
        let mut sq = 0f64;
        let gs: Vec<Option<Tensor>> = self.vars.iter().map(|v| grads.get(v.as_tensor()).cloned()).collect();
        for g in gs.iter().flatten() {
            sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
        let norm = sq.sqrt();
        let scale = if norm > c.clip { c.clip / norm } else { 1.0 };
        self.t += 1;
        let t = self.t as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for (i, g) in gs.into_iter().enumerate() {
            let var = &self.vars[i];
            if let Some(g) = g {
                let g = (g * scale)?;
                self.m[i] = ((&self.m[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?.detach();
                self.v[i] = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?.detach();
                let mhat = (&self.m[i] / bc1)?;
                let vhat = (&self.v[i] / bc2)?;
                let update = (mhat / (vhat.sqrt()? + c.eps)?)?;
                let w = var.as_tensor();
                let decayed = (w * (1.0 - lr * c.weight_decay))?;
                var.set(&(decayed - (update * lr)?)?)?;
            }
            self.ema[i] = ((&self.ema[i] * ema_decay)? + (var.as_tensor() * (1.0 - ema_decay))?)?.detach();
        }
        Ok(norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adam_minimises_a_quadratic() {
        let x = Var::from_tensor(&Tensor::new(&[3f32, -2.0], &Device::Cpu).unwrap()).unwrap();
        let mut opt = Adam::new(vec![x.clone()], AdamConfig { clip: 100.0, ..AdamConfig::default() }).unwrap();
        for _ in 0..500 {
            let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap(), 0.05, 0.9).unwrap();
        }
        let v: Vec<f32> = x.as_tensor().to_vec1().unwrap();
        assert!(v.iter().all(|a| a.abs() < 1e-2), "{v:?}");
    }
}
