//! Whole networks: `prune` (the CLI's `prune`, returning the model in memory), `evaluate` (`eval
//! --json`) and `info` (`info --json`), and the pruned model object.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use subprune::backend::choice::{choose_gpu, BackendChoice, GpuSetup};
use subprune::exec::run::FirstImages;
use subprune::onnx::{OnnxModel, SaveOptions};
use subprune::prune::budget::{Allocation, Target};
use subprune::prune::{prune_with, Event, ModelBudget, PruneOptions, ValidationSet};
use subprune::{Backend, CpuBackend, Error, GpuBackend};

use crate::hooks::{Checked, Hook};
use crate::{engines_setup, labels_from_npy, opt, to_py, ImagesArg, ModelArg};

/// A pruned model, held in memory (`subprune.PrunedModel` wraps it).
#[pyclass(module = "subprune._subprune", frozen)]
pub struct PrunedModel {
    pub(crate) model: Arc<OnnxModel>,
    report_json: String,
}

#[pymethods]
impl PrunedModel {
    /// Writes the model to `path` atomically (a temporary file, then a rename), with external
    /// data beside it when the input model had some; never over the files it was read from.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let model = &self.model;
        py.detach(|| subprune::onnx::save(model, &path, &SaveOptions::like_input(model, &path)))
            .map_err(to_py)
    }

    /// The model as ONNX bytes, every tensor inside.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let model = &self.model;
        let bytes = py
            .detach(|| subprune::onnx::to_bytes(model, std::path::Path::new("<pruned model>")))
            .map_err(to_py)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The report as JSON (the CLI's `--report`, without the test-set accuracies).
    #[getter]
    fn report_json(&self) -> &str {
        &self.report_json
    }
}

/// Runs `job` on the GPU `choice` names (or the CPU); under `auto`, a GPU failure in the middle
/// of the work runs it again on the CPU, as the CLI does.
fn on_engines<T>(
    choice: BackendChoice,
    setup: &GpuSetup,
    mut job: impl FnMut(Option<&GpuBackend>) -> subprune::Result<T>,
) -> subprune::Result<T> {
    let chosen = choose_gpu(choice, setup)?;
    let result = job(chosen.gpu.as_ref());
    match &result {
        Err(e) if chosen.gpu.is_some() && choice == BackendChoice::Auto => {
            if let Error::Gpu(_) = e.root() {
                return job(None);
            }
            result
        }
        _ => result,
    }
}

/// The `mean` and `std` options (uint8 images only; none: `x / 255`).
fn normalisation(options: &Bound<'_, PyDict>) -> PyResult<(Vec<f32>, Vec<f32>)> {
    let mean: Option<Vec<f32>> = opt(options, "mean")?;
    let std: Option<Vec<f32>> = opt(options, "std")?;
    Ok((mean.unwrap_or(vec![0.0]), std.unwrap_or(vec![1.0])))
}

/// The whole-model target of the options, checked before any work.
fn model_budget(
    options: &Bound<'_, PyDict>,
    validation: Option<ValidationSet>,
) -> PyResult<Option<ModelBudget>> {
    let allocation: Allocation = opt::<String>(options, "budget")?
        .as_deref()
        .unwrap_or("uniform")
        .parse()
        .map_err(to_py)?;
    let target = match (
        opt::<f64>(options, "compression")?,
        opt::<f64>(options, "target_flops")?,
    ) {
        (Some(r), _) => Target::Compression(r),
        (None, Some(f)) => Target::Flops(f),
        (None, None) => return Ok(None),
    };
    target.check().map_err(to_py)?;
    Ok(Some(ModelBudget {
        target,
        allocation,
        validation,
    }))
}

/// The library's prune options from the options dict of `subprune.prune`.
fn prune_options(
    options: &Bound<'_, PyDict>,
    validation: Option<ValidationSet>,
) -> PyResult<PruneOptions> {
    let defaults = PruneOptions::default();
    let bytes = |key: &str| -> PyResult<Option<u64>> {
        opt::<String>(options, key)?
            .map(|t| {
                subprune::units::parse_bytes(&t)
                    .map_err(|e| to_py(Error::InvalidArgument(format!("{key}: {e}"))))
            })
            .transpose()
    };
    Ok(PruneOptions {
        variant: opt::<String>(options, "variant")?
            .map_or(Ok(defaults.variant), |s| s.parse())
            .map_err(to_py)?,
        method: opt::<String>(options, "method")?
            .map_or(Ok(defaults.method), |s| s.parse())
            .map_err(to_py)?,
        seed: opt(options, "seed")?.unwrap_or(defaults.seed),
        reweight: opt(options, "reweight")?.unwrap_or(defaults.reweight),
        keep_fraction: opt(options, "keep_fraction")?.unwrap_or(defaults.keep_fraction),
        keep: opt(options, "keep")?.unwrap_or_default(),
        skip: opt(options, "skip")?.unwrap_or_default(),
        groups: opt::<String>(options, "groups")?
            .map_or(Ok(defaults.groups), |s| s.parse())
            .map_err(to_py)?,
        ridge: opt(options, "ridge")?.unwrap_or(defaults.ridge),
        batch_images: opt(options, "batch")?.unwrap_or(defaults.batch_images),
        memory_budget: bytes("memory_budget")?.unwrap_or(defaults.memory_budget),
        memory_limit: bytes("memory_limit")?,
        budget: model_budget(options, validation)?,
        ..defaults
    })
}

