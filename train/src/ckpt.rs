//! Checkpoints: one safetensors file holding the parameters, the optimizer's moments and the EMA
//! weights, with the run's state (step, random state, configuration) as JSON in the header's
//! metadata. Written to a temporary file and renamed, so a run stopped mid-write keeps its last
//! whole checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// Key of the run state in the metadata.
const STATE_KEY: &str = "milliwatt-train.state";

/// Host copy of a tensor: shape and f32 values.
pub struct HostF32 {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostF32 {
    pub fn of(t: &Tensor) -> Result<Self> {
        Ok(Self { shape: t.dims().to_vec(), data: t.flatten_all()?.to_vec1()? })
    }

    pub fn tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(self.data.clone(), self.shape.clone(), device)?)
    }
}

/// Writes `tensors` and `state` (JSON) to `path` through `path.tmp`.
pub fn save(path: &Path, tensors: &BTreeMap<String, HostF32>, state: &serde_json::Value) -> Result<()> {
    write(path, tensors, Some(HashMap::from([(STATE_KEY.to_string(), state.to_string())])))
}

/// Writes `tensors` as a plain F32 safetensors file (no run state).
pub fn save_plain(path: &Path, tensors: &BTreeMap<String, HostF32>) -> Result<()> {
    write(path, tensors, None)
}

fn write(path: &Path, tensors: &BTreeMap<String, HostF32>, meta: Option<HashMap<String, String>>) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect(), t.shape.clone()))
        .collect();
    let views = bytes
        .iter()
        .map(|(k, b, s)| Ok((k.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<Vec<_>>>()?;
    let tmp = path.with_extension("tmp");
    safetensors::serialize_to_file(views, meta, &tmp)?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

/// Reads a plain state dict (an exported model's `model.safetensors`: F32, F16 or BF16 tensors,
/// no run state) as f32. Integer tensors (a pre-packed model's codes) are refused: the trainer
/// needs latent weights.
pub fn load_plain(path: &Path) -> Result<BTreeMap<String, HostF32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let d = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => d.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => d.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => bail!(
                "{}: tensor `{name}` is {other:?}; initialise from latent float weights (a state dict), not a pre-packed model",
                path.display()
            ),
        };
        tensors.insert(name, HostF32 { shape: view.shape().to_vec(), data });
    }
    Ok(tensors)
}

/// Whether `path` is a checkpoint [`save`] wrote (it carries the run state).
pub fn is_checkpoint(path: &Path) -> Result<bool> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)?;
    Ok(meta.metadata().as_ref().is_some_and(|m| m.contains_key(STATE_KEY)))
}

/// Reads a checkpoint [`save`] wrote.
pub fn load(path: &Path) -> Result<(BTreeMap<String, HostF32>, serde_json::Value)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)?;
    let Some(state) = meta.metadata().as_ref().and_then(|m| m.get(STATE_KEY)) else {
        bail!("{}: not a milliwatt-train checkpoint (no `{STATE_KEY}` metadata)", path.display())
    };
    let state: serde_json::Value = serde_json::from_str(state)?;
    let st = SafeTensors::deserialize(&bytes)?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            bail!("{}: tensor `{name}` is {:?}, not F32", path.display(), view.dtype());
        }
        let data = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        tensors.insert(name, HostF32 { shape: view.shape().to_vec(), data });
    }
    Ok((tensors, state))
}
