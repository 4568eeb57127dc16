//! Compression budgets (`docs/ALGORITHM.md` §6): a target for the whole model (its parameter
//! count divided by `R`, or FLOPs per image) turned into a channel count for every pruned layer.
//!
//! **Cost model.** Pruning layer `l` from `d_l` to `k_l` channels shrinks one axis of each
//! constant sliced with its channels (producer weight and bias, BatchNorm entries) and of each
//! consumer weight by `k_l / d_l`; the FLOPs of the producer and consumer nodes shrink alike.
//! So the model's cost is exactly multilinear in the keep counts:
//! `cost(k) = Σ_t size_t · Π_{l ∈ L(t)} k_l / d_l` over constants (or nodes) `t`, where `L(t)` are
//! the layers that shrink `t` (a conv between two pruned layers is shrunk by both). [`CostModel`]
//! evaluates it without editing the graph; tests check it against the pruned models.
//!
//! **Allocations.**
//! * [`Allocation::Uniform`]: one keep fraction `f` for every layer, `k_l = round(f·d_l)` (at
//!   least 1; `f^¼` for a stream group, [`STREAM_EXPONENT`]), the largest `f` whose cost meets
//!   the target, found by bisection. Adding one
//!   channel to every layer would exceed the target.
//! * [`Allocation::Error`] (label-free): the greedy's normalised error curves `e_l(k)` (one run
//!   per layer gives every `k`, `docs/ALGORITHM.md` §2) are the price of each size. Minimise
//!   `Σ_l e_l(k_l)` subject to `cost(k) ≤ budget`: start from one channel per layer and repeatedly
//!   add the channel with the largest error decrease per unit of added cost,
//!   `(e_l(k_l) − e_l(k_l+1)) / (cost(k + 1_l) − cost(k))`, among those that still fit, until none
//!   fits. This is the classic marginal-ratio greedy for a separable knapsack; it is optimal when
//!   every `e_l` is convex (diminishing returns) and the costs are linear, and the greedy error
//!   curves of a weakly submodular objective decay roughly geometrically, i.e. close to convex.
//!   Normalising each layer's error by its `‖AW‖²` puts layers on one scale (the fraction of the
//!   consumer output lost) whatever the size of their activations. The curves are not exactly
//!   convex, so as a safeguard the uniform allocation is also scored on the same curves and taken
//!   when its summed error is lower: the result is never worse than uniform on that criterion.
//!   What it does not see: how much each layer's error costs in accuracy (the `accuracy`
//!   allocation, which needs labels).
//! * [`Allocation::Accuracy`] (labelled validation images; the "equal accuracy loss" scheme of
//!   Kuzmin et al. 2019, `docs/ALGORITHM.md` §6): every layer is pruned alone at a grid of sizes
//!   and the network's top-1 on the validation images measured ([`super::sensitivity`], which
//!   documents the grid and the cost: one evaluation of the validation set per layer and grid
//!   size); each curve is made monotone, `a_l(k)` non-decreasing with `a_l(d_l)` = the unpruned
//!   accuracy `a₀`. One accuracy threshold `t` then sets every layer's size: the fewest channels
//!   whose envelope accuracy is at least `a₀ − t`, `k_l(t) = min{k : a_l(k) ≥ a₀ − t}`; the
//!   smallest `t` whose sizes meet the budget is found by binary search over the (finitely many)
//!   values the envelopes take. Sensitive layers (steep curves) keep more channels, insensitive
//!   ones fewer, so that each costs about the same accuracy alone. Ties: where an envelope is
//!   flat (a plateau, common since accuracy on a few hundred images moves in steps), the
//!   threshold is refined by the kept fraction `k/d_l`, i.e. the pairs `(a_l(k), k/d_l)` are
//!   compared lexicographically: among layers on a plateau at the threshold's accuracy, those
//!   keeping the largest fraction give up channels first (uniform as the tie-break). The pairs
//!   are strictly increasing in `k`, so consecutive thresholds change every layer by at most one
//!   channel: the sizes found meet the budget, and the next stricter threshold adds one channel
//!   to some layers and exceeds it (adding one channel to every layer would too).

use crate::analysis::channels::ChannelGroup;
use crate::error::{Error, Result};
use crate::ir::Graph;

