//! # subprune
//!
//! Data-efficient structured pruning of convolutional networks by weakly submodular greedy channel
//! selection with optimal reweighting of the next layer (El Halabi, Srinivas, Lacoste-Julien,
//! NeurIPS 2022). See `docs/ALGORITHM.md` in the repository for the method.
//!
//! Data flows one way: consumer inputs → [`stats`] (Gram statistics, on a [`Backend`]) →
//! [`greedy`] (selection order, error curve) → [`greedy::reweight`] (new consumer weights).
//! Whole ONNX networks: [`onnx`] → [`ir`] → [`analysis::channels`] (which layers can be pruned)
//! → [`prune`] (forward passes on an [`exec::Executor`], the layer engine per layer, IR edits) →
//! [`onnx::save`].
//!
//! ```no_run
//! use subprune::{select, Budget, CpuBackend, LayerProblem, SelectOptions, npy};
//! let inputs = npy::read_f32("B.npy")?;   // (N, C, H, W): the consumer's input
//! let weight = npy::read_f32("W.npy")?;   // (M, C, kh, kw): the consumer's weight
//! let problem = LayerProblem::new(&inputs.shape, weight.view(), None)?;
//! let options = SelectOptions { budget: Budget::KeepFraction(0.5), ..Default::default() };
//! let sel = select(&CpuBackend::new(), &problem, inputs.view(), None, &options, &mut |_, _, _| {})?;
//! println!("kept {:?}, error {}", sel.kept, sel.relative_error);
//! # Ok::<(), subprune::Error>(())
//! ```

#![warn(missing_docs)]

pub mod analysis;
pub mod backend;
pub mod bench;
pub mod dataform;
pub mod demo;
pub mod error;
pub mod exec;
pub mod greedy;
pub mod ir;
pub mod linalg;
pub mod npy;
pub mod onnx;
pub mod plan;
pub mod prune;
pub mod rng;
pub mod stats;
pub mod synthetic;
pub mod tensor;
pub mod validate;

pub use backend::cpu::CpuBackend;
pub use backend::gpu::GpuBackend;
pub use backend::{Backend, DEFAULT_DEPENDENCE_TOL};
pub use error::{Error, Result};
pub use greedy::{error_without_reweight, reweight, run_greedy, GreedyRun, Reweighted, Stage};
pub use plan::{GreedyForm, Plan};
pub use stats::{Consumer, ConvOptions, LayerProblem, LayerStats};
pub use tensor::{Tensor, TensorView};

/// Images per batch when an in-memory tensor is streamed through a backend (the paper's
/// calibration batches hold 128 images).
pub const DEFAULT_BATCH_IMAGES: usize = 128;

/// Computes a layer's statistics from in-memory consumer inputs `B` (and, for the asymmetric
/// variant, targets `A` of the same shape), streamed through `backend` `batch_images` images at a
/// time.
pub fn layer_stats(
    backend: &dyn Backend,
    problem: &LayerProblem,
    inputs: TensorView<'_>,
    target: Option<TensorView<'_>>,
    batch_images: usize,
) -> Result<LayerStats> {
    layer_stats_with_progress(
        backend,
        problem,
        inputs,
        target,
        batch_images,
        &mut |_, _, _| {},
    )
}

