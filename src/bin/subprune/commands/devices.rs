//! `subprune devices`: the GPU adapters wgpu can see.

use subprune::backend::gpu::GpuBackend;

pub fn run() -> anyhow::Result<()> {
    crate::cleanup::ensure_runtime_dir();
    let adapters = GpuBackend::list_adapters();
    if adapters.is_empty() {
        outln!("no GPU adapters (install a Vulkan driver; without a GPU, mesa-vulkan-drivers)");
    }
    for line in adapters {
        outln!("{line}");
    }
    Ok(())
}