/// What the whole model must meet.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub enum Target {
    /// Parameters at most (the model's count) / R, R > 1.
    Compression(f64),
    /// FLOPs per image at most this many.
    Flops(f64),
}

/// How the target is split over layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Allocation {
    /// One keep fraction for every layer.
    #[default]
    Uniform,
    /// Minimum summed normalised greedy error.
    Error,
    /// Equal accuracy loss per layer, measured on labelled validation images.
    Accuracy,
}

impl Allocation {
    /// The command-line name.
    pub fn name(&self) -> &'static str {
        match self {
            Allocation::Uniform => "uniform",
            Allocation::Error => "error",
            Allocation::Accuracy => "accuracy",
        }
    }
}

impl std::fmt::Display for Allocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Allocation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "uniform" => Ok(Allocation::Uniform),
            "error" => Ok(Allocation::Error),
            "accuracy" => Ok(Allocation::Accuracy),
            other => Err(Error::InvalidArgument(format!(
                "budget '{other}': expected uniform, error or accuracy"
            ))),
        }
    }
}

/// The model's parameter count or FLOPs as a function of the keep counts of its pruned layers.
#[derive(Clone, Debug)]
pub struct CostModel {
    /// Channels `d_l` of each pruned layer.
    pub channels: Vec<usize>,
    /// `(size, layers that shrink it)`.
    terms: Vec<(f64, Vec<usize>)>,
    /// Cost with every layer whole.
    pub full: f64,
    /// Per layer, the power of the uniform fraction it keeps ([`uniform`]): 1, or
    /// [`STREAM_EXPONENT`] for a residual stream or Concat/Split block.
    pub exponents: Vec<f64>,
}

/// The uniform allocation keeps `f^STREAM_EXPONENT` of a stream group's channels where it keeps
/// `f` of a block-internal group's: a stream's channels are read by every block it crosses, so
/// removing one costs more than removing one of a block's own (EVALUATION.md, "Channel groups":
/// measured on ResNet-56 against the same fraction everywhere and against streams left whole).
pub const STREAM_EXPONENT: f64 = 0.25;

impl CostModel {
    fn build(channels: Vec<usize>, terms: Vec<(f64, Vec<usize>)>) -> Self {
        let full = terms.iter().map(|t| t.0).sum();
        Self {
            exponents: vec![1.0; channels.len()],
            channels,
            terms,
            full,
        }
    }

    /// The same model with streams' fractions as [`STREAM_EXPONENT`] powers.
    fn with_streams(mut self, layers: &[&ChannelGroup]) -> Self {
        self.exponents = layers
            .iter()
            .map(|l| if l.stream { STREAM_EXPONENT } else { 1.0 })
            .collect();
        self
    }

    /// A cost model from explicit terms: `channels[l]` = `d_l`, and `(size, layers that shrink
    /// it)` per term (for other cost measures, and for tests).
    pub fn new(channels: Vec<usize>, terms: Vec<(f64, Vec<usize>)>) -> Result<Self> {
        if let Some(l) = channels.iter().position(|&d| d == 0) {
            return Err(Error::InvalidArgument(format!(
                "cost model: layer {l} has no channel"
            )));
        }
        for (size, by) in &terms {
            if !(size.is_finite() && *size >= 0.0) {
                return Err(Error::InvalidArgument(format!(
                    "cost model: term size {size} must be finite and ≥ 0"
                )));
            }
            if let Some(l) = by.iter().find(|&&l| l >= channels.len()) {
                return Err(Error::InvalidArgument(format!(
                    "cost model: a term names layer {l} of {}",
                    channels.len()
                )));
            }
        }
        Ok(Self::build(channels, terms))
    }

    /// Parameters (f32 constants) of `graph` with `layers` pruned.
    pub fn parameters(graph: &Graph, layers: &[&ChannelGroup]) -> Self {
        let mut terms = Vec::new();
        for (v, value) in graph.values.iter().enumerate() {
            let Some(size) = value
                .constant
                .as_ref()
                .and_then(|c| c.f32())
                .map(|d| d.len())
            else {
                continue;
            };
            let by: Vec<usize> = layers
                .iter()
                .enumerate()
                .filter(|(_, l)| {
                    l.params.iter().any(|p| p.value == v)
                        || l.consumers.iter().any(|c| {
                            graph.nodes[c.node].inputs.get(1).copied().flatten() == Some(v)
                        })
                })
                .map(|(i, _)| i)
                .collect();
            terms.push((size as f64, by));
        }
        Self::build(layers.iter().map(|l| l.channels).collect(), terms).with_streams(layers)
    }

