//! The CPU reference of the DiT graph (`model::reference`) against the golden fixtures (outputs of the
//! original facebookresearch/DiT implementation), and its quantized policies and sampler paths
//! against the f32 model. No GPU needed.

#[path = "common/golden.rs"]
mod golden;

use milliwatt::kernels::{ScheduleEntry, ddim_schedule, rectified_flow_schedule};
use milliwatt::model::reference::{forward, sample};
use milliwatt::model::{
    AttentionKind, DitConfig, DitWeights, HostTensor, LinearFormat, QuantPolicy, SampleSpec, SamplerKind, WeightData,
};

use golden::Golden;

/// Every value within `abs` of the reference, plus 1e-5 of its magnitude.
fn assert_close(what: &str, got: &[f32], want: &[f32], abs: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = (0.0f32, 0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(err <= abs + 1e-5 * w.abs(), "{what}[{i}]: got {g}, want {w} (|diff| {err})");
        if err > worst.0 {
            worst = (err, i);
        }
    }
    eprintln!("{what}: largest |diff| {:.2e} at {}", worst.0, worst.1);
}

/// ‖a − b‖ / ‖b‖.
fn relative_rms(a: &[f32], b: &[f32]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x - y).powi(2)).sum();
    let norm: f64 = b.iter().map(|&y| f64::from(y).powi(2)).sum();
    (diff / norm).sqrt()
}

/// A guided (scale 2.0) 4-step sample of 2 images with labels [3, 7] and the null class.
fn golden_sample(g: &Golden, sampler: SamplerKind, xt: &[f32], schedule: &[ScheduleEntry]) -> Vec<f32> {
    let spec = SampleSpec { images: 2, steps: 4, sampler, guidance: Some(2.0), img2img: false };
    let null = g.weights.config.num_classes;
    sample(&g.weights, &spec, xt, None, &[3, 7, null, null], schedule).unwrap()
}

#[test]
fn forward_matches_the_golden_outputs() {
    for name in ["dit-tiny", "dit-tiny-sigma"] {
        let g = Golden::load(name).unwrap();
        let c = &g.weights.config;
        let (x, t, y) = g.inputs().unwrap();
        let f = forward(&g.weights, &x, &t, &y).unwrap();
        assert_close(&format!("{name} c"), &f.c, &g.get("c").unwrap(), 1e-4);
        assert_close(&format!("{name} block0_out"), &f.block0, &g.get("block0_out").unwrap(), 1e-4);
        // The fixture's `out` holds every output channel; the graph's the first C.
        let want = g.get("out").unwrap();
        let per = (c.input_size * c.input_size) as usize;
        let (cin, cout) = (c.in_channels as usize, c.out_channels() as usize);
        let want: Vec<f32> = (0..y.len()).flat_map(|i| want[i * cout * per..(i * cout + cin) * per].to_vec()).collect();
        assert_close(&format!("{name} out"), &f.out, &want, 1e-4);
    }
}

#[test]
fn euler_sample_matches_the_golden_sample() {
    for name in ["dit-tiny", "dit-tiny-sigma"] {
        let g = Golden::load(name).unwrap();
        assert_eq!(g.labels("sample_y").unwrap(), [3, 7]);
        let got = golden_sample(&g, SamplerKind::Euler, &g.get("sample_xT").unwrap(), &rectified_flow_schedule(4, 1.0));
        assert_close(&format!("{name} sample_x0"), &got, &g.get("sample_x0").unwrap(), 1e-4);
    }
}

#[test]
fn ddim_sample_matches_the_golden_sample() {
    let g = Golden::load("dit-tiny-sigma").unwrap();
    assert_eq!(g.labels("ddim_y").unwrap(), [3, 7]);
    let got = golden_sample(&g, SamplerKind::Ddim, &g.get("ddim_xT").unwrap(), &ddim_schedule(4));
    assert_close("dit-tiny-sigma ddim_x0", &got, &g.get("ddim_x0").unwrap(), 1e-3);
}

