//! LayerSampling: the sensitivity sampling of Liebenwein et al. 2020 ("Provable filter pruning",
//! `docs/ALGORITHM.md` §5), from the layer statistics.
//!
//! * Sensitivity of channel `c`: its share of the consumer's pre-activation output on the
//!   calibration set, `s_c = ‖B_c W_c‖_F = sqrt(trace(W_cᵀ G_cc W_c))` (summed in the square over
//!   consumers), where `B_c` are the channel's unfolded columns and `W_c` its consumer rows.
//!   The paper takes the largest ratio over individual inputs; the Gram statistics keep sums over
//!   the calibration set, not per-input values, so the sensitivity here is the calibration-set
//!   energy of the channel's contribution (activations × outgoing weights), `p_c = s_c / Σ s`.
//! * Multinomial sampling with replacement from `p` until `keep` distinct channels are drawn
//!   (after `draws` draws, channel `c` drawn `n_c` times).
//! * Importance weights: without least-squares reweighting the kept channel's consumer rows are
//!   multiplied by `n_c / (draws · p_c)`, the unbiased estimator of `B W` of the paper.
//!
//! Channels with `p_c = 0` (no contribution) are never drawn; if fewer than `keep` channels have
//! `p_c > 0`, or the draws exceed `1000 · channels` (a very skewed `p`), the rest of the keep set
//! is filled with the unsampled channels of largest sensitivity, with weight 1.

use super::random::layer_rng;
use super::{check_keep, LayerContext, Selection, Selector};
use crate::error::{Error, Result};

/// Sensitivity sampling with importance weights.
pub struct LayerSampling {
    /// The run's seed; each layer draws from `seed` mixed with its position.
    pub seed: u64,
}

/// `s_c = sqrt(Σ_consumers trace(W_cᵀ G_cc W_c))` for every channel (a Gram matrix left on the
/// GPU is read back).
pub fn sensitivities(layer: &LayerContext<'_>) -> Result<Vec<f64>> {
    let mut energy = vec![0.0; layer.channels()];
    for st in layer.stats {
        let (ks, m, d) = (
            st.layout.columns_per_channel,
            st.outputs,
            st.layout.columns(),
        );
        let gram = st.gram.values()?;
        for (c, e) in energy.iter_mut().enumerate() {
            let mut sum = 0.0;
            for i in c * ks..(c + 1) * ks {
                for j in c * ks..(c + 1) * ks {
                    let g = gram[i * d + j];
                    let wi = &st.weight[i * m..(i + 1) * m];
                    let wj = &st.weight[j * m..(j + 1) * m];
                    sum += g * wi.iter().zip(wj).map(|(a, b)| a * b).sum::<f64>();
                }
            }
            *e += sum.max(0.0);
        }
    }
    Ok(energy.into_iter().map(f64::sqrt).collect())
}

impl Selector for LayerSampling {
    fn name(&self) -> String {
        format!("layer-sampling(seed {})", self.seed)
    }

    fn select(
        &self,
        layer: &LayerContext<'_>,
        keep: usize,
        _progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Selection> {
        check_keep(layer, keep)?;
        let s = sensitivities(layer)?;
        if let Some(c) = s.iter().position(|x| !x.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "layer '{}': sensitivity of channel {c} is not finite",
                layer.name
            )));
        }
        let total: f64 = s.iter().sum();
        let d = s.len();
        let mut counts = vec![0usize; d];
        let mut distinct = 0;
        let mut draws = 0usize;
        if total > 0.0 {
            let p: Vec<f64> = s.iter().map(|x| x / total).collect();
            let mut cdf = Vec::with_capacity(d);
            let mut acc = 0.0;
            for &pc in &p {
                acc += pc;
                cdf.push(acc);
            }
            let positive = p.iter().filter(|&&x| x > 0.0).count();
            let mut rng = layer_rng(self.seed, layer.index);
            while distinct < keep.min(positive) && draws < 1000 * d {
                let u = rng.uniform() * acc;
                // First channel whose cumulative probability exceeds u, skipping p = 0.
                let mut c = cdf.partition_point(|&x| x <= u).min(d - 1);
                while p[c] == 0.0 {
                    c = c.checked_sub(1).expect("a channel with p > 0 precedes");
                }
                if counts[c] == 0 {
                    distinct += 1;
                }
                counts[c] += 1;
                draws += 1;
            }
            let mut kept: Vec<usize> = (0..d).filter(|&c| counts[c] > 0).collect();
            let mut scale: Vec<f64> = kept
                .iter()
                .map(|&c| counts[c] as f64 / (draws as f64 * p[c]))
                .collect();
            fill(&s, &mut kept, &mut scale, keep);
            return Ok(Selection {
                kept,
                row_scale: Some(scale),
                greedy: None,
            });
        }
        let mut kept = Vec::new();
        let mut scale = Vec::new();
        fill(&s, &mut kept, &mut scale, keep);
        Ok(Selection {
            kept,
            row_scale: Some(scale),
            greedy: None,
        })
    }
}

/// Adds unsampled channels of largest sensitivity (weight 1) until `keep`, then sorts.
fn fill(s: &[f64], kept: &mut Vec<usize>, scale: &mut Vec<f64>, keep: usize) {
    let mut rest: Vec<usize> = (0..s.len()).filter(|c| !kept.contains(c)).collect();
    rest.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    for c in rest.into_iter().take(keep.saturating_sub(kept.len())) {
        kept.push(c);
        scale.push(1.0);
    }
    let mut pairs: Vec<(usize, f64)> = kept.iter().copied().zip(scale.iter().copied()).collect();
    pairs.sort_by_key(|p| p.0);
    *kept = pairs.iter().map(|p| p.0).collect();
    *scale = pairs.iter().map(|p| p.1).collect();
}
