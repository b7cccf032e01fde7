//! The output stage: samples to RGBA8 on the GPU (buffer and storage-texture forms) against the
//! twin the CPU `PixelDecoder` uses, byte for byte, on odd grids and on values that round at a
//! tie, and its work counted by its `COUNT_WORK` variant.

use milliwatt::cpu;
use milliwatt::kernels::DecodeRgba8;
use milliwatt::wgpu::TextureUsages;
use milliwatt::{Error, Gpu, Kernel};

use crate::ledger_cases::counts_agree;
use crate::util::{Rng, err, read_texture, rgba_texture};
use crate::{Case, Outcome};

pub fn all() -> Vec<(&'static str, Case)> {
    vec![("decode_rgba8_buffer_and_texture", |b| decode_case(&b.gpu))]
}

/// Samples with every kind of value: uniform in [-1.5, 1.5] (clamped ends), ±1 exactly, and
/// values whose byte is a tie (x + 0.5 an integer up to rounding).
fn samples(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| match i % 5 {
            0 => (((i / 5) % 255) as f32 + 0.5) / 127.5 - 1.0,
            1 => [-1.0, 1.0, 0.0, -0.0][i / 5 % 4],
            _ => rng.f32() * 1.5,
        })
        .collect()
}

fn decode_case(gpu: &Gpu) -> Outcome {
    let grids = [
        DecodeRgba8 { images: 3, channels: 1, height: 7, width: 5, columns: 2 },
        DecodeRgba8 { images: 2, channels: 3, height: 4, width: 9, columns: 3 },
        DecodeRgba8 { images: 5, channels: 4, height: 3, width: 3, columns: 2 },
        DecodeRgba8 { images: 1, channels: 2, height: 13, width: 1, columns: 1 },
        DecodeRgba8 { images: 10, channels: 1, height: 28, width: 28, columns: 10 },
    ];
    for (i, d) in grids.iter().enumerate() {
        let x = samples((d.images * d.channels * d.height * d.width) as usize, 40 + i as u64);
        let (w, h) = d.grid_size();
        let p = d.params();
        let sentinel = 0xDEAD_BEEFu32;
        let mut twin = vec![sentinel; (p.pitch * h) as usize];
        cpu::decode::decode_rgba8(&p, &x, &mut twin);
        // Buffer form: every word the twin writes, and padding left alone.
        let xb = gpu.upload("x", &x).map_err(err)?;
        let ob = gpu.upload("out", &twin.iter().map(|_| sentinel).collect::<Vec<_>>()).map_err(err)?;
        let k = d.prepare(gpu, &[(&xb).into(), (&ob).into()]).map_err(err)?;
        gpu.run(&[&k]).map_err(err)?;
        let got: Vec<u32> = gpu.read(&ob).map_err(err)?;
        if let Some(j) = (0..twin.len()).find(|&j| got[j] != twin[j]) {
            return Err(format!("{d:?}: word {j} is {:#010x}, the twin's {:#010x}", got[j], twin[j]).into());
        }
        // Texture form, into a texture larger than the grid: the images' texels are the twin's.
        let texture = rgba_texture(gpu, w + 3, h + 1, TextureUsages::STORAGE_BINDING);
        let view = texture.create_view(&Default::default());
        let k = d.prepare_texture(gpu, (&xb).into(), &view).map_err(err)?;
        gpu.run(&[&k]).map_err(err)?;
        let texels = read_texture(gpu, &texture)?;
        for y in 0..h as usize {
            for xx in 0..w as usize {
                let word = twin[y * p.pitch as usize + xx];
                if word == sentinel {
                    continue; // a grid cell past the last image
                }
                let want = word.to_le_bytes();
                let at = (y * (w as usize + 3) + xx) * 4;
                if texels[at..at + 4] != want {
                    return Err(
                        format!("{d:?}: texel ({xx}, {y}) is {:?}, the twin's {want:?}", &texels[at..at + 4]).into()
                    );
                }
            }
        }
        // The counting variant counts what `work()` says.
        counts_agree(gpu, &format!("decode {d:?}"), d, &[(&xb).into(), (&ob).into()])?;
    }
    // The twin is the CPU decoder's rounding: floor(x + 0.5) of x = (v + 1) * 127.5.
    for (v, byte) in [(-1.0, 0), (1.0, 255), (0.0, 128), (-3.0, 0), (2.0, 255), (0.5, 191), (-0.5, 64)] {
        if cpu::decode::to_byte(v) != byte {
            return Err(format!("to_byte({v}) = {}, not {byte}", cpu::decode::to_byte(v)).into());
        }
    }
    // More than four channels has no pixel form.
    let five = DecodeRgba8 { images: 1, channels: 5, height: 2, width: 2, columns: 1 };
    match five.requirements(gpu.capabilities()) {
        Err(Error::Unsupported { .. }) => Ok(()),
        other => Err(format!("5 channels gave {other:?}").into()),
    }
}
