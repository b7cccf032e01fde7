//! The crate's one error type.

/// Everything that can go wrong in milliwatt.
///
/// Errors carry what the caller gave (names, shapes, sizes) so a message is enough to find the
/// mistake. GPU validation and out-of-memory errors are captured with error scopes and returned
/// here rather than printed by wgpu's default handler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No adapter matched the request (backends, `WGPU_ADAPTER_NAME`, power preference).
    #[error("no GPU adapter found ({wanted}). {hint}")]
    NoAdapter {
        /// What was asked for.
        wanted: String,
        /// How to get one.
        hint: String,
    },

    /// The adapter refused to open a device.
    #[error("could not open a device on adapter `{adapter}`: {source}")]
    RequestDevice {
        /// Adapter name.
        adapter: String,
        /// wgpu's reason.
        #[source]
        source: wgpu::RequestDeviceError,
    },

    /// A shader failed to preprocess, parse or validate.
    #[error("shader `{shader}`: {message}")]
    Shader {
        /// Shader name plus variant.
        shader: String,
        /// The diagnostic, with source location where naga gave one.
        message: String,
    },

    /// wgpu reported a validation error while doing `context`.
    #[error("GPU validation error while {context}: {message}")]
    Validation {
        /// What milliwatt was doing.
        context: String,
        /// wgpu's description.
        message: String,
    },

    /// The device ran out of memory while doing `context`.
    #[error("GPU out of memory while {context}")]
    OutOfMemory {
        /// What milliwatt was doing.
        context: String,
    },

    /// A kernel was asked for a shape it cannot run.
    #[error("kernel `{kernel}`: invalid shape: {message}")]
    Shape {
        /// Kernel name.
        kernel: &'static str,
        /// What is wrong with the shape.
        message: String,
    },

    /// Weights cannot be quantized or packed as asked (shape, group size, format mismatch).
    #[error("weight format {format}: {message}")]
    Format {
        /// The format involved.
        format: String,
        /// What is wrong.
        message: String,
    },

    /// A buffer handed to a kernel is smaller than the kernel's requirements.
    #[error("kernel `{kernel}`: binding `{binding}` needs {needed} bytes from offset {offset}, buffer has {got}")]
    BufferTooSmall {
        /// Kernel name.
        kernel: &'static str,
        /// Binding name (see the kernel's requirements).
        binding: &'static str,
        /// Bytes needed.
        needed: u64,
        /// Offset into the buffer.
        offset: u64,
        /// Bytes the buffer has.
        got: u64,
    },

    /// A buffer handed to a kernel lacks a usage the kernel needs, or is misaligned.
    #[error("kernel `{kernel}`: binding `{binding}`: {message}")]
    BadBinding {
        /// Kernel name.
        kernel: &'static str,
        /// Binding name.
        binding: &'static str,
        /// What is wrong.
        message: String,
    },

    /// Wrong number of bindings for a kernel.
    #[error("kernel `{kernel}` takes {expected} buffers ({names}), got {got}")]
    BindingCount {
        /// Kernel name.
        kernel: &'static str,
        /// Expected count.
        expected: usize,
        /// Binding names in order.
        names: String,
        /// Given count.
        got: usize,
    },

    /// A variant was forced that this device cannot run.
    #[error("kernel `{kernel}`: variant needs {needs}, which this device does not offer")]
    Unsupported {
        /// Kernel name.
        kernel: &'static str,
        /// The missing capability.
        needs: &'static str,
    },

    /// A graph was built or used wrongly (unknown tensor, read before write, wrong kind, wrong
    /// size of data written to a tensor).
    #[error("graph: {message}")]
    Graph {
        /// What is wrong, naming the op and tensor.
        message: String,
    },

    /// Preparing or running one op of a graph failed.
    #[error("op `{op}`: {source}")]
    Op {
        /// The op's name in the graph.
        op: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },

    /// The GPU profiler (per-dispatch timestamps) could not be created or could not finish a
    /// frame.
    #[error("GPU profiler: {message}")]
    Profile {
        /// What failed, in wgpu-profiler's words.
        message: String,
    },

    /// An energy meter (NVML) could not be opened or read.
    #[error("energy meter: {message}")]
    Meter {
        /// What failed.
        message: String,
    },

    /// A generation request is invalid (labels, seeds, noise or init image that do not fit the
    /// model, steps, strength or guidance out of range).
    #[error("request: {message}")]
    Request {
        /// What is wrong, with the values given.
        message: String,
    },

    /// A run was cancelled between steps; `completed` steps had finished.
    #[error("cancelled after {completed} of {total} steps")]
    Cancelled {
        /// Steps that finished.
        completed: u32,
        /// Steps asked for.
        total: u32,
    },

    /// The device was lost (destroyed, reset, or its driver gone). Every later call on this
    /// `Gpu` says so; open a new `Gpu` (and `Generator`) to go on.
    #[error("the GPU device was lost ({reason}); open a new Gpu to go on")]
    DeviceLost {
        /// What wgpu (or the app, through `Gpu::mark_lost`) said.
        reason: String,
    },

    /// Waiting on the device failed (device lost or timeout).
    #[error("waiting for the GPU failed: {0}")]
    Poll(#[from] wgpu::PollError),

    /// Mapping a buffer for readback failed.
    #[error("reading a buffer back failed: {0}")]
    Map(#[from] wgpu::BufferAsyncError),

    /// A model configuration (`config.json`, or the one stored in a pre-packed file) that cannot
    /// be used: not JSON, an unknown or missing field, a bad value, or one that disagrees with
    /// the weights.
    #[error("{}: {}{message}", path.display(), field.as_ref().map_or(String::new(), |f| format!("field `{f}`: ")))]
    Config {
        /// File involved (`config.json` for a configuration given as text).
        path: std::path::PathBuf,
        /// The field at fault, where one is (nested fields as `quantization.mlp`).
        field: Option<String>,
        /// What is wrong.
        message: String,
    },

    /// A checkpoint is missing a tensor or holds a wrong one.
    #[error("{}: tensor `{tensor}`: {problem}", path.display())]
    Checkpoint {
        /// File involved (`(in memory)` for tensors given as values).
        path: std::path::PathBuf,
        /// The tensor's state-dict name; `(header)` for a safetensors header that cannot be read.
        tensor: String,
        /// What is wrong with it.
        problem: CheckpointProblem,
    },

    /// A data file (a digit set, a classifier) that cannot be used as it is.
    #[error("{}: {message}", path.display())]
    Data {
        /// File involved.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// An I/O error, with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// File involved.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// What is wrong with one tensor of a checkpoint ([`Error::Checkpoint`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointProblem {
    /// The file does not hold the tensor.
    Missing,
    /// The tensor has another shape than the configuration implies.
    Shape {
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape in the file.
        got: Vec<usize>,
    },
    /// The tensor's element type cannot be read here (float weights must be F32, F16 or BF16;
    /// packed streams U32).
    Dtype {
        /// The element type in the file, as safetensors names it.
        got: String,
    },
    /// The file ends before the tensor's data does.
    Truncated,
    /// Anything else, in words (inconsistent packed metadata, a non-finite weight, a header
    /// safetensors rejects).
    Invalid(String),
}

impl std::fmt::Display for CheckpointProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointProblem::Missing => write!(f, "missing"),
            CheckpointProblem::Shape { expected, got } => write!(f, "shape {got:?}, expected {expected:?}"),
            CheckpointProblem::Dtype { got } => write!(f, "unsupported dtype {got}"),
            CheckpointProblem::Truncated => write!(f, "truncated: the file ends before this data does"),
            CheckpointProblem::Invalid(message) => write!(f, "{message}"),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to install when no adapter is found (the crate's errors and its test suite say it).
pub const INSTALL_HINT: &str = "milliwatt needs a Vulkan, Metal, DX12 or GL adapter. \
On a machine without a GPU install Mesa's software drivers (lavapipe, and llvmpipe for GL): \
`sudo apt-get install mesa-vulkan-drivers libvulkan1 libegl1` on Debian/Ubuntu, or run `scripts/setup`. \
Select adapters with WGPU_BACKEND (vulkan, metal, dx12, gl) and WGPU_ADAPTER_NAME (substring).";
