//! The kernel contract every milliwatt kernel implements.
//!
//! (a) [`Kernel::requirements`]: the caller-owned buffers it binds, their minimum sizes and usages,
//!     for a given shape; (b) [`Kernel::prepare`] validates the caller's buffers and builds pipelines,
//!     parameter blocks and bind groups once, after which [`Prepared::record`] records into the
//!     caller's pass without allocating; (c) [`Kernel::work`]: operations by precision and bytes moved,
//!     computed from the launch parameters, for the energy ledger; (d) variant choice from
//!     [`Capabilities`] and shape in one function per kernel, overridable; (e) weights past the
//!     storage-binding limit are split along M into several bindings and dispatches by `prepare`.

use std::ops::{Add, AddAssign, Mul};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{Capabilities, Gpu};

/// Defines [`Work`] from one list of its fields: the struct, its field names, and the
/// arithmetic over every field, so a new counter is added in one place (and in the WGSL counter
/// indices, which a test checks against [`Work::FIELDS`]).
macro_rules! work_fields {
    ($($(#[doc = $doc:literal])* $field:ident,)*) => {
        /// Work one kernel launch does: operations by precision, device-memory and
        /// workgroup-memory bytes.
        ///
        /// Counts come from the launch parameters and describe what the dispatched workgroups
        /// really do (tile re-reads included), not an ideal algorithm. A multiply-add counts as
        /// one multiply and one add. Bitwise and shift operations are `bit_ops` (the ledger
        /// prices them as 32-bit integer adds).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
        pub struct Work {
            $($(#[doc = $doc])* pub $field: u64,)*
        }

        impl Work {
            /// The field names, in order: counter `i` of the counting shaders is field `i`.
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// The counts in [`Work::FIELDS`] order.
            pub fn to_array(&self) -> [u64; Self::FIELDS.len()] {
                [$(self.$field),*]
            }

            /// The work whose field `i` is `counts[i]`.
            pub fn from_array(counts: [u64; Self::FIELDS.len()]) -> Self {
                let mut it = counts.into_iter();
                Work { $($field: it.next().unwrap_or_default(),)* }
            }

            fn zip(self, o: Work, f: impl Fn(u64, u64) -> u64) -> Work {
                let (a, b) = (self.to_array(), o.to_array());
                Work::from_array(std::array::from_fn(|i| f(a[i], b[i])))
            }
        }
    };
}

work_fields! {
    /// f32 additions.
    f32_add,
    /// f32 multiplications.
    f32_mul,
    /// f16 additions.
    f16_add,
    /// f16 multiplications.
    f16_mul,
    /// 8-bit integer multiplications.
    i8_mul,
    /// 8-bit integer additions (the adds of an int8 multiply-add, before widening).
    i8_add,
    /// 32-bit integer additions (accumulators, not address arithmetic).
    i32_add,
    /// 32-bit integer multiplications.
    i32_mul,
    /// Bitwise and shift operations on data (unpacking).
    bit_ops,
    /// Bytes read from device memory.
    dram_read,
    /// Bytes written to device memory.
    dram_write,
    /// Bytes read from workgroup (shared) memory.
    sram_read,
    /// Bytes written to workgroup (shared) memory.
    sram_write,
}

impl Work {
    /// Bytes moved to and from device memory.
    pub fn dram_bytes(&self) -> u64 {
        self.dram_read + self.dram_write
    }

    /// Floating-point operations (adds plus multiplies, any precision).
    pub fn flops(&self) -> u64 {
        self.f32_add + self.f32_mul + self.f16_add + self.f16_mul
    }

    /// All arithmetic operations, integer ones included.
    pub fn ops(&self) -> u64 {
        self.flops() + self.i8_mul + self.i8_add + self.i32_add + self.i32_mul + self.bit_ops
    }

    /// `count` f32 multiply-adds (the arithmetic of every dense kernel, f16 storage included:
    /// shared/elem.wgsl widens f16 to f32).
    pub fn f32_mul_add(count: u64) -> Self {
        Work { f32_mul: count, f32_add: count, ..Work::default() }
    }
}

impl Add for Work {
    type Output = Work;
    fn add(self, o: Work) -> Work {
        self.zip(o, |a, b| a + b)
    }
}

impl AddAssign for Work {
    fn add_assign(&mut self, o: Work) {
        *self = *self + o;
    }
}

impl Mul<u64> for Work {
    type Output = Work;
    fn mul(self, k: u64) -> Work {
        Work::from_array(self.to_array().map(|v| v * k))
    }
}

/// The bytes one launch binds: what it must move to or from device memory at least once
/// (compulsory traffic), however often its workgroups re-read them. With [`Work`]'s counted
/// loads it splits a launch's traffic into compulsory bytes and re-reads, which a cache may serve
/// ([`crate::ledger::Cache`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Footprint {
    /// Bytes of the buffers the launch reads (inputs, weights, read-write tensors).
    pub read: u64,
    /// Bytes of the buffers it writes.
    pub written: u64,
    /// Bytes of all its buffers, each once (a read-write tensor is in `read` and `written`).
    pub bound: u64,
}

impl Footprint {
    /// The footprint of a launch binding `reqs` at their required sizes.
    pub fn of(reqs: &[BufferReq]) -> Self {
        let sum = |f: &dyn Fn(&BufferReq) -> bool| reqs.iter().filter(|r| f(r)).map(|r| r.size).sum();
        Footprint { read: sum(&|r| r.read), written: sum(&|r| r.written), bound: sum(&|_| true) }
    }

    /// The footprint of a launch that reads and writes each byte it binds once, as `w` counts
    /// them: no re-reads, so every cache prices it alike.
    pub fn streaming(w: &Work) -> Self {
        Footprint { read: w.dram_read, written: w.dram_write, bound: w.dram_bytes() }
    }

    /// Bytes read that are not compulsory: counted loads past the bytes bound for reading.
    pub fn re_read(&self, w: &Work) -> u64 {
        w.dram_read.saturating_sub(self.read)
    }

    /// Bytes written past the bytes bound for writing (partial results written more than once).
    pub fn re_written(&self, w: &Work) -> u64 {
        w.dram_write.saturating_sub(self.written)
    }
}

impl Add for Footprint {
    type Output = Footprint;
    fn add(self, o: Footprint) -> Footprint {
        Footprint { read: self.read + o.read, written: self.written + o.written, bound: self.bound + o.bound }
    }
}

/// One caller-owned buffer a kernel binds, as [`Kernel::requirements`] describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferReq {
    /// Binding name (`x`, `w`, `y`, …), used in errors.
    pub name: &'static str,
    /// Minimum size in bytes, from the binding offset.
    pub size: u64,
    /// Usages the buffer must have.
    pub usage: wgpu::BufferUsages,
    /// Whether the kernel writes it.
    pub written: bool,
    /// Whether the kernel reads it (false for pure outputs; true for inputs and read-write
    /// tensors, like a sampler's `x`).
    pub read: bool,
    /// Whether the kernel binds it in row ranges along M when it exceeds the storage-binding limit
    /// (weights and their per-row streams); other buffers must fit one binding.
    pub split_m: bool,
}

impl BufferReq {
    /// A read-only storage input.
    pub fn input(name: &'static str, size: u64) -> Self {
        Self { name, size, usage: wgpu::BufferUsages::STORAGE, written: false, read: true, split_m: false }
    }

    /// A read-only weight stream, split along M past the binding limit.
    pub fn weight(name: &'static str, size: u64) -> Self {
        Self { split_m: true, ..Self::input(name, size) }
    }

    /// A storage output.
    pub fn output(name: &'static str, size: u64) -> Self {
        Self { name, size, usage: wgpu::BufferUsages::STORAGE, written: true, read: false, split_m: false }
    }

    /// A tensor the kernel reads and updates in place.
    pub fn read_write(name: &'static str, size: u64) -> Self {
        Self { written: true, ..Self::input(name, size) }
    }
}

/// A caller-owned buffer bound from `offset` (a multiple of the device's storage offset alignment).
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    /// The buffer.
    pub buffer: &'a wgpu::Buffer,
    /// Byte offset of the tensor's first element.
    pub offset: u64,
}

impl<'a> From<&'a wgpu::Buffer> for TensorRef<'a> {
    fn from(buffer: &'a wgpu::Buffer) -> Self {
        Self { buffer, offset: 0 }
    }
}

