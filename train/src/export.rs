//! From trained parameters to what the crate loads: the state dict as `milliwatt::model`
//! names it, `DitWeights` (quantized and packed by the crate's own quantizers), and the fidelity
//! fixture that a crate test replays.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use milliwatt::model::weights::{HostTensor, WeightData};
use milliwatt::model::{DitConfig, DitWeights, FloatFormat, Prediction, QuantPolicy};

use crate::ckpt::{self, HostF32};
use crate::train_dit::{params_from, read_checkpoint};

use crate::dit::{Dit, Quant};

/// The state dict of `params` (with the position embedding the crate computes) as host tensors.
pub fn state_dict(config: &DitConfig, params: &BTreeMap<String, Var>) -> Result<BTreeMap<String, HostTensor>> {
    let mut out = BTreeMap::new();
    for (name, v) in params {
        let t = v.as_tensor();
        out.insert(name.clone(), HostTensor { shape: t.dims().to_vec(), data: t.flatten_all()?.to_vec1()? });
    }
    let (d, g) = (config.hidden_size, config.grid());
    let pos = milliwatt::kernels::pos_embed_2d(d, g, g)?;
    out.insert("pos_embed".into(), HostTensor { shape: vec![1, config.tokens() as usize, d as usize], data: pos });
    Ok(out)
}

/// The crate's weights for `params` under `config`'s policy (block linears quantized and packed
/// on the way in, exactly as loading a checkpoint does).
pub fn crate_weights(config: &DitConfig, params: &BTreeMap<String, Var>) -> Result<DitWeights> {
    Ok(DitWeights::from_float(config, state_dict(config, params)?)?)
}

/// A trainer model computing what `weights` hold: float tensors as they are, packed block
/// linears dequantized (levels × scales), so its forward pass is the crate's arithmetic in
/// candle ([`Quant::PreQuantized`] when anything is packed).
pub fn model_of(weights: &DitWeights) -> Result<Dit> {
    let dev = Device::Cpu;
    let mut params = BTreeMap::new();
    let mut packed = false;
    for name in weights.names() {
        if name == "pos_embed" {
            continue;
        }
        let (shape, data) = match weights.get(name)? {
            WeightData::Float(t) => (t.shape.clone(), t.data.clone()),
            WeightData::Packed(p) => {
                packed = true;
                (vec![p.m as usize, p.k as usize], p.unpack()?.dequantize()?)
            }
        };
        params.insert(name.to_string(), Var::from_tensor(&Tensor::from_vec(data, shape, &dev)?)?);
    }
    let quant = if packed { Quant::PreQuantized } else { Quant::Float };
    Dit::with_params(&weights.config, quant, params, &dev)
}

/// A student's guidance scales and step sizes, one per image, where its config has the embedder.
#[derive(Clone, Debug, Default)]
pub struct Scalars {
    pub guidance: Option<Vec<f32>>,
    pub step: Option<Vec<f32>>,
}

/// The trainer's forward pass of `model` on `x` [B, C, H, W], sampler times `t`, labels `y`, and
/// a distilled student's scalars.
pub fn forward_student(model: &Dit, x: &[f32], t: &[f32], y: &[u32], s: &Scalars) -> Result<Vec<f32>> {
    let c = &model.config;
    let (b, ch, side) = (t.len(), c.in_channels as usize, c.input_size as usize);
    let dev = Device::Cpu;
    let xt = Tensor::from_vec(x.to_vec(), (b, ch, side, side), &dev)?;
    let yt = Tensor::from_vec(y.to_vec(), b, &dev)?;
    let g = s.guidance.as_deref().map(|v| model.time_features(v)).transpose()?;
    let d = s.step.as_deref().map(|v| model.time_features(v)).transpose()?;
    let out = model.forward_student(&xt, &model.time_features(t)?, &yt, g.as_ref(), d.as_ref())?;
    Ok(out.flatten_all()?.to_vec1()?)
}

/// Inputs of the fidelity fixture: 4 images of N(0, 1) values, times spread over the schedule
/// (ε models see DDIM-style timesteps / 1000), three classes and the null class.
fn fixture_inputs(config: &DitConfig) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
    let n = (config.in_channels * config.input_size * config.input_size) as usize;
    let x = crate::rng::Rng::new(42).normals(4 * n);
    let t = match config.prediction {
        Prediction::Velocity => vec![0.97, 0.6, 0.3, 0.05],
        Prediction::Epsilon => vec![0.98, 0.6, 0.3, 0.0],
    };
    (x, t, vec![3, 7, 0, config.num_classes])
}

