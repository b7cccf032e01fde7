//! The GPU context: our own device or the embedding app's, the capabilities we found on it, and the
//! pipeline cache every kernel draws from.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::error::{Error, INSTALL_HINT, Result};
use crate::shaders::{self, Variant};

/// Features milliwatt uses when the adapter has them; the device asks for `adapter.features() & WANTED`.
pub const WANTED_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::SUBGROUP_BARRIER)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
    .union(wgpu::Features::PIPELINE_CACHE);

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// How to pick and open a device, and which fallbacks to force.
///
/// `Default` reads the environment: `WGPU_BACKEND`, `WGPU_ADAPTER_NAME`, `WGPU_POWER_PREF`,
/// `MILLIWATT_FORCE_F32`, `MILLIWATT_NO_SUBGROUPS`, `MILLIWATT_PIPELINE_CACHE` (a directory).
/// Tests set the fields directly instead of touching the environment.
#[derive(Clone, Debug)]
pub struct Options {
    /// Backends to look at.
    pub backends: wgpu::Backends,
    /// Case-insensitive substring of the adapter name; `None` takes the preferred adapter.
    pub adapter_name: Option<String>,
    /// Power preference when no name is given.
    pub power_preference: wgpu::PowerPreference,
    /// Never use f16 kernels, even where the device has `SHADER_F16`.
    pub force_f32: bool,
    /// Never use subgroup operations, even where the device has them.
    pub no_subgroups: bool,
    /// Pretend the storage-binding limit is this many bytes (if lower than the device's), to exercise
    /// the split of large weights on small machines.
    pub max_storage_binding: Option<u64>,
    /// Keep every buffer milliwatt makes at or under this many bytes (if lower than the device's
    /// limit): weights and requests that would need a larger one are refused, naming the limit,
    /// before anything is allocated.
    pub max_buffer_size: Option<u64>,
    /// A seam for testing an app's out-of-memory handling: once this many bytes of buffers
    /// have been created through this `Gpu`, creating another fails with
    /// [`Error::OutOfMemory`], as a driver out of memory does.
    pub fail_allocations_after: Option<u64>,
    /// Directory for wgpu's on-disk pipeline cache, where the device offers one.
    pub pipeline_cache_dir: Option<PathBuf>,
    /// Instance flags (validation, debug); default from `WGPU_VALIDATION` / `WGPU_DEBUG`.
    pub instance_flags: wgpu::InstanceFlags,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backends: wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY | wgpu::Backends::GL),
            adapter_name: std::env::var("WGPU_ADAPTER_NAME").ok().filter(|s| !s.is_empty()),
            power_preference: wgpu::PowerPreference::from_env().unwrap_or(wgpu::PowerPreference::HighPerformance),
            force_f32: env_flag("MILLIWATT_FORCE_F32"),
            no_subgroups: env_flag("MILLIWATT_NO_SUBGROUPS"),
            max_storage_binding: None,
            max_buffer_size: None,
            fail_allocations_after: None,
            pipeline_cache_dir: std::env::var_os("MILLIWATT_PIPELINE_CACHE").map(PathBuf::from),
            instance_flags: wgpu::InstanceFlags::from_build_config().with_env(),
        }
    }
}

/// What the device can do, recorded once; every kernel chooses its variant from this.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    /// `SHADER_F16` enabled and not forced off.
    pub f16: bool,
    /// Subgroup operations enabled and not forced off.
    pub subgroups: bool,
    /// Smallest subgroup size the adapter may use.
    pub subgroup_min_size: u32,
    /// Largest subgroup size the adapter may use.
    pub subgroup_max_size: u32,
    /// WGSL `dot4I8Packed` / `dot4U8Packed` accepted (naga polyfills it where the hardware lacks it).
    pub packed_dot4: bool,
    /// GPU timestamps at pass boundaries.
    pub timestamps: bool,
    /// GPU timestamps inside encoders and passes.
    pub timestamps_inside: bool,
    /// wgpu pipeline cache (driver-side, persistable).
    pub pipeline_cache: bool,
    /// Largest storage-buffer binding, bytes (possibly lowered by [`Options::max_storage_binding`]).
    pub max_storage_binding: u64,
    /// Largest buffer, bytes (possibly lowered by [`Options::max_buffer_size`]).
    pub max_buffer_size: u64,
    /// Workgroup (shared) memory per workgroup, bytes.
    pub max_workgroup_storage: u32,
    /// Invocations per workgroup.
    pub max_invocations: u32,
    /// Workgroups per dispatch dimension.
    pub max_workgroups_per_dim: u32,
    /// Storage buffers per shader stage.
    pub max_storage_buffers: u32,
    /// Alignment of storage-buffer binding offsets, bytes.
    pub storage_offset_alignment: u32,
}

