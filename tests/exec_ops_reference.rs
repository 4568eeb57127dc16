//! The compute ops exported models use (Split, Transpose, Resize in every coordinate and
//! rounding mode, Sum/Max/Min, ConvTranspose, the reductions, GlobalMaxPool, LRN, Tanh, Exp,
//! Softplus, Sqrt, Erf, Pow, pools with `ceil_mode`), each on both executors against
//! onnxruntime: `tests/ops_reference.py` writes small models with random inputs of awkward sizes
//! and onnxruntime's outputs; every output must be within 1e-4 of the largest |value|.

mod common;

use std::path::Path;

use common::python::{python, run_script};
use common::{gpu, temp_dir};
use subprune::exec::{CpuExecutor, Executor, GpuExecutor};
use subprune::npy::read_f32;

/// Largest allowed gap, relative to the largest |value| of the reference.
const TOLERANCE: f32 = 1e-4;

/// Every output of `exec` on case `name` of `dir` against onnxruntime's: the first mismatch.
fn matches_onnxruntime(exec: &dyn Executor, dir: &Path, name: &str) -> Result<(), String> {
    let on = exec.name();
    let input = read_f32(dir.join(format!("{name}.in.npy"))).unwrap();
    let outputs = exec
        .run_batch(input.view(), &[], &mut |_, _| Ok(()))
        .map_err(|e| format!("{name} on {on}: {e}"))?;
    for (k, ours) in outputs.iter().enumerate() {
        let want = read_f32(dir.join(format!("{name}.out{k}.npy"))).unwrap();
        if ours.shape != want.shape {
            return Err(format!(
                "{name} output {k} on {on}: shape {:?}, onnxruntime {:?}",
                ours.shape, want.shape
            ));
        }
        let scale = want
            .data
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()))
            .max(1e-6);
        for (i, (a, b)) in ours.data.iter().zip(&want.data).enumerate() {
            // Written so that a NaN fails.
            let close = (a - b).abs() <= TOLERANCE * scale;
            if !close {
                return Err(format!(
                    "{name} output {k} on {on}: element {i}: ours {a}, onnxruntime {b} (scale {scale})"
                ));
            }
        }
    }
    Ok(())
}

/// Every case on both executors; all mismatches in one message.
#[test]
fn compute_ops_match_onnxruntime_on_both_executors() {
    let Some(py) = python() else { return };
    let dir = temp_dir("ops-reference");
    run_script(&py, "ops_reference.py", &[dir.as_os_str()]);
    let cases = std::fs::read_to_string(dir.join("cases.txt")).unwrap();
    let names: Vec<&str> = cases.lines().filter(|l| !l.is_empty()).collect();
    assert!(names.len() >= 50, "only {} cases", names.len());
    let mut failures = Vec::new();
    for name in names {
        let checked = subprune::onnx::load(dir.join(format!("{name}.onnx")))
            .map_err(|e| format!("{name}: {e}"))
            .and_then(|model| {
                let cpu = CpuExecutor::new(&model.graph).map_err(|e| format!("{name}: {e}"));
                let gpu = GpuExecutor::new(&model.graph, gpu()).map_err(|e| format!("{name}: {e}"));
                let cpu = cpu.and_then(|c| matches_onnxruntime(&c, &dir, name));
                let gpu = gpu.and_then(|g| matches_onnxruntime(&g, &dir, name));
                cpu.and(gpu)
            });
        failures.extend(checked.err());
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
