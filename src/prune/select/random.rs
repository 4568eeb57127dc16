//! Random channels (the paper's LayerRandom), seeded: the same seed, layer position and channel
//! count give the same keep set on every machine.

use super::{check_keep, LayerContext, Selection, Selector};
use crate::error::Result;
use crate::rng::Rng;

/// Uniformly random keep sets.
pub struct Random {
    /// The run's seed; each layer draws from `seed` mixed with its position.
    pub seed: u64,
}

/// A generator for one layer of a seeded run.
pub(crate) fn layer_rng(seed: u64, index: usize) -> Rng {
    Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (index as u64).wrapping_add(1))
}

impl Selector for Random {
    fn name(&self) -> String {
        format!("random(seed {})", self.seed)
    }

    fn select(
        &self,
        layer: &LayerContext<'_>,
        keep: usize,
        _progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Selection> {
        check_keep(layer, keep)?;
        let mut rng = layer_rng(self.seed, layer.index);
        let mut channels: Vec<usize> = (0..layer.channels()).collect();
        // Partial Fisher–Yates: the first `keep` entries are a uniform sample.
        for i in 0..keep {
            let j = i + (rng.next_u64() % (channels.len() - i) as u64) as usize;
            channels.swap(i, j);
        }
        channels.truncate(keep);
        Ok(Selection::plain(channels))
    }
}
