//! The wgpu backend against the CPU backend, kernel by kernel, on random inputs of awkward sizes
//! (not multiples of the 128 × 128 statistics tile or the 64 × 64 downdate tile).
//!
//! These tests need a wgpu adapter. Without a GPU they run on lavapipe (Mesa's software Vulkan,
//! package `mesa-vulkan-drivers`); when no adapter exists they fail rather than skip.
//!
//! Tolerances. Statistics are f32 sums on both backends (the GPU's compensated across batches),
//! compared entry-wise as `|gpu − cpu| ≤ STATS_TOL · max |cpu|`. The GPU greedy state is f32
//! against the CPU's f64, so gains are compared relative to the largest gain (`GAIN_TOL`), error
//! curves absolutely (`CURVE_TOL`, they are normalized to [0, 1]).

mod common;

use common::{activations, gpu, random};
use subprune::backend::{GreedySpec, StatsSpec};
use subprune::layer::{ConvGeometry, RawGrams, Unfolding};
use subprune::rng::Rng;
use subprune::{
    layer_stats, run_greedy, Backend, Consumer, ConvOptions, CpuBackend, Error, GpuBackend,
    LayerProblem, LayerStats, Tensor, TensorView,
};

/// Statistics, f32 inputs: relative to the largest entry.
const STATS_TOL: f64 = 2e-6;
/// Statistics, f16 inputs against the CPU on the same f16-rounded values.
const HALF_ROUNDED_TOL: f64 = 2e-6;
/// Statistics, f16 inputs against the CPU on the original f32 values.
const HALF_TOL: f64 = 2e-3;
/// Gains, relative to the largest gain of the step.
const GAIN_TOL: f64 = 1e-5;
/// Error curves, absolute.
const CURVE_TOL: f64 = 1e-4;

fn accumulate(
    backend: &dyn Backend,
    unfolding: Unfolding,
    inputs: &Tensor,
    target: Option<&Tensor>,
    batch: usize,
) -> RawGrams {
    let mut acc = backend
        .stats_accumulator(StatsSpec::new(unfolding, target.is_some()))
        .unwrap();
    let n = inputs.shape[0];
    let per_image: usize = inputs.shape[1..].iter().product();
    let mut first = 0;
    // Uneven batches: `batch`, then a smaller remainder.
    while first < n {
        let count = batch.min(n - first);
        let mut shape = inputs.shape.clone();
        shape[0] = count;
        let range = first * per_image..(first + count) * per_image;
        let b = TensorView::new(&shape, &inputs.data[range.clone()]).unwrap();
        let a = target.map(|t| TensorView::new(&shape, &t.data[range.clone()]).unwrap());
        acc.add_batch(b, a).unwrap();
        first += count;
    }
    acc.finish().unwrap()
}

/// max |a − b| / max |b|.
fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn assert_close(what: &str, gpu: &[f64], cpu: &[f64], tol: f64) {
    let diff = rel_diff(gpu, cpu);
    eprintln!("{what}: relative difference {diff:.1e} (tolerance {tol:.0e})");
    assert!(
        diff <= tol,
        "{what}: relative difference {diff:e} > {tol:e}"
    );
}

fn compare_stats(what: &str, gpu: &RawGrams, cpu: &RawGrams, tol: f64) {
    assert_eq!(gpu.rows, cpu.rows, "{what}: rows");
    assert_close(
        &format!("{what} BᵀB"),
        gpu.gram.values().unwrap(),
        cpu.gram.values().unwrap(),
        tol,
    );
    match (&gpu.cross, &cpu.cross) {
        (Some(g), Some(c)) => assert_close(&format!("{what} BᵀA"), g, c, tol),
        (None, None) => {}
        _ => panic!("{what}: cross Gram present on one backend only"),
    }
    match (&gpu.target_gram, &cpu.target_gram) {
        (Some(g), Some(c)) => assert_close(&format!("{what} AᵀA"), g, c, tol),
        (None, None) => {}
        _ => panic!("{what}: target Gram present on one backend only"),
    }
}

