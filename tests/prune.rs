//! Whole-network pruning (`subprune::prune`) on the fixtures: the written model loads in tract
//! (an independent ONNX runtime), its parameter count (counted by tract's own protobuf reader)
//! equals the report's, tract's logits equal our forward pass of the pruned IR; the statistics
//! one layer used, fed to `subprune::select`, give the same keep set; bad input is refused.

mod common;
#[path = "common/tract.rs"]
mod tract;

use std::path::Path;

use common::{fixture, images, relative_gap, temp_dir};
use subprune::exec::run::F32Images;
use subprune::exec::{CpuExecutor, Executor};
use subprune::prune::{prune, PruneOptions, Pruned, Variant};
use subprune::tensor::{Tensor, TensorView};
use subprune::{npy, select, Budget, CpuBackend, SelectOptions};
use tract::tract_logits;
use tract_onnx::prelude::Framework;

/// Float parameters of an ONNX file as tract's protobuf reader sees them: float initializers and
/// float `Constant` node values.
fn tract_parameter_count(path: &Path) -> usize {
    let proto = tract_onnx::onnx().proto_model_for_path(path).unwrap();
    let graph = proto.graph.unwrap();
    let float = 1; // TensorProto.DataType.FLOAT
    let count = |t: &tract_onnx::pb::TensorProto| -> usize {
        if t.data_type == float {
            t.dims.iter().map(|&d| d as usize).product()
        } else {
            0
        }
    };
    let init: usize = graph.initializer.iter().map(count).sum();
    let consts: usize = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Constant")
        .flat_map(|n| n.attribute.iter())
        .filter_map(|a| a.t.as_ref())
        .map(count)
        .sum();
    init + consts
}

fn our_logits(graph: &subprune::ir::Graph, images: &Tensor) -> Vec<f32> {
    let exec = CpuExecutor::new(graph).unwrap();
    let out = exec
        .run_batch(images.view(), &[], &mut |_, _| Ok(()))
        .unwrap();
    out[0].data.clone()
}

fn run(model_file: &str, calib: &str, images_n: usize, options: &PruneOptions) -> Pruned {
    let model = subprune::onnx::load(fixture(model_file)).unwrap();
    let source = F32Images::new("calib", images(calib, 0, images_n)).unwrap();
    prune(&model, &source, options, &mut |_| {}).unwrap()
}

/// Writes the pruned model and checks it against tract: loads, same parameter count as the
/// report, same logits as our forward pass of the pruned IR on held-out images.
fn check_written(pruned: &Pruned, model_file: &str, calib: &str, tag: &str) {
    let dir = temp_dir(tag);
    let out = dir.join("pruned.onnx");
    subprune::onnx::save(&pruned.model, &out, &Default::default()).unwrap();
    let written = std::fs::read(&out).unwrap();
    assert_ne!(written, std::fs::read(fixture(model_file)).unwrap());
    let r = &pruned.report;
    assert!(r.parameters_after < r.parameters_before, "{tag}");
    assert!(r.flops_after < r.flops_before, "{tag}");
    assert_eq!(tract_parameter_count(&out), r.parameters_after, "{tag}");
    assert_eq!(pruned.model.graph.parameter_count(), r.parameters_after);
    let test = images(calib, 400, 16);
    let ours = our_logits(&pruned.model.graph, &test);
    let theirs = tract_logits(&out, &test);
    let gap = relative_gap(&ours, &theirs);
    assert!(gap <= 1e-4, "{tag}: logits differ from tract by {gap:e}");
    unchanged_elsewhere(pruned, model_file, &out, tag);
    for l in &r.layers {
        assert_eq!(l.kept.len(), l.channels_after);
        assert!(l.relative_error.is_finite() && l.relative_error >= 0.0);
        assert_eq!(l.error_curve.len(), l.channels_before);
    }
}

