//! Noise: the u32 stream bit-identical to the CPU twin on every backend (and so across backends),
//! independent of how a batch is split into dispatches; normals within 1e-6 of the twin, with the
//! right mean and variance.

use milliwatt::cpu::noise;
use milliwatt::kernels::{Noise, NoiseKind};
use milliwatt::{Gpu, Kernel};

use crate::util::err;
use crate::{Case, Outcome};

pub fn all() -> Vec<(&'static str, Case)> {
    vec![("noise_bits_match_twin", |b| bits_case(&b.gpu)), ("noise_normals", |b| normal_case(&b.gpu))]
}

fn run(gpu: &Gpu, n: &Noise) -> Result<Vec<u32>, String> {
    let out = gpu.upload("noise", &vec![0u32; (n.images * n.count) as usize]).map_err(err)?;
    let p = n.prepare(gpu, &[(&out).into()]).map_err(err)?;
    gpu.run(&[&p]).map_err(err)?;
    gpu.read(&out).map_err(err)
}

const SEED: u64 = 0x1234_5678_9ABC_DEF0;

fn bits_case(gpu: &Gpu) -> Outcome {
    for &(images, count, first, stream) in &[(3u32, 1001u32, 5u32, 1u32), (1, 1, 0, 0), (2, 4096, 0, 7)] {
        let n = Noise { seed: SEED, stream, first_image: first, images, count, kind: NoiseKind::Bits };
        let got = run(gpu, &n)?;
        for i in 0..images {
            for e in 0..count {
                let (g, t) = (got[(i * count + e) as usize], noise::bits(SEED, stream, first + i, e));
                if g != t {
                    return Err(format!("image {} element {e}: gpu {g:#010x} vs twin {t:#010x}", first + i).into());
                }
            }
        }
    }
    // Image 6 generated alone equals image 6 of a batch 5..8.
    let batch =
        run(gpu, &Noise { seed: SEED, stream: 0, first_image: 5, images: 3, count: 77, kind: NoiseKind::Bits })?;
    let alone =
        run(gpu, &Noise { seed: SEED, stream: 0, first_image: 6, images: 1, count: 77, kind: NoiseKind::Bits })?;
    if batch[77..154] != alone[..] {
        return Err("image 6 differs between a batch and a single dispatch".into());
    }
    // Different seeds and streams differ.
    let other =
        run(gpu, &Noise { seed: SEED + 1, stream: 0, first_image: 6, images: 1, count: 77, kind: NoiseKind::Bits })?;
    if other == alone {
        return Err("seed does not change the stream".into());
    }
    Ok(())
}

fn normal_case(gpu: &Gpu) -> Outcome {
    let (images, count) = (2u32, 1 << 19);
    let n = Noise { seed: 42, stream: 3, first_image: 0, images, count, kind: NoiseKind::Normal };
    let got: Vec<f32> = run(gpu, &n)?.into_iter().map(f32::from_bits).collect();
    let mut worst = 0f32;
    let mut at = (0, 0, 0.0, 0.0);
    for i in 0..images {
        for e in (0..count).step_by(97) {
            let g = got[(i * count + e) as usize];
            let t = noise::normal(42, 3, i, e);
            // Relative to the value, with an absolute floor of 1e-6 where it crosses zero.
            let err = (g - t).abs() / t.abs().max(1.0);
            if err > worst {
                worst = err;
                at = (i, e, g, t);
            }
        }
    }
    if worst > 1e-6 {
        return Err(format!(
            "normals differ from the twin by {worst:e} relative (image {}, element {}: {} vs {})",
            at.0, at.1, at.2, at.3
        )
        .into());
    }
    let len = got.len() as f64;
    let mean = got.iter().map(|&v| f64::from(v)).sum::<f64>() / len;
    let var = got.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / len;
    // 1 Mi samples: standard error of the mean 0.001, of the variance about 0.0014.
    if mean.abs() > 0.005 || (var - 1.0).abs() > 0.007 {
        return Err(format!("mean {mean}, variance {var} of {len} normals").into());
    }
    if got.iter().any(|v| !v.is_finite()) {
        return Err("non-finite normal".into());
    }
    Ok(())
}
