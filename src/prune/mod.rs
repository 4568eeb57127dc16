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
pub mod layerwise;
pub mod rewrite;
pub mod select;
pub mod sensitivity;

pub(crate) use pipeline::shared_greedy;

use std::collections::HashMap;
use std::time::Instant;

use crate::analysis::channels::{analyze, ChannelAnalysis, PrunableLayer};
use crate::backend::{Backend, StatsSpec};
use crate::error::{Error, Result};
use crate::exec::run::ImageSource;
use crate::exec::{Activation, Executor};
use crate::ir::{Graph, ValueId};
use crate::layer::greedy::{run_greedy, GreedyRun};
use crate::layer::{LayerProblem, LayerStats};
use crate::onnx::OnnxModel;
use crate::tensor::{Tensor, TensorView};
use rewrite::{consumer_problem, set_consumer_weight, slice_producer, WeightForm};

/// Default relative ridge `λ / mean diag G[S,S]` of the reweighting (chosen by measurement on the
/// fixtures; see `EVALUATION.md`).
pub const DEFAULT_RIDGE: f64 = 1e-2;

/// Default memory for cached activations of the sequential variants (2 GiB).
pub const DEFAULT_MEMORY_BUDGET: u64 = 2 << 30;

/// Which activations each layer's statistics use (`docs/ALGORITHM.md` §3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// LayerInChange: the original network's activations for every layer.
    Layer,
    /// SeqInChange: the network pruned up to the layer, `A = B`.
    Seq,
    /// AsymInChange: `B` from the pruned network, `A` from the original.
    #[default]
    Asym,
}

impl std::str::FromStr for Variant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "layer" => Ok(Variant::Layer),
            "seq" => Ok(Variant::Seq),
            "asym" => Ok(Variant::Asym),
            other => Err(Error::InvalidArgument(format!(
                "variant '{other}': expected layer, seq or asym"
            ))),
        }
    }
}

/// Options of [`prune`].
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Which activations the statistics use.
    pub variant: Variant,
    /// How each layer's channels are chosen ([`select`]).
    pub method: select::Method,
    /// Seed of the random methods.
    pub seed: u64,
    /// Replace the consumers' weights by the reweighted `W~` (else keep their original rows).
    pub reweight: bool,
    /// Fraction of channels kept in every prunable layer without a [`PruneOptions::keep`] entry.
    pub keep_fraction: f64,
    /// Channels kept per layer, by producer node name (overrides the fraction).
    pub keep: Vec<(String, usize)>,
    /// Prunable layers left whole, by producer node name.
    pub skip: Vec<String>,
    /// Relative ridge of the reweighting (`λ = ridge · mean diag G[S,S]`).
    pub ridge: f64,
    /// Relative pivot tolerance for numerically dependent channels.
    pub dependence_tol: f64,
    /// Images per forward batch.
    pub batch_images: usize,
    /// Bytes of cached activations the sequential variants may hold.
    pub memory_budget: u64,
    /// Keep the consumer inputs (and targets) that one layer's statistics used, by producer name,
    /// in [`Pruned::recorded`] (for checks; holds all calibration activations of that layer).
    pub record: Option<String>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            variant: Variant::Asym,
            method: select::Method::Greedy,
            seed: 0,
            reweight: true,
            keep_fraction: 0.5,
            keep: Vec::new(),
            skip: Vec::new(),
            ridge: DEFAULT_RIDGE,
            dependence_tol: crate::DEFAULT_DEPENDENCE_TOL,
            batch_images: crate::DEFAULT_BATCH_IMAGES,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            record: None,
        }
    }
}

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

