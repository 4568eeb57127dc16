//! `prune` plans the memory of every layer's statistics and greedy state before any work
//! (issue 24 item 12): a Conv → Flatten → Gemm with tens of thousands of columns is refused with
//! the plan's figures and the layer named, instead of being killed by the system, and every run
//! prints the planned peak.

mod common;

use std::path::Path;

use subprune::exec::run::F32Images;
use subprune::prune::{prune, PruneOptions, Variant};
use subprune::synthetic::{int, ints, Builder};
use subprune::{Error, Tensor};

/// Conv 1×1 (1 → 64 channels) on 16×16 → Relu → Flatten → Gemm (64·256 = 16384 → 10): the conv's
/// consumer has D = 16384 columns, so its Gram statistics alone are 16384² entries.
fn wide_flatten_model() -> subprune::onnx::OnnxModel {
    let mut b = Builder::new(5);
    let w = b.weight(&[64, 1, 1, 1], 1.0);
    let x = b.node("Conv", &["x", &w], vec![ints("kernel_shape", &[1, 1])]);
    let x = b.node("Relu", &[&x], vec![]);
    let x = b.node("Flatten", &[&x], vec![int("axis", 1)]);
    let w = b.weight(&[10, 64 * 256], 0.01);
    let y = b.node("Gemm", &[&x, &w], vec![int("transB", 1)]);
    let bytes = b.model("wide", &[1, 16, 16], &y, 13);
    subprune::onnx::load_bytes(Path::new("wide.onnx"), &bytes).unwrap()
}

#[test]
fn a_plan_above_the_limit_is_refused_before_any_work_naming_the_layer() {
    let model = wide_flatten_model();
    let images = Tensor::new(vec![4, 1, 16, 16], vec![0.5; 4 * 256]).unwrap();
    let calib = F32Images::new("calib", images).unwrap();
    for variant in [Variant::Layer, Variant::Asym] {
        let options = PruneOptions {
            variant,
            memory_limit: Some(1 << 30),
            ..Default::default()
        };
        let err = prune(&model, &calib, &options, &mut |_| {
            panic!("no work before the plan")
        })
        .unwrap_err();
        match err.root() {
            Error::Memory {
                what,
                needed,
                available,
                ..
            } => {
                assert!(what.contains("Conv_0"), "{what}");
                // 16384² entries: the greedy's f64 state alone is 6 GiB.
                assert!(*needed > 6 << 30, "{needed}");
                assert_eq!(*available, 1 << 30);
            }
            e => panic!("{variant:?}: {e}"),
        }
    }
    // Within the limit (skipping the wide layer leaves nothing large): the plan passes and its
    // peak is reported.
    let mnist = subprune::onnx::load(common::fixture("mnist_cnn.onnx")).unwrap();
    let options = PruneOptions {
        memory_limit: Some(4 << 30),
        ..Default::default()
    };
    let pruned = prune(&mnist, &common::mnist_calib(8), &options, &mut |_| {}).unwrap();
    // MNIST's largest consumer is fc1 (3136 columns): about 24·3136² bytes.
    let peak = pruned.report.memory_peak_bytes;
    assert!(peak > 200 << 20 && peak < 1 << 30, "{peak}");
}

#[test]
fn the_cli_refuses_with_the_figures_and_prints_the_peak_otherwise() {
    let dir = common::temp_dir("prune-memory");
    let out = dir.join("o.onnx");
    let model = common::fixture("mnist_cnn.onnx");
    let calib = common::fixture("mnist_calib_512.npy");
    let args = |limit: &str| {
        vec![
            "prune".to_string(),
            model.to_str().unwrap().into(),
            "--calib".into(),
            calib.to_str().unwrap().into(),
            "--calib-images".into(),
            "8".into(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "--memory-limit".into(),
            limit.into(),
        ]
    };
    let refused = common::subprune(&args("10M").iter().map(String::as_str).collect::<Vec<_>>());
    common::assert_failure(
        &refused,
        Some(1),
        "prune",
        &["needs about", "conv2", "--memory-limit"],
    );
    assert!(!out.exists());
    let ran = common::subprune(&args("8G").iter().map(String::as_str).collect::<Vec<_>>());
    let err = common::stderr(&ran);
    assert!(ran.status.success(), "{err}");
    let summary = String::from_utf8_lossy(&ran.stdout);
    assert!(summary.contains("memory: about"), "{summary}");
}
