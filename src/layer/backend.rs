//! The seam between the layer engine and the compute backends ([`crate::backend`] implements
//! it): what a backend is asked to do for one layer (accumulate statistics, keep a greedy state),
//! and the checks every backend applies to a statistics batch.

use super::stats::{Gram, RawGrams, StatsMatrix};
use super::unfolding::{ChannelLayout, Unfolding};
use crate::error::{Error, Result};
use crate::tensor::TensorView;

/// Relative tolerance under which a candidate's Schur-complement pivot counts as zero (the column
/// is numerically dependent on the selection), relative to the same column's diagonal in the
/// original Gram matrix. The statistics are accumulated in f32, so an exactly dependent column
/// shows a pivot around 1e-7 relative; 1e-6 keeps a margin above that. On small, ill-conditioned
/// conv instances the f32 noise can leave a dependent block a pivot above the tolerance: its gain
/// is then tiny (~1e-7 of `‖AW‖²`), not 0, and it still comes after every useful channel.
pub const DEFAULT_DEPENDENCE_TOL: f64 = 1e-6;

/// What a backend needs to start accumulating statistics for one layer.
#[derive(Clone, Copy, Debug)]
pub struct StatsSpec<'w> {
    /// The consumer's unfolding (shapes of one image, im2col geometry).
    pub unfolding: Unfolding,
    /// Whether batches come with a separate target `A` (asymmetric variant): then `BᵀA` and `AᵀA`
    /// are accumulated too, or `C0` and `‖AW‖²` directly when `weight` is given.
    pub with_target: bool,
    /// The consumer weight, when known before the first batch. With a target, a backend may then
    /// accumulate `C0 = Bᵀ(A·W)` and `‖AW‖²` directly instead of the `D × D` sums `BᵀA` and `AᵀA`
    /// (`2·D·m` instead of `1.5·D²` multiply-adds per unfolded row: a conv consumer has
    /// `m = C_out` outputs against `D = C_in·k²` columns). The [`RawGrams`] then hold `c0` and
    /// `total` and no `cross`/`target_gram`. It must be the weight later passed to
    /// [`StatsAccumulator::finish_with_weight`].
    pub weight: Option<ConsumerWeight<'w>>,
}

impl<'w> StatsSpec<'w> {
    /// A spec without a known weight (the sums are kept in Gram form).
    pub fn new(unfolding: Unfolding, with_target: bool) -> Self {
        Self {
            unfolding,
            with_target,
            weight: None,
        }
    }

    /// The same spec with the consumer weight known up front.
    pub fn with_weight(self, weight: &'w [f64], outputs: usize) -> Self {
        Self {
            weight: Some(ConsumerWeight { weight, outputs }),
            ..self
        }
    }
}

/// A consumer weight `W`, `D × outputs` row-major.
#[derive(Clone, Copy, Debug)]
pub struct ConsumerWeight<'w> {
    /// The entries, row-major.
    pub weight: &'w [f64],
    /// Columns `m` (the consumer's output channels).
    pub outputs: usize,
}

/// The target `A` of one statistics batch: in host memory, or on a GPU device (a tapped
/// activation of the GPU executor, as the inputs of [`StatsAccumulator::add_device_batch`]).
#[derive(Clone, Copy, Debug)]
pub enum TargetBatch<'t> {
    /// Row-major values in host memory.
    Host(TensorView<'t>),
    /// Row-major f32 values on a GPU device.
    Device(crate::gpu::DeviceTensor<'t>),
}

impl TargetBatch<'_> {
    /// The target's shape, batch first.
    pub fn shape(&self) -> &[usize] {
        match self {
            TargetBatch::Host(t) => t.shape,
            TargetBatch::Device(t) => t.shape(),
        }
    }
}

