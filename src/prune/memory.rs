//! The memory a prune needs, known before any work: every layer's statistics and greedy state
//! in the Gram form ([`CostPlan::memory`]), summed over the layer's consumers; the peak is the
//! largest layer for the sequential variants (one layer's statistics at a time) and the sum for
//! the layer variant (every layer's statistics are accumulated in one pass). A plan above the
//! memory available (or [`super::PruneOptions::memory_limit`]) is refused before any work, naming
//! the largest layer: a Conv → Flatten → Gemm over `512 × 7 × 7` has `D = 25088` columns, and
//! `D²` f64 entries are 5 GB each.

use super::budget::Allocation;
use super::options::{PruneOptions, Variant};
use crate::analysis::channels::{ChannelAnalysis, ChannelConsumer};
use crate::error::{Error, Result};
use crate::ir::{Graph, Op};
use crate::layer::{CostPlan, GreedyForm};
use crate::units::available_memory;

/// What [`plan`] found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct MemoryPlan {
    /// Peak bytes of statistics and greedy state over the run (an estimate).
    pub peak_bytes: u64,
    /// The layer that needs the most, and its bytes.
    pub largest: Option<(String, u64)>,
}

/// Output channels `m` of a consumer (its weight's output axis).
fn outputs(graph: &Graph, consumer: &ChannelConsumer) -> Option<usize> {
    let node = &graph.nodes[consumer.node];
    let dims = &graph.constant(node.inputs.get(1).copied().flatten()?)?.dims;
    match &node.op {
        Op::Conv(_) => dims.first().copied(),
        Op::Gemm(g) if g.trans_b => dims.first().copied(),
        Op::Gemm(_) | Op::MatMul => dims.get(1).copied(),
        _ => None,
    }
}

/// The memory plan of pruning the layers of `analysis` that `options` does not skip; an
/// [`Error::Memory`] when its peak exceeds the limit.
pub fn plan(
    graph: &Graph,
    analysis: &ChannelAnalysis,
    options: &PruneOptions,
) -> Result<MemoryPlan> {
    let with_target = options.variant == Variant::Asym;
    let mut plan = MemoryPlan::default();
    let mut sum = 0u64;
    for layer in analysis
        .prunable
        .iter()
        .filter(|l| !options.skip.contains(&l.name))
    {
        let mut bytes = 0u64;
        for (i, c) in layer.consumers.iter().enumerate() {
            let too_large = || {
                Error::InvalidArgument(format!(
                    "layer '{}': the statistics of its consumer '{}' are too large for this \
                     machine",
                    layer.name, c.name
                ))
            };
            // A consumer that reads the group out of order is regrouped: one block of
            // `slots · columns_per_channel` columns per group channel.
            let block = layer
                .consumer_map(i)
                .map_or(c.columns_per_channel, |m| m.block());
            let columns = layer.channels.checked_mul(block).ok_or_else(too_large)?;
            let m = outputs(graph, c).unwrap_or(1);
            let b = CostPlan::memory(GreedyForm::Gram, columns, columns, m, columns, with_target)
                .ok_or_else(too_large)?;
            bytes = bytes.checked_add(b).ok_or_else(too_large)?;
        }
        sum = sum.saturating_add(bytes);
        if plan.largest.as_ref().is_none_or(|(_, b)| bytes > *b) {
            plan.largest = Some((layer.name.clone(), bytes));
        }
    }
    let largest = plan.largest.as_ref().map_or(0, |(_, b)| *b);
    // The layer variant, and the error and accuracy budgets (their layer-wise statistics), hold
    // every layer's statistics at once.
    let all_at_once = options.variant == Variant::Layer
        || options
            .budget
            .as_ref()
            .is_some_and(|b| b.allocation != Allocation::Uniform);
    plan.peak_bytes = if all_at_once { sum } else { largest };
    let (available, source_note) = match options.memory_limit {
        Some(l) => (Some(l), " (--memory-limit)".to_string()),
        None => (
            available_memory(),
            " (free memory of this machine or process)".to_string(),
        ),
    };
    if let (Some(available), Some((name, _))) = (available, &plan.largest) {
        if plan.peak_bytes > available {
            return Err(Error::Memory {
                what: format!(
                    "pruning (statistics and greedy state; the largest layer is '{name}')"
                ),
                needed: plan.peak_bytes,
                available,
                source_note: format!(
                    "{source_note}; skip the largest layers with --skip, or use fewer layers at \
                     once (--variant seq or asym keep one layer's statistics at a time)"
                ),
            });
        }
    }
    Ok(plan)
}
