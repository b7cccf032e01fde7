//! The golden DiT fixtures (tests/fixtures/dit-golden, outputs of the original implementation),
//! shared by the CPU reference tests and the GPU tests.

use std::path::{Path, PathBuf};

use milliwatt::model::{DitConfig, DitWeights};
use safetensors::SafeTensors;

/// The directory of fixture `name`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dit-golden").join(name)
}

/// x, t (sampler time) and y of a forward pass.
pub type Inputs = (Vec<f32>, Vec<f32>, Vec<u32>);

/// A fixture's model (quantized on load per its, possibly edited, configuration) and its expected
/// outputs.
pub struct Golden {
    pub weights: DitWeights,
    expected: Vec<u8>,
}

impl Golden {
    pub fn load(name: &str) -> Result<Self, String> {
        Self::load_with(name, |_| {})
    }

    /// The fixture with its configuration changed by `edit` before the weights load.
    pub fn load_with(name: &str, edit: impl FnOnce(&mut DitConfig)) -> Result<Self, String> {
        let dir = fixture(name);
        let mut config = DitConfig::from_file(&dir.join("config.json")).map_err(|e| e.to_string())?;
        edit(&mut config);
        let weights = DitWeights::load(&dir.join("model.safetensors"), &config).map_err(|e| e.to_string())?;
        let expected = std::fs::read(dir.join("expected.safetensors")).map_err(|e| e.to_string())?;
        Ok(Self { weights, expected })
    }

    /// An expected tensor as f32 (integer tensors converted).
    pub fn get(&self, name: &str) -> Result<Vec<f32>, String> {
        let st = SafeTensors::deserialize(&self.expected).map_err(|e| e.to_string())?;
        let t = st.tensor(name).map_err(|e| format!("{name}: {e}"))?;
        Ok(match t.dtype() {
            safetensors::Dtype::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(t.data()),
            safetensors::Dtype::I64 => {
                bytemuck::pod_collect_to_vec::<u8, i64>(t.data()).into_iter().map(|v| v as f32).collect()
            }
            other => return Err(format!("{name}: dtype {other:?}")),
        })
    }

    /// An expected integer tensor as labels.
    pub fn labels(&self, name: &str) -> Result<Vec<u32>, String> {
        Ok(self.get(name)?.iter().map(|&v| v as u32).collect())
    }

    /// The forward inputs: x, t in sampler time (the fixture's is model time), y.
    pub fn inputs(&self) -> Result<Inputs, String> {
        let scale = self.weights.config.time_scale;
        Ok((self.get("x")?, self.get("t")?.iter().map(|v| v / scale).collect(), self.labels("y")?))
    }
}