/// [`layer_stats`], reporting `(Stage::Statistics, images done, images)` after every batch.
pub fn layer_stats_with_progress(
    backend: &dyn Backend,
    problem: &LayerProblem,
    inputs: TensorView<'_>,
    target: Option<TensorView<'_>>,
    batch_images: usize,
    progress: greedy::Progress<'_>,
) -> Result<LayerStats> {
    let unfolding = problem.unfolding;
    let n = unfolding.check_batch(&inputs, "inputs")?;
    if n == 0 {
        return Err(Error::Shape("inputs hold no images (N = 0)".into()));
    }
    unfolding.total_rows(n)?;
    if let Some(t) = &target {
        if t.shape != inputs.shape {
            return Err(Error::Shape(format!(
                "target has shape {:?}, inputs have {:?}; they must match",
                t.shape, inputs.shape
            )));
        }
    }
    if batch_images == 0 {
        return Err(Error::InvalidArgument(
            "batch size must be ≥ 1 image".into(),
        ));
    }
    // Finiteness is checked once, per batch, by the backend's `add_batch` (the boundary every
    // statistics batch crosses); its flat index is shifted below to the caller's tensor.
    let mut acc = backend.stats_accumulator(
        backend::StatsSpec::new(unfolding, target.is_some())
            .with_weight(&problem.weight, problem.outputs),
    )?;
    let per_image = unfolding.image_len();
    let mut first = 0;
    while first < n {
        let count = batch_images.min(n - first);
        let mut shape = inputs.shape.to_vec();
        shape[0] = count;
        let range = first * per_image..(first + count) * per_image;
        let b = TensorView::new(&shape, &inputs.data[range.clone()])?;
        let a = match &target {
            Some(t) => Some(TensorView::new(&shape, &t.data[range])?),
            None => None,
        };
        // Flat indices in errors count from the caller's tensor, not from the batch.
        acc.add_batch(b, a)
            .map_err(|e| e.with_index_offset(first * per_image))?;
        first += count;
        progress(greedy::Stage::Statistics, first, n);
    }
    LayerStats::from_raw(
        problem,
        acc.finish_with_weight(&problem.weight, problem.outputs)?,
    )
    .map_err(|e| match e {
        Error::NonFiniteStatistics {
            tensor,
            detail,
            hint,
        } => {
            let largest = |t: &TensorView<'_>| t.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let mut detail = format!("{detail}; largest |value| in inputs {:e}", largest(&inputs));
            if let Some(t) = &target {
                detail.push_str(&format!(", in target {:e}", largest(t)));
            }
            Error::NonFiniteStatistics {
                tensor,
                detail,
                hint,
            }
        }
        e => e,
    })
}

/// How many channels to keep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// Exactly this many channels (1 ≤ k ≤ C).
    Keep(usize),
    /// This fraction of the channels, rounded to the nearest count and at least 1 (0 < f ≤ 1).
    KeepFraction(f64),
}

impl Budget {
    /// The number of channels to keep out of `channels`, or an error for an invalid budget.
    pub fn resolve(&self, channels: usize) -> Result<usize> {
        match *self {
            Budget::Keep(k) if k >= 1 && k <= channels => Ok(k),
            Budget::Keep(k) => Err(Error::InvalidArgument(format!(
                "keep {k} channels: must be between 1 and the layer's {channels} channels"
            ))),
            Budget::KeepFraction(f) if f > 0.0 && f <= 1.0 => {
                Ok(((f * channels as f64).round() as usize).clamp(1, channels))
            }
            Budget::KeepFraction(f) => Err(Error::InvalidArgument(format!(
                "keep fraction {f}: must be in (0, 1]"
            ))),
        }
    }
}

/// Options of [`select`].
#[derive(Clone, Copy, Debug)]
pub struct SelectOptions {
    /// How many channels to keep.
    pub budget: Budget,
    /// Replace the consumer's weights by the least-squares optimum `W~` (default), or keep its
    /// original rows for the kept channels.
    pub reweight: bool,
    /// Relative pivot tolerance for numerically dependent channels.
    pub dependence_tol: f64,
    /// Images per statistics batch.
    pub batch_images: usize,
}

impl SelectOptions {
    /// Checks every option against a layer of `channels` channels, before any work: the budget,
    /// the dependence tolerance, the batch size. Returns the number of channels to keep.
    pub fn check(&self, channels: usize) -> Result<usize> {
        if !(0.0..1.0).contains(&self.dependence_tol) {
            return Err(Error::InvalidArgument(format!(
                "dependence tolerance {} must be in [0, 1)",
                self.dependence_tol
            )));
        }
        if self.batch_images == 0 {
            return Err(Error::InvalidArgument(
                "batch size must be ≥ 1 image".into(),
            ));
        }
        self.budget.resolve(channels)
    }
}