/// `subprune.prune`: see python/subprune/__init__.py for the arguments.
#[pyfunction]
#[pyo3(signature = (model, calib, options, progress=None))]
pub fn prune(
    py: Python<'_>,
    model: &Bound<'_, PyAny>,
    calib: &Bound<'_, PyAny>,
    options: &Bound<'_, PyDict>,
    progress: Option<Py<PyAny>>,
) -> PyResult<PrunedModel> {
    let (mean, std) = normalisation(options)?;
    let validation = match options.get_item("val_images")? {
        Some(v) if !v.is_none() => {
            let labels: Vec<u8> = opt(options, "val_labels")?.unwrap_or_default();
            Some(ValidationSet {
                images: ImagesArg::from_py(&v, "val_images")?.owned("val_images", &mean, &std)?,
                labels: labels_from_npy(&labels, "val_labels")?.into(),
            })
        }
        _ => None,
    };
    let prune_options = prune_options(options, validation)?;
    let (choice, setup) = engines_setup(options)?;
    let calib_images: Option<usize> = opt(options, "calib_images")?;
    let calib = ImagesArg::from_py(calib, "calib")?;
    let source = calib.source("calib", &mean, &std)?;
    let n = match calib_images {
        Some(0) => {
            return Err(to_py(Error::InvalidArgument(
                "calib_images must be ≥ 1".into(),
            )))
        }
        Some(n) if n > source.len() => {
            return Err(to_py(Error::InvalidArgument(format!(
                "calib_images={n}: calib holds only {} images",
                source.len()
            ))))
        }
        Some(n) => n,
        None => source.len(),
    };
    let source = FirstImages::new(source.as_ref(), n);
    let (pruned, name) = with_model(py, model, progress, |model, name, hook| {
        // The stage names: `layers`, then `NAME: forward + statistics` and `NAME: greedy`.
        let mut layer = String::new();
        let mut report = |e: Event<'_>| {
            let (stage, done, total) = match e {
                Event::Layer {
                    index,
                    layers,
                    name,
                } => {
                    layer = name.to_string();
                    ("layers".to_string(), index, layers)
                }
                Event::Forward { done, total } => {
                    (format!("{layer}: forward + statistics"), done, total)
                }
                Event::Greedy { done, total } => (format!("{layer}: greedy"), done, total),
            };
            hook.report(&stage, done, total)
        };
        let pruned = on_engines(choice, &setup, |gpu| {
            let backend: Box<dyn Backend> = match gpu {
                Some(g) => Box::new(g.clone()),
                None => Box::new(CpuBackend::new()),
            };
            let factory = |g: &subprune::ir::Graph| Checked::on(gpu, g, hook);
            prune_with(
                &model,
                &source,
                &prune_options,
                backend.as_ref(),
                &factory,
                &mut report,
            )
        })?;
        let layers = pruned.report.layers.len();
        hook.report("layers", layers, layers);
        Ok((pruned, name))
    })?;
    let mut report = serde_json::to_value(&pruned.report).map_err(json_error)?;
    report["model"] = name.into();
    report["budget"] = serde_json::to_value(&pruned.budget).map_err(json_error)?;
    Ok(PrunedModel {
        model: Arc::new(pruned.model),
        report_json: report.to_string(),
    })
}

/// Runs `job` with the GIL released on the model `model` names (read there) and its name, with
/// a hook for `progress`; a Python exception the hook kept wins over the job's result.
fn with_model<T: Send>(
    py: Python<'_>,
    model: &Bound<'_, PyAny>,
    progress: Option<Py<PyAny>>,
    job: impl FnOnce(Arc<OnnxModel>, String, &Arc<Hook>) -> subprune::Result<T> + Send,
) -> PyResult<T> {
    let model = ModelArg::from_py(model)?;
    let hook = Hook::new(progress);
    let result = py.detach(|| {
        let (model, name) = model.load()?;
        job(model, name, &hook)
    });
    hook.finish(result)
}

fn json_error(e: serde_json::Error) -> PyErr {
    PyRuntimeError::new_err(format!("encoding the report as JSON: {e}"))
}

/// `subprune.evaluate`: top-1/top-5 of a classifier, as `subprune eval --json` (a JSON string).
#[pyfunction]
#[pyo3(signature = (model, images, labels_npy, options, progress=None))]
pub fn evaluate(
    py: Python<'_>,
    model: &Bound<'_, PyAny>,
    images: &Bound<'_, PyAny>,
    labels_npy: &[u8],
    options: &Bound<'_, PyDict>,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    let (mean, std) = normalisation(options)?;
    let batch: usize = opt(options, "batch")?.unwrap_or(64);
    let (choice, setup) = engines_setup(options)?;
    let mut labels = labels_from_npy(labels_npy, "labels")?;
    let images = ImagesArg::from_py(images, "images")?;
    let all = images.source("images", &mean, &std)?;
    let n = match opt::<usize>(options, "limit")? {
        Some(n) if n < all.len() => {
            labels.truncate(n);
            n
        }
        _ => all.len(),
    };
    let source = FirstImages::new(all.as_ref(), n);
    let report = with_model(py, model, progress, |model, _, hook| {
        on_engines(choice, &setup, |gpu| {
            let exec = Checked::on(gpu, &model.graph, hook)?;
            let mut progress = |d, t| hook.report("eval", d, t);
            subprune::exec::eval::evaluate(exec.as_ref(), &source, &labels, batch, &mut progress)
        })
    })?;
    serde_json::to_string(&report).map_err(json_error)
}

/// `subprune.info`: what `subprune info --json` prints (a JSON string).
#[pyfunction]
pub fn info(py: Python<'_>, model: &Bound<'_, PyAny>) -> PyResult<String> {
    let summary = with_model(py, model, None, |model, _, _| {
        Ok(subprune::analysis::summary::summarize(&model.graph))
    })?;
    serde_json::to_string(&summary).map_err(json_error)
}
