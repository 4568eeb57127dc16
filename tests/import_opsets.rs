//! Old opsets read into one form: the same network written at opsets 7, 9, 10 and 13 (Pad,
//! Clip, Slice, Split, Unsqueeze/Squeeze parameters as attributes, then as inputs; Upsample with
//! scales as an attribute, then an input, Resize-10's two inputs, Resize-13; BatchNormalization's
//! `spatial`; Dropout's `ratio`) loads into the same IR and runs to onnxruntime's outputs; what
//! cannot be read is refused with the opset or attribute named.

mod common;
use common::python;

use common::{gpu, relative_gap, run_in_batches};
use python::{node_of, refusal};
use subprune::exec::{CpuExecutor, Executor, GpuExecutor};
use subprune::npy;

#[test]
fn one_network_at_opsets_7_9_10_13_runs_to_onnxruntimes_outputs() {
    let Some(dir) = python::exported_models() else {
        return;
    };
    let x = npy::read_f32(dir.join("opset_x.npy")).unwrap();
    let mut outputs = Vec::new();
    let mut ops = Vec::new();
    for opset in [7, 9, 10, 13] {
        let model = subprune::onnx::load(dir.join(format!("opset{opset}.onnx"))).unwrap();
        assert_eq!(model.opset, opset);
        let want = npy::read_f32(dir.join(format!("opset{opset}_out0.npy"))).unwrap();
        let cpu = CpuExecutor::new(&model.graph).unwrap();
        let gpu = GpuExecutor::new(&model.graph, gpu()).unwrap();
        for exec in [&cpu as &dyn Executor, &gpu] {
            let got = run_in_batches(exec, &x, 2);
            let gap = relative_gap(&got, &want.data);
            assert!(gap < 1e-4, "opset {opset}, {}: {gap}", exec.name());
        }
        outputs.push(run_in_batches(&cpu, &x, 3));
        ops.push(
            model
                .graph
                .nodes
                .iter()
                .map(|n| n.op.clone())
                .collect::<Vec<_>>(),
        );
    }
    // One form: the same typed ops and the same numbers whatever the opset.
    for (opset, (o, y)) in [7, 9, 10].iter().zip(ops.iter().zip(&outputs)) {
        assert_eq!(o, &ops[3], "ops at opset {opset} and 13");
        assert_eq!(y, &outputs[3], "outputs at opset {opset} and 13");
    }
}

#[test]
fn opsets_older_than_7_and_unsupported_old_attributes_are_refused_by_name() {
    let Some(dir) = python::exported_models() else {
        return;
    };
    let old = dir.join("opset7.onnx");
    let err = refusal(&old, |m| m.opset_import[0].version = Some(6));
    assert!(
        err.contains("opset 6 is not supported (opsets 7–21 are)"),
        "{err}"
    );
    assert!(err.contains("version_converter"), "{err}");
    // BatchNormalization with per-position statistics (spatial = 0).
    let err = refusal(&old, |m| {
        node_of(m, "BatchNormalization")
            .attribute
            .iter_mut()
            .find(|a| a.name.as_deref() == Some("spatial"))
            .unwrap()
            .i = Some(0);
    });
    assert!(
        err.contains("BatchNormalization") && err.contains("spatial = 0"),
        "{err}"
    );
    // A Slice of opset < 10 without its ends.
    let err = refusal(&old, |m| {
        node_of(m, "Slice")
            .attribute
            .retain(|a| a.name.as_deref() != Some("ends"));
    });
    assert!(
        err.contains("Slice") && err.contains("starts and ends"),
        "{err}"
    );
}
