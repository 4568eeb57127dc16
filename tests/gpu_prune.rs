//! `prune` on the GPU backend and executor (asym, the default variant): the targets, the cached
//! activations and the calibration images stay on the device, so the host sends the device the
//! calibration images once, and the kept channels are the CPU's. Runs on lavapipe where there is
//! no GPU.

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
    on_gpu_of(&mnist(), &calib(), options)
}

fn on_gpu_of(
    model: &subprune::onnx::OnnxModel,
    calib: &F32Images,
    options: &PruneOptions,
) -> Pruned {
    let factory = |g: &Graph| -> subprune::Result<Box<dyn Executor>> {
        Ok(Box::new(GpuExecutor::new(g, gpu())?))
    };
    prune_with(model, calib, options, gpu(), &factory, &mut |_| {}).unwrap()
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

/// The GPU run's kept channels are the CPU's, layer by layer.
fn assert_same_channels(got: &Pruned, cpu: &Pruned) {
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
}

/// Every layer: the later layers' targets come from the original network's pass on the GPU,
/// kept on the device, and both passes resume from activations cached on the device: the host
/// uploads the calibration images once for the whole network; the kept channels are the CPU's.
#[test]
fn asym_on_the_gpu_keeps_the_cpus_channels_and_uploads_the_images_once() {
    let all = options(Vec::new());
    let cpu = prune(&mnist(), &calib(), &all, &mut |_| {}).unwrap();
    let got = on_gpu(&all);
    assert!(got.report.layers.len() >= 3);
    assert_same_channels(&got, &cpu);
    let phases = &got.report.phases;
    assert_eq!(
        phases.statistics_uploaded_bytes,
        (IMAGES * 28 * 28 * 4) as u64
    );
    assert!(phases.statistics_device_bytes > 0);
}

/// Seq (one pass per layer, on the network pruned so far): the images once as well.
#[test]
fn seq_on_the_gpu_uploads_the_images_once() {
    let seq = PruneOptions {
        variant: Variant::Seq,
        ..options(Vec::new())
    };
    let cpu = prune(&mnist(), &calib(), &seq, &mut |_| {}).unwrap();
    let got = on_gpu(&seq);
    assert_same_channels(&got, &cpu);
    assert_eq!(
        got.report.phases.statistics_uploaded_bytes,
        (IMAGES * 28 * 28 * 4) as u64
    );
}

/// A memory budget smaller than the images (and every cut point's activations): no cache, and
/// every layer's passes start from the images, uploaded once per layer (one upload per batch
/// serves both asym passes). Same channels.
#[test]
fn a_tiny_memory_budget_uploads_the_images_once_per_layer() {
    let tiny = PruneOptions {
        memory_budget: 1024,
        ..options(Vec::new())
    };
    let cpu = prune(&mnist(), &calib(), &tiny, &mut |_| {}).unwrap();
    let got = on_gpu(&tiny);
    assert_same_channels(&got, &cpu);
    let layers = got.report.layers.len() as u64;
    assert_eq!(
        got.report.phases.statistics_uploaded_bytes,
        layers * (IMAGES * 28 * 28 * 4) as u64
    );
}

/// ResNet-56 (residual blocks: cut points only between blocks) with a small calibration set and
/// its first four layers (the rest skipped: building each layer's executors is slow on lavapipe): the images once,
/// and the CPU's channels.
#[test]
fn resnet56_asym_on_the_gpu_uploads_the_images_once() {
    const N: usize = 8;
    const LAYERS: usize = 4;
    let model = subprune::onnx::load(common::fixture("resnet56_cifar10.onnx")).unwrap();
    let calib = F32Images::new("calib", images("cifar10_calib_512.npy", 0, N)).unwrap();
    let names: Vec<String> = subprune::analysis::channels::analyze(&model.graph)
        .prunable
        .iter()
        .map(|l| l.name.clone())
        .collect();
    assert!(names.len() > LAYERS);
    let opts = PruneOptions {
        batch_images: 4,
        ..options(names[LAYERS..].to_vec())
    };
    let cpu = prune(&model, &calib, &opts, &mut |_| {}).unwrap();
    let got = on_gpu_of(&model, &calib, &opts);
    assert_eq!(got.report.layers.len(), LAYERS);
    assert_same_channels(&got, &cpu);
    assert_eq!(
        got.report.phases.statistics_uploaded_bytes,
        (N * 3 * 32 * 32 * 4) as u64
    );
}

/// The CLI's `prune --report` JSON carries the count: `--backend gpu` uploads the images once.
#[test]
fn cli_prune_report_counts_the_images_once_on_the_gpu() {
    let dir = common::temp_dir("gpu-prune-report");
    let calib = common::write_npy(&dir, "calib.npy", &images("mnist_calib_512.npy", 0, IMAGES));
    let (model, report) = (common::fixture("mnist_cnn.onnx"), dir.join("r.json"));
    let run = common::subprune_on(
        "gpu",
        &[
            "prune",
            model.to_str().unwrap(),
            "--calib",
            &calib,
            "--out",
            dir.join("o.onnx").to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    assert!(run.status.success(), "{}", common::stderr(&run));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    assert_eq!(
        json["phases"]["statistics_uploaded_bytes"].as_u64(),
        Some((IMAGES * 28 * 28 * 4) as u64),
        "{json}"
    );
}