fn conv(
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
) -> Consumer {
    Consumer::Conv(ConvGeometry {
        kernel,
        stride,
        padding,
        dilation,
    })
}

fn check_stats(
    what: &str,
    backend: &GpuBackend,
    consumer: Consumer,
    shape: &[usize],
    with_target: bool,
    batch: usize,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let unfolding = Unfolding::new(consumer, &shape[1..]).unwrap();
    let inputs = activations(&mut rng, shape);
    let target = with_target.then(|| random(&mut rng, shape));
    let cpu = accumulate(
        &CpuBackend::new(),
        unfolding,
        &inputs,
        target.as_ref(),
        batch,
    );
    let gpu = accumulate(backend, unfolding, &inputs, target.as_ref(), batch);
    compare_stats(what, &gpu, &cpu, STATS_TOL);
}

#[test]
fn shaders_pass_naga_validation() {
    // Standalone shader files, and the kernels built on the matmul core as the host compiles them
    // (matmul.wgsl followed by gram.wgsl or conv.wgsl; those parts alone are not modules).
    use subprune::backend::gpu::shaders;
    let parts = ["matmul.wgsl", "gram.wgsl", "conv.wgsl"];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut sources = vec![
        (
            "matmul.wgsl + gram.wgsl".to_string(),
            shaders::GRAM.to_string(),
        ),
        (
            "matmul.wgsl + conv.wgsl".to_string(),
            shaders::CONV.to_string(),
        ),
    ];
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        if path.extension().is_some_and(|e| e == "wgsl") && !parts.contains(&file.as_str()) {
            sources.push((file, std::fs::read_to_string(&path).unwrap()));
        }
    }
    for (name, source) in &sources {
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    }
    // gram, conv, gains, downdate, forward.
    assert!(
        sources.len() >= 5,
        "expected the gram, conv, gains, downdate and forward shaders in {}",
        dir.display()
    );
}

#[test]
fn unknown_adapter_is_a_gpu_error() {
    match GpuBackend::new(Some("no-such-adapter-xyz")) {
        Err(Error::Gpu(msg)) => assert!(msg.contains("no-such-adapter-xyz"), "{msg}"),
        Err(e) => panic!("expected Error::Gpu, got {e}"),
        Ok(_) => panic!("an adapter named no-such-adapter-xyz was found"),
    }
}

#[test]
fn lists_adapters() {
    let adapters = GpuBackend::list_adapters();
    assert!(!adapters.is_empty(), "no adapters listed");
    let name = gpu().adapter_name();
    assert!(
        adapters.iter().any(|a| a.contains(&name)),
        "{name} not in {adapters:?}"
    );
}

/// (what, consumer, input shape, with a target, images per batch, seed)
type StatsCase = (&'static str, Consumer, &'static [usize], bool, usize, u64);

/// [`check_stats`] on the GPU for every case.
fn check_all(cases: &[StatsCase]) {
    for &(what, consumer, shape, with_target, batch, seed) in cases {
        check_stats(what, gpu(), consumer, shape, with_target, batch, seed);
    }
}

#[test]
fn dense_linear_gram_matches_cpu() {
    // D = 37 and D = 133 (one tile, and a partial second tile); 301 images in batches of 64.
    check_all(&[
        ("linear 37", Consumer::Linear, &[301, 37], false, 64, 1),
        ("linear 133", Consumer::Linear, &[150, 133], false, 41, 2),
    ]);
}

