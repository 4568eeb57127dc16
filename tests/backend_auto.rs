//! `--backend auto` does no GPU work it does not need (issue 24 item 13): arguments are checked
//! before any adapter is looked at, the kernels are autotuned only for a GPU backend that runs
//! (not for a software adapter that `auto` passes over), and the tile line is printed only when
//! the tiles were measured now.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::files::scratch;
use common::{bin, fixture};

fn auto(cache: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .env("SUBPRUNE_CACHE_DIR", cache)
        .args(["--backend", "auto"])
        .args(args)
        .output()
        .unwrap()
}

fn cache_files(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_missing_argument_is_reported_before_any_gpu_work() {
    let dir = scratch("auto-args");
    let cache = dir.join("cache");
    let model = fixture("mnist_cnn.onnx");
    let out = auto(&cache, &["prune", model.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--calib is required"), "{err}");
    assert!(
        !err.contains("backend:"),
        "an engine was opened first:\n{err}"
    );
    assert!(!err.contains("statistics kernels"), "{err}");
    assert!(cache_files(&cache).is_empty(), "{:?}", cache_files(&cache));
}

#[test]
fn auto_on_a_software_adapter_runs_on_the_cpu_without_autotuning() {
    let dir = scratch("auto-software");
    let cache = dir.join("cache");
    let out_model = dir.join("o.onnx");
    let model = fixture("mnist_cnn.onnx");
    let calib = fixture("mnist_calib_512.npy");
    let out = auto(
        &cache,
        &[
            "prune",
            model.to_str().unwrap(),
            "--calib",
            calib.to_str().unwrap(),
            "--calib-images",
            "16",
            "--out",
            out_model.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    if err.contains("only a software adapter") {
        // CI's case (lavapipe): the CPU runs, so nothing was tuned and nothing cached.
        assert!(err.contains("backend: cpu"), "{err}");
        assert!(!err.contains("statistics kernels"), "{err}");
        assert!(cache_files(&cache).is_empty(), "{:?}", cache_files(&cache));
    } else {
        println!("not a software-adapter-only machine: {err}");
    }
}