/// Every node and initializer outside the pruned layers is written back exactly as it was read
/// (compared as decoded by tract's own protobuf reader), and every tensor of a pruned layer
/// changed shape.
fn unchanged_elsewhere(pruned: &Pruned, model_file: &str, out: &Path, tag: &str) {
    let original = subprune::onnx::load(fixture(model_file)).unwrap();
    let analysis = subprune::analysis::analyze(&original.graph);
    let g = &original.graph;
    let mut touched_values = std::collections::HashMap::new();
    let mut touched_nodes = std::collections::HashSet::new();
    for l in &pruned.report.layers {
        let layer = analysis.prunable(&l.name).unwrap();
        touched_nodes.insert(g.nodes[layer.producer].name.clone());
        // A depthwise conv in between loses the channels too (its group attribute).
        for &d in &layer.depthwise() {
            touched_nodes.insert(g.nodes[d].name.clone());
        }
        // A constant shrinks when the value it follows loses positions: a producer of a
        // stream segment whose channels were all kept keeps its shape.
        let shrinks = |v: usize| {
            layer.kept_positions(v, &l.kept).len() < layer.positions(v).map_or(0, <[usize]>::len)
        };
        for p in &layer.params {
            let name = g.values[p.value].name.clone();
            let was = touched_values.get(&name).copied().unwrap_or(false);
            touched_values.insert(name, was || shrinks(p.of));
        }
        // Maps and flattens whose sizes follow the kept channels: their constant inputs change
        // values, not shapes.
        for e in &layer.edits {
            use subprune::analysis::ChannelEdit::*;
            let (ChannelPad { node, .. }
            | ChannelSlice { node, .. }
            | ChannelSplit { node, .. }
            | FlattenReshape { node, .. }
            | ChannelReshape { node, .. }
            | Depthwise { node, .. }) = e;
            touched_nodes.insert(g.nodes[*node].name.clone());
            for v in g.nodes[*node].inputs.iter().skip(1).flatten() {
                touched_values
                    .entry(g.values[*v].name.clone())
                    .or_insert(false);
            }
        }
        for c in &layer.consumers {
            touched_nodes.insert(c.name.clone());
            let name = g.values[g.nodes[c.node].inputs[1].unwrap()].name.clone();
            let was = touched_values.get(&name).copied().unwrap_or(false);
            touched_values.insert(name, was || shrinks(c.input));
        }
    }
    let before = tract_onnx::onnx()
        .proto_model_for_path(fixture(model_file))
        .unwrap()
        .graph
        .unwrap();
    let after = tract_onnx::onnx()
        .proto_model_for_path(out)
        .unwrap()
        .graph
        .unwrap();
    assert_eq!(before.initializer.len(), after.initializer.len(), "{tag}");
    for (b, a) in before.initializer.iter().zip(&after.initializer) {
        assert_eq!(b.name, a.name, "{tag}");
        if let Some(&shrinks) = touched_values.get(&b.name) {
            if shrinks {
                assert_ne!(b.dims, a.dims, "{tag}: {} was pruned", b.name);
            } else {
                assert_eq!(b.dims, a.dims, "{tag}: {} keeps its channels", b.name);
            }
        } else {
            assert!(b == a, "{tag}: initializer {} changed", b.name);
        }
    }
    assert_eq!(before.node.len(), after.node.len(), "{tag}");
    for (b, a) in before.node.iter().zip(&after.node) {
        if !touched_nodes.contains(&b.name) {
            assert!(b == a, "{tag}: node {} changed", b.name);
        }
    }
}

/// Prunes `model_file` (`images_n` calibration images) with every variant, with and without
/// reweighting, half the channels of every layer but those of `skip`; checks each pruned model
/// with `check`, then writes it and checks it against tract.
fn every_variant(
    model_file: &str,
    calib: &str,
    images_n: usize,
    skip: &[&str],
    tag: &str,
    check: impl Fn(&Pruned),
) {
    for variant in [Variant::Layer, Variant::Seq, Variant::Asym] {
        for reweight in [true, false] {
            let options = PruneOptions {
                variant,
                reweight,
                keep_fraction: 0.5,
                skip: skip.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            };
            let pruned = run(model_file, calib, images_n, &options);
            check(&pruned);
            let tag = format!("{tag}-{variant:?}-{reweight}");
            check_written(&pruned, model_file, calib, &tag);
        }
    }
}

#[test]
fn mnist_every_variant_with_and_without_reweighting() {
    every_variant(
        "mnist_cnn.onnx",
        "mnist_calib_512.npy",
        128,
        &[],
        "mnist",
        |pruned| {
            let r = &pruned.report;
            let kept: Vec<usize> = r.layers.iter().map(|l| l.channels_after).collect();
            assert_eq!(kept, [16, 32, 64]);
            // conv2 → fc1: 128 images against 64 × 49 columns.
            assert!(r.layers[1].rank_deficient);
            assert!(!r.layers[0].rank_deficient);
        },
    );
}

