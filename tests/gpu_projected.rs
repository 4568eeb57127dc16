//! The projected GPU statistics (`P = A·W` on the device, then `C0 = Bᵀ P` and `‖P‖²`) against
//! the CPU backend's projected statistics (f32 partial sums added in f64; checked against plain
//! f64 sums in `gram_statistics.rs`) and against the GPU's unprojected path (`BᵀA`, `AᵀA`, then
//! `C0` and `‖AW‖²` from them): random layers of awkward sizes (conv with padding, stride and
//! dilation; dense), several chunks per layer, and the consumer inputs of ResNet-56 and VGG-11
//! conv layers tapped from the fixtures, whose kept channels must be the CPU's.
//!
//! Tolerances: `C0` entry-wise within 1e-4 of its largest entry, `‖AW‖²` within 1e-4 relative,
//! `BᵀB` within 1e-5 of its largest entry. Runs on lavapipe where there is no GPU.

mod common;

use common::{assert_close_scaled as assert_close, first_images, fixture, gpu};
use subprune::backend::StatsSpec;
use subprune::exec::run::{forward_batches, F32Images};
use subprune::exec::{Activation, CpuExecutor};
use subprune::ir::{ConstData, Op, Padding};
use subprune::layer::RawGrams;
use subprune::rng::Rng;
use subprune::{
    select, Backend, Budget, ConvOptions, CpuBackend, GpuBackend, LayerProblem, SelectOptions,
    Tensor,
};

const C0_TOL: f64 = 1e-4;
const TOTAL_TOL: f64 = 1e-4;
const GRAM_TOL: f64 = 1e-5;

/// The raw statistics of `b` against the target `a` on `backend`, in batches of `batch` images.
fn raw(
    backend: &dyn Backend,
    problem: &LayerProblem,
    b: &Tensor,
    a: &Tensor,
    batch: usize,
) -> RawGrams {
    let spec =
        StatsSpec::new(problem.unfolding, true).with_weight(&problem.weight, problem.outputs);
    let mut acc = backend.stats_accumulator(spec).unwrap();
    let n = b.shape[0];
    let per = b.data.len() / n;
    let mut first = 0;
    while first < n {
        let count = batch.min(n - first);
        let mut shape = b.shape.clone();
        shape[0] = count;
        let range = first * per..(first + count) * per;
        let bv = subprune::TensorView::new(&shape, &b.data[range.clone()]).unwrap();
        let av = subprune::TensorView::new(&shape, &a.data[range]).unwrap();
        acc.add_batch(bv, Some(av)).unwrap();
        first += count;
    }
    acc.finish_with_weight(&problem.weight, problem.outputs)
        .unwrap()
}

/// The projected GPU statistics equal the CPU's and the unprojected GPU path's; the projection
/// is really taken (no `BᵀA`, `AᵀA` come back).
fn check(
    what: &str,
    problem: &LayerProblem,
    b: &Tensor,
    a: &Tensor,
    batch: usize,
    gpu: &GpuBackend,
) {
    let cpu = raw(&CpuBackend::new(), problem, b, a, batch);
    let projected = raw(gpu, problem, b, a, batch);
    let old = raw(
        &gpu.clone().with_projected_statistics(false),
        problem,
        b,
        a,
        batch,
    );
    // The projected form's work: BᵀB's upper triangle, A·W, Bᵀ P and Pᵀ P's upper triangle
    // per unfolded row; the old path's: BᵀB, AᵀB and AᵀA.
    let (d, m) = (
        problem.unfolding.layout().columns() as u64,
        problem.outputs as u64,
    );
    let rows = projected.rows as u64;
    assert_eq!(
        projected.phases.multiply_adds,
        rows * (d * (d + 1) / 2 + 2 * d * m + m * (m + 1) / 2),
        "{what}: the projected form was not taken"
    );
    assert_eq!(
        old.phases.multiply_adds,
        rows * (d * (d + 1) + d * d),
        "{what}: the old path"
    );
    assert_eq!(projected.rows, cpu.rows, "{what}: rows");
    let c0 = projected.c0.as_ref().expect("C0 from the device");
    let c0 = c0.values().unwrap();
    let want_c0 = cpu.c0.as_ref().expect("the CPU projects");
    let want_c0 = want_c0.values().unwrap();
    assert_close(&format!("{what}: C0"), c0, want_c0, C0_TOL);
    let (got, want) = (projected.total.unwrap(), cpu.total.unwrap());
    assert!(
        (got - want).abs() <= TOTAL_TOL * want.abs(),
        "{what}: ‖AW‖² {got:e} against the CPU's {want:e}"
    );
    assert_close(
        &format!("{what}: BᵀB"),
        projected.gram.values().unwrap(),
        cpu.gram.values().unwrap(),
        GRAM_TOL,
    );
    // The old path: C0 = (BᵀA)·W on the device, ‖AW‖² from (AᵀA)·W.
    let old_c0 = LayerStatsView::from(problem, old);
    assert_close(&format!("{what}: C0, old path"), c0, &old_c0.c0, C0_TOL);
    assert!(
        (got - old_c0.total).abs() <= TOTAL_TOL * old_c0.total.abs(),
        "{what}: ‖AW‖² {got:e} against the old path's {:e}",
        old_c0.total
    );
}

