//! The DiT configuration and weight loading (`milliwatt::model::{config, weights}`) against the
//! golden fixtures: config parsing and validation, loading in F32 / F16 / BF16, typed errors that
//! name the tensor, quantize-on-load per policy, and the pre-packed save / load round trip. No GPU.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use approx::assert_abs_diff_eq;
use milliwatt::graph::TensorKind;
use milliwatt::kernels::pos_embed_2d;
use milliwatt::model::{
    AttentionKind, DitConfig, DitWeights, FloatFormat, HostTensor, LinearFormat, ModulationPlan, Prediction,
    QuantPolicy, SampleGraph, SampleSpec, SamplerKind, WeightData,
};
use milliwatt::quant::{Format, ScaleMode, quantize};
use milliwatt::{CheckpointProblem, Error};
use safetensors::{Dtype, SafeTensors, View};

const FIXTURES: [&str; 2] = ["dit-tiny", "dit-tiny-sigma"];

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dit-golden").join(name)
}

fn config(name: &str) -> DitConfig {
    DitConfig::from_file(&fixture_dir(name).join("config.json")).unwrap()
}

fn model_path(name: &str) -> PathBuf {
    fixture_dir(name).join("model.safetensors")
}

fn model_bytes(name: &str) -> Vec<u8> {
    std::fs::read(model_path(name)).unwrap()
}

