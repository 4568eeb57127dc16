//! SeqInChange / AsymInChange: layers in order on the network pruned so far, each forward pass
//! resumed from cached activations at a cut point ([`crate::prune::cut`]).

use std::rc::Rc;
use std::time::Instant;

use super::Run;
use crate::error::{Context, Result};
use crate::exec::run::ImageSource;
use crate::exec::{Activation, Executor, TapSink};
use crate::gpu::OwnedDeviceTensor;
use crate::ir::ValueId;
use crate::prune::cut::{single_live, subgraph};
use crate::prune::feed::calib_batch;
use crate::prune::jobs::Job;
use crate::prune::options::Variant;
use crate::prune::report::LayerReport;
use crate::prune::Event;
use crate::tensor::Tensor;

/// Where a cache's activations are.
enum CacheData {
    /// The graph input: the calibration images ([`DeviceImages`] may hold them on the device).
    Images,
    /// Every image's activation, row-major, on the host.
    Host(Vec<f32>),
    /// One tensor per batch on the GPU executor's device (shared by the pruned and original
    /// network's caches while they are equal).
    Device(Rc<Vec<OwnedDeviceTensor>>),
}

/// Activations of every calibration image at one value, or the images themselves.
struct Cache {
    /// Node position: the value is alive alone before node `pos`.
    pos: usize,
    value: ValueId,
    data: CacheData,
    image_dims: Vec<usize>,
}

/// A pass's input batch.
enum Input<'c> {
    Host(Tensor),
    Device(&'c OwnedDeviceTensor),
}

impl Input<'_> {
    fn activation(&self) -> Activation<'_> {
        match self {
            Input::Host(t) => Activation::Host(t.view()),
            Input::Device(d) => Activation::Device(d.view()),
        }
    }
}

/// The calibration images' batches on the GPU executor's device. A batch is uploaded by the
/// first pass that reads it and serves both passes (pruned and original network) of the batch;
/// it stays on the device for the later layers when those start from the images too (no cut point
/// taken) and every batch fits the memory budget, else it is dropped after the batch and the
/// next layer uploads it again.
struct DeviceImages {
    /// The images fit the memory budget: kept across layers.
    fit: bool,
    /// The executor has no device (the CPU one): the images stay on the host.
    no_device: bool,
    batches: Vec<Option<OwnedDeviceTensor>>,
}

impl DeviceImages {
    fn held_bytes(&self) -> u64 {
        self.batches.iter().flatten().map(|t| t.byte_len()).sum()
    }
}

impl Cache {
    fn image_len(&self) -> usize {
        self.image_dims.iter().product()
    }

    /// Bytes the cache holds, on the host or the device (the images: none).
    fn bytes(&self) -> u64 {
        match &self.data {
            CacheData::Images => 0,
            CacheData::Host(d) => 4 * d.len() as u64,
            CacheData::Device(b) => b.iter().map(|t| t.byte_len()).sum(),
        }
    }

    /// Batch `at` as `exec`'s input; `uploaded` grows by the bytes uploaded to the device here.
    fn batch<'c>(
        &'c self,
        images: &'c mut DeviceImages,
        exec: &dyn Executor,
        at: &BatchPass<'_>,
        uploaded: &mut u64,
    ) -> Result<Input<'c>> {
        let (index, first, count, calib) = (at.index, at.first, at.count, at.calib);
        let per = self.image_len();
        Ok(match &self.data {
            CacheData::Host(d) => {
                let mut shape = vec![count];
                shape.extend_from_slice(&self.image_dims);
                Input::Host(Tensor::new(
                    shape,
                    d[first * per..(first + count) * per].to_vec(),
                )?)
            }
            CacheData::Device(b) => Input::Device(&b[index]),
            CacheData::Images if !images.no_device => {
                if images.batches.len() <= index {
                    images.batches.resize_with(index + 1, || None);
                }
                if images.batches[index].is_none() {
                    let host = calib_batch(calib, first, count)?;
                    match exec.upload(host.view())? {
                        Some(d) => {
                            *uploaded += d.byte_len();
                            images.batches[index] = Some(d);
                        }
                        // An executor without a device: the host batch, and no more tries.
                        None => {
                            images.no_device = true;
                            return Ok(Input::Host(host));
                        }
                    }
                }
                Input::Device(images.batches[index].as_ref().expect("just uploaded"))
            }
            CacheData::Images => Input::Host(calib_batch(calib, first, count)?),
        })
    }
}

/// One batch of a layer's passes: batch `index`, images `first..first + count` of `calib`, the
/// values tapped for the statistics and the next cut point (cached).
struct BatchPass<'a> {
    calib: &'a dyn ImageSource,
    index: usize,
    first: usize,
    count: usize,
    taps: &'a [ValueId],
    cut: Option<ValueId>,
}

impl BatchPass<'_> {
    /// Runs `exec` on this batch of `cache`: the cut value's activations go to `next` (copied on
    /// the device, or to the host), the taps to `on_tap`. `uploaded` grows by the bytes the host
    /// sent the device: images uploaded here, or a host input whose taps came from a device.
    fn run(
        &self,
        exec: &dyn Executor,
        cache: &Cache,
        images: &mut DeviceImages,
        next: &mut NextCache,
        uploaded: &mut u64,
        on_tap: &mut TapSink<'_>,
    ) -> Result<()> {
        let input = cache.batch(images, exec, self, uploaded)?;
        let (taps, cut) = (self.taps, self.cut);
        let mut on_device = false;
        let mut all = taps.to_vec();
        all.extend(cut.filter(|c| !taps.contains(c)));
        exec.run_batch_taps(input.activation(), &all, &mut |v, act| {
            on_device |= act.device().is_some();
            if Some(v) == cut {
                match act {
                    Activation::Device(d) => next.device.push(d.copy_on_device()?),
                    _ => next.host.extend_from_slice(&act.to_host()?.data),
                }
            }
            if taps.contains(&v) {
                on_tap(v, act)?;
            }
            Ok(())
        })?;
        if let (Input::Host(t), true) = (&input, on_device) {
            *uploaded += 4 * t.data.len() as u64;
        }
        Ok(())
    }
}

