//! SeqInChange / AsymInChange: layers in order on the network pruned so far, each forward pass
//! resumed from cached activations at a cut point ([`crate::prune::cut`]).

use std::time::Instant;

use super::Run;
use crate::error::{Context, Result};
use crate::exec::run::ImageSource;
use crate::exec::Activation;
use crate::gpu::OwnedDeviceTensor;
use crate::ir::ValueId;
use crate::prune::cut::{single_live, subgraph};
use crate::prune::feed::calib_batch;
use crate::prune::jobs::Job;
use crate::prune::options::Variant;
use crate::prune::report::LayerReport;
use crate::prune::Event;
use crate::tensor::Tensor;

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
        match &self.data {
            Some(d) => {
                let mut shape = vec![count];
                shape.extend_from_slice(&self.image_dims);
                Tensor::new(shape, d[first * per..(first + count) * per].to_vec())
            }
            None => calib_batch(calib, first, count),
        }
    }
}

impl Run<'_> {
    /// SeqInChange / AsymInChange: layers in order on the network pruned so far. Each layer's
    /// forward pass starts from the cached activations of the previous cut point and, when the
    /// activations at this layer's cut point (the last point before its producer where one
    /// activation is alive alone) fit the memory budget, keeps them as the next cache, in the
    /// same pass: one pass over each network's segment per layer.
    pub(in crate::prune) fn sequential(&mut self, jobs: &[Job<'_>]) -> Result<Vec<LayerReport>> {
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
        // Bytes the forward passes of a layer uploaded as their inputs (see
        // `Phases::statistics_uploaded_bytes`).
        let mut uploaded = 0u64;
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
            // Before the first layer is pruned the network is the original: the targets are
            // the inputs themselves, and no second forward pass is needed.
            let unpruned = asym && i == 0;
            let mut sj = self.feed_of(job, asym)?;
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
            let exec_orig = if asym && !unpruned {
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
                // The original network's taps of this batch: kept on the device (copied there
                // from the GPU executor's activations) for the statistics, else from its
                // outputs on the host.
                let mut device_targets: Vec<(ValueId, OwnedDeviceTensor)> = Vec::new();
                let targets: Option<Vec<Tensor>> = match &exec_orig {
                    Some(e) => {
                        let input = orig.batch(self.calib, first, count)?;
                        let mut on_device = false;
                        let out = e.run_batch(input.view(), &taps, &mut |v, act| {
                            if let Activation::Device(d) = act {
                                on_device = true;
                                device_targets.push((v, d.copy_on_device()?));
                            }
                            Ok(())
                        })?;
                        if on_device {
                            uploaded += input.data.len() as u64 * 4;
                        }
                        if let Some(k) = cut_index {
                            next_orig.extend_from_slice(&out[k].data);
                        }
                        Some(out)
                    }
                    None => None,
                };
                let input = cur.batch(self.calib, first, count)?;
                let mut on_device = false;
                let out = exec_cur
                    .run_batch(input.view(), &taps, &mut |v, act| {
                        on_device |= act.device().is_some();
                        let a = if unpruned {
                            Some(act)
                        } else {
                            match device_targets.iter().find(|(t, _)| *t == v) {
                                Some((_, d)) => Some(Activation::Device(d.view())),
                                None => targets.as_ref().map(|t| {
                                    let k = taps.iter().position(|&x| x == v).expect("a tap");
                                    Activation::Host(t[k].view())
                                }),
                            }
                        };
                        sj.feed(v, act, a)
                    })
                    .context(|| format!("layer '{}'", job.layer.name))?;
                if on_device {
                    uploaded += input.data.len() as u64 * 4;
                }
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
                        data: Some(if unpruned {
                            cur.data.clone().unwrap_or_default()
                        } else {
                            next_orig
                        }),
                        image_dims: self.original_graph.values[v].shape.at(1)[1..].to_vec(),
                    };
                }
            }
            self.phases.forward_and_statistics += t.elapsed().as_secs_f64();
            self.phases.statistics_uploaded_bytes += std::mem::take(&mut uploaded);
            let selector = self.options.method.selector(self.options.seed);
            let layer = || format!("layer '{}'", job.layer.name);
            let finished = sj.finish(false).context(layer)?;
            reports.push(
                self.finish_layer(job, finished, selector.as_ref(), started)
                    .context(layer)?,
            );
        }
        Ok(reports)
    }
}
