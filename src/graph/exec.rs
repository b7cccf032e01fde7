//! The engine: prepares a planned graph once on a device, then encodes it again for every step
//! from the prepared objects.
//!
//! Creation (once per graph and batch size) fuses, plans, creates one buffer per pool slot and per
//! weight, input and output, and prepares every op (pipelines from the cache, parameter blocks,
//! bind groups). A run then only records: wgpu command buffers are single-use, so each step is
//! encoded anew into one command buffer, one compute pass, and submitted; the step index reaches
//! the kernels through the graph's step counter (a 4-byte queue write before each submission), not
//! through new bind groups. The next step is submitted before the previous one is waited for, so
//! the GPU never idles on the host; there is no readback inside the loop other than the optional
//! preview, copied into one of two staging buffers in the step's own command buffer.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::{Graph, PackedWeight, Phase, Plan, TensorId, TensorKind, fuse, plan_with};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, mapped_bytes, padded_to_4, read_back, start_map};
use crate::kernel::{Prepared, TensorRef};
use crate::ledger::Ledger;
use crate::profile::{DispatchTime, Profile, parse_label, scope_label};
use crate::wgpu;

/// How an [`Executor`] runs a graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecOptions {
    /// Share activation buffers by liveness (the planner); `false` gives each its own buffer.
    pub reuse: bool,
    /// Fold element-wise ops into matmul epilogues and quantization into norms ([`fuse`]).
    pub fuse: bool,
    /// Time every dispatch with GPU timestamps (each dispatch in a pass of its own).
    pub profile: bool,
    /// A tensor copied back after every step for previews ([`StepEvent::preview`]).
    pub preview: Option<TensorId>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self { reuse: true, fuse: true, profile: false, preview: None }
    }
}

/// The caller's work recorded after each step's ops ([`Executor::run_async_then`]): the step's
/// encoder and the step (0-based).
pub type AfterStep<'a> = &'a (dyn Fn(&mut wgpu::CommandEncoder, u32) + Sync);

/// What the step callback of [`Executor::run`] sees, after the GPU finished the step.
#[derive(Clone, Debug)]
pub struct StepEvent {
    /// Index of the step that finished.
    pub step: u32,
    /// Steps in the run.
    pub steps: u32,
    /// The preview tensor after this step, as f32, when [`ExecOptions::preview`] is set.
    pub preview: Option<Vec<f32>>,
    /// Host time since the run started.
    pub elapsed: Duration,
}

/// Buffers an executor really holds for tensors (parameter blocks not included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryReport {
    /// Buffers.
    pub buffers: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Of which the activation pool.
    pub activation_bytes: u64,
    /// Activation bytes had every activation its own buffer (the planner's "without reuse").
    pub activation_bytes_unpooled: u64,
}

/// What one [`Executor::run`] did.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// Steps completed.
    pub steps: u32,
    /// Dispatches recorded.
    pub dispatches: u64,
    /// Host time spent recording command buffers.
    pub host_record: Duration,
    /// Host time spent in `Queue::submit` (and the step-counter writes). Drivers may block here
    /// while earlier work runs (lavapipe, whose "GPU" is the host's CPU, does), so this is an
    /// upper bound on submission overhead.
    pub host_submit: Duration,
    /// Host wall time of the run, waiting included.
    pub wall: Duration,
    /// Energy ledger of the dispatches made.
    pub ledger: Ledger,
    /// GPU profile, when [`ExecOptions::profile`] is set.
    pub profile: Option<Profile>,
}

/// A graph prepared on a device. See the module documentation.
pub struct Executor {
    device: wgpu::Device,
    queue: wgpu::Queue,
    graph: Graph,
    plan: Plan,
    fusion: super::FusionReport,
    options: ExecOptions,
    /// Buffers: the pool, then one per weight, input and output.
    buffers: Vec<wgpu::Buffer>,
    /// Buffer of each tensor.
    tensor_buffer: Vec<Option<usize>>,
    /// One per op of `graph`.
    prepared: Vec<Prepared>,
    /// Two staging buffers for previews (step parity).
    preview: Option<[wgpu::Buffer; 2]>,
    profiler: Option<Mutex<wgpu_profiler::GpuProfiler>>,
}

