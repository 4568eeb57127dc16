//! WeightNorm (`docs/ALGORITHM.md` §5): keep the channels whose outgoing weights — the rows of
//! the consumer weight `W` (`D × m`) in the channel's column group, summed over its consumers —
//! have the largest l1 norm. Data-free.

use super::LayerContext;

/// `Σ_consumers Σ_{rows r of channel c} Σ_j |W[r, j]|` for every channel.
pub fn scores(layer: &LayerContext<'_>) -> Vec<f64> {
    let mut scores = vec![0.0; layer.channels()];
    for st in layer.stats {
        let chunk = st.layout.columns_per_channel * st.outputs;
        for (s, rows) in scores.iter_mut().zip(st.weight.chunks(chunk)) {
            *s += rows.iter().map(|w| w.abs()).sum::<f64>();
        }
    }
    scores
}
