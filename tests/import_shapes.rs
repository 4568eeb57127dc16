//! Getting exported models into the IR: dynamic input sizes fixed by `--input-shape` /
//! `LoadOptions` or by the data, shape subgraphs and constant expressions folded at load, a
//! `Reshape` to `[1, -1]` of a batch-1 export run on larger batches, and a pruned model that keeps
//! its dynamic sizes. References: onnxruntime's outputs on the same models (`import_models.py`),
//! and the onnx checker plus onnxruntime at two sizes on the written model.

mod common;
use common::python;

use std::path::Path;

use common::files::{command, scratch, succeeded};
use common::{assert_failure, gpu, relative_gap, run_in_batches};
use subprune::exec::{CpuExecutor, Executor, GpuExecutor};
use subprune::onnx::{InputShape, LoadOptions};
use subprune::{npy, Tensor};

fn shapes(given: &str) -> LoadOptions {
    LoadOptions {
        input_shapes: vec![given.parse::<InputShape>().unwrap()],
        data_shape: None,
    }
}

/// The model's CPU and GPU outputs on `x`, each within 1e-4 of the largest of onnxruntime's
/// output `expected`.
fn assert_matches_onnxruntime(graph: &subprune::ir::Graph, x: &Tensor, expected: &Path) {
    let want = npy::read_f32(expected).unwrap();
    let cpu = CpuExecutor::new(graph).unwrap();
    let gpu = GpuExecutor::new(graph, gpu()).unwrap();
    for exec in [&cpu as &dyn Executor, &gpu] {
        let got = run_in_batches(exec, x, 8);
        let gap = relative_gap(&got, &want.data);
        assert!(gap < 1e-4, "{}: {} from onnxruntime", exec.name(), gap);
    }
}

#[test]
fn dynamic_height_and_width_run_at_two_sizes() {
    let Some(dir) = python::exported_models() else {
        return;
    };
    let model = dir.join("dynamic.onnx");
    let err = subprune::onnx::load(&model).unwrap_err().to_string();
    assert!(
        err.contains("'images'") && err.contains("--input-shape"),
        "{err}"
    );
    // Size from --input-shape, then from the data's shape.
    let a = npy::read_f32(dir.join("dynamic_a.npy")).unwrap();
    let m = subprune::onnx::load_with(&model, &shapes("images:1,3,12,12")).unwrap();
    let input = m.graph.inputs[0];
    assert_eq!(m.graph.values[input].shape.to_string(), "[N, 3, 12, 12]");
    assert_matches_onnxruntime(&m.graph, &a, &dir.join("dynamic_out0.npy"));
    let b = npy::read_f32(dir.join("dynamic_b.npy")).unwrap();
    let from_data = LoadOptions {
        input_shapes: vec![],
        data_shape: Some(b.shape.clone()),
    };
    let m = subprune::onnx::load_with(&model, &from_data).unwrap();
    assert_matches_onnxruntime(&m.graph, &b, &dir.join("dynamic_out1.npy"));
    // The shape subgraph is gone: the executors and the analysis see a Reshape of a constant.
    let kinds: Vec<&str> = m.graph.nodes.iter().map(|n| n.op.kind()).collect();
    assert!(!kinds.contains(&"Shape"), "{kinds:?}");
}

#[test]
fn shape_subgraphs_and_constant_expressions_fold_to_onnxruntimes_outputs() {
    let Some(dir) = python::exported_models() else {
        return;
    };
    let m = subprune::onnx::load(dir.join("folding.onnx")).unwrap();
    // Everything but the data path is a constant: Conv, the bias Add, Relu, four Reshapes (two
    // views, and Unsqueeze/Squeeze of data), Gemm, Relu and the Cast (an Identity).
    let computed: Vec<&str> = m
        .graph
        .nodes
        .iter()
        .map(|n| n.op.kind())
        .filter(|k| *k != "Constant")
        .collect();
    assert_eq!(
        computed,
        [
            "Conv", "Add", "Relu", "Reshape", "Reshape", "Gemm", "Reshape", "Relu", "Reshape",
            "Identity"
        ]
    );
    // The file fixes batch 1 (onnxruntime ran the images one by one); here all 4 run at once.
    let x = npy::read_f32(dir.join("folding_x.npy")).unwrap();
    assert_eq!(x.shape[0], 4);
    assert_matches_onnxruntime(&m.graph, &x, &dir.join("folding_out0.npy"));
}

#[test]
fn info_takes_input_shape_and_names_what_is_wrong() {
    let Some(dir) = python::exported_models() else {
        return;
    };
    let model = dir.join("dynamic.onnx");
    let model = model.to_str().unwrap();
    let info = |extra: &[&str]| {
        command()
            .arg("info")
            .arg(model)
            .args(extra)
            .output()
            .unwrap()
    };
    assert_failure(
        &info(&[]),
        Some(1),
        "dynamic info",
        &[
            "'images'",
            "dimensions 2 ('height'), 3 ('width')",
            "--input-shape images:1,3,H,W",
        ],
    );
    let out = info(&["--input-shape", "1,3,20,16"]);
    succeeded(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("input  images [N, 3, 20, 16]"), "{text}");
    let named = info(&["--input-shape", "images:1,3,20,16"]);
    succeeded(&named);
    // (flag value, exit code, what, what the message names)
    let refused: [(&str, i32, &str, &[&str]); 5] = [
        (
            "pixels:1,3,20,16",
            1,
            "unknown name",
            &["'pixels'", "images"],
        ),
        ("1,3,20", 1, "wrong rank", &["4 dimensions", "has 3"]),
        ("1,4,20,16", 1, "fixed dim", &["dimension 1 to 3", "says 4"]),
        ("1,3,x,16", 2, "not a number", &["1,3,x,16"]),
        ("1,3,0,16", 2, "zero", &["positive sizes"]),
    ];
    for (given, code, what, needles) in refused {
        assert_failure(&info(&["--input-shape", given]), Some(code), what, needles);
    }
}

