//! The DiT configuration: DiT's own constructor arguments (as `config.json` gives them) plus
//! milliwatt's choices (attention kind, prediction, time scale, quantization policy), with the
//! checks the kernels need and the sizes derived from it.
//!
//! ```
//! use milliwatt::model::{DitConfig, LinearFormat};
//! # fn main() -> milliwatt::Result<()> {
//! let config = DitConfig::from_json(
//!     r#"{"input_size": 32, "patch_size": 2, "in_channels": 4, "hidden_size": 384, "depth": 12,
//!         "num_heads": 6, "num_classes": 1000,
//!         "quantization": {"attention": "ternary", "mlp": "int4-g64", "other": "f16"}}"#,
//! )?;
//! assert_eq!((config.grid(), config.tokens(), config.head_dim(), config.mlp_hidden()), (16, 256, 64, 1536));
//! assert_eq!(config.quantization.mlp, LinearFormat::Int4 { group: 64 });
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::quant::Format;

/// The largest head dimension the attention kernel holds in registers (keep in sync with
/// shaders/attention.wgsl).
const MAX_HEAD_DIM: u32 = 128;

/// The file name of a model's configuration, and the path of errors in one given as text.
pub(crate) const CONFIG_NAME: &str = "config.json";

/// A class-conditional DiT (facebookresearch/DiT `models.py`) and how milliwatt runs it.
///
/// The first ten fields are DiT's constructor arguments under their own names, so the
/// `config.json` of a DiT checkpoint maps one to one; the rest are milliwatt's and default to the
/// plain model (dense attention, velocity prediction, model time = 1000 t, every weight f32).
/// Fields not listed here are rejected, so a misspelt option cannot silently fall back to its
/// default.
///
/// Call [`DitConfig::validate`] (the loaders do) before trusting the derived sizes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DitConfig {
    /// Image (or latent) side in pixels: images are `input_size` × `input_size`.
    pub input_size: u32,
    /// Patch side p: each token covers p × p pixels.
    pub patch_size: u32,
    /// Image channels C.
    pub in_channels: u32,
    /// Transformer width.
    pub hidden_size: u32,
    /// Transformer blocks.
    pub depth: u32,
    /// Attention heads.
    pub num_heads: u32,
    /// MLP width over `hidden_size` (default 4.0); their product must be an integer.
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f32,
    /// Label dropout in training (default 0.1). Only its sign matters here: DiT has the null-class
    /// embedding row (label `num_classes`, used for guidance) exactly when it is above 0.
    #[serde(default = "default_class_dropout_prob")]
    pub class_dropout_prob: f32,
    /// Classes; label `num_classes` is the null class.
    pub num_classes: u32,
    /// Whether the model also outputs a variance (2C output channels, of which the first C are
    /// the prediction). Default false.
    #[serde(default)]
    pub learn_sigma: bool,
    /// Self-attention over the token grid (default dense).
    #[serde(default)]
    pub attention: AttentionKind,
    /// What the model predicts (default velocity).
    #[serde(default)]
    pub prediction: Prediction,
    /// Model time per unit of sampler time: the model is called with `time_scale · t` (default
    /// 1000, DiT's timestep range).
    #[serde(default = "default_time_scale")]
    pub time_scale: f32,
    /// Weight formats per layer kind (default: everything f32).
    #[serde(default)]
    pub quantization: QuantPolicy,
    /// Whether the model takes the classifier-free guidance scale w as an input (a
    /// guidance-distilled student, as FLUX-dev): `g_embedder`, shaped as `t_embedder`, embeds
    /// `time_scale · w` and its output is added to the conditioning, so a guided image costs one
    /// forward pass per step (default false).
    #[serde(default)]
    pub guidance_embed: bool,
    /// Whether the model takes the sampler's step size as an input (a shortcut model that samples
    /// in few steps): `d_embedder`, shaped as `t_embedder`, embeds `time_scale · (t − t_next)`
    /// (default false).
    #[serde(default)]
    pub step_embed: bool,
}

fn default_mlp_ratio() -> f32 {
    4.0
}

fn default_class_dropout_prob() -> f32 {
    0.1
}

fn default_time_scale() -> f32 {
    1000.0
}

/// Self-attention pattern. JSON: `{"kind": "dense"}` or `{"kind": "neighbourhood", "window": 7}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", try_from = "RawAttention")]
pub enum AttentionKind {
    /// Every token attends to every token (the original DiT).
    #[default]
    Dense,
    /// Each token attends to the `window` × `window` tokens around it on the grid, windows shifted
    /// inward at the borders (NATTEN's convention).
    Neighbourhood {
        /// Window side in tokens: odd, at most the grid side.
        window: u32,
    },
}