/// One dispatch of a prepared kernel.
#[derive(Debug)]
pub struct Dispatch {
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
    // Keeps the parameter block alive as long as the bind group.
    _params: wgpu::Buffer,
}

/// A kernel bound to its buffers: pipelines, parameter blocks and bind groups built once.
/// Recording it again and again allocates nothing.
#[derive(Debug)]
pub struct Prepared {
    name: &'static str,
    label: String,
    dispatches: Vec<Dispatch>,
    work: Work,
    footprint: Footprint,
    // Buffers the kernel made for itself at preparation (placeholders), kept for the bind groups.
    owned: Vec<wgpu::Buffer>,
}

impl Prepared {
    /// Kernel name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Pipeline label of the chosen variant (shader and defines).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The work all dispatches together do.
    pub fn work(&self) -> Work {
        self.work
    }

    /// The bytes the launch binds ([`Kernel::footprint`]).
    pub fn footprint(&self) -> Footprint {
        self.footprint
    }

    /// Appends another prepared kernel's dispatches (run after this one's; works add up).
    pub(crate) fn append(&mut self, other: Prepared) {
        self.dispatches.extend(other.dispatches);
        self.owned.extend(other.owned);
        self.work += other.work;
        self.footprint = self.footprint + other.footprint;
    }

    /// Sets the bytes the launch binds, for a kernel prepared outside [`Kernel::prepare`].
    pub(crate) fn set_footprint(&mut self, footprint: Footprint) {
        self.footprint = footprint;
    }