/// Accumulates Gram sums batch by batch; memory does not grow with the number of images.
pub trait StatsAccumulator {
    /// Adds one batch of consumer inputs `B`, shape `(n, C)` or `(n, C, H, W)`, and, when the spec
    /// asked for it, the matching targets `A` of the same shape.
    fn add_batch(&mut self, inputs: TensorView<'_>, target: Option<TensorView<'_>>) -> Result<()>;
    /// Adds one batch whose inputs `B` live on a GPU device (a tapped activation of the GPU
    /// executor, [`crate::exec::Activation::Device`]), with the targets `A` when the spec asked
    /// for them, on the host or on a device. The GPU backend copies what is on its own device
    /// into its buffers there (no host round trip; [`super::stats::StatsPhases::device_bytes`]
    /// counts them); the default, and the GPU backend on another device or with f16 inputs,
    /// reads them back and calls [`Self::add_batch`].
    ///
    /// Values that stay on the device are not checked for NaN or infinity batch by batch; a
    /// non-finite value still surfaces, as [`Error::NonFiniteStatistics`] when the statistics are
    /// finished.
    fn add_device_batch(
        &mut self,
        inputs: crate::gpu::DeviceTensor<'_>,
        target: Option<TargetBatch<'_>>,
    ) -> Result<()> {
        let host = inputs.read()?;
        match target {
            Some(TargetBatch::Device(t)) => {
                let target = t.read()?;
                self.add_batch(host.view(), Some(target.view()))
            }
            Some(TargetBatch::Host(t)) => self.add_batch(host.view(), Some(t)),
            None => self.add_batch(host.view(), None),
        }
    }
    /// Returns the sums, in f64.
    fn finish(self: Box<Self>) -> Result<RawGrams>;
    /// Returns the sums and, where the backend can compute them next to the sums, `C0 = X·W` and
    /// `‖AW‖²` for the consumer weight `weight` (`D × outputs`, row-major). The default leaves
    /// them to the host ([`super::stats::LayerStats::from_raw`] computes them in f64).
    fn finish_with_weight(self: Box<Self>, weight: &[f64], outputs: usize) -> Result<RawGrams> {
        let _ = (weight, outputs);
        self.finish()
    }
}

/// What a backend needs to start the greedy for one layer.
#[derive(Clone, Copy, Debug)]
pub struct GreedySpec<'a> {
    /// Channels and columns per channel.
    pub layout: ChannelLayout,
    /// Consumer outputs `m`.
    pub outputs: usize,
    /// `G = BᵀB`, `D × D` row-major (the GPU backend copies one left on its device without a
    /// round trip through the host).
    pub gram: &'a Gram,
    /// `C0 = XW`, `D × m` row-major (the GPU backend copies one left on its device without a
    /// round trip through the host).
    pub c0: &'a StatsMatrix,
    /// Relative pivot tolerance for numerical dependence (see [`DEFAULT_DEPENDENCE_TOL`]).
    pub dependence_tol: f64,
}

/// The greedy state of one layer: the Schur complement `E` and the residual correlation `R`.
pub trait GreedyState {
    /// Writes `gain(i | S) = trace(R_Iᵀ E_II⁺ R_I)` for every channel `i` into `gains`
    /// (length `channels`). Channels already selected get 0, and so do the column directions of a
    /// block whose pivot is under the dependence tolerance (they are dropped from the solve).
    fn score(&mut self, gains: &mut [f64]) -> Result<()>;
    /// Adds `channel` to the selection: `E ← E − E[:,J] E_JJ⁺ E[J,:]`,
    /// `R ← R − E[:,J] E_JJ⁺ R[J,:]`.
    fn select(&mut self, channel: usize) -> Result<()>;
}

/// A compute backend.
pub trait Backend {
    /// A human-readable name, e.g. `cpu (2 threads)` or the GPU adapter's name.
    fn name(&self) -> String;
    /// Starts accumulating statistics for one layer.
    fn stats_accumulator(&self, spec: StatsSpec<'_>) -> Result<Box<dyn StatsAccumulator + '_>>;
    /// Starts the greedy for one layer from its statistics.
    fn greedy_state(&self, spec: GreedySpec<'_>) -> Result<Box<dyn GreedyState + '_>>;
}

/// Checks one statistics batch against the spec: shape `(n, C[, H, W])`, finite values, and a
/// target of the same shape exactly when the spec asked for one. Returns the image count `n`.
pub(crate) fn check_stats_batch(
    unfolding: &Unfolding,
    with_target: bool,
    inputs: &TensorView<'_>,
    target: Option<&TensorView<'_>>,
) -> Result<usize> {
    let n = check_stats_shapes(unfolding, with_target, inputs.shape, target)?;
    inputs.check_finite("inputs")?;
    Ok(n)
}

/// [`check_stats_batch`] for inputs whose values are not on the host (only their `shape` is
/// checked; the target's values are).
pub(crate) fn check_stats_shapes(
    unfolding: &Unfolding,
    with_target: bool,
    shape: &[usize],
    target: Option<&TensorView<'_>>,
) -> Result<usize> {
    let n = unfolding.check_shape(shape, "inputs")?;
    match (target, with_target) {
        (Some(t), true) => {
            if t.shape != shape {
                return Err(Error::Shape(format!(
                    "target has shape {:?}, inputs have {:?}; they must match",
                    t.shape, shape
                )));
            }
            t.check_finite("target")?;
        }
        (None, false) => {}
        (Some(_), false) => {
            return Err(Error::InvalidArgument(
                "a target batch was given to statistics set up without a target".into(),
            ))
        }
        (None, true) => {
            return Err(Error::InvalidArgument(
                "statistics set up with a target need a target batch with every input batch".into(),
            ))
        }
    }
    Ok(n)
}
