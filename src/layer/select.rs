//! One layer, end to end, from consumer inputs in memory (`subprune select`): the statistics
//! streamed through a backend ([`layer_stats`]), one greedy run, and the new consumer weight for
//! a budget ([`select`]); or the data form when the unfolded rows are fewer than the columns.

use super::backend::{Backend, StatsSpec, DEFAULT_DEPENDENCE_TOL};
use super::cost::{CostPlan, GreedyForm};
use super::dataform;
use super::greedy::{check_dependence_tol, run_greedy, GreedyRun, Progress, Stage};
use super::problem::LayerProblem;
use super::reweight::{check_ridge, kept_rows};
use super::stats::LayerStats;
use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorView};

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
    progress: Progress<'_>,
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
    check_batch_images(batch_images)?;
    // Finiteness is checked once, per batch, by the backend's `add_batch` (the boundary every
    // statistics batch crosses); its flat index is shifted below to the caller's tensor.
    let mut acc = backend.stats_accumulator(
        StatsSpec::new(unfolding, target.is_some()).with_weight(&problem.weight, problem.outputs),
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
        progress(Stage::Statistics, first, n);
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

/// Refuses an empty batch of images (statistics or forward passes).
pub fn check_batch_images(batch_images: usize) -> Result<()> {
    if batch_images == 0 {
        return Err(Error::InvalidArgument(
            "batch size must be ≥ 1 image".into(),
        ));
    }
    Ok(())
}

/// Options of [`select`].
#[derive(Clone, Copy, Debug)]
pub struct SelectOptions {
    /// How many channels to keep.
    pub budget: Budget,
    /// Replace the consumer's weights by the least-squares optimum `W~` (default), or keep its
    /// original rows for the kept channels.
    pub reweight: bool,
    /// Relative ridge of the reweighting ([`mod@super::reweight`]; 0: plain least squares, up to the
    /// statistics' precision).
    pub ridge: f64,
    /// Relative pivot tolerance for numerically dependent channels.
    pub dependence_tol: f64,
    /// Images per statistics batch.
    pub batch_images: usize,
}

impl SelectOptions {
    /// Checks every option against a layer of `channels` channels, before any work: the budget,
    /// the dependence tolerance, the batch size. Returns the number of channels to keep.
    pub fn check(&self, channels: usize) -> Result<usize> {
        check_dependence_tol(self.dependence_tol)?;
        check_ridge(self.ridge)?;
        check_batch_images(self.batch_images)?;
        self.budget.resolve(channels)
    }
}

impl Default for SelectOptions {
    fn default() -> Self {
        Self {
            budget: Budget::KeepFraction(0.5),
            reweight: true,
            ridge: 0.0,
            dependence_tol: DEFAULT_DEPENDENCE_TOL,
            batch_images: DEFAULT_BATCH_IMAGES,
        }
    }
}

/// The result of selecting channels for one layer.
#[derive(Clone, Debug)]
pub struct LayerSelection {
    /// The full greedy run (order and error curve for every budget).
    pub run: GreedyRun,
    /// The kept channels, sorted.
    pub kept: Vec<usize>,
    /// `‖AW − B_S W~‖² / ‖AW‖²` for the kept set (with `W~ = W_S` without reweighting).
    pub relative_error: f64,
    /// The new consumer weight, in the original layout with only the kept input channels.
    pub weight: Tensor,
    /// The form of the greedy that ran ([`CostPlan::choose_form`]).
    pub form: GreedyForm,
}

impl LayerSelection {
    /// What `subprune select --json` prints: `{"order", "kept", "error_curve",
    /// "relative_error", "greedy_form"}` (the Python `subprune.select` returns the same).
    pub fn summary_json(&self) -> serde_json::Value {
        serde_json::json!({
            "order": self.run.order,
            "kept": self.kept,
            "error_curve": self.run.error_curve,
            "relative_error": self.relative_error,
            "greedy_form": match self.form {
                GreedyForm::Gram => "gram",
                GreedyForm::Data => "data",
            },
        })
    }
}

/// Selects the channels to keep for one layer and computes the new consumer weight: statistics,
/// one greedy run, then the reweighting solve for the budget. `progress` hears of both stages.
pub fn select(
    backend: &dyn Backend,
    problem: &LayerProblem,
    inputs: TensorView<'_>,
    target: Option<TensorView<'_>>,
    options: &SelectOptions,
    progress: Progress<'_>,
) -> Result<LayerSelection> {
    let k = options.check(problem.layout().channels)?;
    let images = problem.unfolding.check_batch(&inputs, "inputs")?;
    let rows = problem.unfolding.total_rows(images)?;
    if CostPlan::choose_form(rows, problem.layout().columns()) == GreedyForm::Data {
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
            options.ridge,
            options.dependence_tol,
        )?;
        let weight = problem.weight_tensor(&kept, &rows);
        return Ok(LayerSelection {
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
) -> Result<LayerSelection> {
    let kept = run.kept(k);
    let (rows, relative_error) = kept_weights(stats, &kept, options)?;
    let weight = problem.weight_tensor(&kept, &rows);
    Ok(LayerSelection {
        run,
        kept,
        relative_error,
        weight,
        form: GreedyForm::Gram,
    })
}

/// The new weight rows of the kept channels (in `kept` order) and the relative error they leave:
/// the least-squares ones ([`mod@super::reweight`]), or the original ones without
/// reweighting.
fn kept_weights(
    stats: &LayerStats,
    kept: &[usize],
    options: &SelectOptions,
) -> Result<(Vec<f64>, f64)> {
    let r = kept_rows(
        stats,
        kept,
        options.reweight,
        options.ridge,
        options.dependence_tol,
    )?;
    Ok((r.weight, r.relative_error))
}
