//! End to end: digits drawn with the shipped models through the public `Generator`, as an app
//! would: images per second, time per step, the executor's memory, and the ledger's joules per
//! image under every pricing it has (laptop L2, data-centre L2, no cache), with the conventional
//! model's beside them; NVML's measured joules on NVIDIA boards (feature `nvml`).

use std::ops::ControlFlow;
use std::path::Path;

use milliwatt::ledger::Cache;
use milliwatt::model::DitWeights;
use milliwatt::{Generator, GeneratorOptions, Gpu, Request, Result, Seeds};

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");

/// One model, as the benchmark runs it.
struct Case {
    name: &'static str,
    dir: &'static str,
    steps: u32,
    /// Part of the quick form.
    quick: bool,
}

const CASES: &[Case] = &[
    Case { name: "student-2", dir: "mnist-student", steps: 2, quick: true },
    Case { name: "ternary-8", dir: "mnist-ternary", steps: 8, quick: true },
    Case { name: "ternary24-8", dir: "mnist-ternary24", steps: 8, quick: false },
    Case { name: "conventional-rf-50", dir: "mnist-fp32-rf", steps: 50, quick: false },
];

/// Joules per image by the ledger.
#[derive(serde::Serialize, Debug)]
pub struct Joules {
    /// Re-reads priced from a 4 MiB L2 when a launch's buffers fit it.
    pub laptop_l2: f64,
    /// Re-reads priced from a 50 MiB L2 when they fit it.
    pub datacentre_l2: f64,
    /// Every counted load from DRAM (the upper bound).
    pub no_cache: f64,
}

/// One end-to-end row.
#[derive(serde::Serialize, Debug)]
pub struct Row {
    /// Model and steps, e.g. `ternary-8`.
    pub model: String,
    /// The model's quantization policy.
    pub quantization: String,
    /// Images per request (ten of each digit over the request).
    pub images: u32,
    /// Sampler steps.
    pub steps: u32,
    /// Guidance scale.
    pub guidance: f32,
    /// Images per second of the timed request (after a warm-up request of the same shape).
    pub images_per_s: f64,
    /// Milliseconds per sampler step.
    pub step_ms: f64,
    /// Bytes of the buffers the request's executor holds (weights and activations).
    pub peak_memory_bytes: u64,
    /// Ledger joules per image.
    pub ledger_j_per_image: Joules,
    /// The conventional recipe's (same size, fp32, 50 steps, guided, one image a request) ledger
    /// joules per image.
    pub conventional_j_per_image: Joules,
    /// `ledger_j_per_image.laptop_l2 / conventional_j_per_image.laptop_l2`.
    pub ratio_to_conventional: f64,
    /// Measured board joules per image (NVML), where available: the counter read around
    /// repeated requests of at least two seconds, divided by the images drawn.
    pub nvml_j_per_image: Option<f64>,
    /// The board's idle power (NVML, one second before the measured requests), watts.
    pub nvml_idle_w: Option<f64>,
    /// `nvml_j_per_image` less the idle power over the same time: what drawing the image added.
    pub nvml_above_idle_j_per_image: Option<f64>,
}