    /// FLOPs per image (2 × multiply-accumulates of Conv, Gemm, MatMul) of `graph` with `layers`
    /// pruned.
    pub fn flops(graph: &Graph, layers: &[&ChannelGroup]) -> Self {
        let mut terms = Vec::new();
        for (n, node) in graph.nodes.iter().enumerate() {
            let macs = graph.macs_per_image(node);
            if macs == 0 {
                continue;
            }
            let by: Vec<usize> = layers
                .iter()
                .enumerate()
                .filter(|(_, l)| {
                    l.producers.contains(&n)
                        || l.depthwise().contains(&n)
                        || l.consumers.iter().any(|c| c.node == n)
                })
                .map(|(i, _)| i)
                .collect();
            terms.push((2.0 * macs as f64, by));
        }
        Self::build(layers.iter().map(|l| l.channels).collect(), terms).with_streams(layers)
    }

    /// The cost with `keeps[l]` channels in layer `l`.
    pub fn cost(&self, keeps: &[usize]) -> f64 {
        self.terms
            .iter()
            .map(|(size, by)| {
                by.iter().fold(*size, |acc, &l| {
                    acc * keeps[l] as f64 / self.channels[l] as f64
                })
            })
            .sum()
    }
}

/// Per-layer sizes meeting a target.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Allocated {
    /// Channels kept in each layer.
    pub keeps: Vec<usize>,
    /// The cost allowed.
    pub budget: f64,
    /// The cost of `keeps` (the cost model's prediction).
    pub cost: f64,
    /// The cost with every layer whole.
    pub full: f64,
    /// Summed normalised error of `keeps` on the curves, when they were given.
    pub summed_error: Option<f64>,
    /// [`Allocation::Accuracy`]: the accuracy drop `t` allowed to each layer alone (validation
    /// top-1 of the unpruned network minus the threshold the sizes meet).
    pub accuracy_drop: Option<f64>,
}

/// The cost allowed by `target` under `model` (`full / R` or the FLOPs given), checked
/// ([`Target::check`]).
pub fn budget_of(target: Target, model: &CostModel) -> Result<f64> {
    target.check()?;
    Ok(match target {
        Target::Compression(r) => model.full / r,
        // Pruning to a target the model already meets would change weights for nothing.
        Target::Flops(f) if f >= model.full => {
            return Err(Error::InvalidArgument(format!(
                "--target-flops {f}: the model already needs only {} FLOPs per image; the target \
                 is met, nothing to prune (nothing written)",
                model.full
            )))
        }
        Target::Flops(f) => f,
    })
}

fn fraction_keeps(model: &CostModel, f: f64) -> Vec<usize> {
    model
        .channels
        .iter()
        .zip(&model.exponents)
        .map(|(&d, &e)| ((f.powf(e) * d as f64).round() as usize).clamp(1, d))
        .collect()
}

fn check_reachable(model: &CostModel, budget: f64, what: &str) -> Result<()> {
    let least = model.cost(&vec![1; model.channels.len()]);
    if least > budget {
        return Err(Error::InvalidArgument(format!(
            "{what}: unreachable by pruning these layers: with one channel in every pruned layer \
             the model still costs {least:.0} > the target {budget:.0} (the rest of the model is \
             not prunable)"
        )));
    }
    Ok(())
}

/// Summed normalised error of `keeps` on `curves` (`curves[l][k-1] = e_l(k)`).
pub fn summed_error(curves: &[Vec<f64>], keeps: &[usize]) -> f64 {
    curves.iter().zip(keeps).map(|(c, &k)| c[k - 1]).sum()
}