/// `C0` and `‖AW‖²` of a raw result, as the layer engine finishes them.
struct LayerStatsView {
    c0: Vec<f64>,
    total: f64,
}

impl LayerStatsView {
    fn from(problem: &LayerProblem, raw: RawGrams) -> Self {
        let stats = subprune::LayerStats::from_raw(problem, raw).unwrap();
        Self {
            c0: stats.c0.values().unwrap().to_vec(),
            total: stats.total,
        }
    }
}

fn activations(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let data = rng
        .normal_vec(n)
        .into_iter()
        .map(|v| (v + 0.3).max(0.0))
        .collect();
    Tensor::new(shape.to_vec(), data).unwrap()
}

/// A target near the inputs (a pruned network's activations differ from the original's).
fn perturbed(rng: &mut Rng, x: &Tensor) -> Tensor {
    let noise = rng.normal_vec(x.data.len());
    let data = x
        .data
        .iter()
        .zip(noise)
        .map(|(&v, e)| v + 0.3 * e)
        .collect();
    Tensor::new(x.shape.clone(), data).unwrap()
}

fn conv_problem(
    rng: &mut Rng,
    input: &[usize],
    m: usize,
    k: [usize; 2],
    o: ConvOptions,
) -> LayerProblem {
    let w = Tensor::new(
        vec![m, input[1], k[0], k[1]],
        rng.normal_vec(m * input[1] * k[0] * k[1]),
    )
    .unwrap();
    LayerProblem::new(input, w.view(), Some(o)).unwrap()
}

#[test]
fn projected_statistics_match_the_cpu_on_awkward_sizes() {
    let mut rng = Rng::new(26);
    let eager = gpu().clone().with_gather_bytes(0);
    // Conv, padding 1: 11 images in batches of 4 (each its own chunk with gather 0).
    let shape = [11, 13, 9, 9];
    let b = activations(&mut rng, &shape);
    let a = perturbed(&mut rng, &b);
    let o = ConvOptions {
        stride: [1, 1],
        padding: [1, 1],
        dilation: [1, 1],
    };
    let p = conv_problem(&mut rng, &shape, 7, [3, 3], o);
    check("conv 13×9×9 → 7", &p, &b, &a, 4, gpu());
    check("conv 13×9×9 → 7, a chunk per batch", &p, &b, &a, 4, &eager);
    // BᵀB in column blocks of at most 64 KiB (read back as pairs, not left on the device).
    let blocked = gpu().clone().with_max_block_bytes(64 << 10);
    check("conv 13×9×9 → 7, G in blocks", &p, &b, &a, 4, &blocked);
    // Stride 2, dilation 2, uneven padding geometry, a non-square kernel.
    let shape = [6, 5, 11, 10];
    let b = activations(&mut rng, &shape);
    let a = perturbed(&mut rng, &b);
    let o = ConvOptions {
        stride: [2, 1],
        padding: [2, 1],
        dilation: [2, 1],
    };
    let p = conv_problem(&mut rng, &shape, 6, [3, 2], o);
    check("conv 5×11×10 → 6, strided, dilated", &p, &b, &a, 3, &eager);
    // No padding (the uploaded planes are the operands), one image per batch.
    let shape = [5, 9, 7, 7];
    let b = activations(&mut rng, &shape);
    let a = perturbed(&mut rng, &b);
    let p = conv_problem(&mut rng, &shape, 5, [3, 3], ConvOptions::default());
    check("conv 9×7×7 → 5, unpadded", &p, &b, &a, 1, &eager);
    // Dense: 37 rows of 50 features, 9 outputs.
    let shape = [37, 50];
    let b = activations(&mut rng, &shape);
    let a = perturbed(&mut rng, &b);
    let w = Tensor::new(vec![9, 50], rng.normal_vec(450)).unwrap();
    let p = LayerProblem::new(&shape, w.view(), None).unwrap();
    check("dense 50 → 9", &p, &b, &a, 8, &eager);
    check("dense 50 → 9, one batch", &p, &b, &a, 37, gpu());
}