#[test]
fn conv_gram_matches_cpu() {
    // Stride 2, padding 1, dilation 2, a 3 × 2 kernel: D = 5 · 6 = 30.
    let odd = conv([3, 2], [2, 2], [1, 1], [2, 2]);
    // Mixed strides and paddings per axis, 1 × 3 kernel, D = 19 · 3 = 57.
    let mixed = conv([1, 3], [1, 2], [0, 2], [1, 1]);
    // 3 × 3, padding 1: D = 17 · 9 = 153 (two tiles).
    let square = conv([3, 3], [1, 1], [1, 1], [1, 1]);
    // No padding on either axis: the uploaded batch is read as it is (no `pad_inputs` pass),
    // with and without a target; stride 2 and a 2 × 3 kernel on 7 × 9 maps.
    let unpadded = conv([2, 3], [2, 1], [0, 0], [1, 1]);
    // A 1 × 1 conv (D = C, one row per pixel).
    let pointwise = conv([1, 1], [1, 1], [0, 0], [1, 1]);
    check_all(&[
        ("conv 3x2 s2 p1 d2", odd, &[7, 5, 11, 9], false, 3, 3),
        ("conv 1x3", mixed, &[5, 19, 6, 7], false, 2, 4),
        ("conv 3x3 D=153", square, &[6, 17, 5, 6], false, 4, 5),
        ("conv 2x3 p0", unpadded, &[5, 9, 7, 9], false, 2, 10),
        ("conv 2x3 p0 target", unpadded, &[5, 9, 7, 9], true, 3, 11),
        ("conv 1x1", pointwise, &[4, 37, 5, 3], false, 3, 12),
    ]);
}

#[test]
fn flatten_linear_gram_matches_cpu() {
    // Conv → Flatten → Linear: dense rows of C·H·W = 6 · 5 · 7 = 210 columns.
    let flatten = Consumer::FlattenLinear;
    check_all(&[("flatten", flatten, &[90, 6, 5, 7], false, 32, 6)]);
}

#[test]
fn cross_gram_matches_cpu() {
    // Asymmetric target: BᵀB, BᵀA and AᵀA, conv and dense.
    let odd = conv([3, 2], [2, 1], [1, 0], [1, 2]);
    check_all(&[
        ("cross conv", odd, &[6, 7, 9, 8], true, 4, 7),
        ("cross linear", Consumer::Linear, &[200, 45], true, 70, 8),
    ]);
}

#[test]
fn half_inputs_match_cpu() {
    let backend = gpu().clone().with_f16_inputs(true);
    assert!(backend.f16_inputs());
    let mut rng = Rng::new(9);
    let shape = [9, 11, 7, 6];
    let consumer = conv([3, 3], [2, 1], [1, 1], [1, 1]);
    let unfolding = Unfolding::new(consumer, &shape[1..]).unwrap();
    let inputs = activations(&mut rng, &shape);
    let target = random(&mut rng, &shape);
    let rounded = |t: &Tensor| Tensor {
        shape: t.shape.clone(),
        data: t
            .data
            .iter()
            .map(|&v| half::f16::from_f32(v).to_f32())
            .collect(),
    };
    let gpu_raw = accumulate(&backend, unfolding, &inputs, Some(&target), 4);
    // Exactly the kernel's arithmetic on f16-rounded values: tight tolerance.
    let cpu_rounded = accumulate(
        &CpuBackend::new(),
        unfolding,
        &rounded(&inputs),
        Some(&rounded(&target)),
        4,
    );
    compare_stats("f16 vs rounded", &gpu_raw, &cpu_rounded, HALF_ROUNDED_TOL);
    // Against the f32 inputs: f16 precision.
    let cpu = accumulate(&CpuBackend::new(), unfolding, &inputs, Some(&target), 4);
    compare_stats("f16 vs f32", &gpu_raw, &cpu, HALF_TOL);
    // Also an odd number of values per batch (the last u32 holds one f16).
    check_stats_half_odd(&backend);
}

fn check_stats_half_odd(backend: &GpuBackend) {
    let mut rng = Rng::new(10);
    let shape = [13, 31];
    let unfolding = Unfolding::new(Consumer::Linear, &shape[1..]).unwrap();
    let inputs = random(&mut rng, &shape);
    let rounded = Tensor {
        shape: inputs.shape.clone(),
        data: inputs
            .data
            .iter()
            .map(|&v| half::f16::from_f32(v).to_f32())
            .collect(),
    };
    let gpu_raw = accumulate(backend, unfolding, &inputs, None, 5);
    let cpu = accumulate(&CpuBackend::new(), unfolding, &rounded, None, 5);
    compare_stats("f16 odd", &gpu_raw, &cpu, HALF_ROUNDED_TOL);
}

