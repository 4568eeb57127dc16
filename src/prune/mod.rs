//! Pruning a whole network (`docs/ALGORITHM.md` §3–4): the channel dependencies of
//! [`crate::analysis::channels`] say which producers can lose channels; for each, the statistics of
//! its consumers are streamed from forward-pass taps into the backend's accumulators batch by
//! batch, one greedy run gives the selection and the error curve, the consumers are reweighted,
//! and the IR is edited ([`rewrite`]). The result is written with [`crate::onnx::save`].
//!
//! Variants: [`Variant::Layer`] (every layer on the original network's activations, one forward
//! pass), [`Variant::Seq`] (layers in order, each on the network already pruned up to it) and
//! [`Variant::Asym`] (in order; inputs `B` from the pruned network, targets `A` from the original).
//! The sequential variants resume each layer's forward pass from cached activations at the last
//! point before its producer where a single activation is alive (a block boundary), when those
//! fit the memory budget, rather than rerunning the network from its input.
//!
//! Sizes: a keep fraction, per-layer counts, or a whole-model [`ModelBudget`] that
//! [`prune_with`] plans first ([`budget`]); with the `error` and `accuracy` allocations and
//! [`Variant::Layer`], the budget's statistics and greedy runs are the pipeline's too.
//!
//! Stages, one file each: [`options`] (what is asked, checked), `jobs` (names → layers, once),
//! [`budget`] (sizes for a whole-model target), `pipeline` (the variants), [`rewrite`] (keep
//! sets → IR edits), [`report`] (what was done). [`layerwise`] and [`compare`] reuse the
//! pipeline's feed (`feed`) for statistics of every layer at once.
//!
//! ```no_run
//! use subprune::exec::run::F32Images;
//! use subprune::prune::{prune, PruneOptions, Variant};
//! let model = subprune::onnx::load("mnist_cnn.onnx")?;
//! let calib = F32Images::new("calib", subprune::npy::read_f32("mnist_calib_512.npy")?)?;
//! let options = PruneOptions { variant: Variant::Asym, keep_fraction: 0.5, ..Default::default() };
//! let pruned = prune(&model, &calib, &options, &mut |_| {})?;
//! for layer in &pruned.report.layers {
//!     println!("{}: {} -> {} channels, error {:.4}", layer.name, layer.channels_before,
//!              layer.channels_after, layer.relative_error);
//! }
//! subprune::onnx::save(&pruned.model, "mnist_pruned.onnx", &Default::default())?;
//! # Ok::<(), subprune::Error>(())
//! ```

pub mod budget;
pub mod compare;
mod cut;
mod feed;
mod jobs;
pub mod layerwise;
pub mod memory;
pub mod options;
mod pipeline;
pub mod plot;
pub mod report;
pub mod rewrite;
pub mod select;
pub mod sensitivity;

pub use options::{
    ModelBudget, PruneOptions, ValidationSet, Variant, DEFAULT_MEMORY_BUDGET, DEFAULT_RIDGE,
};
pub use report::{LayerReport, Phases, PruneReport, Pruned, Recorded};

use std::time::Instant;

use crate::analysis::channels::{analyze, ChannelAnalysis};
use crate::backend::Backend;
use crate::error::{Context, Result};
use crate::exec::run::ImageSource;
use crate::exec::Executor;
use crate::ir::Graph;
use crate::onnx::OnnxModel;

/// What the pipeline is doing, for progress displays.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// Starting layer `index` (0-based) of `layers`.
    Layer {
        /// Index of the layer.
        index: usize,
        /// Layers in all.
        layers: usize,
        /// Its producer's name.
        name: &'a str,
    },
    /// Forward pass (with statistics): images done of total.
    Forward {
        /// Images done.
        done: usize,
        /// Images in all.
        total: usize,
    },
    /// Greedy: steps done of channels.
    Greedy {
        /// Steps done.
        done: usize,
        /// Channels.
        total: usize,
    },
}

/// Builds an executor for a graph (the pipeline runs partial and pruned graphs).
pub type ExecutorFactory<'a> = &'a dyn Fn(&Graph) -> Result<Box<dyn Executor>>;

