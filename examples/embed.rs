//! Embedding subprune in an application that already owns a wgpu device: the application creates
//! its device and queue as usual and hands clones of them to [`GpuBackend::from_device`], so the
//! pruning work shares its GPU (and its memory budget) instead of opening a second device.
//!
//! Run with `cargo run --example embed` (on a machine without a GPU, wgpu uses lavapipe from
//! `mesa-vulkan-drivers`).

use subprune::{select, Backend, Budget, GpuBackend, LayerProblem, SelectOptions};

fn main() -> anyhow::Result<()> {
    // The host application's own device, created however it likes.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    }))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("host application"),
        ..Default::default()
    }))?;

    // subprune works on clones of the same handles.
    let backend = GpuBackend::from_device(device.clone(), queue.clone())?;
    println!("backend: {}", backend.name());

    let (inputs, weight) = subprune::demo::layer();
    let problem = LayerProblem::new(&inputs.shape, weight.view(), Some(subprune::demo::CONV))?;
    let options = SelectOptions {
        budget: Budget::KeepFraction(0.25),
        ..Default::default()
    };
    let selection = select(
        &backend,
        &problem,
        inputs.view(),
        None,
        &options,
        &mut |_, _, _| {},
    )?;
    println!(
        "kept {} of {} channels: {:?}",
        selection.kept.len(),
        problem.layout().channels,
        selection.kept
    );
    println!(
        "relative error {:.4}; new consumer weight {:?}",
        selection.relative_error, selection.weight.shape
    );

    // The application keeps using its device afterwards.
    device.poll(wgpu::PollType::wait_indefinitely())?;
    drop(queue);
    Ok(())
}
