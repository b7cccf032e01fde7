//! The crate's DiT (src/model/dit.rs, DiT's `models.py`) in candle, under the same state-dict
//! names and shapes, so a trained state dict loads in milliwatt with no conversion.
//!
//! The inputs the network does not learn are computed by the crate's own code and fed in as
//! tensors: the sinusoidal timestep embedding (`milliwatt::cpu::embed::timestep_embed`, the
//! GPU kernel's twin, cos before sin) and the 2D position embedding
//! (`milliwatt::kernels::pos_embed_2d`). The block linears follow [`Quant`]: float, or the
//! quantization-aware forward of the crate's int8-activation kernels (weights as the crate's
//! quantizers round them, activations per token to int8), with straight-through gradients.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use candle_core::{D, DType, Device, IndexOp, Tensor, Var};
use milliwatt::kernels::{pos_embed_2d, timestep_freqs};
use milliwatt::model::{DitConfig, DitWeights};

use crate::rng::Rng;

/// DiT's timestep embedding: frequencies, maximum period.
pub const FREQ_DIM: usize = 256;
const MAX_PERIOD: f32 = 10000.0;
/// DiT's LayerNorm epsilon (keep in sync with `Norm::layer_norm`).
const LN_EPS: f64 = 1e-6;
/// BitNet b1.58's epsilon on gamma (keep in sync with src/quant/ternary.rs).
const GAMMA_EPS: f64 = 1e-8;

/// How the block linears (`attn.qkv`, `attn.proj`, `mlp.fc1`, `mlp.fc2`) compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quant {
    /// Plain f32.
    Float,
    /// BitNet b1.58: per-row absmean scale, round-clip to {-1, 0, 1}; int8 activations.
    Ternary,
    /// 2:4 ternary: the two largest |w| of every 4 kept as ±1 times the mean |kept w| of the row;
    /// int8 activations. The mask is taken from the latent weights at every step.
    Ternary24,
    /// The weights already hold the crate's dequantized values (an exported model checked
    /// against the crate): no weight rounding, int8 activations.
    PreQuantized,
}

impl Quant {
    fn int8_activations(self) -> bool {
        self != Quant::Float
    }
}

/// Round half to even, as the crate's quantizers and WGSL's `round` do (candle's `round` rounds
/// half away from zero).
fn round_half_even(x: &Tensor) -> Result<Tensor> {
    let r = x.round()?;
    let tie = x.sub(&x.floor()?)?.eq(0.5)?;
    let even = (x * 0.5)?.round()?.affine(2.0, 0.0)?;
    Ok(tie.where_cond(&even, &r)?)
}

/// `x + (q - x).detach()`: the value of `q`, the gradient of `x`.
fn ste(x: &Tensor, q: &Tensor) -> Result<Tensor> {
    Ok(x.add(&q.sub(x)?.detach())?)
}

pub use crate::ops::fake_quant_act;

/// BitNet b1.58 fake quantization of `w` [m, k] (src/quant/ternary.rs): gamma = mean |w| per row.
pub fn fake_quant_ternary(w: &Tensor) -> Result<Tensor> {
    let gamma = w.abs()?.mean_keepdim(1)?;
    let levels = round_half_even(&w.broadcast_div(&gamma.affine(1.0, GAMMA_EPS)?)?)?.clamp(-1f32, 1f32)?;
    ste(w, &levels.broadcast_mul(&gamma)?)
}

/// The 2:4 mask of `w` [m, k] (k a multiple of 4): in each group of 4 along k the two largest
/// |w|, ties to the lower index (src/quant/sparse24.rs `top2`). 1.0 kept, 0.0 pruned.
pub fn mask24(w: &Tensor) -> Result<Tensor> {
    let (m, k) = w.dims2()?;
    let a = w.abs()?.reshape((m, k / 4, 4))?;
    let ai = a.unsqueeze(3)?; // [m, g, 4 (i), 1]
    let aj = a.unsqueeze(2)?; // [m, g, 1, 4 (j)]
    let beats = aj.broadcast_gt(&ai)?.to_dtype(DType::F32)?;
    // j < i: an equal magnitude at a lower index also beats i.
    let lower: Vec<f32> = (0..16).map(|n| if n % 4 < n / 4 { 1.0 } else { 0.0 }).collect();
    let lower = Tensor::from_vec(lower, (1, 1, 4, 4), w.device())?;
    let ties = aj.broadcast_eq(&ai)?.to_dtype(DType::F32)?.broadcast_mul(&lower)?;
    let rank = beats.add(&ties)?.sum(3)?; // [m, g, 4]
    Ok(rank.lt(2f32)?.to_dtype(DType::F32)?.reshape((m, k))?)
}

