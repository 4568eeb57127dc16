//! The engine (Gram statistics in f32, greedy in Gram form, reweighting solve) against an
//! independent f64 oracle that works on the raw data matrix: its own im2col, its own weight
//! reshape, and a Householder-QR least-squares solve for every candidate set. Every instance runs
//! on the CPU backend; one instance of each consumer kind also on the GPU backend.
//!
//! Tolerances. The statistics are accumulated in f32 (partial sums over ≤ 8192 rows, then f64),
//! so the engine and the oracle differ by rounding of order 1e-7 relative on the Gram entries,
//! amplified by the conditioning of the instances (all well conditioned, n ≥ 5·D). Errors are
//! compared as `|err − oracle| ≤ ERR_TOL · max(oracle, ERR_FLOOR)`; the measured discrepancies
//! are printed (`cargo test --test layer_engine -- --nocapture`).

mod common;

use common::{
    flatten_rows, im2col, perturbed, scaled_channels, spread_scales, weight_matrix, Geometry, Mat,
    Oracle,
};
use subprune::rng::Rng;
use subprune::{
    layer_stats, run_greedy, select, select_from_run, Backend, Budget, ConvOptions, CpuBackend,
    GreedyRun, LayerProblem, LayerStats, SelectOptions, Selection, Tensor, DEFAULT_DEPENDENCE_TOL,
};

/// Relative tolerance on normalized errors (error curve, reweighted and non-reweighted error).
const ERR_TOL: f64 = 1e-5;
/// Below this normalized error the tolerance is absolute (`ERR_TOL · ERR_FLOOR` = 1e-7).
const ERR_FLOOR: f64 = 1e-2;
/// Relative tolerance on reweighted consumer weights: `max |w − w_oracle| ≤ W_TOL · max |w_oracle|`.
const W_TOL: f64 = 1e-4;
/// Keeping every channel with `A = B` must leave (numerically) no error.
const FULL_KEEP_TOL: f64 = 1e-6;
/// The oracle's best and second-best candidates must differ by at least this much normalized
/// error at every step, so that f32 rounding in the engine cannot legitimately flip a choice.
const MIN_ORACLE_GAP: f64 = 1e-5;

/// One random layer problem with its oracle.
struct Instance {
    name: &'static str,
    inputs: Tensor,
    target: Option<Tensor>,
    weight: Tensor,
    conv: Option<ConvOptions>,
    oracle: Oracle,
}

/// The largest discrepancies seen on one instance.
#[derive(Debug, Default)]
struct Discrepancy {
    /// max |err − oracle| / max(oracle, ERR_FLOOR) over the error curve.
    curve: f64,
    /// Same over the reweighted error of every prefix.
    reweighted: f64,
    /// Same over the non-reweighted error of every prefix.
    no_reweight: f64,
    /// max |w − w_oracle| / max |w_oracle| over every prefix.
    weight: f64,
}

fn rel(err: f64, oracle: f64) -> f64 {
    (err - oracle).abs() / oracle.max(ERR_FLOOR)
}

fn linear_instance(seed: u64, n: usize, c: usize, m: usize, noise: Option<f64>) -> Instance {
    let mut rng = Rng::new(seed);
    let scales = spread_scales(&mut rng, c, 0.4, 2.0);
    let inputs = scaled_channels(&mut rng, &[n, c], &scales);
    let target = noise.map(|s| perturbed(&mut rng, &inputs, s));
    let weight = Tensor::new(vec![m, c], common::normals(&mut rng, m * c, 1.0)).unwrap();
    let b = flatten_rows(&inputs);
    let a = target
        .as_ref()
        .map(flatten_rows)
        .unwrap_or_else(|| b.clone());
    let oracle = Oracle::new(b, &a, weight_matrix(&weight), 1);
    Instance {
        name: "linear",
        inputs,
        target,
        weight,
        conv: None,
        oracle,
    }
}

#[allow(clippy::too_many_arguments)]
fn conv_instance(
    name: &'static str,
    seed: u64,
    input: [usize; 4],
    m: usize,
    kernel: [usize; 2],
    conv: ConvOptions,
    noise: Option<f64>,
) -> Instance {
    let mut rng = Rng::new(seed);
    let c = input[1];
    let scales = spread_scales(&mut rng, c, 0.4, 2.0);
    let inputs = scaled_channels(&mut rng, &input, &scales);
    let target = noise.map(|s| perturbed(&mut rng, &inputs, s));
    let ks = kernel[0] * kernel[1];
    let weight = Tensor::new(
        vec![m, c, kernel[0], kernel[1]],
        common::normals(&mut rng, m * c * ks, 1.0),
    )
    .unwrap();
    let g = Geometry {
        kernel,
        stride: conv.stride,
        padding: conv.padding,
        dilation: conv.dilation,
    };
    let b = im2col(&inputs, &g);
    let a = target
        .as_ref()
        .map(|t| im2col(t, &g))
        .unwrap_or_else(|| b.clone());
    let oracle = Oracle::new(b, &a, weight_matrix(&weight), ks);
    Instance {
        name,
        inputs,
        target,
        weight,
        conv: Some(conv),
        oracle,
    }
}

fn flatten_instance(seed: u64, input: [usize; 4], m: usize, noise: Option<f64>) -> Instance {
    let mut rng = Rng::new(seed);
    let [_, c, h, w] = input;
    let scales = spread_scales(&mut rng, c, 0.4, 2.0);
    let inputs = scaled_channels(&mut rng, &input, &scales);
    let target = noise.map(|s| perturbed(&mut rng, &inputs, s));
    let weight = Tensor::new(
        vec![m, c * h * w],
        common::normals(&mut rng, m * c * h * w, 1.0),
    )
    .unwrap();
    let b = flatten_rows(&inputs);
    let a = target
        .as_ref()
        .map(flatten_rows)
        .unwrap_or_else(|| b.clone());
    let oracle = Oracle::new(b, &a, weight_matrix(&weight), h * w);
    Instance {
        name: "conv→flatten→linear",
        inputs,
        target,
        weight,
        conv: None,
        oracle,
    }
}

