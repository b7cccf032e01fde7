//! Structure-aware fuzzing of everything that reads a file a user hands the crate: the config
//! parser, the safetensors weight loader and the pre-packed loader. Each target starts from a
//! seed corpus of real files (the golden fixtures, the shipped models) and malformed ones, and
//! mutates them where parsers go wrong: the safetensors header's JSON (dtypes, shapes, offsets,
//! entries, metadata, the packed-format records, the stored config), its length prefix, and the
//! raw bytes (flips, truncation, junk). Every input must come back as `Ok` or a typed error —
//! never a panic, an abort or a hang.
//!
//! CI runs `MILLIWATT_FUZZ_CASES` (default 2,000) cases per target, well under a minute each. The
//! long form is the same test with more cases:
//!
//! ```sh
//! MILLIWATT_FUZZ_CASES=200000 cargo test --release --test fuzz -- --nocapture
//! ```
//!
//! or runs for a time: `MILLIWATT_FUZZ_SECONDS=3600` repeats rounds of `MILLIWATT_FUZZ_CASES`
//! fresh inputs until an hour has passed (name one target, e.g. `-- fuzz_pre_packed_loader`).
//!
//! (cargo-fuzz needs a nightly toolchain, which the registries here do not offer; see
//! BENCHMARKS.md for the long runs' execution counts and findings.)

use std::path::{Path, PathBuf};

use milliwatt::model::{DitConfig, DitWeights, LinearFormat, QuantPolicy};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cases() -> u32 {
    std::env::var("MILLIWATT_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

/// How long to keep fuzzing (`MILLIWATT_FUZZ_SECONDS`; unset: one round of `cases()`).
fn seconds() -> Option<f64> {
    std::env::var("MILLIWATT_FUZZ_SECONDS").ok().and_then(|v| v.parse().ok())
}

/// Runs `test` on rounds of `cases()` inputs of `strategy` (one round, or as many as fit
/// `seconds()`, each from a fresh random seed) and prints how many ran.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let config = Config { cases: cases(), failure_persistence: None, ..Config::default() };
    let started = std::time::Instant::now();
    let mut inputs = 0u64;
    loop {
        // A fresh runner draws a fresh random seed.
        let mut runner = TestRunner::new(config.clone());
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("{name}: {e} (after {inputs} inputs of earlier rounds)");
        }
        inputs += u64::from(cases());
        if seconds().is_none_or(|s| started.elapsed().as_secs_f64() >= s) {
            break;
        }
    }
    println!("{name}: {inputs} inputs in {:.1} s, no panic", started.elapsed().as_secs_f64());
}

/// JSON values of every kind, nested a little: what a field might hold by mistake.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|v| json!(v)),
        any::<u64>().prop_map(|v| json!(v)),
        any::<f64>().prop_map(|v| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)),
        prop_oneof![Just(0u32), Just(1), Just(2), Just(3), Just(4), Just(7), Just(128), Just(u32::MAX)]
            .prop_map(|v| json!(v)),
        "[a-z0-9:_-]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("f32"),
            Just("f16"),
            Just("bf16"),
            Just("ternary"),
            Just("ternary-2:4"),
            Just("int8"),
            Just("int4-g64"),
            Just("int4-g0"),
            Just("int4-g3"),
            Just("dense"),
            Just("neighbourhood"),
            Just("epsilon"),
            Just("velocity"),
            Just("F32"),
            Just("U32"),
            Just("I8")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The seed configs: the fixtures' and the shipped models'.
fn seed_configs() -> Vec<Value> {
    let mut out = Vec::new();
    for dir in
        ["tests/fixtures/dit-golden/dit-tiny", "tests/fixtures/dit-golden/dit-tiny-sigma", "models/mnist-ternary"]
    {
        let text = std::fs::read_to_string(root().join(dir).join("config.json")).unwrap();
        out.push(serde_json::from_str(&text).unwrap());
    }
    out
}

/// One edit of a JSON object: set, remove or replace a field (nested ones included).
#[derive(Clone, Debug)]
enum JsonEdit {
    Set(String, Value),
    Remove(String),
    SetNested(String, String, Value),
}

fn config_field() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "input_size",
            "patch_size",
            "in_channels",
            "hidden_size",
            "depth",
            "num_heads",
            "mlp_ratio",
            "class_dropout_prob",
            "num_classes",
            "learn_sigma",
            "attention",
            "prediction",
            "time_scale",
            "quantization",
        ])
        .prop_map(String::from),
        "[a-z_]{1,12}",
    ]
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        (config_field(), any_json()).prop_map(|(k, v)| JsonEdit::Set(k, v)),
        config_field().prop_map(JsonEdit::Remove),
        (
            prop::sample::select(vec!["quantization", "attention"]),
            prop::sample::select(vec!["attention", "mlp", "other", "kind", "window", "x"]),
            any_json()
        )
            .prop_map(|(a, b, v)| JsonEdit::SetNested(a.into(), b.into(), v)),
    ]
}

