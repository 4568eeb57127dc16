//! Adapter and device choice, the device's limits, device creation, and the shared [`Gpu`]
//! handle with its submission and readback helpers.

use std::sync::{mpsc, Arc, Mutex};

use super::errors::Health;
use crate::error::{Error, Result};

/// Polls before a readback that the GPU has finished is declared failed to map.
const MAP_ATTEMPTS: usize = 100;
/// Wait for the map callback after each poll.
const MAP_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

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

/// One adapter per line (name, backend, device type), for a `devices` listing.
pub(crate) fn adapters() -> Vec<String> {
    let instance = instance();
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(|a| describe(&a.get_info()))
        .collect()
}

/// A wgpu device and queue with what the runtime keeps about them, shared by a backend's
/// clones, its layers and the executors built on it. The kernels compiled for the device are
/// kept by their users.
pub(crate) struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) limits: wgpu::Limits,
    /// Device loss and stray errors (reported only for devices this runtime created).
    pub(super) health: Arc<Mutex<Health>>,
    /// Buffers returned by finished layers, for reuse.
    pub(super) pool: Mutex<Vec<wgpu::Buffer>>,
    /// Kernels compiled on this device, one set per type ([`Gpu::kernels`]).
    pub(super) kernels: Mutex<KernelCache>,
}

/// Compiled kernel sets by type.
pub(super) type KernelCache =
    std::collections::HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>;

impl Gpu {
    /// Creates a device on its own wgpu instance: on the first adapter whose name contains
    /// `wanted` (case-insensitive), else on wgpu's high-performance choice. The device is
    /// requested with the adapter's own storage-buffer, buffer-size and compute limits, so that
    /// large statistics fit.
    pub(crate) fn create(wanted: Option<&str>) -> Result<Self> {
        let instance = instance();
        let adapter = match wanted {
            Some(name) => find_adapter(&instance, name)?,
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
        Self::open(device, queue, info, health)
    }

    /// Wraps a host application's existing device and queue; the host keeps its own
    /// device-lost and uncaptured-error handlers.
    pub(crate) fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Result<Self> {
        let info = device.adapter_info();
        Self::open(device, queue, info, Arc::new(Mutex::new(Health::default())))
    }

    /// Checks that the device has what the kernels need.
    fn open(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        health: Arc<Mutex<Health>>,
    ) -> Result<Self> {
        let limits = device.limits();
        check_limits(&limits, &info.name)?;
        Ok(Self {
            device,
            queue,
            info,
            limits,
            health,
            pool: Mutex::new(Vec::new()),
            kernels: Mutex::default(),
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
    pub(crate) fn submit_and_map<M, T>(
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
    pub(crate) fn wait_for(&self, index: wgpu::SubmissionIndex, what: &str) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| Error::Gpu(format!("{what}: waiting for the GPU failed: {e}")))?;
        self.check_health()
    }

    /// The largest storage binding (and buffer) the device allows, in bytes.
    pub(crate) fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Largest workgroup count along one dispatch dimension.
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
