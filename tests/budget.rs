//! The `accuracy` budget (equal accuracy loss, `docs/ALGORITHM.md` §6): the allocation rule on
//! hand-checked and random curves (checked against its definition, not against itself), and the
//! measured accuracy curves on the MNIST fixture, each grid point checked against an independent
//! run of the pipeline on the whole network; the CLI's errors.

mod common;

use std::path::Path;

use subprune::analysis::channels::analyze;
use subprune::exec::eval::evaluate;
use subprune::exec::run::{F32Images, ImageSource};
use subprune::exec::CpuExecutor;
use subprune::npy;
use subprune::prune::budget::{self, Allocation, CostModel, Target};
use subprune::prune::layerwise::layerwise_stats;
use subprune::prune::select::greedy::Greedy;
use subprune::prune::select::Method;
use subprune::prune::sensitivity::{self, Validation};
use subprune::prune::{cpu_engines, prune, ModelBudget, PruneOptions, Variant};
use subprune::tensor::Tensor;
use subprune::CpuBackend;

use common::{
    fixture, i64_npy, mnist_calib, mnist_greedy_curves, mnist_layerwise, mnist_model,
    mnist_test_images,
};

/// Two layers of 10 channels, each 100 parameters whole, nothing shared.
fn two_layers() -> CostModel {
    CostModel::new(vec![10, 10], vec![(100.0, vec![0]), (100.0, vec![1])]).unwrap()
}

#[test]
fn the_sensitive_layer_keeps_more_channels_hand_checked() {
    // Layer 0 loses 5 points per channel removed, layer 1 one point; 2× leaves 10 channels.
    let steep: Vec<f64> = (1..=10).map(|k| 0.9 - 0.05 * (10 - k) as f64).collect();
    let flat: Vec<f64> = (1..=10).map(|k| 0.9 - 0.01 * (10 - k) as f64).collect();
    let model = two_layers();
    let (keeps, drop) =
        budget::accuracy_allocation(&model, 100.0, &[steep.clone(), flat.clone()], 0.9).unwrap();
    // By hand: a drop t keeps 10 − t/0.05 (rounded up) and 10 − t/0.01 channels. At t = 0.08 the
    // sizes are 9 + 2 = 11 > 10; at t = 0.09 they are 9 + 1 = 10: the smallest drop that fits.
    assert_eq!(keeps, vec![9, 1]);
    assert!((drop - 0.09).abs() < 1e-12, "{drop}");
    // Uniform would keep 5 + 5; swapping the layers swaps the sizes.
    assert_eq!(budget::uniform(&model, 100.0).unwrap(), vec![5, 5]);
    let (swapped, _) = budget::accuracy_allocation(&model, 100.0, &[flat, steep], 0.9).unwrap();
    assert_eq!(swapped, vec![1, 9]);
}

#[test]
fn plateaus_are_split_by_kept_fraction() {
    // Both layers lose nothing anywhere: the tie-break keeps one fraction, 5/10 and 10/20.
    let model = CostModel::new(vec![10, 20], vec![(100.0, vec![0]), (100.0, vec![1])]).unwrap();
    let (keeps, drop) =
        budget::accuracy_allocation(&model, 100.0, &[vec![0.9; 10], vec![0.9; 20]], 0.9).unwrap();
    assert_eq!(keeps, vec![5, 10]);
    assert_eq!(drop, 0.0);
}

