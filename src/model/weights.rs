//! DiT weights on the host: read from safetensors in the original state-dict naming (F32, F16 or
//! BF16, converted to f32), checked against the configuration, and quantized on load per its
//! [`QuantPolicy`]; or saved and loaded pre-packed.
//!
//! ```text
//!  model.safetensors ──load──► check names, dtypes, shapes ──► quantize + pack the block linears
//!  (DiT state dict)            (Error::Checkpoint names the      the policy packs; f32 for the rest
//!                               tensor)                          │
//!  packed.safetensors ◄──save_packed── DitWeights ◄─────────────┘
//!                     ──load_packed──► (identical Packed values, config from the metadata)
//! ```
//!
//! # The pre-packed file
//!
//! One safetensors file. Float tensors are F32 under their own names. A packed weight `W` is up
//! to three U32 tensors: `W.data` `[m, row_words]`, `W.scales` `[m, scale_row_words]` and
//! `W.aux` `[m, aux_row_words]` (a stream of 0 words per row is not written). The header's
//! `__metadata__` holds:
//!
//! | key | value |
//! |---|---|
//! | `milliwatt.version` | `1`, the version of this layout and of the packed formats' word layouts |
//! | `milliwatt.config` | the [`DitConfig`] as JSON |
//! | `milliwatt.packed.W` | `{"format": "int4-g64", "m": …, "k": …, "row_words": …, "scale_row_words": …, "aux_row_words": …}`, the format named as [`Format`]'s `Display` writes it |

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensorError, SafeTensors, View};

use super::config::{DitConfig, FloatFormat, LinearFormat, QuantPolicy};
use crate::error::{CheckpointProblem, Error, Result};
use crate::quant::{Format, Packed, ScaleMode, quantize};

/// Width of DiT's sinusoidal timestep embedding (`TimestepEmbedder.frequency_embedding_size`).
const FREQUENCY_EMBEDDING_SIZE: usize = 256;

/// The weights file of a model directory ([`DitWeights::open`]).
pub const MODEL_FILE: &str = "model.safetensors";

/// The "tensor" errors about a safetensors header that cannot be read are reported under.
const HEADER: &str = "(header)";

/// The path errors about tensors given as values ([`DitWeights::from_float`]) carry.
const IN_MEMORY: &str = "(in memory)";

/// Metadata keys of the pre-packed file (see the module docs).
const VERSION_KEY: &str = "milliwatt.version";
const VERSION: &str = "1";
const CONFIG_KEY: &str = "milliwatt.config";
const PACKED_PREFIX: &str = "milliwatt.packed.";

/// A float tensor on the host: row-major f32 values of `shape`.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first (PyTorch's order).
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub data: Vec<f32>,
}

/// One weight as the model holds it.
#[derive(Clone, Debug, PartialEq)]
pub enum WeightData {
    /// Float values (f32 on the host whatever the policy's float format; the GPU side converts).
    Float(HostTensor),
    /// A linear layer's `[m, k]` weight, quantized and packed in the shaders' layout.
    Packed(Packed),
}

impl WeightData {
    /// The tensor's logical shape: a float tensor's own, `[m, k]` for a packed weight.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            WeightData::Float(t) => t.shape.clone(),
            WeightData::Packed(p) => vec![p.m as usize, p.k as usize],
        }
    }
}

/// Every weight of a DiT, by its original state-dict name, with the configuration it was checked
/// against. Build it with [`DitWeights::load`] (a DiT checkpoint), [`DitWeights::load_packed`]
/// (a file [`DitWeights::save_packed`] wrote) or [`DitWeights::from_float`] (values in memory).
///
/// Holds exactly the names of [`DitWeights::expected`]: tensors a file has beyond them (EMA
/// copies, optimizer state) are ignored; `pos_embed` is computed when the file lacks it.
#[derive(Clone)]
pub struct DitWeights {
    /// The configuration the weights were checked against; its quantization policy decided which
    /// weights are packed.
    pub config: DitConfig,
    tensors: BTreeMap<String, WeightData>,
    /// Where the weights came from, for the errors of the accessors.
    source: PathBuf,
}

