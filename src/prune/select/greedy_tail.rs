//! `greedy-tail`: the paper's greedy while its gains carry information, then activation norms
//! for the zero-gain tail (an opt-in variant; `greedy` stays the paper's method).
//!
//! Why: with few calibration images a consumer can have more input columns than calibration
//! rows (a Flatten → Gemm with `H·W` columns per channel, MNIST's conv2 → fc1: 512 rows, 3136
//! columns). After some step `t` the kept columns fit the calibration data exactly, every
//! remaining channel is numerically dependent on them, and every later gain is 0: the rest of the
//! greedy order is a tie, which the specification breaks by the lowest index
//! (`docs/ALGORITHM.md` §2), i.e. not by the data. This method keeps the greedy's order up to that
//! step and fills the rest of the keep set with the remaining channels of largest mean squared
//! activation ([`super::act_norm::scores`]).
//!
//! What it changes, and what not: when every gain at step `t` is 0, the residual is orthogonal
//! to every remaining channel's columns, so *any* completion of the first `t` picks has the same
//! calibration error: the greedy's objective, its error curve and its guarantee are unchanged;
//! only the choice among equally good completions differs. Measured on MNIST (`EVALUATION.md`)
//! it generalises better than the index order. Where no gain reaches 0 before the budget, it
//! keeps exactly the greedy's channels.

use std::borrow::Borrow;

use super::greedy::Greedy;
use super::{act_norm, check_keep, LayerContext, Selection, Selector};
use crate::error::Result;
use crate::layer::greedy::GreedyRun;

/// Gains at or below this (in units of `‖AW‖²`) start the tail. The greedy reports a dependent
/// channel's gain as exactly 0; the margin only absorbs rounding of the f64 Schur updates.
pub const TAIL_GAIN: f64 = 1e-12;

/// Greedy, then act-norm in the zero-gain tail. `G` is the greedy (owned, or borrowed to share
/// its cached runs with a plain [`Greedy`] selector over the same statistics).
pub struct GreedyTail<G: Borrow<Greedy> = Greedy> {
    /// The greedy whose runs are used.
    pub greedy: G,
}

/// The number of informative picks of a run: the greedy steps before the first gain
/// ≤ [`TAIL_GAIN`] (all of them when none is).
pub fn informative_steps(run: &GreedyRun) -> usize {
    run.gains
        .iter()
        .position(|&g| g <= TAIL_GAIN)
        .unwrap_or(run.order.len())
}

/// The keep set of size `keep`: `run.order[..t]` for the first `t = min(keep, informative)`
/// picks, then the channels of `run.order[t..]` with the largest `scores` (ties: lowest index).
/// Sorted.
pub fn complete_by_scores(run: &GreedyRun, keep: usize, scores: &[f64]) -> Vec<usize> {
    let informative = informative_steps(run).min(keep);
    let mut kept = run.order[..informative].to_vec();
    let mut rest = run.order[informative..].to_vec();
    rest.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    kept.extend_from_slice(&rest[..keep.saturating_sub(informative).min(rest.len())]);
    kept.sort_unstable();
    kept
}

impl<G: Borrow<Greedy> + Send + Sync> Selector for GreedyTail<G> {
    fn name(&self) -> String {
        "greedy-tail".into()
    }

    fn select(
        &self,
        layer: &LayerContext<'_>,
        keep: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Selection> {
        check_keep(layer, keep)?;
        let run = self.greedy.borrow().run(layer, progress)?;
        let scores = act_norm::scores(layer);
        if let Some(c) = scores.iter().position(|s| !s.is_finite()) {
            return Err(crate::error::Error::InvalidArgument(format!(
                "layer '{}': activation score of channel {c} is {}: the statistics are not finite",
                layer.name, scores[c]
            )));
        }
        Ok(Selection {
            kept: complete_by_scores(&run, keep, &scores),
            row_scale: None,
            // The run's error curve holds for this keep set too (the tail adds no gain).
            greedy: Some(run),
        })
    }
}
