//! The greedy selection (`docs/ALGORITHM.md` §2), driven on the host: the backend scores every candidate
//! and downdates its state, the host picks the argmax and records the order, the gains and the
//! error curve. Then the reweighting solve `W~ = G[S,S]⁻¹ C0[S,:]` in f64.

use crate::backend::{Backend, GreedySpec};
use crate::error::{Error, Result};
use crate::linalg::{backward_solve, cholesky_dropping, forward_solve};
use crate::stats::LayerStats;

/// The outcome of one greedy run over all channels: the selection for every budget.
#[derive(Clone, Debug, PartialEq)]
pub struct GreedyRun {
    /// All channels, in the order greedy picked them. The keep set for budget `k` is `order[..k]`.
    pub order: Vec<usize>,
    /// The marginal gain of each pick (same order), in units of `‖AW‖²`.
    pub gains: Vec<f64>,
    /// `error_curve[k-1]` = `err(S_k)` = `(‖AW‖² − F(S_k)) / ‖AW‖²`, non-increasing, in `[0, 1]`.
    pub error_curve: Vec<f64>,
    /// `‖AW‖²`.
    pub total: f64,
}

impl GreedyRun {
    /// The channels kept at budget `k`, sorted.
    pub fn kept(&self, k: usize) -> Vec<usize> {
        let mut kept = self.order[..k.min(self.order.len())].to_vec();
        kept.sort_unstable();
        kept
    }
}

/// Which part of the work a progress report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Accumulating the statistics: images done of images in all.
    Statistics,
    /// The greedy: steps done of channels.
    Greedy,
}

/// A progress callback: `(stage, done, total)`.
pub type Progress<'a> = &'a mut dyn FnMut(Stage, usize, usize);

/// Runs the greedy for all `d` channels. Ties go to the lowest index; a channel with zero gain
/// (dead, or numerically dependent on the selection) is only picked once no channel with positive
/// gain remains. When `‖AW‖² = 0` (nothing reaches the consumer) every error is 0.
pub fn run_greedy(
    backend: &dyn Backend,
    stats: &LayerStats,
    dependence_tol: f64,
    progress: Progress<'_>,
) -> Result<GreedyRun> {
    if !(0.0..1.0).contains(&dependence_tol) {
        return Err(Error::InvalidArgument(format!(
            "dependence tolerance {dependence_tol} must be in [0, 1)"
        )));
    }
    let channels = stats.layout.channels;
    let mut state = backend.greedy_state(GreedySpec {
        layout: stats.layout,
        outputs: stats.outputs,
        gram: &stats.gram,
        c0: &stats.c0,
        dependence_tol,
    })?;
    let mut gains = vec![0.0; channels];
    let mut selected = vec![false; channels];
    let mut run = GreedyRun {
        order: Vec::with_capacity(channels),
        gains: Vec::with_capacity(channels),
        error_curve: Vec::with_capacity(channels),
        total: stats.total,
    };
    let mut explained = 0.0;
    for step in 0..channels {
        state.score(&mut gains)?;
        let (pick, best_gain) = pick_channel(&gains, &selected, step, "statistics")?;
        state.select(pick)?;
        selected[pick] = true;
        explained += best_gain;
        run.order.push(pick);
        run.gains.push(best_gain);
        run.error_curve
            .push(normalized_error(stats.total, explained));
        progress(Stage::Greedy, step + 1, channels);
    }
    Ok(run)
}

/// The greedy's pick rule, shared by every greedy loop (Gram form, data form, the joint greedy of
/// the pruning pipeline): the unselected channel of largest positive marginal gain, ties to the
/// lowest index; when no unselected channel has a positive gain, the lowest unselected one, with
/// gain 0 (so zero-gain channels come last, in index order). Returns the channel and its gain.
/// A non-finite gain is an error naming the channel, the `step` and what the gains came from
/// (`source`, e.g. "statistics" or "data"). `selected` must leave at least one channel.
pub(crate) fn pick_channel(
    gains: &[f64],
    selected: &[bool],
    step: usize,
    source: &str,
) -> Result<(usize, f64)> {
    let mut best: Option<(usize, f64)> = None;
    for (ch, &g) in gains.iter().enumerate() {
        if !g.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "marginal gain of channel {ch} is {g} at step {step}: the {source} are not finite"
            )));
        }
        if !selected[ch] && g > best.map_or(0.0, |(_, b)| b) {
            best = Some((ch, g));
        }
    }
    Ok(best.unwrap_or_else(|| {
        let first = selected
            .iter()
            .position(|&s| !s)
            .expect("a channel remains");
        (first, 0.0)
    }))
}

