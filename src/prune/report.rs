//! What a prune did: per layer ([`LayerReport`]), per phase ([`Phases`]), for the whole run
//! ([`PruneReport`]), and the result ([`Pruned`]: the model, the report, the budget's sizes and
//! the recorded inputs of one layer).

use super::budget::BudgetPlan;
use super::options::Variant;
use super::select;
use crate::ir::Graph;
use crate::layer::LayerProblem;
use crate::onnx::OnnxModel;
use crate::tensor::Tensor;

/// One pruned layer in the report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerReport {
    /// The producer's name.
    pub name: String,
    /// Its op kind.
    pub op: String,
    /// The consumers whose weights were replaced.
    pub consumers: Vec<String>,
    /// Output channels before.
    pub channels_before: usize,
    /// Output channels after.
    pub channels_after: usize,
    /// `Σ‖A_jW_j − B_j,S W~_j‖² / Σ‖A_jW_j‖²` over the consumers, with the weights written.
    pub relative_error: f64,
    /// The greedy error curve (`err(S_k)` for `k = 1..channels`, with the optimal weights); empty
    /// when the method is not the greedy.
    pub error_curve: Vec<f64>,
    /// The greedy order (other methods: the kept channels).
    pub order: Vec<usize>,
    /// The kept channels, sorted.
    pub kept: Vec<usize>,
    /// Unfolded rows of a consumer's statistics: the first rank-deficient consumer's, else the
    /// first consumer's.
    pub rows: usize,
    /// Columns `D` of the same consumer's unfolded input.
    pub columns: usize,
    /// Fewer unfolded rows than columns in some consumer.
    pub rank_deficient: bool,
    /// The greedy step from which every gain is 0 (the rest of the order is a tie), if any.
    pub zero_gain_from: Option<usize>,
    /// Seconds spent on this layer (forward passes, statistics, greedy, reweighting).
    pub seconds: f64,
    /// Parameters (weights and biases) of the producer and its consumers before pruning.
    pub parameters_before: usize,
    /// The same after pruning (the whole network's pruning: a consumer that is also a pruned
    /// producer counts its own cut too).
    pub parameters_after: usize,
}

/// Seconds by phase, and the statistics' data movement.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Phases {
    /// Forward passes with the statistics accumulated from their taps.
    pub forward_and_statistics: f64,
    /// Greedy runs.
    pub greedy: f64,
    /// Reweighting solves and IR edits.
    pub reweight: f64,
    /// Bytes the host sent to a device to produce the statistics: the input batches of the
    /// forward passes whose taps reach the statistics from the device (the GPU executor: the
    /// calibration images, or the cached activations a pass resumes from at a cut point), plus
    /// the consumer inputs and targets a GPU backend received from host memory. 0 with the CPU
    /// backend and executor. With the GPU backend and executor on one device every tap and
    /// asym target stays there, and so do the sequential variants' cached activations and the
    /// calibration images (uploaded once, shared by the pruned and original network's passes):
    /// the count is exactly the images' bytes when the caches fit
    /// [`super::PruneOptions::memory_budget`]. When the images do not fit it, every layer whose
    /// passes start from them uploads them again (the images' bytes times those layers; each
    /// batch still serves both asym passes). The layer variant's one pass counts the images once.
    pub statistics_uploaded_bytes: u64,
    /// Bytes of statistics inputs the backend copied on the device from the GPU executor's
    /// activations (no host round trip).
    pub statistics_device_bytes: u64,
}

/// The report of one pruning run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PruneReport {
    /// Variant.
    pub variant: Variant,
    /// Selection method.
    pub method: select::Method,
    /// Whether consumers were reweighted.
    pub reweight: bool,
    /// Relative ridge.
    pub ridge: f64,
    /// Calibration images.
    pub images: usize,
    /// The statistics backend.
    pub backend: String,
    /// The forward executor.
    pub executor: String,
    /// Pruned layers, in order.
    pub layers: Vec<LayerReport>,
    /// Producers left whole: `(name, reason)` (coupled, or skipped).
    pub left_whole: Vec<(String, String)>,
    /// Parameters before.
    pub parameters_before: usize,
    /// Parameters after.
    pub parameters_after: usize,
    /// FLOPs per image before.
    pub flops_before: u64,
    /// FLOPs per image after.
    pub flops_after: u64,
    /// Time by phase.
    pub phases: Phases,
    /// Estimated peak bytes of statistics and greedy state, planned before the run
    /// ([`super::memory`]).
    pub memory_peak_bytes: u64,
    /// Total seconds.
    pub seconds: f64,
}

/// The inputs one layer's statistics used (see [`super::PruneOptions::record`]).
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The producer's name.
    pub layer: String,
    /// The first consumer's problem, with the weight it had when the layer was processed.
    pub problem: LayerProblem,
    /// Its input `B`, all calibration images, in the consumer's unfolding shape.
    pub inputs: Tensor,
    /// Its target `A` (asymmetric variant only).
    pub target: Option<Tensor>,
    /// The channels kept.
    pub kept: Vec<usize>,
}

/// A pruned model and what was done.
#[derive(Clone, Debug)]
pub struct Pruned {
    /// The model with its IR edited; write it with [`crate::onnx::save`].
    pub model: OnnxModel,
    /// What was done.
    pub report: PruneReport,
    /// See [`super::PruneOptions::record`].
    pub recorded: Option<Recorded>,
    /// The whole-model budget's plan, when [`super::PruneOptions::budget`] was given.
    pub budget: Option<BudgetPlan>,
}

/// The parameters (f32 constants) read by the nodes `nodes` (indices) of `graph`.
pub(crate) fn node_parameters(graph: &Graph, nodes: &[usize]) -> usize {
    nodes
        .iter()
        .flat_map(|&n| graph.nodes[n].inputs.iter().flatten())
        .filter_map(|&v| graph.values[v].constant.as_ref()?.f32().map(|d| d.len()))
        .sum()
}

/// FLOPs per image: 2 × the multiply-accumulates of every node.
pub(crate) fn flops(graph: &Graph) -> u64 {
    graph
        .nodes
        .iter()
        .map(|n| 2 * graph.macs_per_image(n))
        .sum()
}