fn conv_options(stride: [usize; 2], padding: [usize; 2], dilation: [usize; 2]) -> ConvOptions {
    ConvOptions {
        stride,
        padding,
        dilation,
    }
}

/// The expected pruned weight: the oracle's `W~` (rows = kept columns, in sorted channel order)
/// written back as `(M, K·ks)` row-major, which is the flat layout of `(M, K)`, `(M, K, kh, kw)`
/// and `(M, K·H·W)` alike.
fn expected_weight_data(z: &Mat) -> Vec<f64> {
    let mut out = vec![0.0; z.rows * z.cols];
    for o in 0..z.cols {
        for r in 0..z.rows {
            out[o * z.rows + r] = z.at(r, o);
        }
    }
    out
}

/// The pruned weight's expected shape for `k` kept channels.
fn expected_weight_shape(inst: &Instance, k: usize) -> Vec<usize> {
    let ws = &inst.weight.shape;
    match ws.len() {
        4 => vec![ws[0], k, ws[2], ws[3]],
        _ if inst.inputs.shape.len() == 4 => {
            let hw = inst.inputs.shape[2] * inst.inputs.shape[3];
            vec![ws[0], k * hw]
        }
        _ => vec![ws[0], k],
    }
}

fn max_rel_weight(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |a, b| a.max(b.abs()));
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max)
        / scale
}

fn stats_of(inst: &Instance, batch_images: usize) -> (LayerProblem, LayerStats) {
    stats_on(&CpuBackend::new(), inst, batch_images)
}

fn stats_on(
    backend: &dyn Backend,
    inst: &Instance,
    batch_images: usize,
) -> (LayerProblem, LayerStats) {
    let problem = LayerProblem::new(&inst.inputs.shape, inst.weight.view(), inst.conv).unwrap();
    let stats = layer_stats(
        backend,
        &problem,
        inst.inputs.view(),
        inst.target.as_ref().map(|t| t.view()),
        batch_images,
    )
    .unwrap();
    (problem, stats)
}

/// `select()` of `backend` on the instance's inputs and target.
fn select_instance(
    backend: &dyn Backend,
    problem: &LayerProblem,
    inst: &Instance,
    options: &SelectOptions,
) -> Selection {
    let target = inst.target.as_ref().map(|t| t.view());
    select(
        backend,
        problem,
        inst.inputs.view(),
        target,
        options,
        &mut |_, _, _| {},
    )
    .unwrap()
}

/// Statistics (batches of 128 images) and the greedy of `inputs` on the CPU backend.
fn cpu_greedy(problem: &LayerProblem, inputs: &Tensor) -> (LayerStats, GreedyRun) {
    let backend = CpuBackend::new();
    let stats = layer_stats(&backend, problem, inputs.view(), None, 128).unwrap();
    let run = run_greedy(&backend, &stats, DEFAULT_DEPENDENCE_TOL, &mut |_, _, _| {}).unwrap();
    (stats, run)
}

/// How close a backend's engine must come to the oracle.
struct Tolerances {
    /// Relative tolerance on normalized errors (see [`rel`]).
    err: f64,
    /// Relative tolerance on reweighted consumer weights.
    weight: f64,
    /// Error left when every channel is kept with `A = B`.
    full_keep: f64,
}

/// The CPU backend: f32 statistics, f64 greedy state.
const CPU: Tolerances = Tolerances {
    err: ERR_TOL,
    weight: W_TOL,
    full_keep: FULL_KEEP_TOL,
};

/// The GPU backend: f32 statistics and f32 greedy state, so 10× the CPU's tolerances (on
/// lavapipe it meets the CPU's: curve ≤ 8.5e-6, reweighted ≤ 4.3e-6, W~ ≤ 5.2e-7).
const GPU: Tolerances = Tolerances {
    err: 10.0 * ERR_TOL,
    weight: 10.0 * W_TOL,
    full_keep: 10.0 * FULL_KEEP_TOL,
};

/// Runs the CPU engine on `inst` and checks everything against the oracle; returns the
/// discrepancies.
fn check_against_oracle(inst: &Instance) -> Discrepancy {
    check_on(&CpuBackend::new(), &CPU, inst)
}

