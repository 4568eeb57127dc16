//! What `subprune info` reports about a model: inputs and outputs, op counts, parameters, FLOPs
//! per image, and the channel groups that pruning works on (one line each).

use std::collections::BTreeMap;

use crate::ir::{Graph, Op};

/// A named tensor and its shape (batch as `N`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Port {
    /// The value's name.
    pub name: String,
    /// Its shape, e.g. `[N, 1, 28, 28]`.
    pub shape: String,
}

/// One channel group, as `info` lists it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GroupSummary {
    /// The group's name (its first producer).
    pub name: String,
    /// Channels of the group.
    pub channels: usize,
    /// Producers, in node order.
    pub producers: Vec<String>,
    /// Consumers with their columns per channel position, in node order.
    pub consumers: Vec<(String, usize)>,
    /// Depthwise convs among the pass-throughs.
    pub depthwise: usize,
    /// Channel maps met: Concat, channel Slice, channel Pad (op kinds, with counts).
    pub maps: BTreeMap<String, usize>,
    /// A residual stream or Concat/Split block (more than one producer, or a map).
    pub stream: bool,
}

/// A model summary.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Graph inputs.
    pub inputs: Vec<Port>,
    /// Graph outputs.
    pub outputs: Vec<Port>,
    /// Nodes per op kind.
    pub op_counts: BTreeMap<String, usize>,
    /// Number of nodes.
    pub nodes: usize,
    /// Float parameters (initializers and constants).
    pub parameters: usize,
    /// FLOPs per image: 2 × the multiply-accumulates of Conv, Gemm and MatMul.
    pub flops_per_image: u64,
    /// The prunable groups, one line each.
    pub groups: Vec<GroupSummary>,
    /// Share of the Conv/Gemm/MatMul weight parameters whose output channels a prunable group
    /// can remove (producers and depthwise convs of prunable groups), in [0, 1].
    pub prunable_weight_share: f64,
    /// Share of the Conv weight parameters alone, in [0, 1].
    pub prunable_conv_share: f64,
    /// The full structure: prunable groups and the producers left whole
    /// ([`super::channels::analyze`]).
    pub channels: super::channels::ChannelAnalysis,
}

/// Summarises `graph`.
pub fn summarize(graph: &Graph) -> Summary {
    let port = |&id: &usize| Port {
        name: graph.values[id].name.clone(),
        shape: graph.values[id].shape.to_string(),
    };
    let mut op_counts = BTreeMap::new();
    for n in &graph.nodes {
        *op_counts.entry(n.op.kind().to_string()).or_insert(0) += 1;
    }
    // Saturating: a loaded graph's count fits (checked at load by `Graph::flops_per_image`).
    let flops_per_image = graph.nodes.iter().fold(0u64, |t, n| {
        t.saturating_add(graph.macs_per_image(n).saturating_mul(2))
    });
    let channels = super::channels::analyze(graph);
    let concat_names: std::collections::HashSet<&str> = graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Concat { .. }))
        .map(|n| n.name.as_str())
        .collect();
    let groups = channels
        .prunable
        .iter()
        .map(|g| {
            let mut maps = BTreeMap::new();
            for e in &g.edits {
                let kind = match e {
                    super::channels::ChannelEdit::ChannelPad { .. } => "Pad",
                    super::channels::ChannelEdit::ChannelSlice { .. } => "Slice",
                    _ => continue,
                };
                *maps.entry(kind.to_string()).or_insert(0) += 1;
            }
            let concats = g.via.iter().filter(|n| concat_names.contains(n.as_str()));
            let concats = concats.count();
            if concats > 0 {
                maps.insert("Concat".to_string(), concats);
            }
            GroupSummary {
                name: g.name.clone(),
                channels: g.channels,
                producers: g
                    .producers
                    .iter()
                    .map(|&p| graph.nodes[p].name.clone())
                    .collect(),
                consumers: g
                    .consumers
                    .iter()
                    .map(|c| (c.name.clone(), c.columns_per_channel))
                    .collect(),
                depthwise: g.depthwise().len(),
                maps,
                stream: g.stream,
            }
        })
        .collect();
    let shrinking: std::collections::HashSet<usize> = channels
        .prunable
        .iter()
        .flat_map(|g| g.producers.iter().copied().chain(g.depthwise()))
        .collect();
    let share = |conv_only: bool| {
        let (mut all, mut pruned) = (0usize, 0usize);
        for (n, node) in graph.nodes.iter().enumerate() {
            let counted = match node.op {
                Op::Conv(_) => true,
                Op::Gemm(_) | Op::MatMul => !conv_only,
                _ => false,
            };
            let weight = node.inputs.get(1).copied().flatten();
            let Some(size) = weight.and_then(|w| graph.constant(w)).map(|c| c.len()) else {
                continue;
            };
            if counted {
                all += size;
                if shrinking.contains(&n) {
                    pruned += size;
                }
            }
        }
        if all == 0 {
            0.0
        } else {
            pruned as f64 / all as f64
        }
    };
    Summary {
        inputs: graph.inputs.iter().map(port).collect(),
        outputs: graph.outputs.iter().map(port).collect(),
        op_counts,
        nodes: graph.nodes.len(),
        parameters: graph.parameter_count(),
        flops_per_image,
        groups,
        prunable_weight_share: share(false),
        prunable_conv_share: share(true),
        channels,
    }
}
