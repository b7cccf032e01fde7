//! The soak run shared by the GPU suite (a reduced form) and `examples/soak.rs` (the full
//! 1,000 generations): many generations in one process over a fixed cycle of request shapes,
//! with host memory and the device's live buffers sampled after each.

use std::ops::ControlFlow;

use milliwatt::generator::InitImage;
use milliwatt::{Generator, Request, Seeds};

/// What was live after one generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Sample {
    /// Host resident set, bytes (`/proc/self/statm`; 0 where it cannot be read).
    pub rss: u64,
    /// wgpu buffers alive on the device.
    pub buffers: u64,
    /// Bytes of those buffers.
    pub buffer_bytes: u64,
}

/// The largest values of a window of samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Window {
    /// Generations in it, 1-based and inclusive.
    pub first: usize,
    pub last: usize,
    pub rss: u64,
    pub buffers: u64,
    pub buffer_bytes: u64,
}

/// A soak run's figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub generations: usize,
    pub seconds: f64,
    /// The second tenth of the run (101–200 of 1,000): after every shape has been seen.
    pub early: Window,
    /// The last tenth (901–1,000 of 1,000).
    pub late: Window,
}

impl Report {
    /// How much the late window grew over the early one, per measure (late / early − 1).
    pub fn growth(&self) -> [(&'static str, f64); 3] {
        let g = |a: u64, b: u64| if a == 0 { 0.0 } else { b as f64 / a as f64 - 1.0 };
        [
            ("host RSS", g(self.early.rss, self.late.rss)),
            ("wgpu buffers", g(self.early.buffers, self.late.buffers)),
            ("wgpu buffer bytes", g(self.early.buffer_bytes, self.late.buffer_bytes)),
        ]
    }

    /// The measures that grew by more than `tolerance` (0.02: 2 %).
    pub fn grown(&self, tolerance: f64) -> Vec<String> {
        self.growth()
            .into_iter()
            .filter(|&(_, g)| g > tolerance)
            .map(|(what, g)| format!("{what} +{:.2} % ({:?} -> {:?})", 100.0 * g, self.early, self.late))
            .collect()
    }
}

fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// The request of generation `i` (0-based): a fixed cycle of five shapes — image counts, step
/// counts, guided and not, previews, img2img — with seeds that change every time.
pub fn request(i: usize, pixels_per_image: usize) -> Request {
    let seed = Seeds::Base(i as u64);
    let label = (i % 10) as u32;
    match i % 5 {
        0 => Request { seeds: seed, steps: 4, guidance: Some(3.0), ..Request::new(vec![label]) },
        1 => Request { seeds: seed, steps: 2, guidance: Some(2.0), ..Request::new(vec![label, 9 - label, 3]) },
        2 => Request { seeds: seed, steps: 3, guidance: None, ..Request::new(vec![label; 2]) },
        3 => Request { seeds: seed, steps: 2, guidance: Some(3.0), preview: true, ..Request::new(vec![label; 4]) },
        _ => Request {
            seeds: seed,
            steps: 4,
            guidance: Some(3.0),
            init: Some(InitImage { pixels: vec![0.25; pixels_per_image], strength: 0.6 }),
            ..Request::new(vec![label])
        },
    }
}

/// Runs `generations` requests of [`request`]'s cycle on `generator`, calling `progress` after
/// each with its index and sample.
pub fn run(
    generator: &Generator,
    gpu: &milliwatt::Gpu,
    generations: usize,
    mut progress: impl FnMut(usize, &Sample),
) -> milliwatt::Result<Report> {
    let c = generator.config();
    let pixels = (c.in_channels * c.input_size * c.input_size) as usize;
    let started = std::time::Instant::now();
    let mut samples = Vec::with_capacity(generations);
    for i in 0..generations {
        generator.generate_blocking(&request(i, pixels), |_| ControlFlow::Continue(()))?;
        gpu.wait()?;
        let hal = gpu.device().get_internal_counters().hal;
        let s =
            Sample { rss: rss(), buffers: hal.buffers.read() as u64, buffer_bytes: hal.buffer_memory.read() as u64 };
        progress(i, &s);
        samples.push(s);
    }
    let window = |first: usize, last: usize| {
        let w = &samples[first - 1..last];
        Window {
            first,
            last,
            rss: w.iter().map(|s| s.rss).max().unwrap_or(0),
            buffers: w.iter().map(|s| s.buffers).max().unwrap_or(0),
            buffer_bytes: w.iter().map(|s| s.buffer_bytes).max().unwrap_or(0),
        }
    };
    let tenth = (generations / 10).max(1);
    Ok(Report {
        generations,
        seconds: started.elapsed().as_secs_f64(),
        early: window(tenth + 1, (2 * tenth).min(generations)),
        late: window(generations + 1 - tenth, generations),
    })
}