/// `subprune prune --keep-fraction 0.5` of `model` with calibration images of `shape` (a fixed
/// pattern in [-1, 1)), written to `work/pruned.onnx`.
fn prune_half(model: &Path, shape: &[usize], work: &Path) -> std::path::PathBuf {
    let count = shape.iter().product::<usize>();
    let calib = Tensor::new(
        shape.to_vec(),
        (0..count)
            .map(|i| ((i * 7919) % 113) as f32 / 56.5 - 1.0)
            .collect(),
    )
    .unwrap();
    let calib = common::write_npy(work, "calib.npy", &calib);
    let out = work.join("pruned.onnx");
    let run = command()
        .arg("prune")
        .arg(model)
        .args(["--calib", &calib, "--keep-fraction", "0.5", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    succeeded(&run);
    out
}

#[test]
fn pruned_dynamic_model_keeps_its_dynamic_sizes() {
    let Some(py) = python::python() else { return };
    let Some(dir) = python::exported_models() else {
        return;
    };
    let work = scratch("import-dynamic-prune");
    // Calibration images at 12×12 fix the sizes (no --input-shape).
    let out = prune_half(&dir.join("dynamic.onnx"), &[24, 3, 12, 12], &work);
    let shown = python::run_script(
        &py,
        "import_models.py",
        &["dynamic".as_ref(), out.as_os_str()],
    );
    assert!(shown.contains("(1, 3, 17, 9) -> (1, 5)"), "{shown}");
    // Nothing left unused: the Gemm weight's Transpose, now a Constant, and its initializer go.
    python::run_script(&py, "import_models.py", &["tidy".as_ref(), out.as_os_str()]);
    // And it is smaller: the pruned model reloads with fewer parameters.
    let before = subprune::onnx::load_with(dir.join("dynamic.onnx"), &shapes("1,3,12,12")).unwrap();
    let after = subprune::onnx::load_with(&out, &shapes("1,3,12,12")).unwrap();
    assert!(after.graph.parameter_count() < before.graph.parameter_count());
}

#[test]
fn gather_and_expand_on_data_match_onnxruntime() {
    let Some(dir) = python::exported_models() else {
        return;
    };
    let m = subprune::onnx::load(dir.join("data_ops.onnx")).unwrap();
    let kinds: Vec<&str> = m.graph.nodes.iter().map(|n| n.op.kind()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "Gather").count(),
        4,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "Expand").count(),
        2,
        "{kinds:?}"
    );
    let x = npy::read_f32(dir.join("data_ops_x.npy")).unwrap();
    assert_matches_onnxruntime(&m.graph, &x, &dir.join("data_ops_out0.npy"));
}

#[test]
fn ops_that_only_fold_are_refused_on_data_by_name() {
    let Some(dir) = python::exported_models() else {
        return;
    };
    let err = python::refusal(&dir.join("data_ops.onnx"), |m| {
        python::node_of(m, "Relu").op_type = Some("Neg".into());
    });
    assert!(
        err.contains("'Neg' is supported only where its inputs are known at load"),
        "{err}"
    );
}

#[test]
fn pruned_batch_one_export_stays_batch_one_and_reloads() {
    let Some(py) = python::python() else { return };
    let Some(dir) = python::exported_models() else {
        return;
    };
    let work = scratch("import-batch-one-prune");
    let out = prune_half(&dir.join("batch_one.onnx"), &[16, 3, 8, 8], &work);
    // The file's batch of 1 is written back as it was (a symbolic batch would declare batches
    // that the head's Reshape [1, 4, -1] cannot hold), so the pruned model reloads with the same
    // reading of that Reshape and runs three images at once as onnxruntime runs them one by one.
    let want = work.join("want.npy");
    let x = dir.join("batch_one_x.npy");
    let shown = python::run_script(
        &py,
        "import_models.py",
        &[
            "outputs".as_ref(),
            out.as_os_str(),
            x.as_os_str(),
            want.as_os_str(),
        ],
    );
    assert_eq!(shown.trim(), "batch 1");
    let m = subprune::onnx::load(&out).unwrap_or_else(|e| panic!("the pruned model: {e}"));
    let before = subprune::onnx::load(dir.join("batch_one.onnx")).unwrap();
    assert!(m.graph.parameter_count() < before.graph.parameter_count());
    assert_matches_onnxruntime(&m.graph, &npy::read_f32(&x).unwrap(), &want);
    python::run_script(&py, "import_models.py", &["tidy".as_ref(), out.as_os_str()]);
}
