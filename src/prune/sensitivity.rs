//! Per-layer accuracy curves for the `accuracy` budget (`docs/ALGORITHM.md` §6, the "equal
//! accuracy loss" scheme of Kuzmin et al. 2019): each pruned layer is pruned *alone* (every other
//! layer whole) at a grid of sizes and the pruned network's top-1 is measured on labelled
//! validation images; the curves are then made monotone ([`monotone_envelope`]) and handed to
//! [`super::budget::accuracy_allocation`].
//!
//! **Selection.** The channels kept at each size come from the statistics of the original network
//! ([`super::layerwise`]): with the greedy, one run per layer gives every size (its prefixes), and
//! the consumers are reweighted when [`super::PruneOptions::reweight`] is on, exactly as
//! [`super::layerwise::LayerwiseStats::prune_one`] prunes them.
//!
//! **Grid** ([`accuracy_grid`]): `d, d/√2, d/2, d/(2√2), …, 1` channels (rounded, distinct), about
//! `2·log2(d) + 1` sizes per layer (32 channels: 10 sizes; 512: 19), dense where the accuracy
//! changes fastest (few channels). The whole layer (`k = d`) is the unpruned network: its
//! accuracy is the baseline, measured once.
//!
//! **Cost.** One evaluation per layer and grid size below `d`: `Σ_l (|grid_l| − 1)` evaluations
//! of the validation images (MNIST, 3 layers: 33 evaluations), plus one of the unpruned network.
//! Each evaluation runs only the part of the network from the last point before the layer's
//! producer where a single activation is alive (a block boundary): the validation images'
//! activations there are computed once per layer, by advancing the previous layer's cache, when
//! they fit [`super::PruneOptions::memory_budget`] (else the evaluation starts from the input).
//! A few hundred validation images are enough for the scheme; the time grows linearly with them.

use std::time::Instant;

use super::cut::{single_live, subgraph};
use super::layerwise::LayerwiseStats;
use super::select::Selector;
use super::{ExecutorFactory, PruneOptions};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::exec::eval::evaluate;
use crate::exec::run::{forward_batches, F32Images, ImageSource};
use crate::ir::{Graph, ValueId};
use crate::tensor::Tensor;

/// Labelled validation images (a held-out split: not the calibration images, not the test set
/// the result is reported on).
#[derive(Clone, Copy)]
pub struct Validation<'a> {
    /// The images, preprocessed like the calibration images.
    pub images: &'a dyn ImageSource,
    /// One class index per image.
    pub labels: &'a [i64],
}

/// One layer's measured accuracy curve and its monotone envelope.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerAccuracy {
    /// The producer's name.
    pub name: String,
    /// Its channels `d`.
    pub channels: usize,
    /// The sizes measured, increasing, ending at `d`.
    pub grid: Vec<usize>,
    /// Top-1 on the validation images with the layer pruned alone to each grid size (the last
    /// entry, `k = d`, is the unpruned baseline).
    pub accuracy: Vec<f64>,
    /// `envelope[k-1]`: the monotone envelope at every size `k = 1..=d`.
    pub envelope: Vec<f64>,
}

/// The accuracy curves of every pruned layer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sensitivity {
    /// Top-1 of the unpruned network on the validation images.
    pub baseline: f64,
    /// Validation images.
    pub images: usize,
    /// The layers, in the order of the statistics.
    pub layers: Vec<LayerAccuracy>,
    /// Evaluations of the validation set run (the unpruned one included).
    pub evaluations: usize,
    /// Seconds in all.
    pub seconds: f64,
}

impl Sensitivity {
    /// The envelopes, one per layer (`[l][k-1]`).
    pub fn envelopes(&self) -> Vec<Vec<f64>> {
        self.layers.iter().map(|l| l.envelope.clone()).collect()
    }
}

/// The sizes measured for a layer of `channels` channels: `round(d · 2^(−i/2))` for `i = 0, 1, …`
/// down to 1, distinct, increasing.
pub fn accuracy_grid(channels: usize) -> Vec<usize> {
    let mut grid = vec![1];
    let mut f = channels as f64;
    while f >= 1.0 {
        let k = (f.round() as usize).clamp(1, channels);
        if !grid.contains(&k) {
            grid.push(k);
        }
        f /= std::f64::consts::SQRT_2;
    }
    if !grid.contains(&channels) {
        grid.push(channels);
    }
    grid.sort_unstable();
    grid
}

