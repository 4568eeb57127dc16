//! From forward-pass taps to one layer's statistics, shared by the pipeline
//! ([`super::pipeline`]) and the layer-wise statistics ([`super::layerwise`]): the check of the
//! calibration images against the model, one layer's consumers and accumulators ([`LayerFeed`]:
//! built, fed batch by batch, finished into [`LayerStats`]), and one pass over the original
//! network that feeds several layers at once ([`original_pass`]).

use crate::analysis::channels::{ChannelAnalysis, ChannelGroup, ConsumerMap};
use crate::backend::{Backend, StatsAccumulator, StatsSpec, TargetBatch};
use crate::error::{Error, Result};
use crate::exec::run::ImageSource;
use crate::exec::{Activation, Executor};
use crate::ir::{Graph, ValueId};
use crate::layer::{LayerProblem, LayerStats};
use crate::tensor::{Tensor, TensorView};

use super::rewrite::{consumer_problem, WeightForm};
use super::{ExecutorFactory, PruneOptions};

/// The original network and what a pass over it reads: its graph and channel analysis, the
/// calibration images, the options and the engines.
#[derive(Clone, Copy)]
pub(crate) struct PassInputs<'a> {
    pub graph: &'a Graph,
    pub analysis: &'a ChannelAnalysis,
    pub calib: &'a dyn ImageSource,
    pub options: &'a PruneOptions,
    pub backend: &'a dyn Backend,
    pub executor: ExecutorFactory<'a>,
}

impl<'a> PassInputs<'a> {
    /// The inputs of a pass over `graph`, whose channel analysis is `analysis`.
    pub fn new(
        graph: &'a Graph,
        analysis: &'a ChannelAnalysis,
        calib: &'a dyn ImageSource,
        options: &'a PruneOptions,
        backend: &'a dyn Backend,
        executor: ExecutorFactory<'a>,
    ) -> Self {
        Self {
            graph,
            analysis,
            calib,
            options,
            backend,
            executor,
        }
    }
}

/// Checks the calibration images against the model input before any work.
pub(crate) fn check_images(exec: &dyn Executor, calib: &dyn ImageSource) -> Result<()> {
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

/// Calibration images `first..first + count` as one batch tensor.
pub(crate) fn calib_batch(calib: &dyn ImageSource, first: usize, count: usize) -> Result<Tensor> {
    let dims = calib.image_shape();
    let mut data = vec![0.0; count * dims.iter().product::<usize>()];
    calib.fill(first, &mut data)?;
    let mut shape = vec![count];
    shape.extend_from_slice(dims);
    Tensor::new(shape, data)
}

/// The consumer inputs (and targets) one layer's statistics used, kept for
/// [`super::PruneOptions::record`]: the first consumer's `B`, and `A` with a target.
pub(crate) type RecordedInputs = (Vec<f32>, Option<Vec<f32>>);

/// The consumers of one layer: problems, accumulators, and the value each one taps.
pub(crate) struct LayerFeed<'b> {
    /// Each consumer's problem (with the weight it has when the feed is built) and weight form.
    pub problems: Vec<(LayerProblem, WeightForm)>,
    accs: Vec<Box<dyn StatsAccumulator + 'b>>,
    /// Tapped value of each consumer.
    pub taps: Vec<ValueId>,
    /// How each consumer reads the group's channels, when not in order (its statistics are
    /// regrouped by [`LayerStats::regroup`]).
    maps: Vec<Option<ConsumerMap>>,
    record: Option<RecordedInputs>,
}

/// One layer's finished statistics.
pub(crate) struct LayerStatsOf {
    /// Each consumer's problem and weight form.
    pub problems: Vec<(LayerProblem, WeightForm)>,
    /// Each consumer's statistics, one column block per group channel.
    pub stats: Vec<LayerStats>,
    /// How each consumer reads the group's channels, when not in order.
    pub maps: Vec<Option<ConsumerMap>>,
    /// The recorded inputs, when asked for.
    pub record: Option<RecordedInputs>,
    /// Bytes of inputs and targets the backend received from the host.
    pub uploaded_bytes: u64,
    /// Bytes of inputs the backend copied on the device.
    pub device_bytes: u64,
}

/// The per-image shape `(n, C)` or `(n, C, H, W)` the accumulator of `problem` takes.
fn unfolding_shape(problem: &LayerProblem, n: usize) -> Vec<usize> {
    let u = problem.unfolding;
    if matches!(u.consumer, crate::Consumer::Linear) {
        vec![n, u.channels]
    } else {
        vec![n, u.channels, u.height, u.width]
    }
}

impl<'b> LayerFeed<'b> {
    /// Accumulators for every consumer of `layer` in `graph` (its current weights), with a
    /// separate target `A` when `with_target`; `record`: keep the first consumer's inputs.
    pub fn new(
        graph: &Graph,
        layer: &ChannelGroup,
        backend: &'b dyn Backend,
        with_target: bool,
        record: bool,
    ) -> Result<Self> {
        let mut problems = Vec::new();
        let mut accs = Vec::new();
        let mut taps = Vec::new();
        for c in &layer.consumers {
            let (problem, form) = consumer_problem(graph, c)?;
            accs.push(
                backend.stats_accumulator(
                    StatsSpec::new(problem.unfolding, with_target)
                        .with_weight(&problem.weight, problem.outputs),
                )?,
            );
            problems.push((problem, form));
            taps.push(c.input);
        }
        let record = record.then(|| (Vec::new(), with_target.then(Vec::new)));
        let maps = (0..layer.consumers.len())
            .map(|i| layer.consumer_map(i))
            .collect();
        Ok(Self {
            problems,
            accs,
            taps,
            maps,
            record,
        })
    }

