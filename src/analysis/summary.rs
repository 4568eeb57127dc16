//! What `subprune info` reports about a model: inputs and outputs, op counts, parameters, FLOPs
//! per image, and the producer → consumer channel pairs that pruning works on.

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

/// A producer (Conv, Gemm, MatMul) whose output channels reach a consumer (Conv, Gemm, MatMul)
/// through channel-preserving ops.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ChannelPair {
    /// The producing node.
    pub producer: String,
    /// The consuming node.
    pub consumer: String,
    /// Channels the producer makes (the consumer's input channels).
    pub channels: usize,
    /// Columns per channel of the consumer's unfolded input (`kh·kw` for a conv, the flattened
    /// spatial size for Flatten → Gemm, 1 for a Gemm on channels).
    pub columns_per_channel: usize,
    /// Op kinds in between, in order.
    pub via: Vec<String>,
    /// The path goes through an element-wise op with another activation (a residual Add): the
    /// channels are coupled with that branch.
    pub coupled: bool,
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
    /// Producer → consumer channel pairs.
    pub pairs: Vec<ChannelPair>,
    /// Prunable and coupled producers ([`super::channels::analyze`]).
    pub channels: super::channels::ChannelAnalysis,
}

fn is_linear(op: &Op) -> bool {
    matches!(op, Op::Conv(_) | Op::Gemm(_) | Op::MatMul)
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
    Summary {
        inputs: graph.inputs.iter().map(port).collect(),
        outputs: graph.outputs.iter().map(port).collect(),
        op_counts,
        nodes: graph.nodes.len(),
        parameters: graph.parameter_count(),
        flops_per_image,
        pairs: channel_pairs(graph),
        channels: super::channels::analyze(graph),
    }
}

/// Follows each producer's output forward through channel-preserving ops to its consumers.
pub fn channel_pairs(graph: &Graph) -> Vec<ChannelPair> {
    let consumers = graph.consumers();
    let mut pairs = Vec::new();
    for producer in graph.nodes.iter().filter(|n| is_linear(&n.op)) {
        let out = producer.outputs[0];
        let channels = match graph.values[out].shape.0.get(1) {
            Some(d) => d.at(1),
            None => continue,
        };
        // The ops passed so far, as links to their predecessor in `trail` (a path shares its
        // prefix with its siblings: copying it at every step would be quadratic in its length).
        let mut trail: Vec<(&'static str, Option<usize>)> = Vec::new();
        // (value, last op passed, flattened spatial size, coupled)
        let mut stack = vec![(out, None::<usize>, None::<usize>, false)];
        while let Some((value, via, flat, coupled)) = stack.pop() {
            for &c in consumers[value].iter().rev() {
                let node = &graph.nodes[c];
                let data_input = node.inputs.first().copied().flatten() == Some(value);
                if is_linear(&node.op) {
                    if !data_input {
                        continue; // the value is this node's weight, not its input
                    }
                    let columns = match (&node.op, flat) {
                        (Op::Conv(conv), _) => conv.window.kernel[0] * conv.window.kernel[1],
                        (_, Some(spatial)) => spatial,
                        _ => 1,
                    };
                    pairs.push(ChannelPair {
                        producer: producer.name.clone(),
                        consumer: node.name.clone(),
                        channels,
                        columns_per_channel: columns,
                        via: path(&trail, via),
                        coupled,
                    });
                    continue;
                }
                let next = node.outputs[0];
                let mut step = || {
                    trail.push((node.op.kind(), via));
                    Some(trail.len() - 1)
                };
                match &node.op {
                    Op::BatchNorm { .. }
                    | Op::Unary(_)
                    | Op::Pool { .. }
                    | Op::GlobalAveragePool
                    | Op::Identity => stack.push((next, step(), flat, coupled)),
                    Op::Flatten { axis: 1 } => {
                        let spatial = graph.values[value].shape.0[2..]
                            .iter()
                            .map(|d| d.at(1))
                            .product();
                        stack.push((next, step(), Some(spatial), coupled));
                    }
                    Op::Binary(_) => {
                        let other_is_activation = node
                            .inputs
                            .iter()
                            .flatten()
                            .any(|&v| v != value && graph.values[v].constant.is_none());
                        let same_shape = graph.values[next].shape == graph.values[value].shape;
                        if same_shape {
                            stack.push((next, step(), flat, coupled || other_is_activation));
                        }
                    }
                    _ => {} // channels change meaning (Concat, Slice, Pad, Reshape, …): stop.
                }
            }
        }
    }
    pairs
}

/// The op kinds on the path that ends at `last` in `trail`, first to last.
fn path(trail: &[(&'static str, Option<usize>)], mut last: Option<usize>) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(i) = last {
        out.push(trail[i].0.to_string());
        last = trail[i].1;
    }
    out.reverse();
    out
}