/// Runs the engine of `backend` on `inst` and checks everything against the oracle within
/// `tol`; returns the discrepancies.
fn check_on(backend: &dyn Backend, tol: &Tolerances, inst: &Instance) -> Discrepancy {
    let name = inst.name;
    let oracle = &inst.oracle;
    let c = oracle.channels;
    let (problem, stats) = stats_on(backend, inst, subprune::DEFAULT_BATCH_IMAGES);
    assert_eq!(stats.layout.channels, c, "{name}: channels");
    assert_eq!(
        stats.layout.columns_per_channel, oracle.columns_per_channel,
        "{name}: columns per channel"
    );
    assert_eq!(stats.rows, oracle.b.rows, "{name}: unfolded rows");
    assert!(
        (stats.total - oracle.total).abs() <= 1e-5 * oracle.total,
        "{name}: ‖AW‖² {} vs oracle {}",
        stats.total,
        oracle.total
    );

    let run = run_greedy(backend, &stats, DEFAULT_DEPENDENCE_TOL, &mut |_, _, _| {}).unwrap();
    let reference = oracle.greedy();
    assert!(
        reference.min_gap > MIN_ORACLE_GAP,
        "{name}: instance has a near tie (gap {:e}); pick another seed",
        reference.min_gap
    );
    assert_eq!(run.order, reference.order, "{name}: greedy order");
    assert_eq!(run.error_curve.len(), c);

    let mut d = Discrepancy::default();
    for (k, (&e, &o)) in run
        .error_curve
        .iter()
        .zip(&reference.error_curve)
        .enumerate()
    {
        d.curve = d.curve.max(rel(e, o));
        assert!(
            rel(e, o) <= tol.err,
            "{name}: err(S_{}) = {e:e}, oracle {o:e}",
            k + 1
        );
        assert!((0.0..=1.0).contains(&e), "{name}: err {e} outside [0, 1]");
    }
    for (k, pair) in run.error_curve.windows(2).enumerate() {
        assert!(
            pair[1] <= pair[0],
            "{name}: error curve increases at step {}: {pair:?}",
            k + 2
        );
    }

    let reweight = SelectOptions::default();
    let original = SelectOptions {
        reweight: false,
        ..Default::default()
    };
    for k in 1..=c {
        let sel = select_from_run(&problem, &stats, run.clone(), k, &reweight).unwrap();
        let mut kept = run.order[..k].to_vec();
        kept.sort_unstable();
        assert_eq!(sel.kept, kept, "{name}: kept set for k = {k}");

        let (z, residual) = oracle.least_squares(&kept);
        let want_err = residual / oracle.total;
        d.reweighted = d.reweighted.max(rel(sel.relative_error, want_err));
        assert!(
            rel(sel.relative_error, want_err) <= tol.err,
            "{name}: reweighted error for k = {k}: {:e}, oracle {want_err:e}",
            sel.relative_error
        );
        assert_eq!(sel.weight.shape, expected_weight_shape(inst, k), "{name}");
        let wd = max_rel_weight(&sel.weight.data, &expected_weight_data(&z));
        d.weight = d.weight.max(wd);
        assert!(
            wd <= tol.weight,
            "{name}: reweighted W~ for k = {k} off by {wd:e}"
        );

        let plain = select_from_run(&problem, &stats, run.clone(), k, &original).unwrap();
        let want_plain = oracle.error_without_reweight(&kept);
        d.no_reweight = d.no_reweight.max(rel(plain.relative_error, want_plain));
        assert!(
            rel(plain.relative_error, want_plain) <= tol.err,
            "{name}: non-reweighted error for k = {k}: {:e}, oracle {want_plain:e}",
            plain.relative_error
        );
        // Without reweighting the kept rows are the original ones, bit for bit.
        let cols = oracle.columns(&kept);
        let original_rows = oracle.w.select_rows(&cols);
        let want: Vec<f64> = expected_weight_data(&original_rows);
        assert!(
            plain
                .weight
                .data
                .iter()
                .zip(&want)
                .all(|(&g, &w)| g as f64 == w),
            "{name}: non-reweighted weight for k = {k} is not the original rows"
        );
        // The least-squares weights can only do better than the original ones.
        assert!(
            sel.relative_error <= plain.relative_error + 1e-12,
            "{name}: k = {k}: reweighted {:e} > original {:e}",
            sel.relative_error,
            plain.relative_error
        );
    }

    if inst.target.is_none() {
        assert!(
            run.error_curve[c - 1] <= tol.full_keep,
            "{name}: keeping all channels leaves error {:e}",
            run.error_curve[c - 1]
        );
    }

    // The one-call API gives the same selection and weights as the pieces.
    let k = c.div_ceil(2);
    let options = SelectOptions {
        budget: Budget::Keep(k),
        ..Default::default()
    };
    let sel = select_instance(backend, &problem, inst, &options);
    assert_eq!(sel.run.order, reference.order, "{name}: select() order");
    let (z, residual) = oracle.least_squares(&sel.kept);
    assert!(rel(sel.relative_error, residual / oracle.total) <= tol.err);
    assert_eq!(sel.weight.shape, expected_weight_shape(inst, k));
    assert!(max_rel_weight(&sel.weight.data, &expected_weight_data(&z)) <= tol.weight);

    println!(
        "{name}: n = {}, D = {}, m = {}, curve {:.2e}, reweighted {:.2e}, original {:.2e}, W~ {:.2e}, oracle gap {:.2e}",
        oracle.b.rows,
        oracle.b.cols,
        oracle.w.cols,
        d.curve,
        d.reweighted,
        d.no_reweight,
        d.weight,
        reference.min_gap
    );
    d
}

#[test]
fn linear_consumer_matches_oracle() {
    check_against_oracle(&linear_instance(1, 240, 12, 5, None));
}

#[test]
fn linear_consumer_with_asymmetric_target_matches_oracle() {
    let inst = linear_instance(2, 240, 12, 5, Some(0.3));
    check_against_oracle(&inst);
    // A ≠ B: keeping everything cannot reach AW exactly.
    assert!(inst.oracle.error(&(0..12).collect::<Vec<_>>()) > 1e-3);
}

/// A conv consumer instance (see [`conv_instance`]) with `(stride, padding, dilation)`,
/// checked against the oracle.
fn check_conv(
    what: &'static str,
    seed: u64,
    input: [usize; 4],
    m: usize,
    kernel: [usize; 2],
    geometry: [[usize; 2]; 3],
    noise: Option<f64>,
) {
    let [stride, padding, dilation] = geometry;
    let conv = conv_options(stride, padding, dilation);
    check_against_oracle(&conv_instance(what, seed, input, m, kernel, conv, noise));
}