#[test]
fn half_inputs_refuse_values_beyond_f16() {
    let backend = gpu().clone().with_f16_inputs(true);
    let unfolding = Unfolding::new(Consumer::Linear, &[3]).unwrap();
    let mut acc = backend
        .stats_accumulator(StatsSpec::new(unfolding, false))
        .unwrap();
    let data = [1.0, 2.0, 3.0, 4.0, 1e6, 6.0];
    let err = acc
        .add_batch(TensorView::new(&[2, 3], &data).unwrap(), None)
        .unwrap_err();
    assert!(
        matches!(&err, Error::OutsideF16 { index: 4, value, .. } if *value == 1e6),
        "{err}"
    );
    assert!(err.to_string().contains("outside the f16 range"), "{err}");
    // Through `layer_stats`, in the fourth batch of two images: the index counts from the
    // caller's tensor.
    let mut values: Vec<f32> = (0..30).map(|i| i as f32).collect();
    values[22] = -7e4;
    let inputs = Tensor::new(vec![10, 3], values).unwrap();
    let weight = Tensor::new(vec![2, 3], vec![1.0; 6]).unwrap();
    let problem = LayerProblem::new(&inputs.shape, weight.view(), None).unwrap();
    let err = layer_stats(&backend, &problem, inputs.view(), None, 2).unwrap_err();
    assert!(matches!(&err, Error::OutsideF16 { index: 22, .. }), "{err}");
}

#[test]
fn forced_block_splitting_matches_cpu() {
    // 16 KiB per binding: the 210 × 210 statistics become column blocks (of 9 columns, at one
    // row split), and batches are uploaded in chunks of a few images.
    let small = gpu().clone().with_max_block_bytes(16 << 10);
    assert_eq!(small.max_block_bytes(), 16 << 10);
    // 16 KiB holds 19 images of 840 bytes: a batch of 40 is uploaded as chunks of 19, 19 and 2.
    check_stats(
        "blocks flatten",
        &small,
        Consumer::FlattenLinear,
        &[40, 6, 5, 7],
        true,
        40,
        11,
    );
    let square = conv([3, 3], [1, 1], [1, 1], [1, 1]);
    check_stats(
        "blocks conv",
        &small,
        square,
        &[20, 17, 5, 6],
        false,
        20,
        12,
    );
}

/// A layer problem with well-separated channels: statistics from the CPU backend (f64).
fn problem_stats(inputs: &Tensor, weight: &Tensor, conv: Option<ConvOptions>) -> LayerStats {
    let problem = LayerProblem::new(&inputs.shape, weight.view(), conv).unwrap();
    layer_stats(&CpuBackend::new(), &problem, inputs.view(), None, 64).unwrap()
}

fn greedy_spec(stats: &LayerStats) -> GreedySpec<'_> {
    GreedySpec {
        layout: stats.layout,
        outputs: stats.outputs,
        gram: &stats.gram,
        c0: &stats.c0,
        dependence_tol: subprune::DEFAULT_DEPENDENCE_TOL,
    }
}

fn assert_gains_close(what: &str, gpu: &[f64], cpu: &[f64]) {
    let scale = cpu.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    eprintln!(
        "{what}: gains differ by {:.1e} of the largest (tolerance {GAIN_TOL:.0e})",
        rel_diff(gpu, cpu)
    );
    for (ch, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        assert!(
            (g - c).abs() <= GAIN_TOL * scale,
            "{what}: channel {ch}: gpu gain {g} vs cpu {c} (largest {scale})"
        );
    }
}