    /// Keeps a buffer the kernel created during preparation alive as long as its bind groups.
    pub(crate) fn keep_alive(&mut self, buffer: wgpu::Buffer) {
        self.owned.push(buffer);
    }

    /// Number of dispatches (more than one when weights were split past the binding limit).
    pub fn dispatch_count(&self) -> usize {
        self.dispatches.len()
    }

    /// Records the dispatches into the caller's compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        for i in 0..self.dispatches.len() {
            self.record_dispatch(i, pass);
        }
    }

    /// Records dispatch `i` alone (profilers time each dispatch in a pass of its own).
    /// Does nothing past [`Prepared::dispatch_count`].
    pub fn record_dispatch(&self, i: usize, pass: &mut wgpu::ComputePass<'_>) {
        if let Some(d) = self.dispatches.get(i) {
            pass.set_pipeline(&d.pipeline);
            pass.set_bind_group(0, &d.bind_group, &[]);
            let [x, y, z] = d.workgroups;
            pass.dispatch_workgroups(x, y, z);
        }
    }

    /// Records the dispatches in a compute pass of their own, labelled with the variant.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = encoder
            .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(&self.label), timestamp_writes: None });
        self.record(&mut pass);
    }
}

// Defined here, not in `gpu`, so the device layer does not depend on the kernel contract above it.
impl Gpu {
    /// Encodes the prepared kernels in order, one compute pass each, submits them as one command
    /// buffer and waits for completion.
    pub fn run(&self, kernels: &[&Prepared]) -> Result<()> {
        let mut enc =
            self.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("milliwatt.run") });
        for k in kernels {
            k.encode(&mut enc);
        }
        self.scoped("submitting kernels", || self.queue().submit([enc.finish()]))?;
        self.wait()
    }
}

/// What every kernel offers: requirements, work, preparation.
///
/// Kernels are plain descriptions (shapes, formats, options), so a graph can hold them as trait
/// objects; what its fusion pass may do with one, the kernel says itself
/// ([`crate::kernels::fusion::Fusable`]).
pub trait Kernel {
    /// Kernel name, as used in errors, labels and the ledger.
    fn name(&self) -> &'static str;

    /// The caller-owned buffers the kernel binds, in the order `prepare` takes them.
    /// Errors if the shape is invalid or the variant cannot run on `caps`.
    fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>>;

    /// The work one launch does on a device with `caps` (the variant may depend on them).
    fn work(&self, caps: &Capabilities) -> Result<Work>;

    /// The bytes one launch binds (its compulsory traffic), from its requirements.
    fn footprint(&self, caps: &Capabilities) -> Result<Footprint> {
        Ok(Footprint::of(&self.requirements(caps)?))
    }

    /// Builds the dispatches over the caller's buffers (given in `requirements` order), which
    /// [`Kernel::prepare`] has checked against `reqs` (the kernel's `requirements` on this device).
    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared>;

