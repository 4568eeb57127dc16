//! What `eval` and `prune` print about accuracy (issue 24, items 11 and 13): `top1`/`top5` in
//! JSON are fractions with the counts beside them, logits of shape `(N, classes, 1, 1)` are
//! squeezed, and the prune summary prints human text, with no evaluation time when nothing was
//! evaluated.

use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;
use subprune::exec::eval::evaluate;
use subprune::exec::run::F32Images;
use subprune::onnx::proto;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn subprune(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_subprune"))
        .args(args)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn path(name: &str) -> String {
    fixture(name).to_str().unwrap().to_string()
}

#[test]
fn eval_json_gives_accuracies_and_counts() {
    let (ok, stdout, stderr) = subprune(&[
        "eval",
        &path("mnist_cnn.onnx"),
        "--data",
        &path("mnist_test_u8.npy"),
        "--labels",
        &path("mnist_test_labels.npy"),
        "--limit",
        "300",
        "--json",
        "--backend",
        "cpu",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let images = v["images"].as_u64().unwrap();
    assert_eq!(images, 300);
    for k in ["1", "5"] {
        let correct = v[format!("correct_top{k}")].as_u64().expect("a count");
        let fraction = v[format!("top{k}")].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&fraction), "{v}");
        assert!(
            (fraction - correct as f64 / images as f64).abs() < 1e-12,
            "{v}"
        );
    }
    assert!(v["top1"].as_f64().unwrap() > 0.9, "{v}");
}

/// The MNIST fixture with its logits reshaped to `(N, 10, 1, 1)`.
fn mnist_with_4d_logits() -> Vec<u8> {
    let bytes = std::fs::read(fixture("mnist_cnn.onnx")).unwrap();
    let mut model = proto::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let logits = graph.output[0].name.clone().unwrap();
    graph.initializer.push(proto::TensorProto {
        dims: vec![4],
        data_type: Some(proto::tensor_proto::DataType::Int64 as i32),
        name: Some("to_4d".into()),
        int64_data: vec![0, 10, 1, 1],
        ..Default::default()
    });
    graph.node.push(proto::NodeProto {
        input: vec![logits, "to_4d".into()],
        output: vec!["logits_4d".into()],
        name: Some("unsqueeze_logits".into()),
        op_type: Some("Reshape".into()),
        ..Default::default()
    });
    graph.output[0].name = Some("logits_4d".into());
    graph.output[0].r#type = None;
    model.encode_to_vec()
}

#[test]
fn logits_of_shape_n_classes_1_1_are_squeezed() {
    let flat = subprune::onnx::load(fixture("mnist_cnn.onnx")).unwrap();
    let four = subprune::onnx::load_bytes(Path::new("m4.onnx"), &mnist_with_4d_logits()).unwrap();
    // Calibration images with any labels: the two graphs must score them alike.
    let calib = subprune::npy::read_f32(fixture("mnist_calib_512.npy")).unwrap();
    let n = 64;
    let data = calib.data[..n * 28 * 28].to_vec();
    let images = F32Images::new(
        "calib",
        subprune::Tensor::new(vec![n, 1, 28, 28], data).unwrap(),
    )
    .unwrap();
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 10).collect();
    let labels = labels.as_slice();
    let score = |g: &subprune::ir::Graph| {
        let exec = subprune::exec::CpuExecutor::new(g).unwrap();
        evaluate(&exec, &images, labels, 16, &mut |_, _| {})
    };
    let want = score(&flat.graph).unwrap();
    let got = score(&four.graph).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (got.correct_top1, got.correct_top5),
        (want.correct_top1, want.correct_top5)
    );
}

#[test]
fn prune_summary_is_human_text_without_an_empty_evaluation() {
    let dir = std::env::temp_dir().join(format!("subprune-eval-output-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("pruned.onnx");
    let (ok, stdout, stderr) = subprune(&[
        "prune",
        &path("mnist_cnn.onnx"),
        "--calib",
        &path("mnist_calib_512.npy"),
        "--calib-images",
        "64",
        "--compression",
        "2",
        "--variant",
        "layer",
        "--out",
        out.to_str().unwrap(),
        "--backend",
        "cpu",
    ]);
    std::fs::remove_dir_all(&dir).ok();
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("budget compression 2×, allocation uniform"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("Compression(") && !stdout.contains("Uniform"),
        "{stdout}"
    );
    assert!(!stdout.contains("evaluation"), "{stdout}");
}