#[test]
fn accuracy_allocation_meets_the_budget_within_one_channel_per_layer_on_random_curves() {
    let m = subprune::onnx::load(fixture("mnist_cnn.onnx")).unwrap();
    let analysis = analyze(&m.graph);
    let layers = budget::pruned_layers(&analysis, &[]);
    // The real cost structure (conv2 and fc1 both shrink fc1's weight), and a synthetic one.
    let models = [
        CostModel::parameters(&m.graph, &layers),
        CostModel::new(
            vec![7, 30, 3, 64],
            vec![
                (500.0, vec![0, 1]),
                (80.0, vec![1]),
                (20.0, vec![2]),
                (900.0, vec![2, 3]),
                (300.0, vec![]),
            ],
        )
        .unwrap(),
    ];
    let mut rng = subprune::rng::Rng::new(11);
    for model in &models {
        for trial in 0..30 {
            // Random non-decreasing curves ending at the baseline, some with plateaus.
            let baseline = 0.95;
            let envelopes: Vec<Vec<f64>> = model
                .channels
                .iter()
                .map(|&d| {
                    let mut e = vec![0.0; d];
                    let mut a = baseline;
                    for k in (0..d).rev() {
                        e[k] = a;
                        if rng.uniform() < 0.6 {
                            a -= 0.1 * rng.uniform() / d as f64 * 4.0;
                        }
                        // Quantise to 1/200 (a 200-image validation set).
                        a = (a * 200.0).floor() / 200.0;
                    }
                    e
                })
                .collect();
            let mut previous: Option<Vec<usize>> = None;
            for r in [2.0, 3.0, 4.0, 8.0, 16.0] {
                let budget_cost = model.full / r;
                if model.cost(&vec![1; model.channels.len()]) > budget_cost {
                    continue;
                }
                let (keeps, drop) =
                    budget::accuracy_allocation(model, budget_cost, &envelopes, baseline).unwrap();
                let tag = format!("trial {trial} {r}×: {keeps:?}");
                assert!(model.cost(&keeps) <= budget_cost, "{tag}");
                let plus_one: Vec<usize> = keeps
                    .iter()
                    .zip(&model.channels)
                    .map(|(&k, &d)| (k + 1).min(d))
                    .collect();
                assert!(model.cost(&plus_one) > budget_cost, "{tag}: +1 still fits");
                // The rule itself: every layer is at or above the threshold, and one channel
                // fewer would be at or below it.
                let threshold = baseline - drop;
                for (l, (&k, e)) in keeps.iter().zip(&envelopes).enumerate() {
                    assert!(e[k - 1] >= threshold - 1e-12, "{tag}: layer {l}");
                    if k > 1 {
                        assert!(
                            e[k - 2] <= threshold + 1e-12,
                            "{tag}: layer {l} could shrink"
                        );
                    }
                }
                // A tighter budget never gives a layer more channels.
                if let Some(p) = &previous {
                    assert!(keeps.iter().zip(p).all(|(a, b)| a <= b), "{tag} vs {p:?}");
                }
                previous = Some(keeps);
            }
        }
    }
}

#[test]
fn accuracy_allocation_refuses_bad_curves() {
    let model = two_layers();
    let ok = vec![vec![0.5; 10], vec![0.5; 10]];
    let err = message(budget::accuracy_allocation(&model, 100.0, &ok[..1], 0.5));
    assert!(err.contains("one accuracy curve"), "{err}");
    let mut decreasing = ok.clone();
    decreasing[1][3] = 0.9;
    let err = message(budget::accuracy_allocation(&model, 100.0, &decreasing, 0.5));
    assert!(err.contains("layer 1 decreases"), "{err}");
    let mut nan = ok.clone();
    nan[0][0] = f64::NAN;
    assert!(budget::accuracy_allocation(&model, 100.0, &nan, 0.5).is_err());
    let err = message(budget::accuracy_allocation(&model, 1.0, &ok, 0.5));
    assert!(err.contains("unreachable"), "{err}");
    let err = message(budget::allocate(
        &model,
        Target::Compression(2.0),
        Allocation::Accuracy,
        None,
    ));
    assert!(err.contains("validation"), "{err}");
    assert!(CostModel::new(vec![3, 0], vec![]).is_err());
    assert!(CostModel::new(vec![3], vec![(1.0, vec![1])]).is_err());
}

/// One more channel in every layer (where the layer has one more).
fn one_more_each(keeps: &[usize], channels: &[usize]) -> Vec<usize> {
    keeps
        .iter()
        .zip(channels)
        .map(|(&k, &d)| (k + 1).min(d))
        .collect()
}

/// The message of an error the call must return.
fn message<T: std::fmt::Debug>(r: subprune::Result<T>) -> String {
    r.unwrap_err().to_string()
}

fn top1(graph: &subprune::ir::Graph, images: &dyn ImageSource, labels: &[i64]) -> f64 {
    let exec = CpuExecutor::new(graph).unwrap();
    let r = evaluate(&exec, images, labels, 64, &mut |_, _| {}).unwrap();
    r.correct_top1 as f64 / r.images as f64
}

