//! The wgpu backend: the same [`Backend`] traits as the CPU backend, on any GPU that wgpu drives
//! (Vulkan, Metal, DX12; on a machine without a GPU, Mesa's lavapipe).
//!
//! * Statistics (`gram.rs`, `shaders/gram.wgsl`): `Lᵀ R` by a tiled, register-blocked kernel that
//!   reads the consumer input batch directly (implicit im2col for a conv consumer), optionally
//!   from f16 uploads. Sums stay on the GPU for the whole layer as compensated f32 pairs and are
//!   read back once, in [`StatsAccumulator::finish`].
//! * Greedy (`greedy.rs`, `shaders/gains.wgsl`, `shaders/downdate.wgsl`): `E` and `R` live on the
//!   GPU in f32. Per step, one dispatch scores every channel, a small kernel picks the argmax and
//!   copies its `ks × ks` diagonal block, and one readback brings gains, pick and block to the
//!   host, which factors the block in f64 and uploads `L⁻¹` for the rank-`ks` downdate.
//!
//! Pipelines are compiled once per backend; shapes travel in uniform buffers. Buffers come from a
//! grow-only pool shared by all layers of one backend. Every GPU failure (no adapter, a lost
//! device, a refused allocation, a validation error) is returned as [`Error::Gpu`].

mod autotune;
mod downdate;
mod gains;
mod gram;
mod greedy;
pub mod shaders;
mod tensor;
mod timing;

pub use autotune::{default_cache_path, TuneReport, TuneSource, CACHE_DIR_ENV};
pub use gram::{GramParams, TileConfig};
pub use tensor::DeviceTensor;

use std::num::NonZeroU64;
use std::ops::Deref;
use std::sync::{mpsc, Arc, Mutex};

use super::{Backend, GreedySpec, GreedyState, StatsAccumulator, StatsSpec};
use crate::error::{Error, Result};

/// The floor applied to the dependence tolerance on the GPU: the greedy state is kept in f32, so
/// a Schur-complement pivot is only trusted above about 1e-4 of the column's original Gram
/// diagonal (f32 rounding of `E` accumulates to ~1e-6 relative over a few hundred downdates).
/// The GPU uses `max(dependence_tol, F32_DEPENDENCE_FLOOR)`.
pub const F32_DEPENDENCE_FLOOR: f64 = 1e-4;

/// Environment variable naming the adapter when [`GpuBackend::new`] is given none.
pub const ADAPTER_ENV: &str = "SUBPRUNE_ADAPTER";

/// Buffers kept in the pool for reuse (beyond this, returned buffers are freed).
const POOL_MAX_BUFFERS: usize = 64;
/// Bytes kept in the pool for reuse.
const POOL_MAX_BYTES: u64 = 1 << 30;
/// Polls before a readback that the GPU has finished is declared failed to map.
const MAP_ATTEMPTS: usize = 100;
/// Wait for the map callback after each poll.
const MAP_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// A compute backend on a wgpu device.
///
/// Cheap to clone (the device, queue, pipelines and buffer pool are shared).
#[derive(Clone)]
pub struct GpuBackend {
    pub(crate) gpu: Arc<Gpu>,
    half_inputs: bool,
    max_block_bytes: u64,
    tile_config: TileConfig,
    forced_splits: Option<u32>,
    gather_bytes: u64,
}

impl std::fmt::Debug for GpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuBackend")
            .field("adapter", &self.adapter_name())
            .field("half_inputs", &self.half_inputs)
            .field("max_block_bytes", &self.max_block_bytes)
            .field("tile_config", &self.tile_config)
            .finish()
    }
}

