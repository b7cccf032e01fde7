//! The scoring classifier (src/eval/classifier.rs describes the network): a small CNN trained on
//! the 9,000 training digits with random shifts of up to 2 pixels, AdamW and cosine decay, and
//! checked on the 1,000 held-out digits.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use candle_core::{D, DType, Device, Tensor, Var};
use milliwatt::eval::digits::{CLASSES, Digits, PIXELS, SIDE};

use crate::ckpt::{self, HostF32};
use crate::optim::{Adam, AdamConfig};
use crate::rng::Rng;

const C1: usize = 32;
const C2: usize = 64;
const FEATURES: usize = 128;

pub struct Cnn {
    pub params: BTreeMap<String, Var>,
}

impl Cnn {
    /// Kaiming-uniform weights (fan-in), zero biases.
    pub fn new(rng: &mut Rng) -> Result<Self> {
        let shapes: [(&str, Vec<usize>); 4] = [
            ("conv1", vec![C1, 1, 3, 3]),
            ("conv2", vec![C2, C1, 3, 3]),
            ("fc1", vec![FEATURES, C2 * (SIDE / 4) * (SIDE / 4)]),
            ("fc2", vec![CLASSES, FEATURES]),
        ];
        let mut params = BTreeMap::new();
        for (name, shape) in shapes {
            let n: usize = shape.iter().product();
            let bound = (6.0 / (n / shape[0]) as f64).sqrt();
            let w: Vec<f32> = (0..n).map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32).collect();
            let outs = shape[0];
            params.insert(format!("{name}.weight"), Var::from_tensor(&Tensor::from_vec(w, shape, &Device::Cpu)?)?);
            params.insert(format!("{name}.bias"), Var::zeros(outs, DType::F32, &Device::Cpu)?);
        }
        Ok(Self { params })
    }

    fn p(&self, name: &str) -> &Tensor {
        self.params[name].as_tensor()
    }

    /// Features [B, 128] and logits [B, 10] of `x` [B, 1, 28, 28] in [-1, 1].
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let conv = |x: &Tensor, name: &str| -> Result<Tensor> {
            let b = self.p(&format!("{name}.bias")).reshape((1, (), 1, 1))?;
            Ok(x.conv2d(self.p(&format!("{name}.weight")), 1, 1, 1, 1)?.broadcast_add(&b)?.relu()?.max_pool2d(2)?)
        };
        let h = conv(&conv(x, "conv1")?, "conv2")?.flatten_from(1)?;
        let lin = |x: &Tensor, name: &str| -> Result<Tensor> {
            Ok(x.matmul(&self.p(&format!("{name}.weight")).t()?)?.broadcast_add(self.p(&format!("{name}.bias")))?)
        };
        let features = lin(&h, "fc1")?.relu()?;
        let logits = lin(&features, "fc2")?;
        Ok((features, logits))
    }
}

/// Images `idx` of `data` as [n, 1, 28, 28] in [-1, 1], each shifted by up to `shift` pixels
/// (zero fill) when `rng` is given.
fn images(data: &Digits, idx: &[usize], shift: i32, mut rng: Option<&mut Rng>) -> Result<Tensor> {
    let mut x = Vec::with_capacity(idx.len() * PIXELS);
    for &i in idx {
        let (dy, dx) = match rng.as_deref_mut() {
            Some(r) => (r.below(2 * shift as usize + 1) as i32 - shift, r.below(2 * shift as usize + 1) as i32 - shift),
            None => (0, 0),
        };
        let img = data.image(i);
        for y in 0..SIDE as i32 {
            for xx in 0..SIDE as i32 {
                let (sy, sx) = (y - dy, xx - dx);
                let p = if (0..SIDE as i32).contains(&sy) && (0..SIDE as i32).contains(&sx) {
                    img[(sy * SIDE as i32 + sx) as usize]
                } else {
                    0
                };
                x.push(f32::from(p) / 127.5 - 1.0);
            }
        }
    }
    Ok(Tensor::from_vec(x, (idx.len(), 1, SIDE, SIDE), &Device::Cpu)?)
}