#[test]
fn conv_consumer_with_stride_matches_oracle() {
    let geometry = [[2, 2], [0, 0], [1, 1]];
    check_conv("conv stride 2", 3, [20, 5, 9, 7], 4, [3, 2], geometry, None);
}

#[test]
fn conv_consumer_with_padding_matches_oracle() {
    let geometry = [[1, 1], [1, 1], [1, 1]];
    check_conv("conv padding 1", 4, [6, 5, 9, 7], 4, [3, 2], geometry, None);
}

#[test]
fn conv_consumer_with_dilation_matches_oracle() {
    let geometry = [[1, 1], [0, 0], [2, 2]];
    check_conv(
        "conv dilation 2",
        5,
        [12, 5, 9, 7],
        4,
        [3, 2],
        geometry,
        None,
    );
}

#[test]
fn conv_consumer_with_stride_padding_dilation_matches_oracle() {
    let geometry = [[2, 2], [1, 1], [2, 2]];
    check_conv("conv s2 p1 d2", 6, [20, 5, 9, 7], 4, [3, 2], geometry, None);
    // Per-axis geometry: every parameter differs between height and width.
    let geometry = [[2, 1], [1, 2], [1, 2]];
    check_conv("conv per-axis", 7, [8, 5, 8, 6], 3, [2, 3], geometry, None);
}

#[test]
fn conv_consumer_with_asymmetric_target_matches_oracle() {
    let geometry = [[2, 2], [1, 1], [2, 2]];
    let what = "conv asymmetric";
    check_conv(what, 8, [20, 5, 9, 7], 4, [3, 2], geometry, Some(0.3));
}

#[test]
fn flatten_linear_consumer_matches_oracle() {
    check_against_oracle(&flatten_instance(9, [150, 6, 3, 2], 4, None));
}

#[test]
fn flatten_linear_consumer_with_asymmetric_target_matches_oracle() {
    check_against_oracle(&flatten_instance(10, [150, 6, 3, 2], 4, Some(0.3)));
}

/// The same engine checks on the GPU backend (lavapipe in CI), on one instance of each consumer
/// kind, with and without a target.
#[test]
fn gpu_backend_matches_oracle() {
    let geometry = conv_options([2, 2], [1, 1], [2, 2]);
    let instances = [
        linear_instance(1, 240, 12, 5, None),
        linear_instance(2, 240, 12, 5, Some(0.3)),
        conv_instance("conv s2 p1 d2", 6, [20, 5, 9, 7], 4, [3, 2], geometry, None),
        conv_instance(
            "conv asymmetric",
            8,
            [20, 5, 9, 7],
            4,
            [3, 2],
            geometry,
            Some(0.3),
        ),
        flatten_instance(9, [150, 6, 3, 2], 4, None),
    ];
    for inst in &instances {
        check_on(common::gpu(), &GPU, inst);
    }
}

