//! The digit classifier that scores generated digits (class accuracy, and the features of the
//! Fréchet distance), evaluated on the CPU in plain Rust — deliberately independent of the GPU
//! code it judges. Trained by `milliwatt-train classifier` on the 9,000 training digits.
//!
//! The network (state-dict names as the safetensors file holds them):
//!
//! | layer | shape | output |
//! |---|---|---|
//! | `conv1` 3 × 3, padding 1, ReLU, 2 × 2 max pool | [32, 1, 3, 3] | 32 × 14 × 14 |
//! | `conv2` 3 × 3, padding 1, ReLU, 2 × 2 max pool | [64, 32, 3, 3] | 64 × 7 × 7, flattened (c, y, x) |
//! | `fc1`, ReLU: the **features** | [128, 3136] | 128 |
//! | `fc2`: logits | [10, 128] | 10 |
//!
//! Input: 28 × 28 pixels `p` (0 = background) as `p / 127.5 − 1`.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::digits::{CLASSES, PIXELS, SIDE};
use crate::error::{Error, Result};

/// Width of the feature vector ([`Output::features`]).
pub const FEATURES: usize = 128;
const C1: usize = 32;
const C2: usize = 64;

/// A dense layer or convolution: weights (PyTorch layout) and bias.
#[derive(Clone, Debug, PartialEq)]
struct Layer {
    w: Vec<f32>,
    b: Vec<f32>,
}

/// The classifier's weights.
#[derive(Clone, Debug, PartialEq)]
pub struct Classifier {
    conv1: Layer,
    conv2: Layer,
    fc1: Layer,
    fc2: Layer,
}

/// What the classifier says of one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// The penultimate activations (after ReLU), [`FEATURES`] values.
    pub features: Vec<f32>,
    /// Class scores.
    pub logits: [f32; CLASSES],
}

impl Output {
    /// The most likely class.
    pub fn class(&self) -> u8 {
        let mut best = 0;
        for (i, &v) in self.logits.iter().enumerate() {
            if v > self.logits[best] {
                best = i;
            }
        }
        best as u8
    }
}

/// `out[o][y][x] = b[o] + Σ w[o][c][ky][kx] in[c][y + ky − 1][x + kx − 1]` (zero padding 1),
/// then ReLU and a 2 × 2 max pool.
fn conv_relu_pool(input: &[f32], channels: usize, side: usize, layer: &Layer, outs: usize) -> Vec<f32> {
    let mut conv = vec![0f32; outs * side * side];
    for o in 0..outs {
        let plane = &mut conv[o * side * side..(o + 1) * side * side];
        plane.fill(layer.b[o]);
        for c in 0..channels {
            let src = &input[c * side * side..(c + 1) * side * side];
            for ky in 0..3 {
                for kx in 0..3 {
                    let w = layer.w[((o * channels + c) * 3 + ky) * 3 + kx];
                    for y in 0..side {
                        let sy = y as isize + ky as isize - 1;
                        if sy < 0 || sy >= side as isize {
                            continue;
                        }
                        let row = &src[sy as usize * side..(sy as usize + 1) * side];
                        let dst = &mut plane[y * side..(y + 1) * side];
                        // x + kx − 1 inside the row: x from (1 − kx)⁺ to side − (kx − 1)⁺.
                        let (x0, x1) = (1usize.saturating_sub(kx), side - kx.saturating_sub(1));
                        for x in x0..x1 {
                            dst[x] += w * row[x + kx - 1];
                        }
                    }
                }
            }
        }
    }
    let half = side / 2;
    let mut out = vec![0f32; outs * half * half];
    for o in 0..outs {
        for y in 0..half {
            for x in 0..half {
                let at = |dy: usize, dx: usize| conv[o * side * side + (2 * y + dy) * side + 2 * x + dx];
                let m = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
                out[(o * half + y) * half + x] = m.max(0.0); // ReLU commutes with max
            }
        }
    }
    out
}

/// `y = W x + b`, W [outs, x.len()].
fn dense(x: &[f32], layer: &Layer) -> Vec<f32> {
    layer
        .b
        .iter()
        .enumerate()
        .map(|(o, &b)| b + layer.w[o * x.len()..(o + 1) * x.len()].iter().zip(x).map(|(w, v)| w * v).sum::<f32>())
        .collect()
}

impl Classifier {
    /// Reads the classifier's safetensors file (F32 tensors named as in the module docs).
    /// Errors: [`Error::Io`], or [`Error::Data`] naming a missing or mis-shaped tensor.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.into(), source })?;
        let bad = |message: String| Error::Data { path: path.into(), message };
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let tensor = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = st.tensor(name).map_err(|_| bad(format!("no tensor `{name}`")))?;
            if t.dtype() != Dtype::F32 || t.shape() != shape {
                return Err(bad(format!("tensor `{name}` is {:?} {:?}, expected F32 {shape:?}", t.dtype(), t.shape())));
            }
            Ok(t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        };
        let layer = |name: &str, shape: &[usize]| -> Result<Layer> {
            Ok(Layer { w: tensor(&format!("{name}.weight"), shape)?, b: tensor(&format!("{name}.bias"), &shape[..1])? })
        };
        let flat = C2 * (SIDE / 4) * (SIDE / 4);
        Ok(Self {
            conv1: layer("conv1", &[C1, 1, 3, 3])?,
            conv2: layer("conv2", &[C2, C1, 3, 3])?,
            fc1: layer("fc1", &[FEATURES, flat])?,
            fc2: layer("fc2", &[CLASSES, FEATURES])?,
        })
    }

    /// Features and logits of one 28 × 28 image of u8 pixels.
    pub fn run(&self, pixels: &[u8]) -> Output {
        assert_eq!(pixels.len(), PIXELS, "a digit is {SIDE} × {SIDE} pixels");
        let x: Vec<f32> = pixels.iter().map(|&p| f32::from(p) / 127.5 - 1.0).collect();
        let h1 = conv_relu_pool(&x, 1, SIDE, &self.conv1, C1);
        let h2 = conv_relu_pool(&h1, C1, SIDE / 2, &self.conv2, C2);
        let features: Vec<f32> = dense(&h2, &self.fc1).into_iter().map(|v| v.max(0.0)).collect();
        let logits = dense(&features, &self.fc2);
        Output { features, logits: std::array::from_fn(|i| logits[i]) }
    }

    /// [`Classifier::run`] over many images (`PIXELS` u8 each), spread over the machine's cores.
    pub fn run_all(&self, images: &[u8]) -> Vec<Output> {
        let n = images.len() / PIXELS;
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(n.max(1));
        let per = n.div_ceil(threads.max(1));
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        (t * per..((t + 1) * per).min(n))
                            .map(|i| self.run(&images[i * PIXELS..(i + 1) * PIXELS]))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("classifier thread")).collect()
        })
    }
}