/// Prunes `model` on the CPU backend with the CPU executor. See [`prune_with`].
pub fn prune(
    model: &OnnxModel,
    calib: &dyn ImageSource,
    options: &PruneOptions,
    progress: &mut dyn FnMut(Event<'_>),
) -> Result<Pruned> {
    let (backend, factory) = cpu_engines();
    prune_with(model, calib, options, &backend, &factory, progress)
}

/// The CPU backend and an executor factory for the CPU executor.
pub fn cpu_engines() -> (
    crate::CpuBackend,
    impl Fn(&Graph) -> Result<Box<dyn Executor>>,
) {
    (crate::CpuBackend::new(), |g: &Graph| {
        Ok(Box::new(crate::exec::CpuExecutor::new(g)?) as Box<dyn Executor>)
    })
}

/// Prunes `model`: statistics on `backend`, forward passes on executors from `executor`. A
/// The channel groups of `graph` that `options` allow ([`PruneOptions::groups`]).
pub(crate) fn analysis_for(graph: &Graph, options: &PruneOptions) -> ChannelAnalysis {
    analyze(graph).restrict(graph, options.groups)
}

/// [`PruneOptions::budget`] is planned first (its sizes are in [`Pruned::budget`]).
pub fn prune_with(
    model: &OnnxModel,
    calib: &dyn ImageSource,
    options: &PruneOptions,
    backend: &dyn Backend,
    executor: ExecutorFactory<'_>,
    progress: &mut dyn FnMut(Event<'_>),
) -> Result<Pruned> {
    let start = Instant::now();
    options.check()?;
    let analysis = analysis_for(&model.graph, options);
    let memory_plan = memory::plan(&model.graph, &analysis, options)?;
    let (budget, measured) = match &options.budget {
        Some(b) => {
            let inputs =
                feed::PassInputs::new(&model.graph, &analysis, calib, options, backend, executor);
            let validation = b.validation.as_ref().map(ValidationSet::as_validation);
            let (plan, measured) = budget::plan_on(&inputs, validation, b.target, b.allocation)
                .context(|| "resolving the budget")?;
            (Some(plan), measured)
        }
        None => (None, None),
    };
    let keep = match &budget {
        Some(plan) => plan.keep(),
        None => options.keep.clone(),
    };
    let (jobs, left_whole) =
        jobs::resolve_jobs(&model.graph, &analysis, options, &keep, budget.is_some())?;
    let original = executor(&model.graph)?;
    feed::check_images(original.as_ref(), calib)?;
    let mut run = pipeline::Run {
        original_graph: &model.graph,
        graph: model.graph.clone(),
        calib,
        options,
        backend,
        executor,
        progress,
        phases: Phases::default(),
        recorded: None,
        applied: Default::default(),
    };
    let layers = match (options.variant, measured) {
        // The budget's statistics are those of this variant; a recorded layer needs its inputs.
        (Variant::Layer, Some(m)) if options.record.is_none() => {
            run.layer_variant_from(&jobs, m.layerwise, &m.greedy)?
        }
        (Variant::Layer, _) => run.layer_variant(&jobs)?,
        (Variant::Seq | Variant::Asym, _) => run.sequential(&jobs)?,
    };
    let mut graph = run.graph;
    rewrite::reshape(&mut graph)?;
    let mut layers = layers;
    for (l, job) in layers.iter_mut().zip(&jobs) {
        // Every node whose weight the group resizes: producers, depthwise convs, consumers.
        let g = job.layer;
        let mut nodes: Vec<usize> = g.producers.iter().copied().chain(g.depthwise()).collect();
        nodes.extend(g.consumers.iter().map(|c| c.node));
        nodes.sort_unstable();
        nodes.dedup();
        // The rewrite edits nodes in place: the same indices in both graphs.
        l.parameters_before = report::node_parameters(&model.graph, &nodes);
        l.parameters_after = report::node_parameters(&graph, &nodes);
    }
    let report = PruneReport {
        variant: options.variant,
        method: options.method,
        reweight: options.reweight,
        ridge: options.ridge,
        images: calib.len(),
        backend: backend.name(),
        executor: original.name(),
        layers,
        left_whole,
        parameters_before: model.graph.parameter_count(),
        parameters_after: graph.parameter_count(),
        flops_before: report::flops(&model.graph),
        flops_after: report::flops(&graph),
        phases: run.phases,
        memory_peak_bytes: memory_plan.peak_bytes,
        seconds: start.elapsed().as_secs_f64(),
    };
    let recorded = run.recorded;
    let mut model = model.clone();
    model.graph = graph;
    Ok(Pruned {
        model,
        report,
        recorded,
        budget,
    })
}