impl Default for SelectOptions {
    fn default() -> Self {
        Self {
            budget: Budget::KeepFraction(0.5),
            reweight: true,
            dependence_tol: DEFAULT_DEPENDENCE_TOL,
            batch_images: DEFAULT_BATCH_IMAGES,
        }
    }
}

/// The result of selecting channels for one layer.
#[derive(Clone, Debug)]
pub struct Selection {
    /// The full greedy run (order and error curve for every budget).
    pub run: GreedyRun,
    /// The kept channels, sorted.
    pub kept: Vec<usize>,
    /// `‖AW − B_S W~‖² / ‖AW‖²` for the kept set (with `W~ = W_S` without reweighting).
    pub relative_error: f64,
    /// The new consumer weight, in the original layout with only the kept input channels.
    pub weight: Tensor,
    /// The form of the greedy that ran ([`Plan::choose_form`]).
    pub form: GreedyForm,
}

/// Selects the channels to keep for one layer and computes the new consumer weight: statistics,
/// one greedy run, then the reweighting solve for the budget. `progress` hears of both stages.
pub fn select(
    backend: &dyn Backend,
    problem: &LayerProblem,
    inputs: TensorView<'_>,
    target: Option<TensorView<'_>>,
    options: &SelectOptions,
    progress: greedy::Progress<'_>,
) -> Result<Selection> {
    let k = options.check(problem.layout().channels)?;
    let images = problem.unfolding.check_batch(&inputs, "inputs")?;
    let rows = problem.unfolding.total_rows(images)?;
    if Plan::choose_form(rows, problem.layout().columns()) == GreedyForm::Data {
        // Fewer rows than columns: the n × D data are smaller than the D × D statistics.
        // Checked once here for both passes over the data.
        let n = dataform::check(problem, &inputs, target.as_ref())?;
        let run = dataform::run_greedy_data_checked(
            problem,
            inputs,
            target,
            n,
            options.dependence_tol,
            progress,
        )?;
        let kept = run.kept(k);
        let (rows, relative_error) = dataform::kept_weights_checked(
            problem,
            inputs,
            target,
            n,
            &kept,
            options.reweight,
            options.dependence_tol,
        )?;
        let weight = problem.weight_tensor(&kept, &rows);
        return Ok(Selection {
            run,
            kept,
            relative_error,
            weight,
            form: GreedyForm::Data,
        });
    }
    let stats = layer_stats_with_progress(
        backend,
        problem,
        inputs,
        target,
        options.batch_images,
        progress,
    )?;
    let run = run_greedy(backend, &stats, options.dependence_tol, progress)?;
    select_from_run(problem, &stats, run, k, options)
}

/// The keep set and new weight for budget `k` from an existing greedy run (no recomputation).
pub fn select_from_run(
    problem: &LayerProblem,
    stats: &LayerStats,
    run: GreedyRun,
    k: usize,
    options: &SelectOptions,
) -> Result<Selection> {
    let kept = run.kept(k);
    let (rows, relative_error) = kept_weights(stats, &kept, options)?;
    let weight = problem.weight_tensor(&kept, &rows);
    Ok(Selection {
        run,
        kept,
        relative_error,
        weight,
        form: GreedyForm::Gram,
    })
}

/// The new weight rows of the kept channels (in `kept` order) and the relative error they leave:
/// the least-squares ones, or the original ones without reweighting.
fn kept_weights(
    stats: &LayerStats,
    kept: &[usize],
    options: &SelectOptions,
) -> Result<(Vec<f64>, f64)> {
    if options.reweight {
        let r = reweight(stats, kept, options.dependence_tol)?;
        Ok((r.weight, r.relative_error))
    } else {
        let (ks, m) = (stats.layout.columns_per_channel, stats.outputs);
        let rows = kept
            .iter()
            .flat_map(|&c| stats.weight[c * ks * m..(c + 1) * ks * m].iter().copied())
            .collect();
        Ok((rows, error_without_reweight(stats, kept)?))
    }
}
