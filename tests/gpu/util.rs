//! Test data and comparisons.

use milliwatt::Gpu;
use milliwatt::cpu::Element;
use milliwatt::kernels::Elem;

use crate::Failure;

/// A crate error as a case's failure message (the one helper every case uses).
pub fn err(e: milliwatt::Error) -> String {
    e.to_string()
}

/// SplitMix64: deterministic test data without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec<E: Element>(&mut self, n: usize) -> Vec<E> {
        (0..n).map(|_| E::from_f32(self.f32())).collect()
    }
}

/// Compares GPU output with the twin element by element: |gpu - twin| <= abs + rel * |scale_i|,
/// where `scale_i` bounds the magnitude of the terms summed for element i. Reports the worst.
pub fn compare<E: Element>(what: &str, gpu: &[E], twin: &[E], scale: &[f32], rel: f32, abs: f32) -> Result<(), String> {
    if gpu.len() < twin.len() {
        return Err(format!("{what}: gpu output has {} elements, twin {}", gpu.len(), twin.len()));
    }
    let mut worst: Option<(usize, f32, f32)> = None;
    let mut bad = 0usize;
    for i in 0..twin.len() {
        let (g, t) = (gpu[i].to_f32(), twin[i].to_f32());
        let tol = abs + rel * scale[i];
        if !approx::abs_diff_eq!(g, t, epsilon = tol) || !g.is_finite() {
            bad += 1;
            if worst.is_none_or(|(_, wg, wt)| (g - t).abs() > (wg - wt).abs()) {
                worst = Some((i, g, t));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, g, t)) => Err(format!(
            "{what}: {bad} of {} elements differ; worst at {i}: gpu {g} vs twin {t} (tolerance {})",
            twin.len(),
            abs + rel * scale[i]
        )),
    }
}

/// Failure when `E` is f16 and the adapter has no `SHADER_F16`.
pub fn need_f16<E: Element>(gpu: &Gpu) -> Result<(), Failure> {
    if E::ELEM == Elem::F16 && !gpu.capabilities().f16 {
        return Err(Failure::Unsupported("no SHADER_F16 on this adapter".into()));
    }
    Ok(())
}

/// Tolerance relative to the sum of |terms|: f32 sums may differ in order and fusing; f16 storage
/// adds one rounding of the output (2^-11 relative).
pub fn rel_tol(elem: Elem) -> f32 {
    match elem {
        Elem::F32 => 1e-5,
        Elem::F16 => 1e-3,
    }
}

/// An `Rgba8Unorm` texture of `width` x `height` with `usage` (and `COPY_SRC`, to read it back).
pub fn rgba_texture(
    gpu: &Gpu,
    width: u32,
    height: u32,
    usage: milliwatt::wgpu::TextureUsages,
) -> milliwatt::wgpu::Texture {
    use milliwatt::wgpu;
    gpu.device().create_texture(&wgpu::TextureDescriptor {
        label: Some("test.rgba"),
        size: wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: usage | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    })
}

/// The texels of an `Rgba8Unorm` texture, rows packed (width x height x 4 bytes).
pub fn read_texture(gpu: &Gpu, texture: &milliwatt::wgpu::Texture) -> Result<Vec<u8>, String> {
    use milliwatt::wgpu;
    let (w, h) = (texture.width(), texture.height());
    let pitch = (w * 4).next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
    let buffer = gpu
        .buffer("test.texels", u64::from(pitch * h), wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC)
        .map_err(err)?;
    let mut enc = gpu.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    enc.copy_texture_to_buffer(
        texture.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &buffer,
            layout: wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(pitch), rows_per_image: None },
        },
        wgpu::Extent3d { width: w, height: h, depth_or_array_layers: 1 },
    );
    gpu.queue().submit([enc.finish()]);
    let bytes: Vec<u8> = gpu.read(&buffer).map_err(err)?;
    Ok(bytes.chunks(pitch as usize).flat_map(|row| row[..w as usize * 4].to_vec()).collect())
}

/// NATTEN's neighbourhood on a `gh` x `gw` token grid: whether query `q` sees key `key` (the
/// `window` x `window` window around the query, shifted inward at the borders).
pub fn window_mask(gh: u32, gw: u32, window: u32) -> impl Fn(usize, usize) -> bool {
    move |q: usize, key: usize| {
        let (q, key) = (q as u32, key as u32);
        let start = milliwatt::kernels::attention::window_start;
        let (r0, c0) = (start(q / gw, gh, window), start(q % gw, gw, window));
        (r0..r0 + window).contains(&(key / gw)) && (c0..c0 + window).contains(&(key % gw))
    }
}