impl Capabilities {
    /// Reads the capabilities of an open device, applying the forced fallbacks of `options`.
    pub fn of_device(device: &wgpu::Device, info: &wgpu::AdapterInfo, options: &Options) -> Self {
        let f = device.features();
        let l = device.limits();
        let mut max_storage_binding = l.max_storage_buffer_binding_size;
        if let Some(cap) = options.max_storage_binding {
            max_storage_binding = max_storage_binding.min(cap);
        }
        let packed_dot4 = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::empty(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        })
        .wgsl_language_features()
        .contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct);
        Self {
            f16: f.contains(wgpu::Features::SHADER_F16) && !options.force_f32,
            subgroups: f.contains(wgpu::Features::SUBGROUP) && !options.no_subgroups,
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            packed_dot4,
            timestamps: f.contains(wgpu::Features::TIMESTAMP_QUERY),
            timestamps_inside: f.contains(
                wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
            ),
            pipeline_cache: f.contains(wgpu::Features::PIPELINE_CACHE),
            max_storage_binding,
            max_buffer_size: options.max_buffer_size.map_or(l.max_buffer_size, |cap| l.max_buffer_size.min(cap)),
            max_workgroup_storage: l.max_compute_workgroup_storage_size,
            max_invocations: l.max_compute_invocations_per_workgroup,
            max_workgroups_per_dim: l.max_compute_workgroups_per_dimension,
            max_storage_buffers: l.max_storage_buffers_per_shader_stage,
            storage_offset_alignment: l.min_storage_buffer_offset_alignment,
        }
    }

    /// Every feature and generous limits: for checking shapes and bindings without a device (the
    /// graph does this when ops are added; the device's own capabilities decide at preparation).
    pub fn permissive() -> Self {
        Self {
            f16: true,
            subgroups: true,
            subgroup_min_size: 4,
            subgroup_max_size: 128,
            packed_dot4: true,
            timestamps: true,
            timestamps_inside: true,
            pipeline_cache: false,
            max_storage_binding: u64::from(u32::MAX),
            max_buffer_size: u64::MAX,
            max_workgroup_storage: 32 << 10,
            max_invocations: 1024,
            max_workgroups_per_dim: 65535,
            max_storage_buffers: 16,
            storage_offset_alignment: 256,
        }
    }
}

/// One adapter as [`list_adapters`] reports it.
#[derive(Clone, Debug)]
pub struct AdapterReport {
    /// wgpu's description of the adapter.
    pub info: wgpu::AdapterInfo,
    /// What milliwatt would use on it (with the fallbacks of the options applied).
    pub capabilities: Capabilities,
}

impl AdapterReport {
    /// Options that open this adapter: its backend and its name.
    pub fn options(&self) -> Options {
        Options {
            backends: wgpu::Backends::from(self.info.backend),
            adapter_name: Some(self.info.name.clone()),
            ..Options::default()
        }
    }
}

/// [`list_adapters`], blocking.
pub fn list_adapters_blocking(options: &Options) -> Vec<AdapterReport> {
    pollster::block_on(list_adapters(options))
}

/// Lists every adapter of `options.backends` with the capabilities milliwatt would use.
///
/// Opens (and drops) a device on each, because features and limits are only final on a device.
pub async fn list_adapters(options: &Options) -> Vec<AdapterReport> {
    let instance = make_instance(options);
    let mut out = Vec::new();
    for adapter in instance.enumerate_adapters(options.backends).await {
        let info = adapter.get_info();
        if let Ok((device, _queue)) = adapter.request_device(&device_descriptor(&adapter)).await {
            out.push(AdapterReport { capabilities: Capabilities::of_device(&device, &info, options), info });
        }
    }
    out
}

fn make_instance(options: &Options) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = options.backends;
    desc.flags = options.instance_flags;
    wgpu::Instance::new(desc)
}

