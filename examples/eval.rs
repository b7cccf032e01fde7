//! The quality table: class accuracy and Fréchet distance of generated digits, time and ledger
//! energy per image, for the shipped models against the conventional one.
//!
//! ```sh
//! cargo run --release --example eval                       # every row (hours on lavapipe)
//! cargo run --release --example eval -- --rows ternary-8   # some rows
//! cargo run --release --example eval -- --list             # the rows and what is cached
//! ```
//!
//! Each row draws 100 digits of each class (seeds 0 to 99, the same for every row) with one
//! model, sampler setting and guidance, reads them with the classifier (CPU, `milliwatt::eval`),
//! and compares the classifier features with those of the 1,000 held-out digits. A class of a
//! row is one request, kept as it finishes in `results/eval/<row>-n100/class-<k>.png` (the 100
//! digits, lossless) and `class-<k>.json` (time, adapter), so the table is built in parts across
//! runs and machines: a run picks up what earlier runs left and the classifier reads the stored
//! digits again. A row's energy is its graph's ledger at the table's batch (what a run records,
//! counted without running), so it is always priced by today's ledger, with a laptop L2, a
//! data-centre L2 and no cache. The table is printed as Markdown and written with every raw figure to
//! `results/quality.json`. Quick looks with fewer digits per class are kept under `target/eval`.

use std::path::{Path, PathBuf};

mod common;

use clap::Parser;
use milliwatt::eval::digits::{self, CLASSES, PIXELS, SIDE};
use milliwatt::eval::{Classifier, Gaussian, frechet_distance};
use milliwatt::model::{DitConfig, DitWeights, FloatFormat, LinearFormat};
use milliwatt::{Cache, Generator, GeneratorOptions, Gpu, Options, Request, Seeds};
use serde::{Deserialize, Serialize};

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
/// Guidance of every guided row but the sweep's.
const CFG: f32 = 3.0;

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
struct Row {
    id: &'static str,
    what: &'static str,
    model: &'static str,
    quant: Option<LinearFormat>,
    steps: u32,
    cfg: Option<f32>,
    /// The float format of the layers that stay float and of the activations (`other`): the
    /// model's own unless a row asks for f16.
    floats: Option<FloatFormat>,
    /// Attention with int8 products (`GeneratorOptions::int8_attention`).
    int8_attention: bool,
    /// Attention's output as int8 into the projection (`GeneratorOptions::int8_attention_output`).
    int8_attention_output: bool,
    /// Q, K, V as int8 from the qkv GEMM (`GeneratorOptions::int8_qkv`).
    int8_qkv: bool,
    /// 2:4 GEMMs skipping their zero half (`GeneratorOptions::skip_zeros`: the same digits, another
    /// ledger and time).
    skip_zeros: bool,
}

const fn row(
    id: &'static str,
    what: &'static str,
    model: &'static str,
    quant: Option<LinearFormat>,
    steps: u32,
    cfg: Option<f32>,
) -> Row {
    Row {
        id,
        what,
        model,
        quant,
        steps,
        cfg,
        floats: None,
        int8_attention: false,
        int8_attention_output: false,
        int8_qkv: false,
        skip_zeros: false,
    }
}

/// Row `r` with its float layers and activations in f16, as `id`.
const fn in_f16(id: &'static str, r: Row) -> Row {
    Row { id, floats: Some(FloatFormat::F16), ..r }
}

/// Row `r` with int8 attention, as `id`.
const fn int8_attention(id: &'static str, r: Row) -> Row {
    Row { id, int8_attention: true, ..r }
}

/// Row `r` with int8 attention writing int8 output into the projection, as `id`.
const fn int8_attention_output(id: &'static str, r: Row) -> Row {
    Row { id, int8_attention: true, int8_attention_output: true, ..r }
}

/// Row `r` with attention's input, arithmetic and output all int8, as `id`.
const fn int8_qkv(id: &'static str, r: Row) -> Row {
    Row { id, int8_attention: true, int8_attention_output: true, int8_qkv: true, ..r }
}

/// Row `r` with 2:4 zero skipping, as `id`.
const fn skip_zeros(id: &'static str, r: Row) -> Row {
    Row { id, skip_zeros: true, ..r }
}

