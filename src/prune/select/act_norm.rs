//! ActNorm: keep the channels with the largest mean activation magnitude on the calibration set.
//!
//! Magnitude here is the *mean square* (ranking by it equals ranking by the root mean square):
//! the statistics already hold it — the diagonal of `G = BᵀB` is `Σ b²` per unfolded column —
//! so no extra pass or accumulator is needed. The mean of `|b|` would need one; it ranks
//! channels alike unless their activation distributions differ in shape, and we chose not to add
//! an accumulator to the statistics backends for a baseline. For a conv consumer the mean is over
//! the unfolded entries (image × output position × kernel offset), padding zeros included, which
//! is the input the consumer actually reads. Several consumers: the sum of their means.

use super::LayerContext;

/// `Σ_consumers (Σ_{columns i of channel c} G[i,i]) / (rows · ks)` for every channel.
pub fn scores(layer: &LayerContext<'_>) -> Vec<f64> {
    let mut scores = vec![0.0; layer.channels()];
    for st in layer.stats {
        let ks = st.layout.columns_per_channel;
        let entries = (st.rows.max(1) * ks) as f64;
        let diag = st.gram.diag();
        for (c, s) in scores.iter_mut().enumerate() {
            let sum: f64 = diag[c * ks..(c + 1) * ks].iter().sum();
            *s += sum / entries;
        }
    }
    scores
}
