//! Generator benchmark: a DiT-S-like model (hidden 384, depth 12, 6 heads, 32×32×4
//! input with patch 2: 256 tokens, learn_sigma), random weights, through the public
//! `Generator` — time per step and per image, memory, and ledger energy per image — for each
//! quantization policy, with dense and neighbourhood (window 7) attention. One guided image per
//! request (model batch 2). Energy per image is the ledger of a 50-step guided run of the same
//! graph; the ratio column divides it by the same model dense in f32 with dense attention.
//!
//! `cargo bench --bench generate [-- --quick] [--json PATH]`

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use clap::Parser;
use milliwatt::model::{AttentionKind, DitConfig, DitWeights, HostTensor, SampleGraph, SampleSpec, SamplerKind};
use milliwatt::{Generator, GeneratorOptions, Request, Result, Seeds};

fn config(policy: &str, attention: AttentionKind) -> Result<DitConfig> {
    let mut c = DitConfig::from_json(&format!(
        r#"{{"input_size": 32, "patch_size": 2, "in_channels": 4, "hidden_size": 384, "depth": 12,
            "num_heads": 6, "num_classes": 1000, "learn_sigma": true, "quantization": {policy}}}"#
    ))?;
    c.attention = attention;
    Ok(c)
}

/// Random weights (a fast LCG: values do not change the work).
fn random(config: &DitConfig) -> Result<DitWeights> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
    };
    let mut tensors = BTreeMap::new();
    for (name, shape) in DitWeights::expected(config) {
        if name != "pos_embed" {
            let n: usize = shape.iter().product();
            tensors.insert(name, HostTensor { shape, data: (0..n).map(|_| next()).collect() });
        }
    }
    DitWeights::from_float(config, tensors)
}

#[derive(serde::Serialize)]
struct Row {
    policy: String,
    attention: String,
    step_s: f64,
    image_s: f64,
    weights_mb: f64,
    activations_mb: f64,
    activations_no_reuse_mb: f64,
    /// The ledger with a laptop GPU's L2 (4 MiB; re-reads of launches that fit it from the L2).
    ledger_j_per_image_50_steps: f64,
    ratio_to_dense_f32: f64,
    /// The upper bound: every counted load from DRAM.
    ledger_j_per_image_no_cache: f64,
    ratio_to_dense_f32_no_cache: f64,
}

mod common;

