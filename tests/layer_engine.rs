//! The engine (Gram statistics in f32, greedy in Gram form, reweighting solve) against an
//! independent f64 oracle that works on the raw data matrix: its own im2col, its own weight
//! reshape, and a Householder-QR least-squares solve for every candidate set. Every instance runs
//! on the CPU backend; one instance of each consumer kind also on the GPU backend.
//! The statistics alone against the oracle: `layer_statistics.rs`.
//!
//! Tolerances: `common/instances.rs`; the measured discrepancies are printed
//! (`cargo test --test layer_engine -- --nocapture`).

mod common;
#[path = "common/instances.rs"]
mod instances;

use common::{flatten_rows, im2col, weight_matrix, Geometry, Oracle};
use instances::*;
use subprune::{
    run_greedy, select_from_run, Backend, Budget, CpuBackend, LayerProblem, SelectOptions,
    DEFAULT_DEPENDENCE_TOL,
};

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
        let all = subprune::reweight(
            &stats,
            &(0..c).collect::<Vec<_>>(),
            0.0,
            DEFAULT_DEPENDENCE_TOL,
        )
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
