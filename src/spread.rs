//! One request spread over several adapters: data parallel, one [`Generator`] per adapter, the
//! images split in proportion to each adapter's measured speed. Every image depends only on its
//! own seed and label, so a spread request gives the images one adapter would (within the
//! tolerance between backends).
//!
//! ```no_run
//! use std::ops::ControlFlow;
//! use std::path::Path;
//! use milliwatt::model::DitWeights;
//! use milliwatt::{Generator, GeneratorOptions, Gpu, Options, Request, Spread};
//!
//! # fn main() -> milliwatt::Result<()> {
//! let dir = Path::new("models/mnist-ternary");
//! let mut generators = Vec::new();
//! for adapter in milliwatt::gpu::list_adapters_blocking(&Options::default()) {
//!     let gpu = Gpu::new_blocking(&adapter.options())?;
//!     generators.push(Generator::new(&gpu, DitWeights::open(dir, None)?, GeneratorOptions::default())?);
//! }
//! let spread = Spread::new(generators)?;
//! let out = spread.generate_blocking(&Request { steps: 8, ..Request::new((0..10).collect()) }, |_| {
//!     ControlFlow::Continue(())
//! })?;
//! println!("{:?}", spread.shares(10));
//! # Ok(()) }
//! ```

use std::ops::ControlFlow;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::generator::{Generation, Generator, InitImage, Progress, Request, Seeds, Timings};
use crate::graph::MemoryReport;

/// Several generators of one model, one per adapter, that share each request's images.
#[derive(Debug)]
pub struct Spread {
    generators: Vec<Generator>,
    /// Measured seconds per image-step of each generator (`None` until it has run).
    speed: Mutex<Vec<Option<f64>>>,
}

impl Spread {
    /// A spread over `generators` (of the same model: same configuration).
    pub fn new(generators: Vec<Generator>) -> Result<Self> {
        let Some(first) = generators.first() else {
            return Err(Error::Request { message: "a spread needs at least one generator".into() });
        };
        if let Some(i) = generators.iter().position(|g| g.config() != first.config()) {
            return Err(Error::Request {
                message: format!("generator {i} runs another model than generator 0: a spread needs one model"),
            });
        }
        let n = generators.len();
        Ok(Self { generators, speed: Mutex::new(vec![None; n]) })
    }

    /// The generators, in the order their images come back.
    pub fn generators(&self) -> &[Generator] {
        &self.generators
    }

    /// How `images` images would be shared now: images per generator, in proportion to each
    /// one's measured speed (evenly before any has run; an adapter not yet measured gets the
    /// mean share).
    pub fn shares(&self, images: usize) -> Vec<usize> {
        let speed = self.speed.lock().expect("speeds");
        let measured: Vec<f64> = speed.iter().flatten().map(|s| 1.0 / s.max(1e-12)).collect();
        let mean = if measured.is_empty() { 1.0 } else { measured.iter().sum::<f64>() / measured.len() as f64 };
        let rates: Vec<f64> = speed.iter().map(|s| s.map_or(mean, |s| 1.0 / s.max(1e-12))).collect();
        split(images, &rates)
    }