impl std::fmt::Debug for DitWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let packed = self.tensors.values().filter(|w| matches!(w, WeightData::Packed(_))).count();
        f.debug_struct("DitWeights")
            .field("config", &self.config)
            .field("tensors", &self.tensors.len())
            .field("packed", &packed)
            .field("source", &self.source)
            .finish()
    }
}

/// Equal when configuration and every tensor are; where they were loaded from does not count.
impl PartialEq for DitWeights {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config && self.tensors == other.tensors
    }
}

/// One tensor of the state dict: its name, shape, and the policy entry it follows when it is a
/// block linear's weight.
struct Entry {
    name: String,
    shape: Vec<usize>,
    linear: Option<LinearFormat>,
}

impl Entry {
    /// The packed format this tensor is quantized to under the configuration's policy.
    fn packed(&self) -> Option<Format> {
        self.linear.and_then(LinearFormat::packed)
    }
}

/// The tensors of DiT's state dict, in its order (`DiT.state_dict()` of `models.py`).
fn entries(config: &DitConfig) -> Vec<Entry> {
    fn tensor(out: &mut Vec<Entry>, name: &str, shape: Vec<usize>) {
        out.push(Entry { name: name.to_string(), shape, linear: None });
    }
    fn linear(out: &mut Vec<Entry>, prefix: &str, m: usize, k: usize, linear: Option<LinearFormat>) {
        out.push(Entry { name: format!("{prefix}.weight"), shape: vec![m, k], linear });
        out.push(Entry { name: format!("{prefix}.bias"), shape: vec![m], linear: None });
    }
    let h = config.hidden_size as usize;
    let (c, p) = (config.in_channels as usize, config.patch_size as usize);
    let mlp = config.mlp_hidden() as usize;
    let policy = config.quantization;
    let mut out = Vec::new();
    tensor(&mut out, "pos_embed", vec![1, config.tokens() as usize, h]);
    tensor(&mut out, "x_embedder.proj.weight", vec![h, c, p, p]);
    tensor(&mut out, "x_embedder.proj.bias", vec![h]);
    linear(&mut out, "t_embedder.mlp.0", h, FREQUENCY_EMBEDDING_SIZE, None);
    linear(&mut out, "t_embedder.mlp.2", h, h, None);
    for (on, embedder) in [(config.guidance_embed, "g_embedder"), (config.step_embed, "d_embedder")] {
        if on {
            linear(&mut out, &format!("{embedder}.mlp.0"), h, FREQUENCY_EMBEDDING_SIZE, None);
            linear(&mut out, &format!("{embedder}.mlp.2"), h, h, None);
        }
    }
    tensor(&mut out, "y_embedder.embedding_table.weight", vec![config.num_classes as usize + 1, h]);
    for i in 0..config.depth {
        let b = format!("blocks.{i}");
        linear(&mut out, &format!("{b}.attn.qkv"), 3 * h, h, Some(policy.attention));
        linear(&mut out, &format!("{b}.attn.proj"), h, h, Some(policy.attention));
        linear(&mut out, &format!("{b}.mlp.fc1"), mlp, h, Some(policy.mlp));
        linear(&mut out, &format!("{b}.mlp.fc2"), h, mlp, Some(policy.mlp));
        linear(&mut out, &format!("{b}.adaLN_modulation.1"), 6 * h, h, None);
    }
    linear(&mut out, "final_layer.linear", p * p * config.out_channels() as usize, h, None);
    linear(&mut out, "final_layer.adaLN_modulation.1", 2 * h, h, None);
    out
}

fn checkpoint_error(path: &Path, tensor: &str, problem: CheckpointProblem) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), tensor: tensor.to_string(), problem }
}

fn invalid(path: &Path, tensor: &str, message: impl Into<String>) -> Error {
    checkpoint_error(path, tensor, CheckpointProblem::Invalid(message.into()))
}