/// One keep fraction `f` for every layer (`f^e` for a layer of exponent `e`, see
/// [`STREAM_EXPONENT`]), the largest whose cost is within `budget`.
pub fn uniform(model: &CostModel, budget: f64) -> Result<Vec<usize>> {
    check_reachable(model, budget, "uniform budget")?;
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    if model.cost(&fraction_keeps(model, hi)) <= budget {
        return Ok(model.channels.clone());
    }
    // cost(fraction_keeps(f)) is non-decreasing in f; lo always fits, hi never does.
    for _ in 0..64 {
        let mid = 0.5 * (lo + hi);
        if model.cost(&fraction_keeps(model, mid)) <= budget {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(fraction_keeps(model, lo))
}

/// Minimum summed normalised error under `budget` (see the module documentation).
pub fn error_allocation(model: &CostModel, budget: f64, curves: &[Vec<f64>]) -> Result<Vec<usize>> {
    check_reachable(model, budget, "error budget")?;
    if curves.len() != model.channels.len()
        || curves
            .iter()
            .zip(&model.channels)
            .any(|(c, &d)| c.len() != d)
    {
        return Err(Error::Shape(
            "error budget: one error curve of d_l entries is needed per pruned layer".into(),
        ));
    }
    if curves.iter().flatten().any(|e| !e.is_finite()) {
        return Err(Error::InvalidArgument(
            "error budget: the error curves are not finite".into(),
        ));
    }
    let n = model.channels.len();
    let mut keeps = vec![1; n];
    let mut cost = model.cost(&keeps);
    loop {
        let mut best: Option<(usize, f64, f64)> = None;
        for l in 0..n {
            if keeps[l] == model.channels[l] {
                continue;
            }
            keeps[l] += 1;
            let next = model.cost(&keeps);
            keeps[l] -= 1;
            if next > budget {
                continue;
            }
            let gain = (curves[l][keeps[l] - 1] - curves[l][keeps[l]]).max(0.0);
            let ratio = gain / (next - cost).max(f64::MIN_POSITIVE);
            if best.is_none_or(|(_, r, _)| ratio > r) {
                best = Some((l, ratio, next));
            }
        }
        match best {
            Some((l, _, next)) => {
                keeps[l] += 1;
                cost = next;
            }
            None => break,
        }
    }
    let uniform = uniform(model, budget)?;
    if summed_error(curves, &uniform) < summed_error(curves, &keeps) {
        return Ok(uniform);
    }
    Ok(keeps)
}

/// Equal accuracy loss (see the module documentation): per-layer sizes within `budget` from the
/// monotone accuracy envelopes (`envelopes[l][k-1]`, non-decreasing in `k`, one entry per
/// channel) and the unpruned accuracy `baseline`. Returns the sizes and the accuracy drop
/// `baseline − a` of the threshold `a` they meet.
pub fn accuracy_allocation(
    model: &CostModel,
    budget: f64,
    envelopes: &[Vec<f64>],
    baseline: f64,
) -> Result<(Vec<usize>, f64)> {
    check_reachable(model, budget, "accuracy budget")?;
    if envelopes.len() != model.channels.len()
        || envelopes
            .iter()
            .zip(&model.channels)
            .any(|(c, &d)| c.len() != d)
    {
        return Err(Error::Shape(
            "accuracy budget: one accuracy curve of d_l entries is needed per pruned layer".into(),
        ));
    }
    if envelopes.iter().flatten().any(|a| !a.is_finite()) || !baseline.is_finite() {
        return Err(Error::InvalidArgument(
            "accuracy budget: the accuracy curves are not finite".into(),
        ));
    }
    if let Some(l) = envelopes
        .iter()
        .position(|e| e.windows(2).any(|w| w[1] < w[0]))
    {
        return Err(Error::InvalidArgument(format!(
            "accuracy budget: the accuracy curve of layer {l} decreases; pass its monotone envelope"
        )));
    }
    // Threshold pairs (accuracy, kept fraction), compared lexicographically; strictly
    // increasing in k within a layer.
    let pair = |l: usize, k: usize| (envelopes[l][k - 1], k as f64 / model.channels[l] as f64);
    let cmp = |a: &(f64, f64), b: &(f64, f64)| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1));
    let mut candidates: Vec<(f64, f64)> = model
        .channels
        .iter()
        .enumerate()
        .flat_map(|(l, &d)| (1..=d).map(move |k| (l, k)))
        .map(|(l, k)| pair(l, k))
        .collect();
    candidates.sort_by(|a, b| cmp(b, a));
    candidates.dedup_by(|a, b| cmp(a, b).is_eq());
    // k_l(c): the fewest channels whose pair is ≥ c (whole when none is).
    let keeps_at = |c: &(f64, f64)| -> Vec<usize> {
        model
            .channels
            .iter()
            .enumerate()
            .map(|(l, &d)| {
                let (mut lo, mut hi) = (1, d + 1);
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    if cmp(&pair(l, mid), c).is_lt() {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                lo.min(d)
            })
            .collect()
    };
    // Candidates run from strict to loose; the cost does not increase along them, and the
    // loosest (one channel everywhere) fits (checked above).
    let first_fit = candidates.partition_point(|c| model.cost(&keeps_at(c)) > budget);
    let c = candidates[first_fit.min(candidates.len() - 1)];
    Ok((keeps_at(&c), baseline - c.0))
}

/// Sizes for `target` with `allocation` (`curves` required for [`Allocation::Error`]; the
/// [`Allocation::Accuracy`] curves go through [`allocate_accuracy`]).
pub fn allocate(
    model: &CostModel,
    target: Target,
    allocation: Allocation,
    curves: Option<&[Vec<f64>]>,
) -> Result<Allocated> {
    let budget = budget_of(target, model)?;
    let keeps = match (allocation, curves) {
        (Allocation::Uniform, _) => uniform(model, budget)?,
        (Allocation::Error, Some(c)) => error_allocation(model, budget, c)?,
        (Allocation::Error, None) => {
            return Err(Error::InvalidArgument(
                "the error budget needs the greedy error curves".into(),
            ))
        }
        (Allocation::Accuracy, _) => {
            return Err(Error::InvalidArgument(
                "the accuracy budget needs per-layer accuracy curves measured on labelled \
                 validation images (allocate_accuracy)"
                    .into(),
            ))
        }
    };
    Ok(Allocated {
        cost: model.cost(&keeps),
        budget,
        full: model.full,
        summed_error: curves.map(|c| summed_error(c, &keeps)),
        accuracy_drop: None,
        keeps,
    })
}

/// Sizes for `target` by equal accuracy loss, from measured accuracy curves
/// ([`super::sensitivity::measure`]); `curves`, when given, only fill in
/// [`Allocated::summed_error`].
pub fn allocate_accuracy(
    model: &CostModel,
    target: Target,
    sensitivity: &super::sensitivity::Sensitivity,
    curves: Option<&[Vec<f64>]>,
) -> Result<Allocated> {
    let budget = budget_of(target, model)?;
    let (keeps, drop) = accuracy_allocation(
        model,
        budget,
        &sensitivity.envelopes(),
        sensitivity.baseline,
    )?;
    Ok(Allocated {
        cost: model.cost(&keeps),
        budget,
        full: model.full,
        summed_error: curves.map(|c| summed_error(c, &keeps)),
        accuracy_drop: Some(drop),
        keeps,
    })
}

/// The layers a run with `skip` prunes, in node order.
pub fn pruned_layers<'a>(
    analysis: &'a crate::analysis::channels::ChannelAnalysis,
    skip: &[String],
) -> Vec<&'a ChannelGroup> {
    analysis
        .prunable
        .iter()
        .filter(|l| !skip.contains(&l.name))
        .collect()
}