/// Quantized block linears (int8 activations into ternary, int8 and 2:4 ternary weights, float
/// activations into int4) and neighbourhood attention run, stay finite, and move the output by an
/// amount their precision explains.
#[test]
fn quantized_policies_and_neighbourhood_attention_stay_near_f32() {
    let f32_model = Golden::load("dit-tiny").unwrap();
    let (x, t, y) = f32_model.inputs().unwrap();
    let reference = forward(&f32_model.weights, &x, &t, &y).unwrap();
    let policy = |attention, mlp| QuantPolicy { attention, mlp, ..QuantPolicy::default() };
    let int4 = LinearFormat::Int4 { group: 64 };
    // (policy, attention, smallest and largest relative change of the output).
    let cases = [
        (policy(LinearFormat::Int8, LinearFormat::Int8), AttentionKind::Dense, 5e-4, 0.02),
        (policy(LinearFormat::F32, int4), AttentionKind::Dense, 3e-3, 0.1),
        (policy(LinearFormat::Ternary, int4), AttentionKind::Dense, 3e-2, 0.6),
        (policy(LinearFormat::Ternary24, LinearFormat::Ternary), AttentionKind::Dense, 3e-2, 0.8),
        (QuantPolicy::default(), AttentionKind::Neighbourhood { window: 3 }, 1e-2, 0.3),
        (policy(LinearFormat::Ternary, int4), AttentionKind::Neighbourhood { window: 3 }, 3e-2, 0.6),
    ];
    for (quantization, attention, low, high) in cases {
        let g = Golden::load_with("dit-tiny", |c| {
            c.quantization = quantization;
            c.attention = attention;
        })
        .unwrap();
        let f = forward(&g.weights, &x, &t, &y).unwrap();
        let what = format!("{quantization:?} {attention:?}");
        assert!(f.out.iter().chain(&f.block0).all(|v| v.is_finite()), "{what}: not finite");
        // Only the block linears change: the conditioning is the f32 model's.
        assert_eq!(f.c, reference.c, "{what}: c");
        let change = relative_rms(&f.out, &reference.out);
        eprintln!(
            "{what}: relative change of out {change:.3e}, of block0 {:.3e}",
            relative_rms(&f.block0, &reference.block0)
        );
        assert!((low..high).contains(&change), "{what}: relative change {change} outside {low}..{high}");
    }
}

/// The f32 model with every packed weight of `quantized` replaced by the weights its levels and
/// scales stand for.
fn dequantized(quantized: &DitWeights) -> DitWeights {
    let mut config = quantized.config.clone();
    config.quantization = QuantPolicy::default();
    let tensors = quantized
        .names()
        .map(|name| {
            let tensor = match quantized.get(name).unwrap() {
                WeightData::Float(t) => t.clone(),
                WeightData::Packed(p) => HostTensor {
                    shape: vec![p.m as usize, p.k as usize],
                    data: p.unpack().unwrap().dequantize().unwrap(),
                },
            };
            (name.to_string(), tensor)
        })
        .collect();
    DitWeights::from_float(&config, tensors).unwrap()
}

/// The packed paths decode what the quantizer meant: int4 with float activations is the f32 model
/// on the dequantized weights (up to rounding); int8 activations add only their own rounding.
#[test]
fn packed_linears_compute_their_dequantized_weights() {
    let int4 = LinearFormat::Int4 { group: 32 };
    let cases = [
        (LinearFormat::F32, int4, 1e-5),
        (int4, int4, 1e-5),
        (LinearFormat::Ternary, LinearFormat::F32, 1e-2),
        (LinearFormat::Int8, LinearFormat::Ternary, 1e-2),
        (LinearFormat::Ternary24, int4, 1e-2),
    ];
    for name in ["dit-tiny", "dit-tiny-sigma"] {
        for (attention, mlp, tolerance) in cases {
            let g =
                Golden::load_with(name, |c| c.quantization = QuantPolicy { attention, mlp, ..QuantPolicy::default() })
                    .unwrap();
            let (x, t, y) = g.inputs().unwrap();
            let got = forward(&g.weights, &x, &t, &y).unwrap();
            let want = forward(&dequantized(&g.weights), &x, &t, &y).unwrap();
            let change = relative_rms(&got.out, &want.out);
            eprintln!("{name} {attention} / {mlp}: relative difference to the dequantized model {change:.3e}");
            assert!(change < tolerance, "{name} {attention} / {mlp}: {change} >= {tolerance}");
        }
    }
}

/// A random model of `config` (uniform weights of about 1 / √fan-in, so activations stay O(1)).
fn random_model(config: &DitConfig, seed: u32) -> DitWeights {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut next = move || {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    };
    let tensors = DitWeights::expected(config)
        .into_iter()
        .filter(|(name, _)| name != "pos_embed")
        .map(|(name, shape)| {
            let fan_in: usize = if shape.len() > 1 { shape[1..].iter().product() } else { 4 };
            let scale = 1.5 / (fan_in as f32).sqrt();
            let data = (0..shape.iter().product()).map(|_| next() * scale).collect();
            (name, HostTensor { shape, data })
        })
        .collect();
    DitWeights::from_float(config, tensors).unwrap()
}