/// One pruned layer in the report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerReport {
    /// The producer's name.
    pub name: String,
    /// Its op kind.
    pub op: String,
    /// The consumers whose weights were replaced.
    pub consumers: Vec<String>,
    /// Output channels before.
    pub channels_before: usize,
    /// Output channels after.
    pub channels_after: usize,
    /// `Σ‖A_jW_j − B_j,S W~_j‖² / Σ‖A_jW_j‖²` over the consumers, with the weights written.
    pub relative_error: f64,
    /// The greedy error curve (`err(S_k)` for `k = 1..channels`, with the optimal weights); empty
    /// when the method is not the greedy.
    pub error_curve: Vec<f64>,
    /// The greedy order (other methods: the kept channels).
    pub order: Vec<usize>,
    /// The kept channels, sorted.
    pub kept: Vec<usize>,
    /// Unfolded rows of the (first) consumer's statistics.
    pub rows: usize,
    /// Columns `D` of the (first) consumer's unfolded input.
    pub columns: usize,
    /// Fewer unfolded rows than columns in some consumer.
    pub rank_deficient: bool,
    /// The greedy step from which every gain is 0 (the rest of the order is a tie), if any.
    pub zero_gain_from: Option<usize>,
    /// Seconds spent on this layer (forward passes, statistics, greedy, reweighting).
    pub seconds: f64,
}

/// Seconds by phase, and the statistics' data movement.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Phases {
    /// Forward passes with the statistics accumulated from their taps.
    pub forward_and_statistics: f64,
    /// Greedy runs.
    pub greedy: f64,
    /// Reweighting solves and IR edits.
    pub reweight: f64,
    /// Bytes of statistics inputs and targets the backend received from the host (0 on the CPU
    /// backend, which reads them in place).
    pub statistics_uploaded_bytes: u64,
    /// Bytes of statistics inputs the backend copied on the device from the GPU executor's
    /// activations (no host round trip).
    pub statistics_device_bytes: u64,
}

/// The report of one pruning run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PruneReport {
    /// Variant.
    pub variant: Variant,
    /// Selection method.
    pub method: select::Method,
    /// Whether consumers were reweighted.
    pub reweight: bool,
    /// Relative ridge.
    pub ridge: f64,
    /// Calibration images.
    pub images: usize,
    /// The statistics backend.
    pub backend: String,
    /// The forward executor.
    pub executor: String,
    /// Pruned layers, in order.
    pub layers: Vec<LayerReport>,
    /// Producers left whole: `(name, reason)` (coupled, or skipped).
    pub left_whole: Vec<(String, String)>,
    /// Parameters before.
    pub parameters_before: usize,
    /// Parameters after.
    pub parameters_after: usize,
    /// FLOPs per image before.
    pub flops_before: u64,
    /// FLOPs per image after.
    pub flops_after: u64,
    /// Time by phase.
    pub phases: Phases,
    /// Total seconds.
    pub seconds: f64,
}

/// The inputs one layer's statistics used (see [`PruneOptions::record`]).
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The producer's name.
    pub layer: String,
    /// The first consumer's problem, with the weight it had when the layer was processed.
    pub problem: LayerProblem,
    /// Its input `B`, all calibration images, in the consumer's unfolding shape.
    pub inputs: Tensor,
    /// Its target `A` (asymmetric variant only).
    pub target: Option<Tensor>,
    /// The channels kept.
    pub kept: Vec<usize>,
}

/// A pruned model and what was done.
#[derive(Clone, Debug)]
pub struct Pruned {
    /// The model with its IR edited; write it with [`crate::onnx::save`].
    pub model: OnnxModel,
    /// What was done.
    pub report: PruneReport,
    /// See [`PruneOptions::record`].
    pub recorded: Option<Recorded>,
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

/// Producers left whole: `(name, reason)`.
type LeftWhole = Vec<(String, String)>;

/// A layer to prune, resolved against the options.
struct Job<'a> {
    layer: &'a PrunableLayer,
    keep: usize,
}

