//! One layer: `select` (the CLI's `select` on NumPy arrays) and `devices`.

use numpy::{PyArray1, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use subprune::backend::choice::open_backend_with;
use subprune::backend::gpu::GpuBackend;
use subprune::{
    Budget, ConvOptions, CostPlan, Error, LayerProblem, SelectOptions, Stage, TensorView,
};

use crate::hooks::Hook;
use crate::{engines_setup, opt, to_py};

/// A C-contiguous float32 array as a tensor view (the Python package makes it so).
fn view<'a>(a: &'a PyReadonlyArrayDyn<'_, f32>, what: &str) -> PyResult<(Vec<usize>, &'a [f32])> {
    let data = a.as_slice().map_err(|e| {
        to_py(Error::InvalidArgument(format!(
            "{what}: {e} (pass a C-contiguous array)"
        )))
    })?;
    Ok((a.shape().to_vec(), data))
}

/// A `(h, w)` pair from the options dict (the Python package turns one number into two).
fn pair(options: &Bound<'_, PyDict>, key: &str, default: usize) -> PyResult<[usize; 2]> {
    Ok(opt(options, key)?.unwrap_or([default, default]))
}

/// `subprune.select`: returns `(dict as select --json, new weight's values, its shape)`.
#[pyfunction]
#[pyo3(signature = (inputs, weight, target, options, progress=None))]
#[allow(clippy::type_complexity)]
pub fn select<'py>(
    py: Python<'py>,
    inputs: PyReadonlyArrayDyn<'py, f32>,
    weight: PyReadonlyArrayDyn<'py, f32>,
    target: Option<PyReadonlyArrayDyn<'py, f32>>,
    options: &Bound<'py, PyDict>,
    progress: Option<Py<PyAny>>,
) -> PyResult<(String, Bound<'py, PyArray1<f32>>, Vec<usize>)> {
    let conv = ConvOptions {
        stride: pair(options, "stride", 1)?,
        padding: pair(options, "padding", 0)?,
        dilation: pair(options, "dilation", 1)?,
    };
    let budget = match (opt(options, "keep")?, opt(options, "keep_fraction")?) {
        (Some(k), _) => Budget::Keep(k),
        (None, Some(f)) => Budget::KeepFraction(f),
        (None, None) => Budget::KeepFraction(0.5),
    };
    let defaults = SelectOptions::default();
    let select_options = SelectOptions {
        budget,
        reweight: opt(options, "reweight")?.unwrap_or(defaults.reweight),
        ridge: opt(options, "ridge")?.unwrap_or(0.0),
        dependence_tol: opt(options, "dependence_tol")?.unwrap_or(defaults.dependence_tol),
        batch_images: opt(options, "batch_images")?.unwrap_or(defaults.batch_images),
    };
    let memory_limit = opt::<String>(options, "memory_limit")?
        .map(|t| {
            subprune::units::parse_bytes(&t)
                .map_err(|e| to_py(Error::InvalidArgument(format!("memory_limit: {e}"))))
        })
        .transpose()?;
    let (choice, setup) = engines_setup(options)?;
    let (input_shape, input_data) = view(&inputs, "inputs")?;
    let (weight_shape, weight_data) = view(&weight, "weight")?;
    let target = target.as_ref().map(|t| view(t, "target")).transpose()?;
    let hook = Hook::new(progress);
    let result = py.detach(|| {
        let inputs = TensorView::new(&input_shape, input_data)?;
        let weight = TensorView::new(&weight_shape, weight_data)?;
        let target = match &target {
            Some((shape, data)) => Some(TensorView::new(shape, data)?),
            None => None,
        };
        let problem = LayerProblem::new(inputs.shape, weight, Some(conv))?;
        let kept = select_options.check(problem.layout().channels)?;
        CostPlan::new(&problem, inputs.shape[0], target.is_some(), kept)?
            .check_memory(memory_limit)?;
        let backend = open_backend_with(choice, &setup)?.backend;
        let mut progress = |stage: Stage, done: usize, total: usize| {
            let name = match stage {
                Stage::Statistics => "statistics",
                Stage::Greedy => "greedy",
            };
            hook.report(name, done, total)
        };
        subprune::select(
            backend.as_ref(),
            &problem,
            inputs,
            target,
            &select_options,
            &mut progress,
        )
    });
    let sel = hook.finish(result)?;
    let json = sel.summary_json();
    let shape = sel.weight.shape.clone();
    Ok((
        json.to_string(),
        PyArray1::from_vec(py, sel.weight.data),
        shape,
    ))
}

/// `subprune.devices`: the GPU adapters wgpu sees, one line each.
#[pyfunction]
pub fn devices(py: Python<'_>) -> Vec<String> {
    py.detach(GpuBackend::list_adapters)
}