impl GpuBackend {
    /// Creates a backend on its own wgpu instance, device and queue.
    ///
    /// The adapter is the first whose name contains `adapter` (case-insensitive), else the one
    /// named by the `SUBPRUNE_ADAPTER` environment variable, else wgpu's high-performance choice.
    /// The device is requested with the adapter's own storage-buffer, buffer-size and compute
    /// limits, so that large statistics fit.
    pub fn new(adapter: Option<&str>) -> Result<Self> {
        let instance = instance();
        let wanted = adapter
            .map(str::to_owned)
            .or_else(|| std::env::var(ADAPTER_ENV).ok())
            .filter(|s| !s.trim().is_empty());
        let adapter = match wanted {
            Some(name) => find_adapter(&instance, &name)?,
            None => pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            }))
            .map_err(|e| {
                Error::Gpu(format!(
                    "no GPU adapter found ({e}); on a machine without a GPU, install Mesa's \
                     software Vulkan driver (package mesa-vulkan-drivers) to run on lavapipe"
                ))
            })?,
        };
        let info = adapter.get_info();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("subprune"),
            // Timestamp queries time the statistics' phases where the adapter has them.
            required_features: adapter.features() & wgpu::Features::TIMESTAMP_QUERY,
            required_limits: requested_limits(&adapter.limits()),
            ..Default::default()
        }))
        .map_err(|e| {
            Error::Gpu(format!(
                "adapter {}: requesting a device failed: {e}",
                info.name
            ))
        })?;
        let health = Arc::new(Mutex::new(Health::default()));
        {
            let health = Arc::clone(&health);
            device.set_device_lost_callback(move |reason, message| {
                let mut h = health.lock().unwrap_or_else(|p| p.into_inner());
                h.lost
                    .get_or_insert(format!("device lost ({reason:?}): {message}"));
            });
        }
        {
            // Errors outside our error scopes must not panic (wgpu's default handler does); the
            // next operation reports them.
            let health = Arc::clone(&health);
            device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
                let mut h = health.lock().unwrap_or_else(|p| p.into_inner());
                h.uncaptured.get_or_insert(format!("{error}"));
            }));
        }
        Self::build(device, queue, info, health)
    }

    /// Creates a backend on a host application's existing device and queue (clones of wgpu's
    /// handles); no second device is created. The device must allow 256 invocations per
    /// workgroup, 7 storage buffers per shader stage and 16 KiB of workgroup memory (wgpu's
    /// defaults allow this); the largest statistics block is the device's own
    /// `max_storage_buffer_binding_size`, so request the adapter's limits for big layers. The host keeps its own device-lost and uncaptured-error handlers: this backend
    /// does not replace them, and reports failures of its own work through error scopes.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Result<Self> {
        let info = device.adapter_info();
        Self::build(device, queue, info, Arc::new(Mutex::new(Health::default())))
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        health: Arc<Mutex<Health>>,
    ) -> Result<Self> {
        let limits = device.limits();
        check_limits(&limits, &info.name)?;
        let scope = ErrorScopes::push(&device);
        let gram = gram::GramKernels::new(&device, checked_shaders());
        let gains = gains::GainsKernels::new(&device);
        let downdate = downdate::DowndateKernels::new(&device);
        scope.pop(&format!("compiling the compute pipelines on {}", info.name))?;
        let max_block_bytes = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let tile_config = TileConfig::default_for(&limits).ok_or_else(|| {
            Error::Gpu(format!(
                "adapter {}: no tile configuration fits its limits (workgroup memory {} bytes)",
                info.name, limits.max_compute_workgroup_storage_size
            ))
        })?;
        let gpu = Gpu {
            device,
            queue,
            info,
            limits,
            health,
            pool: Mutex::new(Vec::new()),
            gram,
            gains,
            downdate,
        };
        gpu.check_health()?;
        Ok(Self {
            gpu: Arc::new(gpu),
            half_inputs: false,
            max_block_bytes,
            tile_config,
            forced_splits: None,
            gather_bytes: gram::GATHER_BYTES,
        })
    }

    /// One line per adapter wgpu can see (name, backend, device type), for a `devices` listing.
    pub fn list_adapters() -> Vec<String> {
        let instance = instance();
        pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
            .iter()
            .map(|a| describe(&a.get_info()))
            .collect()
    }

    /// The adapter's name, e.g. `NVIDIA H100 80GB HBM3` or `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub fn adapter_name(&self) -> String {
        self.gpu.info.name.clone()
    }

    /// Whether the adapter is a software rasterizer running on the CPU (lavapipe, WARP,
    /// SwiftShader: wgpu reports its device type as `Cpu`).
    pub fn is_software(&self) -> bool {
        self.gpu.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Uploads statistics batches as f16 (converted on the host, two values per u32, unpacked in
    /// the shader) instead of f32: half the upload and memory traffic, at f16 input precision
    /// (about 3 significant digits; sums are still accumulated in f32). Values beyond the f16
    /// range (±65504) are refused with [`Error::InvalidArgument`]. Off by default.
    pub fn with_f16_inputs(mut self, on: bool) -> Self {
        self.half_inputs = on;
        self
    }

    /// Whether statistics batches are uploaded as f16.
    pub fn f16_inputs(&self) -> bool {
        self.half_inputs
    }

    /// Caps the size of any one buffer binding (statistics blocks, greedy-state row blocks, input
    /// chunks) at `bytes`, below the device's own limit. Larger statistics are split into column
    /// blocks, larger greedy states into row blocks, larger batches into chunks of images. Meant
    /// for tests of the splitting paths and for sharing a device with other work; values under
    /// 4 KiB are raised to 4 KiB.
    pub fn with_max_block_bytes(mut self, bytes: u64) -> Self {
        let device_max = self
            .gpu
            .limits
            .max_storage_buffer_binding_size
            .min(self.gpu.limits.max_buffer_size);
        self.max_block_bytes = bytes.max(4096).min(device_max);
        self
    }

    /// The largest buffer binding this backend uses, in bytes.
    pub fn max_block_bytes(&self) -> u64 {
        self.max_block_bytes
    }

    /// Uses `config` for the statistics kernels, or an error when the device's limits do not
    /// allow it.
    pub fn with_tile_config(mut self, config: TileConfig) -> Result<Self> {
        if !config.fits(&self.gpu.limits) {
            return Err(Error::InvalidArgument(format!(
                "{config} does not fit the limits of {} (workgroup memory {} of {} bytes)",
                self.gpu.info.name,
                config.workgroup_bytes(),
                self.gpu.limits.max_compute_workgroup_storage_size
            )));
        }
        self.tile_config = config;
        Ok(self)
    }

    /// Fixes the number of row splits (split-K slices) of the statistics kernels instead of
    /// choosing it from the adapter and the tile count (`None`: choose). The memory budget and
    /// the binding size may still lower it; at most 64.
    pub fn with_row_splits(mut self, splits: Option<u32>) -> Self {
        self.forced_splits = splits;
        self
    }

    /// Bytes of consumer inputs gathered on the device, batch after batch, before the
    /// statistics kernels run over all of them (default 64 MiB; at least one batch is always
    /// taken whole). Small batches then still give each row split enough rows; `0` runs the
    /// kernels on every batch as it comes.
    pub fn with_gather_bytes(mut self, bytes: u64) -> Self {
        self.gather_bytes = bytes;
        self
    }

    /// The tile configuration of the statistics kernels.
    pub fn tile_config(&self) -> TileConfig {
        self.tile_config
    }

    /// The tile configurations this device's limits allow, in [`TileConfig::ALL`]'s order.
    pub fn supported_tile_configs(&self) -> Vec<TileConfig> {
        TileConfig::ALL
            .into_iter()
            .filter(|c| c.fits(&self.gpu.limits))
            .collect()
    }

    /// A key naming the adapter and its driver, for caches of per-adapter choices.
    pub fn adapter_key(&self) -> String {
        let i = &self.gpu.info;
        format!(
            "{} | {:?} | {} | {}",
            i.name, i.backend, i.driver, i.driver_info
        )
    }

    /// Frees the buffers kept for reuse across layers.
    pub fn release_cached_buffers(&self) {
        self.gpu.lock_pool().clear();
    }
}

impl Backend for GpuBackend {
    fn name(&self) -> String {
        format!("{} ({:?})", self.gpu.info.name, self.gpu.info.backend)
    }

    fn stats_accumulator(&self, spec: StatsSpec<'_>) -> Result<Box<dyn StatsAccumulator + '_>> {
        let stats = self.gpu.scoped("setting up the statistics", || {
            gram::GpuStats::new(
                Arc::clone(&self.gpu),
                spec,
                self.half_inputs,
                self.max_block_bytes,
                self.tile_config,
                self.forced_splits,
                self.gather_bytes,
            )
        })?;
        Ok(Box::new(stats))
    }

    fn greedy_state(&self, spec: GreedySpec<'_>) -> Result<Box<dyn GreedyState + '_>> {
        let state = self.gpu.scoped("setting up the greedy state", || {
            greedy::GpuGreedy::new(Arc::clone(&self.gpu), spec, self.max_block_bytes)
        })?;
        Ok(Box::new(state))
    }
}

/// A wgpu instance on the primary backends (Vulkan, Metal, DX12); `WGPU_BACKEND` overrides
/// (e.g. `WGPU_BACKEND=gl` for wgpu's secondary OpenGL backend, not used by default because its
/// compute support is limited and initializing it on a headless machine is noisy).
fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = wgpu::Backends::PRIMARY.with_env();
    // wgpu turns on API validation in debug builds; keep it opt-in (WGPU_VALIDATION=1).
    desc.flags = wgpu::InstanceFlags::empty().with_env();
    wgpu::Instance::new(desc)
}

fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}

/// The adapter whose name contains `name` (case-insensitive); among several, a real GPU on a
/// primary backend first.
fn find_adapter(instance: &wgpu::Instance, name: &str) -> Result<wgpu::Adapter> {
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let needle = name.trim().to_lowercase();
    let rank = |info: &wgpu::AdapterInfo| {
        let backend = match info.backend {
            wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
            _ => 1,
        };
        let kind = match info.device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        };
        (backend, kind)
    };
    let available: Vec<String> = adapters.iter().map(|a| describe(&a.get_info())).collect();
    adapters
        .into_iter()
        .filter(|a| a.get_info().name.to_lowercase().contains(&needle))
        .min_by_key(|a| rank(&a.get_info()))
        .ok_or_else(|| {
            Error::Gpu(format!(
                "no GPU adapter matches \"{name}\"; available: {}",
                if available.is_empty() {
                    "none (install a Vulkan driver; without a GPU, mesa-vulkan-drivers)".to_string()
                } else {
                    available.join("; ")
                }
            ))
        })
}

