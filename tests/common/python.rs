#![allow(dead_code)]
//! The Python with `onnx`, `onnxruntime` and `numpy` that tests use as a reference: found through
//! `SUBPRUNE_PYTHON` (set by `.ci/run`, which makes a virtual environment), else a `python3` that
//! imports them; without one the tests that need it say so and pass, except under `CI=true`,
//! where they fail. Also: the models of `tests/import_models.py`, and edits of them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python that has onnx and onnxruntime, or `None` (outside CI) when there is none.
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

/// Runs the test script `tests/NAME` with `args`, failing with its stderr.
pub fn run_script(py: &Path, name: &str, args: &[&std::ffi::OsStr]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name);
    let out = Command::new(py).arg(script).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "tests/{name} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The models of `tests/import_models.py` with their inputs and onnxruntime's outputs, written
/// once per test binary (`None` without a Python: see [`python`]).
pub fn exported_models() -> Option<&'static Path> {
    static DIR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let py = python()?;
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("exported-models-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        run_script(
            &py,
            "import_models.py",
            &["write".as_ref(), dir.as_os_str()],
        );
        Some(dir)
    })
    .as_deref()
}

/// The first node of op type `op` in `m`.
pub fn node_of<'a>(
    m: &'a mut subprune::onnx::proto::ModelProto,
    op: &str,
) -> &'a mut subprune::onnx::proto::NodeProto {
    let g = m.graph.as_mut().expect("a graph");
    g.node
        .iter_mut()
        .find(|n| n.op_type.as_deref() == Some(op))
        .unwrap_or_else(|| panic!("no {op} node"))
}

/// The error of loading the model at `path` after `edit`.
pub fn refusal(path: &Path, edit: impl Fn(&mut subprune::onnx::proto::ModelProto)) -> String {
    use prost::Message;
    let bytes = std::fs::read(path).unwrap();
    let mut m = subprune::onnx::proto::ModelProto::decode(bytes.as_slice()).unwrap();
    edit(&mut m);
    subprune::onnx::load_bytes(path, &m.encode_to_vec())
        .unwrap_err()
        .to_string()
}