/// A budget resolved for a model: the pruned layers' names and sizes.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BudgetPlan {
    /// What was asked.
    pub target: Target,
    /// How it was split.
    pub allocation: Allocation,
    /// `(producer name, channels, kept)` per pruned layer.
    pub layers: Vec<(String, usize, usize)>,
    /// The sizes and their predicted cost.
    pub allocated: Allocated,
    /// [`Allocation::Accuracy`]: the measured accuracy curves.
    pub sensitivity: Option<super::sensitivity::Sensitivity>,
}

impl BudgetPlan {
    /// The sizes as [`super::PruneOptions::keep`] entries.
    pub fn keep(&self) -> Vec<(String, usize)> {
        self.layers
            .iter()
            .map(|(n, _, k)| (n.clone(), *k))
            .collect()
    }
}

/// Resolves `target` for `graph`. For [`Allocation::Error`] and [`Allocation::Accuracy`] the
/// statistics of every layer come from one forward pass over `calib` on the original network
/// ([`super::layerwise::layerwise_stats`]) and one greedy run per layer gives the error curves;
/// [`Allocation::Accuracy`] then measures each layer's accuracy curve on `validation`
/// ([`super::sensitivity::measure`], greedy selection, reweighted when `options.reweight`).
#[allow(clippy::too_many_arguments)]
pub fn plan(
    graph: &Graph,
    calib: &dyn crate::exec::run::ImageSource,
    validation: Option<super::sensitivity::Validation<'_>>,
    options: &super::PruneOptions,
    target: Target,
    allocation: Allocation,
    backend: &dyn crate::Backend,
    executor: super::ExecutorFactory<'_>,
) -> Result<BudgetPlan> {
    let analysis = super::analysis_for(graph, options);
    let inputs = super::feed::PassInputs::new(graph, &analysis, calib, options, backend, executor);
    Ok(plan_on(&inputs, validation, target, allocation)?.0)
}