/// wgpu's downlevel defaults, raised to the adapter's own limits where this backend benefits:
/// buffer and binding sizes (big statistics), compute workgroup sizes and memory.
fn requested_limits(adapter: &wgpu::Limits) -> wgpu::Limits {
    let mut l = wgpu::Limits::downlevel_defaults()
        .or_worse_values_from(adapter)
        .using_alignment(adapter.clone());
    l.max_storage_buffer_binding_size = adapter.max_storage_buffer_binding_size;
    l.max_uniform_buffer_binding_size = adapter.max_uniform_buffer_binding_size;
    l.max_buffer_size = adapter.max_buffer_size;
    l.max_storage_buffers_per_shader_stage = adapter.max_storage_buffers_per_shader_stage;
    l.max_dynamic_uniform_buffers_per_pipeline_layout =
        adapter.max_dynamic_uniform_buffers_per_pipeline_layout;
    l.max_compute_workgroup_storage_size = adapter.max_compute_workgroup_storage_size;
    l.max_compute_invocations_per_workgroup = adapter.max_compute_invocations_per_workgroup;
    l.max_compute_workgroup_size_x = adapter.max_compute_workgroup_size_x;
    l.max_compute_workgroup_size_y = adapter.max_compute_workgroup_size_y;
    l.max_compute_workgroup_size_z = adapter.max_compute_workgroup_size_z;
    l.max_compute_workgroups_per_dimension = adapter.max_compute_workgroups_per_dimension;
    l
}