/// A graph fused (where the options ask for it) and its buffers planned: what an [`Executor`] is
/// built from, and what it will allocate, known before anything is allocated.
#[derive(Clone, Debug)]
pub struct ExecPlan {
    graph: Graph,
    fusion: super::FusionReport,
    plan: Plan,
    options: ExecOptions,
}

impl ExecPlan {
    /// Fuses `graph` when `options.fuse` and plans its buffers.
    pub fn new(graph: &Graph, options: ExecOptions) -> Result<Self> {
        let (graph, fusion) = if options.fuse {
            fuse(graph)?
        } else {
            let ops = graph.ops().len();
            (graph.clone(), super::FusionReport { ops_before: ops, ops_after: ops, ..Default::default() })
        };
        let plan = plan_with(&graph, options.reuse);
        Ok(Self { graph, fusion, plan, options })
    }

    /// The graph as it will run (after fusion).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Bytes of the buffers an executor of this plan creates: the activation pool and the
    /// dedicated buffers, less the weights named in `shared` (bound, not created).
    pub fn bytes(&self, shared: &SharedWeights) -> u64 {
        let bound: u64 = self
            .graph
            .tensors()
            .iter()
            .filter(|t| t.kind == TensorKind::Weight && shared.contains_key(&t.name))
            .map(|t| t.bytes)
            .sum();
        (self.plan.pooled_bytes + self.plan.dedicated_bytes).saturating_sub(bound)
    }
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("ops", &self.graph.ops().len())
            .field("buffers", &self.buffers.len())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn op_err(op: &str, e: Error) -> Error {
    Error::Op { op: op.to_string(), source: Box::new(e) }
}

/// Buffers of weight tensors by name, to share between executors of graphs over the same
/// weights (see [`Executor::new_shared`]).
pub type SharedWeights = std::collections::HashMap<String, wgpu::Buffer>;

/// Resolves when the queue has finished submission `index`: a thread blocks in `Device::poll`
/// (which also runs the map callbacks of buffers that submission used), then wakes the task. So
/// waiting is async without an async runtime, and a blocking caller simply parks in
/// `pollster::block_on`.
fn submission_done(device: &wgpu::Device, index: wgpu::SubmissionIndex) -> SubmissionDone {
    let shared: Arc<Mutex<WaitState>> = Arc::new(Mutex::new((None, None)));
    let (device, state) = (device.clone(), shared.clone());
    std::thread::spawn(move || {
        let r = device.poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None });
        let mut s = state.lock().expect("wait state");
        s.0 = Some(r.map(|_| ()).map_err(Error::from));
        if let Some(w) = s.1.take() {
            w.wake();
        }
    });
    SubmissionDone(shared)
}

/// The outcome of the wait, once there is one, and the task to wake.
type WaitState = (Option<Result<()>>, Option<Waker>);

struct SubmissionDone(Arc<Mutex<WaitState>>);