/// `BᵀB`, `BᵀA·W` and `‖AW‖²` on a conv consumer big enough to cross the CPU backend's internal
/// boundaries: more unfolded rows than one f32 flush (8192) and several row chunks, and more
/// columns than one SYRK tile, all odd sizes. Entry-wise tolerance `GRAM_TOL · sqrt(G_ii G_jj)`.
#[test]
fn gram_statistics_match_oracle_on_awkward_sizes() {
    const GRAM_TOL: f64 = 1e-5;
    let conv = conv_options([1, 1], [1, 1], [1, 1]);
    let mut rng = Rng::new(11);
    let (n, c, h, w, m) = (11, 23, 31, 29, 3);
    let inputs = scaled_channels(&mut rng, &[n, c, h, w], &vec![1.0; c]);
    let target = perturbed(&mut rng, &inputs, 0.5);
    let weight = Tensor::new(vec![m, c, 3, 3], common::normals(&mut rng, m * c * 9, 1.0)).unwrap();
    let g = Geometry {
        kernel: [3, 3],
        stride: conv.stride,
        padding: conv.padding,
        dilation: conv.dilation,
    };
    let b = im2col(&inputs, &g);
    let a = im2col(&target, &g);
    // Odd sizes: not a multiple of any (power-of-two) tile or chunk.
    assert!(b.rows > 8192 && b.rows % 2 == 1 && b.cols > 192 && b.cols % 2 == 1);
    let gram = b.t_matmul(&b);
    let w = weight_matrix(&weight);
    let c0 = b.t_matmul(&a).matmul(&w);
    let total = a.matmul(&w).frob2();

    let problem = LayerProblem::new(&inputs.shape, weight.view(), Some(conv)).unwrap();
    let stats = layer_stats(
        &CpuBackend::new(),
        &problem,
        inputs.view(),
        Some(target.view()),
        4,
    )
    .unwrap();
    let dd = b.cols;
    assert_eq!(stats.gram.len(), dd * dd);
    let got_gram = stats.gram.values().unwrap();
    let mut worst: f64 = 0.0;
    for i in 0..dd {
        for j in 0..dd {
            let scale = (gram.at(i, i) * gram.at(j, j)).sqrt();
            let e = (got_gram[i * dd + j] - gram.at(i, j)).abs() / scale;
            worst = worst.max(e);
            assert!(
                e <= GRAM_TOL,
                "G[{i},{j}] = {} vs {}",
                got_gram[i * dd + j],
                gram.at(i, j)
            );
        }
    }
    let c0_scale = c0.data.iter().fold(0.0f64, |a, b| a.max(b.abs()));
    let c0_err = stats
        .c0
        .iter()
        .zip(&c0.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / c0_scale;
    assert!(c0_err <= GRAM_TOL, "C0 off by {c0_err:e}");
    let total_err = (stats.total - total).abs() / total;
    assert!(total_err <= GRAM_TOL, "‖AW‖² off by {total_err:e}");
    println!(
        "gram {}x{} from {} rows: max rel err G {worst:.2e}, C0 {c0_err:.2e}, total {total_err:.2e}",
        dd, dd, b.rows
    );
}

/// Streaming the same images one at a time, 7 at a time or all at once gives the same statistics
/// (up to f32 summation order: `STREAM_TOL` relative to the largest entry) and the same selection.
#[test]
fn batch_size_does_not_change_results() {
    const STREAM_TOL: f64 = 1e-6;
    let conv = conv_options([2, 2], [1, 1], [2, 2]);
    let insts = [
        conv_instance("conv", 12, [20, 5, 9, 7], 4, [3, 2], conv, Some(0.3)),
        linear_instance(13, 240, 12, 5, None),
    ];
    for inst in &insts {
        let n = inst.inputs.shape[0];
        let (problem, one) = stats_of(inst, n);
        let (_, single) = stats_of(inst, 1);
        let (_, uneven) = stats_of(inst, 7);
        for other in [&single, &uneven] {
            assert_eq!(other.rows, one.rows);
            let (one_gram, other_gram) = (one.gram.values().unwrap(), other.gram.values().unwrap());
            let scale = one_gram.iter().fold(0.0f64, |a, b| a.max(b.abs()));
            for (x, y) in one_gram.iter().zip(other_gram) {
                assert!(
                    (x - y).abs() <= STREAM_TOL * scale,
                    "{}: G {x} vs {y}",
                    inst.name
                );
            }
            let scale = one.c0.iter().fold(0.0f64, |a, b| a.max(b.abs()));
            for (x, y) in one.c0.iter().zip(&other.c0) {
                assert!(
                    (x - y).abs() <= STREAM_TOL * scale,
                    "{}: C0 {x} vs {y}",
                    inst.name
                );
            }
            assert!((one.total - other.total).abs() <= STREAM_TOL * one.total);
        }
        // Whatever the batch size, the selection is the oracle's, within the usual tolerances.
        let c = inst.oracle.channels;
        let reference = inst.oracle.greedy();
        for batch_images in [n, 1, 7] {
            let options = SelectOptions {
                budget: Budget::Keep(c / 2),
                batch_images,
                ..Default::default()
            };
            let sel = select_instance(&CpuBackend::new(), &problem, inst, &options);
            assert_eq!(sel.run.order, reference.order, "{}", inst.name);
            for (x, y) in sel.run.error_curve.iter().zip(&reference.error_curve) {
                assert!(
                    rel(*x, *y) <= ERR_TOL,
                    "batch {batch_images}: {x} vs oracle {y}"
                );
            }
            let (z, _) = inst.oracle.least_squares(&sel.kept);
            assert!(max_rel_weight(&sel.weight.data, &expected_weight_data(&z)) <= W_TOL);
        }
    }
}

/// Several `add_batch` calls on one accumulator (uneven batch sizes, with a target) sum to the
/// statistics of one call on the concatenation.
#[test]
fn several_batches_give_the_same_statistics_as_one() {
    const STREAM_TOL: f64 = 1e-6;
    let conv = conv_options([1, 2], [2, 1], [1, 1]);
    let inst = conv_instance("conv", 14, [13, 4, 7, 9], 3, [3, 3], conv, Some(0.5));
    let problem = LayerProblem::new(&inst.inputs.shape, inst.weight.view(), inst.conv).unwrap();
    let backend = CpuBackend::new();
    let spec = subprune::backend::StatsSpec::new(problem.unfolding, true);
    let target = inst.target.as_ref().unwrap();
    let mut whole = backend.stats_accumulator(spec).unwrap();
    whole
        .add_batch(inst.inputs.view(), Some(target.view()))
        .unwrap();
    let whole = whole.finish().unwrap();

    let per_image = inst.inputs.data.len() / inst.inputs.shape[0];
    let mut parts = backend.stats_accumulator(spec).unwrap();
    let mut first = 0;
    for count in [5, 1, 4, 3] {
        let mut shape = inst.inputs.shape.clone();
        shape[0] = count;
        let range = first * per_image..(first + count) * per_image;
        let b = subprune::TensorView::new(&shape, &inst.inputs.data[range.clone()]).unwrap();
        let a = subprune::TensorView::new(&shape, &target.data[range]).unwrap();
        parts.add_batch(b, Some(a)).unwrap();
        first += count;
    }
    assert_eq!(first, inst.inputs.shape[0]);
    let parts = parts.finish().unwrap();
    assert_eq!(parts.rows, whole.rows);
    assert_eq!(parts.rows, inst.oracle.b.rows);
    let pairs = [
        (whole.gram.values().unwrap(), parts.gram.values().unwrap()),
        (
            whole.cross.as_deref().unwrap(),
            parts.cross.as_deref().unwrap(),
        ),
        (
            whole.target_gram.as_deref().unwrap(),
            parts.target_gram.as_deref().unwrap(),
        ),
    ];
    for (x, y) in pairs {
        let scale = x.iter().fold(0.0f64, |a, b| a.max(b.abs()));
        for (p, q) in x.iter().zip(y) {
            assert!((p - q).abs() <= STREAM_TOL * scale, "{p} vs {q}");
        }
    }
    // And both agree with the oracle's f64 sums: BᵀB, BᵀA, AᵀA.
    let b = &inst.oracle.b;
    let g = inst.conv.unwrap();
    let a = im2col(
        target,
        &Geometry {
            kernel: [3, 3],
            stride: g.stride,
            padding: g.padding,
            dilation: g.dilation,
        },
    );
    for (got, want) in [
        (parts.gram.values().unwrap(), b.t_matmul(b)),
        (parts.cross.as_deref().unwrap(), b.t_matmul(&a)),
        (parts.target_gram.as_deref().unwrap(), a.t_matmul(&a)),
    ] {
        let scale = want.data.iter().fold(0.0f64, |s, v| s.max(v.abs()));
        for (p, q) in got.iter().zip(&want.data) {
            assert!((p - q).abs() <= 1e-5 * scale, "{p} vs oracle {q}");
        }
    }
}

/// With the consumer weight known up front, the CPU backend accumulates `C0 = Bᵀ(A·W)` and
/// `‖AW‖²` directly (the unfolded columns laid out one after the other, not row by row): on
/// strided, dilated, padded and kernel-wider-than-stride convs, fed in uneven batches, both equal
/// the oracle's f64 values, and `BᵀB` equals the Gram-form run's.
#[test]
fn projected_target_statistics_match_the_oracle() {
    let cases = [
        ([1, 2], [2, 1], [1, 1], [3, 3], [9, 5, 7, 9], 3),
        ([2, 2], [1, 1], [1, 1], [3, 3], [7, 6, 11, 8], 4),
        ([1, 1], [2, 3], [2, 2], [3, 3], [6, 4, 9, 10], 2),
        ([3, 1], [0, 2], [1, 3], [2, 3], [5, 3, 10, 7], 5),
    ];
    for (seed, (stride, padding, dilation, kernel, input, m)) in cases.into_iter().enumerate() {
        let conv = conv_options(stride, padding, dilation);
        let inst = conv_instance("conv", 40 + seed as u64, input, m, kernel, conv, Some(0.5));
        let problem = LayerProblem::new(&inst.inputs.shape, inst.weight.view(), inst.conv).unwrap();
        let d = problem.unfolding.layout().columns();
        assert!(4 * m < 3 * d, "the case must take the projected path");
        let backend = CpuBackend::new();
        let target = inst.target.as_ref().unwrap();
        let run = |spec: subprune::backend::StatsSpec<'_>| {
            let mut acc = backend.stats_accumulator(spec).unwrap();
            let per_image = inst.inputs.data.len() / inst.inputs.shape[0];
            let mut first = 0;
            while first < inst.inputs.shape[0] {
                let count = (first % 3 + 1).min(inst.inputs.shape[0] - first);
                let mut shape = inst.inputs.shape.clone();
                shape[0] = count;
                let range = first * per_image..(first + count) * per_image;
                let b =
                    subprune::TensorView::new(&shape, &inst.inputs.data[range.clone()]).unwrap();
                let a = subprune::TensorView::new(&shape, &target.data[range]).unwrap();
                acc.add_batch(b, Some(a)).unwrap();
                first += count;
            }
            acc.finish_with_weight(&problem.weight, problem.outputs)
                .unwrap()
        };
        let spec = subprune::backend::StatsSpec::new(problem.unfolding, true);
        let projected = run(spec.with_weight(&problem.weight, problem.outputs));
        let gram_form = run(spec);
        assert!(projected.cross.is_none() && projected.target_gram.is_none());
        let b = &inst.oracle.b;
        let want_c0 = b.t_matmul(&inst.oracle.target_out);
        let c0 = projected.c0.as_ref().expect("C0 accumulated directly");
        let scale = want_c0.data.iter().fold(0.0f64, |s, v| s.max(v.abs()));
        for (p, q) in c0.iter().zip(&want_c0.data) {
            assert!(
                (p - q).abs() <= 1e-5 * scale,
                "case {seed}: C0 {p} vs oracle {q}"
            );
        }
        let total = projected.total.expect("‖AW‖² accumulated directly");
        assert!(
            (total - inst.oracle.total).abs() <= 1e-5 * inst.oracle.total,
            "case {seed}: ‖AW‖² {total} vs oracle {}",
            inst.oracle.total
        );
        let want_gram = b.t_matmul(b);
        let scale = want_gram.data.iter().fold(0.0f64, |s, v| s.max(v.abs()));
        for ((p, q), r) in projected
            .gram
            .values()
            .unwrap()
            .iter()
            .zip(gram_form.gram.values().unwrap())
            .zip(&want_gram.data)
        {
            assert!((p - q).abs() <= 1e-6 * scale, "case {seed}: BᵀB {p} vs {q}");
            assert!(
                (p - r).abs() <= 1e-5 * scale,
                "case {seed}: BᵀB {p} vs oracle {r}"
            );
        }
        // A weight of another shape than the one the sums were projected on is refused.
        let mut acc = backend
            .stats_accumulator(spec.with_weight(&problem.weight, problem.outputs))
            .unwrap();
        acc.add_batch(inst.inputs.view(), Some(target.view()))
            .unwrap();
        let err = acc
            .finish_with_weight(&problem.weight[..d * (m - 1)], m - 1)
            .unwrap_err();
        assert!(err.to_string().contains("projected"), "{err}");
    }
}