    /// Runs `request` with its images shared among the generators, each part on its own thread;
    /// `progress` sees a step once every part has finished it (and may cancel all of them). The
    /// result holds the images in request order, the ledgers of all parts added up, the slowest
    /// part's times and the memory of all executors.
    pub fn generate_blocking(
        &self,
        request: &Request,
        mut progress: impl FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<Generation> {
        let start = Instant::now();
        let n = request.labels.len();
        let seeds: Vec<u64> = match &request.seeds {
            Seeds::Base(b) => (0..n as u64).map(|i| b.wrapping_add(i)).collect(),
            Seeds::List(s) if s.len() == n => s.clone(),
            Seeds::List(s) => {
                return Err(Error::Request { message: format!("{} seeds for {n} images", s.len()) });
            }
        };
        let c = self.generators[0].config();
        let per = (c.in_channels * c.input_size * c.input_size) as usize;
        let shares = self.shares(n);
        let mut parts = Vec::new();
        let mut at = 0;
        for (g, &count) in self.generators.iter().zip(&shares) {
            if count > 0 {
                let range = at..at + count;
                let slice = |v: &Vec<f32>| v.get(range.start * per..range.end * per).map(<[f32]>::to_vec);
                let part = Request {
                    labels: request.labels[range.clone()].to_vec(),
                    seeds: Seeds::List(seeds[range.clone()].to_vec()),
                    noise: request.noise.as_ref().map(|v| slice(v).unwrap_or_default()),
                    init: request
                        .init
                        .as_ref()
                        .map(|i| InitImage { pixels: slice(&i.pixels).unwrap_or_default(), strength: i.strength }),
                    ..request.clone()
                };
                parts.push((g, part));
            }
            at += count;
        }
        if parts.is_empty() {
            return Err(Error::Request { message: "a request needs labels".into() });
        }
        let cancel = AtomicBool::new(false);
        let (tx, rx) = mpsc::channel::<(usize, u32)>();
        let results: Vec<Result<Generation>> = std::thread::scope(|scope| {
            let handles: Vec<_> = parts
                .iter()
                .enumerate()
                .map(|(i, (g, part))| {
                    let (tx, cancel) = (tx.clone(), &cancel);
                    scope.spawn(move || {
                        g.generate_blocking(part, |p| {
                            let _ = tx.send((i, p.step + 1));
                            if cancel.load(Ordering::Relaxed) {
                                ControlFlow::Break(())
                            } else {
                                ControlFlow::Continue(())
                            }
                        })
                    })
                })
                .collect();
            drop(tx);
            // Report a step when the slowest part has done it.
            let mut done = vec![0u32; parts.len()];
            let mut reported = 0;
            for (i, steps) in rx {
                done[i] = steps;
                let all = done.iter().copied().min().unwrap_or(0);
                if all > reported {
                    reported = all;
                    let p = Progress { step: all - 1, steps: request.steps, preview: None, elapsed: start.elapsed() };
                    if progress(&p).is_break() {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
            }
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(Error::Request { message: "a spread part panicked".into() })))
                .collect()
        });
        let mut outs = Vec::new();
        for r in results {
            outs.push(r?);
        }
        // Measured speed per generator, for the next split.
        {
            let mut speed = self.speed.lock().expect("speeds");
            let mut k = 0;
            for (i, &count) in shares.iter().enumerate() {
                if count > 0 {
                    let o = &outs[k];
                    speed[i] = Some(o.timings.sampling.as_secs_f64() / (count as f64 * f64::from(request.steps)));
                    k += 1;
                }
            }
        }
        self.merge(outs, start, n, request.steps)
    }

    fn merge(&self, outs: Vec<Generation>, start: Instant, images: usize, steps: u32) -> Result<Generation> {
        let first = &outs[0];
        let shape = [images as u32, first.shape[1], first.shape[2], first.shape[3]];
        let mut ledger = first.ledger.clone();
        for o in &outs[1..] {
            ledger.absorb(&o.ledger);
        }
        let baseline = self.generators[0].baseline_ledger(images as u32)?;
        let max =
            |f: &dyn Fn(&Timings) -> std::time::Duration| outs.iter().map(|o| f(&o.timings)).max().unwrap_or_default();
        let sampling = max(&|t| t.sampling);
        let memory = outs.iter().fold(MemoryReport::default(), |m, o| MemoryReport {
            buffers: m.buffers + o.memory.buffers,
            bytes: m.bytes + o.memory.bytes,
            activation_bytes: m.activation_bytes + o.memory.activation_bytes,
            activation_bytes_unpooled: m.activation_bytes_unpooled + o.memory.activation_bytes_unpooled,
        });
        let energy_ratio = ledger.ratio_to(&baseline);
        Ok(Generation {
            samples: outs.iter().flat_map(|o| o.samples.iter().copied()).collect(),
            shape,
            images: outs.iter().flat_map(|o| o.images.iter().cloned()).collect(),
            timings: Timings {
                prepare: max(&|t| t.prepare),
                sampling,
                per_step: sampling / steps.max(1),
                total: start.elapsed(),
            },
            profile: None,
            ledger,
            baseline,
            energy_ratio,
            memory,
        })
    }
}

/// `n` split in proportion to `rates` (largest remainders).
fn split(n: usize, rates: &[f64]) -> Vec<usize> {
    let total: f64 = rates.iter().sum();
    if rates.is_empty() || total <= 0.0 {
        return rates.iter().map(|_| 0).collect();
    }
    let exact: Vec<f64> = rates.iter().map(|r| n as f64 * r / total).collect();
    let mut parts: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut left = n - parts.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..rates.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    for i in order.into_iter().cycle() {
        if left == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn split_follows_the_rates_and_keeps_every_image() {
        assert_eq!(split(10, &[1.0, 1.0]), vec![5, 5]);
        assert_eq!(split(10, &[3.0, 1.0]), vec![8, 2]);
        assert_eq!(split(7, &[1.0, 1.0, 1.0]).iter().sum::<usize>(), 7);
        assert_eq!(split(1, &[1.0, 4.0]), vec![0, 1]);
        assert_eq!(split(0, &[1.0, 1.0]), vec![0, 0]);
    }
}