#[test]
fn mnist_accuracy_curves_match_the_pipeline_and_the_allocation_meets_the_ratio() {
    let m = subprune::onnx::load(fixture("mnist_cnn.onnx")).unwrap();
    let (backend, factory) = cpu_engines();
    let options = PruneOptions::default();
    let calib = mnist_calib(64);
    let (val, labels) = mnist_test_images(120, true);
    let ls = layerwise_stats(
        &m.graph,
        &calib,
        &options,
        &backend,
        &factory,
        &mut |_, _| {},
    )
    .unwrap();
    let greedy = Greedy::default();
    let mut calls = 0;
    let s = sensitivity::measure(
        &m.graph,
        &ls,
        &greedy,
        Validation {
            images: &val,
            labels: &labels,
        },
        &options,
        &backend,
        &factory,
        &mut |d, n| {
            calls += 1;
            assert!(d <= n);
        },
    )
    .unwrap();
    // 1 + (10 − 1) + (12 − 1) + (14 − 1) evaluations for 32, 64 and 128 channels.
    let grids: Vec<usize> = s.layers.iter().map(|l| l.grid.len()).collect();
    assert_eq!(grids, vec![10, 12, 14]);
    assert_eq!(s.evaluations, 1 + 9 + 11 + 13);
    assert_eq!(calls, s.evaluations);
    assert_eq!(s.baseline, top1(&m.graph, &val, &labels));
    for l in &s.layers {
        assert_eq!(l.envelope.len(), l.channels);
        assert!(
            l.envelope.windows(2).all(|w| w[0] <= w[1]),
            "{}: not monotone",
            l.name
        );
        assert_eq!(*l.envelope.last().unwrap(), s.baseline);
        for (&k, &a) in l.grid.iter().zip(&l.accuracy) {
            assert!(
                l.envelope[k - 1] <= a,
                "{}: envelope above a measurement",
                l.name
            );
        }
    }
    // Few channels cost accuracy: the one-channel network is far below the baseline.
    assert!(s.layers.iter().all(|l| l.accuracy[0] < s.baseline - 0.2));
    // Independent check of measured points: the layer pruned alone by the pipeline (layer
    // variant, every other layer skipped), evaluated on the whole network from its input. conv1
    // is evaluated from the input; conv2 and fc1 from cached activations.
    let names: Vec<String> = s.layers.iter().map(|l| l.name.clone()).collect();
    for (li, gi) in [(0, 3), (1, 4), (2, 6)] {
        let l = &s.layers[li];
        let k = l.grid[gi];
        let opts = PruneOptions {
            variant: Variant::Layer,
            keep: vec![(l.name.clone(), k)],
            skip: names.iter().filter(|n| **n != l.name).cloned().collect(),
            ..Default::default()
        };
        let pruned = prune(&m, &calib, &opts, &mut |_| {}).unwrap();
        assert_eq!(pruned.report.layers[0].channels_after, k);
        let direct = top1(&pruned.model.graph, &val, &labels);
        assert_eq!(l.accuracy[gi], direct, "{} at {k} channels", l.name);
    }
    // The allocation on these curves: within the budget, one more channel per layer exceeds it,
    // and the pruned graph has exactly the predicted parameters.
    let analysis = analyze(&m.graph);
    let layers = budget::pruned_layers(&analysis, &[]);
    let params = CostModel::parameters(&m.graph, &layers);
    for r in [2.0, 4.0, 8.0] {
        let a = budget::allocate_accuracy(&params, Target::Compression(r), &s, None).unwrap();
        let target = params.full / r;
        assert!(a.cost <= target, "{r}×: {} > {target}", a.cost);
        let plus_one: Vec<usize> = one_more_each(&a.keeps, &params.channels);
        assert!(params.cost(&plus_one) > target, "{r}×: +1 fits");
        let drop = a.accuracy_drop.unwrap();
        assert!((0.0..=1.0).contains(&drop), "{drop}");
        let (g, _) = ls
            .prune(&m.graph, &greedy, &a.keeps, &options, &backend)
            .unwrap();
        assert_eq!(g.parameter_count() as f64, a.cost, "{r}×");
    }
    // Bad validation sets are refused before any evaluation.
    let refused = |images: &dyn ImageSource, labels: &[i64]| {
        sensitivity::measure(
            &m.graph,
            &ls,
            &greedy,
            Validation { images, labels },
            &options,
            &backend,
            &factory,
            &mut |_, _| panic!("no evaluation"),
        )
        .unwrap_err()
        .to_string()
    };
    let err = refused(&val, &labels[..10]);
    assert!(err.contains("10 labels for 120 images"), "{err}");
    let wrong = F32Images::new(
        "wrong",
        Tensor::new(vec![2, 1, 14, 14], vec![0.0; 392]).unwrap(),
    )
    .unwrap();
    let err = refused(&wrong, &[0, 1]);
    assert!(err.contains("validation images are [1, 14, 14]"), "{err}");
    let err = budget::plan(
        &m.graph,
        &calib,
        None,
        &options,
        Target::Compression(4.0),
        Allocation::Accuracy,
        &backend,
        &factory,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("validation"), "{err}");
}