fn device_descriptor(adapter: &wgpu::Adapter) -> wgpu::DeviceDescriptor<'static> {
    wgpu::DeviceDescriptor {
        label: Some("milliwatt"),
        required_features: adapter.features() & WANTED_FEATURES,
        required_limits: adapter.limits(),
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    }
}

/// Key of the pipeline cache: shader, preprocessor variant, override constants, entry point.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    /// Shader (and variant) identity.
    pub variant: Variant,
    /// Override constants, by name, as the bit pattern of their `f64` value.
    pub constants: Vec<(&'static str, u64)>,
}

impl PipelineKey {
    /// A key for `variant` with the given override constants.
    pub fn new(variant: Variant, constants: &[(&'static str, f64)]) -> Self {
        let mut constants: Vec<_> = constants.iter().map(|&(n, v)| (n, v.to_bits())).collect();
        constants.sort_unstable();
        Self { variant, constants }
    }
}

/// Counters of GPU objects milliwatt has created; tests use them to prove nothing is re-created.
#[derive(Debug, Default)]
pub struct ObjectCounters {
    pipelines: AtomicU64,
    bind_groups: AtomicU64,
    buffers: AtomicU64,
}

/// A snapshot of [`ObjectCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectCounts {
    /// Compute pipelines created.
    pub pipelines: u64,
    /// Bind groups created.
    pub bind_groups: u64,
    /// Buffers created.
    pub buffers: u64,
}

/// `bytes` zero-padded to a whole, non-zero number of 4-byte words (what buffer writes and WGSL
/// arrays of u32 need), borrowed when already so.
pub(crate) fn padded_to_4(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if bytes.len().is_multiple_of(4) && !bytes.is_empty() {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let mut padded = bytes.to_vec();
    padded.resize(bytes.len().next_multiple_of(4).max(4), 0);
    std::borrow::Cow::Owned(padded)
}

/// Copies `buffer` into a new staging buffer, waits for the copy and returns the bytes: the one
/// readback path ([`Gpu::read`] and the graph executor's reads).
pub(crate) fn read_back(device: &wgpu::Device, queue: &wgpu::Queue, buffer: &wgpu::Buffer) -> Result<Vec<u8>> {
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("milliwatt.readback"),
        size: buffer.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("milliwatt.readback") });
    enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, buffer.size());
    let index = queue.submit([enc.finish()]);
    let mapping = start_map(&staging);
    device.poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None })?;
    mapped_bytes(&staging, &mapping)
}

/// A staging buffer's pending map: the receiver hears once a poll has completed it.
pub(crate) type Mapping = std::sync::mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>;

/// Starts mapping all of `staging` for reading.
pub(crate) fn start_map(staging: &wgpu::Buffer) -> Mapping {
    let (tx, rx) = std::sync::mpsc::channel();
    staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    rx
}

/// The contents of a staging buffer whose map (from [`start_map`]) a poll has completed; unmaps
/// it, so it can be mapped again.
pub(crate) fn mapped_bytes(staging: &wgpu::Buffer, mapping: &Mapping) -> Result<Vec<u8>> {
    let context = || "mapping a staging buffer".to_string();
    mapping.recv().map_err(|_| Error::Validation { context: context(), message: "callback dropped".into() })??;
    let view = staging
        .slice(..)
        .get_mapped_range()
        .map_err(|e| Error::Validation { context: context(), message: e.to_string() })?;
    let out = view.to_vec();
    drop(view);
    staging.unmap();
    Ok(out)
}

/// A device milliwatt runs on: its own, or one the embedding application owns.
///
/// Cheap to share and to clone: `Gpu` is `Send + Sync`, a clone is another handle to the same
/// device, pipeline cache and object counters (so a [`crate::Generator`] keeps one and can sit
/// beside it in an app's struct), and the wgpu handles it holds are reference-counted clones of
/// the caller's.
#[derive(Clone, Debug)]
pub struct Gpu {
    shared: Arc<Shared>,
}

/// What every clone of a [`Gpu`] shares.
#[derive(Debug)]
struct Shared {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    caps: Capabilities,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    disk_cache: Option<(wgpu::PipelineCache, PathBuf)>,
    counters: ObjectCounters,
    /// Why the device was lost, once it is (set by the device-lost callback on a device milliwatt
    /// opened, or by the app through [`Gpu::mark_lost`]).
    lost: Arc<Mutex<Option<String>>>,
    /// Bytes of buffers created so far, and the [`Options::fail_allocations_after`] seam.
    allocated: std::sync::atomic::AtomicU64,
    fail_allocations_after: Option<u64>,
}