/// `milliwatt-train export`: see its help.
pub fn export_run(run: &Path, out: &Path, which: &str, latent: bool) -> Result<()> {
    let (spec, step, tensors) = read_checkpoint(&run.join("checkpoint.safetensors"))?;
    if step < spec.steps {
        println!("note: {} stopped at step {step} of {}", run.display(), spec.steps);
    }
    let config = &spec.config;
    let params = params_from(&tensors, which)?;
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(config)? + "\n")?;
    let model_path = out.join(milliwatt::model::weights::MODEL_FILE);
    let packed = config.quantization.attention.packed().is_some() || config.quantization.mlp.packed().is_some();
    if latent {
        let mut float = config.clone();
        float.quantization = QuantPolicy::default();
        crate_weights(&float, &params)?.save_state_dict(&model_path, FloatFormat::F16)?;
    } else if packed {
        crate_weights(config, &params)?.save_packed_as(&model_path, FloatFormat::F16)?;
    } else {
        crate_weights(config, &params)?.save_state_dict(&model_path, FloatFormat::F32)?;
    }
    // The fixture comes from what was written, read back by the crate: the trainer's arithmetic
    // on exactly the shipped weights.
    let shipped = DitWeights::open(out, None)?;
    let (x, t, y) = fixture_inputs(config);
    // A student's scalars: guidance scales and step sizes across their range.
    let scalars = Scalars {
        guidance: config.guidance_embed.then(|| vec![1.0, 3.0, 1.5, 4.5]),
        step: config.step_embed.then(|| vec![1.0, 0.5, 0.25, 0.125]),
    };
    let got = forward_student(&model_of(&shipped)?, &x, &t, &y, &scalars)?;
    let side = config.input_size as usize;
    let ch = config.in_channels as usize;
    let host = |data: Vec<f32>, shape: Vec<usize>| HostF32 { shape, data };
    let mut fixture = BTreeMap::from([
        ("x".to_string(), host(x, vec![4, ch, side, side])),
        ("t".to_string(), host(t, vec![4])),
        ("y".to_string(), host(y.iter().map(|&v| v as f32).collect(), vec![4])),
        ("out".to_string(), host(got, vec![4, ch, side, side])),
    ]);
    for (name, values) in [("guidance", scalars.guidance), ("step", scalars.step)] {
        if let Some(v) = values {
            fixture.insert(name.to_string(), host(v, vec![4]));
        }
    }
    ckpt::save_plain(&out.join("fixture.safetensors"), &fixture)?;
    let losses = std::fs::read_to_string(run.join("loss.csv")).unwrap_or_default();
    let last: Vec<f64> = losses.lines().rev().take(200).filter_map(|l| l.split(',').nth(1)?.parse().ok()).collect();
    let (_, state) = ckpt::load(&run.join("checkpoint.safetensors"))?;
    let record = serde_json::json!({
        "spec": spec,
        "steps_done": step,
        "weights": which,
        "latent": latent,
        "train_seconds": state["seconds"],
        "final_loss_mean_of_last_200": last.iter().sum::<f64>() / last.len().max(1) as f64,
    });
    std::fs::write(out.join("training.json"), serde_json::to_string_pretty(&record)? + "\n")?;
    println!("exported {} (step {step}) -> {}", run.display(), out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use milliwatt::model::{LinearFormat, QuantPolicy};

    /// A small config of the shipped shape (28 × 28, patch 4) and random weights with every
    /// zero-initialised tensor made nonzero, so each path of the block is exercised.
    fn random(linear: LinearFormat) -> (DitConfig, BTreeMap<String, Var>) {
        let mut config = crate::dit_config("fp32", 32, 2, 2).unwrap();
        config.quantization = QuantPolicy { attention: linear, mlp: linear, ..QuantPolicy::default() };
        let mut rng = Rng::new(11);
        let model = Dit::new(&config, Quant::Float, &mut rng, &Device::Cpu).unwrap();
        for (name, v) in &model.params {
            if name.contains("adaLN") || name.contains("bias") || name.starts_with("final_layer") {
                let n = v.as_tensor().elem_count();
                let noise = Tensor::from_vec(rng.normals(n), v.as_tensor().shape(), &Device::Cpu).unwrap();
                v.set(&(noise * 0.05).unwrap()).unwrap();
            }
        }
        (config, model.params)
    }

    fn inputs(config: &DitConfig) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
        let mut rng = Rng::new(3);
        let n = (config.in_channels * config.input_size * config.input_size) as usize;
        (rng.normals(3 * n), vec![0.9, 0.31, 0.05], vec![7, 0, config.num_classes])
    }

    #[test]
    fn float_model_matches_the_crate_reference() {
        let (config, params) = random(LinearFormat::F32);
        let weights = crate_weights(&config, &params).unwrap();
        let (x, t, y) = inputs(&config);
        let want = milliwatt::model::reference::forward(&weights, &x, &t, &y).unwrap().out;
        let got = forward_student(&model_of(&weights).unwrap(), &x, &t, &y, &Scalars::default()).unwrap();
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-4, "max |diff| {worst}");
    }

    #[test]
    fn student_matches_the_crate_reference() {
        let (mut config, mut params) = random(LinearFormat::Ternary);
        (config.guidance_embed, config.step_embed) = (true, true);
        let mut rng = Rng::new(12);
        for name in ["g_embedder", "d_embedder"] {
            for (part, shape) in [("mlp.0", (32usize, 256usize)), ("mlp.2", (32, 32))] {
                let w = Tensor::from_vec(rng.normals(shape.0 * shape.1), shape, &Device::Cpu).unwrap();
                let b = Tensor::from_vec(rng.normals(shape.0), shape.0, &Device::Cpu).unwrap();
                params.insert(format!("{name}.{part}.weight"), Var::from_tensor(&(w * 0.05).unwrap()).unwrap());
                params.insert(format!("{name}.{part}.bias"), Var::from_tensor(&(b * 0.05).unwrap()).unwrap());
            }
        }
        let weights = crate_weights(&config, &params).unwrap();
        let (x, t, y) = inputs(&config);
        let (g, d) = (vec![1.0, 3.0, 4.5], vec![0.125, 0.5, 1.0]);
        let extra = milliwatt::model::reference::Scalars { guidance: Some(&g), step: Some(&d) };
        let want = milliwatt::model::reference::forward_with(&weights, &x, &t, &y, extra).unwrap().out;
        let s = Scalars { guidance: Some(g.clone()), step: Some(d.clone()) };
        let got = forward_student(&model_of(&weights).unwrap(), &x, &t, &y, &s).unwrap();
        let rms = |v: &[f32]| (v.iter().map(|a| a * a).sum::<f32>() / v.len() as f32).sqrt();
        let diff: Vec<f32> = got.iter().zip(&want).map(|(a, b)| a - b).collect();
        assert!(rms(&diff) < 1e-3 * rms(&want), "relative RMS {}", rms(&diff) / rms(&want));
        // The scalars matter, and a student refuses to run without them.
        let other = Scalars { guidance: Some(vec![1.0; 3]), step: Some(d) };
        assert_ne!(forward_student(&model_of(&weights).unwrap(), &x, &t, &y, &other).unwrap(), got);
        assert!(forward_student(&model_of(&weights).unwrap(), &x, &t, &y, &Scalars::default()).is_err());
    }

    #[test]
    fn ternary_models_match_the_crate_reference() {
        for format in [LinearFormat::Ternary, LinearFormat::Ternary24] {
            let (config, params) = random(format);
            let weights = crate_weights(&config, &params).unwrap();
            let (x, t, y) = inputs(&config);
            let want = milliwatt::model::reference::forward(&weights, &x, &t, &y).unwrap().out;
            let got = forward_student(&model_of(&weights).unwrap(), &x, &t, &y, &Scalars::default()).unwrap();
            let rms = |v: &[f32]| (v.iter().map(|a| a * a).sum::<f32>() / v.len() as f32).sqrt();
            let diff: Vec<f32> = got.iter().zip(&want).map(|(a, b)| a - b).collect();
            assert!(rms(&diff) < 1e-3 * rms(&want), "{format}: relative RMS {}", rms(&diff) / rms(&want));
        }
    }
}