/// Errors of the configuration (validated before any tensor is read) carry the checkpoint's path.
fn validate_for(config: &DitConfig, path: &Path) -> Result<()> {
    config.validate().map_err(|e| match e {
        Error::Checkpoint { tensor, problem, .. } => Error::Checkpoint { path: path.into(), tensor, problem },
        other => other,
    })
}

/// DiT's fixed position embedding for `config`, `[1, tokens, hidden]`.
fn computed_pos_embed(config: &DitConfig, path: &Path) -> Result<HostTensor> {
    let data = crate::kernels::pos_embed_2d(config.hidden_size, config.grid(), config.grid())
        .map_err(|e| invalid(path, "pos_embed", format!("cannot compute it: {e}")))?;
    Ok(HostTensor { shape: vec![1, config.tokens() as usize, config.hidden_size as usize], data })
}

/// Checks a float tensor against its entry (shape, length, finite values) and packs it when the
/// policy says so.
fn place(entry: &Entry, tensor: HostTensor, path: &Path) -> Result<WeightData> {
    let name = entry.name.as_str();
    if tensor.shape != entry.shape {
        return Err(checkpoint_error(
            path,
            name,
            CheckpointProblem::Shape { expected: entry.shape.clone(), got: tensor.shape },
        ));
    }
    let elements: usize = tensor.shape.iter().product();
    if tensor.data.len() != elements {
        return Err(invalid(
            path,
            name,
            format!("{} values for shape {:?} ({elements} elements)", tensor.data.len(), tensor.shape),
        ));
    }
    if let Some(i) = tensor.data.iter().position(|v| !v.is_finite()) {
        return Err(invalid(path, name, format!("element {i} is {}", tensor.data[i])));
    }
    let Some(format) = entry.packed() else { return Ok(WeightData::Float(tensor)) };
    // Block linears are [m, k] and fit u32 by DitConfig::validate.
    let (m, k) = (entry.shape[0] as u32, entry.shape[1] as u32);
    quantize(&tensor.data, m, k, format, ScaleMode::PerRow)
        .and_then(|q| q.pack())
        .map(WeightData::Packed)
        .map_err(|e| invalid(path, name, format!("cannot quantize: {e}")))
}

/// The name of the first tensor (in file order) whose data extends past the end of a truncated
/// safetensors file. safetensors reports only `MetadataIncompleteBuffer`, so this reads the
/// 8-byte header length and the JSON header itself; `None` when the header cannot be read or no
/// tensor extends past the end (the file is too long instead).
fn truncated_tensor(bytes: &[u8]) -> Option<String> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    let available = (bytes.len() - 8 - n) as u64;
    let header: HashMap<String, serde_json::Value> = serde_json::from_slice(header).ok()?;
    header
        .iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .filter_map(|(name, info)| {
            let offsets = info.get("data_offsets")?.as_array()?;
            let (start, end) = (offsets.first()?.as_u64()?, offsets.get(1)?.as_u64()?);
            (end > available).then_some((start, name))
        })
        .min()
        .map(|(_, name)| name.clone())
}

/// Opens a safetensors file held in `bytes`, with its `__metadata__`. Errors name the tensor a
/// truncated file cuts off, or `(header)`.
fn open<'a>(bytes: &'a [u8], path: &Path) -> Result<(SafeTensors<'a>, HashMap<String, String>)> {
    let error = |e: SafeTensorError| {
        let (tensor, problem) = match e {
            SafeTensorError::HeaderTooSmall | SafeTensorError::InvalidHeaderLength => {
                (HEADER.to_string(), CheckpointProblem::Truncated)
            }
            SafeTensorError::MetadataIncompleteBuffer => match truncated_tensor(bytes) {
                Some(name) => (name, CheckpointProblem::Truncated),
                None => (
                    HEADER.to_string(),
                    CheckpointProblem::Invalid("the file has bytes past the last tensor's data".into()),
                ),
            },
            SafeTensorError::InvalidOffset(name) => {
                (name, CheckpointProblem::Invalid("data offsets overlap or leave gaps".into()))
            }
            other => {
                (HEADER.to_string(), CheckpointProblem::Invalid(format!("unreadable safetensors header: {other}")))
            }
        };
        checkpoint_error(path, &tensor, problem)
    };
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(error)?;
    let st = SafeTensors::deserialize(bytes).map_err(error)?;
    Ok((st, metadata.metadata().clone().unwrap_or_default()))
}

