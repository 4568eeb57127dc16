//! Streaming images through an [`Executor`] in batches: memory holds one batch of activations,
//! however many images there are. Image sources turn stored data (preprocessed f32, or raw u8
//! pixels normalised on the fly) into batches.

use super::{Executor, TapSink};
use crate::error::{Error, Result};
use crate::ir::ValueId;
use crate::tensor::{Tensor, TensorView};

/// A sequence of images of one shape, read a batch at a time.
pub trait ImageSource: Send + Sync {
    /// Number of images.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The shape of one image (e.g. `[C, H, W]`).
    fn image_shape(&self) -> &[usize];
    /// Writes images `first..first + out.len() / image_len` into `out` (row-major), checking
    /// that every value is finite.
    fn fill(&self, first: usize, out: &mut [f32]) -> Result<()>;
}

/// Preprocessed f32 images, `(N, …)`, held in memory: owned (`Vec<f32>`, [`F32Images::new`]) or
/// borrowed from the caller's buffer without a copy (`&[f32]`, [`F32Images::borrowed`]; the
/// Python bindings read NumPy arrays so).
pub struct F32Images<D = Vec<f32>> {
    name: String,
    shape: Vec<usize>,
    data: D,
}

impl F32Images {
    /// Wraps a tensor whose first axis is the image index; `name` names it in errors.
    pub fn new(name: impl Into<String>, tensor: Tensor) -> Result<Self> {
        Self::checked(name.into(), tensor.shape, tensor.data)
    }
}

impl<'a> F32Images<&'a [f32]> {
    /// Images of `shape` (first axis the image index) in `data`, row-major, borrowed.
    pub fn borrowed(name: impl Into<String>, shape: Vec<usize>, data: &'a [f32]) -> Result<Self> {
        let name = name.into();
        if crate::tensor::element_count(&shape)? != data.len() {
            return Err(Error::Shape(format!(
                "{name}: shape {shape:?} but {} values given",
                data.len()
            )));
        }
        Self::checked(name, shape, data)
    }
}

impl<D: AsRef<[f32]>> F32Images<D> {
    fn checked(name: String, shape: Vec<usize>, data: D) -> Result<Self> {
        if shape.is_empty() {
            return Err(Error::Shape(format!("{name}: a scalar holds no images")));
        }
        Ok(Self { name, shape, data })
    }
}

impl<D: AsRef<[f32]> + Send + Sync> ImageSource for F32Images<D> {
    fn len(&self) -> usize {
        self.shape[0]
    }

    fn image_shape(&self) -> &[usize] {
        &self.shape[1..]
    }

    fn fill(&self, first: usize, out: &mut [f32]) -> Result<()> {
        let per: usize = self.image_shape().iter().product();
        let src = &self.data.as_ref()[first * per..first * per + out.len()];
        if let Some(i) = src.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                tensor: self.name.clone(),
                index: first * per + i,
                value: src[i],
            });
        }
        out.copy_from_slice(src);
        Ok(())
    }
}

/// Raw u8 images `(N, C, …)` normalised per channel as `(x / 255 − mean[c]) / std[c]`, in f32 and
/// in that order (torchvision's `ToTensor` then `Normalize`). The pixels are owned (`Vec<u8>`) or
/// borrowed from the caller's buffer (`&[u8]`, a NumPy array in the Python bindings).
pub struct U8Images<D = Vec<u8>> {
    shape: Vec<usize>,
    data: D,
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl<D: AsRef<[u8]>> U8Images<D> {
    /// Wraps raw pixels of shape `(N, C, …)`; `mean` and `std` have one value or `C` values.
    pub fn new(shape: Vec<usize>, data: D, mean: &[f32], std: &[f32]) -> Result<Self> {
        if shape.len() < 2 {
            return Err(Error::Shape(format!(
                "u8 images of shape {shape:?}: expected (N, C, ...)"
            )));
        }
        if crate::tensor::element_count(&shape)? != data.as_ref().len() {
            return Err(Error::Shape(format!(
                "u8 images of shape {shape:?}: {} pixels given",
                data.as_ref().len()
            )));
        }
        let crate::images::Normalization { mean, std } =
            crate::images::Normalization::new(mean, std, shape[1])?;
        Ok(Self {
            shape,
            data,
            mean,
            std,
        })
    }
}

impl<D: AsRef<[u8]> + Send + Sync> ImageSource for U8Images<D> {
    fn len(&self) -> usize {
        self.shape[0]
    }

    fn image_shape(&self) -> &[usize] {
        &self.shape[1..]
    }

    fn fill(&self, first: usize, out: &mut [f32]) -> Result<()> {
        let c = self.shape[1];
        let plane: usize = self.shape[2..].iter().product();
        let per = c * plane;
        let src = &self.data.as_ref()[first * per..first * per + out.len()];
        for (i, (o, &p)) in out.iter_mut().zip(src).enumerate() {
            let ch = (i / plane.max(1)) % c;
            *o = (p as f32 / 255.0 - self.mean[ch]) / self.std[ch];
        }
        Ok(())
    }
}

/// Runs every image of `source` through `exec`, `batch` at a time. `on_tap` receives the tapped
/// values of each batch; `on_outputs(first image, outputs)` the graph outputs of each batch;
/// `progress(done, total)` is called after each batch.
pub fn forward_batches(
    exec: &dyn Executor,
    source: &dyn ImageSource,
    batch: usize,
    taps: &[ValueId],
    on_tap: &mut TapSink<'_>,
    on_outputs: &mut dyn FnMut(usize, &[Tensor]) -> Result<()>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    crate::layer::select::check_batch_images(batch)?;
    let plan = exec.plan();
    let model_image = plan.input_shape().0[1..]
        .iter()
        .map(|d| d.at(1))
        .collect::<Vec<_>>();
    if source.image_shape() != model_image.as_slice() {
        return Err(Error::Shape(format!(
            "the images are {:?} each; model input '{}' takes {} (N images of {:?})",
            source.image_shape(),
            plan.graph.values[plan.input].name,
            plan.input_shape(),
            model_image
        )));
    }
    let total = source.len();
    let per: usize = model_image.iter().product();
    let mut buffer = vec![0.0f32; batch.min(total) * per];
    let mut first = 0;
    while first < total {
        let count = batch.min(total - first);
        let data = &mut buffer[..count * per];
        source.fill(first, data)?;
        let mut shape = vec![count];
        shape.extend_from_slice(&model_image);
        let outputs = exec.run_batch(TensorView::new(&shape, data)?, taps, on_tap)?;
        on_outputs(first, &outputs)?;
        first += count;
        progress(first, total);
    }
    Ok(())
}

/// The first `len` images of another source (`subprune eval --limit`, `compare --calib-images`).
pub struct FirstImages<'a> {
    source: &'a dyn ImageSource,
    len: usize,
}

impl<'a> FirstImages<'a> {
    /// The first `len` images of `source` (all of them when it holds fewer).
    pub fn new(source: &'a dyn ImageSource, len: usize) -> Self {
        Self {
            source,
            len: len.min(source.len()),
        }
    }
}

impl ImageSource for FirstImages<'_> {
    fn len(&self) -> usize {
        self.len
    }
    fn image_shape(&self) -> &[usize] {
        self.source.image_shape()
    }
    fn fill(&self, first: usize, out: &mut [f32]) -> Result<()> {
        self.source.fill(first, out)
    }
}