/// The activations at the next cut point, batch by batch.
#[derive(Default)]
struct NextCache {
    host: Vec<f32>,
    device: Vec<OwnedDeviceTensor>,
}

impl NextCache {
    fn into_data(self) -> CacheData {
        if self.device.is_empty() {
            CacheData::Host(self.host)
        } else {
            CacheData::Device(Rc::new(self.device))
        }
    }
}

impl Run<'_> {
    /// SeqInChange / AsymInChange: layers in order on the network pruned so far. Each layer's
    /// forward pass starts from the cached activations of the previous cut point and, when the
    /// activations at this layer's cut point (the last point before its producer where one
    /// activation is alive alone) fit the memory budget, keeps them as the next cache, in the
    /// same pass: one pass over each network's segment per layer. On the GPU executor the caches
    /// stay on its device, and so do the calibration images (uploaded once) while the passes
    /// start from them and they fit the budget.
    pub(in crate::prune) fn sequential(&mut self, jobs: &[Job<'_>]) -> Result<Vec<LayerReport>> {
        let asym = self.options.variant == Variant::Asym;
        let live = single_live(self.original_graph);
        let input_cache = || Cache {
            pos: 0,
            value: self.original_graph.inputs[0],
            data: CacheData::Images,
            image_dims: self.calib.image_shape().to_vec(),
        };
        let mut cur = input_cache();
        let mut orig = input_cache();
        let total = self.calib.len();
        let batch = self.options.batch_images;
        let image_bytes = 4 * (total * cur.image_len()) as u64;
        let mut images = DeviceImages {
            fit: image_bytes <= self.options.memory_budget,
            no_device: false,
            batches: Vec::new(),
        };
        let copies: u64 = if asym { 2 } else { 1 };
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
            // What the caches hold now (the images kept on the device by earlier layers).
            let held = match cur.data {
                CacheData::Images => images.held_bytes(),
                _ => cur.bytes() * copies,
            };
            let next_cut = live[p].filter(|&v| {
                if p <= cur.pos || v == cur.value {
                    return false;
                }
                let per: usize = self.original_graph.values[v].shape.at(1)[1..]
                    .iter()
                    .product();
                let bytes = (per * total * 4) as u64 * copies;
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
            outputs.extend(next_cut.filter(|v| !taps.contains(v)));
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
            let (mut next_cur, mut next_orig) = (NextCache::default(), NextCache::default());
            // The images' device batches serve the next layer only if it starts from them too.
            let keep_images = images.fit && next_cut.is_none();
            let mut first = 0;
            for index in 0.. {
                if first >= total {
                    break;
                }
                let count = batch.min(total - first);
                // The original network's taps of this batch, the targets: kept on the device
                // (copied there from the GPU executor's activations), else on the host.
                let mut device_targets: Vec<(ValueId, OwnedDeviceTensor)> = Vec::new();
                let mut host_targets: Vec<(ValueId, Tensor)> = Vec::new();
                let at = BatchPass {
                    calib: self.calib,
                    index,
                    first,
                    count,
                    taps: &taps,
                    cut: next_cut,
                };
                if let Some(e) = &exec_orig {
                    at.run(
                        e.as_ref(),
                        &orig,
                        &mut images,
                        &mut next_orig,
                        &mut uploaded,
                        &mut |v, act| {
                            match act {
                                Activation::Device(d) => {
                                    device_targets.push((v, d.copy_on_device()?))
                                }
                                _ => host_targets.push((v, act.to_host()?)),
                            }
                            Ok(())
                        },
                    )?;
                }
                at.run(
                    exec_cur.as_ref(),
                    &cur,
                    &mut images,
                    &mut next_cur,
                    &mut uploaded,
                    &mut |v, act| {
                        let a = if unpruned {
                            Some(act)
                        } else {
                            let device = device_targets.iter().find(|(t, _)| *t == v);
                            let host = host_targets.iter().find(|(t, _)| *t == v);
                            match (device, host) {
                                (Some((_, d)), _) => Some(Activation::Device(d.view())),
                                (None, Some((_, h))) => Some(Activation::Host(h.view())),
                                (None, None) => None,
                            }
                        };
                        sj.feed(v, act, a)
                    },
                )
                .context(|| format!("layer '{}'", job.layer.name))?;
                if !keep_images {
                    if let Some(b) = images.batches.get_mut(index) {
                        *b = None;
                    }
                }
                first += count;
                (self.progress)(Event::Forward { done: first, total });
            }
            if let Some(v) = next_cut {
                let image_dims = self.graph.values[v].shape.at(1)[1..].to_vec();
                let data = next_cur.into_data();
                if asym {
                    let orig_data = match (&data, unpruned) {
                        (CacheData::Device(d), true) => CacheData::Device(Rc::clone(d)),
                        (CacheData::Host(d), true) => CacheData::Host(d.clone()),
                        _ => next_orig.into_data(),
                    };
                    orig = Cache {
                        pos: p,
                        value: v,
                        data: orig_data,
                        image_dims: self.original_graph.values[v].shape.at(1)[1..].to_vec(),
                    };
                }
                cur = Cache {
                    pos: p,
                    value: v,
                    data,
                    image_dims,
                };
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