/// The rows, the conventional reference first.
const ROWS: &[Row] = &[
    row("conventional", "conventional fp32 ε model, DDIM", "mnist-fp32", None, 50, Some(CFG)),
    row("conventional-rf", "conventional fp32 rectified-flow model, Euler", "mnist-fp32-rf", None, 50, Some(CFG)),
    row("ternary-4", "milliwatt ternary (W1.58A8)", "mnist-ternary", None, 4, Some(CFG)),
    row("ternary-8", "milliwatt ternary (W1.58A8)", "mnist-ternary", None, 8, Some(CFG)),
    row("ternary-16", "milliwatt ternary (W1.58A8)", "mnist-ternary", None, 16, Some(CFG)),
    row("ternary-8-unguided", "milliwatt ternary (W1.58A8)", "mnist-ternary", None, 8, None),
    row("ternary24-4", "milliwatt ternary 2:4", "mnist-ternary24", None, 4, Some(CFG)),
    row("ternary24-8", "milliwatt ternary 2:4", "mnist-ternary24", None, 8, Some(CFG)),
    row("ternary24-16", "milliwatt ternary 2:4", "mnist-ternary24", None, 16, Some(CFG)),
    row("ternary24-8-unguided", "milliwatt ternary 2:4", "mnist-ternary24", None, 8, None),
    row("ternary-1", "teacher with fewer steps (contrast)", "mnist-ternary", None, 1, Some(CFG)),
    row("ternary-2", "teacher with fewer steps (contrast)", "mnist-ternary", None, 2, Some(CFG)),
    row("student-1", "distilled student, guidance embedded (W1.58A8)", "mnist-student", None, 1, Some(CFG)),
    row("student-2", "distilled student, guidance embedded (W1.58A8)", "mnist-student", None, 2, Some(CFG)),
    row("student-4", "distilled student, guidance embedded (W1.58A8)", "mnist-student", None, 4, Some(CFG)),
    row("student24-1", "distilled student 2:4", "mnist-student24", None, 1, Some(CFG)),
    row("student24-2", "distilled student 2:4", "mnist-student24", None, 2, Some(CFG)),
    row("student24-4", "distilled student 2:4", "mnist-student24", None, 4, Some(CFG)),
    in_f16(
        "student-1-f16",
        row("", "distilled student, f16 floats and activations", "mnist-student", None, 1, Some(CFG)),
    ),
    in_f16(
        "student-2-f16",
        row("", "distilled student, f16 floats and activations", "mnist-student", None, 2, Some(CFG)),
    ),
    in_f16(
        "student24-1-f16",
        row("", "distilled student 2:4, f16 floats and activations", "mnist-student24", None, 1, Some(CFG)),
    ),
    int8_attention(
        "student-1-f16-i8a",
        in_f16("", row("", "distilled student, f16, int8 attention", "mnist-student", None, 1, Some(CFG))),
    ),
    int8_attention(
        "student-2-f16-i8a",
        in_f16("", row("", "distilled student, f16, int8 attention", "mnist-student", None, 2, Some(CFG))),
    ),
    int8_attention("ternary-8-i8a", row("", "milliwatt ternary, int8 attention", "mnist-ternary", None, 8, Some(CFG))),
    int8_attention_output(
        "student-1-f16-i8ao",
        in_f16("", row("", "distilled student, f16, int8 attention and output", "mnist-student", None, 1, Some(CFG))),
    ),
    int8_qkv(
        "student-1-f16-i8all",
        in_f16(
            "",
            row("", "distilled student, f16, int8 Q, K, V, attention and output", "mnist-student", None, 1, Some(CFG)),
        ),
    ),
    int8_qkv(
        "student-2-f16-i8all",
        in_f16(
            "",
            row("", "distilled student, f16, int8 Q, K, V, attention and output", "mnist-student", None, 2, Some(CFG)),
        ),
    ),
    int8_attention_output(
        "student-2-f16-i8ao",
        in_f16("", row("", "distilled student, f16, int8 attention and output", "mnist-student", None, 2, Some(CFG))),
    ),
    skip_zeros(
        "student24-1-f16-skip",
        in_f16("", row("", "distilled student 2:4, f16, zero-skipping GEMMs", "mnist-student24", None, 1, Some(CFG))),
    ),
    in_f16(
        "ternary-8-f16",
        row("", "milliwatt ternary, f16 floats and activations", "mnist-ternary", None, 8, Some(CFG)),
    ),
    row("ternary-8-cfg1.5", "guidance sweep", "mnist-ternary", None, 8, Some(1.5)),
    row("ternary-8-cfg5", "guidance sweep", "mnist-ternary", None, 8, Some(5.0)),
    row(
        "fp32-as-int8",
        "conventional, int8 on load (no retraining)",
        "mnist-fp32",
        Some(LinearFormat::Int8),
        50,
        Some(CFG),
    ),
    row(
        "fp32-as-int4",
        "conventional, int4-g64 on load (no retraining)",
        "mnist-fp32",
        Some(LinearFormat::Int4 { group: 64 }),
        50,
        Some(CFG),
    ),
    row(
        "fp32-as-ternary",
        "conventional, ternary on load (no retraining)",
        "mnist-fp32",
        Some(LinearFormat::Ternary),
        50,
        Some(CFG),
    ),
    row(
        "fp32rf-as-int8",
        "conventional rectified flow, int8 on load (no retraining)",
        "mnist-fp32-rf",
        Some(LinearFormat::Int8),
        50,
        Some(CFG),
    ),
    row(
        "fp32rf-as-ternary",
        "conventional rectified flow, ternary on load (no retraining)",
        "mnist-fp32-rf",
        Some(LinearFormat::Ternary),
        50,
        Some(CFG),
    ),
    row("conventional-rf-8", "conventional rectified flow at 8 steps (contrast)", "mnist-fp32-rf", None, 8, Some(CFG)),
    row(
        "fp32rf-as-int8-8",
        "conventional rectified flow, int8 on load, 8 steps",
        "mnist-fp32-rf",
        Some(LinearFormat::Int8),
        8,
        Some(CFG),
    ),
    row(
        "fp32rf-as-int4-8",
        "conventional rectified flow, int4-g64 on load, 8 steps",
        "mnist-fp32-rf",
        Some(LinearFormat::Int4 { group: 64 }),
        8,
        Some(CFG),
    ),
    row(
        "fp32rf-as-ternary-8",
        "conventional rectified flow, ternary on load, 8 steps",
        "mnist-fp32-rf",
        Some(LinearFormat::Ternary),
        8,
        Some(CFG),
    ),
    row(
        "ternary-as-2:4",
        "ternary latent weights, 2:4 on load (no fine-tuning)",
        "mnist-ternary-latent",
        Some(LinearFormat::Ternary24),
        8,
        Some(CFG),
    ),
];