/// What the kernels need of a device.
fn check_limits(l: &wgpu::Limits, adapter: &str) -> Result<()> {
    let needs = [
        (
            "max_compute_invocations_per_workgroup",
            l.max_compute_invocations_per_workgroup as u64,
            256,
        ),
        (
            "max_compute_workgroup_size_x",
            l.max_compute_workgroup_size_x as u64,
            256,
        ),
        (
            "max_compute_workgroup_size_y",
            l.max_compute_workgroup_size_y as u64,
            16,
        ),
        (
            "max_compute_workgroup_storage_size",
            l.max_compute_workgroup_storage_size as u64,
            16384,
        ),
        (
            "max_storage_buffers_per_shader_stage",
            l.max_storage_buffers_per_shader_stage as u64,
            7,
        ),
        (
            "max_dynamic_uniform_buffers_per_pipeline_layout",
            l.max_dynamic_uniform_buffers_per_pipeline_layout as u64,
            1,
        ),
    ];
    for (name, have, need) in needs {
        if have < need {
            return Err(Error::Gpu(format!(
                "adapter {adapter}: device limit {name} is {have}, the kernels need {need}"
            )));
        }
    }
    Ok(())
}

/// What the device callbacks report.
#[derive(Default)]
struct Health {
    /// Why the device was lost; every later operation fails with it.
    lost: Option<String>,
    /// An error raised outside any error scope, reported by the next operation.
    uncaptured: Option<String>,
}

