//! The statistics of every prunable layer on the *original* network (LayerInChange), from one
//! forward pass, kept so that any number of selections, sizes and reweighting choices can be
//! applied without another pass: what [`crate::compare`] and the `error` budget
//! ([`super::budget`]) reuse. [`LayerwiseStats::prune`] with the greedy gives the same model as
//! [`super::prune_with`] with [`super::Variant::Layer`].

use std::time::Instant;

use super::rewrite::{consumer_problem, set_consumer_weight, slice_producer, WeightForm};
use super::select::{consumer_rows, LayerContext, Selection, Selector};
use super::{ExecutorFactory, PruneOptions};
use crate::analysis::channels::{analyze, PrunableLayer};
use crate::backend::{Backend, StatsSpec};
use crate::error::{Error, Result};
use crate::exec::run::ImageSource;
use crate::exec::Activation;
use crate::ir::{Graph, ValueId};
use crate::layer::{LayerProblem, LayerStats};
use crate::tensor::{Tensor, TensorView};

/// One prunable layer and its consumers' statistics.
pub struct LayerwiseLayer {
    /// The layer.
    pub layer: PrunableLayer,
    /// The statistics of each consumer.
    pub stats: Vec<LayerStats>,
    problems: Vec<(LayerProblem, WeightForm)>,
}

/// The statistics of every pruned layer, on the original network's activations.
pub struct LayerwiseStats {
    /// The layers, in node order (skipped layers are absent).
    pub layers: Vec<LayerwiseLayer>,
    /// Calibration images used.
    pub images: usize,
    /// Seconds of the forward pass and statistics.
    pub seconds: f64,
}

/// The per-image shape the accumulator of `problem` takes.
fn unfolding_shape(problem: &LayerProblem, n: usize) -> Vec<usize> {
    let u = problem.unfolding;
    if matches!(u.consumer, crate::Consumer::Linear) {
        vec![n, u.channels]
    } else {
        vec![n, u.channels, u.height, u.width]
    }
}

/// Accumulates the statistics of every prunable layer of `graph` not in `options.skip`, in one
/// forward pass over `calib` (`progress(images done, total)`).
pub fn layerwise_stats(
    graph: &Graph,
    calib: &dyn ImageSource,
    options: &PruneOptions,
    backend: &dyn Backend,
    executor: ExecutorFactory<'_>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LayerwiseStats> {
    let start = Instant::now();
    if options.batch_images == 0 {
        return Err(Error::InvalidArgument(
            "batch size must be ≥ 1 image".into(),
        ));
    }
    let analysis = analyze(graph);
    let exec = executor(graph)?;
    super::pipeline::check_images(exec.as_ref(), calib)?;
    let mut layers = Vec::new();
    let mut accs = Vec::new();
    for layer in &analysis.prunable {
        if options.skip.contains(&layer.name) {
            continue;
        }
        let mut problems = Vec::new();
        let mut layer_accs = Vec::new();
        for c in &layer.consumers {
            let (problem, form) = consumer_problem(graph, c)?;
            layer_accs.push((
                c.input,
                backend.stats_accumulator(StatsSpec::new(problem.unfolding, false))?,
            ));
            problems.push((problem, form));
        }
        accs.push(layer_accs);
        layers.push((layer.clone(), problems));
    }
    if layers.is_empty() {
        return Err(Error::InvalidArgument(
            "no layer to prune: the model has no prunable layer, or all are skipped".into(),
        ));
    }
    let mut taps: Vec<ValueId> = accs.iter().flatten().map(|(v, _)| *v).collect();
    taps.sort_unstable();
    taps.dedup();
    let total = calib.len();
    let image_len: usize = calib.image_shape().iter().product();
    let mut first = 0;
    while first < total {
        let count = options.batch_images.min(total - first);
        let mut data = vec![0.0; count * image_len];
        calib.fill(first, &mut data)?;
        let mut shape = vec![count];
        shape.extend_from_slice(calib.image_shape());
        let input = Tensor::new(shape, data)?;
        exec.run_batch(input.view(), &taps, &mut |v, act| {
            for ((_, problems), layer_accs) in layers.iter().zip(accs.iter_mut()) {
                for ((tap, acc), (problem, _)) in layer_accs.iter_mut().zip(problems) {
                    if *tap == v {
                        let shape = unfolding_shape(problem, count);
                        // A GPU executor's activation goes into a GPU accumulator on the
                        // device (the default reads it back for any other backend).
                        match act {
                            Activation::Host(b) => {
                                acc.add_batch(TensorView::new(&shape, b.data)?, None)?
                            }
                            Activation::Device(d) => {
                                acc.add_device_batch(d.reshaped(&shape)?, None)?
                            }
                        }
                    }
                }
            }
            Ok(())
        })?;
        first += count;
        progress(first, total);
    }
    let mut out = Vec::new();
    for ((layer, problems), layer_accs) in layers.into_iter().zip(accs) {
        let mut stats = Vec::new();
        for ((_, acc), (problem, _)) in layer_accs.into_iter().zip(&problems) {
            let raw = acc.finish_with_weight(&problem.weight, problem.outputs)?;
            let mut st = LayerStats::from_raw(problem, raw)?;
            // Held for every layer at once: on the host, not in the GPU's memory.
            st.gram.release_device()?;
            stats.push(st);
        }
        out.push(LayerwiseLayer {
            layer,
            stats,
            problems,
        });
    }
    Ok(LayerwiseStats {
        layers: out,
        images: total,
        seconds: start.elapsed().as_secs_f64(),
    })
}