/// [`AttentionKind`] as written. Serde's internally tagged enums accept unknown fields beside a
/// unit variant (`{"kind": "dense", "window": 7}`), so the check is by hand.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttention {
    kind: String,
    #[serde(default)]
    window: Option<u32>,
}

impl TryFrom<RawAttention> for AttentionKind {
    type Error = String;

    fn try_from(raw: RawAttention) -> std::result::Result<Self, String> {
        match (raw.kind.as_str(), raw.window) {
            ("dense", None) => Ok(AttentionKind::Dense),
            ("dense", Some(_)) => Err("`window` applies only to `neighbourhood` attention".into()),
            ("neighbourhood", Some(window)) => Ok(AttentionKind::Neighbourhood { window }),
            ("neighbourhood", None) => Err("`neighbourhood` attention needs a `window`".into()),
            (kind, _) => Err(format!("unknown attention kind `{kind}` (dense, neighbourhood)")),
        }
    }
}

/// What the network predicts, which decides the sampler. JSON: `"velocity"` or `"epsilon"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prediction {
    /// Rectified-flow velocity `v = ε − x₀` (Euler or Heun sampling).
    #[default]
    Velocity,
    /// The noise ε of DDPM / DDIM (the original DiT).
    Epsilon,
}

/// Weight formats per layer kind. JSON: `{"attention": "ternary", "mlp": "int4-g64", "other":
/// "f16"}`; missing fields are f32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawPolicy")]
pub struct QuantPolicy {
    /// The attention linears of every block (`attn.qkv`, `attn.proj`).
    pub attention: LinearFormat,
    /// The MLP linears of every block (`mlp.fc1`, `mlp.fc2`).
    pub mlp: LinearFormat,
    /// Everything else: embeddings, adaLN modulation, the final layer.
    pub other: FloatFormat,
}

impl QuantPolicy {
    /// The policy to open a model whose own is `self` with (for
    /// [`DitWeights::open`](super::DitWeights::open)): its block linears re-quantized to
    /// `linears`, its float layers and activations in `floats` (by default the model's, or the
    /// dense linears' format: a graph's dense linears and float layers share one); `None` when
    /// neither is asked (the model's own policy).
    pub fn overridden(self, linears: Option<LinearFormat>, floats: Option<FloatFormat>) -> Option<QuantPolicy> {
        if linears.is_none() && floats.is_none() {
            return None;
        }
        let (attention, mlp) = linears.map_or((self.attention, self.mlp), |f| (f, f));
        // Dense block linears share the graph's float format, so they set it unless asked.
        let other = floats.unwrap_or(match linears {
            Some(LinearFormat::F16) => FloatFormat::F16,
            Some(LinearFormat::F32) => FloatFormat::F32,
            _ => self.other,
        });
        Some(QuantPolicy { attention, mlp, other })
    }
}

/// [`QuantPolicy`] as written, so that a bad format string is reported with its field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    attention: Option<String>,
    #[serde(default)]
    mlp: Option<String>,
    #[serde(default)]
    other: Option<String>,
}

impl TryFrom<RawPolicy> for QuantPolicy {
    type Error = String;

    fn try_from(raw: RawPolicy) -> std::result::Result<Self, String> {
        fn field<T: FromStr<Err = String> + Default>(name: &str, value: Option<String>) -> Result<T, String> {
            value.map_or(Ok(T::default()), |v| v.parse().map_err(|e| format!("field `{name}`: {e}")))
        }
        Ok(QuantPolicy {
            attention: field("attention", raw.attention)?,
            mlp: field("mlp", raw.mlp)?,
            other: field("other", raw.other)?,
        })
    }
}

/// The storage of a block's linear layer.
///
/// JSON: `"f32"`, `"f16"`, `"int8"`, `"int4"` (group 128), `"int4-g32"`, `"int4-g64"`,
/// `"int4-g128"`, `"ternary"`, `"ternary-2:4"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LinearFormat {
    /// Dense f32.
    #[default]
    F32,
    /// Dense f16 (stored f32 on the host; the GPU side converts).
    F16,
    /// Int8 with a scale per row ([`Format::Int8`]).
    Int8,
    /// Symmetric int4 with an f16 scale per `group` weights ([`Format::Int4`]).
    Int4 {
        /// Weights per scale: 32, 64 or 128.
        group: u32,
    },
    /// BitNet b1.58 ternary with a scale per row ([`Format::Ternary2`]).
    Ternary,
    /// 2:4 sparse ternary ([`Format::Ternary24`]).
    Ternary24,
}

