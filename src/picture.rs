//! Pictures for people: generated images tiled into an enlarged grid, and PNGs that carry the
//! parameters that made them in text chunks (as stable-diffusion front ends write them), so a
//! picture can be traced back to its command.

use std::path::Path;

use image::{DynamicImage, GrayImage, Luma};

use crate::error::{Error, Result};

/// Tiles `images` (all the same size) into `columns` columns, each pixel enlarged to
/// `scale` × `scale` (nearest neighbour: a 28-pixel digit stays crisp), with `gap` pixels of
/// mid-grey between tiles. Colour images are converted to grey.
pub fn grid(images: &[DynamicImage], columns: usize, scale: u32, gap: u32) -> Result<GrayImage> {
    let first = images.first().ok_or_else(|| Error::Request { message: "a grid of no images".into() })?;
    let (w, h) = (first.width(), first.height());
    if images.iter().any(|i| i.width() != w || i.height() != h) || columns == 0 || scale == 0 {
        return Err(Error::Request { message: "grid: images of one size, columns and scale above 0".into() });
    }
    let cols = columns.min(images.len()) as u32;
    let rows = images.len().div_ceil(columns) as u32;
    let (tw, th) = (w * scale + gap, h * scale + gap);
    let mut out = GrayImage::from_pixel(cols * tw - gap, rows * th - gap, Luma([96]));
    for (i, img) in images.iter().enumerate() {
        let g = img.to_luma8();
        let (x0, y0) = ((i as u32 % cols) * tw, (i as u32 / cols) * th);
        for (x, y, p) in g.enumerate_pixels() {
            for dy in 0..scale {
                for dx in 0..scale {
                    out.put_pixel(x0 + x * scale + dx, y0 + y * scale + dy, *p);
                }
            }
        }
    }
    Ok(out)
}

/// Writes `image` as an 8-bit PNG with one `tEXt` chunk per `(keyword, text)` (keywords of 1 to
/// 79 Latin-1 characters). Errors: [`Error::Io`] when the file cannot be written,
/// [`Error::Request`] for a bad keyword.
pub fn save_png(path: &Path, image: &DynamicImage, text: &[(&str, String)]) -> Result<()> {
    let io = |source: std::io::Error| Error::Io { path: path.into(), source };
    let file = std::fs::File::create(path).map_err(io)?;
    let (color, data) = match image {
        DynamicImage::ImageLuma8(g) => (png::ColorType::Grayscale, g.as_raw().clone()),
        other => (png::ColorType::Rgba, other.to_rgba8().into_raw()),
    };
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), image.width(), image.height());
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    let encoding = |e: png::EncodingError| match e {
        png::EncodingError::IoError(source) => io(source),
        other => Error::Request { message: format!("{}: {other}", path.display()) },
    };
    for (keyword, value) in text {
        encoder.add_text_chunk((*keyword).to_string(), value.clone()).map_err(encoding)?;
    }
    let mut writer = encoder.write_header().map_err(encoding)?;
    writer.write_image_data(&data).map_err(encoding)?;
    writer.finish().map_err(encoding)
}

/// The `tEXt` chunks of a PNG file, in file order.
pub fn png_text(path: &Path) -> Result<Vec<(String, String)>> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io { path: path.into(), source })?;
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .map_err(|e| Error::Data { path: path.into(), message: e.to_string() })?;
    Ok(reader.info().uncompressed_latin1_text.iter().map(|t| (t.keyword.clone(), t.text.clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_enlarges_and_text_round_trips() {
        let a = DynamicImage::ImageLuma8(GrayImage::from_fn(2, 2, |x, y| Luma([(10 * (x + 2 * y)) as u8])));
        let g = grid(&[a.clone(), a.clone(), a], 2, 3, 1).unwrap();
        assert_eq!(g.dimensions(), (2 * 6 + 1, 2 * 6 + 1));
        assert_eq!(g.get_pixel(3, 0).0, [10]); // pixel (1, 0) of the first tile, enlarged
        assert_eq!(g.get_pixel(6, 0).0, [96]); // the gap
        assert_eq!(g.get_pixel(12, 12).0, [96]); // the empty fourth cell
        let path = std::env::temp_dir().join(format!("milliwatt-grid-{}.png", std::process::id()));
        save_png(&path, &DynamicImage::ImageLuma8(g.clone()), &[("steps", "8".into()), ("seed", "3".into())]).unwrap();
        assert_eq!(image::open(&path).unwrap().to_luma8(), g);
        assert_eq!(png_text(&path).unwrap(), vec![("steps".into(), "8".into()), ("seed".into(), "3".into())]);
        std::fs::remove_file(&path).unwrap();
    }
}