    /// Feeds one tapped batch of `value` to every consumer that reads it, with its target `a`
    /// (asym). Activations on the device go to the accumulators as they are (a GPU backend on
    /// the same device copies them there); they are read back only for a recorded layer, or
    /// when the inputs are on the host and the target is not.
    pub fn feed(
        &mut self,
        value: ValueId,
        b: Activation<'_>,
        a: Option<Activation<'_>>,
    ) -> Result<()> {
        let n = b.shape()[0];
        // A device target next to host inputs comes to the host once, for every consumer.
        let host_a = match (&b, &a) {
            (Activation::Host(_), Some(Activation::Device(d))) => Some(d.read()?),
            _ => None,
        };
        let a_host: Option<&[f32]> = match (&a, &host_a) {
            (_, Some(t)) => Some(&t.data),
            (Some(Activation::Host(h)), None) => Some(h.data),
            _ => None,
        };
        for j in 0..self.taps.len() {
            if self.taps[j] != value {
                continue;
            }
            let shape = unfolding_shape(&self.problems[j].0, n);
            let av = a_host.map(|d| TensorView::new(&shape, d)).transpose()?;
            match b {
                Activation::Host(h) => {
                    self.accs[j].add_batch(TensorView::new(&shape, h.data)?, av)?
                }
                Activation::Device(d) => {
                    let av = match (&a, av) {
                        (Some(Activation::Device(t)), _) => {
                            Some(TargetBatch::Device(t.reshaped(&shape)?))
                        }
                        (_, av) => av.map(TargetBatch::Host),
                    };
                    self.accs[j].add_device_batch(d.reshaped(&shape)?, av)?
                }
            }
            if j == 0 {
                if let Some((rb, ra)) = &mut self.record {
                    match b.host() {
                        Some(h) => rb.extend_from_slice(h.data),
                        None => rb.extend_from_slice(&b.to_host()?.data),
                    }
                    if let (Some(ra), Some(a)) = (ra, &a) {
                        match a.host() {
                            Some(h) => ra.extend_from_slice(h.data),
                            None => ra.extend_from_slice(&a.to_host()?.data),
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The statistics of every consumer; `release_device`: read each `G` and `C0` back to the
    /// host and free their device copies (for statistics held long, one per layer of a network).
    pub fn finish(self, release_device: bool) -> Result<LayerStatsOf> {
        let mut stats = Vec::new();
        let (mut uploaded_bytes, mut device_bytes) = (0, 0);
        for (((problem, _), acc), map) in self.problems.iter().zip(self.accs).zip(&self.maps) {
            let raw = acc.finish_with_weight(&problem.weight, problem.outputs)?;
            uploaded_bytes += raw.phases.uploaded_bytes;
            device_bytes += raw.phases.device_bytes;
            let mut st = LayerStats::from_raw(problem, raw)?;
            if let Some(map) = map {
                st = st.regroup(
                    &map.columns,
                    crate::layer::ChannelLayout {
                        channels: map.channels,
                        columns_per_channel: map.block(),
                    },
                )?;
            }
            if release_device {
                st.release_device()?;
            }
            stats.push(st);
        }
        Ok(LayerStatsOf {
            problems: self.problems,
            stats,
            maps: self.maps,
            record: self.record,
            uploaded_bytes,
            device_bytes,
        })
    }
}

/// One forward pass of `exec` (the original network) over `calib` in batches of
/// `batch_images`, every tapped activation fed to the layers that read it; `progress(images
/// done, total)` after each batch. Returns the bytes of images uploaded to a device (those of
/// the batches whose taps came from the device; see
/// [`super::report::Phases::statistics_uploaded_bytes`]).
pub(crate) fn original_pass(
    exec: &dyn Executor,
    calib: &dyn ImageSource,
    batch_images: usize,
    feeds: &mut [LayerFeed<'_>],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<u64> {
    let mut taps: Vec<ValueId> = feeds.iter().flat_map(|f| f.taps.clone()).collect();
    taps.sort_unstable();
    taps.dedup();
    let total = calib.len();
    let mut first = 0;
    let mut uploaded = 0;
    while first < total {
        let count = batch_images.min(total - first);
        let input = calib_batch(calib, first, count)?;
        let mut on_device = false;
        exec.run_batch(input.view(), &taps, &mut |v, act| {
            on_device |= act.device().is_some();
            for f in feeds.iter_mut() {
                f.feed(v, act, None)?;
            }
            Ok(())
        })?;
        if on_device {
            uploaded += input.data.len() as u64 * 4;
        }
        first += count;
        progress(first, total);
    }
    Ok(uploaded)
}