/// 2:4 ternary fake quantization (src/quant/sparse24.rs `quantize_ternary`): kept weights become
/// sign(w) (sign(0) = +1) times gamma = mean |kept w| of the row.
pub fn fake_quant_ternary24(w: &Tensor) -> Result<Tensor> {
    let mask = mask24(w)?;
    let kept = w.abs()?.mul(&mask)?.sum_keepdim(1)?;
    let gamma = kept.broadcast_div(&mask.sum_keepdim(1)?)?;
    let sign = w.ge(0f32)?.to_dtype(DType::F32)?.affine(2.0, -1.0)?;
    ste(w, &sign.mul(&mask)?.broadcast_mul(&gamma)?)
}

/// Parameters by state-dict name.
pub struct Dit {
    pub config: DitConfig,
    pub quant: Quant,
    pub params: BTreeMap<String, Var>,
    pos_embed: Tensor,
    freqs: Vec<f32>,
    device: Device,
}

/// The block linears, whose weights follow [`Quant`].
pub fn is_block_linear(name: &str) -> bool {
    name.starts_with("blocks.")
        && [".attn.qkv.weight", ".attn.proj.weight", ".mlp.fc1.weight", ".mlp.fc2.weight"]
            .iter()
            .any(|s| name.ends_with(s))
}

impl Dit {
    /// A model with DiT's initialisation (`DiT.initialize_weights`): Xavier-uniform linears,
    /// N(0, 0.02) label table and timestep MLP, the patch embedding Xavier-uniform over its
    /// flattened view, and adaLN-Zero (every modulation and the final linear zero).
    pub fn new(config: &DitConfig, quant: Quant, rng: &mut Rng, device: &Device) -> Result<Self> {
        config.validate()?;
        let mut params = BTreeMap::new();
        for (name, shape) in DitWeights::expected(config) {
            if name == "pos_embed" {
                continue;
            }
            let n: usize = shape.iter().product();
            // A student's guidance and step-size embedders start at zero output (their last
            // linear zero), so a student fine-tuned from its teacher starts as the teacher.
            let student_out = name.starts_with("g_embedder.mlp.2") || name.starts_with("d_embedder.mlp.2");
            let values: Vec<f32> = if name.ends_with(".bias")
                || name.contains("adaLN_modulation")
                || name.starts_with("final_layer.linear")
                || student_out
            {
                vec![0.0; n]
            } else if ["y_embedder", "t_embedder", "g_embedder", "d_embedder"].iter().any(|e| name.starts_with(e)) {
                rng.normals(n).into_iter().map(|v| 0.02 * v).collect()
            } else {
                let fan_out = shape[0];
                let fan_in = n / fan_out;
                let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
                (0..n).map(|_| ((2.0 * rng.uniform() - 1.0) * a) as f32).collect()
            };
            params.insert(name, Var::from_tensor(&Tensor::from_vec(values, shape, device)?)?);
        }
        Self::with_params(config, quant, params, device)
    }

    /// A model over given parameters (every name of `DitWeights::expected` but `pos_embed`).
    pub fn with_params(
        config: &DitConfig,
        quant: Quant,
        params: BTreeMap<String, Var>,
        device: &Device,
    ) -> Result<Self> {
        for (name, shape) in DitWeights::expected(config) {
            if name == "pos_embed" {
                continue;
            }
            match params.get(&name) {
                Some(v) if v.dims() == shape.as_slice() => {}
                Some(v) => bail!("parameter `{name}` has shape {:?}, expected {shape:?}", v.dims()),
                None => bail!("parameter `{name}` is missing"),
            }
        }
        let (d, grid) = (config.hidden_size, config.grid());
        let pos = pos_embed_2d(d, grid, grid)?;
        let pos_embed = Tensor::from_vec(pos, (1, config.tokens() as usize, d as usize), device)?;
        let freqs = timestep_freqs(FREQ_DIM as u32, MAX_PERIOD);
        Ok(Self { config: config.clone(), quant, params, pos_embed, freqs, device: device.clone() })
    }

    /// The trainable variables, in name order.
    pub fn vars(&self) -> Vec<Var> {
        self.params.values().cloned().collect()
    }

    fn p(&self, name: &str) -> Result<&Tensor> {
        match self.params.get(name) {
            Some(v) => Ok(v.as_tensor()),
            None => bail!("no parameter `{name}`"),
        }
    }

