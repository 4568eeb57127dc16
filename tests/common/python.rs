//! The Python with `onnx`, `onnxruntime` and `numpy` that the reference checks use.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `SUBPRUNE_PYTHON` (set by `.ci/run`, which makes a virtual environment), else a `python3`
/// that imports onnx, onnxruntime and numpy; `None` (outside CI, where it fails) when there is
/// none, after saying so.
pub fn python() -> Option<PathBuf> {
    let imports = |py: &Path| {
        Command::new(py)
            .args(["-c", "import onnx, onnxruntime, numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if let Some(py) = std::env::var_os("SUBPRUNE_PYTHON") {
        let py = PathBuf::from(py);
        assert!(
            imports(&py),
            "SUBPRUNE_PYTHON={} lacks onnx/onnxruntime",
            py.display()
        );
        return Some(py);
    }
    let py = PathBuf::from("python3");
    if imports(&py) {
        return Some(py);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true and no Python with onnx and onnxruntime: set SUBPRUNE_PYTHON (.ci/run does)"
    );
    eprintln!("no Python with onnx and onnxruntime (set SUBPRUNE_PYTHON): models not checked");
    None
}

/// Runs `tests/SCRIPT` with `args` under `py`, or panics with its stderr.
pub fn run_script(py: &Path, script: &str, args: &[&std::ffi::OsStr]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let out = Command::new(py).arg(&path).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