fn main() -> Result<()> {
    let cli = common::Cli::parse();
    let quick = cli.flags.quick;
    let json = cli.flags.json("generate");
    let gpu = common::gpu()?;
    let steps = if quick { 2 } else { 4 };
    let policies = [
        ("f32", r#"{"attention": "f32", "mlp": "f32", "other": "f32"}"#),
        ("f16", r#"{"attention": "f16", "mlp": "f16", "other": "f16"}"#),
        ("int8", r#"{"attention": "int8", "mlp": "int8", "other": "f32"}"#),
        ("int4", r#"{"attention": "int4-g64", "mlp": "int4-g64", "other": "f32"}"#),
        ("ternary", r#"{"attention": "ternary", "mlp": "ternary", "other": "f32"}"#),
        ("ternary-2:4", r#"{"attention": "ternary-2:4", "mlp": "ternary-2:4", "other": "f32"}"#),
    ];
    let attentions: &[AttentionKind] = if quick {
        &[AttentionKind::Dense]
    } else {
        &[AttentionKind::Dense, AttentionKind::Neighbourhood { window: 7 }]
    };
    println!("\nDiT-S-like (hidden 384, depth 12, 256 tokens), 1 guided image, {steps} steps per request:");
    println!(
        "{:<12} {:<16} {:>9} {:>10} {:>11} {:>10} {:>13} {:>15} {:>9} {:>15} {:>9}",
        "policy",
        "attention",
        "step s",
        "image s*",
        "weights MB",
        "act MB",
        "act MB no-pool",
        "ledger J/image",
        "vs f32",
        "no-cache J/img",
        "vs f32"
    );
    let mut rows = Vec::new();
    for &attention in attentions {
        for (name, policy) in policies {
            if name == "f16" && !gpu.capabilities().f16 {
                println!("{name:<12} skipped: no SHADER_F16");
                continue;
            }
            let c = config(policy, attention)?;
            let g = Generator::new(&gpu, random(&c)?, GeneratorOptions::default())?;
            let request = Request { seeds: Seeds::Base(1), steps, guidance: Some(4.0), ..Request::new(vec![207]) };
            // Warm-up (prepares the executor), then the measured request.
            g.generate_blocking(&Request { steps: 1, ..request.clone() }, |_| ControlFlow::Continue(()))?;
            let out = g.generate_blocking(&request, |_| ControlFlow::Continue(()))?;
            let step_s = out.timings.per_step.as_secs_f64();
            // Energy of 50 guided steps of this graph, per image, and the baseline's.
            let spec =
                SampleSpec { images: 1, steps: 50, sampler: SamplerKind::Euler, guidance: Some(4.0), img2img: false };
            let ledger =
                milliwatt::graph::fuse(&SampleGraph::new(&c, &spec)?.graph)?.0.ledger(gpu.capabilities(), 50)?;
            let baseline = g.baseline_ledger(1)?;
            let m = out.memory;
            let row = Row {
                policy: name.into(),
                attention: format!("{attention:?}"),
                step_s,
                image_s: step_s * 50.0,
                weights_mb: (m.bytes - m.activation_bytes) as f64 / 1e6,
                activations_mb: m.activation_bytes as f64 / 1e6,
                activations_no_reuse_mb: m.activation_bytes_unpooled as f64 / 1e6,
                ledger_j_per_image_50_steps: ledger.energy().total(),
                ratio_to_dense_f32: ledger.ratio_to(&baseline),
                ledger_j_per_image_no_cache: ledger.energy_no_cache().total(),
                ratio_to_dense_f32_no_cache: ledger.energy_no_cache().total() / baseline.energy_no_cache().total(),
            };
            println!(
                "{:<12} {:<16} {:>9.3} {:>10.1} {:>11.1} {:>10.1} {:>13.1} {:>15.3} {:>9.3} {:>15.3} {:>9.3}",
                row.policy,
                row.attention,
                row.step_s,
                row.image_s,
                row.weights_mb,
                row.activations_mb,
                row.activations_no_reuse_mb,
                row.ledger_j_per_image_50_steps,
                row.ratio_to_dense_f32,
                row.ledger_j_per_image_no_cache,
                row.ratio_to_dense_f32_no_cache
            );
            rows.push(row);
        }
    }
    println!("* image s: 50 steps at the measured step time.");
    let levers = levers(&gpu, steps)?;

    milliwatt::bench::write_json(
        &json,
        &serde_json::json!({ "device": gpu.describe(), "steps": steps, "rows": rows, "levers": levers }),
    )?;
    println!("json: {json}");
    milliwatt::bench::check_variants(&gpu)?;
    Ok(())
}

/// One per-step lever at this size, both ways.
#[derive(serde::Serialize)]
struct Lever {
    lever: String,
    setting: String,
    step_s: f64,
    /// Ledger joules per image of a 50-step guided run, laptop L2 / data-centre L2 / no cache.
    ledger_j_per_image_50_steps: [f64; 3],
}

/// The per-step levers at the DiT-S-like size (ternary, neighbourhood attention: the milliwatt
/// configuration), each row adding one to the row before: the adaLN modulation of every step in
/// the setup against in each step, the MLP branch as one fused dispatch per block, attention in
/// int8, its output in int8 straight into the projection, its input in int8 from the qkv GEMM.
/// Then the 2:4 model (2:4 ternary linears: its MLP runs the chain) with dense tiles against
/// zero skipping.
fn levers(gpu: &milliwatt::Gpu, steps: u32) -> Result<Vec<Lever>> {
    use milliwatt::Cache;
    use milliwatt::model::ModulationPlan::{EveryStep, PerStep};
    let neighbourhood = AttentionKind::Neighbourhood { window: 7 };
    let ternary = random(&config(r#"{"attention": "ternary", "mlp": "ternary", "other": "f32"}"#, neighbourhood)?)?;
    let ternary24 =
        random(&config(r#"{"attention": "ternary-2:4", "mlp": "ternary-2:4", "other": "f32"}"#, neighbourhood)?)?;
    println!("\nper-step levers (neighbourhood attention, 1 guided image):");
    println!("{:<24} {:<22} {:>9} {:>40}", "lever", "setting", "step s", "ledger J/image: laptop; data-centre; none");
    let mut out = Vec::new();
    let o = |modulation, fused_mlp, int8_attention, skip_zeros| GeneratorOptions {
        modulation: Some(modulation),
        fused_mlp,
        int8_attention,
        skip_zeros,
        ..GeneratorOptions::default()
    };
    let settings = [
        ("adaLN modulation", "PerStep", &ternary, o(PerStep, false, false, false)),
        ("adaLN modulation", "EveryStep", &ternary, o(EveryStep, false, false, false)),
        ("MLP branch", "fused", &ternary, o(EveryStep, true, false, false)),
        ("attention", "int8", &ternary, o(EveryStep, true, true, false)),
        (
            "attention output",
            "int8 into projection",
            &ternary,
            GeneratorOptions { int8_attention_output: true, ..o(EveryStep, true, true, false) },
        ),
        (
            "Q, K, V",
            "int8 from the qkv GEMM",
            &ternary,
            GeneratorOptions { int8_attention_output: true, int8_qkv: true, ..o(EveryStep, true, true, false) },
        ),
        ("2:4 GEMM (2:4 model)", "dense tiles", &ternary24, o(EveryStep, true, false, false)),
        ("2:4 GEMM (2:4 model)", "zero skipping", &ternary24, o(EveryStep, true, false, true)),
    ];
    for (lever, setting, weights, options) in settings {
        let g = Generator::new(gpu, weights.clone(), options)?;
        let request = Request { seeds: Seeds::Base(1), steps, guidance: Some(4.0), ..Request::new(vec![207]) };
        g.generate_blocking(&request, |_| ControlFlow::Continue(()))?;
        let timed = g.generate_blocking(&request, |_| ControlFlow::Continue(()))?;
        let ledger = g.estimate(&Request { steps: 50, ..request })?;
        let lever = Lever {
            lever: lever.into(),
            setting: setting.into(),
            step_s: timed.timings.per_step.as_secs_f64(),
            ledger_j_per_image_50_steps: [
                ledger.energy_with(Cache::LAPTOP).total(),
                ledger.energy_with(Cache::DATA_CENTRE).total(),
                ledger.energy_no_cache().total(),
            ],
        };
        let [l, d, n] = lever.ledger_j_per_image_50_steps;
        println!("{:<24} {:<22} {:>9.3} {:>22.4}; {:.4}; {:.4}", lever.lever, lever.setting, lever.step_s, l, d, n);
        out.push(lever);
    }
    Ok(out)
}