fn apply(value: &mut Value, edit: &JsonEdit) {
    let Some(obj) = value.as_object_mut() else { return };
    match edit {
        JsonEdit::Set(k, v) => {
            obj.insert(k.clone(), v.clone());
        }
        JsonEdit::Remove(k) => {
            obj.remove(k);
        }
        JsonEdit::SetNested(a, b, v) => {
            let inner = obj.entry(a.clone()).or_insert_with(|| json!({}));
            if let Some(o) = inner.as_object_mut() {
                o.insert(b.clone(), v.clone());
            } else {
                *inner = json!({ b.clone(): v.clone() });
            }
        }
    }
}

#[test]
fn fuzz_config_parser() {
    let seeds = seed_configs();
    let strategy = (
        0..seeds.len(),
        prop::collection::vec(json_edit(), 0..5),
        prop_oneof![
            3 => Just(None),
            1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Some),
            1 => any_json().prop_map(|v| Some(v.to_string().into_bytes())),
        ],
    );
    fuzz("config parser", strategy, |(seed, edits, raw)| {
        let text = match raw {
            Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            None => {
                let mut v = seeds[seed].clone();
                for e in &edits {
                    apply(&mut v, e);
                }
                v.to_string()
            }
        };
        // Ok or a typed error; a config that parses also validates.
        if let Ok(c) = DitConfig::from_json(&text) {
            prop_assert!(c.validate().is_ok());
        }
        Ok(())
    });
}

/// A safetensors file split into its header (JSON) and data.
fn split(bytes: &[u8]) -> (Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&bytes[8..8 + n]).unwrap(), bytes[8 + n..].to_vec())
}

fn join(header: &Value, data: &[u8], length_delta: i64) -> Vec<u8> {
    let mut h = header.to_string().into_bytes();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let n = (h.len() as i64 + length_delta).max(0) as u64;
    let mut out = n.to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// One mutation of a safetensors file.
#[derive(Clone, Debug)]
enum FileEdit {
    /// A tensor entry's field (`dtype`, `shape`, `data_offsets`) set to a value.
    Entry(usize, &'static str, Value),
    /// A tensor entry removed.
    DropEntry(usize),
    /// A metadata value (`__metadata__`) replaced: the config, a packed record, the version.
    Metadata(usize, Value),
    /// A packed record's field (`format`, `m`, `k`, …) set to a value.
    PackedField(usize, String, Value),
    /// The header length prefix off by this much.
    Length(i64),
    /// A byte of the file flipped (position as a fraction of the length).
    Flip(f64, u8),
    /// The file cut at this fraction of its length.
    Truncate(f64),
    /// Junk appended.
    Append(Vec<u8>),
}

fn shape_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::collection::vec(
            prop_oneof![Just(0u64), Just(1), Just(2), 0u64..300, Just(u64::from(u32::MAX)), Just(u64::MAX / 2)],
            0..5
        )
        .prop_map(|v| json!(v)),
        any_json(),
    ]
}

fn file_edit() -> impl Strategy<Value = FileEdit> {
    prop_oneof![
        (
            0usize..64,
            prop::sample::select(vec!["dtype", "shape", "data_offsets"]),
            prop_oneof![shape_value(), any_json()]
        )
            .prop_map(|(i, f, v)| FileEdit::Entry(i, f, v)),
        (0usize..64).prop_map(FileEdit::DropEntry),
        (0usize..64, any_json()).prop_map(|(i, v)| FileEdit::Metadata(i, v)),
        (
            0usize..64,
            prop::sample::select(vec!["format", "m", "k", "rows", "cols", "group", "zero_point", "row_words", "x"]),
            any_json()
        )
            .prop_map(|(i, f, v)| FileEdit::PackedField(i, f.into(), v)),
        prop_oneof![Just(-8i64), Just(-1), Just(1), Just(8), Just(1 << 40)].prop_map(FileEdit::Length),
        (0.0f64..1.0, any::<u8>()).prop_map(|(p, b)| FileEdit::Flip(p, b)),
        (0.0f64..1.0).prop_map(FileEdit::Truncate),
        prop::collection::vec(any::<u8>(), 1..32).prop_map(FileEdit::Append),
    ]
}