/// The device and everything compiled for it, shared by a backend's clones and its layers.
pub(crate) struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) limits: wgpu::Limits,
    /// Device loss and stray errors (reported only for devices this backend created).
    health: Arc<Mutex<Health>>,
    /// Buffers returned by finished layers, for reuse.
    pool: Mutex<Vec<wgpu::Buffer>>,
    gram: gram::GramKernels,
    gains: gains::GainsKernels,
    downdate: downdate::DowndateKernels,
}

impl Gpu {
    /// Fails if the device was lost (for good), or once for an error no scope caught.
    fn check_health(&self) -> Result<()> {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(msg) = &h.lost {
            return Err(Error::Gpu(format!("{}: {msg}", self.info.name)));
        }
        match h.uncaptured.take() {
            Some(msg) => Err(Error::Gpu(format!(
                "{}: uncaptured error: {msg}",
                self.info.name
            ))),
            None => Ok(()),
        }
    }

    /// Runs `f` inside out-of-memory, validation and internal error scopes: any wgpu error it
    /// causes becomes an [`Error::Gpu`] naming `what`.
    pub(crate) fn scoped<T>(&self, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check_health()?;
        let scope = ErrorScopes::push(&self.device);
        let out = f();
        let popped = scope.pop(what);
        self.check_health()?;
        let value = out?;
        popped?;
        Ok(value)
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Vec<wgpu::Buffer>> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A buffer of at least `size` bytes with exactly `usage`, from the pool or newly allocated
    /// (contents undefined when reused). Allocation failures become [`Error::Gpu`].
    pub(crate) fn buffer(
        self: &Arc<Self>,
        label: &str,
        size: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<PooledBuffer> {
        let size = size.max(16).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        if size > self.limits.max_buffer_size {
            return Err(Error::Gpu(format!(
                "{label} needs {size} bytes, more than the device's largest buffer ({} bytes) on {}",
                self.limits.max_buffer_size, self.info.name
            )));
        }
        {
            let mut pool = self.lock_pool();
            let best = pool
                .iter()
                .enumerate()
                .filter(|(_, b)| b.usage() == usage && b.size() >= size && b.size() <= 2 * size)
                .min_by_key(|(_, b)| b.size())
                .map(|(i, _)| i);
            if let Some(i) = best {
                let buffer = pool.swap_remove(i);
                return Ok(PooledBuffer {
                    buffer: Some(buffer),
                    gpu: Arc::clone(self),
                });
            }
        }
        // Round up a little so that later, slightly bigger requests can reuse the buffer.
        let granule = (size.next_power_of_two() / 8).max(256);
        let alloc = size
            .next_multiple_of(granule)
            .min(self.limits.max_buffer_size.max(size));
        let scope = ErrorScopes::push(&self.device);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: alloc,
            usage,
            mapped_at_creation: false,
        });
        scope.pop(&format!("allocating {label} ({alloc} bytes)"))?;
        Ok(PooledBuffer {
            buffer: Some(buffer),
            gpu: Arc::clone(self),
        })
    }

    /// Submits `encoder`'s work, waits for it, maps `staging[..bytes]` and returns its words.
    pub(crate) fn submit_and_read(
        &self,
        encoder: wgpu::CommandEncoder,
        staging: &wgpu::Buffer,
        bytes: u64,
        what: &str,
    ) -> Result<Vec<u32>> {
        self.submit_and_map(
            encoder,
            staging,
            bytes,
            what,
            || (),
            |view, ()| bytemuck::pod_collect_to_vec::<u8, u32>(view),
        )
    }

