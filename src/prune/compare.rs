//! The paper's comparison (`docs/ALGORITHM.md` §5–7): every selection method × compression ×
//! reweighting, top-1 on a labelled test set straight after pruning (no fine-tuning).
//!
//! Work is shared: the statistics of every layer on the original network come from one forward
//! pass ([`crate::prune::layerwise`]); each layer's greedy runs once for all compressions; the
//! per-layer sizes of each compression are computed once per allocation (`uniform`, `error`,
//! `accuracy`: [`crate::prune::budget`]) and used by every method, so methods differ only in
//! which channels they keep, and allocations only in the sizes. The layer-wise
//! methods (`greedy`, the baselines) all use these original-network statistics, as the paper's
//! layer-wise baselines do. The paper's best variant, greedy on the pruned network with the
//! original network's targets (`greedy-asym`), needs statistics that depend on the earlier
//! layers' choices, so it runs the sequential pipeline once per compression and reweighting.

pub mod output;

pub use output::{compare_plot, series, to_csv, to_svg, Series};

use std::time::Instant;

use crate::error::{Error, Result};
use crate::exec::eval::evaluate;
use crate::exec::run::ImageSource;
use crate::ir::Graph;
use crate::onnx::OnnxModel;
use crate::prune::budget::{self, Allocation, CostModel, Target};
use crate::prune::layerwise::layerwise_stats;
use crate::prune::select::greedy::Greedy;
use crate::prune::select::greedy_tail::GreedyTail;
use crate::prune::select::{Method, Selector};
use crate::prune::sensitivity::{self, Sensitivity, Validation};
use crate::prune::{prune_with, ExecutorFactory, PruneOptions, Variant};
use crate::Backend;

/// What to compare.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Layer-wise methods.
    pub methods: Vec<Method>,
    /// Also run the greedy in the asymmetric sequential variant (`greedy-asym`).
    pub asym: bool,
    /// Compression ratios of the parameter count (each > 1).
    pub compressions: Vec<f64>,
    /// Seeds `0..seeds` for the random methods (≥ 1).
    pub seeds: u64,
    /// How each compression is split over layers: every method runs with each (distinct).
    pub allocations: Vec<Allocation>,
    /// Ridge, tolerance, batch size, skipped layers (variant, method, keep and budget are
    /// ignored).
    pub prune: PruneOptions,
    /// Test images per evaluation batch.
    pub eval_batch: usize,
}

impl Default for CompareOptions {
    fn default() -> Self {
        Self {
            methods: Method::BASELINES.to_vec(),
            asym: true,
            compressions: vec![2.0, 4.0, 8.0, 16.0, 32.0],
            seeds: 3,
            allocations: vec![Allocation::Uniform],
            prune: PruneOptions::default(),
            eval_batch: 256,
        }
    }
}

impl CompareOptions {
    /// The seeds a method runs with: `0..seeds` for a random method, none for the others.
    fn seeds_of(&self, method: Method) -> Vec<Option<u64>> {
        if method.is_random() {
            (0..self.seeds).map(Some).collect()
        } else {
            vec![None]
        }
    }

    /// The number of rows [`compare`] gives (and reports one by one as [`CompareEvent::Row`]):
    /// for each budget allocation and compression, one per method, seed and reweighting, and
    /// one per reweighting for `greedy-asym`.
    pub fn row_count(&self) -> usize {
        let runs: usize = self
            .methods
            .iter()
            .map(|&m| self.seeds_of(m).len())
            .sum::<usize>()
            + usize::from(self.asym);
        self.allocations.len() * self.compressions.len() * runs * REWEIGHTS.len()
    }
}

/// Every pruned model is evaluated with and without the least-squares reweighting.
const REWEIGHTS: [bool; 2] = [true, false];

/// `(producer name, channels, kept)`.
pub type LayerSize = (String, usize, usize);

/// One pruned model and its accuracy.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CompareRow {
    /// `greedy`, `random`, …, or `greedy-asym`.
    pub method: String,
    /// Whether the consumers were reweighted by least squares.
    pub reweight: bool,
    /// Seed (random methods only).
    pub seed: Option<u64>,
    /// How the compression was split over layers.
    pub budget: Allocation,
    /// The compression asked for.
    pub target: f64,
    /// Parameters of the pruned model.
    pub parameters: usize,
    /// Parameters before / after.
    pub compression: f64,
    /// FLOPs per image of the pruned model (cost model).
    pub flops: f64,
    /// Top-1 accuracy on the test set.
    pub top1: f64,
    /// Seconds to select and rewrite (the asym variant: its whole pipeline).
    pub prune_seconds: f64,
    /// Seconds to evaluate.
    pub eval_seconds: f64,
}