/// Held-out accuracy of `model`.
pub fn accuracy(model: &Cnn, data: &Digits) -> Result<f64> {
    let mut right = 0;
    for chunk in (0..data.len()).collect::<Vec<_>>().chunks(250) {
        let (_, logits) = model.forward(&images(data, chunk, 0, None)?)?;
        let pred: Vec<u32> = logits.argmax(D::Minus1)?.to_vec1()?;
        right += chunk.iter().zip(pred).filter(|&(&i, p)| u32::from(data.labels[i]) == p).count();
    }
    Ok(right as f64 / data.len() as f64)
}

/// Trains for `epochs` and writes `out/classifier.safetensors`; returns the held-out accuracy.
pub fn train(train: &Digits, held_out: &Digits, epochs: usize, out: &Path, seed: u64) -> Result<f64> {
    let mut rng = Rng::new(seed);
    let model = Cnn::new(&mut rng)?;
    let mut opt = Adam::new(
        model.params.values().cloned().collect(),
        AdamConfig { weight_decay: 1e-4, clip: 5.0, ..AdamConfig::default() },
    )?;
    let batch = 128;
    let steps_per_epoch = train.len() / batch;
    let total = (epochs * steps_per_epoch) as f64;
    let mut step = 0;
    for epoch in 0..epochs {
        let order = rng.permutation(train.len());
        let mut loss_sum = 0f64;
        for idx in order.chunks_exact(batch) {
            let x = images(train, idx, 2, Some(&mut rng))?;
            let y = Tensor::from_vec(
                idx.iter().map(|&i| u32::from(train.labels[i])).collect::<Vec<_>>(),
                batch,
                &Device::Cpu,
            )?;
            let (_, logits) = model.forward(&x)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            let lr = 2e-3 * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total).cos());
            opt.step(&loss.backward()?, lr, 0.0)?;
            loss_sum += f64::from(loss.to_scalar::<f32>()?);
            step += 1;
        }
        let acc = accuracy(&model, held_out)?;
        println!(
            "epoch {}/{epochs}: loss {:.4}, held-out accuracy {:.2} %",
            epoch + 1,
            loss_sum / steps_per_epoch as f64,
            100.0 * acc
        );
    }
    std::fs::create_dir_all(out)?;
    let tensors: BTreeMap<String, HostF32> =
        model.params.iter().map(|(k, v)| Ok((k.clone(), HostF32::of(v.as_tensor())?))).collect::<Result<_>>()?;
    ckpt::save_plain(&out.join("classifier.safetensors"), &tensors)?;
    accuracy(&model, held_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crate's plain-Rust forward pass reads the trainer's file and computes the same logits
    /// and features.
    #[test]
    fn crate_forward_matches_the_trainer() {
        let mut rng = Rng::new(2);
        let model = Cnn::new(&mut rng).unwrap();
        for (name, v) in &model.params {
            if name.ends_with("bias") {
                let n = v.as_tensor().elem_count();
                v.set(&Tensor::from_vec(rng.normals(n), n, &Device::Cpu).unwrap().affine(0.1, 0.0).unwrap()).unwrap();
            }
        }
        let dir = std::env::temp_dir().join(format!("milliwatt-cnn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tensors: BTreeMap<String, HostF32> =
            model.params.iter().map(|(k, v)| (k.clone(), HostF32::of(v.as_tensor()).unwrap())).collect();
        let path = dir.join("c.safetensors");
        ckpt::save_plain(&path, &tensors).unwrap();
        let ours = milliwatt::eval::Classifier::load(&path).unwrap();
        let digits = Digits { images: (0..3 * PIXELS).map(|i| (i * 37 % 256) as u8).collect(), labels: vec![0, 1, 2] };
        let (features, logits) = model.forward(&images(&digits, &[0, 1, 2], 0, None).unwrap()).unwrap();
        let (features, logits): (Vec<Vec<f32>>, Vec<Vec<f32>>) =
            (features.to_vec2().unwrap(), logits.to_vec2().unwrap());
        for i in 0..3 {
            let out = ours.run(digits.image(i));
            for (a, b) in out.logits.iter().zip(&logits[i]).chain(out.features.iter().zip(&features[i])) {
                assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "image {i}: {a} vs {b}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
