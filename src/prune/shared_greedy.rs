//! One greedy run over all consumers of a layer (`docs/ALGORITHM.md` §4).

use crate::backend::Backend;
use crate::error::Result;
use crate::greedy::{run_greedy, GreedyRun};
use crate::stats::LayerStats;

/// One greedy run over all consumers of a layer: gains summed, selection shared (one
/// consumer: [`run_greedy`] itself).
pub(crate) fn shared_greedy(
    backend: &dyn Backend,
    stats: &[LayerStats],
    tol: f64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<GreedyRun> {
    if stats.len() == 1 {
        return run_greedy(backend, &stats[0], tol, &mut |_, d, n| progress(d, n));
    }
    let channels = stats[0].layout.channels;
    let mut states = stats
        .iter()
        .map(|s| {
            backend.greedy_state(crate::backend::GreedySpec {
                layout: s.layout,
                outputs: s.outputs,
                gram: &s.gram,
                c0: &s.c0,
                dependence_tol: tol,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let total: f64 = stats.iter().map(|s| s.total).sum();
    let mut run = GreedyRun {
        order: Vec::new(),
        gains: Vec::new(),
        error_curve: Vec::new(),
        total,
    };
    let mut selected = vec![false; channels];
    let mut gains = vec![0.0; channels];
    let mut sum = vec![0.0; channels];
    let mut explained = 0.0;
    for step in 0..channels {
        sum.iter_mut().for_each(|s| *s = 0.0);
        for st in states.iter_mut() {
            st.score(&mut gains)?;
            for (s, g) in sum.iter_mut().zip(&gains) {
                *s += g;
            }
        }
        let (pick, best_gain) = crate::greedy::pick_channel(&sum, &selected, step, "statistics")?;
        for st in states.iter_mut() {
            st.select(pick)?;
        }
        selected[pick] = true;
        explained += best_gain;
        run.order.push(pick);
        run.gains.push(best_gain);
        run.error_curve
            .push(crate::greedy::normalized_error(total, explained));
        progress(step + 1, channels);
    }
    Ok(run)
}