impl Future for SubmissionDone {
    type Output = Result<()>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut s = self.0.lock().expect("wait state");
        match s.0.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Executor {
    /// Fuses (if asked), plans and prepares `graph` on `gpu`.
    pub fn new(gpu: &Gpu, graph: &Graph, options: ExecOptions) -> Result<Self> {
        Self::new_shared(gpu, graph, options, &SharedWeights::new())
    }

    /// [`Executor::new`], binding the weight tensors named in `shared` to those buffers instead
    /// of creating their own (each must be at least the tensor's size): several executors of one
    /// model (other batch sizes, concurrent requests) then hold its weights once. Activations are
    /// never shared.
    pub fn new_shared(gpu: &Gpu, graph: &Graph, options: ExecOptions, shared: &SharedWeights) -> Result<Self> {
        Self::from_plan(gpu, ExecPlan::new(graph, options)?, shared)
    }

    /// [`Executor::new_shared`] from a graph already fused and planned, so a caller that sized
    /// the executor first (a memory budget) does not fuse and plan twice.
    pub fn from_plan(gpu: &Gpu, exec_plan: ExecPlan, shared: &SharedWeights) -> Result<Self> {
        let ExecPlan { graph, fusion, plan, options } = exec_plan;
        let caps = gpu.capabilities();
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        let mut buffers = Vec::with_capacity(plan.buffers());
        for (i, b) in plan.pool.iter().enumerate() {
            if b.bytes > caps.max_storage_binding {
                let names: Vec<&str> = (0..graph.tensors().len())
                    .filter(|&t| plan.slot[t] == Some(i))
                    .map(|t| graph.tensors()[t].name.as_str())
                    .collect();
                return Err(Error::Graph {
                    message: format!(
                        "activation buffer of {} bytes (tensors {}) exceeds the device's storage-binding limit of {}",
                        b.bytes,
                        names.join(", "),
                        caps.max_storage_binding
                    ),
                });
            }
            buffers.push(gpu.buffer(&format!("pool{i}"), b.bytes, usage)?);
        }
        let mut tensor_buffer: Vec<Option<usize>> = plan.slot.clone();
        for (t, d) in graph.tensors().iter().enumerate() {
            if d.kind == TensorKind::Activation {
                continue;
            }
            if d.bytes > caps.max_buffer_size {
                return Err(Error::Graph {
                    message: format!(
                        "tensor `{}` of {} bytes exceeds the device's buffer size limit of {}",
                        d.name, d.bytes, caps.max_buffer_size
                    ),
                });
            }
            tensor_buffer[t] = Some(buffers.len());
            match shared.get(&d.name).filter(|_| d.kind == TensorKind::Weight) {
                Some(b) if b.size() >= d.bytes => buffers.push(b.clone()),
                Some(b) => {
                    return Err(Error::Graph {
                        message: format!(
                            "shared buffer for `{}` holds {} bytes, the tensor {}",
                            d.name,
                            b.size(),
                            d.bytes
                        ),
                    });
                }
                None => buffers.push(gpu.buffer(&d.name, d.bytes, usage)?),
            }
        }
        let mut prepared = Vec::with_capacity(graph.ops().len());
        for op in graph.ops() {
            let refs: Vec<TensorRef<'_>> = op
                .bindings
                .iter()
                .map(|t| TensorRef {
                    buffer: &buffers[tensor_buffer[t.0].expect("a bound tensor has a buffer")],
                    offset: 0,
                })
                .collect();
            prepared.push(op.kernel.prepare(gpu, &refs).map_err(|e| op_err(&op.name, e))?);
        }
        let preview = match options.preview {
            Some(t) => {
                let d = graph.tensor_desc(t)?;
                if !matches!(d.dtype, super::DType::F32 | super::DType::F16) {
                    return Err(Error::Graph { message: format!("preview tensor `{}` is not f32 or f16", d.name) });
                }
                let mk = |i: usize| {
                    gpu.buffer(
                        &format!("preview{i}"),
                        d.bytes,
                        wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    )
                };
                Some([mk(0)?, mk(1)?])
            }
            None => None,
        };
        let profiler = if options.profile {
            let settings = wgpu_profiler::GpuProfilerSettings {
                enable_timer_queries: caps.timestamps,
                enable_debug_groups: false,
                max_num_pending_frames: 4,
            };
            let p = wgpu_profiler::GpuProfiler::new(gpu.device(), settings)
                .map_err(|e| Error::Profile { message: format!("creating it: {e}") })?;
            Some(Mutex::new(p))
        } else {
            None
        };
        Ok(Self {
            device: gpu.device().clone(),
            queue: gpu.queue().clone(),
            graph,
            plan,
            fusion,
            options,
            buffers,
            tensor_buffer,
            prepared,
            preview,
            profiler,
        })
    }

    /// The graph as run (after fusion).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The memory plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// What fusion did.
    pub fn fusion(&self) -> &super::FusionReport {
        &self.fusion
    }

    /// The prepared ops, in graph order.
    pub fn prepared(&self) -> &[Prepared] {
        &self.prepared
    }

    /// Dispatches in one step.
    pub fn dispatches_per_step(&self) -> usize {
        let r = self.graph.phase_range(Phase::Step);
        self.prepared[r].iter().map(Prepared::dispatch_count).sum()
    }

    /// The buffers of the weight tensors, by name, for [`Executor::new_shared`].
    pub fn weight_buffers(&self) -> SharedWeights {
        self.graph
            .tensors()
            .iter()
            .enumerate()
            .filter(|(_, d)| d.kind == TensorKind::Weight)
            .filter_map(|(t, d)| self.tensor_buffer[t].map(|b| (d.name.clone(), self.buffers[b].clone())))
            .collect()
    }

    /// The buffers really created for tensors.
    pub fn memory(&self) -> MemoryReport {
        let pool = self.plan.pool.len();
        MemoryReport {
            buffers: self.buffers.len(),
            bytes: self.buffers.iter().map(wgpu::Buffer::size).sum(),
            activation_bytes: self.buffers[..pool].iter().map(wgpu::Buffer::size).sum(),
            activation_bytes_unpooled: self.plan.unpooled_bytes,
        }
    }

    /// The buffer holding tensor `t` (from offset 0), e.g. to bind a sample to the caller's own
    /// kernel recorded after a step ([`Executor::run_async_then`]).
    pub fn buffer(&self, t: TensorId) -> Result<&wgpu::Buffer> {
        self.buffer_of(t)
    }

    fn buffer_of(&self, t: TensorId) -> Result<&wgpu::Buffer> {
        let d = self.graph.tensor_desc(t)?;
        self.tensor_buffer[t.0]
            .map(|b| &self.buffers[b])
            .ok_or_else(|| Error::Graph { message: format!("tensor `{}` has no buffer (no op uses it)", d.name) })
    }

    /// Writes a weight or input. The data must fill the tensor exactly (elements times size).
    pub fn write<T: bytemuck::NoUninit>(&self, t: TensorId, data: &[T]) -> Result<()> {
        let d = self.graph.tensor_desc(t)?;
        if !matches!(d.kind, TensorKind::Weight | TensorKind::Input) {
            return Err(Error::Graph {
                message: format!("tensor `{}` is a {:?}; only weights and inputs are written", d.name, d.kind),
            });
        }
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let want = d.shape.iter().map(|&s| u64::from(s)).product::<u64>() * d.dtype.size();
        if bytes.len() as u64 != want {
            return Err(Error::Graph {
                message: format!(
                    "tensor `{}` ({:?} {:?}) holds {want} bytes; got {}",
                    d.name,
                    d.shape,
                    d.dtype,
                    bytes.len()
                ),
            });
        }
        self.queue.write_buffer(self.buffer_of(t)?, 0, &padded_to_4(bytes));
        Ok(())
    }

    /// Writes the streams of a packed weight.
    pub fn write_packed(&self, w: &PackedWeight, p: &crate::quant::Packed) -> Result<()> {
        let d = self.graph.tensor_desc(w.data)?;
        if d.dtype != super::DType::Packed(p.format) {
            return Err(Error::Graph {
                message: format!("tensor `{}` is {:?}, the weight is {}", d.name, d.dtype, p.format),
            });
        }
        self.write(w.data, &p.data)?;
        if let Some(s) = w.scales {
            self.write(s, &p.scales)?;
        }
        if let Some(a) = w.aux {
            self.write(a, &p.aux)?;
        }
        Ok(())
    }

    /// Reads a weight, input or output back (blocking; not for the step loop).
    pub fn read<T: bytemuck::Pod>(&self, t: TensorId) -> Result<Vec<T>> {
        let d = self.graph.tensor_desc(t)?;
        if d.kind == TensorKind::Activation {
            return Err(Error::Graph {
                message: format!("tensor `{}` is a pooled activation; mark it an output to read it", d.name),
            });
        }
        let elems = d.shape.iter().map(|&s| u64::from(s)).product::<u64>() * d.dtype.size() / size_of::<T>() as u64;
        let bytes = read_back(&self.device, &self.queue, self.buffer_of(t)?)?;
        Ok(bytemuck::pod_collect_to_vec::<u8, T>(&bytes[..elems as usize * size_of::<T>()]))
    }

    /// Records the ops of `phase` (for step `step`) into `encoder`: one compute pass, or one
    /// timed pass per dispatch when profiling. Returns the dispatch count.
    fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        phase: Phase,
        step: Option<u32>,
        counts: &mut [u64],
        profiled: bool,
    ) -> u64 {
        let range = self.graph.phase_range(phase);
        let mut dispatches = 0;
        match self.profiler.as_ref().filter(|_| profiled) {
            None => {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("milliwatt.graph"),
                    timestamp_writes: None,
                });
                for i in range {
                    self.prepared[i].record(&mut pass);
                    counts[i] += 1;
                    dispatches += self.prepared[i].dispatch_count() as u64;
                }
            }
            Some(profiler) => {
                let profiler = profiler.lock().expect("profiler lock");
                for i in range {
                    for d in 0..self.prepared[i].dispatch_count() {
                        let query = profiler.begin_pass_query(scope_label(i, step, d), encoder);
                        {
                            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                                label: Some(&self.graph.ops()[i].name),
                                timestamp_writes: query.compute_pass_timestamp_writes(),
                            });
                            self.prepared[i].record_dispatch(d, &mut pass);
                        }
                        profiler.end_query(encoder, query);
                        dispatches += 1;
                    }
                    counts[i] += 1;
                }
            }
        }
        dispatches
    }

    /// Records the ops of one step into the caller's encoder (one compute pass, never profiled),
    /// for applications that submit the work themselves; set the step counter first with
    /// [`Executor::set_step`]. Returns the number of dispatches. Work recorded this way is not in
    /// any [`RunReport`]'s ledger.
    pub fn encode_step(&self, encoder: &mut wgpu::CommandEncoder) -> u64 {
        let mut counts = vec![0; self.prepared.len()];
        self.record(encoder, Phase::Step, None, &mut counts, false)
    }

    /// Writes the step counter (takes effect at the next submission on this queue).
    pub fn set_step(&self, step: u32) -> Result<()> {
        if let Some(counter) = self.graph.step_tensor() {
            self.queue.write_buffer(self.buffer_of(counter)?, 0, bytemuck::bytes_of(&step));
        }
        Ok(())
    }

    /// Encodes and submits one command buffer for `phase`.
    fn submit(
        &self,
        phase: Phase,
        step: Option<u32>,
        after_step: Option<AfterStep<'_>>,
        report: &mut RunReport,
        counts: &mut [u64],
    ) -> Result<wgpu::SubmissionIndex> {
        let t0 = Instant::now();
        let mut enc =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("milliwatt.step") });
        report.dispatches += self.record(&mut enc, phase, step, counts, true);
        if let (Some(after), Some(s)) = (after_step, step) {
            after(&mut enc, s);
        }
        if let (Some(staging), Some(t), Some(s)) = (&self.preview, self.options.preview, step) {
            let bytes = self.graph.tensor_desc(t)?.bytes;
            enc.copy_buffer_to_buffer(self.buffer_of(t)?, 0, &staging[s as usize % 2], 0, bytes);
        }
        if let Some(p) = &self.profiler {
            p.lock().expect("profiler lock").resolve_queries(&mut enc);
        }
        let commands = enc.finish();
        let t1 = Instant::now();
        // Setup ops see step 0 (img2img noising reads the first schedule entry).
        self.set_step(step.unwrap_or(0))?;
        let index = self.queue.submit([commands]);
        if let Some(p) = &self.profiler {
            p.lock()
                .expect("profiler lock")
                .end_frame()
                .map_err(|e| Error::Profile { message: format!("ending a frame: {e}") })?;
        }
        report.host_record += t1 - t0;
        report.host_submit += t1.elapsed();
        Ok(index)
    }

    fn collect_profile(&self, profile: &mut Profile) {
        let Some(p) = &self.profiler else { return };
        let mut p = p.lock().expect("profiler lock");
        let period = self.queue.get_timestamp_period();
        while let Some(results) = p.process_finished_frame(period) {
            for r in results {
                profile.scoped += 1;
                let (Some(time), Some((op, step, dispatch))) = (r.time, parse_label(&r.label)) else {
                    profile.untimed += 1;
                    continue;
                };
                let o = &self.graph.ops()[op];
                profile.dispatches.push(DispatchTime {
                    phase: o.phase,
                    step,
                    op: o.name.clone(),
                    kind: o.kind(),
                    dispatch,
                    start: time.start,
                    end: time.end,
                });
            }
        }
    }

    /// Runs the setup ops, `steps` steps and the finish ops. After each step completes on the GPU,
    /// `on_step` sees it (with the preview, if any) and may stop the run, which then returns
    /// [`Error::Cancelled`] once the step already queued behind it has finished.
    pub fn run(&self, steps: u32, on_step: impl FnMut(&StepEvent) -> ControlFlow<()>) -> Result<RunReport> {
        pollster::block_on(self.run_async(steps, on_step))
    }

    /// [`Executor::run`] as a future: waiting for the GPU does not block the calling thread.
    pub async fn run_async(&self, steps: u32, on_step: impl FnMut(&StepEvent) -> ControlFlow<()>) -> Result<RunReport> {
        self.run_async_then(steps, None, on_step).await
    }

    /// [`Executor::run_async`], with `after_step` recording the caller's own work into each
    /// step's command buffer after the step's ops (e.g. decoding the sample into a texture the
    /// app draws): it sees the encoder and the step, and runs on the GPU before the step is
    /// reported to `on_step`. Its work is the caller's to count.
    pub async fn run_async_then(
        &self,
        steps: u32,
        after_step: Option<AfterStep<'_>>,
        mut on_step: impl FnMut(&StepEvent) -> ControlFlow<()>,
    ) -> Result<RunReport> {
        let start = Instant::now();
        let mut report = RunReport {
            steps: 0,
            dispatches: 0,
            host_record: Duration::ZERO,
            host_submit: Duration::ZERO,
            wall: Duration::ZERO,
            ledger: Ledger::default(),
            profile: self.profiler.as_ref().map(|_| Profile::default()),
        };
        let mut counts = vec![0u64; self.prepared.len()];
        let mut profile = Profile::default();
        if !self.graph.phase_range(Phase::Setup).is_empty() {
            self.submit(Phase::Setup, None, None, &mut report, &mut counts)?;
        }
        let mut in_flight: VecDeque<(u32, wgpu::SubmissionIndex)> = VecDeque::new();
        let mut cancelled = false;
        for s in 0..steps {
            in_flight.push_back((s, self.submit(Phase::Step, Some(s), after_step, &mut report, &mut counts)?));
            if in_flight.len() == 2 {
                let (done, index) = in_flight.pop_front().expect("two in flight");
                if self.complete(done, steps, index, start, &mut report, &mut profile, &mut on_step).await?.is_break() {
                    cancelled = true;
                    break;
                }
            }
        }
        while let Some((done, index)) = in_flight.pop_front() {
            let flow = self.complete(done, steps, index, start, &mut report, &mut profile, &mut on_step).await?;
            cancelled |= flow.is_break();
        }
        if cancelled {
            return Err(Error::Cancelled { completed: report.steps, total: steps });
        }
        if !self.graph.phase_range(Phase::Finish).is_empty() {
            let index = self.submit(Phase::Finish, None, None, &mut report, &mut counts)?;
            submission_done(&self.device, index).await?;
        }
        self.collect_profile(&mut profile);
        for ((op, prepared), &n) in self.graph.ops().iter().zip(&self.prepared).zip(&counts) {
            if n > 0 {
                report.ledger.add(op.kind(), prepared.work(), prepared.footprint(), n);
            }
        }
        if report.profile.is_some() {
            report.profile = Some(profile);
        }
        report.wall = start.elapsed();
        Ok(report)
    }

    /// [`Executor::run`] with the board's energy counter read around it; the measurement is
    /// attached to the report's ledger, beside the estimate.
    #[cfg(feature = "nvml")]
    pub fn run_measured(
        &self,
        steps: u32,
        meter: &crate::nvml::EnergyCounter,
        on_step: impl FnMut(&StepEvent) -> ControlFlow<()>,
    ) -> Result<RunReport> {
        let (mut report, joules) = meter.measure(|| self.run(steps, on_step))?;
        report.ledger.set_measured(joules, format!("NVML board energy counter, {}", meter.name()));
        Ok(report)
    }

    /// Waits for step `step`, reads its preview and tells the caller.
    #[allow(clippy::too_many_arguments)]
    async fn complete(
        &self,
        step: u32,
        steps: u32,
        index: wgpu::SubmissionIndex,
        start: Instant,
        report: &mut RunReport,
        profile: &mut Profile,
        on_step: &mut impl FnMut(&StepEvent) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>> {
        let preview = match (&self.preview, self.options.preview) {
            (Some(staging), Some(t)) => {
                let staging = &staging[step as usize % 2];
                let mapping = start_map(staging);
                submission_done(&self.device, index).await?;
                let bytes = mapped_bytes(staging, &mapping)?;
                let d = self.graph.tensor_desc(t)?;
                let n = d.shape.iter().map(|&s| s as usize).product::<usize>();
                Some(match d.dtype {
                    super::DType::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(&bytes[..n * 2])
                        .into_iter()
                        .map(half::f16::to_f32)
                        .collect(),
                    _ => bytemuck::pod_collect_to_vec::<u8, f32>(&bytes[..n * 4]),
                })
            }
            _ => {
                submission_done(&self.device, index).await?;
                None
            }
        };
        report.steps += 1;
        self.collect_profile(profile);
        Ok(on_step(&StepEvent { step, steps, preview, elapsed: start.elapsed() }))
    }
}