/// Reads a float tensor (F32, F16 or BF16, little-endian) as f32.
fn read_float(st: &SafeTensors<'_>, name: &str, path: &Path) -> Result<Option<HostTensor>> {
    let Ok(view) = st.tensor(name) else { return Ok(None) };
    let bytes = view.data();
    let data: Vec<f32> = match view.dtype() {
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        other => return Err(checkpoint_error(path, name, CheckpointProblem::Dtype { got: other.to_string() })),
    };
    Ok(Some(HostTensor { shape: view.shape().to_vec(), data }))
}

/// Reads a U32 stream of a packed weight, which must have `shape`.
fn read_words(st: &SafeTensors<'_>, name: &str, shape: [usize; 2], path: &Path) -> Result<Vec<u32>> {
    let view = st.tensor(name).map_err(|_| checkpoint_error(path, name, CheckpointProblem::Missing))?;
    if view.dtype() != Dtype::U32 {
        return Err(checkpoint_error(path, name, CheckpointProblem::Dtype { got: view.dtype().to_string() }));
    }
    if view.shape() != shape {
        return Err(checkpoint_error(
            path,
            name,
            CheckpointProblem::Shape { expected: shape.to_vec(), got: view.shape().to_vec() },
        ));
    }
    Ok(view.data().chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// The metadata of one packed weight in a pre-packed file.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PackedMeta {
    format: String,
    m: u32,
    k: u32,
    row_words: u32,
    scale_row_words: u32,
    aux_row_words: u32,
}

/// Reads packed weight `name` (expected as `format`, shape `[m, k]`) from a pre-packed file.
fn read_packed(
    st: &SafeTensors<'_>,
    metadata: &HashMap<String, String>,
    entry: &Entry,
    format: Format,
    path: &Path,
) -> Result<Packed> {
    let name = entry.name.as_str();
    let bad = |message: String| invalid(path, name, message);
    let Some(meta) = metadata.get(&format!("{PACKED_PREFIX}{name}")) else {
        return Err(if st.tensor(name).is_ok() {
            bad(format!("stored as a float tensor, but the file's policy packs it as {format}"))
        } else {
            checkpoint_error(path, name, CheckpointProblem::Missing)
        });
    };
    let meta: PackedMeta =
        serde_json::from_str(meta).map_err(|e| bad(format!("packed metadata `{meta}` is unreadable: {e}")))?;
    let got: Format = meta.format.parse().map_err(|e| bad(format!("packed metadata: {e}")))?;
    if got != format {
        return Err(bad(format!("packed as {got}, but the file's policy packs it as {format}")));
    }
    let (m, k) = (meta.m as usize, meta.k as usize);
    if [m, k] != entry.shape[..] {
        return Err(checkpoint_error(
            path,
            name,
            CheckpointProblem::Shape { expected: entry.shape.clone(), got: vec![m, k] },
        ));
    }
    let layout = format.layout(meta.k).map_err(|e| bad(e.to_string()))?;
    let strides = [
        ("row_words", meta.row_words, layout.row_words),
        ("scale_row_words", meta.scale_row_words, layout.scale_row_words),
        ("aux_row_words", meta.aux_row_words, layout.aux_row_words),
    ];
    for (field, got, want) in strides {
        if got != want {
            return Err(bad(format!("packed metadata says {field} = {got}, {format} with K = {k} has {want}")));
        }
    }
    // A stream of 0 words per row is not written; finding one means the file disagrees with
    // its metadata.
    let stream = |suffix: &str, row_words: u32| -> Result<Vec<u32>> {
        let stream_name = format!("{name}.{suffix}");
        if row_words > 0 {
            read_words(st, &stream_name, [m, row_words as usize], path)
        } else if st.tensor(&stream_name).is_ok() {
            Err(invalid(path, &stream_name, format!("{format} has no {suffix} stream")))
        } else {
            Ok(Vec::new())
        }
    };
    Ok(Packed {
        format,
        m: meta.m,
        k: meta.k,
        row_words: meta.row_words,
        data: stream("data", meta.row_words)?,
        scale_row_words: meta.scale_row_words,
        scales: stream("scales", meta.scale_row_words)?,
        aux_row_words: meta.aux_row_words,
        aux: stream("aux", meta.aux_row_words)?,
    })
}

/// `t` as little-endian F32 or F16 bytes; errors on a finite value past f16's range.
fn float_bytes(t: &HostTensor, format: FloatFormat) -> std::result::Result<Bytes, String> {
    let (dtype, data) = match format {
        FloatFormat::F32 => (Dtype::F32, t.data.iter().flat_map(|x| x.to_le_bytes()).collect()),
        FloatFormat::F16 => {
            if let Some(i) = t.data.iter().position(|x| x.abs() > f32::from(half::f16::MAX)) {
                return Err(format!("element {i} ({}) does not fit f16", t.data[i]));
            }
            (Dtype::F16, t.data.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect())
        }
    };
    Ok(Bytes { dtype, shape: t.shape.clone(), data })
}

/// A tensor to write: safetensors' [`View`] over owned little-endian bytes.
struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }

    fn data_len(&self) -> usize {
        self.data.len()
    }
}

