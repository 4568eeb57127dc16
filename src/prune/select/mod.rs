//! Channel selection methods (`docs/ALGORITHM.md` §2 and §5): one [`Selector`] per file.
//!
//! A selector sees one layer's statistics (one [`LayerStats`] per consumer: `G = BᵀB`,
//! `C0 = (BᵀA)·W`, `‖AW‖²` and the consumer weight `W`) and returns a keep set of the requested
//! size. Reweighting is separate: any keep set can be reweighted with one least-squares solve on
//! the same statistics ([`consumer_rows`]), so every method comes with and without it.
//!
//! | method | file | score |
//! |---|---|---|
//! | `greedy` | [`greedy`] | the weakly submodular greedy on the reweighted error (the paper) |
//! | `greedy-tail` | [`greedy_tail`] | the greedy until its gains reach 0, then act-norm (opt-in) |
//! | `random` | [`random`] | a seeded uniform draw |
//! | `weight-norm` | [`weight_norm`] | l1 norm of the channel's consumer weight rows |
//! | `act-norm` | [`act_norm`] | mean squared activation of the channel (diagonal of `G`) |
//! | `layer-sampling` | [`layer_sampling`] | sensitivity sampling (Liebenwein et al. 2020) |
//!
//! A new method is one file with a type implementing [`Selector`] and one [`Method`] variant.

pub mod act_norm;
pub mod greedy;
pub mod greedy_tail;
pub mod layer_sampling;
pub mod random;
pub mod weight_norm;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::layer::greedy::GreedyRun;
use crate::layer::LayerStats;

use crate::layer::reweight::{kept_rows, original_rows, Reweighted};

/// One layer as a selector sees it.
pub struct LayerContext<'a> {
    /// The producer's name.
    pub name: &'a str,
    /// The producer's node index (seeds are derived from it, so a layer draws the same channels
    /// whichever other layers are pruned).
    pub index: usize,
    /// The statistics of each consumer (at least one; all with the same channel count).
    pub stats: &'a [LayerStats],
    /// The backend the greedy runs on.
    pub backend: &'a dyn Backend,
    /// Relative pivot tolerance for numerically dependent channels.
    pub dependence_tol: f64,
}

impl LayerContext<'_> {
    /// Output channels of the producer.
    pub fn channels(&self) -> usize {
        self.stats[0].layout.channels
    }
}

/// A keep set, and what the method knows beyond it.
#[derive(Clone, Debug)]
pub struct Selection {
    /// The kept channels, sorted.
    pub kept: Vec<usize>,
    /// A factor for each kept channel's consumer rows when the consumer is not reweighted by
    /// least squares (layer sampling's importance weights); `None`: the rows stay as they are.
    pub row_scale: Option<Vec<f64>>,
    /// The greedy run, when the method is the greedy (its order and error curve are reported).
    pub greedy: Option<GreedyRun>,
}

impl Selection {
    /// A plain keep set (sorted here).
    pub fn plain(mut kept: Vec<usize>) -> Self {
        kept.sort_unstable();
        Self {
            kept,
            row_scale: None,
            greedy: None,
        }
    }
}

/// A channel selection method.
pub trait Selector: Send + Sync {
    /// The method's name as on the command line.
    fn name(&self) -> String;
    /// Chooses `keep` channels (1 ≤ keep ≤ channels) of the layer. `progress(done, total)` may be
    /// called for long selections.
    fn select(
        &self,
        layer: &LayerContext<'_>,
        keep: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Selection>;
}

/// A data-free or statistics-only ranking: keeps the `keep` channels with the largest score
/// (`top_k`'s tie rule). WeightNorm and ActNorm are this with their score functions.
pub struct TopScore {
    /// The method's name as on the command line.
    pub name: &'static str,
    /// One score per channel.
    pub scores: fn(&LayerContext<'_>) -> Vec<f64>,
}

impl Selector for TopScore {
    fn name(&self) -> String {
        self.name.into()
    }

    fn select(
        &self,
        layer: &LayerContext<'_>,
        keep: usize,
        _progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Selection> {
        check_keep(layer, keep)?;
        Ok(Selection::plain(top_k(&(self.scores)(layer), keep)?))
    }
}

/// The methods, as named on the command line (`--method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The greedy of the paper.
    #[default]
    Greedy,
    /// Seeded uniform random channels.
    Random,
    /// Largest l1 norm of the consumer weight rows.
    WeightNorm,
    /// Largest mean squared activation.
    ActNorm,
    /// Sensitivity sampling with importance weights.
    LayerSampling,
    /// The greedy until its gains reach 0, then the largest mean squared activations.
    GreedyTail,
}

impl Method {
    /// Every method, in the order tables list them.
    pub const ALL: [Method; 6] = [
        Method::Greedy,
        Method::Random,
        Method::WeightNorm,
        Method::ActNorm,
        Method::LayerSampling,
        Method::GreedyTail,
    ];

    /// The methods `compare` runs by default: the paper's greedy and its baselines
    /// (`greedy-tail`, a variant of the greedy, on request).
    pub const BASELINES: [Method; 5] = [
        Method::Greedy,
        Method::Random,
        Method::WeightNorm,
        Method::ActNorm,
        Method::LayerSampling,
    ];

    /// The command-line name.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Greedy => "greedy",
            Method::Random => "random",
            Method::WeightNorm => "weight-norm",
            Method::ActNorm => "act-norm",
            Method::LayerSampling => "layer-sampling",
            Method::GreedyTail => "greedy-tail",
        }
    }

