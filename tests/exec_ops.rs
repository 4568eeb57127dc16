//! Every supported op, on both executors: the op table of `common::ops` (small synthetic models
//! with awkward sizes, random weights and inputs) run by the CPU executor against tract-onnx (an
//! independent runtime), and by the GPU executor against the CPU executor. The GPU half needs a
//! wgpu adapter (lavapipe where there is no GPU, so batches are small).

mod common;
#[path = "common/tract.rs"]
mod tract;

use std::path::Path;

use common::ops::{self, OpCase};
use common::{gpu, temp_dir};
use subprune::exec::{CpuExecutor, Executor, GpuExecutor};
use subprune::ir::Graph;
use subprune::rng::Rng;
use subprune::tensor::{Tensor, TensorView};

/// `n` random images of `shape[1..]` drawn from `seed`.
fn random_images(shape: &[usize], n: usize, seed: u64) -> Tensor {
    let mut dims = shape.to_vec();
    dims[0] = n;
    let count: usize = dims.iter().product();
    let mut rng = Rng::new(seed);
    Tensor::new(dims, (0..count).map(|_| rng.normal() as f32).collect()).unwrap()
}

/// The first output of `exec` on `images` in one batch.
fn run(exec: &dyn Executor, images: &Tensor, label: &str) -> Tensor {
    let mut out = exec
        .run_batch(images.view(), &[], &mut |_, _| Ok(()))
        .unwrap_or_else(|e| panic!("{label}: {}: {e}", exec.name()));
    out.swap_remove(0)
}

fn load(case: &OpCase) -> Graph {
    let path = format!("{}.onnx", case.label);
    subprune::onnx::load_bytes(Path::new(&path), &case.model)
        .unwrap_or_else(|e| panic!("{}: {e}", case.label))
        .graph
}

/// The CPU executor against tract on `case.images` random images: within 1e-4 of the largest
/// |value|.
fn cpu_matches_tract(case: &OpCase) {
    let label = &case.label;
    let dir = temp_dir("ops");
    let path = dir.join(format!("{label}.onnx"));
    std::fs::write(&path, &case.model).unwrap();
    let model = subprune::onnx::load(&path).unwrap_or_else(|e| panic!("{label}: {e}"));
    let exec = CpuExecutor::new(&model.graph).unwrap_or_else(|e| panic!("{label}: {e}"));
    let images = random_images(&case.shape, case.images, 99);
    let ours = run(&exec, &images, label);
    let (shape, want) = tract::tract_output(&path, &images);
    assert_eq!(ours.shape, shape, "{label}: shape");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (a, b)) in ours.data.iter().zip(&want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * scale,
            "{label}: element {i}: ours {a}, tract {b} (scale {scale})"
        );
    }
}

/// The GPU executor against the CPU executor on `case.images` random images: within 1e-5 of the
/// largest |value| (plus 1e-6). Returns the graph.
fn gpu_matches_cpu(case: &OpCase) -> Graph {
    let label = &case.label;
    let graph = load(case);
    let images = random_images(&case.shape, case.images, 7);
    let cpu = CpuExecutor::new(&graph).unwrap_or_else(|e| panic!("{label}: {e}"));
    let want = run(&cpu, &images, label);
    let exec = GpuExecutor::new(&graph, gpu()).unwrap_or_else(|e| panic!("{label}: {e}"));
    let got = run(&exec, &images, label);
    assert_eq!(got.data.len(), want.data.len(), "{label}: output size");
    let scale = want.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in got.data.iter().zip(&want.data).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * scale + 1e-6,
            "{label}: element {i}: GPU {a}, CPU {b} (scale {scale})"
        );
    }
    graph
}

#[test]
fn convolutions_of_every_kind_on_the_cpu() {
    ops::convolutions().iter().for_each(cpu_matches_tract);
}

#[test]
fn convolutions_of_every_kind_on_the_gpu() {
    for case in ops::convolutions() {
        gpu_matches_cpu(&case);
    }
}

#[test]
fn conv_batchnorm_activation_chains_on_the_cpu() {
    cpu_matches_tract(&ops::chains().case);
}

#[test]
fn conv_batchnorm_activation_chains_on_the_gpu() {
    let chains = ops::chains();
    let graph = gpu_matches_cpu(&chains.case);
    // The first conv's raw output was folded away (a tap on it is refused); the second conv's,
    // read twice, was not.
    let exec = GpuExecutor::new(&graph, gpu()).unwrap();
    let images = random_images(&chains.case.shape, 2, 3);
    let tap = |name: &str| {
        let id = graph.value_id(name).unwrap();
        exec.run_batch(images.view(), &[id], &mut |_, _| Ok(()))
    };
    assert!(tap(&chains.conv1)
        .unwrap_err()
        .to_string()
        .contains("folded"));
    assert!(tap(&chains.bn1).is_err());
    tap(&chains.conv2).unwrap();
    tap(&chains.relu).unwrap();
}

#[test]
fn pools_activations_and_elementwise_on_the_cpu() {
    cpu_matches_tract(&ops::pools_activations_and_elementwise());
}

#[test]
fn pools_activations_and_elementwise_on_the_gpu() {
    gpu_matches_cpu(&ops::pools_activations_and_elementwise());
}

#[test]
fn shape_ops_and_matrix_products_on_the_cpu() {
    cpu_matches_tract(&ops::shape_ops_and_matrix_products(false));
}

#[test]
fn shape_ops_and_matrix_products_on_the_gpu() {
    gpu_matches_cpu(&ops::shape_ops_and_matrix_products(true));
}

#[test]
fn opset_11_softmax_and_constant_clip_bounds_on_the_cpu() {
    ops::opset_11_softmax_and_constant_clip_bounds()
        .iter()
        .for_each(cpu_matches_tract);
}

#[test]
fn opset_11_softmax_and_constant_clip_bounds_on_the_gpu() {
    for case in ops::opset_11_softmax_and_constant_clip_bounds() {
        gpu_matches_cpu(&case);
    }
}

/// Clip bounds given as attributes are read, on each executor (tract ignores them, so the
/// reference is the clamp computed by hand).
fn clip_bounds_as_attributes(exec: impl Fn(&Graph) -> Box<dyn Executor>) {
    let case = ops::clip_bounds_as_attributes();
    let exec = exec(&load(&case));
    let mut rng = Rng::new(5);
    let x: Vec<f32> = (0..48).map(|_| rng.normal() as f32).collect();
    let dims = [2, 2, 3, 4];
    let out = exec
        .run_batch(TensorView::new(&dims, &x).unwrap(), &[], &mut |_, _| Ok(()))
        .unwrap();
    for (o, v) in out[0].data.iter().zip(&x) {
        assert_eq!(*o, v.clamp(-0.5, 0.25));
    }
}

#[test]
fn clip_bounds_as_attributes_on_the_cpu() {
    clip_bounds_as_attributes(|g| Box::new(CpuExecutor::new(g).unwrap()));
}

#[test]
fn clip_bounds_as_attributes_on_the_gpu() {
    clip_bounds_as_attributes(|g| Box::new(GpuExecutor::new(g, gpu()).unwrap()));
}