/// `(total − explained) / total`, clamped to `[0, 1]` (rounding can overshoot by an ulp); 0 when
/// `total` is 0.
pub(crate) fn normalized_error(total: f64, explained: f64) -> f64 {
    if total > 0.0 {
        ((total - explained) / total).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// New consumer weights for a keep set, and the error they leave.
#[derive(Clone, Debug, PartialEq)]
pub struct Reweighted {
    /// The kept channels, sorted.
    pub kept: Vec<usize>,
    /// `W~_S`, `(|S|·ks) × m` row-major: the rows of the kept channels' column groups.
    pub weight: Vec<f64>,
    /// `‖AW − B_S W~_S‖² / ‖AW‖²`.
    pub relative_error: f64,
}

/// Checks a keep set: non-empty, in range, no repeats. Returns it sorted.
fn check_kept(stats: &LayerStats, kept: &[usize]) -> Result<Vec<usize>> {
    let channels = stats.layout.channels;
    let mut sorted = kept.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return Err(Error::InvalidArgument("the keep set is empty".into()));
    }
    if let Some(&bad) = sorted.iter().find(|&&c| c >= channels) {
        return Err(Error::InvalidArgument(format!(
            "channel {bad} is out of range (the layer has {channels})"
        )));
    }
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::InvalidArgument(
            "the keep set repeats a channel".into(),
        ));
    }
    Ok(sorted)
}

/// Column indices of the kept channels' groups, in order.
fn kept_columns(stats: &LayerStats, kept: &[usize]) -> Vec<usize> {
    let ks = stats.layout.columns_per_channel;
    kept.iter().flat_map(|&c| c * ks..(c + 1) * ks).collect()
}

/// The optimal new consumer weights for `kept`: `W~ = G[S,S]⁺ C0[S,:]`, by Cholesky in f64.
/// Columns numerically dependent on the others (pivot under `dependence_tol` of their diagonal)
/// get zero weights, which is the pseudo-inverse solution on the rest.
pub fn reweight(stats: &LayerStats, kept: &[usize], dependence_tol: f64) -> Result<Reweighted> {
    let kept = check_kept(stats, kept)?;
    let cols = kept_columns(stats, &kept);
    let (m, n) = (stats.outputs, cols.len());
    let mut l = stats.gram.submatrix(&cols)?;
    let diag: Vec<f64> = (0..n).map(|i| l[i * n + i]).collect();
    let mut ok = vec![false; n];
    cholesky_dropping(&mut l, n, &diag, dependence_tol, &mut ok);
    let mut weight: Vec<f64> = cols
        .iter()
        .flat_map(|&c| stats.c0[c * m..(c + 1) * m].iter().copied())
        .collect();
    let c0_kept = weight.clone();
    forward_solve(&l, n, &ok, &mut weight, m);
    backward_solve(&l, n, &ok, &mut weight, m);
    let explained: f64 = weight.iter().zip(&c0_kept).map(|(w, c)| w * c).sum();
    Ok(Reweighted {
        kept,
        weight,
        relative_error: normalized_error(stats.total, explained),
    })
}

/// `‖AW − B_S W_S‖² / ‖AW‖²` when the consumer keeps its original rows for the kept channels:
/// `(total − 2⟨W_S, C0_S⟩ + ⟨W_S, G_SS W_S⟩) / total`.
pub fn error_without_reweight(stats: &LayerStats, kept: &[usize]) -> Result<f64> {
    let kept = check_kept(stats, kept)?;
    let cols = kept_columns(stats, &kept);
    let (m, n) = (stats.outputs, cols.len());
    let gss = stats.gram.submatrix(&cols)?;
    let w = &stats.weight;
    let mut cross = 0.0;
    let mut quad = 0.0;
    for (i, &ci) in cols.iter().enumerate() {
        let wi = &w[ci * m..(ci + 1) * m];
        cross += wi
            .iter()
            .zip(&stats.c0[ci * m..(ci + 1) * m])
            .map(|(a, b)| a * b)
            .sum::<f64>();
        for (j, &cj) in cols.iter().enumerate() {
            let g = gss[i * n + j];
            if g != 0.0 {
                quad += g * wi
                    .iter()
                    .zip(&w[cj * m..(cj + 1) * m])
                    .map(|(a, b)| a * b)
                    .sum::<f64>();
            }
        }
    }
    if stats.total > 0.0 {
        Ok(((stats.total - 2.0 * cross + quad) / stats.total).max(0.0))
    } else {
        Ok(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_rule_takes_the_largest_gain_lowest_index_on_ties_zero_gains_last() {
        let none = [false; 5];
        // Largest gain wins; of two equal ones, the lower index.
        let gains = [1.0, 3.0, 0.5, 3.0, 0.0];
        assert_eq!(pick_channel(&gains, &none, 0, "data").unwrap(), (1, 3.0));
        // Selected channels are skipped however large their gain.
        let sel = [false, true, false, false, false];
        assert_eq!(pick_channel(&gains, &sel, 1, "data").unwrap(), (3, 3.0));
        // No positive gain left: the lowest unselected channel, with gain 0 (a negative rounding
        // residue counts as 0).
        let gains = [0.0, -1e-18, 0.0, 0.0, 0.0];
        let sel = [true, false, false, true, false];
        assert_eq!(pick_channel(&gains, &sel, 2, "data").unwrap(), (1, 0.0));
        // A non-finite gain, even of a selected channel, is an error naming it and the step.
        let gains = [0.0, 1.0, f64::NAN, 0.0, 0.0];
        let e = pick_channel(&gains, &sel, 7, "statistics")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("channel 2") && e.contains("step 7") && e.contains("statistics"),
            "{e}"
        );
    }
}