impl DitWeights {
    /// Every tensor of the original DiT state dict for `config`, with its shape, in the state
    /// dict's order: `pos_embed` `[1, tokens, h]`; `x_embedder.proj.weight` `[h, C, p, p]` and
    /// `.bias`; `t_embedder.mlp.0.weight` `[h, 256]`, `t_embedder.mlp.2.weight` `[h, h]` and their
    /// biases (with `guidance_embed` / `step_embed`, `g_embedder` / `d_embedder` likewise);
    /// `y_embedder.embedding_table.weight` `[num_classes + 1, h]`; per block `i`,
    /// `blocks.{i}.attn.qkv.weight` `[3h, h]`, `attn.proj.weight` `[h, h]`, `mlp.fc1.weight`
    /// `[mlp_hidden, h]`, `mlp.fc2.weight` `[h, mlp_hidden]`, `adaLN_modulation.1.weight`
    /// `[6h, h]`, each followed by its bias; `final_layer.linear.weight` `[p² · out_channels, h]`
    /// and `final_layer.adaLN_modulation.1.weight` `[2h, h]` with their biases.
    ///
    /// `pos_embed` may be absent from a file: it is then computed with
    /// [`pos_embed_2d`](crate::kernels::pos_embed_2d). Call on a validated configuration (sizes of
    /// an invalid one are meaningless).
    pub fn expected(config: &DitConfig) -> Vec<(String, Vec<usize>)> {
        entries(config).into_iter().map(|e| (e.name, e.shape)).collect()
    }