/// The outcome of a comparison.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Comparison {
    /// Top-1 of the unpruned model.
    pub baseline_top1: f64,
    /// Parameters of the unpruned model.
    pub parameters: usize,
    /// Per allocation and compression: the target and the kept channels of each layer.
    pub allocations: Vec<(Allocation, f64, Vec<LayerSize>)>,
    /// Seconds of the shared forward pass and statistics.
    pub stats_seconds: f64,
    /// Seconds of the greedy runs (once per layer).
    pub greedy_seconds: f64,
    /// The accuracy curves measured for [`Allocation::Accuracy`] (on the validation images).
    pub sensitivity: Option<Sensitivity>,
    /// The rows, in the order run.
    pub rows: Vec<CompareRow>,
}

/// What the comparison is doing, for progress displays.
#[derive(Clone, Debug)]
pub enum CompareEvent {
    /// The shared statistics: images done of total.
    Statistics(usize, usize),
    /// The accuracy budget's per-layer evaluations: done of total.
    Sensitivity(usize, usize),
    /// A row is done.
    Row(CompareRow),
}

fn check(options: &CompareOptions) -> Result<()> {
    if options.compressions.is_empty() {
        return Err(Error::InvalidArgument("no compression ratio given".into()));
    }
    for &r in &options.compressions {
        Target::Compression(r).check()?;
    }
    if options.allocations.is_empty() {
        return Err(Error::InvalidArgument("no budget allocation given".into()));
    }
    if let Some((_, a)) = options
        .allocations
        .iter()
        .enumerate()
        .find(|(i, a)| options.allocations[..*i].contains(a))
    {
        return Err(Error::InvalidArgument(format!(
            "budget allocation '{a}' is given twice"
        )));
    }
    if options.methods.is_empty() && !options.asym {
        return Err(Error::InvalidArgument("no method to compare".into()));
    }
    if options.seeds == 0 {
        return Err(Error::InvalidArgument("seeds must be ≥ 1".into()));
    }
    if options.eval_batch == 0 {
        return Err(Error::InvalidArgument(
            "evaluation batch must be ≥ 1 image".into(),
        ));
    }
    Ok(())
}