fn resolve_jobs<'a>(
    graph: &Graph,
    analysis: &'a ChannelAnalysis,
    options: &PruneOptions,
) -> Result<(Vec<Job<'a>>, LeftWhole)> {
    if !(options.keep_fraction > 0.0 && options.keep_fraction <= 1.0) {
        return Err(Error::InvalidArgument(format!(
            "keep fraction {}: must be in (0, 1]",
            options.keep_fraction
        )));
    }
    if !(options.ridge >= 0.0 && options.ridge.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "ridge {} must be finite and ≥ 0",
            options.ridge
        )));
    }
    if !(0.0..1.0).contains(&options.dependence_tol) {
        return Err(Error::InvalidArgument(format!(
            "dependence tolerance {} must be in [0, 1)",
            options.dependence_tol
        )));
    }
    if options.batch_images == 0 {
        return Err(Error::InvalidArgument(
            "batch size must be ≥ 1 image".into(),
        ));
    }
    let check_node = |name: &str, what: &str| -> Result<()> {
        if graph.node(name).is_none() {
            return Err(Error::InvalidArgument(format!(
                "{what} '{name}': the model has no node of that name"
            )));
        }
        Ok(())
    };
    let mut keep = HashMap::new();
    for (name, k) in &options.keep {
        check_node(name, "--keep")?;
        let layer = match analysis.prunable(name) {
            Some(l) => l,
            None => {
                let why = analysis
                    .coupled(name)
                    .map(|c| format!("its channels are coupled: {}", c.reason))
                    .unwrap_or_else(|| {
                        "it is not a Conv, Gemm or MatMul with a constant weight".into()
                    });
                return Err(Error::InvalidArgument(format!(
                    "--keep '{name}': not a prunable layer ({why})"
                )));
            }
        };
        if *k == 0 || *k > layer.channels {
            return Err(Error::InvalidArgument(format!(
                "--keep '{name}={k}': must be between 1 and the layer's {} channels",
                layer.channels
            )));
        }
        if keep.insert(name.as_str(), *k).is_some() {
            return Err(Error::InvalidArgument(format!(
                "--keep '{name}' is given twice"
            )));
        }
    }
    for name in &options.skip {
        check_node(name, "--skip")?;
        if keep.contains_key(name.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "'{name}' is both kept with --keep and skipped with --skip"
            )));
        }
    }
    if let Some(r) = &options.record {
        if analysis.prunable(r).is_none() || options.skip.contains(r) {
            return Err(Error::InvalidArgument(format!(
                "record '{r}': not a layer that is pruned"
            )));
        }
    }
    let mut left_whole: Vec<(String, String)> = analysis
        .coupled
        .iter()
        .map(|c| (c.name.clone(), c.reason.clone()))
        .collect();
    let mut jobs = Vec::new();
    for layer in &analysis.prunable {
        if options.skip.contains(&layer.name) {
            left_whole.push((layer.name.clone(), "skipped".into()));
            continue;
        }
        let k = match keep.get(layer.name.as_str()) {
            Some(&k) => k,
            None => crate::Budget::KeepFraction(options.keep_fraction).resolve(layer.channels)?,
        };
        jobs.push(Job { layer, keep: k });
    }
    if jobs.is_empty() {
        return Err(Error::InvalidArgument(
            "no layer to prune: the model has no prunable layer, or all are skipped".into(),
        ));
    }
    Ok((jobs, left_whole))
}

fn flops(graph: &Graph) -> u64 {
    graph
        .nodes
        .iter()
        .map(|n| 2 * graph.macs_per_image(n))
        .sum()
}

/// Prunes `model`: statistics on `backend`, forward passes on executors from `executor`.
pub fn prune_with(
    model: &OnnxModel,
    calib: &dyn ImageSource,
    options: &PruneOptions,
    backend: &dyn Backend,
    executor: ExecutorFactory<'_>,
    progress: &mut dyn FnMut(Event<'_>),
) -> Result<Pruned> {
    let start = Instant::now();
    let analysis = analyze(&model.graph);
    let (jobs, left_whole) = resolve_jobs(&model.graph, &analysis, options)?;
    let original = executor(&model.graph)?;
    pipeline::check_images(original.as_ref(), calib)?;
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
    };
    let layers = match options.variant {
        Variant::Layer => run.layer_variant(&jobs)?,
        Variant::Seq | Variant::Asym => run.sequential(&jobs)?,
    };
    let mut graph = run.graph;
    rewrite::reshape(&mut graph)?;
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
        flops_before: flops(&model.graph),
        flops_after: flops(&graph),
        phases: run.phases,
        seconds: start.elapsed().as_secs_f64(),
    };
    let recorded = run.recorded;
    let mut model = model.clone();
    model.graph = graph;
    Ok(Pruned {
        model,
        report,
        recorded,
    })
}