impl Gpu {
    /// Opens our own device on the adapter the options (and environment) choose.
    pub async fn new(options: &Options) -> Result<Self> {
        let instance = make_instance(options);
        let adapter = match &options.adapter_name {
            Some(name) => {
                let wanted = name.to_lowercase();
                let adapters = instance.enumerate_adapters(options.backends).await;
                let names: Vec<String> =
                    adapters.iter().map(|a| format!("{} ({:?})", a.get_info().name, a.get_info().backend)).collect();
                adapters.into_iter().find(|a| a.get_info().name.to_lowercase().contains(&wanted)).ok_or_else(|| {
                    Error::NoAdapter {
                        wanted: format!(
                            "name containing `{name}` on {:?}; present: [{}]",
                            options.backends,
                            names.join(", ")
                        ),
                        hint: INSTALL_HINT.into(),
                    }
                })?
            }
            None => instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: options.power_preference,
                    ..Default::default()
                })
                .await
                .map_err(|e| Error::NoAdapter {
                    wanted: format!("any adapter on {:?} ({e})", options.backends),
                    hint: INSTALL_HINT.into(),
                })?,
        };
        Self::from_adapter(&adapter, options).await
    }

    /// Blocking form of [`Gpu::new`].
    pub fn new_blocking(options: &Options) -> Result<Self> {
        pollster::block_on(Self::new(options))
    }

    /// Opens a device on a specific adapter.
    pub async fn from_adapter(adapter: &wgpu::Adapter, options: &Options) -> Result<Self> {
        let info = adapter.get_info();
        let (device, queue) = adapter
            .request_device(&device_descriptor(adapter))
            .await
            .map_err(|source| Error::RequestDevice { adapter: info.name.clone(), source })?;
        let gpu = Self::from_device(&device, &queue, options);
        // Our own device: its loss is ours to hear (an app's device keeps the app's callback).
        let lost = gpu.shared.lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *lost.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(format!("{reason:?}: {message}"));
        });
        Ok(gpu)
    }

    /// Refuses, before allocating, a buffer past the device's (or [`Options::max_buffer_size`]'s)
    /// limit.
    fn fits_buffer(&self, label: &str, size: u64) -> Result<()> {
        let limit = self.shared.caps.max_buffer_size;
        if size > limit {
            return Err(Error::Request {
                message: format!("buffer `{label}` of {size} bytes is past this device's max_buffer_size of {limit}"),
            });
        }
        let before = self.shared.allocated.fetch_add(size, Ordering::Relaxed);
        if let Some(budget) = self.shared.fail_allocations_after
            && before + size > budget
        {
            self.shared.allocated.fetch_sub(size, Ordering::Relaxed);
            return Err(Error::OutOfMemory {
                context: format!("creating buffer `{label}` of {size} bytes (fail_allocations_after {budget})"),
            });
        }
        Ok(())
    }

    /// Why the device was lost, if it was.
    pub fn lost(&self) -> Option<String> {
        self.shared.lost.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Tells milliwatt the device is lost. An app that hands its own device to
    /// [`Gpu::from_device`] keeps its device-lost callback (wgpu holds one) and calls this from
    /// it; a device milliwatt opened reports its loss itself. Every later call on this `Gpu` (and
    /// its clones, and the generators holding one) returns [`Error::DeviceLost`].
    pub fn mark_lost(&self, reason: impl Into<String>) {
        let mut lost = self.shared.lost.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        lost.get_or_insert_with(|| reason.into());
    }

    /// `Ok` while the device is usable, [`Error::DeviceLost`] once it is lost.
    pub fn check_alive(&self) -> Result<()> {
        match self.lost() {
            Some(reason) => Err(Error::DeviceLost { reason }),
            None => Ok(()),
        }
    }

    /// Wraps a device and queue the embedding application owns. milliwatt keeps clones of the
    /// handles, uses only the features the device was opened with, and never changes its state.
    pub fn from_device(device: &wgpu::Device, queue: &wgpu::Queue, options: &Options) -> Self {
        let info = device.adapter_info();
        let caps = Capabilities::of_device(device, &info, options);
        let disk_cache = options
            .pipeline_cache_dir
            .as_ref()
            .filter(|_| caps.pipeline_cache)
            .and_then(|dir| open_disk_cache(device, &info, dir));
        let shared = Shared {
            device: device.clone(),
            queue: queue.clone(),
            info,
            caps,
            pipelines: Mutex::new(HashMap::new()),
            disk_cache,
            counters: ObjectCounters::default(),
            lost: Arc::new(Mutex::new(None)),
            allocated: std::sync::atomic::AtomicU64::new(0),
            fail_allocations_after: options.fail_allocations_after,
        };
        Self { shared: Arc::new(shared) }
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.shared.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.shared.queue
    }

    /// The adapter the device belongs to.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.shared.info
    }

    /// What the device can do (with forced fallbacks applied).
    pub fn capabilities(&self) -> &Capabilities {
        &self.shared.caps
    }

    /// A one-line description: adapter, backend, driver.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {} {})",
            self.shared.info.name, self.shared.info.backend, self.shared.info.driver, self.shared.info.driver_info
        )
    }

    /// How many pipelines, bind groups and buffers milliwatt has created on this device so far.
    pub fn object_counts(&self) -> ObjectCounts {
        ObjectCounts {
            pipelines: self.shared.counters.pipelines.load(Ordering::Relaxed),
            bind_groups: self.shared.counters.bind_groups.load(Ordering::Relaxed),
            buffers: self.shared.counters.buffers.load(Ordering::Relaxed),
        }
    }

    /// The keys of every pipeline made on this device so far (all clones of this `Gpu` share
    /// one cache), e.g. to check them against [`crate::shaders::Variant::all`].
    pub fn pipeline_keys(&self) -> Vec<PipelineKey> {
        self.shared.pipelines.lock().expect("pipeline cache poisoned").keys().cloned().collect()
    }

    /// Returns the cached pipeline for `key`, building (preprocess, validate, compile) it on first use.
    pub fn pipeline(&self, key: &PipelineKey) -> Result<Arc<wgpu::ComputePipeline>> {
        if let Some(p) = self.shared.pipelines.lock().expect("pipeline cache poisoned").get(key) {
            return Ok(p.clone());
        }
        let label = key.variant.label();
        let source = shaders::preprocess(&key.variant)?;
        let (module, _) = shaders::validate(&label, &source)?;
        // An explicit layout of every binding the shader declares (an automatic layout would drop
        // the ones a variant leaves unused, and the caller's bind groups would stop matching).
        let entries = shaders::layout_entries(&module);
        let constants: Vec<(&str, f64)> = key.constants.iter().map(|&(n, b)| (n, f64::from_bits(b))).collect();
        let pipeline = self.scoped(&format!("creating pipeline `{label}`"), || {
            let module = self.shared.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
            let bind_group_layout = self
                .shared
                .device
                .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(&label), entries: &entries });
            let layout = self.shared.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&label),
                bind_group_layouts: &[Some(&bind_group_layout)],
                immediate_size: 0,
            });
            self.shared.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: Some(&layout),
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: self.shared.disk_cache.as_ref().map(|(c, _)| c),
            })
        })?;
        self.shared.counters.pipelines.fetch_add(1, Ordering::Relaxed);
        let pipeline = Arc::new(pipeline);
        self.shared.pipelines.lock().expect("pipeline cache poisoned").insert(key.clone(), pipeline.clone());
        Ok(pipeline)
    }

    /// Writes wgpu's pipeline cache to the directory of [`Options::pipeline_cache_dir`], if any.
    pub fn save_pipeline_cache(&self) -> Result<()> {
        if let Some((cache, path)) = &self.shared.disk_cache
            && let Some(data) = cache.get_data()
        {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.into(), source })?;
            }
            std::fs::write(path, data).map_err(|source| Error::Io { path: path.clone(), source })?;
        }
        Ok(())
    }

    /// Runs `f` inside validation and out-of-memory error scopes and turns a captured error into
    /// the crate's [`Error`].
    pub fn scoped<T>(&self, context: &str, f: impl FnOnce() -> T) -> Result<T> {
        self.check_alive()?;
        let oom = self.shared.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.shared.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        // An error on a device lost meanwhile is the loss, not the call.
        self.check_alive()?;
        if let Some(e) = v {
            return Err(Error::Validation { context: context.into(), message: error_chain(&e) });
        }
        if o.is_some() {
            return Err(Error::OutOfMemory { context: context.into() });
        }
        Ok(out)
    }

    /// Creates a buffer labelled `milliwatt.<name>`.
    pub fn buffer(&self, name: &str, size: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        let label = format!("milliwatt.{name}");
        self.fits_buffer(&label, size)?;
        let b = self.scoped(&format!("creating buffer `{label}` of {size} bytes"), || {
            self.shared.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(&label),
                size,
                usage,
                mapped_at_creation: false,
            })
        })?;
        self.shared.counters.buffers.fetch_add(1, Ordering::Relaxed);
        Ok(b)
    }

    /// Creates a storage buffer holding `data` (padded to 4 bytes), usable as a kernel input and
    /// as a copy source or destination.
    pub fn upload<T: bytemuck::NoUninit>(&self, name: &str, data: &[T]) -> Result<wgpu::Buffer> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let label = format!("milliwatt.{name}");
        self.fits_buffer(&label, bytes.len() as u64)?;
        let contents = padded_to_4(bytes);
        let b = self.scoped(&format!("uploading `{label}` ({} bytes)", bytes.len()), || {
            self.shared.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(&label),
                contents: &contents,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            })
        })?;
        self.shared.counters.buffers.fetch_add(1, Ordering::Relaxed);
        Ok(b)
    }

    /// Creates a uniform buffer holding one `#[repr(C)]` parameter block.
    pub fn uniform<T: bytemuck::NoUninit>(&self, name: &str, value: &T) -> Result<wgpu::Buffer> {
        let label = format!("milliwatt.{name}");
        let b = self.scoped(&format!("creating uniform `{label}`"), || {
            self.shared.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(&label),
                contents: bytemuck::bytes_of(value),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
        })?;
        self.shared.counters.buffers.fetch_add(1, Ordering::Relaxed);
        Ok(b)
    }

    /// Creates a bind group (counted in [`Gpu::object_counts`]).
    pub fn bind_group(&self, desc: &wgpu::BindGroupDescriptor<'_>) -> Result<wgpu::BindGroup> {
        let context = format!("creating bind group `{}`", desc.label.unwrap_or("?"));
        let bg = self.scoped(&context, || self.shared.device.create_bind_group(desc))?;
        self.shared.counters.bind_groups.fetch_add(1, Ordering::Relaxed);
        Ok(bg)
    }

    /// Copies `buffer` back to the CPU (whole buffer, as `T`). Blocks until the GPU is done.
    pub fn read<T: bytemuck::AnyBitPattern>(&self, buffer: &wgpu::Buffer) -> Result<Vec<T>> {
        pollster::block_on(self.read_async(buffer))
    }

    /// Async form of [`Gpu::read`].
    pub async fn read_async<T: bytemuck::AnyBitPattern>(&self, buffer: &wgpu::Buffer) -> Result<Vec<T>> {
        let bytes = read_back(&self.shared.device, &self.shared.queue, buffer)?;
        Ok(bytes.chunks_exact(size_of::<T>()).map(bytemuck::pod_read_unaligned).collect())
    }

    /// Waits until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.check_alive()?;
        let polled = self.shared.device.poll(wgpu::PollType::wait_indefinitely());
        self.check_alive()?;
        polled?;
        Ok(())
    }
}

fn open_disk_cache(
    device: &wgpu::Device,
    info: &wgpu::AdapterInfo,
    dir: &std::path::Path,
) -> Option<(wgpu::PipelineCache, PathBuf)> {
    let file = wgpu::util::pipeline_cache_key(info)?;
    let path = dir.join(file);
    let data = std::fs::read(&path).ok();
    // SAFETY: the data was written by `save_pipeline_cache` for this adapter (the file name is
    // wgpu's key for the adapter and driver); wgpu checks its header and falls back to an empty
    // cache when the data does not match.
    #[expect(unsafe_code, reason = "wgpu marks pipeline-cache data as unchecked input")]
    let cache = unsafe {
        device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
            label: Some("milliwatt.pipeline_cache"),
            data: data.as_deref(),
            fallback: true,
        })
    };
    Some((cache, path))
}

/// An error and its sources, joined: wgpu's top-level message alone is often just "Validation Error".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