#[test]
fn cli_prune_with_the_accuracy_budget() {
    let dir = common::temp_dir("budget-cli");
    let (val, labels) = mnist_test_images(60, true);
    let mut data = vec![0.0; 60 * 784];
    val.fill(0, &mut data).unwrap();
    let v = dir.join("val.npy");
    npy::write_f32(&v, &Tensor::new(vec![60, 1, 28, 28], data).unwrap()).unwrap();
    let vl = dir.join("val_labels.npy");
    std::fs::write(&vl, i64_npy(&labels)).unwrap();
    let bad_labels = dir.join("bad_labels.npy");
    std::fs::write(&bad_labels, i64_npy(&labels[..7])).unwrap();
    let c = dir.join("calib.npy");
    let t = npy::read_f32(fixture("mnist_calib_512.npy")).unwrap();
    npy::write_f32(
        &c,
        &Tensor::new(vec![48, 1, 28, 28], t.data[..48 * 784].to_vec()).unwrap(),
    )
    .unwrap();
    let m = fixture("mnist_cnn.onnx");
    let o = dir.join("o.onnx");
    let r = dir.join("r.json");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let run = |extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "prune".into(),
            s(&m),
            "--calib".into(),
            s(&c),
            "--out".into(),
            s(&o),
            "--variant".into(),
            "layer".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_subprune"))
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // Errors, before anything is written.
    let (ok, _, err) = run(&["--compression", "4", "--budget", "accuracy"]);
    assert!(!ok && err.contains("--val"), "{err}");
    let (ok, _, err) = run(&[
        "--compression",
        "4",
        "--val",
        &s(&v),
        "--val-labels",
        &s(&vl),
    ]);
    assert!(
        !ok && err.contains("only used by --budget accuracy"),
        "{err}"
    );
    // `--compression 4 --budget accuracy --val V`, then `extra`.
    let (val, val_labels, bad_labels, report) = (s(&v), s(&vl), s(&bad_labels), s(&r));
    let accuracy = |extra: &[&str]| {
        let mut args = vec!["--compression", "4", "--budget", "accuracy", "--val", &val];
        args.extend_from_slice(extra);
        run(&args)
    };
    let (ok, _, err) = accuracy(&["--val-labels", &bad_labels]);
    assert!(!ok && err.contains("7 labels for 60 images"), "{err}");
    let (ok, _, err) = accuracy(&[]);
    assert!(!ok && err.contains("--val-labels"), "{err}");
    assert!(!o.exists());
    // A run: the sizes of the report meet 4× and are those the printed summary shows.
    let (ok, stdout, err) = accuracy(&["--val-labels", &val_labels, "--report", &report]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("accuracy budget: each layer alone loses at most"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&r).unwrap()).unwrap();
    let budget = &report["budget"];
    assert_eq!(budget["allocation"], "accuracy");
    let before = report["parameters_before"].as_f64().unwrap();
    let after = report["parameters_after"].as_f64().unwrap();
    assert!(after <= before / 4.0, "{after} > {before} / 4");
    assert_eq!(budget["allocated"]["cost"].as_f64().unwrap(), after);
    let curves = budget["sensitivity"]["layers"].as_array().unwrap();
    assert_eq!(curves.len(), 3);
    let kept: Vec<u64> = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["channels_after"].as_u64().unwrap())
        .collect();
    let planned: Vec<u64> = budget["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l[2].as_u64().unwrap())
        .collect();
    assert_eq!(kept, planned);
}