    /// Submits `encoder`, runs `meanwhile` on the host while the GPU works, maps the first
    /// `bytes` of `staging` once the GPU is done, and hands the mapped bytes and what
    /// `meanwhile` returned to `read` (which can convert them in place, without a copy).
    fn submit_and_map<M, T>(
        &self,
        encoder: wgpu::CommandEncoder,
        staging: &wgpu::Buffer,
        bytes: u64,
        what: &str,
        meanwhile: impl FnOnce() -> M,
        read: impl FnOnce(&[u8], M) -> T,
    ) -> Result<T> {
        self.queue.submit([encoder.finish()]);
        let prepared = meanwhile();
        let slice = staging.slice(..bytes);
        let (tx, rx) = mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        // When several threads share the device, another thread's poll may collect our map
        // callback and run it a moment later: poll again and wait a little before giving up.
        let mut mapped = None;
        for _ in 0..MAP_ATTEMPTS {
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| Error::Gpu(format!("{what}: waiting for the GPU failed: {e}")))?;
            self.check_health()?;
            match rx.recv_timeout(MAP_WAIT) {
                Ok(result) => {
                    mapped = Some(result);
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        match mapped {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                return Err(Error::Gpu(format!(
                    "{what}: mapping the readback buffer failed: {e}"
                )))
            }
            None => {
                return Err(Error::Gpu(format!(
                    "{what}: the readback buffer was not mapped after the GPU finished"
                )))
            }
        }
        let out = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| Error::Gpu(format!("{what}: reading the mapped buffer: {e}")))?;
            read(&view, prepared)
        };
        staging.unmap();
        Ok(out)
    }

    /// Waits until submission `index` has finished (bounds the work queued ahead of the host).
    fn wait_for(&self, index: wgpu::SubmissionIndex, what: &str) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| Error::Gpu(format!("{what}: waiting for the GPU failed: {e}")))?;
        self.check_health()
    }

    /// Largest workgroup count along one dispatch dimension.
    /// The largest storage binding (and buffer) the device allows, in bytes.
    pub(crate) fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    fn max_groups(&self) -> u32 {
        self.limits.max_compute_workgroups_per_dimension
    }

    /// `count` workgroups as an (x, y) grid within the per-dimension limit; kernels recover the
    /// linear index as `x + y · groups.x` and bounds-check it.
    pub(crate) fn grid(&self, count: u32) -> (u32, u32) {
        let x = count.clamp(1, self.max_groups());
        (x, count.div_ceil(x).max(1))
    }
}

/// A buffer borrowed from the pool; returned to it on drop.
pub(crate) struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    gpu: Arc<Gpu>,
}

impl Deref for PooledBuffer {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            let mut pool = self.gpu.lock_pool();
            let held: u64 = pool.iter().map(|b| b.size()).sum();
            if pool.len() < POOL_MAX_BUFFERS && held + buffer.size() <= POOL_MAX_BYTES {
                pool.push(buffer);
            }
        }
    }
}

/// A binding of the first `size` bytes of `buffer`.
pub(crate) fn binding(buffer: &wgpu::Buffer, size: u64) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer,
        offset: 0,
        size: NonZeroU64::new(size.next_multiple_of(4).max(4)),
    })
}

/// The three error scopes around one operation. Fields drop in declaration order, which is the
/// reverse of the order the scopes were pushed in, as wgpu requires.
struct ErrorScopes {
    internal: wgpu::ErrorScopeGuard,
    validation: wgpu::ErrorScopeGuard,
    oom: wgpu::ErrorScopeGuard,
}

impl ErrorScopes {
    fn push(device: &wgpu::Device) -> Self {
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
        Self {
            internal,
            validation,
            oom,
        }
    }

    fn pop(self, what: &str) -> Result<()> {
        let internal = pollster::block_on(self.internal.pop());
        let validation = pollster::block_on(self.validation.pop());
        let oom = pollster::block_on(self.oom.pop());
        match oom.or(validation).or(internal) {
            None => Ok(()),
            Some(wgpu::Error::OutOfMemory { .. }) => {
                Err(Error::Gpu(format!("{what}: out of GPU memory")))
            }
            Some(e) => Err(Error::Gpu(format!("{what}: {e}"))),
        }
    }
}

/// What a bind-group slot holds.
#[derive(Clone, Copy)]
pub(crate) enum Slot {
    /// A uniform parameter block selected by a dynamic offset.
    Params,
    /// A read-only storage buffer.
    Read,
    /// A read-write storage buffer.
    ReadWrite,
}