/// Scores, selects `picks` one by one (not in gain order, so the block is fetched), and compares
/// the gains after every step.
fn check_gains(what: &str, backend: &GpuBackend, stats: &LayerStats, picks: &[usize]) {
    let d = stats.layout.channels;
    let cpu_backend = CpuBackend::new();
    let mut cpu = cpu_backend.greedy_state(greedy_spec(stats)).unwrap();
    let mut gpu = backend.greedy_state(greedy_spec(stats)).unwrap();
    let (mut gc, mut gg) = (vec![0.0; d], vec![0.0; d]);
    for (step, &pick) in picks.iter().enumerate() {
        cpu.score(&mut gc).unwrap();
        gpu.score(&mut gg).unwrap();
        assert_gains_close(&format!("{what} step {step}"), &gg, &gc);
        cpu.select(pick).unwrap();
        gpu.select(pick).unwrap();
    }
    cpu.score(&mut gc).unwrap();
    gpu.score(&mut gg).unwrap();
    assert_gains_close(&format!("{what} final"), &gg, &gc);
    for &p in picks {
        assert_eq!(gg[p], 0.0, "{what}: selected channel {p} has a gain");
    }
    assert!(gpu.select(picks[0]).is_err(), "re-selecting must fail");
}

/// A conv consumer with a 3 × 3 kernel and padding 1: D = 13 · 9 = 117, m = 21.
fn conv_3x3_stats(rng: &mut Rng) -> LayerStats {
    let inputs = activations(rng, &[40, 13, 6, 7]);
    let weight = random(rng, &[21, 13, 3, 3]);
    let pad = ConvOptions {
        padding: [1, 1],
        ..Default::default()
    };
    problem_stats(&inputs, &weight, Some(pad))
}

#[test]
fn gains_and_downdates_match_cpu() {
    let mut rng = Rng::new(20);
    // Linear consumer, ks = 1: d = 70 channels, m = 23 outputs.
    let inputs = activations(&mut rng, &[400, 70]);
    let weight = random(&mut rng, &[23, 70]);
    let stats = problem_stats(&inputs, &weight, None);
    check_gains("linear", gpu(), &stats, &[5, 0, 69, 33, 12, 40]);

    // Conv consumer, ks = 9: D = 13 · 9 = 117, m = 21.
    check_gains("conv 3x3", gpu(), &conv_3x3_stats(&mut rng), &[3, 12, 0, 7]);

    // Flatten → Linear with ks = 8 · 8 = 64 > 56: the factor lives in device memory.
    let inputs = activations(&mut rng, &[500, 4, 8, 8]);
    let weight = random(&mut rng, &[9, 256]);
    let stats = problem_stats(&inputs, &weight, None);
    check_gains("flatten ks=64", gpu(), &stats, &[2, 0]);

    // ks = 9 · 9 = 81 > 64: the forward solve goes through device memory too.
    let inputs = activations(&mut rng, &[500, 3, 9, 9]);
    let weight = random(&mut rng, &[7, 243]);
    let stats = problem_stats(&inputs, &weight, None);
    check_gains("flatten ks=81", gpu(), &stats, &[1]);
}

#[test]
fn row_blocks_match_cpu() {
    // 8 KiB bindings: the conv state (D = 117, 9 rows of 468 bytes per channel) is cut into row
    // blocks of one channel, so every downdate runs across block pairs.
    let small = gpu().clone().with_max_block_bytes(8192);
    let stats = conv_3x3_stats(&mut Rng::new(21));
    check_gains("row blocks", &small, &stats, &[3, 12, 0, 7, 1]);
    let cpu = run_greedy(&CpuBackend::new(), &stats, 1e-6, &mut |_, _, _| {}).unwrap();
    let gpu_run = run_greedy(&small, &stats, 1e-6, &mut |_, _, _| {}).unwrap();
    assert_eq!(gpu_run.order, cpu.order);
}

#[test]
fn dependent_channel_gets_no_gain() {
    // Channel 5 is twice channel 2: once 2 is selected, 5 is dependent (gain 0), on both backends.
    let mut rng = Rng::new(22);
    let mut inputs = random(&mut rng, &[300, 9]);
    for row in inputs.data.chunks_exact_mut(9) {
        row[5] = 2.0 * row[2];
    }
    let weight = random(&mut rng, &[4, 9]);
    let stats = problem_stats(&inputs, &weight, None);
    let d = 9;
    let cpu_backend = CpuBackend::new();
    let mut cpu = cpu_backend.greedy_state(greedy_spec(&stats)).unwrap();
    let mut gpu_state = gpu().greedy_state(greedy_spec(&stats)).unwrap();
    cpu.select(2).unwrap();
    gpu_state.select(2).unwrap();
    let (mut gc, mut gg) = (vec![0.0; d], vec![0.0; d]);
    cpu.score(&mut gc).unwrap();
    gpu_state.score(&mut gg).unwrap();
    assert_eq!(gc[5], 0.0);
    assert_eq!(gg[5], 0.0, "gpu gains {gg:?}");
    assert_gains_close("dependent", &gg, &gc);
}

