//! WeightNorm (`docs/ALGORITHM.md` §5): keep the channels whose outgoing weights — the rows of
//! the consumer weight `W` (`D × m`) in the channel's column group, summed over its consumers —
//! have the largest l1 norm. Data-free.

use super::{check_keep, top_k, LayerContext, Selection, Selector};
use crate::error::Result;

/// Largest l1 norm of the consumer weight rows.
pub struct WeightNorm;

/// `Σ_consumers Σ_{rows r of channel c} Σ_j |W[r, j]|` for every channel.
pub fn scores(layer: &LayerContext<'_>) -> Vec<f64> {
    let mut scores = vec![0.0; layer.channels()];
    for st in layer.stats {
        let chunk = st.layout.group * st.outputs;
        for (s, rows) in scores.iter_mut().zip(st.weight.chunks(chunk)) {
            *s += rows.iter().map(|w| w.abs()).sum::<f64>();
        }
    }
    scores
}

impl Selector for WeightNorm {
    fn name(&self) -> String {
        "weight-norm".into()
    }

    fn select(
        &self,
        layer: &LayerContext<'_>,
        keep: usize,
        _progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Selection> {
        check_keep(layer, keep)?;
        Ok(Selection::plain(top_k(&scores(layer), keep)?))
    }
}