#[derive(Parser, Debug)]
#[command(about = "Score the shipped digit models: class accuracy, Fréchet distance, time and energy per image")]
struct Args {
    /// Rows to compute (ids, comma-separated; default all). Cached classes are not recomputed.
    #[arg(long, value_delimiter = ',')]
    rows: Vec<String>,
    /// Images per class (the table uses 100; fewer for a quick look, cached apart).
    #[arg(long, default_value_t = 100)]
    per_class: u32,
    /// List the rows and their cached classes, then stop.
    #[arg(long)]
    list: bool,
    /// Where finished classes are kept (default `results/eval` for the table's 100 per class,
    /// `target/eval` for quick looks).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Where the table's JSON goes (default results/quality.json for the full table,
    /// target/eval/quality-n<per-class>.json for a quick look).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run the MLP branch as its chain of kernels instead of the fused kernel (an A/B of
    /// `GeneratorOptions::fused_mlp`: keep its classes apart with --cache and --out).
    #[arg(long)]
    mlp_chain: bool,
}

/// What one class of one row produced, beside its digits (`class-<k>.png`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ClassRecord {
    class: u32,
    images: usize,
    /// Sampling time of the request (prepare excluded), seconds.
    sampling_seconds: f64,
    adapter: String,
}

/// A row's ledger per image at one request size, under the three pricings, and how many times
/// less it is than the conventional recipe's (one image a request, the same pricing).
#[derive(Clone, Copy, Debug, Serialize)]
struct Priced {
    images_per_request: u32,
    /// Joules per image with a laptop GPU's L2 (4 MiB), the estimate.
    laptop_l2: f64,
    /// With a data-centre GPU's L2 (50 MiB).
    data_centre_l2: f64,
    /// With no cache (every counted load from DRAM), the upper bound.
    no_cache: f64,
    /// The conventional recipe's joules per image over this row's, per pricing (laptop L2,
    /// data-centre L2, no cache).
    times_less: [f64; 3],
}

impl Priced {
    /// The smallest of the three reductions: the claim every pricing supports.
    fn least_times_less(&self) -> f64 {
        self.times_less.into_iter().fold(f64::INFINITY, f64::min)
    }
}