#[test]
fn greedy_runs_match_cpu() {
    let mut rng = Rng::new(23);
    let pad = ConvOptions {
        padding: [1, 1],
        ..Default::default()
    };
    let cases: Vec<(&str, Tensor, Tensor, Option<ConvOptions>)> = vec![
        (
            "linear",
            activations(&mut rng, &[500, 45]),
            random(&mut rng, &[17, 45]),
            None,
        ),
        (
            "conv",
            activations(&mut rng, &[30, 21, 6, 6]),
            random(&mut rng, &[19, 21, 3, 3]),
            Some(pad),
        ),
    ];
    for (name, inputs, mut weight, conv) in cases {
        // Spread the channels' importance so that greedy choices are well separated.
        let per_out: usize = weight.shape[1..].iter().product();
        let ks = per_out / weight.shape[1];
        for row in weight.data.chunks_exact_mut(per_out) {
            for (i, w) in row.iter_mut().enumerate() {
                *w *= 1.0 + 0.15 * (i / ks) as f32;
            }
        }
        let stats = problem_stats(&inputs, &weight, conv);
        let cpu = run_greedy(&CpuBackend::new(), &stats, 1e-6, &mut |_, _, _| {}).unwrap();
        let mut steps = 0;
        let gpu_run = run_greedy(gpu(), &stats, 1e-6, &mut |_, done, _| steps = done).unwrap();
        assert_eq!(steps, stats.layout.channels);
        assert_eq!(gpu_run.order, cpu.order, "{name}: greedy order");
        let worst = gpu_run
            .error_curve
            .iter()
            .zip(&cpu.error_curve)
            .fold(0.0f64, |m, (g, c)| m.max((g - c).abs()));
        eprintln!("{name}: error curves differ by {worst:.1e} (tolerance {CURVE_TOL:.0e})");
        assert!(
            worst <= CURVE_TOL,
            "{name}: error curves differ by {worst:e}"
        );
    }
}

#[test]
fn whole_layer_selection_on_gpu_statistics() {
    // Statistics and greedy both on the GPU, through the public API, against the CPU.
    let (inputs, weight) = subprune::demo::layer();
    let problem =
        LayerProblem::new(&inputs.shape, weight.view(), Some(subprune::demo::CONV)).unwrap();
    let cpu = layer_stats(&CpuBackend::new(), &problem, inputs.view(), None, 16).unwrap();
    let gpu_stats = layer_stats(gpu(), &problem, inputs.view(), None, 16).unwrap();
    assert_close(
        "demo gram",
        gpu_stats.gram.values().unwrap(),
        cpu.gram.values().unwrap(),
        STATS_TOL,
    );
    assert_close(
        "demo c0",
        gpu_stats.c0.values().unwrap(),
        cpu.c0.values().unwrap(),
        1e-5,
    );
    let cpu_run = run_greedy(&CpuBackend::new(), &cpu, 1e-6, &mut |_, _, _| {}).unwrap();
    let gpu_run = run_greedy(gpu(), &gpu_stats, 1e-6, &mut |_, _, _| {}).unwrap();
    // The demo's channels are correlated (24 latent maps): compare the curve, and the order
    // while the error is still large.
    let worst = gpu_run
        .error_curve
        .iter()
        .zip(&cpu_run.error_curve)
        .fold(0.0f64, |m, (g, c)| m.max((g - c).abs()));
    eprintln!("demo: error curves differ by {worst:.1e}");
    assert!(worst <= 1e-3, "demo: error curves differ by {worst:e}");
    assert_eq!(gpu_run.order[..8], cpu_run.order[..8]);
}