    /// Checks the caller's buffers against the requirements (count, size, usage, alignment,
    /// binding limit), then builds the dispatches: the one entry point, so no kernel repeats the
    /// checks.
    fn prepare(&self, gpu: &Gpu, buffers: &[TensorRef<'_>]) -> Result<Prepared> {
        let caps = gpu.capabilities();
        let reqs = self.requirements(caps)?;
        check_buffers(self.name(), caps, &reqs, buffers)?;
        let mut prepared = self.dispatches(gpu, buffers, &reqs)?;
        prepared.footprint = Footprint::of(&reqs);
        Ok(prepared)
    }
}

/// Checks caller buffers against requirements: count, size from offset, usage, offset alignment.
pub(crate) fn check_buffers(
    kernel: &'static str,
    caps: &Capabilities,
    reqs: &[BufferReq],
    buffers: &[TensorRef<'_>],
) -> Result<()> {
    if reqs.len() != buffers.len() {
        return Err(Error::BindingCount {
            kernel,
            expected: reqs.len(),
            names: reqs.iter().map(|r| r.name).collect::<Vec<_>>().join(", "),
            got: buffers.len(),
        });
    }
    for (r, b) in reqs.iter().zip(buffers) {
        let got = b.buffer.size();
        if b.offset.checked_add(r.size).is_none_or(|end| end > got) {
            return Err(Error::BufferTooSmall { kernel, binding: r.name, needed: r.size, offset: b.offset, got });
        }
        if !b.buffer.usage().contains(r.usage) {
            return Err(Error::BadBinding {
                kernel,
                binding: r.name,
                message: format!("needs usage {:?}, buffer has {:?}", r.usage, b.buffer.usage()),
            });
        }
        if b.offset % u64::from(caps.storage_offset_alignment) != 0 {
            return Err(Error::BadBinding {
                kernel,
                binding: r.name,
                message: format!(
                    "offset {} is not a multiple of the device's storage offset alignment {}",
                    b.offset, caps.storage_offset_alignment
                ),
            });
        }
        if r.size > caps.max_storage_binding && !r.split_m {
            return Err(Error::Shape {
                kernel,
                message: format!(
                    "binding `{}` needs {} bytes, over the device's storage-binding limit of {}",
                    r.name, r.size, caps.max_storage_binding
                ),
            });
        }
    }
    Ok(())
}

/// One dispatch to build: a uniform parameter block (binding 0), storage bindings (binding number,
/// buffer and offset, size), and a grid. [`build`] turns these into [`Dispatch`]es.
pub(crate) struct DispatchSpec<'a, P> {
    pub params: P,
    pub storage: Vec<(u32, TensorRef<'a>, u64)>,
    /// Texture views (binding number, view): storage textures.
    pub views: Vec<(u32, &'a wgpu::TextureView)>,
    pub workgroups: [u32; 3],
}

impl<'a, P> DispatchSpec<'a, P> {
    /// A spec whose storage bindings are numbered 1, 2, … in order.
    pub fn sequential(params: P, storage: Vec<(TensorRef<'a>, u64)>, workgroups: [u32; 3]) -> Self {
        let storage = storage.into_iter().zip(1u32..).map(|((t, size), b)| (b, t, size)).collect();
        Self { params, storage, views: Vec::new(), workgroups }
    }
}

/// Builds a [`Prepared`] from one pipeline and dispatch specs.
pub(crate) fn build<P: bytemuck::NoUninit>(
    gpu: &Gpu,
    name: &'static str,
    key: &crate::gpu::PipelineKey,
    specs: Vec<DispatchSpec<'_, P>>,
    work: Work,
) -> Result<Prepared> {
    let pipeline = gpu.pipeline(key)?;
    let label = key.variant.label();
    let layout = pipeline.get_bind_group_layout(0);
    let mut dispatches = Vec::with_capacity(specs.len());
    for (i, s) in specs.into_iter().enumerate() {
        let params = gpu.uniform(&format!("{name}.params{i}"), &s.params)?;
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() }];
        for (binding, t, size) in &s.storage {
            entries.push(wgpu::BindGroupEntry {
                binding: *binding,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: t.buffer,
                    offset: t.offset,
                    size: wgpu::BufferSize::new(size.next_multiple_of(4).max(4)),
                }),
            });
        }
        for (binding, view) in &s.views {
            entries
                .push(wgpu::BindGroupEntry { binding: *binding, resource: wgpu::BindingResource::TextureView(view) });
        }
        let bind_group = gpu.bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&format!("milliwatt.{name}.bind{i}")),
            layout: &layout,
            entries: &entries,
        })?;
        dispatches.push(Dispatch { pipeline: pipeline.clone(), bind_group, workgroups: s.workgroups, _params: params });
    }
    Ok(Prepared { name, label, dispatches, work, footprint: Footprint::default(), owned: Vec::new() })
}

