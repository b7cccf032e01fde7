//! A measured cross-check for the energy ledger (feature `nvml`): the board energy counter of an
//! NVIDIA GPU, read through NVML around a run. It measures the whole board (static power, memory,
//! fans' share of the board rail) over the wall time of the run, so it is an upper bound on what
//! the ledger estimates; the two are printed side by side, never mixed.

use nvml_wrapper::Nvml;

use crate::error::{Error, Result};

/// An NVIDIA board's cumulative energy counter (millijoules since the driver loaded).
pub struct EnergyCounter {
    nvml: Nvml,
    index: u32,
    name: String,
}

impl std::fmt::Debug for EnergyCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnergyCounter").field("index", &self.index).field("name", &self.name).finish()
    }
}

fn nvml_err(what: &str, e: nvml_wrapper::error::NvmlError) -> Error {
    Error::Meter { message: format!("NVML {what}: {e}") }
}

impl EnergyCounter {
    /// Opens device `index` (NVML order; `MILLIWATT_NVML_DEVICE` by convention). Errors when the
    /// NVIDIA driver or the device's energy counter (Volta and newer) is not there.
    pub fn open(index: u32) -> Result<Self> {
        let nvml = Nvml::init().map_err(|e| nvml_err("init (is the NVIDIA driver installed?)", e))?;
        let name = {
            let d = nvml.device_by_index(index).map_err(|e| nvml_err(&format!("device {index}"), e))?;
            d.total_energy_consumption().map_err(|e| nvml_err("energy counter", e))?;
            d.name().unwrap_or_default()
        };
        Ok(Self { nvml, index, name })
    }

    /// The board's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The counter, joules.
    pub fn read_joules(&self) -> Result<f64> {
        let d = self.nvml.device_by_index(self.index).map_err(|e| nvml_err("device", e))?;
        let mj = d.total_energy_consumption().map_err(|e| nvml_err("energy counter", e))?;
        Ok(mj as f64 / 1e3)
    }

    /// Runs `f` and returns its result with the board energy spent meanwhile, joules. `f` must
    /// wait for its GPU work (as [`crate::graph::Executor::run`] does).
    pub fn measure<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
        let before = self.read_joules()?;
        let out = f()?;
        Ok((out, self.read_joules()? - before))
    }
}