/// The monotone envelope of accuracies measured at `grid` (increasing sizes ending at
/// `channels`), at every size `1..=channels`: first the *lower* monotone envelope at the grid
/// points, `env(g_i) = min_{j ≥ i} acc(g_j)` (the largest non-decreasing curve under the
/// measurements: a layer is never credited with accuracy it loses at a larger size, and the
/// envelope never exceeds the whole layer's accuracy), then linear interpolation between grid
/// points, constant below the first. The result is non-decreasing in `k`.
pub fn monotone_envelope(grid: &[usize], accuracy: &[f64], channels: usize) -> Result<Vec<f64>> {
    if grid.is_empty()
        || grid.len() != accuracy.len()
        || grid.windows(2).any(|w| w[0] >= w[1])
        || grid[0] == 0
        || *grid.last().expect("non-empty") != channels
    {
        return Err(Error::InvalidArgument(format!(
            "accuracy curve: {} sizes and {} accuracies; the sizes must increase from ≥ 1 to the \
             layer's {channels} channels",
            grid.len(),
            accuracy.len()
        )));
    }
    if let Some(a) = accuracy.iter().find(|a| !a.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "accuracy curve: accuracy {a} is not finite"
        )));
    }
    let mut lower = accuracy.to_vec();
    for i in (0..lower.len().saturating_sub(1)).rev() {
        lower[i] = lower[i].min(lower[i + 1]);
    }
    let mut out = Vec::with_capacity(channels);
    let mut j = 0;
    for k in 1..=channels {
        while grid[j] < k {
            j += 1;
        }
        out.push(if grid[j] == k || j == 0 {
            lower[j]
        } else {
            let (k0, k1) = (grid[j - 1] as f64, grid[j] as f64);
            let t = (k as f64 - k0) / (k1 - k0);
            lower[j - 1] + t * (lower[j] - lower[j - 1])
        });
    }
    Ok(out)
}

/// Checks validation images and labels against `graph`'s input before any work: not empty, one
/// label per image, the model's image shape.
pub fn check_validation(graph: &Graph, validation: &Validation<'_>) -> Result<()> {
    if validation.images.is_empty() {
        return Err(Error::InvalidArgument(
            "the accuracy budget needs validation images: the validation set holds none".into(),
        ));
    }
    if validation.labels.len() != validation.images.len() {
        return Err(Error::Shape(format!(
            "validation: {} labels for {} images; they must match",
            validation.labels.len(),
            validation.images.len()
        )));
    }
    let input = graph
        .inputs
        .first()
        .ok_or_else(|| Error::InvalidArgument("the model has no input".into()))?;
    let model_image: Vec<usize> = graph.values[*input].shape.at(1)[1..].to_vec();
    if validation.images.image_shape() != model_image.as_slice() {
        return Err(Error::Shape(format!(
            "the validation images are {:?} each; model input '{}' takes images of {:?}",
            validation.images.image_shape(),
            graph.values[*input].name,
            model_image
        )));
    }
    Ok(())
}

/// The validation images' activations at one value (`None`: the images themselves).
struct Cached {
    value: ValueId,
    images: Option<F32Images>,
}