/// Dead channels (all zero) and exact copies of another channel add nothing: their marginal gain
/// is exactly 0 and they come after every channel with positive gain, dead ones in index order.
#[test]
fn dead_and_duplicate_channels_have_zero_gain_and_come_last() {
    let conv = conv_options([1, 1], [1, 1], [1, 1]);
    let cases = [
        conv_instance("conv", 15, [6, 8, 7, 6], 3, [3, 3], conv, None),
        linear_instance(16, 120, 8, 4, None),
    ];
    for base in cases {
        let mut inputs = base.inputs.clone();
        let shape = inputs.shape.clone();
        let c = shape[1];
        let plane: usize = shape[2..].iter().product();
        let dead = [2usize, 5];
        let (copy, source) = (6usize, 1usize);
        for img in 0..shape[0] {
            let at = |ch: usize| (img * c + ch) * plane;
            for &ch in &dead {
                inputs.data[at(ch)..at(ch) + plane].fill(0.0);
            }
            let src: Vec<f32> = inputs.data[at(source)..at(source) + plane].to_vec();
            inputs.data[at(copy)..at(copy) + plane].copy_from_slice(&src);
        }
        let problem = LayerProblem::new(&inputs.shape, base.weight.view(), base.conv).unwrap();
        let (stats, run) = cpu_greedy(&problem, &inputs);
        let useful = c - dead.len() - 1;
        let tail = &run.order[useful..];
        let mut tail_sorted = tail.to_vec();
        tail_sorted.sort_unstable();
        assert_eq!(
            tail_sorted,
            vec![2, 5, copy],
            "{}: order {:?}",
            base.name,
            run.order
        );
        // The copy's source is the one picked (lowest index wins the tie between identical columns).
        assert!(run.order[..useful].contains(&source));
        assert!(
            run.gains[..useful].iter().all(|&g| g > 0.0),
            "{:?}",
            run.gains
        );
        assert!(
            run.gains[useful..].iter().all(|&g| g == 0.0),
            "{:?}",
            run.gains
        );
        // Every useful channel in, the error is gone; the rest of the curve is flat.
        assert!(run.error_curve[useful - 1] <= FULL_KEEP_TOL);
        assert!(run.error_curve[useful..]
            .iter()
            .all(|&e| e == run.error_curve[useful - 1]));
        // Reweighting with the useless channels kept is still well defined (pseudo-inverse).
        let all = subprune::reweight(&stats, &(0..c).collect::<Vec<_>>(), DEFAULT_DEPENDENCE_TOL)
            .unwrap();
        assert!(all.weight.iter().all(|v| v.is_finite()));
        assert!(all.relative_error <= FULL_KEEP_TOL);
    }
}