#[derive(Debug, Serialize)]
struct RowResult {
    row: Row,
    images: usize,
    accuracy: f64,
    fd: f64,
    /// Sampling seconds per image: the median over the row's classes drawn on `adapter` (see
    /// [`time_per_image`]).
    seconds_per_image: f64,
    /// The ledger at the request size the table draws (its images per class), then at
    /// [`SMALL_REQUEST`] images a request (same images: each image's arithmetic does not depend
    /// on the batch; what changes is which buffers fit the L2).
    priced: [Priced; 2],
    /// Quality within reach of the reference row's: FD ≤ 1.2× and accuracy at most 1 point
    /// below.
    matches_reference: bool,
    /// The adapter most of the row's classes were drawn on (a row can be drawn in parts on
    /// several machines; its time is that adapter's).
    adapter: String,
}

/// Images a request of the table's second pricing: a request whose buffers fit a laptop L2.
const SMALL_REQUEST: u32 = 10;
/// The row whose quality the others are matched against: the conventional model that draws
/// digits (the ε model of the `conventional` row does not yet; see the model card).
const REFERENCE: &str = "conventional-rf";

/// The generator of a row: its model, quantized on load where the row says so.
fn generator_of(gpu: &Gpu, r: &Row, fused_mlp: bool) -> Result<Generator, Box<dyn std::error::Error>> {
    let dir = Path::new(MODELS).join(r.model);
    let policy = DitConfig::from_file(&dir.join("config.json"))?.quantization.overridden(r.quant, r.floats);
    let options = GeneratorOptions {
        fused_mlp,
        int8_attention: r.int8_attention,
        int8_attention_output: r.int8_attention_output,
        int8_qkv: r.int8_qkv,
        skip_zeros: r.skip_zeros,
        ..GeneratorOptions::default()
    };
    Ok(Generator::new(gpu, DitWeights::open(&dir, policy)?, options)?)
}

/// The request of one class of a row.
fn request_of(r: &Row, class: u32, per_class: u32) -> Request {
    Request { seeds: Seeds::Base(0), steps: r.steps, guidance: r.cfg, ..Request::new(vec![class; per_class as usize]) }
}

/// The row's ledger per image, counted from its graph for requests of `per_request` images
/// (the same count a run records): with the laptop L2, the data-centre L2 and no cache, joules.
fn joules_per_image(generator: &Generator, r: &Row, per_request: u32) -> Result<[f64; 3], Box<dyn std::error::Error>> {
    let ledger = generator.estimate(&request_of(r, 0, per_request))?;
    let n = f64::from(per_request);
    Ok([
        ledger.energy_with(Cache::LAPTOP).total() / n,
        ledger.energy_with(Cache::DATA_CENTRE).total() / n,
        ledger.energy_no_cache().total() / n,
    ])
}

/// Row `r` (drawn by `generator`) priced at `per_request` images a request against the
/// conventional recipe's joules per image `conventional` (per pricing).
fn priced(
    generator: &Generator,
    r: &Row,
    per_request: u32,
    conventional: [f64; 3],
) -> Result<Priced, Box<dyn std::error::Error>> {
    let j = joules_per_image(generator, r, per_request)?;
    Ok(Priced {
        images_per_request: per_request,
        laptop_l2: j[0],
        data_centre_l2: j[1],
        no_cache: j[2],
        times_less: [0, 1, 2].map(|i| conventional[i] / j[i]),
    })
}

/// A reduction factor as the table prints it: one decimal below 10.
fn factor(x: f64) -> String {
    if x < 10.0 { format!("{x:.1}") } else { format!("{x:.0}") }
}

/// Seconds as the table prints them: three significant digits (a GPU draws a digit in well
/// under a millisecond, lavapipe in seconds).
fn seconds(x: f64) -> String {
    let decimals = if x >= 1.0 || x <= 0.0 { 2 } else { (2 - x.log10().floor() as i64).clamp(2, 7) as usize };
    format!("{x:.decimals$}")
}