mod pipeline {
    use super::*;

    /// Checks the calibration images against the model input before any work.
    pub(super) fn check_images(exec: &dyn Executor, calib: &dyn ImageSource) -> Result<()> {
        let plan = exec.plan();
        let model_image: Vec<usize> = plan.input_shape().0[1..].iter().map(|d| d.at(1)).collect();
        if calib.image_shape() != model_image.as_slice() {
            return Err(Error::Shape(format!(
                "the calibration images are {:?} each; model input '{}' takes {} (N images of {:?})",
                calib.image_shape(),
                plan.graph.values[plan.input].name,
                plan.input_shape(),
                model_image
            )));
        }
        if calib.is_empty() {
            return Err(Error::InvalidArgument(
                "the calibration set holds no images".into(),
            ));
        }
        Ok(())
    }

    /// Activations of every calibration image at one value, or the images themselves.
    struct Cache {
        /// Node position: the value is alive alone before node `pos`.
        pos: usize,
        value: ValueId,
        /// `None`: the graph input, read from the calibration source.
        data: Option<Vec<f32>>,
        image_dims: Vec<usize>,
    }

    impl Cache {
        fn image_len(&self) -> usize {
            self.image_dims.iter().product()
        }

        /// Images `first..first + count` as a tensor.
        fn batch(&self, calib: &dyn ImageSource, first: usize, count: usize) -> Result<Tensor> {
            let per = self.image_len();
            let mut shape = vec![count];
            shape.extend_from_slice(&self.image_dims);
            let data = match &self.data {
                Some(d) => d[first * per..(first + count) * per].to_vec(),
                None => {
                    let mut out = vec![0.0; count * per];
                    calib.fill(first, &mut out)?;
                    out
                }
            };
            Tensor::new(shape, data)
        }
    }

    /// For each node position `p`, the one activation alive before node `p` when there is
    /// exactly one (a point to resume a forward pass from).
    pub(super) fn single_live(graph: &Graph) -> Vec<Option<ValueId>> {
        let n = graph.nodes.len();
        let producers = graph.producers();
        let consumers = graph.consumers();
        let mut spans = Vec::new();
        for (v, value) in graph.values.iter().enumerate() {
            if value.constant.is_some() {
                continue;
            }
            let birth = match producers[v] {
                Some(p) => p + 1,
                None if graph.inputs.contains(&v) => 0,
                None => continue,
            };
            let last = if graph.outputs.contains(&v) {
                n
            } else {
                match consumers[v].last() {
                    Some(&c) => c,
                    None => continue,
                }
            };
            spans.push((v, birth, last));
        }
        // One sweep over the positions (not spans × positions: quadratic on long chains): the
        // count of live spans and the sum of their ids, which is the id when the count is 1.
        let (mut count, mut ids) = (vec![0i64; n + 2], vec![0i128; n + 2]);
        for &(v, b, l) in spans.iter().filter(|&&(_, b, l)| b <= l) {
            (count[b], count[l + 1]) = (count[b] + 1, count[l + 1] - 1);
            (ids[b], ids[l + 1]) = (ids[b] + v as i128, ids[l + 1] - v as i128);
        }
        let (mut live, mut sum) = (0i64, 0i128);
        (0..=n)
            .map(|p| {
                (live, sum) = (live + count[p], sum + ids[p]);
                (live == 1).then_some(sum as ValueId)
            })
            .collect()
    }

