//! GPU tests: every kernel against its CPU twin on lavapipe's Vulkan adapter and on the GL adapter.
//!
//! A custom harness (like wgpu's own) so that there is one shared device per backend for the whole
//! binary, a case can report "unsupported" on an adapter that lacks a feature instead of failing,
//! and the run ends with a tally per backend. With `CI=true` both adapters are mandatory; with no
//! adapter at all the run fails with instructions. Arguments are substring filters on case names.

mod attention_cases;
mod cases;
mod decode_cases;
mod embed_cases;
mod generator_cases;
#[path = "../common/golden.rs"]
mod golden;
mod graph_cases;
mod ledger_cases;
mod mlp_cases;
mod model_cases;
mod noise_cases;
mod norm_cases;
mod qcases;
mod qgemm_cases;
mod sampler_cases;
#[path = "../common/shipped.rs"]
mod shipped;
mod shipped_cases;
#[path = "../common/soak.rs"]
mod soak;
mod util;

use std::time::Instant;

use milliwatt::{Gpu, Options};

/// Why a case did not pass.
#[derive(Debug)]
pub enum Failure {
    /// The adapter lacks what the case needs: counted apart, not a failure.
    Unsupported(String),
    /// What went wrong.
    Failed(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Failed(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::Failed(message.into())
    }
}

impl From<milliwatt::Error> for Failure {
    fn from(e: milliwatt::Error) -> Self {
        Failure::Failed(util::err(e))
    }
}

/// What a case returns: `Ok(())`, or why it did not pass.
pub type Outcome = Result<(), Failure>;

/// A named case: runs on one backend.
pub type Case = fn(&Backend) -> Outcome;

/// One backend under test: the shared device, plus views of it with fallbacks forced.
#[derive(Debug)]
pub struct Backend {
    pub name: &'static str,
    pub gpu: Gpu,
    /// The same device with `no_subgroups` and `force_f32`.
    pub fallback: Gpu,
    /// The same device pretending the storage-binding limit is 64 KiB, to exercise weight splits.
    pub small_bindings: Gpu,
}

fn open(backends: milliwatt::wgpu::Backends, name: &'static str) -> Option<Backend> {
    let options = Options { backends, adapter_name: None, ..Options::default() };
    let gpu = Gpu::new_blocking(&options).ok()?;
    let (device, queue) = (gpu.device().clone(), gpu.queue().clone());
    let fallback =
        Gpu::from_device(&device, &queue, &Options { no_subgroups: true, force_f32: true, ..options.clone() });
    let small_bindings = Gpu::from_device(&device, &queue, &Options { max_storage_binding: Some(64 << 10), ..options });
    Some(Backend { name, gpu, fallback, small_bindings })
}

/// A suite: its named cases.
type Suite = fn() -> Vec<(&'static str, Case)>;

/// Every suite of cases, in the order they run: the one place a new suite is registered.
const SUITES: &[Suite] = &[
    cases::all,
    qcases::all,
    qgemm_cases::all,
    noise_cases::all,
    embed_cases::all,
    decode_cases::all,
    sampler_cases::all,
    attention_cases::all,
    norm_cases::all,
    mlp_cases::all,
    graph_cases::all,
    ledger_cases::all,
    shipped_cases::all,
    model_cases::all,
    generator_cases::all,
];

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");

    let mut backends = Vec::new();
    let mut missing = Vec::new();
    for (bits, name) in [(milliwatt::wgpu::Backends::VULKAN, "vulkan"), (milliwatt::wgpu::Backends::GL, "gl")] {
        match open(bits, name) {
            Some(b) => {
                println!("backend {name}: {}", b.gpu.describe());
                println!("  capabilities: {:?}", b.gpu.capabilities());
                backends.push(b);
            }
            None => missing.push(name),
        }
    }
    if backends.is_empty() {
        eprintln!("error: no GPU adapter found on Vulkan or GL.\n{}", milliwatt::INSTALL_HINT);
        std::process::exit(1);
    }
    if ci && !missing.is_empty() {
        eprintln!(
            "error: CI=true requires both the Vulkan and the GL adapter; missing: {missing:?}.\n{}",
            milliwatt::INSTALL_HINT
        );
        std::process::exit(1);
    }
    for m in &missing {
        println!("backend {m}: no adapter (not mandatory outside CI)");
    }

    let cases: Vec<(&str, Case)> = SUITES.iter().flat_map(|suite| suite()).collect();
    let (mut passed, mut failed, mut unsupported) = (0usize, 0usize, 0usize);
    let mut tally = Vec::new();
    let mut failures = Vec::new();
    for b in &backends {
        let (mut p, mut f, mut u) = (0, 0, 0);
        for (name, case) in &cases {
            let full = format!("{}::{name}", b.name);
            if !filters.is_empty() && !filters.iter().any(|flt| full.contains(flt.as_str())) {
                continue;
            }
            let t = Instant::now();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(b)));
            let secs = t.elapsed().as_secs_f64();
            match result {
                Ok(Ok(())) => {
                    p += 1;
                    println!("test {full} ... ok ({secs:.2}s)");
                }
                Ok(Err(Failure::Unsupported(why))) => {
                    u += 1;
                    println!("test {full} ... unsupported: {why}");
                }
                Ok(Err(Failure::Failed(msg))) => {
                    f += 1;
                    println!("test {full} ... FAILED");
                    failures.push(format!("{full}: {msg}"));
                }
                Err(panic) => {
                    f += 1;
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    println!("test {full} ... FAILED (panic)");
                    failures.push(format!("{full}: panic: {msg}"));
                }
            }
        }
        // Every pipeline the cases made is a variant of the list the naga test validates.
        let listed: std::collections::BTreeSet<_> = milliwatt::shaders::Variant::all().into_iter().collect();
        let unlisted: Vec<String> = [&b.gpu, &b.fallback, &b.small_bindings]
            .iter()
            .flat_map(|g| g.pipeline_keys())
            .filter(|k| !listed.contains(&k.variant))
            .map(|k| k.variant.label())
            .collect();
        if !unlisted.is_empty() {
            f += 1;
            failures.push(format!("{}: pipelines outside shaders::Variant::all(): {unlisted:?}", b.name));
        }
        tally.push(format!("{:<7} {p:>4} passed, {f:>3} failed, {u:>3} unsupported", b.name));
        passed += p;
        failed += f;
        unsupported += u;
    }
    for f in &failures {
        println!("\nFAILURE {f}");
    }
    println!("\nper-backend tally:");
    for t in &tally {
        println!("  {t}");
    }
    for m in &missing {
        println!("  {m:<7} no adapter");
    }
    println!("\ngpu: {passed} passed, {failed} failed, {unsupported} skipped");
    if failed > 0 || passed == 0 {
        std::process::exit(1);
    }
}