/// The adapter most of a row's classes were drawn on, and the median over those classes of each
/// class's sampling seconds per image. Classes are drawn in separate runs, some of them sharing
/// the machine with other work (or paused), so the median says what one run alone takes where a
/// sum would carry every stall; and a row drawn in parts on two machines is timed on one.
fn time_per_image(classes: &[ClassRecord]) -> (String, f64) {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for c in classes {
        *counts.entry(c.adapter.as_str()).or_default() += 1;
    }
    let adapter = counts.iter().max_by_key(|(_, n)| **n).map_or("", |(a, _)| a).to_string();
    let mut per_image: Vec<f64> =
        classes.iter().filter(|c| c.adapter == adapter).map(|c| c.sampling_seconds / c.images.max(1) as f64).collect();
    per_image.sort_by(f64::total_cmp);
    let median = match per_image.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => per_image[n / 2],
        n => 0.5 * (per_image[n / 2 - 1] + per_image[n / 2]),
    };
    (adapter, median)
}

/// The record of one class of one row; its digits are the `.png` beside it.
fn cache_path(cache: &Path, row: &Row, per_class: u32, class: u32) -> PathBuf {
    cache.join(format!("{}-n{per_class}", row.id.replace(':', "")).as_str()).join(format!("class-{class}.json"))
}

/// Digits side by side in rows of ten, exactly their pixels.
fn digit_sheet(pixels: &[u8]) -> Result<image::GrayImage, Box<dyn std::error::Error>> {
    let images: Vec<image::DynamicImage> = pixels
        .chunks_exact(PIXELS)
        .map(|p| image::GrayImage::from_raw(SIDE as u32, SIDE as u32, p.to_vec()).map(image::DynamicImage::ImageLuma8))
        .collect::<Option<_>>()
        .ok_or("a digit of the wrong size")?;
    Ok(milliwatt::picture::grid(&images, 10, 1, 0)?)
}