/// A fresh, empty directory under the system temp dir for one test.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("milliwatt-model-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An owned tensor to write with the safetensors crate.
struct Owned {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for Owned {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        (&self.data[..]).into()
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// The fixture `name` rewritten tensor by tensor: `edit` gets each tensor (all F32 in the
/// fixtures) and returns what to write in its place, or `None` to drop it.
fn rewrite(name: &str, mut edit: impl FnMut(&str, Owned) -> Option<Owned>) -> Vec<u8> {
    let bytes = model_bytes(name);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, Owned)> = st
        .iter()
        .filter_map(|(n, v)| {
            let owned = Owned { dtype: v.dtype(), shape: v.shape().to_vec(), data: v.data().to_vec() };
            edit(n, owned).map(|t| (n.to_string(), t))
        })
        .collect();
    safetensors::serialize(tensors, None).unwrap()
}

/// The f32 values of tensor `name` in the fixture.
fn original(name: &str, tensor: &str) -> HostTensor {
    let bytes = model_bytes(name);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor(tensor).unwrap();
    HostTensor { shape: v.shape().to_vec(), data: f32s(v.data()) }
}

/// The `Error::Checkpoint` parts of `result`'s error, checking the message names the tensor.
fn checkpoint_error<T: std::fmt::Debug>(result: milliwatt::Result<T>) -> (String, CheckpointProblem) {
    match result {
        Err(e @ Error::Checkpoint { .. }) => {
            let message = e.to_string();
            let Error::Checkpoint { tensor, problem, .. } = e else { unreachable!() };
            assert!(message.contains(&format!("`{tensor}`")), "message `{message}` does not name `{tensor}`");
            (tensor, problem)
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

/// The field a configuration error names (`None`: the file as a whole), checking the message
/// names it too.
fn config_error<T: std::fmt::Debug>(result: milliwatt::Result<T>) -> Option<String> {
    match result {
        Err(e @ Error::Config { .. }) => {
            let message = e.to_string();
            let Error::Config { field, .. } = e else { unreachable!() };
            if let Some(f) = &field {
                assert!(message.contains(&format!("field `{f}`")), "message `{message}` does not name `{f}`");
            }
            assert!(!message.contains("tensor `"), "a configuration error calls itself a tensor: {message}");
            field
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

fn is_block_linear(name: &str) -> Option<&'static str> {
    let rest = name.strip_prefix("blocks.")?;
    let (_, layer) = rest.split_once('.')?;
    match layer {
        "attn.qkv.weight" | "attn.proj.weight" => Some("attention"),
        "mlp.fc1.weight" | "mlp.fc2.weight" => Some("mlp"),
        _ => None,
    }
}

// ---- Configuration -----------------------------------------------------------------------------

#[test]
fn fixture_configs_parse_map_and_default() {
    // (grid, tokens, head_dim, mlp_hidden, out_channels, patch_dim)
    let expect = [("dit-tiny", (4, 16, 16, 256, 1, 4)), ("dit-tiny-sigma", (4, 16, 16, 192, 8, 16))];
    for (name, sizes) in expect {
        let c = config(name);
        c.validate().unwrap();
        assert_eq!((c.grid(), c.tokens(), c.head_dim(), c.mlp_hidden(), c.out_channels(), c.patch_dim()), sizes);
        assert_eq!(c.attention, AttentionKind::Dense);
        assert_eq!(c.prediction, Prediction::Velocity);
        assert_eq!(c.time_scale, 1000.0);
        assert_eq!(c.quantization, QuantPolicy::default());
        assert_eq!(c.quantization.other, FloatFormat::F32);
        assert_eq!((c.mlp_ratio, c.class_dropout_prob), (4.0, 0.1));
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(DitConfig::from_json(&json).unwrap(), c, "{json}");
    }
    assert!(config("dit-tiny-sigma").learn_sigma && !config("dit-tiny").learn_sigma);
}

#[test]
fn milliwatt_fields_parse_and_round_trip() {
    let json = r#"{"input_size": 8, "patch_size": 2, "in_channels": 4, "hidden_size": 64, "depth": 2,
        "num_heads": 4, "num_classes": 10, "attention": {"kind": "neighbourhood", "window": 3},
        "prediction": "epsilon", "time_scale": 1.0,
        "quantization": {"attention": "ternary", "mlp": "int4-g64", "other": "f16"}}"#;
    let c = DitConfig::from_json(json).unwrap();
    assert_eq!(c.attention, AttentionKind::Neighbourhood { window: 3 });
    assert_eq!(c.prediction, Prediction::Epsilon);
    assert_eq!(c.time_scale, 1.0);
    let policy = QuantPolicy {
        attention: LinearFormat::Ternary,
        mlp: LinearFormat::Int4 { group: 64 },
        other: FloatFormat::F16,
    };
    assert_eq!(c.quantization, policy);
    assert_eq!(DitConfig::from_json(&serde_json::to_string(&c).unwrap()).unwrap(), c);

    // Policies alone, every format name, missing fields f32.
    let policy: QuantPolicy =
        serde_json::from_str(r#"{"attention":"ternary","mlp":"int4-g64","other":"f16"}"#).unwrap();
    assert_eq!(policy.mlp, LinearFormat::Int4 { group: 64 });
    let names = [
        ("f32", LinearFormat::F32),
        ("f16", LinearFormat::F16),
        ("int8", LinearFormat::Int8),
        ("int4", LinearFormat::Int4 { group: 128 }),
        ("int4-g32", LinearFormat::Int4 { group: 32 }),
        ("int4-g64", LinearFormat::Int4 { group: 64 }),
        ("int4-g128", LinearFormat::Int4 { group: 128 }),
        ("ternary", LinearFormat::Ternary),
        ("ternary-2:4", LinearFormat::Ternary24),
    ];
    for (name, format) in names {
        let policy: QuantPolicy = serde_json::from_str(&format!(r#"{{"mlp": "{name}"}}"#)).unwrap();
        assert_eq!(policy, QuantPolicy { mlp: format, ..QuantPolicy::default() });
        let back = serde_json::to_value(policy).unwrap();
        assert_eq!(serde_json::from_value::<QuantPolicy>(back).unwrap(), policy);
    }
    let packed = [
        (LinearFormat::F32, None),
        (LinearFormat::F16, None),
        (LinearFormat::Int8, Some(Format::Int8)),
        (LinearFormat::Int4 { group: 32 }, Some(Format::Int4 { group: 32, zero_point: false })),
        (LinearFormat::Ternary, Some(Format::Ternary2)),
        (LinearFormat::Ternary24, Some(Format::Ternary24)),
    ];
    for (linear, format) in packed {
        assert_eq!(linear.packed(), format);
    }
}

#[test]
fn bad_configs_name_config_json_and_the_field() {
    let base = r#""input_size": 8, "patch_size": 2, "in_channels": 4, "depth": 2, "num_classes": 10"#;
    let cases = [
        (r#""hidden_size": 64, "num_heads": 3"#, "num_heads"),
        (
            r#""hidden_size": 64, "num_heads": 4, "attention": {"kind": "neighbourhood", "window": 2}"#,
            "attention.window",
        ),
        (
            r#""hidden_size": 64, "num_heads": 4, "attention": {"kind": "neighbourhood", "window": 5}"#,
            "attention.window",
        ),
        (r#""hidden_size": 64, "num_heads": 4, "attention": {"kind": "dense", "window": 3}"#, "attention"),
        (r#""hidden_size": 64, "num_heads": 4, "attention": {"kind": "neighbourhood"}"#, "attention"),
        (r#""hidden_size": 64, "num_heads": 4, "attention": {"kind": "sparse"}"#, "attention"),
        (r#""hidden_size": 64, "num_heads": 4, "quantization": {"mlp": "int3"}"#, "quantization.mlp"),
        (r#""hidden_size": 64, "num_heads": 4, "quantization": {"other": "int8"}"#, "quantization.other"),
        (r#""hidden_size": 64, "num_heads": 4, "prediction": "x0""#, "prediction"),
        (r#""hidden_size": 64, "num_heads": 4, "depth": "two""#, "depth"),
        (r#""hidden_size": 64, "num_heads": 4, "quantisation": {}"#, "quantisation"),
        (r#""hidden_size": 512, "num_heads": 2"#, "num_heads"), // head dim 256
        (r#""hidden_size": 40, "num_heads": 4"#, "num_heads"),  // head dim 10
        (r#""hidden_size": 64, "num_heads": 4, "mlp_ratio": 0.3"#, "mlp_ratio"),
        (r#""hidden_size": 64, "num_heads": 4, "class_dropout_prob": 0.0"#, "class_dropout_prob"),
        (r#""hidden_size": 64, "num_heads": 4, "time_scale": -1"#, "time_scale"),
        (r#""hidden_size": 0, "num_heads": 4"#, "hidden_size"),
    ];
    for (fields, field) in cases {
        let json = format!("{{{base}, {fields}}}");
        let result = DitConfig::from_json(&json);
        let message = result.as_ref().map(|_| ()).unwrap_err().to_string();
        let named = config_error(result);
        assert!(message.contains(&format!("`{field}`")), "{json}: `{message}` does not name `{field}`");
        assert!(named.is_some_and(|n| n == field || n.contains(field) || field.contains(&n)), "{json}: {message}");
    }
    // The largest head dimension the attention kernel takes.
    DitConfig::from_json(&format!(r#"{{{base}, "hidden_size": 128, "num_heads": 1}}"#)).unwrap();
    // Not JSON at all.
    assert_eq!(config_error(DitConfig::from_json("{")), None);
    // A packed format whose layout is invalid, set in code.
    let mut c = config("dit-tiny");
    c.quantization.attention = LinearFormat::Int4 { group: 16 };
    let message = c.validate().unwrap_err().to_string();
    assert!(message.contains("quantization.attention"), "{message}");
    // A file that is not there is an I/O error.
    assert!(matches!(DitConfig::from_file(Path::new("/nonexistent/config.json")), Err(Error::Io { .. })));
}

// ---- Loading -----------------------------------------------------------------------------------

#[test]
fn fixtures_load_with_every_expected_tensor() {
    for name in FIXTURES {
        let c = config(name);
        let w = DitWeights::load(&model_path(name), &c).unwrap();
        let expected = DitWeights::expected(&c);
        assert_eq!(expected.len(), 3 + 4 + 1 + 10 * c.depth as usize + 4);
        assert_eq!(w.names().count(), expected.len());
        for (tensor, shape) in &expected {
            let t = w.float(tensor).unwrap();
            assert_eq!(&t.shape, shape, "{name}: {tensor}");
            assert_eq!(t, &original(name, tensor), "{name}: {tensor}");
        }
        let h = c.hidden_size as usize;
        let shapes: HashMap<&str, Vec<usize>> = expected.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
        assert_eq!(shapes["y_embedder.embedding_table.weight"], [c.num_classes as usize + 1, h]);
        assert_eq!(shapes["final_layer.linear.weight"], [4 * c.out_channels() as usize, h]);
        assert_eq!(shapes["x_embedder.proj.weight"], [h, c.in_channels as usize, 2, 2]);

        let computed = pos_embed_2d(c.hidden_size, c.grid(), c.grid()).unwrap();
        let from_file = &w.float("pos_embed").unwrap().data;
        assert_eq!(from_file.len(), computed.len());
        for (a, b) in from_file.iter().zip(&computed) {
            assert_abs_diff_eq!(a, b, epsilon = 1e-6);
        }

        // Without pos_embed in the file: computed.
        let bytes = rewrite(name, |n, t| (n != "pos_embed").then_some(t));
        let w2 = DitWeights::from_bytes(&bytes, &c, Path::new("no-pos-embed.safetensors")).unwrap();
        assert_eq!(w2.float("pos_embed").unwrap().data, computed);
        assert_eq!(w2.float("pos_embed").unwrap().shape, [1, c.tokens() as usize, h]);

        // Accessors.
        assert!(matches!(
            w.get("blocks.99.attn.qkv.weight"),
            Err(Error::Checkpoint { problem: CheckpointProblem::Missing, .. })
        ));
        assert!(w.packed("blocks.0.attn.qkv.weight").is_err());
    }
}

#[test]
fn unknown_tensors_are_ignored() {
    let c = config("dit-tiny");
    let bytes = model_bytes("dit-tiny");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Owned)> = st
        .iter()
        .map(|(n, v)| (n.to_string(), Owned { dtype: v.dtype(), shape: v.shape().to_vec(), data: v.data().to_vec() }))
        .collect();
    // An EMA copy (of another dtype, even) and optimizer state.
    tensors
        .push(("ema.blocks.0.attn.qkv.weight".into(), Owned { dtype: Dtype::I64, shape: vec![1], data: vec![0; 8] }));
    tensors.push(("opt.step".into(), Owned { dtype: Dtype::U8, shape: vec![3], data: vec![1, 2, 3] }));
    let with_extras = safetensors::serialize(tensors, None).unwrap();
    let w = DitWeights::from_bytes(&with_extras, &c, Path::new("extras.safetensors")).unwrap();
    assert_eq!(w, DitWeights::load(&model_path("dit-tiny"), &c).unwrap());
}

#[test]
fn f16_and_bf16_checkpoints_load_within_their_precision() {
    for name in FIXTURES {
        let c = config(name);
        let reference = DitWeights::load(&model_path(name), &c).unwrap();
        // (dtype, encode, unit roundoff of the format)
        type Encode = fn(f32) -> [u8; 2];
        let formats: [(Dtype, Encode, f32); 2] = [
            (Dtype::F16, |x| half::f16::from_f32(x).to_le_bytes(), 2f32.powi(-11)),
            (Dtype::BF16, |x| half::bf16::from_f32(x).to_le_bytes(), 2f32.powi(-8)),
        ];
        for (dtype, encode, step) in formats {
            let bytes = rewrite(name, |_, t| {
                let data = f32s(&t.data).into_iter().flat_map(encode).collect();
                Some(Owned { dtype, shape: t.shape, data })
            });
            let w = DitWeights::from_bytes(&bytes, &c, Path::new("half.safetensors")).unwrap();
            for (tensor, _) in DitWeights::expected(&c) {
                let (a, b) = (w.float(&tensor).unwrap(), reference.float(&tensor).unwrap());
                assert_eq!(a.shape, b.shape);
                for (x, y) in a.data.iter().zip(&b.data) {
                    // Round to nearest: within the unit roundoff relative, plus f16's smallest subnormal.
                    assert!((x - y).abs() <= y.abs() * step + 6e-8, "{name} {dtype:?} {tensor}: {x} vs {y}");
                }
            }
        }
    }
}

// ---- Errors that name the tensor -----------------------------------------------------------------

#[test]
fn missing_wrong_shape_and_wrong_dtype_are_typed_errors() {
    let c = config("dit-tiny");
    let path = Path::new("broken.safetensors");
    let victim = "blocks.1.mlp.fc1.weight";

    let bytes = rewrite("dit-tiny", |n, t| (n != victim).then_some(t));
    let (tensor, problem) = checkpoint_error(DitWeights::from_bytes(&bytes, &c, path));
    assert_eq!((tensor.as_str(), problem), (victim, CheckpointProblem::Missing));

    let bytes = rewrite("dit-tiny", |n, t| {
        Some(if n == victim { Owned { shape: vec![t.shape[1], t.shape[0]], ..t } } else { t })
    });
    let (tensor, problem) = checkpoint_error(DitWeights::from_bytes(&bytes, &c, path));
    assert_eq!(tensor, victim);
    assert_eq!(problem, CheckpointProblem::Shape { expected: vec![256, 64], got: vec![64, 256] });

    let bytes = rewrite("dit-tiny", |n, t| {
        Some(if n == victim {
            let data = f32s(&t.data).into_iter().flat_map(|x| (x as i64).to_le_bytes()).collect();
            Owned { dtype: Dtype::I64, data, ..t }
        } else {
            t
        })
    });
    let (tensor, problem) = checkpoint_error(DitWeights::from_bytes(&bytes, &c, path));
    assert_eq!((tensor.as_str(), problem), (victim, CheckpointProblem::Dtype { got: "I64".into() }));

    let bytes = rewrite("dit-tiny", |n, t| {
        Some(if n == "x_embedder.proj.bias" {
            let mut v = f32s(&t.data);
            v[3] = f32::NAN;
            Owned { data: v.into_iter().flat_map(f32::to_le_bytes).collect(), ..t }
        } else {
            t
        })
    });
    let (tensor, problem) = checkpoint_error(DitWeights::from_bytes(&bytes, &c, path));
    assert_eq!(tensor, "x_embedder.proj.bias");
    assert!(matches!(problem, CheckpointProblem::Invalid(_)));

    // The wrong config for the file: the first mismatching tensor is named.
    let sigma = config("dit-tiny-sigma");
    let (tensor, problem) = checkpoint_error(DitWeights::load(&model_path("dit-tiny"), &sigma));
    assert_eq!(tensor, "pos_embed");
    assert!(matches!(problem, CheckpointProblem::Shape { .. }));

    // No file.
    assert!(matches!(DitWeights::load(Path::new("/nonexistent/model.safetensors"), &c), Err(Error::Io { .. })));
    // An invalid config is reported before any tensor is read.
    let mut bad = c.clone();
    bad.num_heads = 3;
    assert_eq!(config_error(DitWeights::load(&model_path("dit-tiny"), &bad)).as_deref(), Some("num_heads"));
}

#[test]
fn a_truncated_file_names_the_tensor_it_cuts_off() {
    let c = config("dit-tiny");
    let bytes = model_bytes("dit-tiny");
    let (header_len, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
    let data_start = 8 + header_len;
    let order = metadata.offset_keys();
    let path = Path::new("cut.safetensors");
    // Cut inside the first, a middle, and the last tensor, and exactly at a tensor's start.
    for (i, cut_inside) in [(0, true), (order.len() / 2, true), (order.len() - 1, true), (5, false)] {
        let tensor = &order[i];
        let (start, end) = metadata.info(tensor).unwrap().data_offsets;
        let cut = data_start + if cut_inside { (start + end) / 2 } else { start };
        let (got, problem) = checkpoint_error(DitWeights::from_bytes(&bytes[..cut], &c, path));
        assert_eq!((&got, problem), (tensor, CheckpointProblem::Truncated), "cut at {cut}");
    }
    // Inside the header, and before the header's length.
    for cut in [data_start / 2, 4, 0] {
        let (got, problem) = checkpoint_error(DitWeights::from_bytes(&bytes[..cut], &c, path));
        assert_eq!((got.as_str(), problem), ("(header)", CheckpointProblem::Truncated), "cut at {cut}");
    }
    // Bytes past the end are not a truncation.
    let mut longer = bytes.clone();
    longer.extend([0; 4]);
    let (got, problem) = checkpoint_error(DitWeights::from_bytes(&longer, &c, path));
    assert_eq!(got, "(header)");
    assert!(matches!(problem, CheckpointProblem::Invalid(_)));
}

// ---- Quantize on load --------------------------------------------------------------------------

const LINEAR_FORMATS: [LinearFormat; 8] = LinearFormat::ALL;

#[test]
fn quantize_on_load_packs_the_block_linears_per_policy() {
    for name in FIXTURES {
        let dense = DitWeights::load(&model_path(name), &config(name)).unwrap();
        for (i, &format) in LINEAR_FORMATS.iter().enumerate() {
            // Attention and MLP in different formats, so a swap would show.
            let other = LINEAR_FORMATS[(i + 3) % LINEAR_FORMATS.len()];
            let mut c = config(name);
            c.quantization = QuantPolicy { attention: format, mlp: other, other: FloatFormat::F16 };
            let w = DitWeights::load(&model_path(name), &c).unwrap();
            assert_eq!(w.config, c);
            for (tensor, shape) in DitWeights::expected(&c) {
                let original = dense.float(&tensor).unwrap();
                let policy = match is_block_linear(&tensor) {
                    Some("attention") => Some(format),
                    Some(_) => Some(other),
                    None => None,
                };
                match policy.and_then(LinearFormat::packed) {
                    Some(f) => {
                        let p = w.packed(&tensor).unwrap();
                        assert_eq!(p.format, f, "{name} {tensor}");
                        let (m, k) = (shape[0] as u32, shape[1] as u32);
                        let want = quantize(&original.data, m, k, f, ScaleMode::PerRow).unwrap().pack().unwrap();
                        assert_eq!(p, &want, "{name} {tensor}");
                        assert!(w.float(&tensor).is_err());
                        assert_eq!(w.get(&tensor).unwrap().shape(), shape);
                    }
                    None => {
                        assert_eq!(w.get(&tensor).unwrap(), &WeightData::Float(original.clone()), "{name} {tensor}")
                    }
                }
            }
        }
    }
}

#[test]
fn from_float_builds_random_models() {
    let mut c = config("dit-tiny-sigma");
    c.quantization.mlp = LinearFormat::Ternary24;
    let mut seed = 1u32;
    let mut tensors: BTreeMap<String, HostTensor> = DitWeights::expected(&c)
        .into_iter()
        .filter(|(n, _)| n != "pos_embed")
        .map(|(n, shape)| {
            let data = (0..shape.iter().product::<usize>())
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect();
            (n, HostTensor { shape, data })
        })
        .collect();
    let w = DitWeights::from_float(&c, tensors.clone()).unwrap();
    assert_eq!(w.packed("blocks.2.mlp.fc2.weight").unwrap().format, Format::Ternary24);
    assert_eq!(w.float("pos_embed").unwrap().data, pos_embed_2d(48, 4, 4).unwrap());

    tensors.get_mut("final_layer.linear.bias").unwrap().data.pop();
    let (tensor, problem) = checkpoint_error(DitWeights::from_float(&c, tensors.clone()));
    assert_eq!(tensor, "final_layer.linear.bias");
    assert!(matches!(problem, CheckpointProblem::Invalid(_)));
    tensors.remove("t_embedder.mlp.2.bias");
    let (tensor, problem) = checkpoint_error(DitWeights::from_float(&c, tensors));
    assert_eq!((tensor.as_str(), problem), ("t_embedder.mlp.2.bias", CheckpointProblem::Missing));
}

// ---- Pre-packed files --------------------------------------------------------------------------

#[test]
fn save_packed_then_load_packed_is_exact() {
    let dir = temp_dir("round-trip");
    let policies = [
        (
            "ternary",
            QuantPolicy { attention: LinearFormat::Ternary, mlp: LinearFormat::Ternary24, other: FloatFormat::F16 },
        ),
        (
            "int4",
            QuantPolicy {
                attention: LinearFormat::Int8,
                mlp: LinearFormat::Int4 { group: 32 },
                other: FloatFormat::F32,
            },
        ),
        ("f32", QuantPolicy::default()),
    ];
    for name in FIXTURES {
        for (label, policy) in policies {
            let mut c = config(name);
            c.quantization = policy;
            let w = DitWeights::load(&model_path(name), &c).unwrap();
            let path = dir.join(format!("{name}-{label}.safetensors"));
            w.save_packed(&path).unwrap();
            let back = DitWeights::load_packed(&path).unwrap();
            assert_eq!(back.config, c);
            assert_eq!(back.names().collect::<Vec<_>>(), w.names().collect::<Vec<_>>());
            for tensor in w.names() {
                // Packed == compares format, m, k, every stride and every word.
                assert_eq!(back.get(tensor).unwrap(), w.get(tensor).unwrap(), "{name} {label} {tensor}");
            }
            assert_eq!(back, w);
            if policy != QuantPolicy::default() {
                // The float loader points at load_packed instead of calling it missing.
                let message = DitWeights::load(&path, &c).unwrap_err().to_string();
                assert!(message.contains("load_packed"), "{message}");
            }
        }
    }
    // An ordinary checkpoint is not a pre-packed one.
    let (tensor, _) = checkpoint_error(DitWeights::load_packed(&model_path("dit-tiny")));
    assert_eq!(tensor, "milliwatt.version");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn load_packed_rejects_inconsistent_files() {
    let dir = temp_dir("inconsistent");
    let mut c = config("dit-tiny");
    c.quantization =
        QuantPolicy { attention: LinearFormat::Int4 { group: 64 }, mlp: LinearFormat::Ternary, ..c.quantization };
    let w = DitWeights::load(&model_path("dit-tiny"), &c).unwrap();
    let good = dir.join("good.safetensors");
    w.save_packed(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = metadata.metadata().clone().unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();

    // Writes the good file with `edit` applied to its tensors and metadata, then loads it.
    let load_edited = |edit_tensor: &dyn Fn(&str, Owned) -> Option<Owned>,
                       edit_meta: &dyn Fn(&mut HashMap<String, String>)| {
        let tensors: Vec<(String, Owned)> = st
            .iter()
            .filter_map(|(n, v)| {
                let owned = Owned { dtype: v.dtype(), shape: v.shape().to_vec(), data: v.data().to_vec() };
                edit_tensor(n, owned).map(|t| (n.to_string(), t))
            })
            .collect();
        let mut meta = metadata.clone();
        edit_meta(&mut meta);
        let path = dir.join("bad.safetensors");
        safetensors::serialize_to_file(tensors, Some(meta), &path).unwrap();
        DitWeights::load_packed(&path)
    };
    let attempt = |edit_tensor: &dyn Fn(&str, Owned) -> Option<Owned>,
                   edit_meta: &dyn Fn(&mut HashMap<String, String>)| {
        checkpoint_error(load_edited(edit_tensor, edit_meta))
    };
    let keep = |_: &str, t: Owned| Some(t);
    let no_meta = |_: &mut HashMap<String, String>| {};
    let qkv = "blocks.0.attn.qkv.weight";

    // A stream missing.
    let (tensor, problem) = attempt(&|n, t| (n != "blocks.1.mlp.fc2.weight.data").then_some(t), &no_meta);
    assert_eq!((tensor.as_str(), problem), ("blocks.1.mlp.fc2.weight.data", CheckpointProblem::Missing));
    // A stream of the wrong shape.
    let (tensor, problem) = attempt(
        &|n, t| {
            Some(if n == "blocks.0.attn.qkv.weight.scales" {
                Owned { shape: vec![t.shape[0] / 2, t.shape[1] * 2], ..t }
            } else {
                t
            })
        },
        &no_meta,
    );
    assert_eq!(tensor, "blocks.0.attn.qkv.weight.scales");
    assert!(matches!(problem, CheckpointProblem::Shape { .. }));
    // A stream of the wrong dtype.
    let (tensor, problem) = attempt(
        &|n, t| Some(if n == "blocks.0.attn.qkv.weight.data" { Owned { dtype: Dtype::I32, ..t } } else { t }),
        &no_meta,
    );
    assert_eq!(
        (tensor.as_str(), problem),
        ("blocks.0.attn.qkv.weight.data", CheckpointProblem::Dtype { got: "I32".into() })
    );
    // Metadata that disagrees with the format's layout, or with the policy.
    let edits: [(&str, &str); 3] =
        [("\"row_words\":8", "\"row_words\":12"), ("int4-g64", "int4-g128"), ("\"k\":64", "\"k\":65")];
    for (from, to) in edits {
        let (tensor, problem) = attempt(&keep, &|m| {
            let key = format!("milliwatt.packed.{qkv}");
            let text = m[&key].replace(from, to);
            assert_ne!(text, m[&key], "{from} not in {}", m[&key]);
            m.insert(key, text);
        });
        assert_eq!(tensor, qkv, "{from} -> {to}");
        assert!(matches!(problem, CheckpointProblem::Invalid(_) | CheckpointProblem::Shape { .. }), "{problem:?}");
    }
    // A packed weight's metadata gone.
    let (tensor, problem) = attempt(&keep, &|m| {
        m.remove(&format!("milliwatt.packed.{qkv}"));
    });
    assert_eq!((tensor.as_str(), problem), (qkv, CheckpointProblem::Missing));
    // A bad config in the metadata.
    let field = config_error(load_edited(&keep, &|m| {
        let text = m["milliwatt.config"].replace("\"num_heads\":4", "\"num_heads\":3");
        m.insert("milliwatt.config".into(), text);
    }));
    assert_eq!(field.as_deref(), Some("num_heads"));
    // Truncated.
    let (tensor, problem) = {
        let path = dir.join("cut.safetensors");
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        checkpoint_error(DitWeights::load_packed(&path))
    };
    assert_eq!(problem, CheckpointProblem::Truncated);
    assert!(st.names().contains(&tensor.as_str()), "{tensor}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `DitWeights::open` on the shipped directories: a state dict quantizes on load per the policy
/// asked for; a pre-packed file refuses other block-linear formats and a `config.json` that
/// disagrees with it, naming `config.json`, and takes another float format for the rest.
#[test]
fn open_reads_model_directories() {
    use milliwatt::model::{FloatFormat, LinearFormat, QuantPolicy, WeightData};
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let int8 = QuantPolicy { attention: LinearFormat::Int8, mlp: LinearFormat::Int8, other: FloatFormat::F32 };
    let w = DitWeights::open(&models.join("mnist-fp32"), Some(int8)).unwrap();
    assert_eq!(w.config.quantization, int8);
    assert!(matches!(w.get("blocks.0.mlp.fc1.weight").unwrap(), WeightData::Packed(_)));

    let packed = models.join("mnist-ternary");
    assert!(DitWeights::open(&packed, None).unwrap().packed("blocks.3.attn.qkv.weight").is_ok());
    let e = DitWeights::open(&packed, Some(int8)).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("pre-packed"), "{e}");
    let own = DitWeights::open(&packed, None).unwrap().config.quantization;
    assert_eq!(own.overridden(None, None), None);
    let f16 = QuantPolicy { other: FloatFormat::F16, ..own };
    assert_eq!(own.overridden(None, Some(FloatFormat::F16)), Some(f16));
    // Dense f16 linears take the graph's float format with them unless told otherwise.
    let dense16 = QuantPolicy { attention: LinearFormat::F16, mlp: LinearFormat::F16, other: FloatFormat::F16 };
    assert_eq!(own.overridden(Some(LinearFormat::F16), None), Some(dense16));
    assert_eq!(own.overridden(Some(LinearFormat::Int8), None), Some(QuantPolicy { other: own.other, ..int8 }));
    let w = DitWeights::open(&packed, Some(f16)).unwrap();
    assert_eq!(w.config.quantization, f16);
    assert!(w.packed("blocks.3.attn.qkv.weight").is_ok());

    let dir = std::env::temp_dir().join(format!("milliwatt-open-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(packed.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let config = std::fs::read_to_string(packed.join("config.json")).unwrap().replace("\"depth\": 4", "\"depth\": 3");
    std::fs::write(dir.join("config.json"), config).unwrap();
    let e = DitWeights::open(&dir, None).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("differs"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every step's modulation is planned in the setup where it moves fewer bytes: a few guided or
/// unguided images over several steps (the adaLN weights dominate a step); not 100 guided
/// images (the modulation itself would outweigh them), not one step, never Heun; and
/// `with_plan` refuses it for Heun.
#[test]
fn modulation_of_every_step_is_planned_where_it_moves_fewer_bytes() {
    let c = config("dit-tiny");
    let spec = |images, steps, sampler| SampleSpec { images, steps, sampler, guidance: Some(2.0), img2img: false };
    let plan = |s: SampleSpec| ModulationPlan::for_spec(&c, &s);
    assert_eq!(plan(spec(1, 8, SamplerKind::Euler)), ModulationPlan::EveryStep);
    assert_eq!(plan(SampleSpec { guidance: None, ..spec(2, 4, SamplerKind::Euler) }), ModulationPlan::EveryStep);
    assert_eq!(plan(spec(100, 8, SamplerKind::Euler)), ModulationPlan::PerStep);
    assert_eq!(plan(spec(1, 1, SamplerKind::Euler)), ModulationPlan::PerStep);
    assert_eq!(plan(spec(1, 8, SamplerKind::Heun)), ModulationPlan::PerStep);
    let heun = SampleGraph::with_plan(&c, &spec(1, 8, SamplerKind::Heun), ModulationPlan::EveryStep);
    assert!(matches!(heun, Err(Error::Unsupported { .. })), "{:?}", heun.map(|_| ()));
    // Where planned, the graph has no per-step timestep op and a slice per modulation tensor.
    let g = SampleGraph::new(&c, &spec(1, 8, SamplerKind::Euler)).unwrap();
    assert_eq!(g.plan, ModulationPlan::EveryStep);
    let slices = g.graph.ops().iter().filter(|o| o.kind() == "step_slice").count();
    assert_eq!(slices, 3 * c.depth as usize + 1);
}

/// The largest activation the generator checks a request against is the largest non-weight
/// tensor of the graph it would build, for float and low-bit policies, f16, learned sigma,
/// guided or not.
#[test]
fn the_largest_activation_is_the_graphs() {
    let mut f16 = config("dit-tiny");
    f16.quantization = QuantPolicy { attention: LinearFormat::F16, mlp: LinearFormat::F16, other: FloatFormat::F16 };
    let mut wide = config("dit-tiny");
    wide.mlp_ratio = 1.0; // QKV outgrows the MLP
    for c in [config("dit-tiny"), config("dit-tiny-sigma"), f16, wide] {
        for (images, guidance) in [(1, None), (7, Some(2.0)), (3, None)] {
            let sampler = if c.prediction == Prediction::Epsilon { SamplerKind::Ddim } else { SamplerKind::Euler };
            for steps in [2, 60] {
                let spec = SampleSpec { images, steps, sampler, guidance, img2img: false };
                let graph = SampleGraph::new(&c, &spec).unwrap();
                let largest =
                    graph.graph.tensors().iter().filter(|t| t.kind != TensorKind::Weight).map(|t| t.bytes).max();
                let (bytes, _) = SampleGraph::largest_activation(&c, &spec);
                // The graph rounds each tensor up to 4 bytes.
                assert_eq!(largest, Some(bytes.next_multiple_of(4)), "{c:?} {spec:?} {:?}", graph.plan);
            }
        }
    }
}
