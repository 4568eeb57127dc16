//! Running the `subprune` binary the way a user does, and reading what it answered.

use std::path::Path;
use std::process::{Command, Output};

use subprune::{npy, Tensor};

/// The binary under test; `SUBPRUNE_TEST_BIN` points the tests at another build (used to check
/// that a test fails on the code before its fix).
pub fn bin() -> String {
    std::env::var("SUBPRUNE_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_subprune").into())
}

/// Runs the binary with `--backend backend` before `args` (its cache in the target folder).
pub fn subprune_on(backend: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .env("SUBPRUNE_CACHE_DIR", env!("CARGO_TARGET_TMPDIR"))
        .args(["--backend", backend])
        .args(args)
        .output()
        .expect("the subprune binary runs")
}

/// Runs the binary on the CPU backend: most tests compare with the CPU library and rely on its
/// exact zero gains; `--backend auto` would pick a hardware GPU where there is one.
pub fn subprune(args: &[&str]) -> Output {
    subprune_on("cpu", args)
}

/// Writes `t` as `dir/name` (float32 `.npy`); returns the path as a string, for argument lists.
pub fn write_npy(dir: &Path, name: &str, t: &Tensor) -> String {
    let path = dir.join(name);
    npy::write_f32(&path, t).unwrap();
    path.to_str().unwrap().to_string()
}

/// The run's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A failed run of `what`: a non-zero exit (exactly `code` when given), no panic, and stderr
/// holding every one of `needles`. Returns stderr.
pub fn assert_failure(out: &Output, code: Option<i32>, what: &str, needles: &[&str]) -> String {
    let err = stderr(out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{what} should fail; stdout {stdout}");
    if let Some(code) = code {
        assert_eq!(
            out.status.code(),
            Some(code),
            "{what}: expected exit {code}; stdout {stdout} stderr {err}"
        );
    }
    assert!(!err.contains("panicked"), "panic on {what}: {err}");
    for needle in needles {
        assert!(
            err.contains(needle),
            "stderr for {what} does not mention {needle:?}: {err}"
        );
    }
    err
}

/// Prunes the MNIST fixture with calibration images `calib` and `extra` arguments (CPU),
/// writing `dir/NAME.onnx` and `dir/NAME.json`; returns the report.
pub fn prune_report(dir: &Path, name: &str, calib: &str, extra: &[&str]) -> serde_json::Value {
    let model = super::fixture("mnist_cnn.onnx");
    let report = dir.join(format!("{name}.json"));
    let out = dir.join(format!("{name}.onnx"));
    let mut args = vec!["prune", model.to_str().unwrap(), "--calib", calib];
    args.extend_from_slice(&["--out", out.to_str().unwrap()]);
    args.extend_from_slice(&["--report", report.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let run = subprune(&args);
    assert!(run.status.success(), "prune {name}: {}", stderr(&run));
    serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap()
}