/// The digits of a sheet written by [`digit_sheet`], in order.
fn read_sheet(path: &Path, images: usize) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let sheet = image::open(path)?.to_luma8();
    let side = SIDE as u32;
    let mut pixels = Vec::with_capacity(images * PIXELS);
    for i in 0..images as u32 {
        let (x0, y0) = ((i % 10) * side, (i / 10) * side);
        if x0 + side > sheet.width() || y0 + side > sheet.height() {
            return Err(format!(
                "{}: {images} digits do not fit a {}×{} sheet",
                path.display(),
                sheet.width(),
                sheet.height()
            )
            .into());
        }
        for y in 0..side {
            pixels.extend((0..side).map(|x| sheet.get_pixel(x0 + x, y0 + y).0[0]));
        }
    }
    Ok(pixels)
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let unknown: Vec<&String> = args.rows.iter().filter(|r| !ROWS.iter().any(|row| row.id == r.as_str())).collect();
    if !unknown.is_empty() {
        let ids: Vec<&str> = ROWS.iter().map(|r| r.id).collect();
        eprintln!("error: unknown rows {unknown:?} (rows: {})", ids.join(", "));
        std::process::exit(2);
    }
    let cache = args.cache.clone().unwrap_or_else(|| match args.per_class {
        100 => PathBuf::from("results/eval"),
        _ => PathBuf::from("target/eval"),
    });
    let chosen: Vec<&Row> =
        ROWS.iter().filter(|r| args.rows.is_empty() || args.rows.iter().any(|x| x == r.id)).collect();
    if args.list {
        for r in ROWS {
            let cached = (0..CLASSES as u32).filter(|&k| cache_path(&cache, r, args.per_class, k).exists()).count();
            println!(
                "{:<22} {:<50} {:>3} steps  cfg {:<5} cached {cached}/{CLASSES}",
                r.id,
                r.what,
                r.steps,
                r.cfg.map_or("-".into(), |c| c.to_string())
            );
        }
        return Ok(());
    }
    let classifier = Classifier::load(&Path::new(MODELS).join("classifier").join("classifier.safetensors"))?;
    let split = digits::load(&digits::default_dir())?;
    let feats = |d: &digits::Digits| -> Vec<Vec<f32>> {
        classifier.run_all(&d.images).into_iter().map(|o| o.features).collect()
    };
    let held_out = Gaussian::of(&feats(&split.held_out), milliwatt::eval::classifier::FEATURES);
    let train_fd =
        frechet_distance(&Gaussian::of(&feats(&split.train), milliwatt::eval::classifier::FEATURES), &held_out);
    let held_acc = classifier
        .run_all(&split.held_out.images)
        .iter()
        .zip(&split.held_out.labels)
        .filter(|(o, l)| o.class() == **l)
        .count() as f64
        / split.held_out.len() as f64;
    println!(
        "classifier: {:.1} % on the 1,000 held-out digits; FD floor (train vs held-out digits): {train_fd:.3}",
        100.0 * held_acc
    );

    let gpu = Gpu::new_blocking(&Options::default())?;
    let here = gpu.describe();
    println!("adapter: {here}");
    for r in &chosen {
        let missing: Vec<u32> =
            (0..CLASSES as u32).filter(|&k| !cache_path(&cache, r, args.per_class, k).exists()).collect();
        if missing.is_empty() {
            continue;
        }
        if !Path::new(MODELS).join(r.model).join("config.json").exists() {
            let why =
                format!("row {}: models/{} is not shipped yet (MODEL_CARD.md says how to train it)", r.id, r.model);
            if !args.rows.is_empty() {
                return Err(why.into());
            }
            println!("{why}: skipped");
            continue;
        }
        let generator = generator_of(&gpu, r, !args.mlp_chain)?;
        for class in missing {
            let request = request_of(r, class, args.per_class);
            let out = common::generate_with_bar(&generator, &request, format!("{} class {class}", r.id))?;
            let pixels: Vec<u8> = out.images.iter().flat_map(|i| i.to_luma8().into_raw()).collect();
            let path = cache_path(&cache, r, args.per_class, class);
            std::fs::create_dir_all(path.parent().ok_or("cache path has no folder")?)?;
            digit_sheet(&pixels)?.save(path.with_extension("png"))?;
            let result = ClassRecord {
                class,
                images: out.images.len(),
                sampling_seconds: out.timings.sampling.as_secs_f64(),
                adapter: gpu.describe(),
            };
            milliwatt::bench::write_json(path.to_str().ok_or("cache path is not UTF-8")?, &result)?;
        }
    }

    // The table from whatever is cached.
    let mut results = Vec::new();
    // Every row's energy is its graph's ledger, so the conventional row is the denominator
    // whether or not its digits have been drawn yet: its graph as the recipe runs it, one image
    // a request (each row itself is priced at the table's request size and at a small one).
    let conventional = ROWS.iter().find(|r| r.id == "conventional").ok_or("no conventional row")?;
    let denominator = joules_per_image(&generator_of(&gpu, conventional, true)?, conventional, 1)?;
    for r in ROWS {
        let paths: Vec<PathBuf> = (0..CLASSES as u32).map(|k| cache_path(&cache, r, args.per_class, k)).collect();
        if !paths.iter().all(|p| p.exists()) {
            continue;
        }
        let classes: Vec<ClassRecord> = paths
            .iter()
            .map(|p| Ok(serde_json::from_str(&std::fs::read_to_string(p)?)?))
            .collect::<Result<_, Box<dyn std::error::Error>>>()?;
        let pixels: Vec<Vec<u8>> = classes
            .iter()
            .zip(&paths)
            .map(|(c, p)| read_sheet(&p.with_extension("png"), c.images))
            .collect::<Result<_, _>>()?;
        let outputs: Vec<Vec<milliwatt::eval::classifier::Output>> =
            pixels.iter().map(|p| classifier.run_all(p)).collect();
        let images: usize = classes.iter().map(|c| c.images).sum();
        let right: usize = classes
            .iter()
            .zip(&outputs)
            .map(|(c, o)| o.iter().filter(|o| u32::from(o.class()) == c.class).count())
            .sum();
        let features: Vec<&Vec<f32>> = outputs.iter().flatten().map(|o| &o.features).collect();
        let fd = frechet_distance(&Gaussian::of(&features, milliwatt::eval::classifier::FEATURES), &held_out);
        let generator = generator_of(&gpu, r, !args.mlp_chain)?;
        let (adapter, time) = time_per_image(&classes);
        results.push(RowResult {
            row: r.clone(),
            images,
            accuracy: right as f64 / images as f64,
            fd,
            seconds_per_image: time,
            priced: [
                priced(&generator, r, args.per_class, denominator)?,
                priced(&generator, r, SMALL_REQUEST.min(args.per_class), denominator)?,
            ],
            matches_reference: false,
            adapter,
        });
        // A grid of the first ten digits of each class, for looking at.
        let grid_images: Vec<image::DynamicImage> = pixels
            .iter()
            .flat_map(|p| p.chunks_exact(PIXELS).take(10))
            .map(|p| image::DynamicImage::ImageLuma8(image::GrayImage::from_raw(28, 28, p.to_vec()).expect("28 × 28")))
            .collect();
        let grid = milliwatt::picture::grid(&grid_images, 10, 2, 2)?;
        grid.save(paths[0].with_file_name("grid.png"))?;
    }
    // Matched quality: FD within 1.2× of the reference's and accuracy at most a point below.
    let reference = results.iter().find(|r| r.row.id == REFERENCE).map(|r| (r.fd, r.accuracy));
    if let Some((fd, accuracy)) = reference {
        for r in &mut results {
            r.matches_reference = r.row.id != REFERENCE && r.fd <= 1.2 * fd && r.accuracy >= accuracy - 0.01;
        }
    }
    let best = |i: usize| {
        results
            .iter()
            .filter(|r| r.matches_reference)
            .max_by(|a, b| a.priced[i].least_times_less().total_cmp(&b.priced[i].least_times_less()))
    };
    let ratio_denominator = "the conventional row's ledger (fp32 ε model, 50 DDIM steps, guided, one image a request), \
                             in the same pricing";
    let small = SMALL_REQUEST.min(args.per_class);
    println!(
        "\n| row | model | steps | cfg | accuracy | FD | s/image | mJ/image at {n}/request: laptop L2; data-centre L2; no cache | \
         × less than conventional (least of the three) | mJ/image at {small}/request (laptop L2) | × less |",
        n = args.per_class
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!("| held-out digits (floor) | real MNIST | | | {:.1} % | {train_fd:.3} | | | | | |", 100.0 * held_acc);
    for r in &results {
        let [big, small] = r.priced;
        println!(
            "| {}{} | {}{} | {} | {} | {:.1} % | {:.3} | {}{} | {:.3}; {:.3}; {:.3} | {}× | {:.3} | {}× |",
            r.row.id,
            if r.matches_reference { " (matched)" } else { "" },
            r.row.what,
            r.row.quant.map_or(String::new(), |q| format!(" ({q})")),
            r.row.steps,
            r.row.cfg.map_or("-".into(), |c| c.to_string()),
            100.0 * r.accuracy,
            r.fd,
            seconds(r.seconds_per_image),
            // A row drawn on another machine says which (its adapter's name, driver left out).
            if r.adapter == here {
                String::new()
            } else {
                format!(" ({})", r.adapter.split(" (").next().unwrap_or(""))
            },
            1e3 * big.laptop_l2,
            1e3 * big.data_centre_l2,
            1e3 * big.no_cache,
            factor(big.least_times_less()),
            1e3 * small.laptop_l2,
            factor(small.times_less[0]),
        );
    }
    println!("\nratios: {ratio_denominator}");
    match (reference, best(0), best(1)) {
        (None, ..) => println!("matched quality: the reference row {REFERENCE} is not drawn yet"),
        (Some(_), None, _) => {
            println!("matched quality: no row matches {REFERENCE} (FD ≤ 1.2×, accuracy within 1 point)")
        }
        (Some(_), Some(b), s) => {
            println!(
                "matched quality: {:.0}× ({}, {} images a request, the least of its three pricings)",
                b.priced[0].least_times_less(),
                b.row.id,
                b.priced[0].images_per_request
            );
            if let Some(s) = s {
                println!(
                    "matched quality at {} images a request: {:.0}× ({})",
                    s.priced[1].images_per_request,
                    s.priced[1].least_times_less(),
                    s.row.id
                );
            }
        }
    }
    #[derive(Serialize)]
    struct Report<'a> {
        per_class: u32,
        classifier_held_out_accuracy: f64,
        fd_floor_train_vs_held_out: f64,
        /// What `times_less` compares with.
        ratio_denominator: &'a str,
        /// The row quality is matched against.
        reference: &'a str,
        rows: &'a [RowResult],
    }
    let report = Report {
        per_class: args.per_class,
        classifier_held_out_accuracy: held_acc,
        fd_floor_train_vs_held_out: train_fd,
        ratio_denominator,
        reference: REFERENCE,
        rows: &results,
    };
    let out = args.out.clone().unwrap_or_else(|| match args.per_class {
        100 => PathBuf::from("results/quality.json"),
        n => cache.join(format!("quality-n{n}.json")),
    });
    milliwatt::bench::write_json(out.to_str().ok_or("output path is not UTF-8")?, &report)?;
    println!("\nwrote {}", out.display());
    Ok(())
}
