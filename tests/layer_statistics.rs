//! The layer statistics (`BᵀB`, `BᵀA·W`, `‖AW‖²` and the projected target) of the CPU backend
//! against the independent f64 oracle, on awkward sizes, across batch sizes and batch splits.
//! Tolerances: `common/instances.rs`.

mod common;
#[path = "common/instances.rs"]
mod instances;

use common::{im2col, perturbed, scaled_channels, weight_matrix, Geometry};
use instances::*;
use subprune::rng::Rng;
use subprune::{layer_stats, Backend, Budget, CpuBackend, LayerProblem, SelectOptions, Tensor};

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
        .values()
        .unwrap()
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
            let (one_c0, other_c0) = (one.c0.values().unwrap(), other.c0.values().unwrap());
            let scale = one_c0.iter().fold(0.0f64, |a, b| a.max(b.abs()));
            for (x, y) in one_c0.iter().zip(other_c0) {
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
        let c0 = c0.values().unwrap();
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