pub(crate) fn bind_group_layout(
    device: &wgpu::Device,
    label: &str,
    slots: &[Slot],
) -> wgpu::BindGroupLayout {
    let entries: Vec<_> = slots
        .iter()
        .enumerate()
        .map(|(i, slot)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match slot {
                    Slot::Params => wgpu::BufferBindingType::Uniform,
                    Slot::Read => wgpu::BufferBindingType::Storage { read_only: true },
                    Slot::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: matches!(slot, Slot::Params),
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
        entries: &entries,
    })
}

/// Environment variable that keeps wgpu's shader runtime checks on in a release build.
pub const CHECKED_SHADERS_ENV: &str = "SUBPRUNE_CHECKED_SHADERS";

/// Whether the statistics kernels keep wgpu's runtime bounds checks: always in debug and test
/// builds (the tests run the checked kernels on awkward sizes), and in release builds when
/// `SUBPRUNE_CHECKED_SHADERS=1`.
pub(crate) fn checked_shaders() -> bool {
    cfg!(debug_assertions) || std::env::var(CHECKED_SHADERS_ENV).is_ok_and(|v| v == "1")
}

/// A shader module, with wgpu's runtime bounds checks unless `checked` is false.
pub(crate) fn shader_module(
    device: &wgpu::Device,
    label: &str,
    source: &str,
    checked: bool,
) -> wgpu::ShaderModule {
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    };
    if checked {
        device.create_shader_module(desc)
    } else {
        // SAFETY: only gram.wgsl and conv.wgsl (src/exec/gpu/gemm.rs) are compiled this way.
        // Every storage access in them is guarded by
        // explicit comparisons with the sizes the host bound (rows of the chunk, columns of the
        // result and block, table lengths), every workgroup index stays below the declared
        // array sizes for each valid `TileConfig`, and the kernels are tested against the CPU
        // backend on sizes that are not multiples of the tile with the checks on.
        unsafe { device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
    }
}

/// Compiles the entry points of one shader file against one bind-group layout.
pub(crate) fn pipelines<const N: usize>(
    device: &wgpu::Device,
    label: &str,
    source: &str,
    layout: &wgpu::BindGroupLayout,
    entry_points: [&str; N],
) -> [wgpu::ComputePipeline; N] {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(label),
        bind_group_layouts: &[Some(layout)],
        immediate_size: 0,
    });
    entry_points.map(|entry| {
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                // Every kernel writes the workgroup memory it reads first, so wgpu's zero fill
                // at the start of each workgroup is wasted work.
                zero_initialize_workgroup_memory: false,
                ..Default::default()
            },
            cache: None,
        })
    })
}

/// A uniform buffer of parameter blocks, one per dispatch, selected by dynamic offsets.
struct ParamSlots {
    buffer: PooledBuffer,
    stride: u64,
    size: u64,
    count: usize,
}

impl ParamSlots {
    fn new<T: bytemuck::Pod>(gpu: &Arc<Gpu>, label: &str, count: usize) -> Result<Self> {
        let size = std::mem::size_of::<T>() as u64;
        let stride = size.next_multiple_of(gpu.limits.min_uniform_buffer_offset_alignment as u64);
        let buffer = gpu.buffer(
            label,
            stride * count.max(1) as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        )?;
        Ok(Self {
            buffer,
            stride,
            size,
            count,
        })
    }

    /// The binding (one block) to put in a bind group.
    fn binding(&self) -> wgpu::BindingResource<'_> {
        binding(&self.buffer, self.size)
    }

    /// The dynamic offset of slot `i`.
    fn offset(&self, i: usize) -> u32 {
        debug_assert!(i < self.count);
        (i as u64 * self.stride) as u32
    }

    /// Writes all slots (ordered before the next submission).
    fn write<T: bytemuck::Pod>(&self, queue: &wgpu::Queue, slots: &[T]) {
        debug_assert!(slots.len() <= self.count);
        let mut bytes = vec![0u8; self.stride as usize * slots.len()];
        for (i, s) in slots.iter().enumerate() {
            let at = i * self.stride as usize;
            bytes[at..at + self.size as usize].copy_from_slice(bytemuck::bytes_of(s));
        }
        if !bytes.is_empty() {
            queue.write_buffer(&self.buffer, 0, &bytes);
        }
    }
}
