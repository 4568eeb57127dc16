//! Running the IR forward: a [`Plan`] (node order, when each activation can be freed), an
//! [`Executor`] that runs one batch of a plan on a backend ([`CpuExecutor`] here; a GPU executor
//! goes behind the same trait), and drivers that stream any number of images through it in
//! batches of bounded size ([`run`]), handing chosen activations to a consumer batch by batch
//! (taps), and score classifiers ([`eval`]).
//!
//! ```no_run
//! use subprune::exec::{eval::evaluate, run::{F32Images, ImageSource}, CpuExecutor};
//! let model = subprune::onnx::load("mnist_cnn.onnx")?;
//! let exec = CpuExecutor::new(&model.graph)?;
//! let images = F32Images::new("calib", subprune::npy::read_f32("calib.npy")?)?;
//! let labels = vec![0i64; images.len()];
//! let report = evaluate(&exec, &images, &labels, 64, &mut |_, _| {})?;
//! println!("top-1 {}/{}", report.correct_top1, report.images);
//! # Ok::<(), subprune::Error>(())
//! ```

pub mod cpu;
pub mod eval;
pub mod gpu;
pub mod kernels;
pub mod kernels_nchw;
pub mod plan;
pub mod run;

pub use cpu::CpuExecutor;
pub use gpu::{DeviceTensor, GpuExecutor};
pub use plan::Plan;

use crate::error::Result;
use crate::gpu::OwnedDeviceTensor;
use crate::ir::ValueId;
use crate::tensor::{Tensor, TensorView};

/// An activation handed to a tap consumer: host memory on the CPU executor, device memory on the
/// GPU executor (so that a consumer on the same device reads it without a host round trip).
#[non_exhaustive]
#[derive(Clone, Copy, Debug)]
pub enum Activation<'a> {
    /// A row-major tensor in host memory, batch first.
    Host(TensorView<'a>),
    /// A row-major tensor in a buffer of the GPU executor's device, batch first.
    Device(DeviceTensor<'a>),
}

impl<'a> Activation<'a> {
    /// The tensor in host memory, if it is there.
    pub fn host(&self) -> Option<TensorView<'a>> {
        match self {
            Activation::Host(v) => Some(*v),
            Activation::Device(_) => None,
        }
    }

    /// The tensor on the device, if it is there.
    pub fn device(&self) -> Option<DeviceTensor<'a>> {
        match self {
            Activation::Host(_) => None,
            Activation::Device(d) => Some(*d),
        }
    }

    /// The tensor's shape, batch first.
    pub fn shape(&self) -> &'a [usize] {
        match self {
            Activation::Host(v) => v.shape,
            Activation::Device(d) => d.shape(),
        }
    }

    /// A host copy of the tensor (a readback from the device for [`Activation::Device`]).
    pub fn to_host(&self) -> Result<Tensor> {
        match self {
            Activation::Host(v) => Tensor::new(v.shape.to_vec(), v.data.to_vec()),
            Activation::Device(d) => d.read(),
        }
    }
}

/// Receives tapped activations: `(value, activation of this batch)`, in node order.
pub type TapSink<'a> = dyn FnMut(ValueId, Activation<'_>) -> Result<()> + 'a;

/// Runs one batch of a model's forward pass on some backend.
pub trait Executor: Send + Sync {
    /// The backend's name, for reports (`cpu`, `gpu (adapter)`).
    fn name(&self) -> String;

    /// The plan this executor runs (graph inputs, outputs, node order).
    fn plan(&self) -> &Plan;

    /// Runs one batch: `input` holds `N` images in the graph input's shape (batch first). Each
    /// value in `taps` is handed to `on_tap` as soon as it is computed (a graph input right at the
    /// start). Returns the graph outputs, batch first.
    fn run_batch(
        &self,
        input: TensorView<'_>,
        taps: &[ValueId],
        on_tap: &mut TapSink<'_>,
    ) -> Result<Vec<Tensor>>;

    /// [`Executor::run_batch`] from an input on the host or on a device. The GPU executor reads
    /// a device input on its own device without a host round trip (the sequential pruning
    /// variants pass it the calibration images uploaded once, or activations cached on the
    /// device); the default reads a device input back to the host.
    fn run_batch_on(
        &self,
        input: Activation<'_>,
        taps: &[ValueId],
        on_tap: &mut TapSink<'_>,
    ) -> Result<Vec<Tensor>> {
        match input {
            Activation::Host(v) => self.run_batch(v, taps, on_tap),
            Activation::Device(d) => self.run_batch(d.read()?.view(), taps, on_tap),
        }
    }

    /// [`Executor::run_batch_on`] for the taps alone: the graph outputs are not read back (the
    /// GPU executor leaves them on its device; the default discards them).
    fn run_batch_taps(
        &self,
        input: Activation<'_>,
        taps: &[ValueId],
        on_tap: &mut TapSink<'_>,
    ) -> Result<()> {
        self.run_batch_on(input, taps, on_tap).map(drop)
    }

    /// A copy of `input` on the executor's device, to be passed to
    /// [`Executor::run_batch_on`] any number of times without uploading it again; `None` for an
    /// executor without a device (the CPU one).
    fn upload(&self, input: TensorView<'_>) -> Result<Option<OwnedDeviceTensor>> {
        let _ = input;
        Ok(None)
    }
}

/// An executor for `graph`: the GPU executor on `gpu` when there is one (a GPU chosen by
/// [`crate::backend::choice::choose_gpu`]), else the CPU executor.
pub fn executor_on(
    gpu: Option<&crate::backend::gpu::GpuBackend>,
    graph: &crate::ir::Graph,
) -> Result<Box<dyn Executor>> {
    Ok(match gpu {
        Some(gpu) => Box::new(GpuExecutor::new(graph, gpu)?),
        None => Box::new(CpuExecutor::new(graph)?),
    })
}