impl LinearFormat {
    /// The packed format weights of this kind are quantized to on load; `None` for the dense
    /// Every format (each int4 group size).
    pub const ALL: [LinearFormat; 8] = [
        LinearFormat::F32,
        LinearFormat::F16,
        LinearFormat::Int8,
        LinearFormat::Int4 { group: 32 },
        LinearFormat::Int4 { group: 64 },
        LinearFormat::Int4 { group: 128 },
        LinearFormat::Ternary,
        LinearFormat::Ternary24,
    ];

    /// float formats.
    pub fn packed(self) -> Option<Format> {
        match self {
            LinearFormat::F32 | LinearFormat::F16 => None,
            LinearFormat::Int8 => Some(Format::Int8),
            LinearFormat::Int4 { group } => Some(Format::Int4 { group, zero_point: false }),
            LinearFormat::Ternary => Some(Format::Ternary2),
            LinearFormat::Ternary24 => Some(Format::Ternary24),
        }
    }
}

impl std::fmt::Display for LinearFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            LinearFormat::F32 => write!(f, "f32"),
            LinearFormat::F16 => write!(f, "f16"),
            LinearFormat::Int8 => write!(f, "int8"),
            LinearFormat::Int4 { group } => write!(f, "int4-g{group}"),
            LinearFormat::Ternary => write!(f, "ternary"),
            LinearFormat::Ternary24 => write!(f, "ternary-2:4"),
        }
    }
}

impl FromStr for LinearFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "f32" => LinearFormat::F32,
            "f16" => LinearFormat::F16,
            "int8" => LinearFormat::Int8,
            "int4" | "int4-g128" => LinearFormat::Int4 { group: 128 },
            "int4-g64" => LinearFormat::Int4 { group: 64 },
            "int4-g32" => LinearFormat::Int4 { group: 32 },
            "ternary" => LinearFormat::Ternary,
            "ternary-2:4" => LinearFormat::Ternary24,
            _ => {
                return Err(format!(
                    "`{s}` is not a linear format (f32, f16, int8, int4, int4-g32, int4-g64, int4-g128, ternary, \
                     ternary-2:4)"
                ));
            }
        })
    }
}

/// The storage of the layers that stay float (embeddings, adaLN, final layer). JSON: `"f32"` or
/// `"f16"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FloatFormat {
    /// f32.
    #[default]
    F32,
    /// f16 (stored f32 on the host; the GPU side converts).
    F16,
}

impl std::fmt::Display for FloatFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FloatFormat::F32 => "f32",
            FloatFormat::F16 => "f16",
        })
    }
}

impl FromStr for FloatFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(FloatFormat::F32),
            "f16" => Ok(FloatFormat::F16),
            _ => Err(format!("`{s}` is not a float format (f32, f16)")),
        }
    }
}

