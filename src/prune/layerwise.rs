//! The statistics of every prunable layer on the *original* network (LayerInChange), from one
//! forward pass, kept so that any number of selections, sizes and reweighting choices can be
//! applied without another pass: what [`super::compare`], the `error` and `accuracy` budgets
//! ([`super::budget`]) and then the layer variant of the same prune reuse. The forward pass and
//! the accumulators are the pipeline's (`feed.rs`). [`LayerwiseStats::prune`] with the
//! greedy gives the same model as [`super::prune_with`] with [`super::Variant::Layer`].

use std::time::Instant;

use super::feed::{check_images, original_pass, LayerFeed, LayerStatsOf, PassInputs};
use super::rewrite::{apply_group, Applied, WeightForm};
use super::select::{every_value_keeps_one, select_sized, LayerContext, Selection, Selector};
use super::{ExecutorFactory, PruneOptions};
use crate::analysis::channels::{ChannelGroup, ConsumerMap};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::exec::run::ImageSource;
use crate::ir::Graph;
use crate::layer::select::check_batch_images;
use crate::layer::{LayerProblem, LayerStats};

/// One prunable layer and its consumers' statistics.
pub struct LayerwiseLayer {
    /// The layer.
    pub layer: ChannelGroup,
    /// The statistics of each consumer.
    pub stats: Vec<LayerStats>,
    problems: Vec<(LayerProblem, WeightForm)>,
    maps: Vec<Option<ConsumerMap>>,
    /// Bytes the backend received from the host, and copied on the device, for these statistics.
    moved_bytes: (u64, u64),
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
    let analysis = super::analysis_for(graph, options);
    let inputs = PassInputs::new(graph, &analysis, calib, options, backend, executor);
    layerwise_stats_of(&inputs, progress)
}

/// [`layerwise_stats`] with the channel analysis of the graph already made.
pub(crate) fn layerwise_stats_of(
    inputs: &PassInputs<'_>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LayerwiseStats> {
    let start = Instant::now();
    let (graph, calib, options) = (inputs.graph, inputs.calib, inputs.options);
    check_batch_images(options.batch_images)?;
    let exec = (inputs.executor)(graph)?;
    check_images(exec.as_ref(), calib)?;
    let mut layers = Vec::new();
    let mut feeds = Vec::new();
    for layer in &inputs.analysis.prunable {
        if options.skip.contains(&layer.name) {
            continue;
        }
        feeds.push(LayerFeed::new(graph, layer, inputs.backend, false, false)?);
        layers.push(layer.clone());
    }
    if layers.is_empty() {
        return Err(Error::InvalidArgument(
            "no layer to prune: the model has no prunable layer, or all are skipped".into(),
        ));
    }
    original_pass(
        exec.as_ref(),
        calib,
        options.batch_images,
        &mut feeds,
        progress,
    )?;
    let mut out = Vec::new();
    for (layer, feed) in layers.into_iter().zip(feeds) {
        // Held for every layer at once: on the host, not in the GPU's memory.
        let finished = feed.finish(true)?;
        out.push(LayerwiseLayer {
            layer,
            stats: finished.stats,
            problems: finished.problems,
            maps: finished.maps,
            moved_bytes: (finished.uploaded_bytes, finished.device_bytes),
        });
    }
    Ok(LayerwiseStats {
        layers: out,
        images: calib.len(),
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

    /// Each layer's statistics as the pipeline finishes a layer from them, in order.
    pub(crate) fn into_finished(self) -> impl Iterator<Item = LayerStatsOf> {
        self.layers.into_iter().map(|l| LayerStatsOf {
            problems: l.problems,
            stats: l.stats,
            maps: l.maps,
            record: None,
            uploaded_bytes: l.moved_bytes.0,
            device_bytes: l.moved_bytes.1,
        })
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
        let mut applied = Applied::default();
        for (i, &keep) in keeps.iter().enumerate() {
            out.push(self.apply_layer(
                &mut g,
                i,
                selector,
                keep,
                options,
                backend,
                &mut applied,
            )?);
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
        let out = self.apply_layer(
            &mut g,
            i,
            selector,
            keep,
            options,
            backend,
            &mut Applied::default(),
        )?;
        super::rewrite::reshape(&mut g)?;
        Ok((g, out))
    }

    /// Selects `keep` channels of layer `i` and edits `g` in place (shapes are not re-inferred).
    #[allow(clippy::too_many_arguments)]
    fn apply_layer(
        &self,
        g: &mut Graph,
        i: usize,
        selector: &dyn Selector,
        keep: usize,
        options: &PruneOptions,
        backend: &dyn Backend,
        applied: &mut Applied,
    ) -> Result<(Selection, f64)> {
        let l = &self.layers[i];
        let ctx = self.context(i, backend, options.dependence_tol);
        // The sizes here are a budget's or a comparison row's: shares of the parameters.
        let selection = every_value_keeps_one(
            &l.layer,
            select_sized(selector, &ctx, &l.layer, keep, true, &mut |_, _| {})?,
        );
        let (residual, total) = apply_group(
            g,
            &l.layer,
            &l.problems,
            &l.stats,
            &l.maps,
            &selection,
            options,
            applied,
        )?;
        let err = if total > 0.0 { residual / total } else { 0.0 };
        Ok((selection, err))
    }
}