fn mutate(bytes: &[u8], edits: &[FileEdit]) -> Vec<u8> {
    let (mut header, data) = split(bytes);
    let mut length_delta = 0;
    let mut raw = Vec::new();
    for e in edits {
        let obj = header.as_object_mut().unwrap();
        let tensors: Vec<String> = obj.keys().filter(|k| *k != "__metadata__").cloned().collect();
        match e {
            FileEdit::Entry(i, field, v) if !tensors.is_empty() => {
                if let Some(t) = obj.get_mut(&tensors[i % tensors.len()]).and_then(Value::as_object_mut) {
                    t.insert((*field).into(), v.clone());
                }
            }
            FileEdit::DropEntry(i) if !tensors.is_empty() => {
                obj.remove(&tensors[i % tensors.len()]);
            }
            FileEdit::Metadata(i, v) => {
                if let Some(m) = obj.get_mut("__metadata__").and_then(Value::as_object_mut) {
                    let keys: Vec<String> = m.keys().cloned().collect();
                    if !keys.is_empty() {
                        // Metadata values are strings: a JSON text or any text.
                        let text = match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        m.insert(keys[i % keys.len()].clone(), Value::String(text));
                    }
                }
            }
            FileEdit::PackedField(i, field, v) => {
                if let Some(m) = obj.get_mut("__metadata__").and_then(Value::as_object_mut) {
                    let keys: Vec<String> = m.keys().filter(|k| k.starts_with("milliwatt.packed.")).cloned().collect();
                    if !keys.is_empty() {
                        let key = &keys[i % keys.len()];
                        let mut record: Value =
                            m[key].as_str().and_then(|s| serde_json::from_str(s).ok()).unwrap_or(json!({}));
                        if let Some(r) = record.as_object_mut() {
                            r.insert(field.clone(), v.clone());
                        }
                        m.insert(key.clone(), Value::String(record.to_string()));
                    }
                }
            }
            FileEdit::Length(d) => length_delta = *d,
            other => raw.push(other.clone()),
        }
    }
    let mut out = join(&header, &data, length_delta);
    for e in raw {
        match e {
            FileEdit::Flip(p, b) if !out.is_empty() => {
                let i = ((out.len() - 1) as f64 * p) as usize;
                out[i] ^= b.max(1);
            }
            FileEdit::Truncate(p) => out.truncate((out.len() as f64 * p) as usize),
            FileEdit::Append(junk) => out.extend(junk),
            _ => {}
        }
    }
    out
}

/// Float checkpoints with their configs, and pre-packed files.
struct Seeds {
    float: Vec<(DitConfig, Vec<u8>)>,
    packed: Vec<Vec<u8>>,
}

/// The seed files: real checkpoints, and a pre-packed one of each low-bit format.
fn seed_files() -> Seeds {
    let fixture = |name: &str| {
        let dir = root().join("tests/fixtures/dit-golden").join(name);
        (DitConfig::from_file(&dir.join("config.json")).unwrap(), std::fs::read(dir.join("model.safetensors")).unwrap())
    };
    let float = vec![fixture("dit-tiny"), fixture("dit-tiny-sigma")];
    let mut packed = vec![std::fs::read(root().join("models/mnist-ternary24/model.safetensors")).unwrap()];
    let dir = std::env::temp_dir().join(format!("milliwatt-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, format) in
        [LinearFormat::Ternary, LinearFormat::Int8, LinearFormat::Int4 { group: 32 }, LinearFormat::Ternary24]
            .into_iter()
            .enumerate()
    {
        let policy = QuantPolicy { attention: format, mlp: format, ..QuantPolicy::default() };
        let Ok(w) = DitWeights::open(&root().join("tests/fixtures/dit-golden/dit-tiny"), Some(policy)) else {
            continue;
        };
        let path = dir.join(format!("packed-{i}.safetensors"));
        w.save_packed(&path).unwrap();
        packed.push(std::fs::read(&path).unwrap());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Seeds { float, packed }
}

#[test]
fn fuzz_safetensors_weight_loader() {
    let float = seed_files().float;
    let strategy = (0..float.len(), prop::collection::vec(file_edit(), 0..4));
    fuzz("safetensors weight loader", strategy, |(seed, edits)| {
        let (config, bytes) = &float[seed];
        let mutated = mutate(bytes, &edits);
        // Ok or a typed error, and what loads is finite.
        if let Ok(w) = DitWeights::from_bytes(&mutated, config, Path::new("fuzz.safetensors")) {
            for name in w.names() {
                if let Ok(t) = w.float(name) {
                    prop_assert!(t.data.iter().all(|v| v.is_finite()), "{name} holds a non-finite value");
                }
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_pre_packed_loader() {
    let packed = seed_files().packed;
    assert!(packed.len() >= 4, "seed corpus: {} pre-packed files", packed.len());
    let strategy = (0..packed.len(), prop::collection::vec(file_edit(), 0..4));
    fuzz("pre-packed loader", strategy, |(seed, edits)| {
        let mutated = mutate(&packed[seed], &edits);
        if let Ok(w) = DitWeights::from_packed_bytes(&mutated, Path::new("fuzz.safetensors")) {
            prop_assert!(w.config.validate().is_ok());
            // What loads must also unpack: every packed weight's codes decode.
            for name in w.names() {
                if let Ok(p) = w.packed(name) {
                    prop_assert!(p.unpack().is_ok(), "{name}: loaded but does not unpack");
                }
            }
        }
        Ok(())
    });
}