/// Splits a 1D count of workgroups into a grid within the per-dimension limit.
pub(crate) fn grid_1d(groups: u32, caps: &Capabilities) -> [u32; 3] {
    let max = caps.max_workgroups_per_dim.max(1);
    if groups <= max {
        [groups.max(1), 1, 1]
    } else {
        let y = groups.div_ceil(max);
        [groups.div_ceil(y), y, 1]
    }
}

/// Ranges of weight rows `(first, count)` such that each fits one storage binding and starts at
/// an offset the device accepts (part of the contract: a kernel whose weight exceeds the binding
/// limit splits it along its rows, see [`BufferReq::split_m`]). One range when the whole weight fits.
pub(crate) fn split_rows(
    kernel: &'static str,
    caps: &Capabilities,
    rows: u32,
    row_bytes: u64,
) -> Result<Vec<(u32, u32)>> {
    split_rows_multi(kernel, caps, rows, &[row_bytes])
}

/// [`split_rows`] for weights stored as several per-row streams (packed data, scales, zero
/// points): every stream's range must fit a binding and start at an aligned offset.
pub(crate) fn split_rows_multi(
    kernel: &'static str,
    caps: &Capabilities,
    rows: u32,
    row_bytes: &[u64],
) -> Result<Vec<(u32, u32)>> {
    let widest = row_bytes.iter().copied().max().unwrap_or(1).max(1);
    if u64::from(rows) * widest <= caps.max_storage_binding {
        return Ok(vec![(0, rows)]);
    }
    let align = u64::from(caps.storage_offset_alignment.max(4));
    // Row counts whose byte size is a multiple of the offset alignment in every stream.
    let step = row_bytes.iter().fold(1, |acc, &b| lcm(acc, align / gcd(b.max(1), align)));
    let fit = caps.max_storage_binding / widest;
    let chunk = fit / step * step;
    if chunk == 0 {
        return Err(Error::Shape {
            kernel,
            message: format!(
                "{step} weight rows of {widest} bytes exceed the storage-binding limit of {} bytes",
                caps.max_storage_binding
            ),
        });
    }
    let chunk = u32::try_from(chunk).unwrap_or(u32::MAX);
    Ok((0..rows).step_by(chunk as usize).map(|s| (s, chunk.min(rows - s))).collect())
}

fn lcm(a: u64, b: u64) -> u64 {
    a / gcd(a, b) * b
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(max_binding: u64) -> Capabilities {
        Capabilities {
            f16: false,
            subgroups: false,
            subgroup_min_size: 4,
            subgroup_max_size: 128,
            packed_dot4: true,
            timestamps: false,
            timestamps_inside: false,
            pipeline_cache: false,
            max_storage_binding: max_binding,
            max_buffer_size: 1 << 30,
            max_workgroup_storage: 16384,
            max_invocations: 256,
            max_workgroups_per_dim: 65535,
            max_storage_buffers: 8,
            storage_offset_alignment: 256,
        }
    }

    #[test]
    fn grid_stays_within_dimension_limit_and_covers_all_groups() {
        let c = caps(1 << 27);
        assert_eq!(grid_1d(10, &c), [10, 1, 1]);
        assert_eq!(grid_1d(0, &c), [1, 1, 1]);
        for groups in [65535u32, 65536, 200_000, 4_000_000] {
            let [x, y, z] = grid_1d(groups, &c);
            assert!(x <= 65535 && y <= 65535 && z == 1);
            assert!(u64::from(x) * u64::from(y) >= u64::from(groups));
        }
    }

    #[test]
    fn weight_split_respects_limit_and_alignment() {
        let c = caps(64 << 10);
        // 1000 rows of 1000 f32: 4000 bytes per row; chunks must start at multiples of 256 bytes,
        // so they hold multiples of 8 rows.
        let parts = split_rows("t", &c, 1000, 4000).unwrap();
        assert!(parts.len() > 1);
        let mut next = 0;
        for &(first, count) in &parts {
            assert_eq!(first, next);
            assert!(u64::from(count) * 4000 <= 64 << 10);
            assert_eq!(u64::from(first) * 4000 % 256, 0);
            next = first + count;
        }
        assert_eq!(next, 1000);
        // Fits: one part.
        assert_eq!(split_rows("t", &c, 10, 4004).unwrap(), vec![(0, 10)]);
        // When the smallest aligned group of rows exceeds the limit (64 rows of 4004 bytes here),
        // the answer is an error, not a panic.
        assert!(matches!(split_rows("t", &c, 1000, 4004), Err(Error::Shape { .. })));
    }
}