#[test]
fn resnet56_variants_load_in_tract_and_match() {
    let (model, calib) = ("resnet56_cifar10.onnx", "cifar10_calib_512.npy");
    every_variant(model, calib, 32, &[], "resnet", |pruned| {
        // 27 block-internal groups and the stream through the three stages (first: named
        // after the stem), which keeps a share round(0.5^¼ · 64) / 64 of its parameters (its
        // channels hold unequal counts, so the count is not that share of 64 exactly).
        assert_eq!(pruned.report.layers.len(), 28);
        let stream = &pruned.report.layers[0];
        assert_eq!(
            (stream.name.as_str(), stream.channels_before),
            ("conv1", 64)
        );
        assert!(
            (33..=54).contains(&stream.channels_after),
            "{}",
            stream.channels_after
        );
    });
}

#[test]
fn mobilenet_multi_consumer_layer_every_variant() {
    let (model, calib) = ("mobilenetv2_fashion.onnx", "fashion_calib_512.npy");
    every_variant(model, calib, 16, &[], "mobilenet", |pruned| {
        let stem = &pruned.report.layers[0];
        assert_eq!(stem.name, "/conv1/Conv");
        assert_eq!(stem.consumers.len(), 2);
        assert_eq!(stem.channels_after, 16);
    });
}

/// VGG-11 (9.3 M parameters, three 4608-column layers): too slow for the default test run on two
/// cores (about 3 minutes in the test profile); run with `cargo test --test prune -- --ignored`.
#[test]
#[ignore]
fn vgg11_every_variant_loads_in_tract_and_matches() {
    let (model, calib) = ("vgg11_bn_fashion.onnx", "fashion_calib_512.npy");
    let skip = ["/features/features.25/Conv"];
    every_variant(model, calib, 16, &skip, "vgg", |pruned| {
        assert_eq!(pruned.report.layers.len(), 9);
    });
}

/// Caching activations at cut points must not change anything: the same run with no memory for
/// the cache (every layer recomputed from the input) gives the same selections and weights.
#[test]
fn cached_resume_equals_rerun_from_the_input() {
    // MNIST: the cut before conv2 is a pruned activation (pool1, 32 → 16 channels in the pruned
    // network, 32 in the original); ResNet-56: block boundaries.
    for (model, calib, variant) in [
        ("mnist_cnn.onnx", "mnist_calib_512.npy", Variant::Asym),
        ("mnist_cnn.onnx", "mnist_calib_512.npy", Variant::Seq),
        (
            "resnet56_cifar10.onnx",
            "cifar10_calib_512.npy",
            Variant::Asym,
        ),
    ] {
        let base = PruneOptions {
            variant,
            keep_fraction: 0.5,
            ..Default::default()
        };
        let cached = run(model, calib, 16, &base);
        let rerun = run(
            model,
            calib,
            16,
            &PruneOptions {
                memory_budget: 0,
                ..base
            },
        );
        for (a, b) in cached.report.layers.iter().zip(&rerun.report.layers) {
            assert_eq!(a.kept, b.kept, "{model} {}", a.name);
            assert!(
                (a.relative_error - b.relative_error).abs() <= 1e-6 * a.relative_error.max(1e-9),
                "{model} {}",
                a.name
            );
        }
        let test = images(calib, 300, 8);
        let gap = relative_gap(
            &our_logits(&cached.model.graph, &test),
            &our_logits(&rerun.model.graph, &test),
        );
        assert!(gap <= 1e-5, "{model}: {gap:e}");
    }
}

/// The consumer input (and target) the pipeline used for one layer, given to `subprune::select`
/// on its own, keeps the same channels.
#[test]
fn recorded_layer_statistics_select_the_same_channels() {
    for (variant, layer) in [
        (Variant::Layer, "conv1"),
        (Variant::Seq, "fc1"),
        (Variant::Asym, "fc1"),
        (Variant::Asym, "conv1"),
    ] {
        let options = PruneOptions {
            variant,
            keep_fraction: 0.5,
            record: Some(layer.to_string()),
            ..Default::default()
        };
        let pruned = run("mnist_cnn.onnx", "mnist_calib_512.npy", 128, &options);
        let rec = pruned.recorded.expect("recorded");
        assert_eq!(rec.layer, layer);
        assert_eq!(rec.target.is_some(), variant == Variant::Asym);
        if variant == Variant::Asym && layer == "fc1" {
            // Earlier layers are pruned: the inputs differ from the targets.
            assert_ne!(rec.inputs.data, rec.target.as_ref().unwrap().data);
        }
        let sel = select(
            &CpuBackend::new(),
            &rec.problem,
            rec.inputs.view(),
            rec.target.as_ref().map(|t| t.view()),
            &SelectOptions {
                budget: Budget::Keep(rec.kept.len()),
                ..Default::default()
            },
            &mut |_, _, _| {},
        )
        .unwrap();
        assert_eq!(sel.kept, rec.kept, "{variant:?} {layer}");
    }
}