    /// Reads a model directory: `config.json` and `model.safetensors`, which is either a DiT
    /// state dict (quantized on load per the configuration's policy, or per `policy` when given)
    /// or a file [`DitWeights::save_packed`] wrote (its configuration must equal `config.json`'s;
    /// its block linears cannot be re-quantized, so `policy` must be `None` or name its own linear
    /// formats; its `other` may differ: the float tensors are floats either way, so a pre-packed
    /// model runs its float layers and activations in f16 or f32 as asked).
    ///
    /// Errors: [`Error::Io`] when a file cannot be read; [`Error::Checkpoint`] as
    /// [`DitWeights::load`] and [`DitWeights::load_packed`] do, and naming `config.json` when it
    /// disagrees with a pre-packed file or a policy is asked of one.
    pub fn open(dir: &Path, policy: Option<QuantPolicy>) -> Result<Self> {
        let config_path = dir.join(super::config::CONFIG_NAME);
        let mut config = DitConfig::from_file(&config_path)?;
        let path = dir.join(MODEL_FILE);
        let bytes = std::fs::read(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        let (_, metadata) = open(&bytes, &path)?;
        if metadata.contains_key(VERSION_KEY) {
            let weights = Self::from_packed_bytes(&bytes, &path)?;
            let bad = |message: String| Error::Config { path: config_path.clone(), field: None, message };
            if weights.config != config {
                return Err(bad(format!("differs from the configuration stored in {}", path.display())));
            }
            let mut weights = weights;
            if let Some(p) = policy {
                let own = config.quantization;
                if (p.attention, p.mlp) != (own.attention, own.mlp) {
                    return Err(bad(format!(
                        "{} is pre-packed ({}); only a float model's block linears can be quantized on load",
                        path.display(),
                        serde_json::to_string(&own).unwrap_or_default()
                    )));
                }
                weights.config.quantization.other = p.other;
            }
            return Ok(weights);
        }
        if let Some(p) = policy {
            config.quantization = p;
        }
        Self::from_bytes(&bytes, &config, &path)
    }

    /// Writes the float weights as a DiT state dict (`model.safetensors` of a model directory, in
    /// `floats` precision, `pos_embed` included) that [`DitWeights::load`] reads back. Errors
    /// ([`Error::Checkpoint`]) when a weight is packed, a value does not fit f16, or
    /// ([`Error::Io`]) the file cannot be written.
    pub fn save_state_dict(&self, path: &Path, floats: FloatFormat) -> Result<()> {
        let mut tensors = Vec::new();
        for (name, weight) in &self.tensors {
            let WeightData::Float(t) = weight else {
                return Err(invalid(path, name, "packed: write pre-packed models with save_packed"));
            };
            tensors.push((name.clone(), float_bytes(t, floats).map_err(|m| invalid(path, name, m))?));
        }
        safetensors::serialize_to_file(tensors, None, path).map_err(|e| match e {
            SafeTensorError::IoError(source) => Error::Io { path: path.into(), source },
            other => invalid(path, HEADER, format!("cannot write the file: {other}")),
        })
    }

    /// Reads a DiT checkpoint from a safetensors file. Errors: [`Error::Io`] when the file cannot
    /// be read; otherwise as [`DitWeights::from_bytes`].
    pub fn load(path: &Path, config: &DitConfig) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.into(), source })?;
        Self::from_bytes(&bytes, config, path)
    }

    /// Reads a DiT checkpoint held in memory (a safetensors file's bytes) in the original
    /// state-dict naming, converts F16 and BF16 tensors to f32, and quantizes the block linears
    /// the policy packs (per-row scales). Tensors not in [`DitWeights::expected`] are ignored.
    ///
    /// Errors ([`Error::Checkpoint`], with `path_for_errors` and the tensor's name): an invalid
    /// configuration (tensor `config.json`); a truncated file (the first tensor it cuts off, or
    /// `(header)`) or one safetensors cannot read; a missing tensor; a dtype other than F32, F16
    /// or BF16; a wrong shape; a NaN or infinite value; a weight the format cannot quantize.
    pub fn from_bytes(bytes: &[u8], config: &DitConfig, path_for_errors: &Path) -> Result<Self> {
        let path = path_for_errors;
        validate_for(config, path)?;
        let (st, metadata) = open(bytes, path)?;
        let mut tensors = BTreeMap::new();
        for entry in entries(config) {
            let tensor = match read_float(&st, &entry.name, path)? {
                Some(t) => t,
                None if entry.name == "pos_embed" => computed_pos_embed(config, path)?,
                None if metadata.contains_key(&format!("{PACKED_PREFIX}{}", entry.name)) => {
                    return Err(invalid(
                        path,
                        &entry.name,
                        "stored pre-packed in this file: read it with DitWeights::load_packed",
                    ));
                }
                None => return Err(checkpoint_error(path, &entry.name, CheckpointProblem::Missing)),
            };
            let weight = place(&entry, tensor, path)?;
            tensors.insert(entry.name, weight);
        }
        Ok(DitWeights { config: config.clone(), tensors, source: path.to_path_buf() })
    }

    /// Builds the weights from f32 tensors in memory (random models in tests), with the checks
    /// and quantization of [`DitWeights::from_bytes`]; `pos_embed` is computed when absent and
    /// names not in [`DitWeights::expected`] are ignored. Errors name the path `(in memory)`.
    pub fn from_float(config: &DitConfig, mut tensors: BTreeMap<String, HostTensor>) -> Result<Self> {
        let path = Path::new(IN_MEMORY);
        validate_for(config, path)?;
        let mut out = BTreeMap::new();
        for entry in entries(config) {
            let tensor = match tensors.remove(&entry.name) {
                Some(t) => t,
                None if entry.name == "pos_embed" => computed_pos_embed(config, path)?,
                None => return Err(checkpoint_error(path, &entry.name, CheckpointProblem::Missing)),
            };
            let weight = place(&entry, tensor, path)?;
            out.insert(entry.name, weight);
        }
        Ok(DitWeights { config: config.clone(), tensors: out, source: path.to_path_buf() })
    }

    /// The weight `name` (a state-dict name). Errors with [`CheckpointProblem::Missing`] for a
    /// name the model does not have.
    pub fn get(&self, name: &str) -> Result<&WeightData> {
        self.tensors.get(name).ok_or_else(|| checkpoint_error(&self.source, name, CheckpointProblem::Missing))
    }

    /// The float tensor `name`. Errors when it is missing or packed.
    pub fn float(&self, name: &str) -> Result<&HostTensor> {
        match self.get(name)? {
            WeightData::Float(t) => Ok(t),
            WeightData::Packed(p) => {
                Err(invalid(&self.source, name, format!("packed as {}, asked for as float", p.format)))
            }
        }
    }

    /// The packed weight `name`. Errors when it is missing or float (the policy left it
    /// unquantized).
    pub fn packed(&self, name: &str) -> Result<&Packed> {
        match self.get(name)? {
            WeightData::Packed(p) => Ok(p),
            WeightData::Float(_) => Err(invalid(&self.source, name, "a float tensor, asked for as packed")),
        }
    }

    /// The names of every weight, in lexicographic order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Writes the weights as they are (packed ones packed) to one safetensors file, with the
    /// configuration in its metadata (the layout is in the [module docs](self)); float tensors
    /// as F32. [`DitWeights::save_packed_as`] chooses their storage.
    ///
    /// Errors: [`Error::Io`] when the file cannot be written.
    pub fn save_packed(&self, path: &Path) -> Result<()> {
        self.save_packed_as(path, FloatFormat::F32)
    }

    /// [`DitWeights::save_packed`] with the float tensors stored as `floats` (F16 halves them;
    /// they load back as f32, rounded to f16). A `pos_embed` equal to the one the loader computes
    /// is left out. Errors as `save_packed`, and ([`Error::Checkpoint`]) when a value does not
    /// fit f16.
    pub fn save_packed_as(&self, path: &Path, floats: FloatFormat) -> Result<()> {
        let header_error = |message: String| invalid(path, HEADER, message);
        let mut metadata = HashMap::new();
        metadata.insert(VERSION_KEY.to_string(), VERSION.to_string());
        let config = serde_json::to_string(&self.config).map_err(|e| header_error(e.to_string()))?;
        metadata.insert(CONFIG_KEY.to_string(), config);
        let mut tensors: Vec<(String, Bytes)> = Vec::new();
        let words = |w: &[u32]| w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        for (name, weight) in &self.tensors {
            match weight {
                WeightData::Float(t) => {
                    if floats == FloatFormat::F16
                        && name == "pos_embed"
                        && computed_pos_embed(&self.config, path)?.data == t.data
                    {
                        continue;
                    }
                    tensors.push((name.clone(), float_bytes(t, floats).map_err(|m| invalid(path, name, m))?));
                }
                WeightData::Packed(p) => {
                    let meta = PackedMeta {
                        format: p.format.to_string(),
                        m: p.m,
                        k: p.k,
                        row_words: p.row_words,
                        scale_row_words: p.scale_row_words,
                        aux_row_words: p.aux_row_words,
                    };
                    let meta = serde_json::to_string(&meta).map_err(|e| header_error(e.to_string()))?;
                    metadata.insert(format!("{PACKED_PREFIX}{name}"), meta);
                    let streams = [
                        ("data", p.row_words, &p.data),
                        ("scales", p.scale_row_words, &p.scales),
                        ("aux", p.aux_row_words, &p.aux),
                    ];
                    for (suffix, row_words, stream) in streams {
                        if row_words > 0 {
                            let shape = vec![p.m as usize, row_words as usize];
                            let bytes = Bytes { dtype: Dtype::U32, shape, data: words(stream) };
                            tensors.push((format!("{name}.{suffix}"), bytes));
                        }
                    }
                }
            }
        }
        safetensors::serialize_to_file(tensors, Some(metadata), path).map_err(|e| match e {
            SafeTensorError::IoError(source) => Error::Io { path: path.into(), source },
            other => header_error(format!("cannot write the file: {other}")),
        })
    }

    /// Reads a file [`DitWeights::save_packed`] wrote: the configuration from its metadata, the
    /// packed weights exactly as they were (same [`Packed`] values), the float tensors as f32.
    /// Packed streams are checked against [`Format::layout`] and decoded once ([`Packed::unpack`],
    /// one weight at a time), so a code the packer never writes or a non-finite scale is refused
    /// here instead of drawing garbage on the GPU.
    ///
    /// Errors: [`Error::Io`] when the file cannot be read; [`Error::Checkpoint`] naming the tensor
    /// (or the metadata key) on a file that is not a pre-packed milliwatt checkpoint, a truncated
    /// file, a missing tensor or stream, a wrong dtype or shape, packed metadata that disagrees
    /// with the configuration's policy or the format's layout, or codes and scales that do not
    /// decode.
    pub fn load_packed(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.into(), source })?;
        Self::from_packed_bytes(&bytes, path)
    }

    /// [`DitWeights::load_packed`] of a file's bytes held in memory (a model embedded in the
    /// binary, say); `path_for_errors` names it in errors.
    pub fn from_packed_bytes(bytes: &[u8], path_for_errors: &Path) -> Result<Self> {
        let path = path_for_errors;
        let (st, metadata) = open(bytes, path)?;
        match metadata.get(VERSION_KEY).map(String::as_str) {
            Some(VERSION) => {}
            Some(v) => {
                return Err(invalid(path, VERSION_KEY, format!("layout version {v}, this build reads {VERSION}")));
            }
            None => {
                return Err(invalid(
                    path,
                    VERSION_KEY,
                    "not in the file's metadata: not a pre-packed milliwatt file (read DiT checkpoints with \
                     DitWeights::load)",
                ));
            }
        }
        let text =
            metadata.get(CONFIG_KEY).ok_or_else(|| checkpoint_error(path, CONFIG_KEY, CheckpointProblem::Missing))?;
        let config = DitConfig::from_json(text).map_err(|e| match e {
            Error::Config { field, message, .. } => Error::Config { path: path.into(), field, message },
            other => other,
        })?;
        let mut tensors = BTreeMap::new();
        for entry in entries(&config) {
            let weight = match entry.packed() {
                Some(format) => {
                    let packed = read_packed(&st, &metadata, &entry, format, path)?;
                    packed.unpack().map_err(|e| invalid(path, &entry.name, format!("does not decode: {e}")))?;
                    WeightData::Packed(packed)
                }
                None => {
                    let tensor = match read_float(&st, &entry.name, path)? {
                        Some(t) => t,
                        None if entry.name == "pos_embed" => computed_pos_embed(&config, path)?,
                        None => return Err(checkpoint_error(path, &entry.name, CheckpointProblem::Missing)),
                    };
                    place(&entry, tensor, path)?
                }
            };
            tensors.insert(entry.name, weight);
        }
        Ok(DitWeights { config, tensors, source: path.to_path_buf() })
    }
}