/// A channel that is a linear combination of others (`b_7 = b_1 + 0.5·b_3 − b_4`, rounded to f32,
/// so only *numerically* dependent once the f32 statistics are in) has (numerically) zero gain
/// once the others are in, and is never picked while a channel with positive gain remains: the
/// last pick has gain ≈ 0 and every earlier one a clearly positive gain (> 1e-4·‖AW‖²).
#[test]
fn numerically_dependent_channel_is_picked_last_with_zero_gain() {
    let conv = conv_options([1, 1], [1, 1], [1, 1]);
    for seed in 0..6 {
        let cases = [
            linear_instance(30 + seed, 200, 8, 4, None),
            conv_instance("conv", 40 + seed, [5, 8, 6, 5], 3, [3, 3], conv, None),
        ];
        for base in cases {
            let mut inputs = base.inputs.clone();
            let shape = inputs.shape.clone();
            let c = shape[1];
            let plane: usize = shape[2..].iter().product();
            for img in 0..shape[0] {
                for p in 0..plane {
                    let at = |ch: usize| (img * c + ch) * plane + p;
                    inputs.data[at(7)] =
                        inputs.data[at(1)] + 0.5 * inputs.data[at(3)] - inputs.data[at(4)];
                }
            }
            let problem = LayerProblem::new(&inputs.shape, base.weight.view(), base.conv).unwrap();
            let (_, run) = cpu_greedy(&problem, &inputs);
            let name = base.name;
            assert!(
                run.gains[..c - 1].iter().all(|&g| g > 1e-4 * run.total),
                "{name} seed {seed}: gains {:?}",
                run.gains
            );
            // Linear (ks = 1): the dependent column's pivot is caught by the dependence
            // tolerance and the gain is exactly 0. Conv (ks = 9): the f32 statistics put the
            // Schur pivots of the dependent block at noise level (measured up to ~8e-7 of G's
            // diagonal, around the 1e-6 tolerance), so a gain of ~1e-7·‖AW‖² can survive; it must
            // still be numerically zero (≤ 1e-6·‖AW‖²) and come last.
            if base.conv.is_none() {
                assert_eq!(run.gains[c - 1], 0.0, "{name} seed {seed}: {:?}", run.gains);
            } else {
                assert!(
                    run.gains[c - 1] <= 1e-6 * run.total,
                    "{name} seed {seed}: {:?}",
                    run.gains
                );
            }
            assert!([1, 3, 4, 7].contains(&run.order[c - 1]));
            assert!(run.error_curve[c - 2] <= FULL_KEEP_TOL);
        }
    }
}

/// The incremental (Gram–Schmidt) oracle used for large layers computes the same greedy as the
/// least-squares oracle: same order, errors equal to 1e-10.
#[test]
fn incremental_oracle_agrees_with_least_squares_oracle() {
    let conv = conv_options([2, 1], [1, 1], [1, 2]);
    for inst in [
        conv_instance("conv", 50, [10, 6, 7, 8], 3, [3, 2], conv, Some(0.4)),
        linear_instance(51, 100, 10, 3, None),
    ] {
        let reference = inst.oracle.greedy();
        let (curve, regret) = common::follow_order(&inst.oracle, &reference.order);
        for (a, b) in curve.iter().zip(&reference.error_curve) {
            assert!((a - b).abs() <= 1e-10, "{}: {a} vs {b}", inst.name);
        }
        assert!(regret.iter().all(|&r| r <= 1e-12), "{regret:?}");
    }
}

