//! The Python module `subprune._subprune`: thin bindings over the subprune library, called by the
//! Python package `subprune` (python/subprune/__init__.py), which resolves the arguments (paths,
//! `onnx.ModelProto`, labels, tqdm) and documents the API.
//!
//! Every entry point releases the GIL while the library works ([`Python::detach`]); progress
//! reports and Ctrl-C go through a [`hooks::Hook`], which stops the work between batches.
//! Library errors become Python exceptions by [`to_py`]: `subprune.GpuError` for device failures,
//! `MemoryError`, `OSError`, and `ValueError` for bad input, each with the CLI's message.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use numpy::{PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{
    PyFileNotFoundError, PyMemoryError, PyOSError, PyRuntimeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use subprune::backend::choice::{BackendChoice, GpuSetup, TileChoice};
use subprune::exec::run::{F32Images, ImageSource, U8Images};
use subprune::onnx::OnnxModel;
use subprune::Error;

mod hooks;
mod layer;
mod network;

create_exception!(
    subprune,
    GpuError,
    PyRuntimeError,
    "A GPU backend failure: no adapter, a lost device, a refused allocation, a shader error."
);

/// A library error as the Python exception a caller expects, with the library's message.
pub(crate) fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e.root() {
        Error::Gpu(_) => GpuError::new_err(msg),
        Error::Memory { .. } => PyMemoryError::new_err(msg),
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(msg)
        }
        Error::Io { .. } => PyOSError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

/// A model handed over by the Python package: an already pruned one, a path, or ONNX bytes.
pub(crate) enum ModelArg<'a> {
    Loaded(Arc<OnnxModel>),
    Path(PathBuf),
    Bytes(&'a [u8]),
}

impl<'a> ModelArg<'a> {
    /// Reads `obj`: a `PrunedModel`, a `str` path, or `bytes`.
    pub(crate) fn from_py(obj: &'a Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(p) = obj.extract::<PyRef<'_, network::PrunedModel>>() {
            return Ok(ModelArg::Loaded(p.model.clone()));
        }
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(ModelArg::Bytes(b.as_bytes()));
        }
        Ok(ModelArg::Path(obj.extract::<PathBuf>()?))
    }

    /// The model (read now, for a path or bytes), and its name for reports.
    pub(crate) fn load(self) -> subprune::Result<(Arc<OnnxModel>, String)> {
        Ok(match self {
            ModelArg::Loaded(m) => (m, "<pruned model>".into()),
            ModelArg::Path(p) => (Arc::new(subprune::onnx::load(&p)?), p.display().to_string()),
            ModelArg::Bytes(b) => (
                Arc::new(subprune::onnx::load_bytes(Path::new("<bytes>"), b)?),
                "<bytes>".into(),
            ),
        })
    }
}

/// A NumPy array of images (C-contiguous; the Python package makes it so), read in place.
pub(crate) enum ImagesArg<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    U8(PyReadonlyArrayDyn<'py, u8>),
}

