//! The greedy selection (`docs/ALGORITHM.md` §2), driven on the host: one driver for every form
//! (`drive`): each consumer's state (a backend's Schur complement, or the data form's
//! orthogonalised columns) scores every candidate and takes the pick; the host sums the gains over
//! the consumers, picks the argmax and records the order, the gains and the error curve.

use super::backend::{Backend, GreedySpec, GreedyState};
use super::stats::LayerStats;
use crate::error::{Error, Result};

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

/// Checks a relative pivot tolerance for numerically dependent channels: in `[0, 1)`.
pub fn check_dependence_tol(dependence_tol: f64) -> Result<()> {
    if !(0.0..1.0).contains(&dependence_tol) {
        return Err(Error::InvalidArgument(format!(
            "dependence tolerance {dependence_tol} must be in [0, 1)"
        )));
    }
    Ok(())
}

/// Runs the greedy for all `d` channels of one consumer. Ties go to the lowest index; a channel
/// with zero gain (dead, or numerically dependent on the selection) is only picked once no
/// channel with positive gain remains. When `‖AW‖² = 0` (nothing reaches the consumer) every
/// error is 0.
pub fn run_greedy(
    backend: &dyn Backend,
    stats: &LayerStats,
    dependence_tol: f64,
    progress: Progress<'_>,
) -> Result<GreedyRun> {
    run_greedy_shared(
        backend,
        std::slice::from_ref(stats),
        dependence_tol,
        &mut |d, n| progress(Stage::Greedy, d, n),
    )
}

/// One greedy run over several consumers of the same channels (a producer read by several
/// layers), with one objective: the sum over the consumers of each one's normalised objective,
/// `F(S) = Σ_c F_c(S) / ‖A_cW_c‖²` (a consumer whose `‖A_cW_c‖²` is 0 counts with weight 1: its
/// gains are all 0). A channel's gain is the weighted sum of its gains in every consumer and the
/// selection is shared. A sum of γ-weakly submodular functions is weakly submodular with the
/// smallest of their ratios, so the greedy keeps its guarantee (`docs/ALGORITHM.md`). With one
/// consumer this is [`run_greedy`] in the units of `‖AW‖²`; with several, [`GreedyRun::gains`]
/// and [`GreedyRun::total`] are in normalised units (`total` = the number of consumers that
/// something reaches) and the error curve is the mean of their normalised errors. `progress(done, channels)`.
pub fn run_greedy_shared(
    backend: &dyn Backend,
    stats: &[LayerStats],
    dependence_tol: f64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<GreedyRun> {
    check_dependence_tol(dependence_tol)?;
    let Some(first) = stats.first() else {
        return Err(Error::InvalidArgument(
            "a greedy run needs at least one consumer's statistics".into(),
        ));
    };
    let channels = first.layout.channels;
    if let Some(s) = stats.iter().find(|s| s.layout.channels != channels) {
        return Err(Error::Shape(format!(
            "consumers of one layer read {channels} and {} channels",
            s.layout.channels
        )));
    }
    let mut states = stats
        .iter()
        .map(|s| {
            backend.greedy_state(GreedySpec {
                layout: s.layout,
                outputs: s.outputs,
                gram: &s.gram,
                c0: &s.c0,
                dependence_tol,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let (weights, total) = if stats.len() == 1 {
        (None, stats[0].total)
    } else {
        let w: Vec<f64> = stats
            .iter()
            .map(|s| if s.total > 0.0 { 1.0 / s.total } else { 1.0 })
            .collect();
        // A consumer that nothing reaches (‖AW‖² = 0) has no gains and no error to count.
        let reached = stats.iter().filter(|s| s.total > 0.0).count();
        (Some(w), reached as f64)
    };
    drive(
        &mut states,
        weights.as_deref(),
        channels,
        total,
        "statistics",
        progress,
    )
}

/// The greedy loop shared by every form: per step, every state scores all channels, the gains
/// are summed over the states (each times its weight, when `weights` are given), the
/// [pick rule](pick_channel) chooses, and every state takes the pick. `total` is the objective's
/// value with every channel kept, in the gains' units; `source` names what the gains come from in
/// errors.
pub(crate) fn drive(
    states: &mut [Box<dyn GreedyState + '_>],
    weights: Option<&[f64]>,
    channels: usize,
    total: f64,
    source: &str,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<GreedyRun> {
    let mut run = GreedyRun {
        order: Vec::with_capacity(channels),
        gains: Vec::with_capacity(channels),
        error_curve: Vec::with_capacity(channels),
        total,
    };
    let mut selected = vec![false; channels];
    let mut sum = vec![0.0; channels];
    let mut gains = vec![
        0.0;
        if states.len() > 1 || weights.is_some() {
            channels
        } else {
            0
        }
    ];
    let mut explained = 0.0;
    for step in 0..channels {
        for (i, state) in states.iter_mut().enumerate() {
            match weights {
                None if i == 0 => state.score(&mut sum)?,
                None => {
                    state.score(&mut gains)?;
                    sum.iter_mut().zip(&gains).for_each(|(s, g)| *s += g);
                }
                Some(w) => {
                    state.score(&mut gains)?;
                    if i == 0 {
                        sum.fill(0.0);
                    }
                    sum.iter_mut().zip(&gains).for_each(|(s, g)| *s += w[i] * g);
                }
            }
        }
        let (pick, best_gain) = pick_channel(&sum, &selected, step, source)?;
        for state in states.iter_mut() {
            state.select(pick)?;
        }
        selected[pick] = true;
        explained += best_gain;
        run.order.push(pick);
        run.gains.push(best_gain);
        run.error_curve.push(normalized_error(total, explained));
        progress(step + 1, channels);
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