/// Measures the accuracy curve of every layer of `stats` (see the module documentation):
/// `selector` picks each size's channels (use one [`super::select::greedy::Greedy`] for all
/// sizes), `options` give the reweighting, ridge, tolerance, batch size and the memory for the
/// cached activations. `progress(evaluations done, total)`.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    graph: &Graph,
    stats: &LayerwiseStats,
    selector: &dyn Selector,
    validation: Validation<'_>,
    options: &PruneOptions,
    backend: &dyn Backend,
    executor: ExecutorFactory<'_>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Sensitivity> {
    let start = Instant::now();
    check_validation(graph, &validation)?;
    crate::layer::select::check_batch_images(options.batch_images)?;
    let n = validation.images.len();
    let top1 = |exec: &dyn crate::exec::Executor, images: &dyn ImageSource| -> Result<f64> {
        let r = evaluate(
            exec,
            images,
            validation.labels,
            options.batch_images,
            &mut |_, _| {},
        )?;
        Ok(r.correct_top1 as f64 / n as f64)
    };
    let grids: Vec<Vec<usize>> = stats
        .layers
        .iter()
        .map(|l| accuracy_grid(l.layer.channels))
        .collect();
    let total = 1 + grids.iter().map(|g| g.len() - 1).sum::<usize>();
    let baseline = top1(executor(graph)?.as_ref(), validation.images)?;
    let mut done = 1;
    progress(done, total);
    let live = single_live(graph);
    let input = graph.inputs[0];
    let mut cache = Cached {
        value: input,
        images: None,
    };
    let mut layers = Vec::new();
    for (i, (l, grid)) in stats.layers.iter().zip(&grids).enumerate() {
        // The last point before the producer where one activation is alive alone.
        let cut = (0..=l.layer.producer.min(live.len() - 1))
            .rev()
            .find_map(|p| live[p])
            .unwrap_or(input);
        if cut != cache.value {
            let per: usize = graph.values[cut].shape.at(1)[1..].iter().product();
            let bytes = (per * n * 4) as u64;
            cache = if bytes <= options.memory_budget {
                let from: &dyn ImageSource = match &cache.images {
                    Some(c) => c,
                    None => validation.images,
                };
                let sub = subgraph(graph, cache.value, &[cut])?;
                let exec = executor(&sub)?;
                let mut data = Vec::with_capacity(per * n);
                forward_batches(
                    exec.as_ref(),
                    from,
                    options.batch_images,
                    &[],
                    &mut |_, _| Ok(()),
                    &mut |_, out| {
                        data.extend_from_slice(&out[0].data);
                        Ok(())
                    },
                    &mut |_, _| {},
                )?;
                let mut shape = vec![n];
                shape.extend_from_slice(&graph.values[cut].shape.at(1)[1..]);
                Cached {
                    value: cut,
                    images: Some(F32Images::new(
                        format!("validation activations at '{}'", graph.values[cut].name),
                        Tensor::new(shape, data)?,
                    )?),
                }
            } else {
                Cached {
                    value: input,
                    images: None,
                }
            };
        }
        let images: &dyn ImageSource = match &cache.images {
            Some(c) => c,
            None => validation.images,
        };
        let mut accuracy = Vec::with_capacity(grid.len());
        for &k in &grid[..grid.len() - 1] {
            let (g, _) = stats.prune_one(graph, i, selector, k, options, backend)?;
            let part = if cache.value == input {
                g
            } else {
                let outputs = g.outputs.clone();
                subgraph(&g, cache.value, &outputs)?
            };
            accuracy.push(top1(executor(&part)?.as_ref(), images)?);
            done += 1;
            progress(done, total);
        }
        accuracy.push(baseline);
        let envelope = monotone_envelope(grid, &accuracy, l.layer.channels)?;
        layers.push(LayerAccuracy {
            name: l.layer.name.clone(),
            channels: l.layer.channels,
            grid: grid.clone(),
            accuracy,
            envelope,
        });
    }
    Ok(Sensitivity {
        baseline,
        images: n,
        layers,
        evaluations: total,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_geometric_distinct_and_ends_at_the_layer() {
        assert_eq!(accuracy_grid(1), vec![1]);
        assert_eq!(accuracy_grid(2), vec![1, 2]);
        assert_eq!(accuracy_grid(32), vec![1, 2, 3, 4, 6, 8, 11, 16, 23, 32]);
        for d in 1..600 {
            let g = accuracy_grid(d);
            assert_eq!((g[0], *g.last().unwrap()), (1, d));
            assert!(g.windows(2).all(|w| w[0] < w[1]));
            // Consecutive sizes at most a factor √2 (+ rounding) apart.
            assert!(g.windows(2).all(|w| w[1] as f64 <= w[0] as f64 * 1.5 + 1.0));
        }
    }

    #[test]
    fn envelope_is_the_lower_monotone_hull_interpolated() {
        // A dip at 4 drags 2 down; 8 is above 16 and is capped by it.
        let grid = [1, 2, 4, 8, 16];
        let acc = [0.1, 0.6, 0.5, 0.95, 0.9];
        let e = monotone_envelope(&grid, &acc, 16).unwrap();
        assert_eq!(e.len(), 16);
        assert_eq!(e[0], 0.1);
        assert_eq!(e[1], 0.5);
        assert_eq!(e[3], 0.5);
        assert_eq!(e[7], 0.9);
        assert_eq!(e[15], 0.9);
        assert!((e[2] - 0.5).abs() < 1e-15);
        assert!((e[5] - 0.7).abs() < 1e-12, "{}", e[5]); // halfway between 4 and 8
        assert!(e.windows(2).all(|w| w[0] <= w[1]));
        assert!(monotone_envelope(&[2, 1], &[0.0, 1.0], 2).is_err());
        assert!(monotone_envelope(&[1, 2], &[0.0], 2).is_err());
        assert!(monotone_envelope(&[1, 3], &[0.0, 1.0], 4).is_err());
        assert!(monotone_envelope(&[1, 2], &[f64::NAN, 1.0], 2).is_err());
    }
}
