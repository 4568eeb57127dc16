//! `prune` on the GPU backend and executor (asym, the default variant): the targets stay on the
//! device, so the host sends the device only the forward passes' inputs, and the kept channels
//! are the CPU's. Runs on lavapipe where there is no GPU.

mod common;

use common::{gpu, images};
use subprune::exec::run::F32Images;
use subprune::exec::{Executor, GpuExecutor};
use subprune::ir::Graph;
use subprune::prune::{prune, prune_with, PruneOptions, Pruned, Variant};

const IMAGES: usize = 48;

fn mnist() -> subprune::onnx::OnnxModel {
    subprune::onnx::load(common::fixture("mnist_cnn.onnx")).unwrap()
}

fn calib() -> F32Images {
    F32Images::new("calib", images("mnist_calib_512.npy", 0, IMAGES)).unwrap()
}

fn on_gpu(options: &PruneOptions) -> Pruned {
    let factory = |g: &Graph| -> subprune::Result<Box<dyn Executor>> {
        Ok(Box::new(GpuExecutor::new(g, gpu())?))
    };
    prune_with(&mnist(), &calib(), options, gpu(), &factory, &mut |_| {}).unwrap()
}

fn options(skip: Vec<String>) -> PruneOptions {
    PruneOptions {
        variant: Variant::Asym,
        keep_fraction: 0.5,
        batch_images: 16,
        skip,
        ..Default::default()
    }
}

/// The first layer alone: one forward pass from the calibration images (the network is not
/// pruned yet, so the targets are the inputs), every tap and target copied on the device:
/// the host uploads exactly the calibration images.
#[test]
fn asym_on_the_gpu_uploads_only_the_calibration_images() {
    let cpu_all = prune(&mnist(), &calib(), &options(Vec::new()), &mut |_| {}).unwrap();
    let names: Vec<String> = cpu_all
        .report
        .layers
        .iter()
        .map(|l| l.name.clone())
        .collect();
    assert!(names.len() >= 2, "{names:?}");
    let first_only = options(names[1..].to_vec());
    let cpu = prune(&mnist(), &calib(), &first_only, &mut |_| {}).unwrap();
    let got = on_gpu(&first_only);
    let image_bytes = (IMAGES * 28 * 28 * 4) as u64;
    let phases = &got.report.phases;
    assert_eq!(phases.statistics_uploaded_bytes, image_bytes);
    // B and A of every batch, copied on the device.
    assert!(phases.statistics_device_bytes > 0);
    assert_eq!(got.report.layers.len(), 1);
    assert_eq!(got.report.layers[0].kept, cpu.report.layers[0].kept);
    // The CPU backend and executor send nothing.
    assert_eq!(cpu.report.phases.statistics_uploaded_bytes, 0);
}

/// Every layer: the later layers' targets come from the original network's pass on the GPU,
/// kept on the device; the kept channels are the CPU's, layer by layer.
#[test]
fn asym_on_the_gpu_keeps_the_cpus_channels() {
    let all = options(Vec::new());
    let cpu = prune(&mnist(), &calib(), &all, &mut |_| {}).unwrap();
    let got = on_gpu(&all);
    assert_eq!(got.report.layers.len(), cpu.report.layers.len());
    for (g, c) in got.report.layers.iter().zip(&cpu.report.layers) {
        // With fewer unfolded rows than columns (conv2 → Flatten → fc1: one row per image),
        // the first channels use up the statistics' rank and the rest of the order is
        // rounding noise: only the first pick is compared there.
        if c.rank_deficient {
            assert_eq!(g.order[0], c.order[0], "layer {}", g.name);
        } else {
            assert_eq!(g.kept, c.kept, "layer {}", g.name);
        }
        // Later layers see the network as pruned so far (a different tail of conv2 kept):
        // close errors, not equal ones.
        let gap = (g.relative_error - c.relative_error).abs();
        assert!(
            gap <= 1e-2 * c.relative_error + 1e-3,
            "layer {}: {gap:e}",
            g.name
        );
    }
    let phases = &got.report.phases;
    // At least the images, once; later layers resume from cached activations (two passes each).
    assert!(phases.statistics_uploaded_bytes >= (IMAGES * 28 * 28 * 4) as u64);
    assert!(phases.statistics_device_bytes > 0);
}