/// Runs the comparison. `test` and `labels` are the labelled test set; `validation`, a
/// labelled held-out split for [`Allocation::Accuracy`] (required there, unused otherwise).
#[allow(clippy::too_many_arguments)]
pub fn compare(
    model: &OnnxModel,
    calib: &dyn ImageSource,
    test: &dyn ImageSource,
    labels: &[i64],
    validation: Option<Validation<'_>>,
    options: &CompareOptions,
    backend: &dyn Backend,
    executor: ExecutorFactory<'_>,
    progress: &mut dyn FnMut(CompareEvent),
) -> Result<Comparison> {
    check(options)?;
    let graph = &model.graph;
    if options.allocations.contains(&Allocation::Accuracy) {
        match &validation {
            Some(v) => sensitivity::check_validation(graph, v)?,
            None => {
                return Err(Error::InvalidArgument(
                    "the accuracy budget needs labelled validation images".into(),
                ))
            }
        }
    }
    let accuracy = |g: &Graph| -> Result<f64> {
        let exec = executor(g)?;
        let r = evaluate(
            exec.as_ref(),
            test,
            labels,
            options.eval_batch,
            &mut |_, _| {},
        )?;
        Ok(r.top1_accuracy())
    };
    let baseline_top1 = accuracy(graph)?;
    let ls = layerwise_stats(
        graph,
        calib,
        &options.prune,
        backend,
        executor,
        &mut |d, n| progress(CompareEvent::Statistics(d, n)),
    )?;
    let layers: Vec<_> = ls.layers.iter().map(|l| &l.layer).collect();
    let params = CostModel::parameters(graph, &layers);
    let flops = CostModel::flops(graph, &layers);
    let greedy = Greedy::default();
    // One greedy run per layer, when the greedy or the error allocation needs it.
    let t = Instant::now();
    let curves = if options
        .methods
        .iter()
        .any(|m| matches!(m, Method::Greedy | Method::GreedyTail))
        || options
            .allocations
            .iter()
            .any(|a| *a != Allocation::Uniform)
    {
        Some(ls.greedy_curves(backend, options.prune.dependence_tol, &greedy)?)
    } else {
        None
    };
    let greedy_seconds = t.elapsed().as_secs_f64();
    // The accuracy budget: every layer pruned alone (greedy, reweighted as options.prune says)
    // at a grid of sizes, measured on the validation images once for all compressions.
    let sensitivity = match validation {
        Some(v) if options.allocations.contains(&Allocation::Accuracy) => {
            Some(sensitivity::measure(
                graph,
                &ls,
                &greedy,
                v,
                &options.prune,
                backend,
                executor,
                &mut |d, n| progress(CompareEvent::Sensitivity(d, n)),
            )?)
        }
        _ => None,
    };
    let mut allocations = Vec::new();
    for &allocation in &options.allocations {
        for &r in &options.compressions {
            let a = match (&sensitivity, allocation) {
                (Some(s), Allocation::Accuracy) => {
                    budget::allocate_accuracy(&params, Target::Compression(r), s, curves.as_deref())
                }
                _ => budget::allocate(
                    &params,
                    Target::Compression(r),
                    allocation,
                    curves.as_deref(),
                ),
            }
            .map_err(|e| {
                Error::InvalidArgument(format!("{allocation} budget, compression {r}: {e}"))
            })?;
            let sizes: Vec<(String, usize, usize)> = ls
                .layers
                .iter()
                .zip(&a.keeps)
                .map(|(l, &k)| (l.layer.name.clone(), l.layer.channels, k))
                .collect();
            allocations.push((allocation, r, a.keeps, sizes));
        }
    }
    let parameters = graph.parameter_count();
    let mut rows = Vec::new();
    for (allocation, r, keeps, sizes) in &allocations {
        // Evaluates one pruned graph and reports its row.
        let mut record = |method: &str,
                          reweight: bool,
                          seed: Option<u64>,
                          g: &Graph,
                          prune_seconds: f64|
         -> Result<()> {
            let t = Instant::now();
            let top1 = accuracy(g)?;
            let p = g.parameter_count();
            let row = CompareRow {
                method: method.into(),
                reweight,
                seed,
                budget: *allocation,
                target: *r,
                parameters: p,
                compression: parameters as f64 / p.max(1) as f64,
                flops: flops.cost(keeps),
                top1,
                prune_seconds,
                eval_seconds: t.elapsed().as_secs_f64(),
            };
            progress(CompareEvent::Row(row.clone()));
            rows.push(row);
            Ok(())
        };
        for &method in &options.methods {
            for seed in options.seeds_of(method) {
                let fresh;
                let tail;
                let selector: &dyn Selector = match method {
                    Method::Greedy => &greedy,
                    Method::GreedyTail => {
                        tail = GreedyTail { greedy: &greedy };
                        &tail
                    }
                    m => {
                        fresh = m.selector(seed.unwrap_or(0));
                        fresh.as_ref()
                    }
                };
                for reweight in REWEIGHTS {
                    let t = Instant::now();
                    let opts = PruneOptions {
                        reweight,
                        ..options.prune.clone()
                    };
                    let (g, _) = ls.prune(graph, selector, keeps, &opts, backend)?;
                    let prune_seconds = t.elapsed().as_secs_f64();
                    record(method.name(), reweight, seed, &g, prune_seconds)?;
                }
            }
        }
        if options.asym {
            for reweight in REWEIGHTS {
                let t = Instant::now();
                let opts = PruneOptions {
                    variant: Variant::Asym,
                    method: Method::Greedy,
                    reweight,
                    keep: sizes.iter().map(|(n, _, k)| (n.clone(), *k)).collect(),
                    budget: None,
                    ..options.prune.clone()
                };
                let pruned = prune_with(model, calib, &opts, backend, executor, &mut |_| {})?;
                let prune_seconds = t.elapsed().as_secs_f64();
                record(
                    "greedy-asym",
                    reweight,
                    None,
                    &pruned.model.graph,
                    prune_seconds,
                )?;
            }
        }
    }
    Ok(Comparison {
        baseline_top1,
        parameters,
        allocations: allocations
            .into_iter()
            .map(|(a, r, _, s)| (a, r, s))
            .collect(),
        stats_seconds: ls.seconds,
        greedy_seconds,
        sensitivity,
        rows,
    })
}