    /// Whether the method draws at random (and takes a seed).
    pub fn is_random(&self) -> bool {
        matches!(self, Method::Random | Method::LayerSampling)
    }

    /// The selector, with `seed` for the random methods.
    pub fn selector(&self, seed: u64) -> Box<dyn Selector> {
        match self {
            Method::Greedy => Box::new(greedy::Greedy::default()),
            Method::Random => Box::new(random::Random { seed }),
            Method::WeightNorm => Box::new(TopScore {
                name: "weight-norm",
                scores: weight_norm::scores,
            }),
            Method::ActNorm => Box::new(TopScore {
                name: "act-norm",
                scores: act_norm::scores,
            }),
            Method::LayerSampling => Box::new(layer_sampling::LayerSampling { seed }),
            Method::GreedyTail => Box::new(greedy_tail::GreedyTail {
                greedy: greedy::Greedy::default(),
            }),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Method::ALL
            .iter()
            .find(|m| m.name() == s)
            .copied()
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "method '{s}': expected one of {}",
                    Method::ALL.map(|m| m.name()).join(", ")
                ))
            })
    }
}

/// Checks `keep` against the layer.
pub(crate) fn check_keep(layer: &LayerContext<'_>, keep: usize) -> Result<()> {
    let channels = layer.channels();
    if keep == 0 || keep > channels {
        return Err(Error::InvalidArgument(format!(
            "layer '{}': keep {keep} channels, must be between 1 and its {channels}",
            layer.name
        )));
    }
    if layer.stats.iter().any(|s| s.layout.channels != channels) {
        return Err(Error::Shape(format!(
            "layer '{}': its consumers see different channel counts",
            layer.name
        )));
    }
    Ok(())
}

/// The `keep` channels with the largest scores (ties: lowest index), sorted.
pub(crate) fn top_k(scores: &[f64], keep: usize) -> Result<Vec<usize>> {
    if let Some(c) = scores.iter().position(|s| !s.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "score of channel {c} is {}: the statistics are not finite",
            scores[c]
        )));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // Stable sort: equal scores keep the lower index first.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut kept = order[..keep.min(order.len())].to_vec();
    kept.sort_unstable();
    Ok(kept)
}

/// The kept channels' new consumer rows for one consumer and the residual they leave:
/// reweighted by least squares (closest-to-original ridge form, [`mod@crate::layer::reweight`]) when
/// `reweight`, else the original rows times the selection's [`Selection::row_scale`].
pub fn consumer_rows(
    stats: &LayerStats,
    selection: &Selection,
    reweight: bool,
    ridge: f64,
    dependence_tol: f64,
) -> Result<Reweighted> {
    match (&selection.row_scale, reweight) {
        (Some(scale), false) => original_rows(stats, &selection.kept, Some(scale)),
        _ => kept_rows(stats, &selection.kept, reweight, ridge, dependence_tol),
    }
}

/// `selection` with, for each value of `group` that would keep none of its channels (a
/// producer of a Concat whose channels were all dropped, one segment of a stream, a consumer of
/// one Split part), the one of its channels the greedy picked first (else its lowest), so that
/// no producer, consumer or map is left with zero channels. Rare; the kept count then exceeds
/// the budget by as many.
pub(crate) fn every_value_keeps_one(
    group: &crate::analysis::ChannelGroup,
    mut selection: Selection,
) -> Selection {
    let order = selection.greedy.as_ref().map(|r| r.order.clone());
    let mut added = false;
    for v in &group.values {
        let positions = &v.channels;
        if positions.is_empty()
            || positions
                .iter()
                .any(|a| selection.kept.binary_search(a).is_ok())
        {
            continue;
        }
        let pick = order
            .as_ref()
            .and_then(|o| o.iter().find(|a| positions.contains(a)).copied())
            .or_else(|| positions.iter().min().copied());
        if let Some(a) = pick {
            if let Err(at) = selection.kept.binary_search(&a) {
                selection.kept.insert(at, a);
                added = true;
            }
        }
    }
    if added {
        // Importance weights belong to the original keep set.
        selection.row_scale = None;
    }
    selection
}

/// Selects channels of `group` for a size that stands for a share of its parameters (a keep
/// fraction or a budget's size, `by_weight`): where the group's channels hold unequal parameter
/// counts ([`crate::analysis::ChannelGroup::channel_weights`]), the largest selection whose
/// parameters are at most `keep / channels` of the group's, so that the cost model's prediction
/// (every constant scaled by the kept fraction) holds; otherwise, or for an explicit count,
/// `keep` channels.
pub(crate) fn select_sized(
    selector: &dyn Selector,
    ctx: &LayerContext<'_>,
    group: &crate::analysis::ChannelGroup,
    keep: usize,
    by_weight: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Selection> {
    let first = selector.select(ctx, keep, progress)?;
    if !by_weight || !group.unequal_channels() {
        return Ok(first);
    }
    let n = group.channels;
    let allowed = group.weight_of(&(0..n).collect::<Vec<_>>()) * keep as f64 / n as f64;
    let fits = |s: &Selection| group.weight_of(&s.kept) <= allowed * (1.0 + 1e-9);
    let mut best = first;
    let mut k = keep;
    if fits(&best) {
        while k < n {
            let next = selector.select(ctx, k + 1, &mut |_, _| {})?;
            if !fits(&next) {
                break;
            }
            (best, k) = (next, k + 1);
        }
    } else {
        while k > 1 {
            k -= 1;
            best = selector.select(ctx, k, &mut |_, _| {})?;
            if fits(&best) {
                break;
            }
        }
    }
    Ok(best)
}