/// The inputs of the `index`-th Conv of a fixture, tapped by the CPU executor over `images`
/// calibration images, and the conv's layer problem.
fn fixture_layer(model: &str, calib: &str, index: usize, images: usize) -> (LayerProblem, Tensor) {
    let model = subprune::onnx::load(fixture(model)).unwrap();
    let g = &model.graph;
    let node = g
        .nodes
        .iter()
        .filter(|n| n.op.kind() == "Conv")
        .nth(index)
        .unwrap();
    let Op::Conv(c) = &node.op else {
        unreachable!()
    };
    let Padding::Explicit(pads) = c.window.padding else {
        panic!("explicit padding expected")
    };
    let w = g.constant(node.inputs[1].unwrap()).unwrap();
    let ConstData::F32(data) = &w.data else {
        panic!("f32 weight expected")
    };
    let weight = Tensor::new(w.dims.clone(), data.clone()).unwrap();
    let value = node.inputs[0].unwrap();
    let exec = CpuExecutor::new(g).unwrap();
    let source = F32Images::new("calib", first_images(calib, images)).unwrap();
    let mut tapped = Vec::new();
    let mut shape = Vec::new();
    forward_batches(
        &exec,
        &source,
        16,
        &[value],
        &mut |_, act: Activation<'_>| {
            let t = act.to_host()?;
            shape = t.shape.clone();
            tapped.extend_from_slice(&t.data);
            Ok(())
        },
        &mut |_, _| Ok(()),
        &mut |_, _| {},
    )
    .unwrap();
    shape[0] = images;
    let inputs = Tensor::new(shape.clone(), tapped).unwrap();
    let o = ConvOptions {
        stride: c.window.strides,
        padding: [pads[0], pads[1]],
        dilation: c.window.dilations,
    };
    (
        LayerProblem::new(&shape, weight.view(), Some(o)).unwrap(),
        inputs,
    )
}

/// On the fixtures' layers: with the original network's activations as the target `A` and
/// those of a "pruned" network as `B` (every third input channel zeroed, the rest scaled), the
/// projected GPU statistics equal the CPU's and keep the same channels.
#[test]
fn projected_statistics_keep_the_cpus_channels_on_fixture_layers() {
    for (model, calib, index, images) in [
        ("resnet56_cifar10.onnx", "cifar10_calib_512.npy", 3, 24),
        ("resnet56_cifar10.onnx", "cifar10_calib_512.npy", 50, 48),
        ("vgg11_bn_fashion.onnx", "fashion_calib_512.npy", 5, 24),
    ] {
        let (problem, a) = fixture_layer(model, calib, index, images);
        let mut b = a.clone();
        let plane: usize = a.shape[2..].iter().product();
        for (i, v) in b.data.iter_mut().enumerate() {
            let channel = (i / plane) % a.shape[1];
            *v = if channel.is_multiple_of(3) {
                0.0
            } else {
                1.1 * *v
            };
        }
        let what = format!("{model} conv {index} {:?}", a.shape);
        check(&what, &problem, &b, &a, 8, gpu());
        let options = SelectOptions {
            budget: Budget::KeepFraction(0.5),
            batch_images: 8,
            ..Default::default()
        };
        let run = |backend: &dyn Backend| {
            select(
                backend,
                &problem,
                b.view(),
                Some(a.view()),
                &options,
                &mut |_, _, _| {},
            )
            .unwrap()
        };
        let (cpu, on_gpu) = (run(&CpuBackend::new()), run(gpu()));
        assert_eq!(on_gpu.kept, cpu.kept, "{what}: kept channels");
        let gap = (on_gpu.relative_error - cpu.relative_error).abs();
        assert!(
            gap <= 1e-4 * cpu.relative_error.max(1e-6),
            "{what}: error {gap:e}"
        );
    }
}
