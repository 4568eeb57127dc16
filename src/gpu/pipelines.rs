//! Shader modules, bind-group layouts and compute pipelines: compiled once per device user, or
//! once per device for kernel sets kept in the device's cache ([`Gpu::kernels`]).

use std::sync::Arc;

use super::Gpu;

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

impl Gpu {
    /// The kernel set `K` of this device: compiled by `compile` on the first call (inside an
    /// error scope, so that a compilation failure is an [`crate::Error::Gpu`] naming `what` and
    /// nothing is kept), shared by every later one. For kernels that every user of the device
    /// would compile again otherwise (the forward executor's: one executor per pruned layer).
    pub(crate) fn kernels<K: Send + Sync + 'static>(
        &self,
        what: &str,
        compile: impl FnOnce(&wgpu::Device) -> K,
    ) -> crate::error::Result<Arc<K>> {
        let id = std::any::TypeId::of::<K>();
        let cached = self
            .kernels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        if let Some(k) = cached.and_then(|k| k.downcast::<K>().ok()) {
            return Ok(k);
        }
        let compiled = Arc::new(self.scoped(what, || Ok(compile(&self.device)))?);
        let mut cache = self.kernels.lock().unwrap_or_else(|p| p.into_inner());
        let entry = cache.entry(id).or_insert_with(|| compiled);
        Ok(Arc::clone(entry)
            .downcast::<K>()
            .expect("the cache holds K under K's type id"))
    }
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
        // SAFETY: only gram.wgsl, conv.wgsl (src/exec/gpu/gemm.rs) and pad.wgsl (pad.rs) are
        // compiled this way.
        // Every storage access in them is guarded by explicit comparisons with the sizes the
        // host bound (rows of the chunk, columns of the result and block, table lengths) or is
        // in bounds by construction (tile columns past the result clamped to the last one, rows
        // past the range read image 0, offsets into padded planes from tables the host builds
        // from the same geometry as the buffers), every workgroup index stays below the
        // declared array sizes for each valid `TileConfig`, and the kernels are tested against
        // the CPU backend on sizes that are not multiples of the tile with the checks on.
        unsafe { device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
    }
}

/// A pipeline of `entry` in a module built on the matmul core (`shaders/matmul.wgsl`), with the
/// core's overrides set: `wm × wn` threads, `bk` rows staged per step. These kernels write the
/// workgroup memory they read first, so wgpu's zero fill is skipped.
pub(crate) fn tiled_pipeline(
    device: &wgpu::Device,
    layout: &wgpu::PipelineLayout,
    module: &wgpu::ShaderModule,
    entry: &str,
    [wm, wn, bk]: [u32; 3],
) -> wgpu::ComputePipeline {
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: Some(layout),
        module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &[("WM", wm as f64), ("WN", wn as f64), ("BK", bk as f64)],
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    })
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
    module_pipelines(device, label, &module, layout, entry_points)
}

/// Compiles the entry points of a shader module against one bind-group layout.
pub(crate) fn module_pipelines<const N: usize>(
    device: &wgpu::Device,
    label: &str,
    module: &wgpu::ShaderModule,
    layout: &wgpu::BindGroupLayout,
    entry_points: [&str; N],
) -> [wgpu::ComputePipeline; N] {
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(label),
        bind_group_layouts: &[Some(layout)],
        immediate_size: 0,
    });
    entry_points.map(|entry| {
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(&pipeline_layout),
            module,
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn a_kernel_set_is_compiled_once_per_device_and_type() {
        let gpu = Gpu::create(None).expect("a wgpu adapter (lavapipe without a GPU)");
        let compiled = AtomicUsize::new(0);
        let compile = |_: &wgpu::Device| compiled.fetch_add(1, Ordering::SeqCst) + 1;
        let first = gpu.kernels("first", compile).unwrap();
        let second = gpu.kernels("second", compile).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!((*first, compiled.load(Ordering::SeqCst)), (1, 1));
        // Another type is another set; another device compiles its own.
        let other = gpu.kernels("other", |_| "other").unwrap();
        assert_eq!(*other, "other");
        let fresh = Gpu::create(None).unwrap();
        assert_eq!(*fresh.kernels("fresh", compile).unwrap(), 2);
    }
}