    /// The timestep-embedding input of sampler times `t` (the model sees `time_scale · t`),
    /// computed by the crate's twin of its GPU kernel: [B, 256].
    pub fn time_features(&self, t: &[f32]) -> Result<Tensor> {
        let mut emb = vec![0f32; t.len() * FREQ_DIM];
        milliwatt::cpu::embed::timestep_embed(FREQ_DIM, &self.freqs, self.config.time_scale, t, &mut emb);
        Ok(Tensor::from_vec(emb, (t.len(), FREQ_DIM), &self.device)?)
    }

    /// `x [n, k] · Wᵀ + b` for linear `name`, with the block linears' quantization.
    fn linear(&self, name: &str, x: &Tensor) -> Result<Tensor> {
        let w = self.p(&format!("{name}.weight"))?;
        let b = self.p(&format!("{name}.bias"))?;
        let block = is_block_linear(&format!("{name}.weight"));
        let (w, x) = if block && self.quant.int8_activations() {
            let w = match self.quant {
                Quant::Ternary => fake_quant_ternary(w)?,
                Quant::Ternary24 => fake_quant_ternary24(w)?,
                _ => w.clone(),
            };
            (w, fake_quant_act(x)?)
        } else {
            (w.clone(), x.clone())
        };
        Ok(x.matmul(&w.t()?)?.broadcast_add(b)?)
    }

    /// The forward pass: `x` `[B, C, H, W]`, `t_features` from [`Dit::time_features`], `y` `[B]`
    /// labels (u32, `num_classes` is the null class). Returns `[B, out_channels, H, W]`.
    pub fn forward(&self, x: &Tensor, t_features: &Tensor, y: &Tensor) -> Result<Tensor> {
        self.forward_student(x, t_features, y, None, None)
    }

    /// [`Dit::forward`] of a distilled student: the features ([`Dit::time_features`]) of its
    /// guidance scales (`guidance_embed`) and step sizes (`step_embed`), each given exactly when
    /// the config has the embedder, as the crate's `reference::forward_with`.
    pub fn forward_student(
        &self,
        x: &Tensor,
        t_features: &Tensor,
        y: &Tensor,
        g_features: Option<&Tensor>,
        d_features: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, ch, side, _) = x.dims4()?;
        let (p, g, d) = (c.patch_size as usize, c.grid() as usize, c.hidden_size as usize);
        let (t_n, heads, hd) = (g * g, c.num_heads as usize, c.head_dim() as usize);
        let rows = b * t_n;

        let patches = x.reshape((b, ch, g, p, g, p))?.permute((0, 2, 4, 1, 3, 5))?.reshape((rows, ch * p * p))?;
        let pw = self.p("x_embedder.proj.weight")?.reshape((d, ch * p * p))?;
        let h = patches.matmul(&pw.t()?)?.broadcast_add(self.p("x_embedder.proj.bias")?)?;
        let mut h = h.reshape((b, t_n, d))?.broadcast_add(&self.pos_embed)?;

        let embed = |name: &str, features: &Tensor| -> Result<Tensor> {
            let hidden = self.linear(&format!("{name}.mlp.0"), features)?.silu()?;
            self.linear(&format!("{name}.mlp.2"), &hidden)
        };
        let mut temb = embed("t_embedder", t_features)?;
        for (on, name, features) in
            [(c.guidance_embed, "g_embedder", g_features), (c.step_embed, "d_embedder", d_features)]
        {
            match (on, features) {
                (true, Some(f)) => temb = temb.add(&embed(name, f)?)?,
                (false, None) => {}
                _ => bail!("{name}: the features must be given exactly when the config has the embedder"),
            }
        }
        let yemb = self.p("y_embedder.embedding_table.weight")?.index_select(y, 0)?;
        let cs = temb.add(&yemb)?.silu()?;

