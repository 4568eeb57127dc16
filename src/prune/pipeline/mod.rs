//! The pruning pipeline's variants over resolved [`Job`]s: [`Variant::Layer`] (one pass over the
//! original network, or the layer-wise statistics a budget already took) and the sequential ones
//! ([`sequential`]: seq and asym, resuming from cached activations). Each layer ends in
//! [`Run::finish_layer`]: selection, reweighting, the IR edits and its report.

mod sequential;

use std::time::Instant;

use super::feed::{original_pass, LayerFeed, LayerStatsOf};
use super::jobs::Job;
use super::layerwise::LayerwiseStats;
use super::options::{PruneOptions, Variant};
use super::report::{LayerReport, Phases, Recorded};
use super::rewrite;
use super::select::{self, Selector};
use super::{Event, ExecutorFactory};
use crate::backend::Backend;
use crate::error::{Context, Result};
use crate::exec::run::ImageSource;
use crate::ir::Graph;
use crate::tensor::Tensor;

/// One pruning run: the graph being edited, and what the layers report.
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
    /// Constants sliced so far (see [`rewrite::Applied`]).
    pub applied: rewrite::Applied,
}

impl<'a> Run<'a> {
    /// The accumulators of one job's consumers in the graph as edited so far.
    fn feed_of(&self, job: &Job<'_>, with_target: bool) -> Result<LayerFeed<'a>> {
        let record = self.options.record.as_deref() == Some(job.layer.name.as_str());
        LayerFeed::new(&self.graph, job.layer, self.backend, with_target, record)
    }

    /// Greedy (or `selector`), reweighting and the IR edits of one layer from its statistics.
    fn finish_layer(
        &mut self,
        job: &Job<'_>,
        finished: LayerStatsOf,
        selector: &dyn Selector,
        started: Instant,
    ) -> Result<LayerReport> {
        let LayerStatsOf {
            problems,
            stats,
            maps,
            record,
            uploaded_bytes,
            device_bytes,
        } = finished;
        self.phases.statistics_uploaded_bytes += uploaded_bytes;
        self.phases.statistics_device_bytes += device_bytes;
        let t = Instant::now();
        let selection = select::select_sized(
            selector,
            &select::LayerContext {
                name: &job.layer.name,
                index: job.layer.producer,
                stats: &stats,
                backend: self.backend,
                dependence_tol: self.options.dependence_tol,
            },
            job.layer,
            job.keep,
            job.by_weight,
            &mut |d, n| (self.progress)(Event::Greedy { done: d, total: n }),
        )?;
        self.phases.greedy += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let selection = select::every_value_keeps_one(job.layer, selection);
        let kept = selection.kept.clone();
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
        let (residual, total) = rewrite::apply_group(
            &mut self.graph,
            job.layer,
            &problems,
            &stats,
            &maps,
            &selection,
            self.options,
            &mut self.applied,
        )?;
        if self.options.variant != Variant::Layer {
            rewrite::reshape(&mut self.graph)?;
        }
        self.phases.reweight += t.elapsed().as_secs_f64();
        // The rows and columns reported are those of the first rank-deficient consumer, if any
        // (so that the note names the consumer it is about), else of the first consumer.
        let deficient = stats.iter().find(|s| s.rows < s.layout.columns());
        let rank_deficient = deficient.is_some();
        let shown = deficient.unwrap_or(&stats[0]);
        let (rows, columns) = (shown.rows, shown.layout.columns());
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
            // Counted once the whole network is pruned (`prune_with`).
            parameters_before: 0,
            parameters_after: 0,
        })
    }

    /// LayerInChange: one pass over the original network, every layer's statistics at once.
    pub(super) fn layer_variant(&mut self, jobs: &[Job<'_>]) -> Result<Vec<LayerReport>> {
        let started = Instant::now();
        let mut feeds = jobs
            .iter()
            .map(|j| self.feed_of(j, false))
            .collect::<Result<Vec<_>>>()?;
        let exec = (self.executor)(self.original_graph)?;
        let t = Instant::now();
        let progress = &mut *self.progress;
        self.phases.statistics_uploaded_bytes += original_pass(
            exec.as_ref(),
            self.calib,
            self.options.batch_images,
            &mut feeds,
            &mut |done, total| progress(Event::Forward { done, total }),
        )?;
        self.phases.forward_and_statistics += t.elapsed().as_secs_f64();
        let per_layer = started.elapsed().as_secs_f64() / jobs.len() as f64;
        let mut reports = Vec::new();
        for (i, (job, feed)) in jobs.iter().zip(feeds).enumerate() {
            (self.progress)(Event::Layer {
                index: i,
                layers: jobs.len(),
                name: &job.layer.name,
            });
            let t = Instant::now();
            let selector = self.options.method.selector(self.options.seed);
            let finished = feed.finish(false)?;
            let mut r = self
                .finish_layer(job, finished, selector.as_ref(), t)
                .context(|| format!("layer '{}'", job.layer.name))?;
            r.seconds += per_layer;
            reports.push(r);
        }
        Ok(reports)
    }

    /// LayerInChange from statistics a budget already took on the original network (the same
    /// layers as `jobs`, in order): no forward pass; the greedy's runs are reused when the
    /// method is the greedy.
    pub(super) fn layer_variant_from(
        &mut self,
        jobs: &[Job<'_>],
        layerwise: LayerwiseStats,
        greedy: &select::greedy::Greedy,
    ) -> Result<Vec<LayerReport>> {
        self.phases.forward_and_statistics += layerwise.seconds;
        let per_layer = layerwise.seconds / jobs.len() as f64;
        let mut reports = Vec::new();
        for (i, (job, finished)) in jobs.iter().zip(layerwise.into_finished()).enumerate() {
            (self.progress)(Event::Layer {
                index: i,
                layers: jobs.len(),
                name: &job.layer.name,
            });
            let t = Instant::now();
            let fresh;
            let selector: &dyn Selector = match self.options.method {
                select::Method::Greedy => greedy,
                m => {
                    fresh = m.selector(self.options.seed);
                    fresh.as_ref()
                }
            };
            let mut r = self
                .finish_layer(job, finished, selector, t)
                .context(|| format!("layer '{}'", job.layer.name))?;
            r.seconds += per_layer;
            reports.push(r);
        }
        Ok(reports)
    }
}
