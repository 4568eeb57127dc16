//! The wgpu backend: the same [`Backend`] traits as the CPU backend, on any GPU that wgpu drives
//! (Vulkan, Metal, DX12; on a machine without a GPU, Mesa's lavapipe).
//!
//! * Statistics (`gram.rs`, `shaders/gram.wgsl`): `Lᵀ R` by a tiled, register-blocked kernel that
//!   reads the consumer input batch directly (implicit im2col for a conv consumer), optionally
//!   from f16 uploads. Sums stay on the GPU for the whole layer as compensated f32 pairs and are
//!   read back once, in [`StatsAccumulator::finish`]. When the consumer weight is given
//!   ([`StatsAccumulator::finish_with_weight`]), `G` and `C0` stay on the device (`resident.rs`):
//!   the host gets `‖AW‖²`, `G`'s diagonal and non-finite flags, and reads rows of `G` and `C0`
//!   back only when it uses them.
//! * Greedy (`greedy.rs`, `shaders/gains.wgsl`, `shaders/downdate.wgsl`): `E` and `R` live on the
//!   GPU in f32. Per step, one dispatch scores every channel, a small kernel picks the argmax and
//!   copies its `ks × ks` diagonal block, and one readback brings gains, pick and block to the
//!   host, which factors the block in f64 and uploads `L⁻¹` for the rank-`ks` downdate.
//!
//! Pipelines are compiled once per backend; shapes travel in uniform buffers. Buffers come from a
//! grow-only pool shared by all layers of one backend. Every GPU failure (no adapter, a lost
//! device, a refused allocation, a validation error) is returned as [`Error::Gpu`].
//!
//! This file holds [`GpuBackend`]; the device, buffer pool, pipelines, error scopes and shader
//! sources it stands on are the GPU runtime ([`crate::gpu`]), shared with the forward executor.
//! The statistics are in `gram/` (split by stage), the greedy in `greedy.rs`, `gains.rs` and
//! `downdate.rs`.

mod autotune;
mod downdate;
mod gains;
mod gram;
mod greedy;
mod resident;

pub use crate::gpu::shaders;
pub use crate::gpu::DeviceTensor;
pub use crate::gpu::CHECKED_SHADERS_ENV;
pub use autotune::{default_cache_path, TuneReport, TuneSource, CACHE_DIR_ENV};
pub use gram::{GramParams, TileConfig};

impl<'a> DeviceTensor<'a> {
    /// The tensor of `shape` stored from byte `offset` of `buffer` on `backend`'s device.
    pub fn new(
        buffer: &'a wgpu::Buffer,
        shape: &'a [usize],
        offset: u64,
        backend: &'a GpuBackend,
    ) -> Self {
        DeviceTensor::on_gpu(buffer, shape, offset, &backend.gpu)
    }
}

use std::sync::Arc;

use super::{Backend, GreedySpec, GreedyState, StatsAccumulator, StatsSpec};
use crate::error::{Error, Result};
use crate::gpu::{checked_shaders, ErrorScopes, Gpu};

/// The floor applied to the dependence tolerance on the GPU: the greedy state is kept in f32, so
/// a Schur-complement pivot is only trusted above about 1e-4 of the column's original Gram
/// diagonal (f32 rounding of `E` accumulates to ~1e-6 relative over a few hundred downdates).
/// The GPU uses `max(dependence_tol, F32_DEPENDENCE_FLOOR)`.
pub const F32_DEPENDENCE_FLOOR: f64 = 1e-4;

/// Environment variable naming the adapter when [`GpuBackend::new`] is given none.
pub const ADAPTER_ENV: &str = "SUBPRUNE_ADAPTER";

/// A compute backend on a wgpu device.
///
/// Cheap to clone (the device, queue, pipelines and buffer pool are shared).
#[derive(Clone)]
pub struct GpuBackend {
    pub(crate) gpu: Arc<Gpu>,
    kernels: Arc<Kernels>,
    half_inputs: bool,
    max_block_bytes: u64,
    tile_config: TileConfig,
    forced_splits: Option<u32>,
    gather_bytes: u64,
    projected: bool,
}