#[test]
fn cost_model_equals_the_pruned_graph_and_uniform_budget_is_within_one_channel_per_layer() {
    let (m, ls) = mnist_layerwise();
    let backend = CpuBackend::new();
    let analysis = analyze(&m.graph);
    let layers = budget::pruned_layers(&analysis, &[]);
    let params = CostModel::parameters(&m.graph, &layers);
    let flops = CostModel::flops(&m.graph, &layers);
    assert_eq!(params.full as usize, m.graph.parameter_count());
    for r in [2.0, 4.0, 8.0, 16.0, 32.0] {
        let a =
            budget::allocate(&params, Target::Compression(r), Allocation::Uniform, None).unwrap();
        let target = m.graph.parameter_count() as f64 / r;
        assert!(a.cost <= target, "{r}: {} > {target}", a.cost);
        let plus_one: Vec<usize> = one_more_each(&a.keeps, &params.channels);
        assert!(
            params.cost(&plus_one) > target,
            "{r}: one more channel per layer still fits"
        );
        // The pruned graph has exactly the predicted parameters and FLOPs.
        let (g, _) = ls
            .prune(
                &m.graph,
                &*Method::WeightNorm.selector(0),
                &a.keeps,
                &PruneOptions::default(),
                &backend,
            )
            .unwrap();
        assert_eq!(g.parameter_count() as f64, a.cost, "{r}");
        let g_flops: u64 = g.nodes.iter().map(|n| 2 * g.macs_per_image(n)).sum();
        assert_eq!(g_flops as f64, flops.cost(&a.keeps), "{r}");
    }
    // FLOPs target.
    let f = flops.full / 5.0;
    let a = budget::allocate(&flops, Target::Flops(f), Allocation::Uniform, None).unwrap();
    assert!(a.cost <= f);
}

#[test]
fn error_allocation_meets_the_budget_and_beats_uniform_on_the_same_curves() {
    let (m, _) = mnist_layerwise();
    let analysis = analyze(&m.graph);
    let layers = budget::pruned_layers(&analysis, &[]);
    let params = CostModel::parameters(&m.graph, &layers);
    let curves = mnist_greedy_curves();
    // The greedy curves, and synthetic non-increasing curves of other shapes.
    let mut rng = subprune::rng::Rng::new(5);
    let mut all = vec![curves.clone()];
    for _ in 0..4 {
        all.push(
            params
                .channels
                .iter()
                .map(|&d| {
                    let mut e = 1.0;
                    (0..d)
                        .map(|_| {
                            e *= 1.0 - 0.2 * rng.uniform();
                            e
                        })
                        .collect()
                })
                .collect(),
        );
    }
    for c in &all {
        for r in [2.0, 4.0, 8.0, 16.0, 32.0] {
            let budget_cost = params.full / r;
            let e = budget::allocate(&params, Target::Compression(r), Allocation::Error, Some(c))
                .unwrap();
            let u = budget::allocate(
                &params,
                Target::Compression(r),
                Allocation::Uniform,
                Some(c),
            )
            .unwrap();
            assert!(e.cost <= budget_cost, "{r}: {} > {budget_cost}", e.cost);
            assert!(
                e.summed_error.unwrap() <= u.summed_error.unwrap() + 1e-12,
                "{r}: error {} > uniform {}",
                e.summed_error.unwrap(),
                u.summed_error.unwrap()
            );
        }
    }
}