#[test]
fn destroyed_device_is_a_gpu_error() {
    // A host device handed to `from_device` and then destroyed: every later call must fail with
    // Error::Gpu, not panic.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
        .expect("no wgpu adapter (install mesa-vulkan-drivers)");
    let (device, queue) = pollster::block_on(adapter.request_device(&Default::default())).unwrap();
    let backend = GpuBackend::from_device(device.clone(), queue).unwrap();
    let mut rng = Rng::new(30);
    let inputs = random(&mut rng, &[20, 6]);
    let weight = random(&mut rng, &[3, 6]);
    let problem = LayerProblem::new(&inputs.shape, weight.view(), None).unwrap();
    let stats = layer_stats(&backend, &problem, inputs.view(), None, 8).unwrap();
    device.destroy();
    match layer_stats(&backend, &problem, inputs.view(), None, 8) {
        Err(Error::Gpu(msg)) => eprintln!("statistics after destroy: {msg}"),
        other => panic!("expected Error::Gpu, got {other:?}"),
    }
    match run_greedy(&backend, &stats, 1e-6, &mut |_, _, _| {}) {
        Err(Error::Gpu(msg)) => eprintln!("greedy after destroy: {msg}"),
        other => panic!("expected Error::Gpu, got {other:?}"),
    }
    // G was left on the destroyed device: reading it back fails the same way.
    assert!(stats.gram.is_on_device());
    match subprune::reweight(&stats, &[0, 2], 0.0, 1e-6) {
        Err(Error::Gpu(msg)) => eprintln!("reweighting after destroy: {msg}"),
        other => panic!("expected Error::Gpu, got {other:?}"),
    }
}

#[test]
fn a_gram_matrix_that_overflows_on_the_device_is_refused_with_its_entry() {
    // f32 inputs around 1e20: their products overflow the f32 sums. G stays on the device, so
    // the device's own check must catch it (the host would otherwise see no G at all).
    let mut rng = Rng::new(42);
    let mut inputs = random(&mut rng, &[10, 7]);
    inputs.data[3 * 7 + 4] = 3e20;
    let weight = random(&mut rng, &[3, 7]);
    let problem = LayerProblem::new(&inputs.shape, weight.view(), None).unwrap();
    match layer_stats(gpu(), &problem, inputs.view(), None, 4) {
        Err(Error::NonFiniteStatistics { tensor, detail, .. }) => {
            eprintln!("{tensor}: {detail}");
            assert!(tensor.contains("BᵀB"), "{tensor}");
            assert!(detail.contains("(4, 4)"), "{detail}");
        }
        other => panic!("expected NonFiniteStatistics, got {other:?}"),
    }
}

/// `bench`'s device-resident path (inputs already on the device, fed as device tensors, as
/// `prune --backend gpu` feeds the executor's taps) computes what the upload path computes, bit
/// for bit, and uploads nothing; on a padded conv, so `pad_inputs` runs on both paths.
#[test]
fn statistics_of_device_resident_inputs_equal_the_uploaded_ones() {
    use subprune::bench::{self, LayerCase, ResidentInputs};
    // 7 channels of 5×5, 150 images: three batches of DEFAULT_BATCH_IMAGES (64) and a remainder.
    let case = LayerCase::by_name("7,5,150,6").unwrap();
    let (problem, inputs) = case.instance(5).unwrap();
    let (_, host) = bench::time_stats(gpu(), &problem, &inputs).unwrap();
    let resident = ResidentInputs::new(gpu(), &inputs).unwrap();
    let (_, device) = bench::time_stats_resident(gpu(), &problem, &resident).unwrap();
    assert_eq!(device.gram.values().unwrap(), host.gram.values().unwrap());
    assert_eq!(device.c0.values().unwrap(), host.c0.values().unwrap());
    assert_eq!(device.total, host.total);
    let bytes = 4 * inputs.data.len() as u64;
    assert_eq!(host.phases.uploaded_bytes, bytes);
    assert_eq!(device.phases.uploaded_bytes, 0);
    assert_eq!(device.phases.device_bytes, bytes);
}