/// Layers large enough to cross the CPU greedy's blocking: far more columns than one downdate
/// panel (128), so several panel flushes and compactions of `E` happen, with dead channels and an
/// exact copy mixed in. The oracle follows the engine's order on the raw data (incremental
/// Gram–Schmidt, f64) and checks at every step that the pick was a best one (regret ≤
/// `REGRET_TOL`·‖AW‖², room for f32-level near ties among hundreds of candidates) and that the
/// error after it matches (`ERR_TOL` as above).
#[test]
fn large_layers_match_oracle_across_panel_flushes() {
    const REGRET_TOL: f64 = 1e-7;
    let conv = conv_options([1, 1], [1, 1], [1, 1]);
    let mut linear = linear_instance(60, 1500, 300, 6, None);
    let mut conv3 = conv_instance(
        "conv 3x3, D = 360",
        61,
        [8, 40, 16, 16],
        5,
        [3, 3],
        conv,
        None,
    );
    let flat = flatten_instance(62, [1800, 30, 3, 4], 4, Some(0.2));
    // Dead channels and a copy in the Linear and Conv layers (rebuild their oracles).
    for inst in [&mut linear, &mut conv3] {
        let shape = inst.inputs.shape.clone();
        let c = shape[1];
        let plane: usize = shape[2..].iter().product();
        for img in 0..shape[0] {
            let at = |ch: usize| (img * c + ch) * plane;
            for ch in [3, c / 2, c - 1] {
                inst.inputs.data[at(ch)..at(ch) + plane].fill(0.0);
            }
            let src = inst.inputs.data[at(7)..at(7) + plane].to_vec();
            inst.inputs.data[at(c - 5)..at(c - 5) + plane].copy_from_slice(&src);
        }
        let b = if inst.conv.is_some() {
            im2col(
                &inst.inputs,
                &Geometry {
                    kernel: [3, 3],
                    stride: conv.stride,
                    padding: conv.padding,
                    dilation: conv.dilation,
                },
            )
        } else {
            flatten_rows(&inst.inputs)
        };
        let ks = inst.oracle.columns_per_channel;
        inst.oracle = Oracle::new(b.clone(), &b, weight_matrix(&inst.weight), ks);
    }
    for inst in [&linear, &conv3, &flat] {
        let name = inst.name;
        let c = inst.oracle.channels;
        assert!(inst.oracle.b.cols > 2 * 128);
        let (problem, stats) = stats_of(inst, subprune::DEFAULT_BATCH_IMAGES);
        let run = run_greedy(
            &CpuBackend::new(),
            &stats,
            DEFAULT_DEPENDENCE_TOL,
            &mut |_, _, _| {},
        )
        .unwrap();
        let (curve, regret) = common::follow_order(&inst.oracle, &run.order);
        let mut worst_err: f64 = 0.0;
        for (k, (&e, &o)) in run.error_curve.iter().zip(&curve).enumerate() {
            worst_err = worst_err.max(rel(e, o));
            assert!(
                rel(e, o) <= ERR_TOL,
                "{name}: err(S_{}) = {e:e}, oracle {o:e}",
                k + 1
            );
        }
        let worst_regret = regret.iter().fold(0.0f64, |a, &b| a.max(b));
        assert!(
            worst_regret <= REGRET_TOL,
            "{name}: a pick {worst_regret:e}·‖AW‖² worse than the best: {regret:?}"
        );
        assert!(run.error_curve.windows(2).all(|p| p[1] <= p[0]));
        if inst.target.is_none() {
            // Dead channels and the copy come last, with exactly zero gain.
            let useless = 4;
            let mut tail = run.order[c - useless..].to_vec();
            tail.sort_unstable();
            let mut want = vec![3, c / 2, c - 1, c - 5];
            want.sort_unstable();
            assert_eq!(tail, want, "{name}");
            assert!(run.gains[c - useless..].iter().all(|&g| g == 0.0));
            assert!(run.error_curve[c - useless - 1] <= FULL_KEEP_TOL);
        }
        // Reweighted weights for a quarter of the channels against the direct least squares.
        let k = c / 4;
        let sel =
            select_from_run(&problem, &stats, run.clone(), k, &SelectOptions::default()).unwrap();
        let (z, residual) = inst.oracle.least_squares(&sel.kept);
        assert!(rel(sel.relative_error, residual / inst.oracle.total) <= ERR_TOL);
        let wd = max_rel_weight(&sel.weight.data, &expected_weight_data(&z));
        assert!(wd <= W_TOL, "{name}: W~ off by {wd:e}");
        println!(
            "{name}: n = {}, D = {}, curve {worst_err:.2e}, max regret {worst_regret:.2e}, W~ {wd:.2e}",
            inst.oracle.b.rows,
            inst.oracle.b.cols
        );
    }
}

/// `select` reports progress for both stages: statistics by images (after every batch, ending at
/// all images), then the greedy by steps (1, 2, ..., C).
#[test]
fn select_reports_progress_of_both_stages() {
    let inst = linear_instance(77, 50, 6, 3, None);
    let problem = LayerProblem::new(&inst.inputs.shape, inst.weight.view(), None).unwrap();
    let options = SelectOptions {
        budget: subprune::Budget::Keep(3),
        batch_images: 16,
        ..Default::default()
    };
    let mut events = Vec::new();
    subprune::select(
        &CpuBackend::new(),
        &problem,
        inst.inputs.view(),
        None,
        &options,
        &mut |stage, done, total| events.push((stage, done, total)),
    )
    .unwrap();
    use subprune::Stage::{Greedy, Statistics};
    let expected: Vec<_> = [16, 32, 48, 50]
        .into_iter()
        .map(|d| (Statistics, d, 50))
        .chain((1..=6).map(|d| (Greedy, d, 6)))
        .collect();
    assert_eq!(events, expected);
}