/// The statistics and greedy runs a budget took on the original network (the `error` and
/// `accuracy` allocations), for the layer variant to reuse.
pub(crate) struct Measured {
    /// Every pruned layer's statistics.
    pub layerwise: super::layerwise::LayerwiseStats,
    /// The greedy, holding its run of every layer.
    pub greedy: super::select::greedy::Greedy,
}

/// [`plan`], also returning the statistics and greedy runs it took, if any.
pub(crate) fn plan_on(
    inputs: &super::feed::PassInputs<'_>,
    validation: Option<super::sensitivity::Validation<'_>>,
    target: Target,
    allocation: Allocation,
) -> Result<(BudgetPlan, Option<Measured>)> {
    let (graph, options, backend, executor) = (
        inputs.graph,
        inputs.options,
        inputs.backend,
        inputs.executor,
    );
    let layers = pruned_layers(inputs.analysis, &options.skip);
    if layers.is_empty() {
        return Err(Error::InvalidArgument(
            "no layer to prune: the model has no prunable layer, or all are skipped".into(),
        ));
    }
    match (allocation, &validation) {
        (Allocation::Accuracy, None) => {
            return Err(Error::InvalidArgument(
                "the accuracy budget needs labelled validation images".into(),
            ))
        }
        (Allocation::Accuracy, Some(v)) => super::sensitivity::check_validation(graph, v)?,
        _ => {}
    }
    let model = match target {
        Target::Compression(_) => CostModel::parameters(graph, &layers),
        Target::Flops(_) => CostModel::flops(graph, &layers),
    };
    budget_of(target, &model)?;
    let (allocated, sensitivity, measured) = match allocation {
        Allocation::Uniform => (allocate(&model, target, allocation, None)?, None, None),
        Allocation::Error | Allocation::Accuracy => {
            let ls = super::layerwise::layerwise_stats_of(inputs, &mut |_, _| {})?;
            let greedy = super::select::greedy::Greedy::default();
            let curves = ls.greedy_curves(backend, options.dependence_tol, &greedy)?;
            let (allocated, sensitivity) = match validation {
                Some(val) if allocation == Allocation::Accuracy => {
                    let sensitivity = super::sensitivity::measure(
                        graph,
                        &ls,
                        &greedy,
                        val,
                        options,
                        backend,
                        executor,
                        &mut |_, _| {},
                    )?;
                    (
                        allocate_accuracy(&model, target, &sensitivity, Some(&curves))?,
                        Some(sensitivity),
                    )
                }
                _ => (allocate(&model, target, allocation, Some(&curves))?, None),
            };
            let measured = Measured {
                layerwise: ls,
                greedy,
            };
            (allocated, sensitivity, Some(measured))
        }
    };
    let plan = BudgetPlan {
        target,
        allocation,
        layers: layers
            .iter()
            .zip(&allocated.keeps)
            .map(|(l, &k)| (l.name.clone(), l.channels, k))
            .collect(),
        allocated,
        sensitivity,
    };
    Ok((plan, measured))
}
