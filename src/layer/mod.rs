//! The one-layer engine (`docs/ALGORITHM.md` §1–2): for one pruned layer and its consumer, which
//! channels to keep and the consumer's new weights.
//!
//! In the order data flows:
//! - [`unfolding`]: how the consumer reads the channels (conv geometry, `ks` columns per channel,
//!   im2col of a batch);
//! - [`problem`]: the consumer's unfolding and its weight as a `D × m` matrix;
//! - [`cost`]: what a selection will cost before any work, and which greedy form runs;
//! - [`backend`]: the traits a compute backend implements (statistics accumulation, greedy state);
//!   [`crate::backend`] holds the CPU and GPU implementations;
//! - [`stats`]: the Gram statistics (`G = BᵀB`, `C0 = XW`, `‖AW‖²`) the backends return;
//! - [`greedy`]: the one greedy driver, over one or several consumers' states;
//! - [`dataform`]: the greedy on the `n × D` data when there are fewer rows than columns;
//! - [`mod@reweight`]: the consumer's new weights for a keep set (one least-squares form);
//! - [`mod@select`]: the whole layer from consumer inputs in memory (`subprune select`).

pub mod backend;
pub mod cost;
pub mod dataform;
pub mod greedy;
pub mod problem;
pub mod reweight;
pub mod select;
pub mod stats;
pub mod unfolding;

pub use backend::{Backend, DEFAULT_DEPENDENCE_TOL};
pub use cost::{CostPlan, GreedyForm};
pub use greedy::{run_greedy, run_greedy_shared, GreedyRun, Progress, Stage};
pub use problem::{ConvOptions, LayerProblem};
pub use reweight::{reweight, Reweighted};
pub use select::{
    layer_stats, layer_stats_with_progress, select, select_from_run, Budget, LayerSelection,
    SelectOptions, DEFAULT_BATCH_IMAGES,
};
pub use stats::{Gram, KernelClock, LayerStats, RawGrams, StatsMatrix, StatsPhases};
pub use unfolding::{ChannelLayout, Consumer, ConvGeometry, Unfolding};