/// The statistics and greedy kernels compiled for a backend's device.
pub(crate) struct Kernels {
    gram: gram::GramKernels,
    gains: gains::GainsKernels,
    downdate: downdate::DowndateKernels,
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
        let wanted = adapter
            .map(str::to_owned)
            .or_else(|| std::env::var(ADAPTER_ENV).ok())
            .filter(|s| !s.trim().is_empty());
        Self::build(Gpu::create(wanted.as_deref())?)
    }

    /// Creates a backend on a host application's existing device and queue (clones of wgpu's
    /// handles); no second device is created. The device must allow 256 invocations per
    /// workgroup, 7 storage buffers per shader stage and 16 KiB of workgroup memory (wgpu's
    /// defaults allow this); the largest statistics block is the device's own
    /// `max_storage_buffer_binding_size`, so request the adapter's limits for big layers. The host keeps its own device-lost and uncaptured-error handlers: this backend
    /// does not replace them, and reports failures of its own work through error scopes.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Result<Self> {
        Self::build(Gpu::from_device(device, queue)?)
    }

    /// Compiles the statistics and greedy kernels on `gpu`'s device.
    fn build(gpu: Gpu) -> Result<Self> {
        let (device, info, limits) = (&gpu.device, &gpu.info, &gpu.limits);
        let scope = ErrorScopes::push(device);
        let kernels = Kernels {
            gram: gram::GramKernels::new(device, checked_shaders()),
            gains: gains::GainsKernels::new(device),
            downdate: downdate::DowndateKernels::new(device),
        };
        scope.pop(&format!("compiling the compute pipelines on {}", info.name))?;
        let max_block_bytes = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let tile_config = TileConfig::default_for(limits).ok_or_else(|| {
            Error::Gpu(format!(
                "adapter {}: no tile configuration fits its limits (workgroup memory {} bytes)",
                info.name, limits.max_compute_workgroup_storage_size
            ))
        })?;
        gpu.check_health()?;
        Ok(Self {
            gpu: Arc::new(gpu),
            kernels: Arc::new(kernels),
            half_inputs: false,
            max_block_bytes,
            tile_config,
            forced_splits: None,
            gather_bytes: gram::GATHER_BYTES,
            projected: true,
        })
    }

    /// One line per adapter wgpu can see (name, backend, device type), for a `devices` listing.
    pub fn list_adapters() -> Vec<String> {
        crate::gpu::adapters()
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

    /// Whether statistics with a target and a known consumer weight
    /// ([`StatsSpec::weight`]) use the projected form (the default): each chunk's target is
    /// projected on the device, `P = A·W`, and the sums are `BᵀB`, `C0 = Bᵀ P` and `Pᵀ P` (about
    /// `D²/2 + 2·D·m` multiply-adds per unfolded row) instead of `BᵀB`, `AᵀB`, `AᵀA` (`2·D²`).
    /// As on the CPU, only where that is less work (`4·m < 3·D`) and `BᵀB` is one column block.
    /// `false` keeps the unprojected form (for comparisons: `subprune bench`).
    pub fn with_projected_statistics(mut self, on: bool) -> Self {
        self.projected = on;
        self
    }

    /// Whether the projected statistics are on (see [`Self::with_projected_statistics`]).
    pub fn projected_statistics(&self) -> bool {
        self.projected
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
                Arc::clone(&self.kernels),
                spec,
                self.half_inputs,
                self.max_block_bytes,
                self.tile_config,
                self.forced_splits,
                self.gather_bytes,
                self.projected,
            )
        })?;
        Ok(Box::new(stats))
    }

    fn greedy_state(&self, spec: GreedySpec<'_>) -> Result<Box<dyn GreedyState + '_>> {
        let state = self.gpu.scoped("setting up the greedy state", || {
            greedy::GpuGreedy::new(
                Arc::clone(&self.gpu),
                Arc::clone(&self.kernels),
                spec,
                self.max_block_bytes,
            )
        })?;
        Ok(Box::new(state))
    }
}