impl LayerwiseStats {
    /// Layer `i` as a selector sees it.
    pub fn context<'a>(
        &'a self,
        i: usize,
        backend: &'a dyn Backend,
        dependence_tol: f64,
    ) -> LayerContext<'a> {
        let l = &self.layers[i];
        LayerContext {
            name: &l.layer.name,
            index: l.layer.producer,
            stats: &l.stats,
            backend,
            dependence_tol,
        }
    }

    /// The greedy's normalised error curve of every layer (`curves[l][k-1] = err(S_k)`), with the
    /// runs kept in `greedy` for later selections.
    pub fn greedy_curves(
        &self,
        backend: &dyn Backend,
        dependence_tol: f64,
        greedy: &super::select::greedy::Greedy,
    ) -> Result<Vec<Vec<f64>>> {
        (0..self.layers.len())
            .map(|i| {
                Ok(greedy
                    .run(&self.context(i, backend, dependence_tol), &mut |_, _| {})?
                    .error_curve)
            })
            .collect()
    }

    /// Channels of each layer, in order.
    pub fn channels(&self) -> Vec<usize> {
        self.layers.iter().map(|l| l.layer.channels).collect()
    }

    /// Selects `keeps[i]` channels of every layer `i` with `selector` and edits a copy of `graph`
    /// (the graph the statistics were taken on): producers sliced, consumers reweighted
    /// (`options.reweight`, `options.ridge`) or not. Returns the graph and, per layer, the
    /// selection and its normalised error `Σ‖AW − B_S W~‖² / Σ‖AW‖²` over the consumers.
    pub fn prune(
        &self,
        graph: &Graph,
        selector: &dyn Selector,
        keeps: &[usize],
        options: &PruneOptions,
        backend: &dyn Backend,
    ) -> Result<(Graph, Vec<(Selection, f64)>)> {
        if keeps.len() != self.layers.len() {
            return Err(Error::InvalidArgument(format!(
                "{} keep sizes for {} layers",
                keeps.len(),
                self.layers.len()
            )));
        }
        let mut g = graph.clone();
        let mut out = Vec::new();
        for (i, &keep) in keeps.iter().enumerate() {
            out.push(self.apply_layer(&mut g, i, selector, keep, options, backend)?);
        }
        super::rewrite::reshape(&mut g)?;
        Ok((g, out))
    }

    /// Prunes layer `i` alone to `keep` channels (every other layer whole), as
    /// [`LayerwiseStats::prune`] would: the graph and the layer's selection and error. The
    /// sensitivity measurements of the `accuracy` budget ([`super::sensitivity`]) use it.
    pub fn prune_one(
        &self,
        graph: &Graph,
        i: usize,
        selector: &dyn Selector,
        keep: usize,
        options: &PruneOptions,
        backend: &dyn Backend,
    ) -> Result<(Graph, (Selection, f64))> {
        if i >= self.layers.len() {
            return Err(Error::InvalidArgument(format!(
                "layer {i}: there are {} pruned layers",
                self.layers.len()
            )));
        }
        let mut g = graph.clone();
        let out = self.apply_layer(&mut g, i, selector, keep, options, backend)?;
        super::rewrite::reshape(&mut g)?;
        Ok((g, out))
    }

    /// Selects `keep` channels of layer `i` and edits `g` in place (shapes are not re-inferred).
    fn apply_layer(
        &self,
        g: &mut Graph,
        i: usize,
        selector: &dyn Selector,
        keep: usize,
        options: &PruneOptions,
        backend: &dyn Backend,
    ) -> Result<(Selection, f64)> {
        let l = &self.layers[i];
        let ctx = self.context(i, backend, options.dependence_tol);
        let selection = selector.select(&ctx, keep, &mut |_, _| {})?;
        let (mut residual, mut total) = (0.0, 0.0);
        for ((c, (problem, form)), st) in l.layer.consumers.iter().zip(&l.problems).zip(&l.stats) {
            let r = consumer_rows(
                st,
                &selection,
                options.reweight,
                options.ridge,
                options.dependence_tol,
            )?;
            residual += r.residual;
            total += st.total;
            set_consumer_weight(
                g,
                c,
                *form,
                problem.weight_tensor(&selection.kept, &r.weight),
            )?;
        }
        slice_producer(g, &l.layer, &selection.kept)?;
        let err = if total > 0.0 { residual / total } else { 0.0 };
        Ok((selection, err))
    }
}
