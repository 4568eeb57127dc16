//! Every output path of every command that writes is checked, before any work, against every
//! input (the model, its external data files, every `.npy`) and against the other outputs, by
//! file identity: a clash is refused naming both, and nothing is written or replaced.

mod common;

use std::path::{Path, PathBuf};

use common::files::{command, copy_fixture, refused, scratch};
use subprune::onnx::{ExternalData, SaveOptions};

/// The bytes of every file in `dir`, to show that a refused run changed none.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

/// Runs subprune in `dir` with `args`, which must be refused with a message holding `needles`
/// and "same file", leaving every file of `dir` as it was.
fn refused_unchanged(dir: &Path, args: &[&str], needles: &[&str]) {
    let before = snapshot(dir);
    let out = command().current_dir(dir).args(args).output().unwrap();
    let err = refused(&out, needles);
    assert!(err.contains("same file"), "{args:?}: {err}");
    assert_eq!(snapshot(dir), before, "{args:?} changed a file");
}

/// A fresh folder for the test `tag` holding mnist_cnn, and mnist_cnn written with its weights in
/// an external data file (`ext.onnx`, `ext.onnx.data`), beside the calibration and test files.
fn inputs_in(tag: &str) -> PathBuf {
    let dir = &scratch(tag);
    for f in [
        "mnist_cnn.onnx",
        "mnist_calib_512.npy",
        "mnist_test_u8.npy",
        "mnist_test_labels.npy",
    ] {
        copy_fixture(f, dir);
    }
    let model = subprune::onnx::load(dir.join("mnist_cnn.onnx")).unwrap();
    let options = SaveOptions {
        external_data: ExternalData::File {
            location: "ext.onnx.data".into(),
            threshold: 1024,
        },
    };
    subprune::onnx::save(&model, dir.join("ext.onnx"), &options).unwrap();
    dir.to_path_buf()
}

#[test]
fn prune_outputs_that_are_inputs_or_each_other_are_refused_before_any_work() {
    let dir = inputs_in("prune-clash");
    std::fs::hard_link(dir.join("mnist_calib_512.npy"), dir.join("calib-link.npy")).unwrap();
    let data = "--data mnist_test_u8.npy --labels mnist_test_labels.npy";
    // (the model and the outputs, the names the message must hold)
    let cases: &[(String, &[&str])] = &[
        (
            "mnist_cnn.onnx --out mnist_calib_512.npy".into(),
            &["--out", "--calib"],
        ),
        (
            format!("mnist_cnn.onnx --out mnist_test_u8.npy {data}"),
            &["--out", "--data"],
        ),
        (
            format!("mnist_cnn.onnx --out o.onnx {data} --report mnist_test_labels.npy"),
            &["--report", "--labels"],
        ),
        (
            "mnist_cnn.onnx --out o.onnx --report mnist_cnn.onnx".into(),
            &["--report", "model"],
        ),
        (
            "mnist_cnn.onnx --out o.onnx --report calib-link.npy".into(),
            &["--report", "--calib"],
        ),
        // Two spellings of one new file.
        (
            "mnist_cnn.onnx --out o.onnx --report ./o.onnx".into(),
            &["--report", "--out"],
        ),
        // The input model's external data file.
        (
            "ext.onnx --out o.onnx --report ext.onnx.data".into(),
            &["--report", "external data"],
        ),
    ];
    for (args, names) in cases {
        let mut all = vec![
            "prune",
            "--calib",
            "mnist_calib_512.npy",
            "--calib-images",
            "64",
        ];
        all.extend(args.split(' '));
        refused_unchanged(&dir, &all, names);
    }
}

#[test]
fn the_data_file_written_beside_the_output_is_checked_against_the_inputs() {
    let dir = inputs_in("prune-data-file");
    // The pruned model of ext.onnx goes to o.onnx with its weights in o.onnx.data: here the
    // calibration file.
    std::fs::rename(dir.join("mnist_calib_512.npy"), dir.join("o.onnx.data")).unwrap();
    let args = "prune ext.onnx --calib o.onnx.data --calib-images 64 --out o.onnx";
    let args: Vec<&str> = args.split(' ').collect();
    refused_unchanged(&dir, &args, &["o.onnx.data", "--calib"]);
}

#[test]
fn compare_outputs_that_are_inputs_are_refused() {
    let dir = inputs_in("compare-clash");
    // --out c writes c.csv and c.svg; c.csv is the validation images.
    std::fs::copy(dir.join("mnist_test_u8.npy"), dir.join("c.csv")).unwrap();
    let args = "compare mnist_cnn.onnx --calib mnist_calib_512.npy --calib-images 64 \
        --data mnist_test_u8.npy --labels mnist_test_labels.npy --budget accuracy \
        --val c.csv --val-labels mnist_test_labels.npy \
        --methods greedy --no-asym --compressions 2 --seeds 1 --out c";
    let args: Vec<&str> = args.split_whitespace().collect();
    refused_unchanged(&dir, &args, &["c.csv", "--val"]);
}