fn mnist() -> subprune::onnx::OnnxModel {
    subprune::onnx::load(fixture("mnist_cnn.onnx")).unwrap()
}

fn prune_err(source: &F32Images, options: &PruneOptions) -> String {
    prune(&mnist(), source, options, &mut |_| {})
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_calibration_and_keep_options_are_clear_errors() {
    let good = F32Images::new("calib", images("mnist_calib_512.npy", 0, 8)).unwrap();
    // wrong image shape
    let wrong = Tensor::new(vec![4, 1, 32, 32], vec![0.0; 4 * 1024]).unwrap();
    let e = prune_err(
        &F32Images::new("calib", wrong).unwrap(),
        &PruneOptions::default(),
    );
    assert!(e.contains("[1, 32, 32]") && e.contains("input"), "{e}");
    // NaN
    let mut nan = images("mnist_calib_512.npy", 0, 8);
    nan.data[5 * 784 + 17] = f32::NAN;
    let e = prune_err(
        &F32Images::new("calib.npy", nan).unwrap(),
        &PruneOptions::default(),
    );
    assert!(e.contains("calib.npy") && e.contains("NaN"), "{e}");
    let keep = |k: Vec<(&str, usize)>| PruneOptions {
        keep: k.into_iter().map(|(n, k)| (n.to_string(), k)).collect(),
        ..Default::default()
    };
    let e = prune_err(&good, &keep(vec![("conv9", 3)]));
    assert!(e.contains("conv9") && e.contains("no node"), "{e}");
    let e = prune_err(&good, &keep(vec![("fc2", 3)]));
    assert!(e.contains("fc2") && e.contains("graph output"), "{e}");
    let e = prune_err(&good, &keep(vec![("relu1", 3)]));
    assert!(e.contains("relu1") && e.contains("not a prunable"), "{e}");
    for k in [0, 33] {
        let e = prune_err(&good, &keep(vec![("conv1", k)]));
        assert!(e.contains("conv1") && e.contains("between 1 and"), "{e}");
    }
    let e = prune_err(
        &good,
        &PruneOptions {
            skip: vec!["nope".into()],
            ..Default::default()
        },
    );
    assert!(e.contains("nope"), "{e}");
    let e = prune_err(
        &good,
        &PruneOptions {
            keep_fraction: 1.5,
            ..Default::default()
        },
    );
    assert!(e.contains("keep fraction"), "{e}");
    // --keep overrides the fraction; --skip leaves a layer whole.
    let pruned = prune(
        &mnist(),
        &good,
        &PruneOptions {
            keep: vec![("conv1".into(), 5)],
            skip: vec!["fc1".into()],
            variant: Variant::Layer,
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let names: Vec<&str> = pruned
        .report
        .layers
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, ["conv1", "conv2"]);
    assert_eq!(pruned.report.layers[0].channels_after, 5);
    let _ = TensorView::new(&[1], &[0.0]);
}

/// The command line: bad paths and data are refused before any work, leaving nothing behind.
#[test]
fn cli_refuses_bad_paths_and_data_writing_nothing() {
    let bin = env!("CARGO_BIN_EXE_subprune");
    let dir = temp_dir("prune-cli");
    let model = dir.join("m.onnx");
    std::fs::copy(fixture("mnist_cnn.onnx"), &model).unwrap();
    let original = std::fs::read(&model).unwrap();
    let calib = dir.join("calib.npy");
    npy::write_f32(&calib, &images("mnist_calib_512.npy", 0, 16)).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(["--backend", "cpu", "prune"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let m = model.to_str().unwrap();
    let c = calib.to_str().unwrap();
    // output == input
    let (ok, err) = run(&[m, "--calib", c, "--out", m]);
    assert!(!ok && err.contains("input model"), "{err}");
    assert_eq!(std::fs::read(&model).unwrap(), original);
    // unwritable (missing) output folder
    let missing = dir.join("no/such/dir/out.onnx");
    let (ok, err) = run(&[m, "--calib", c, "--out", missing.to_str().unwrap()]);
    assert!(!ok && err.contains("does not exist"), "{err}");
    // calibration of the wrong dtype
    let bad = dir.join("labels.npy");
    std::fs::copy(fixture("mnist_test_labels.npy"), &bad).unwrap();
    let out = dir.join("out.onnx");
    let o = out.to_str().unwrap();
    let (ok, err) = run(&[m, "--calib", bad.to_str().unwrap(), "--out", o]);
    assert!(
        !ok && err.contains("labels.npy") && err.contains("int64"),
        "{err}"
    );
    assert!(!out.exists());
    // calibration of the wrong shape
    let wrong = dir.join("wrong.npy");
    npy::write_f32(
        &wrong,
        &Tensor::new(vec![2, 3, 28, 28], vec![0.0; 2 * 3 * 784]).unwrap(),
    )
    .unwrap();
    let (ok, err) = run(&[m, "--calib", wrong.to_str().unwrap(), "--out", o]);
    assert!(!ok && err.contains("[3, 28, 28]"), "{err}");
    assert!(!out.exists());
    // --keep out of range
    let (ok, err) = run(&[m, "--calib", c, "--out", o, "--keep", "conv2=65"]);
    assert!(!ok && err.contains("conv2") && err.contains("64"), "{err}");
    assert!(!out.exists());
    // and a good run writes the model and the report
    let report = dir.join("r.json");
    let (ok, err) = run(&[
        m,
        "--calib",
        c,
        "--out",
        o,
        "--variant",
        "seq",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.exists() && report.exists());
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(
        json["parameters_after"].as_u64().unwrap() as usize,
        tract_parameter_count(&out)
    );
    assert_eq!(std::fs::read(&model).unwrap(), original);
    let leftovers: Vec<_> = std::fs::read_dir(&*dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The ridge reweighting `W~ = W_S + (G_SS + λI)⁻¹(C0_S − G_SS W_S)` against an independent f64
/// oracle: the augmented least squares `min ‖(AW − B_S W_S) − B_S Δ‖² + λ‖Δ‖²` solved by
/// Householder QR on the raw data (no Gram matrices), full rank and rank-deficient.
#[test]
fn ridge_reweighting_matches_augmented_least_squares() {
    use common::{flatten_rows, lstsq, normals, perturbed, weight_matrix, Mat};
    use subprune::layer::reweight::kept_rows;
    use subprune::rng::Rng;
    let mut rng = Rng::new(11);
    // (images, channels, kept, ridge, with target)
    for (n, c, kept, ridge, asym) in [
        (60, 12, vec![0, 2, 3, 7, 9], 0.05, false),
        (60, 12, vec![1, 4, 5, 6, 8, 11], 0.02, true),
        (6, 12, vec![0, 1, 2, 3, 5, 6, 8, 9, 10], 0.01, false),
        (6, 12, vec![0, 1, 2, 3, 5, 6, 8, 9, 10], 0.3, true),
    ] {
        let m = 5;
        let b = Tensor::new(vec![n, c], normals(&mut rng, n * c, 1.0)).unwrap();
        let a = if asym {
            perturbed(&mut rng, &b, 0.3)
        } else {
            b.clone()
        };
        let w = Tensor::new(vec![m, c], normals(&mut rng, m * c, 0.5)).unwrap();
        let problem = subprune::LayerProblem::new(&b.shape, w.view(), None).unwrap();
        let stats = subprune::layer_stats(
            &CpuBackend::new(),
            &problem,
            b.view(),
            asym.then(|| a.view()),
            64,
        )
        .unwrap();
        let got = kept_rows(&stats, &kept, true, ridge, subprune::DEFAULT_DEPENDENCE_TOL).unwrap();
        // Oracle, in f64 from the raw data.
        let (bm, am, wm) = (flatten_rows(&b), flatten_rows(&a), weight_matrix(&w));
        let s = kept.len();
        let bs = bm.select_columns(&kept);
        let mean_diag = (0..s)
            .map(|j| (0..n).map(|i| bs.at(i, j).powi(2)).sum::<f64>())
            .sum::<f64>()
            / s as f64;
        let lambda = ridge * mean_diag;
        let mut x = Mat::zeros(n + s, s);
        let mut y = Mat::zeros(n + s, m);
        for i in 0..n {
            for j in 0..s {
                x.set(i, j, bs.at(i, j));
            }
            for o in 0..m {
                let aw: f64 = (0..c).map(|k| am.at(i, k) * wm.at(k, o)).sum();
                let bw: f64 = (0..s).map(|j| bs.at(i, j) * wm.at(kept[j], o)).sum();
                y.set(i, o, aw - bw);
            }
        }
        for j in 0..s {
            x.set(n + j, j, lambda.sqrt());
        }
        let delta = lstsq(&x, &y);
        let scale = got.weight.iter().fold(0.0f64, |mx, v| mx.max(v.abs()));
        for j in 0..s {
            for o in 0..m {
                let want = wm.at(kept[j], o) + delta.at(j, o);
                let have = got.weight[j * m + o];
                assert!(
                    (want - have).abs() <= 1e-4 * scale,
                    "n {n} kept {kept:?} ridge {ridge}: ({j}, {o}) {have} vs {want}"
                );
            }
        }
        // The residual it reports, against the explicit one.
        let mut explicit = 0.0;
        for i in 0..n {
            for o in 0..m {
                let aw: f64 = (0..c).map(|k| am.at(i, k) * wm.at(k, o)).sum();
                let bw: f64 = (0..s).map(|j| bs.at(i, j) * got.weight[j * m + o]).sum();
                explicit += (aw - bw).powi(2);
            }
        }
        assert!(
            (got.residual - explicit).abs() <= 1e-4 * stats.total,
            "{} vs {explicit}",
            got.residual
        );
    }
}

#[test]
fn gpu_executor_and_backend_prune_like_the_cpu() {
    // The whole pipeline on the GPU (forward passes on the GPU executor, statistics and greedy on
    // the GPU backend; lavapipe in CI): the written model passes the same checks, and each
    // layer's reconstruction error is close to the CPU run's (the GPU greedy state is f32).
    let model = subprune::onnx::load(fixture("mnist_cnn.onnx")).unwrap();
    let source = F32Images::new("calib", images("mnist_calib_512.npy", 0, 32)).unwrap();
    let options = PruneOptions {
        keep_fraction: 0.5,
        ..Default::default()
    };
    let gpu = common::gpu();
    let factory = |g: &subprune::ir::Graph| -> subprune::Result<Box<dyn subprune::exec::Executor>> {
        Ok(Box::new(subprune::exec::GpuExecutor::new(g, gpu)?))
    };
    let on_gpu =
        subprune::prune::prune_with(&model, &source, &options, gpu, &factory, &mut |_| {}).unwrap();
    let on_cpu = prune(&model, &source, &options, &mut |_| {}).unwrap();
    // The statistics inputs and the asymmetric targets came from the executors' activations on
    // the device: the host uploaded only the forward passes' inputs (the images, and cached
    // activations where a pass resumes at a cut; see tests/gpu_prune.rs for the exact count).
    let phases = on_gpu.report.phases;
    assert_eq!(options.variant, subprune::prune::Variant::Asym);
    assert!(phases.statistics_device_bytes > 0, "{phases:?}");
    assert!(
        phases.statistics_uploaded_bytes >= 32 * 28 * 28 * 4,
        "{phases:?}"
    );
    assert_eq!(on_cpu.report.phases.statistics_uploaded_bytes, 0);
    assert_eq!(on_cpu.report.phases.statistics_device_bytes, 0);
    check_written(
        &on_gpu,
        "mnist_cnn.onnx",
        "mnist_calib_512.npy",
        "mnist-gpu",
    );
    assert_eq!(on_gpu.report.layers.len(), on_cpu.report.layers.len());
    for (g, c) in on_gpu.report.layers.iter().zip(&on_cpu.report.layers) {
        assert_eq!(g.channels_after, c.channels_after, "{}", g.name);
        let gap = (g.relative_error - c.relative_error).abs();
        assert!(
            gap <= 0.1 * c.relative_error + 1e-4,
            "{}: GPU error {} vs CPU {}",
            g.name,
            g.relative_error,
            c.relative_error
        );
    }
}