        let norm = |x: &Tensor| -> Result<Tensor> {
            let mean = x.mean_keepdim(D::Minus1)?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
            Ok(xc.broadcast_div(&var.affine(1.0, LN_EPS)?.sqrt()?)?)
        };
        // [B, T, D] · (1 + scale) + shift, scale and shift [B, D].
        let modulate = |x: &Tensor, shift: &Tensor, scale: &Tensor| -> Result<Tensor> {
            Ok(x.broadcast_mul(&scale.affine(1.0, 1.0)?.unsqueeze(1)?)?.broadcast_add(&shift.unsqueeze(1)?)?)
        };
        for i in 0..c.depth as usize {
            let pre = format!("blocks.{i}");
            let m = self.linear(&format!("{pre}.adaLN_modulation.1"), &cs)?; // [B, 6D]
            let chunk = |n: usize| m.narrow(1, n * d, d);
            let (shift_msa, scale_msa, gate_msa) = (chunk(0)?, chunk(1)?, chunk(2)?);
            let (shift_mlp, scale_mlp, gate_mlp) = (chunk(3)?, chunk(4)?, chunk(5)?);

            let hn = modulate(&norm(&h)?, &shift_msa, &scale_msa)?.reshape((rows, d))?;
            let qkv = self.linear(&format!("{pre}.attn.qkv"), &hn)?;
            let qkv = qkv.reshape((b, t_n, 3, heads, hd))?.permute((2, 0, 3, 1, 4))?.contiguous()?;
            let (q, k, v) = (qkv.i(0)?, qkv.i(1)?, qkv.i(2)?);
            let att = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
            let att = candle_nn::ops::softmax(&att, D::Minus1)?;
            let o = att.matmul(&v)?.transpose(1, 2)?.reshape((rows, d))?;
            let o = self.linear(&format!("{pre}.attn.proj"), &o)?.reshape((b, t_n, d))?;
            h = h.add(&o.broadcast_mul(&gate_msa.unsqueeze(1)?)?)?;

            let hn = modulate(&norm(&h)?, &shift_mlp, &scale_mlp)?.reshape((rows, d))?;
            let f = crate::ops::gelu(&self.linear(&format!("{pre}.mlp.fc1"), &hn)?)?;
            let f = self.linear(&format!("{pre}.mlp.fc2"), &f)?.reshape((b, t_n, d))?;
            h = h.add(&f.broadcast_mul(&gate_mlp.unsqueeze(1)?)?)?;
        }
        let fm = self.linear("final_layer.adaLN_modulation.1", &cs)?;
        let hn = modulate(&norm(&h)?, &fm.narrow(1, 0, d)?, &fm.narrow(1, d, d)?)?.reshape((rows, d))?;
        let out = self.linear("final_layer.linear", &hn)?;
        let co = c.out_channels() as usize;
        let out = out.reshape((b, g, g, p, p, co))?.permute((0, 5, 1, 3, 2, 4))?.reshape((b, co, side, side))?;
        Ok(out.narrow(1, 0, ch)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use milliwatt::quant::{Format, ScaleMode, quantize};

    fn host(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn weight_quantizers_match_the_crate() {
        let (m, k) = (6usize, 20usize);
        let mut rng = Rng::new(5);
        let mut w = rng.normals(m * k);
        w[3] = w[2]; // a tie inside a group of 4
        let t = Tensor::from_vec(w.clone(), (m, k), &Device::Cpu).unwrap();
        for (format, fq) in [
            (Format::Ternary2, fake_quant_ternary(&t).unwrap()),
            (Format::Ternary24, fake_quant_ternary24(&t).unwrap()),
        ] {
            let q = quantize(&w, m as u32, k as u32, format, ScaleMode::PerRow).unwrap();
            let want = q.dequantize().unwrap();
            for (a, b) in host(&fq).iter().zip(&want) {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{format:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn activation_quantizer_matches_the_crate() {
        let (n, k) = (5usize, 13usize);
        let mut x = Rng::new(9).normals(n * k);
        x[13..26].fill(0.0); // an all-zero row
        x[30] = 2.5 * (x[27..39].iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0); // near a tie
        let fq = host(&fake_quant_act(&Tensor::from_vec(x.clone(), (n, k), &Device::Cpu).unwrap()).unwrap());
        let words = milliwatt::kernels::qmatmul::act_row_words(k as u32) as usize;
        let (mut xq, mut xs) = (vec![0u32; n * words], vec![0f32; n]);
        milliwatt::cpu::qmatmul::quantize_act(n, k, words, &x, &mut xq, &mut xs);
        for r in 0..n {
            for c in 0..k {
                let level = (xq[r * words + c / 4] >> (8 * (c % 4))) as u8 as i8;
                assert_eq!(fq[r * k + c], f32::from(level) * xs[r], "[{r}, {c}]");
            }
        }
    }

    #[test]
    fn gradients_pass_straight_through() {
        let w =
            Var::from_tensor(&Tensor::from_vec(vec![0.3f32, -1.2, 0.05, 0.9], (1, 4), &Device::Cpu).unwrap()).unwrap();
        let loss = fake_quant_ternary24(w.as_tensor()).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        assert_eq!(host(g.get(w.as_tensor()).unwrap()), vec![1.0; 4]);
    }
}