    /// The part of `graph` that computes `outputs` from `from` (and constants).
    pub(super) fn subgraph(graph: &Graph, from: ValueId, outputs: &[ValueId]) -> Result<Graph> {
        let producers = graph.producers();
        let mut need = vec![false; graph.nodes.len()];
        let mut seen = vec![false; graph.values.len()];
        let mut stack = outputs.to_vec();
        while let Some(v) = stack.pop() {
            if seen[v] || v == from || graph.values[v].constant.is_some() {
                continue;
            }
            seen[v] = true;
            match producers[v] {
                Some(p) => {
                    need[p] = true;
                    stack.extend(graph.nodes[p].inputs.iter().flatten().copied());
                }
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "internal: '{}' is not computed from '{}'",
                        graph.values[v].name, graph.values[from].name
                    )))
                }
            }
        }
        let mut g = graph.clone();
        g.nodes = graph
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| need[*i])
            .map(|(_, n)| n.clone())
            .collect();
        g.inputs = vec![from];
        g.outputs = outputs.to_vec();
        Ok(g)
    }

    /// The consumers of one layer: problems and accumulators.
    struct LayerStatsJob<'b> {
        problems: Vec<(LayerProblem, WeightForm)>,
        accs: Vec<Box<dyn crate::backend::StatsAccumulator + 'b>>,
        /// Tapped value of each consumer.
        taps: Vec<ValueId>,
        record: Option<(Vec<f32>, Option<Vec<f32>>)>,
    }

    pub(super) struct Run<'a> {
        pub original_graph: &'a Graph,
        pub graph: Graph,
        pub calib: &'a dyn ImageSource,
        pub options: &'a PruneOptions,
        pub backend: &'a dyn Backend,
        pub executor: ExecutorFactory<'a>,
        pub progress: &'a mut dyn FnMut(Event<'_>),
        pub phases: Phases,
        pub recorded: Option<Recorded>,
    }

    fn view_as<'t>(shape: &'t [usize], data: &'t [f32]) -> Result<TensorView<'t>> {
        TensorView::new(shape, data)
    }

    impl<'a> Run<'a> {
        fn stats_job(&self, job: &Job<'_>, with_target: bool) -> Result<LayerStatsJob<'a>> {
            let mut problems = Vec::new();
            let mut accs = Vec::new();
            let mut taps = Vec::new();
            for c in &job.layer.consumers {
                let (problem, form) = consumer_problem(&self.graph, c)?;
                accs.push(
                    self.backend.stats_accumulator(
                        StatsSpec::new(problem.unfolding, with_target)
                            .with_weight(&problem.weight, problem.outputs),
                    )?,
                );
                problems.push((problem, form));
                taps.push(c.input);
            }
            let record = (self.options.record.as_deref() == Some(job.layer.name.as_str()))
                .then(|| (Vec::new(), with_target.then(Vec::new)));
            Ok(LayerStatsJob {
                problems,
                accs,
                taps,
                record,
            })
        }

        /// Feeds one tapped batch of `value` to every consumer of `sj` that reads it. An
        /// activation on the device goes to the accumulators as it is (a GPU backend on the same
        /// device copies it there); it is read back only for a recorded layer.
        fn feed(
            sj: &mut LayerStatsJob<'_>,
            value: ValueId,
            b: Activation<'_>,
            a: Option<TensorView<'_>>,
        ) -> Result<()> {
            let n = b.shape()[0];
            for j in 0..sj.taps.len() {
                if sj.taps[j] != value {
                    continue;
                }
                let unfolding = sj.problems[j].0.unfolding;
                let mut shape = vec![n];
                if matches!(unfolding.consumer, crate::Consumer::Linear) {
                    shape.push(unfolding.channels);
                } else {
                    shape.extend_from_slice(&[
                        unfolding.channels,
                        unfolding.height,
                        unfolding.width,
                    ]);
                }
                let av = match &a {
                    Some(a) => Some(view_as(&shape, a.data)?),
                    None => None,
                };
                match b {
                    Activation::Host(h) => sj.accs[j].add_batch(view_as(&shape, h.data)?, av)?,
                    Activation::Device(d) => {
                        sj.accs[j].add_device_batch(d.reshaped(&shape)?, av)?
                    }
                }
                if j == 0 {
                    if let Some((rb, ra)) = &mut sj.record {
                        match b.host() {
                            Some(h) => rb.extend_from_slice(h.data),
                            None => rb.extend_from_slice(&b.to_host()?.data),
                        }
                        if let (Some(ra), Some(a)) = (ra, &a) {
                            ra.extend_from_slice(a.data);
                        }
                    }
                }
            }
            Ok(())
        }

        /// Greedy, reweighting and the IR edits of one layer from its accumulated statistics.
        fn finish_layer(
            &mut self,
            job: &Job<'_>,
            sj: LayerStatsJob<'_>,
            started: Instant,
        ) -> Result<LayerReport> {
            let LayerStatsJob {
                problems,
                accs,
                record,
                ..
            } = sj;
            let mut stats = Vec::new();
            for ((problem, _), acc) in problems.iter().zip(accs) {
                let raw = acc.finish_with_weight(&problem.weight, problem.outputs)?;
                self.phases.statistics_uploaded_bytes += raw.phases.uploaded_bytes;
                self.phases.statistics_device_bytes += raw.phases.device_bytes;
                stats.push(LayerStats::from_raw(problem, raw)?);
            }
            let t = Instant::now();
            let selection = self.options.method.selector(self.options.seed).select(
                &select::LayerContext {
                    name: &job.layer.name,
                    index: job.layer.producer,
                    stats: &stats,
                    backend: self.backend,
                    dependence_tol: self.options.dependence_tol,
                },
                job.keep,
                &mut |d, n| (self.progress)(Event::Greedy { done: d, total: n }),
            )?;
            self.phases.greedy += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let kept = selection.kept.clone();
            let mut residual = 0.0;
            let mut total = 0.0;
            let mut new_weights = Vec::new();
            for ((problem, form), st) in problems.iter().zip(&stats) {
                let r = select::consumer_rows(
                    st,
                    &selection,
                    self.options.reweight,
                    self.options.ridge,
                    self.options.dependence_tol,
                )?;
                residual += r.residual;
                total += st.total;
                new_weights.push((*form, problem.weight_tensor(&kept, &r.weight)));
            }
            if let Some((rb, ra)) = record {
                let (problem, _) = &problems[0];
                let u = problem.unfolding;
                let mut shape = vec![self.calib.len()];
                if matches!(u.consumer, crate::Consumer::Linear) {
                    shape.push(u.channels);
                } else {
                    shape.extend_from_slice(&[u.channels, u.height, u.width]);
                }
                self.recorded = Some(Recorded {
                    layer: job.layer.name.clone(),
                    problem: problem.clone(),
                    inputs: Tensor::new(shape.clone(), rb)?,
                    target: ra.map(|a| Tensor::new(shape, a)).transpose()?,
                    kept: kept.clone(),
                });
            }
            for (c, (form, w)) in job.layer.consumers.iter().zip(new_weights) {
                set_consumer_weight(&mut self.graph, c, form, w)?;
            }
            slice_producer(&mut self.graph, job.layer, &kept)?;
            if self.options.variant != Variant::Layer {
                rewrite::reshape(&mut self.graph)?;
            }
            self.phases.reweight += t.elapsed().as_secs_f64();
            let rows = stats[0].rows;
            let columns = stats[0].layout.columns();
            let rank_deficient = stats.iter().any(|s| s.rows < s.layout.columns());
            let zero_gain_from = selection.greedy.as_ref().and_then(|run| {
                run.gains
                    .iter()
                    .position(|&g| g <= select::greedy_tail::TAIL_GAIN)
            });
            Ok(LayerReport {
                name: job.layer.name.clone(),
                op: job.layer.op.clone(),
                consumers: job.layer.consumers.iter().map(|c| c.name.clone()).collect(),
                channels_before: job.layer.channels,
                channels_after: kept.len(),
                relative_error: if total > 0.0 { residual / total } else { 0.0 },
                error_curve: selection
                    .greedy
                    .as_ref()
                    .map_or_else(Vec::new, |r| r.error_curve.clone()),
                order: selection
                    .greedy
                    .as_ref()
                    .map_or_else(|| kept.clone(), |r| r.order.clone()),
                kept,
                rows,
                columns,
                rank_deficient,
                zero_gain_from,
                seconds: started.elapsed().as_secs_f64(),
            })
        }

        /// LayerInChange: one pass over the original network, every layer's statistics at once.
        pub(super) fn layer_variant(&mut self, jobs: &[Job<'_>]) -> Result<Vec<LayerReport>> {
            let started = Instant::now();
            let mut sjs = jobs
                .iter()
                .map(|j| self.stats_job(j, false))
                .collect::<Result<Vec<_>>>()?;
            let mut taps: Vec<ValueId> = sjs.iter().flat_map(|s| s.taps.clone()).collect();
            taps.sort_unstable();
            taps.dedup();
            let exec = (self.executor)(self.original_graph)?;
            let total = self.calib.len();
            let batch = self.options.batch_images;
            let t = Instant::now();
            let mut first = 0;
            while first < total {
                let count = batch.min(total - first);
                let cache = Cache {
                    pos: 0,
                    value: exec.plan().input,
                    data: None,
                    image_dims: self.calib.image_shape().to_vec(),
                };
                let input = cache.batch(self.calib, first, count)?;
                exec.run_batch(input.view(), &taps, &mut |v, act| {
                    for sj in sjs.iter_mut() {
                        Self::feed(sj, v, act, None)?;
                    }
                    Ok(())
                })?;
                first += count;
                (self.progress)(Event::Forward { done: first, total });
            }
            self.phases.forward_and_statistics += t.elapsed().as_secs_f64();
            let per_layer = started.elapsed().as_secs_f64() / jobs.len() as f64;
            let mut reports = Vec::new();
            for (i, (job, sj)) in jobs.iter().zip(sjs.drain(..)).enumerate() {
                (self.progress)(Event::Layer {
                    index: i,
                    layers: jobs.len(),
                    name: &job.layer.name,
                });
                let t = Instant::now();
                let mut r = self.finish_layer(job, sj, t)?;
                r.seconds += per_layer;
                reports.push(r);
            }
            Ok(reports)
        }

        /// SeqInChange / AsymInChange: layers in order on the network pruned so far. Each layer's
        /// forward pass starts from the cached activations of the previous cut point and, when the
        /// activations at this layer's cut point (the last point before its producer where one
        /// activation is alive alone) fit the memory budget, keeps them as the next cache, in the
        /// same pass: one pass over each network's segment per layer.
        pub(super) fn sequential(&mut self, jobs: &[Job<'_>]) -> Result<Vec<LayerReport>> {
            let asym = self.options.variant == Variant::Asym;
            let live = single_live(self.original_graph);
            let input_cache = || Cache {
                pos: 0,
                value: self.original_graph.inputs[0],
                data: None,
                image_dims: self.calib.image_shape().to_vec(),
            };
            let mut cur = input_cache();
            let mut orig = input_cache();
            let total = self.calib.len();
            let batch = self.options.batch_images;
            let copies = if asym { 2 } else { 1 };
            let mut reports = Vec::new();
            for (i, job) in jobs.iter().enumerate() {
                (self.progress)(Event::Layer {
                    index: i,
                    layers: jobs.len(),
                    name: &job.layer.name,
                });
                let started = Instant::now();
                let t = Instant::now();
                let p = (0..=job.layer.producer)
                    .rev()
                    .find(|&p| live[p].is_some())
                    .unwrap_or(0);
                let next_cut = live[p].filter(|&v| {
                    if p <= cur.pos || v == cur.value {
                        return false;
                    }
                    let per: usize = self.original_graph.values[v].shape.at(1)[1..]
                        .iter()
                        .product();
                    let bytes = (per * total * 4 * copies) as u64;
                    let held = cur.data.as_ref().map_or(0, |d| d.len() * 4 * copies) as u64;
                    bytes + held <= self.options.memory_budget
                });
                let mut sj = self.stats_job(job, asym)?;
                let mut taps = sj.taps.clone();
                taps.sort_unstable();
                taps.dedup();
                let mut outputs = taps.clone();
                let cut_index = next_cut.map(|v| match outputs.iter().position(|&o| o == v) {
                    Some(k) => k,
                    None => {
                        outputs.push(v);
                        outputs.len() - 1
                    }
                });
                let exec_cur = (self.executor)(&subgraph(&self.graph, cur.value, &outputs)?)?;
                let exec_orig = if asym {
                    Some((self.executor)(&subgraph(
                        self.original_graph,
                        orig.value,
                        &outputs,
                    )?)?)
                } else {
                    None
                };
                let cut_len = next_cut.map_or(0, |v| {
                    self.original_graph.values[v].shape.at(1)[1..]
                        .iter()
                        .product::<usize>()
                        * total
                });
                let mut next_cur = Vec::with_capacity(cut_len);
                let mut next_orig = Vec::with_capacity(if asym { cut_len } else { 0 });
                let mut first = 0;
                while first < total {
                    let count = batch.min(total - first);
                    let targets: Option<Vec<Tensor>> = match &exec_orig {
                        Some(e) => {
                            let input = orig.batch(self.calib, first, count)?;
                            let out = e.run_batch(input.view(), &[], &mut |_, _| Ok(()))?;
                            if let Some(k) = cut_index {
                                next_orig.extend_from_slice(&out[k].data);
                            }
                            Some(out)
                        }
                        None => None,
                    };
                    let input = cur.batch(self.calib, first, count)?;
                    let out = exec_cur.run_batch(input.view(), &taps, &mut |v, act| {
                        let a = targets
                            .as_ref()
                            .map(|t| t[taps.iter().position(|&x| x == v).expect("a tap")].view());
                        Self::feed(&mut sj, v, act, a)
                    })?;
                    if let Some(k) = cut_index {
                        next_cur.extend_from_slice(&out[k].data);
                    }
                    first += count;
                    (self.progress)(Event::Forward { done: first, total });
                }
                if let Some(v) = next_cut {
                    let image_dims = self.graph.values[v].shape.at(1)[1..].to_vec();
                    cur = Cache {
                        pos: p,
                        value: v,
                        data: Some(next_cur),
                        image_dims,
                    };
                    if asym {
                        orig = Cache {
                            pos: p,
                            value: v,
                            data: Some(next_orig),
                            image_dims: self.original_graph.values[v].shape.at(1)[1..].to_vec(),
                        };
                    }
                }
                self.phases.forward_and_statistics += t.elapsed().as_secs_f64();
                reports.push(self.finish_layer(job, sj, started)?);
            }
            Ok(reports)
        }
    }

    /// One greedy run over all consumers of a layer: gains summed, selection shared (one
    /// consumer: [`run_greedy`] itself).
    pub(crate) fn shared_greedy(
        backend: &dyn Backend,
        stats: &[LayerStats],
        tol: f64,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<GreedyRun> {
        if stats.len() == 1 {
            return run_greedy(backend, &stats[0], tol, &mut |_, d, n| progress(d, n));
        }
        let channels = stats[0].layout.channels;
        let mut states = stats
            .iter()
            .map(|s| {
                backend.greedy_state(crate::backend::GreedySpec {
                    layout: s.layout,
                    outputs: s.outputs,
                    gram: &s.gram,
                    c0: &s.c0,
                    dependence_tol: tol,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let total: f64 = stats.iter().map(|s| s.total).sum();
        let mut run = GreedyRun {
            order: Vec::new(),
            gains: Vec::new(),
            error_curve: Vec::new(),
            total,
        };
        let mut selected = vec![false; channels];
        let mut gains = vec![0.0; channels];
        let mut sum = vec![0.0; channels];
        let mut explained = 0.0;
        for step in 0..channels {
            sum.iter_mut().for_each(|s| *s = 0.0);
            for st in states.iter_mut() {
                st.score(&mut gains)?;
                for (s, g) in sum.iter_mut().zip(&gains) {
                    *s += g;
                }
            }
            let (pick, best_gain) =
                crate::layer::greedy::pick_channel(&sum, &selected, step, "statistics")?;
            for st in states.iter_mut() {
                st.select(pick)?;
            }
            selected[pick] = true;
            explained += best_gain;
            run.order.push(pick);
            run.gains.push(best_gain);
            run.error_curve
                .push(crate::layer::greedy::normalized_error(total, explained));
            progress(step + 1, channels);
        }
        Ok(run)
    }
}