#[test]
fn bad_allocations_are_clear_errors() {
    assert_eq!(
        "accuracy".parse::<Allocation>().unwrap(),
        Allocation::Accuracy
    );
    let err = "nope".parse::<Allocation>().unwrap_err().to_string();
    assert!(err.contains("nope") && err.contains("accuracy"), "{err}");
    let m = mnist_model();
    let analysis = analyze(&m.graph);
    let layers = budget::pruned_layers(&analysis, &[]);
    let params = CostModel::parameters(&m.graph, &layers);
    let refused = |target, allocation| message(budget::allocate(&params, target, allocation, None));
    for r in [1.0, 0.5, -2.0, f64::NAN, f64::INFINITY] {
        let err = refused(Target::Compression(r), Allocation::Uniform);
        assert!(err.contains("compression"), "{err}");
    }
    // fc2 (the classifier) is not prunable: 10000× cannot be reached.
    let err = refused(Target::Compression(10000.0), Allocation::Uniform);
    assert!(err.contains("unreachable"), "{err}");
    let err = refused(Target::Compression(4.0), Allocation::Error);
    assert!(err.contains("error curves"), "{err}");
}

#[test]
fn a_budget_in_the_options_is_planned_by_prune_and_reuses_its_statistics() {
    let m = subprune::onnx::load(fixture("mnist_cnn.onnx")).unwrap();
    let (backend, factory) = cpu_engines();
    let calib = mnist_calib(64);
    let budget = ModelBudget {
        target: Target::Compression(4.0),
        allocation: Allocation::Error,
        validation: None,
    };
    let options = PruneOptions {
        variant: Variant::Layer,
        budget: Some(budget.clone()),
        ..Default::default()
    };
    let pruned = prune(&m, &calib, &options, &mut |_| {}).unwrap();
    // The same sizes as planning alone, in the result.
    let plan = budget::plan(
        &m.graph,
        &calib,
        None,
        &options,
        budget.target,
        budget.allocation,
        &backend,
        &factory,
    )
    .unwrap();
    let planned = pruned.budget.as_ref().expect("the plan comes back");
    assert_eq!(planned.keep(), plan.keep());
    let kept: Vec<(String, usize)> = pruned
        .report
        .layers
        .iter()
        .map(|l| (l.name.clone(), l.channels_after))
        .collect();
    assert_eq!(kept, plan.keep());
    // Recording a layer needs its inputs, so that run takes the statistics in its own forward
    // pass; the reused statistics and greedy runs give the same numbers.
    let recorded = PruneOptions {
        record: Some(pruned.report.layers[0].name.clone()),
        ..options.clone()
    };
    let again = prune(&m, &calib, &recorded, &mut |_| {}).unwrap();
    assert!(again.recorded.is_some());
    for (a, b) in pruned.report.layers.iter().zip(&again.report.layers) {
        assert_eq!(a.kept, b.kept, "{}", a.name);
        assert_eq!(a.order, b.order, "{}", a.name);
        assert_eq!(a.error_curve, b.error_curve, "{}", a.name);
        assert_eq!(
            a.relative_error.to_bits(),
            b.relative_error.to_bits(),
            "{}",
            a.name
        );
    }
    assert_eq!(
        pruned.report.phases.statistics_uploaded_bytes,
        again.report.phases.statistics_uploaded_bytes
    );
    assert_eq!(
        pruned.report.parameters_after,
        again.report.parameters_after
    );
    // The same keep counts given by hand prune to the same model.
    let by_hand = PruneOptions {
        budget: None,
        keep: plan.keep(),
        ..options.clone()
    };
    let manual = prune(&m, &calib, &by_hand, &mut |_| {}).unwrap();
    assert!(manual.budget.is_none());
    let dir = common::temp_dir("budget-in-options");
    let written = |model: &subprune::onnx::OnnxModel, name: &str| {
        let path = dir.join(name);
        subprune::onnx::save(model, &path, &Default::default()).unwrap();
        std::fs::read(path).unwrap()
    };
    assert_eq!(
        written(&manual.model, "manual.onnx"),
        written(&pruned.model, "budget.onnx")
    );
}