/// Serde through the names `Display` writes and `FromStr` reads.
macro_rules! serde_as_string {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
                String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_as_string!(LinearFormat);
serde_as_string!(FloatFormat);

/// The error for a bad configuration read from `path`, naming the field.
fn invalid_at(path: &Path, field: &str, message: impl std::fmt::Display) -> Error {
    Error::Config { path: path.to_path_buf(), field: Some(field.to_string()), message: message.to_string() }
}

/// The error for a configuration that fails [`DitConfig::validate`].
fn invalid(field: &str, message: impl std::fmt::Display) -> Error {
    invalid_at(Path::new(CONFIG_NAME), field, message)
}

impl DitConfig {
    /// Parses and validates a configuration. Errors ([`Error::Config`], naming the field) on bad JSON, unknown or missing fields, bad values, or a
    /// failed [`DitConfig::validate`].
    pub fn from_json(text: &str) -> Result<Self> {
        Self::parse(text, Path::new(CONFIG_NAME))
    }

    /// Reads, parses and validates a `config.json`. Errors: [`Error::Io`] when the file cannot be
    /// read; as [`DitConfig::from_json`] otherwise, with `path` in the error.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = |message: String| Error::Config { path: PathBuf::from(path), field: None, message };
        // Through a `Value` first so a field of the wrong type can be named: serde_json says only
        // "invalid type ... at line L column C" for those.
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let config = Self::deserialize(&value).map_err(|e| match Self::bad_field(&value) {
            Some((field, message)) => invalid_at(path, &field, message),
            None => bad(e.to_string()),
        })?;
        config.validate().map_err(|e| match e {
            Error::Config { field, message, .. } => Error::Config { path: path.into(), field, message },
            other => other,
        })?;
        Ok(config)
    }

    /// The first field of `value` whose value does not deserialize on its own (a field of the
    /// policy as `quantization.<field>`), with serde's message. Keep in sync with the fields of
    /// [`DitConfig`] and [`QuantPolicy`] (a test checks every field is here).
    fn bad_field(value: &serde_json::Value) -> Option<(String, String)> {
        fn check<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Option<String> {
            T::deserialize(v).err().map(|e| e.to_string())
        }
        value.as_object()?.iter().find_map(|(key, v)| {
            if let ("quantization", Some(policy)) = (key.as_str(), v.as_object()) {
                let inner = policy.iter().find_map(|(field, v)| {
                    let message = match field.as_str() {
                        "attention" | "mlp" => check::<LinearFormat>(v),
                        "other" => check::<FloatFormat>(v),
                        _ => Some("unknown field (attention, mlp, other)".to_string()),
                    };
                    message.map(|m| (format!("quantization.{field}"), m))
                });
                if inner.is_some() {
                    return inner;
                }
            }
            let message = match key.as_str() {
                "input_size" | "patch_size" | "in_channels" | "hidden_size" | "depth" | "num_heads" | "num_classes" => {
                    check::<u32>(v)
                }
                "mlp_ratio" | "class_dropout_prob" | "time_scale" => check::<f32>(v),
                "learn_sigma" | "guidance_embed" | "step_embed" => check::<bool>(v),
                "attention" => check::<AttentionKind>(v),
                "prediction" => check::<Prediction>(v),
                "quantization" => check::<QuantPolicy>(v),
                _ => Some(
                    "unknown field (input_size, patch_size, in_channels, hidden_size, depth, num_heads, mlp_ratio, \
                     class_dropout_prob, num_classes, learn_sigma, attention, prediction, time_scale, quantization, \
                     guidance_embed, step_embed)"
                        .to_string(),
                ),
            };
            message.map(|m| (key.clone(), m))
        })
    }

    /// Errors ([`Error::Config`], naming the field) unless the
    /// model can be built and run:
    ///
    /// - every size is above 0; `input_size` is a multiple of `patch_size`;
    /// - `hidden_size` is a multiple of `num_heads`, and the head dimension a multiple of 4 and at
    ///   most 128 (the attention kernel's limits; this also makes the width a multiple of 4, as
    ///   the 2D position embedding needs);
    /// - `mlp_ratio · hidden_size` is a whole number (DiT truncates it; a fractional product
    ///   would make the MLP width ambiguous);
    /// - `class_dropout_prob` is in (0, 1]: DiT has the null-class row, which guidance needs,
    ///   only when it is above 0;
    /// - `time_scale` is finite and above 0; a neighbourhood window is odd and at most the grid;
    /// - each packed linear format has a valid layout for the K it meets (`hidden_size`, and the
    ///   MLP width for `mlp.fc2`);
    /// - the derived sizes fit u32.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("input_size", self.input_size),
            ("patch_size", self.patch_size),
            ("in_channels", self.in_channels),
            ("hidden_size", self.hidden_size),
            ("depth", self.depth),
            ("num_heads", self.num_heads),
            ("num_classes", self.num_classes),
        ];
        if let Some((field, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(invalid(field, "must be above 0"));
        }
        if !self.input_size.is_multiple_of(self.patch_size) {
            return Err(invalid(
                "input_size",
                format!("{} is not a multiple of patch_size {}", self.input_size, self.patch_size),
            ));
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err(invalid(
                "num_heads",
                format!("hidden_size {} is not a multiple of num_heads {}", self.hidden_size, self.num_heads),
            ));
        }
        let head_dim = self.head_dim();
        if !head_dim.is_multiple_of(4) || head_dim > MAX_HEAD_DIM {
            return Err(invalid(
                "num_heads",
                format!(
                    "head dimension hidden_size / num_heads = {head_dim} must be a multiple of 4 and at most \
                     {MAX_HEAD_DIM} (the attention kernel's limits)"
                ),
            ));
        }
        let mlp = f64::from(self.hidden_size) * f64::from(self.mlp_ratio);
        if !(mlp.is_finite() && mlp >= 1.0 && mlp.fract() == 0.0 && mlp <= f64::from(u32::MAX)) {
            return Err(invalid(
                "mlp_ratio",
                format!(
                    "mlp_ratio {} × hidden_size {} = {mlp} is not a whole number of MLP features",
                    self.mlp_ratio, self.hidden_size
                ),
            ));
        }
        let p = self.class_dropout_prob;
        if !(p > 0.0 && p <= 1.0) {
            return Err(invalid(
                "class_dropout_prob",
                format!(
                    "{p} is not in (0, 1]: DiT has the null-class embedding (needed for guidance) only when it \
                     is above 0"
                ),
            ));
        }
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return Err(invalid("time_scale", format!("{} is not a finite number above 0", self.time_scale)));
        }
        if let AttentionKind::Neighbourhood { window } = self.attention {
            if window.is_multiple_of(2) || window > self.grid() {
                return Err(invalid(
                    "attention.window",
                    format!("{window} must be odd and at most the grid side {}", self.grid()),
                ));
            }
        }
        // Derived sizes (and the product of two of them, the position embedding) must fit u32
        // so the helpers below and the kernels' u32 shapes cannot overflow.
        let (h, p2) = (u64::from(self.hidden_size), u64::from(self.patch_size).pow(2));
        let grid = u64::from(self.grid());
        let derived = [
            ("input_size", grid * grid * h),
            ("in_channels", u64::from(self.in_channels) * 2 * p2),
            ("hidden_size", 6 * h),
            ("num_classes", u64::from(self.num_classes) + 1),
        ];
        if let Some((field, v)) = derived.iter().find(|(_, v)| *v > u64::from(u32::MAX)) {
            return Err(invalid(field, format!("makes a derived size of {v}, more than u32 holds")));
        }
        let linears = [
            ("quantization.attention", self.quantization.attention, &[self.hidden_size][..]),
            ("quantization.mlp", self.quantization.mlp, &[self.hidden_size, self.mlp_hidden()][..]),
        ];
        for (field, format, ks) in linears {
            if let Some(packed) = format.packed() {
                for &k in ks {
                    packed.layout(k).map_err(|e| invalid(field, format!("{format} with K = {k}: {e}")))?;
                }
            }
        }
        Ok(())
    }

    /// Tokens per side: `input_size / patch_size`.
    pub fn grid(&self) -> u32 {
        self.input_size.checked_div(self.patch_size).unwrap_or(0)
    }

    /// Tokens per image: `grid²`.
    pub fn tokens(&self) -> u32 {
        self.grid().saturating_mul(self.grid())
    }

    /// Channels per attention head: `hidden_size / num_heads`.
    pub fn head_dim(&self) -> u32 {
        self.hidden_size.checked_div(self.num_heads).unwrap_or(0)
    }

    /// MLP width: `mlp_ratio · hidden_size` (a whole number once validated).
    pub fn mlp_hidden(&self) -> u32 {
        // `as` saturates (and maps NaN to 0); validate() rejects those cases.
        (f64::from(self.hidden_size) * f64::from(self.mlp_ratio)) as u32
    }

    /// Output channels: `2 · in_channels` with `learn_sigma` (the first half is the prediction),
    /// else `in_channels`.
    pub fn out_channels(&self) -> u32 {
        if self.learn_sigma { self.in_channels.saturating_mul(2) } else { self.in_channels }
    }

    /// Values per patch token before the embedding: `in_channels · patch_size²`.
    pub fn patch_dim(&self) -> u32 {
        self.in_channels.saturating_mul(self.patch_size.saturating_mul(self.patch_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> DitConfig {
        DitConfig::from_json(
            r#"{"input_size": 8, "patch_size": 2, "in_channels": 4, "hidden_size": 48, "depth": 2,
                "num_heads": 3, "num_classes": 10}"#,
        )
        .unwrap()
    }

    #[test]
    fn every_field_is_named_on_a_type_error() {
        let value = serde_json::to_value(tiny()).unwrap();
        for key in value.as_object().unwrap().keys() {
            let mut bad = value.clone();
            bad[key.as_str()] = serde_json::json!("x");
            let Some((field, _)) = DitConfig::bad_field(&bad) else { panic!("field `{key}` is not in bad_field") };
            assert_eq!(&field, key);
        }
        let mut bad = value.clone();
        for field in ["attention", "mlp", "other"] {
            bad["quantization"][field] = serde_json::json!("int3");
            assert_eq!(DitConfig::bad_field(&bad).unwrap().0, format!("quantization.{field}"));
            bad["quantization"][field] = serde_json::json!("f32");
        }
    }

    #[test]
    fn linear_formats_round_trip() {
        for f in LinearFormat::ALL {
            assert_eq!(f.to_string().parse::<LinearFormat>(), Ok(f));
        }
        assert_eq!("int4".parse::<LinearFormat>(), Ok(LinearFormat::Int4 { group: 128 }));
    }

    #[test]
    fn window_must_be_odd_and_inside_the_grid() {
        let mut c = tiny();
        for (window, ok) in [(1, true), (3, true), (4, false), (5, false)] {
            c.attention = AttentionKind::Neighbourhood { window };
            assert_eq!(c.validate().is_ok(), ok, "window {window}");
        }
    }
}