/// Runs the shipped models on `gpu` (`quick`: the student and the ternary model, 10 images;
/// else every case, 100 images).
pub fn run(gpu: &Gpu, quick: bool) -> Result<Vec<Row>> {
    let images = if quick { 10 } else { 100 };
    let mut rows = Vec::new();
    println!(
        "\n{:<20} {:>6} {:>5} {:>9} {:>9} {:>10} {:>13} {:>13} {:>13} {:>9}",
        "model",
        "images",
        "steps",
        "images/s",
        "ms/step",
        "memory MB",
        "J/img laptop",
        "J/img dc",
        "J/img nocache",
        "vs conv."
    );
    for case in CASES.iter().filter(|c| c.quick || !quick) {
        let dir = Path::new(MODELS).join(case.dir);
        if !dir.join("config.json").is_file() {
            println!("{:<20} not shipped ({} has no config.json)", case.name, dir.display());
            continue;
        }
        let weights = DitWeights::open(&dir, None)?;
        let quantization = serde_json::to_string(&weights.config.quantization).unwrap_or_default();
        let generator = Generator::new(gpu, weights, GeneratorOptions::default())?;
        let request =
            Request { seeds: Seeds::Base(0), steps: case.steps, guidance: Some(3.0), ..Request::new(labels(images)) };
        generator.generate_blocking(&request, |_| ControlFlow::Continue(()))?;
        let (out, measured) = measure(gpu, || generator.generate_blocking(&request, |_| ControlFlow::Continue(())))?;
        let per_image = |j: f64| j / f64::from(images);
        let per = |l: &milliwatt::Ledger| Joules {
            laptop_l2: l.energy_with(Cache::LAPTOP).total() / f64::from(images),
            datacentre_l2: l.energy_with(Cache::DATA_CENTRE).total() / f64::from(images),
            no_cache: l.energy_no_cache().total() / f64::from(images),
        };
        let wall = out.timings.sampling.as_secs_f64();
        let row = Row {
            model: case.name.into(),
            quantization,
            images,
            steps: case.steps,
            guidance: 3.0,
            images_per_s: f64::from(images) / out.timings.total.as_secs_f64(),
            step_ms: 1e3 * wall / f64::from(case.steps),
            peak_memory_bytes: out.memory.bytes,
            ledger_j_per_image: per(&out.ledger),
            conventional_j_per_image: per(&out.baseline),
            ratio_to_conventional: out.energy_ratio,
            nvml_j_per_image: measured.as_ref().map(|m| per_image(m.joules_per_run)),
            nvml_idle_w: measured.as_ref().map(|m| m.idle_watts),
            nvml_above_idle_j_per_image: measured
                .as_ref()
                .map(|m| per_image(m.joules_per_run - m.idle_watts * m.seconds_per_run)),
        };
        println!(
            "{:<20} {:>6} {:>5} {:>9.2} {:>9.1} {:>10.1} {:>13.3e} {:>13.3e} {:>13.3e} {:>9.4}{}",
            row.model,
            row.images,
            row.steps,
            row.images_per_s,
            row.step_ms,
            row.peak_memory_bytes as f64 / 1e6,
            row.ledger_j_per_image.laptop_l2,
            row.ledger_j_per_image.datacentre_l2,
            row.ledger_j_per_image.no_cache,
            row.ratio_to_conventional,
            match (row.nvml_j_per_image, row.nvml_above_idle_j_per_image) {
                (Some(j), Some(above)) => format!("  NVML {j:.3e} J/img ({above:.3e} above idle)"),
                _ => String::new(),
            }
        );
        rows.push(row);
    }
    Ok(rows)
}

/// Ten of each digit, in order, `images` in all.
fn labels(images: u32) -> Vec<u32> {
    (0..images).map(|i| i * 10 / images.max(1)).collect()
}

/// The board's energy counter read around repeated runs.
#[cfg_attr(not(feature = "nvml"), allow(dead_code))]
struct Measured {
    /// Board joules per run.
    joules_per_run: f64,
    /// Wall seconds per run.
    seconds_per_run: f64,
    /// The board's power before the runs, watts.
    idle_watts: f64,
}

/// Runs `f`; where the feature and an NVIDIA board are there, runs it again and again for at least
/// two seconds with the board's energy counter read around the runs (the counter counts
/// millijoules and a request can take a millisecond), after reading the idle power for a second.
fn measure<T>(gpu: &Gpu, mut f: impl FnMut() -> Result<T>) -> Result<(T, Option<Measured>)> {
    #[cfg(feature = "nvml")]
    if gpu.adapter_info().vendor == 0x10de {
        use std::time::{Duration, Instant};
        let counter = match milliwatt::nvml::EnergyCounter::open(0) {
            Ok(c) => c,
            Err(e) => {
                // Said, not hidden: the row's NVML fields stay null.
                println!("  (no NVML measurement: {e})");
                return Ok((f()?, None));
            }
        };
        let idle_start = (Instant::now(), counter.read_joules()?);
        std::thread::sleep(Duration::from_secs(1));
        let idle_watts = (counter.read_joules()? - idle_start.1) / idle_start.0.elapsed().as_secs_f64();
        let (start, before) = (Instant::now(), counter.read_joules()?);
        let mut runs = 0u32;
        let out = loop {
            let out = f()?;
            runs += 1;
            if start.elapsed() >= Duration::from_secs(2) {
                break out;
            }
        };
        let seconds = start.elapsed().as_secs_f64();
        let joules = counter.read_joules()? - before;
        let n = f64::from(runs);
        return Ok((out, Some(Measured { joules_per_run: joules / n, seconds_per_run: seconds / n, idle_watts })));
    }
    let _ = gpu;
    Ok((f()?, None))
}