#[test]
fn targets_are_checked_on_the_target_type() {
    assert!(Target::Compression(2.0).check().is_ok());
    assert!(Target::Flops(1e6).check().is_ok());
    for bad in [1.0, 0.5, f64::NAN, f64::INFINITY] {
        let err = Target::Compression(bad).check().unwrap_err().to_string();
        assert!(
            err.contains("--compression") && err.contains("> 1"),
            "{err}"
        );
    }
    for bad in [0.0, -1.0, f64::NAN] {
        let err = Target::Flops(bad).check().unwrap_err().to_string();
        assert!(err.contains("--target-flops"), "{err}");
    }
    // prune refuses a bad target before any work.
    let m = subprune::onnx::load(fixture("mnist_cnn.onnx")).unwrap();
    let options = PruneOptions {
        budget: Some(ModelBudget {
            target: Target::Compression(1.0),
            allocation: Allocation::Uniform,
            validation: None,
        }),
        ..Default::default()
    };
    let err = prune(&m, &mnist_calib(4), &options, &mut |_| panic!("no work"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--compression 1"), "{err}");
}

#[test]
fn a_flops_target_the_model_already_meets_is_refused_and_nothing_is_written() {
    let dir = common::temp_dir("flops-met");
    let out = dir.join("o.onnx");
    let model = fixture("mnist_cnn.onnx");
    let calib = fixture("mnist_calib_512.npy");
    let run = common::subprune(&[
        "prune",
        model.to_str().unwrap(),
        "--calib",
        calib.to_str().unwrap(),
        "--calib-images",
        "8",
        "--target-flops",
        "1e12",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = common::assert_failure(&run, Some(1), "prune", &["--target-flops", "target is met"]);
    assert!(!out.exists(), "{err}");
}

#[test]
fn all_zero_calibration_images_get_a_warning() {
    let dir = common::temp_dir("zero-calib");
    let zeros = Tensor::new(vec![8, 1, 28, 28], vec![0.0; 8 * 28 * 28]).unwrap();
    let calib = common::write_npy(&dir, "zeros.npy", &zeros);
    let out = dir.join("o.onnx");
    let model = fixture("mnist_cnn.onnx");
    let run = common::subprune(&[
        "prune",
        model.to_str().unwrap(),
        "--calib",
        &calib,
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = common::stderr(&run);
    assert!(run.status.success(), "{err}");
    assert!(
        err.contains("warning: every calibration value") && err.contains("is 0"),
        "{err}"
    );
    // Real images get no such warning.
    let real = fixture("mnist_calib_512.npy");
    let run = common::subprune(&[
        "prune",
        model.to_str().unwrap(),
        "--calib",
        real.to_str().unwrap(),
        "--calib-images",
        "8",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!common::stderr(&run).contains("every calibration value"));
}

#[test]
fn the_uniform_budget_prunes_a_stream_gentler_and_meets_the_target() {
    // ResNet-56: 27 block-internal groups and the stream (64 channels). The uniform budget keeps
    // f of every internal group and about √f of the stream; the pruned model meets the target
    // (the stream's channels are sized by their share of its parameters).
    let model = subprune::onnx::load(common::fixture("resnet56_cifar10.onnx")).unwrap();
    let analysis = analyze(&model.graph);
    let layers = budget::pruned_layers(&analysis, &[]);
    let params = CostModel::parameters(&model.graph, &layers);
    let stream = layers.iter().position(|l| l.stream).unwrap();
    assert_eq!(params.exponents[stream], budget::STREAM_EXPONENT);
    let a = budget::allocate(&params, Target::Compression(4.0), Allocation::Uniform, None).unwrap();
    let f_stream = a.keeps[stream] as f64 / 64.0;
    let f_block = a.keeps[stream + 27] as f64 / 64.0; // layer3.8.conv1
    let want = f_block.powf(budget::STREAM_EXPONENT);
    assert!((f_stream - want).abs() < 0.03, "{f_stream} vs {want}");
    let calib = F32Images::new("calib", common::first_images("cifar10_calib_512.npy", 8)).unwrap();
    let options = PruneOptions {
        variant: Variant::Layer,
        budget: Some(ModelBudget {
            target: Target::Compression(4.0),
            allocation: Allocation::Uniform,
            validation: None,
        }),
        ..Default::default()
    };
    let pruned = prune(&model, &calib, &options, &mut |_| {}).unwrap();
    let whole = model.graph.parameter_count() as f64;
    let got = pruned.model.graph.parameter_count() as f64;
    assert!(got <= whole / 4.0, "{got} > {}", whole / 4.0);
    assert!(got > whole / 4.6, "{got}: far below the target");
}