/// With 2 images of 4 tokens every linear is a GEMV (8 rows): the packed GEMV twins with int8 and
/// float activations, and the gated-residual and GELU epilogues applied after the reduction,
/// against the dequantized model and against the GEMM path a third image switches to.
#[test]
fn gemv_sized_models_compute_their_dequantized_weights() {
    let base = DitConfig::from_json(
        r#"{"input_size": 4, "patch_size": 2, "in_channels": 2, "hidden_size": 32, "depth": 2, "num_heads": 2,
            "num_classes": 5, "learn_sigma": true}"#,
    )
    .unwrap();
    let float = random_model(&base, 7);
    let x: Vec<f32> = (0..2 * 2 * 16).map(|i| ((i * 37 % 23) as f32 / 11.0) - 1.0).collect();
    let (t, y) = ([0.3, 0.9], [1, 5]);
    let reference = forward(&float, &x, &t, &y).unwrap();
    let int4 = LinearFormat::Int4 { group: 32 };
    for (attention, mlp, tolerance) in [
        (int4, int4, 1e-5),
        (LinearFormat::F32, LinearFormat::F32, 1e-6),
        (LinearFormat::Ternary, LinearFormat::Int8, 3e-2),
        (LinearFormat::Ternary24, LinearFormat::Ternary, 3e-2),
    ] {
        let mut config = base.clone();
        config.quantization = QuantPolicy { attention, mlp, ..QuantPolicy::default() };
        let tensors = float.names().map(|n| (n.to_string(), float.float(n).unwrap().clone())).collect();
        let quantized = DitWeights::from_float(&config, tensors).unwrap();
        let got = forward(&quantized, &x, &t, &y).unwrap();
        assert!(got.out.iter().all(|v| v.is_finite()));
        let want = forward(&dequantized(&quantized), &x, &t, &y).unwrap();
        let change = relative_rms(&got.out, &want.out);
        eprintln!(
            "gemv-sized {attention} / {mlp}: vs dequantized {change:.3e}, vs f32 {:.3e}",
            relative_rms(&got.out, &reference.out)
        );
        assert!(change < tolerance, "{attention} / {mlp}: {change} >= {tolerance}");
        // A third image makes 12 rows: GEMMs instead of GEMVs, same values.
        let x3: Vec<f32> = x.iter().chain(&x[..32]).copied().collect();
        let three = forward(&quantized, &x3, &[t[0], t[1], t[0]], &[y[0], y[1], y[0]]).unwrap();
        assert_close(&format!("{attention} / {mlp}: GEMM vs GEMV"), &three.out[..64], &got.out, 1e-5);
    }
}

/// img2img at strength 1 starts from the noise itself, so it samples what the plain run does;
/// guidance 1 is the conditional model, as an unguided run with the same labels.
#[test]
fn sampler_paths_agree_where_they_must() {
    let g = Golden::load("dit-tiny-sigma").unwrap();
    let xt = g.get("sample_xT").unwrap();
    let schedule = rectified_flow_schedule(4, 1.0);
    let spec = SampleSpec { images: 2, steps: 4, sampler: SamplerKind::Euler, guidance: Some(2.0), img2img: false };
    let plain = sample(&g.weights, &spec, &xt, None, &[3, 7], &schedule).unwrap();
    assert_close("nulls appended", &plain, &g.get("sample_x0").unwrap(), 1e-4);

    let image: Vec<f32> = xt.iter().map(|v| 0.5 - v).collect();
    let img2img = SampleSpec { img2img: true, ..spec };
    let got = sample(&g.weights, &img2img, &xt, Some(&image), &[3, 7], &schedule).unwrap();
    assert_eq!(got, plain, "img2img at strength 1");
    let half = sample(&g.weights, &img2img, &xt, Some(&image), &[3, 7], &rectified_flow_schedule(4, 0.5)).unwrap();
    assert!(relative_rms(&half, &plain) > 1e-2, "img2img at strength 0.5 ignores the image");

    let once = SampleSpec { guidance: Some(1.0), ..spec };
    let unguided = SampleSpec { guidance: None, ..spec };
    assert_close(
        "guidance 1 vs unguided",
        &sample(&g.weights, &once, &xt, None, &[3, 7], &schedule).unwrap(),
        &sample(&g.weights, &unguided, &xt, None, &[3, 7], &schedule).unwrap(),
        1e-5,
    );

    // Heun: a second evaluation per step at t_next, so a different (finite) path than Euler's.
    let heun = SampleSpec { sampler: SamplerKind::Heun, ..spec };
    let got = sample(&g.weights, &heun, &xt, None, &[3, 7], &schedule).unwrap();
    assert!(got.iter().all(|v| v.is_finite()));
    assert!(relative_rms(&got, &plain) > 1e-4, "Heun equals Euler");
}

#[test]
fn bad_inputs_are_errors() {
    let g = Golden::load("dit-tiny").unwrap();
    let (x, t, y) = g.inputs().unwrap();
    assert!(forward(&g.weights, &x[1..], &t, &y).is_err());
    assert!(forward(&g.weights, &x, &t, &y[1..]).is_err());
    assert!(forward(&g.weights, &[], &[], &[]).is_err());
    let spec = SampleSpec { images: 2, steps: 4, sampler: SamplerKind::Euler, guidance: Some(2.0), img2img: false };
    let xt = g.get("sample_xT").unwrap();
    let schedule = rectified_flow_schedule(4, 1.0);
    assert!(sample(&g.weights, &spec, &xt, None, &[3], &schedule).is_err());
    assert!(sample(&g.weights, &spec, &xt, None, &[3, 7], &schedule[..3]).is_err());
    assert!(sample(&g.weights, &spec, &xt, Some(&xt), &[3, 7], &schedule).is_err());
    assert!(sample(&g.weights, &SampleSpec { img2img: true, ..spec }, &xt, None, &[3, 7], &schedule).is_err());
    assert!(sample(&g.weights, &SampleSpec { steps: 0, ..spec }, &xt, None, &[3, 7], &schedule).is_err());
}