impl<'py> ImagesArg<'py> {
    /// Reads `obj` as float32 or uint8 images; `what` names it in errors.
    pub(crate) fn from_py(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Self> {
        if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'py, f32>>() {
            return Ok(ImagesArg::F32(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'py, u8>>() {
            return Ok(ImagesArg::U8(a));
        }
        let dtype = obj
            .getattr("dtype")
            .map(|d| d.to_string())
            .unwrap_or_else(|_| obj.get_type().to_string());
        Err(PyValueError::new_err(format!(
            "{what}: dtype {dtype} is not image data (float32 or uint8 expected)"
        )))
    }

    /// The images as a source borrowing the array's memory (no copy). uint8 pixels are
    /// normalised as `(x / 255 − mean[c]) / std[c]`.
    pub(crate) fn source(
        &self,
        what: &str,
        mean: &[f32],
        std: &[f32],
    ) -> PyResult<Box<dyn ImageSource + '_>> {
        let contiguous = |e: numpy::AsSliceError| {
            PyValueError::new_err(format!("{what}: {e} (pass a C-contiguous array)"))
        };
        Ok(match self {
            ImagesArg::F32(a) => Box::new(
                F32Images::borrowed(what, a.shape().to_vec(), a.as_slice().map_err(contiguous)?)
                    .map_err(to_py)?,
            ),
            ImagesArg::U8(a) => Box::new(
                U8Images::new(
                    a.shape().to_vec(),
                    a.as_slice().map_err(contiguous)?,
                    mean,
                    std,
                )
                .map_err(to_py)?,
            ),
        })
    }

    /// The images copied into an owned source (for options that keep them, e.g. validation).
    pub(crate) fn owned(
        &self,
        what: &str,
        mean: &[f32],
        std: &[f32],
    ) -> PyResult<Arc<dyn ImageSource>> {
        let contiguous = |e: numpy::AsSliceError| {
            PyValueError::new_err(format!("{what}: {e} (pass a C-contiguous array)"))
        };
        Ok(match self {
            ImagesArg::F32(a) => {
                let data = a.as_slice().map_err(contiguous)?.to_vec();
                let tensor = subprune::Tensor::new(a.shape().to_vec(), data).map_err(to_py)?;
                Arc::new(F32Images::new(what, tensor).map_err(to_py)?)
            }
            ImagesArg::U8(a) => {
                let data = a.as_slice().map_err(contiguous)?.to_vec();
                Arc::new(U8Images::new(a.shape().to_vec(), data, mean, std).map_err(to_py)?)
            }
        })
    }
}

/// The backend choice and GPU setup of the `backend` and `adapter` options. The tiles are
/// autotuned on a first use of an adapter and cached, as the CLI does.
pub(crate) fn engines_setup(options: &Bound<'_, PyDict>) -> PyResult<(BackendChoice, GpuSetup)> {
    let backend = opt::<String>(options, "backend")?;
    let choice: BackendChoice = backend
        .as_deref()
        .unwrap_or("auto")
        .parse()
        .map_err(to_py)?;
    let setup = GpuSetup {
        adapter: opt(options, "adapter")?,
        f16_inputs: false,
        tiles: TileChoice::Autotune(subprune::backend::gpu::default_cache_path()),
    };
    Ok((choice, setup))
}

/// An optional entry of an options dict built by the Python package.
pub(crate) fn opt<'py, T: FromPyObjectOwned<'py>>(
    d: &Bound<'py, PyDict>,
    key: &str,
) -> PyResult<Option<T>> {
    match d.get_item(key)? {
        Some(v) if !v.is_none() => Ok(Some(v.extract().map_err(Into::into)?)),
        _ => Ok(None),
    }
}

/// The labels the Python package sends as the bytes of a `.npy` file, read by the library's
/// labels reader (the CLI's rules and messages: integer class indices, shape `(N,)` or `(N, 1)`).
pub(crate) fn labels_from_npy(bytes: &[u8], what: &str) -> PyResult<Vec<i64>> {
    subprune::npy::parse_labels(Path::new(what), bytes).map_err(to_py)
}

/// The module `subprune._subprune`.
#[pymodule]
fn _subprune(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("GpuError", m.py().get_type::<GpuError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<network::PrunedModel>()?;
    m.add_function(wrap_pyfunction!(network::prune, m)?)?;
    m.add_function(wrap_pyfunction!(network::evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(network::info, m)?)?;
    m.add_function(wrap_pyfunction!(layer::select, m)?)?;
    m.add_function(wrap_pyfunction!(layer::devices, m)?)?;
    m.add_function(wrap_pyfunction!(read_folder, m)?)?;
    Ok(())
}

/// What `read_folder` returns: the images `(N, C, H, W)` and their labels, if any.
type FolderImages<'py> = (Bound<'py, numpy::PyArrayDyn<f32>>, Option<Vec<usize>>);

/// `subprune.read_folder`: a folder of JPEG/PNG images as the CLI's `--calib DIR` reads it
/// (sorted paths, optional resize of the shorter side, centre crop to `height × width`,
/// `channels` 1 or 3, `(x/255 − mean)/std`), as a float32 `(N, C, H, W)` array and the labels
/// from class subfolders (or `None`).
#[pyfunction]
#[pyo3(signature = (path, channels, height, width, resize=None, mean=None, std=None))]
#[allow(clippy::too_many_arguments)]
fn read_folder<'py>(
    py: Python<'py>,
    path: PathBuf,
    channels: usize,
    height: usize,
    width: usize,
    resize: Option<usize>,
    mean: Option<Vec<f32>>,
    std: Option<Vec<f32>>,
) -> PyResult<FolderImages<'py>> {
    let options = subprune::images::ImageOptions {
        channels,
        size: [height, width],
        resize,
        mean: mean.unwrap_or_else(|| vec![0.0]),
        std: std.unwrap_or_else(|| vec![1.0]),
    };
    let set = py
        .detach(|| subprune::images::read_folder(&path, &options))
        .map_err(to_py)?;
    let shape = set.images.shape.clone();
    let array = numpy::PyArray1::from_vec(py, set.images.data).reshape(shape)?;
    Ok((array, set.labels))
}
