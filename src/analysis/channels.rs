//! Channel dependencies: which producers (Conv, Gemm, MatMul with a constant weight) can lose
//! output channels on their own, and which are coupled to other channels and must stay whole.
//!
//! A producer's output channels are followed forward through ops that keep channel `c` in place
//! (BatchNormalization, activations, pooling, Identity/Dropout, element-wise ops with a scalar or
//! per-channel constant, depthwise convs without a depth multiplier, Flatten/Reshape to `(N, -1)`) to the ops that read them with a weight:
//! Conv (its input channels, `kh·kw` columns each), Gemm/MatMul (one column each, or `H·W`
//! columns each through a Flatten). The producer is **prunable** when every path ends in such a
//! consumer; with several consumers their statistics are combined and the selection is shared
//! (`docs/ALGORITHM.md` §4). Otherwise it is **coupled**, with the reason: a residual Add, a
//! Concat, a grouped conv (or a depthwise one with a depth multiplier), a Slice or Pad, a graph
//! output, a shared parameter.

use std::collections::HashSet;

use crate::ir::{Graph, Node, Op, Padding, ValueId};

/// How a consumer reads the producer's channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ConsumerKind {
    /// A Conv on `(N, C, H, W)`: channel `c` owns `kh·kw` columns of the unfolded input.
    Conv,
    /// A Gemm/MatMul on `(N, C)`: channel `c` is one column.
    Linear,
    /// A Gemm/MatMul after a Flatten of `(N, C, H, W)`: channel `c` owns its `H·W` columns.
    FlattenLinear,
}

/// A node that reads a producer's channels with a weight.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ChannelConsumer {
    /// Index in [`Graph::nodes`].
    pub node: usize,
    /// The node's name.
    pub name: String,
    /// The consumer's data input (what is tapped for its statistics).
    pub input: ValueId,
    /// How it reads the channels.
    pub kind: ConsumerKind,
    /// Per-image shape of the consumer's input as its unfolding sees it: `[C]` or `[C, H, W]`
    /// (the shape before the Flatten for [`ConsumerKind::FlattenLinear`]).
    pub image_shape: Vec<usize>,
    /// Columns of the unfolded input per channel.
    pub columns_per_channel: usize,
}

/// A constant whose entries along `axis` follow the producer's channels (a weight's rows, a
/// bias, BatchNorm statistics, a per-channel scale): pruning a channel removes its slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ChannelParam {
    /// The constant value.
    pub value: ValueId,
    /// The axis indexed by channel.
    pub axis: usize,
}

/// A producer whose output channels can be pruned on their own.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PrunableLayer {
    /// Index of the producer in [`Graph::nodes`].
    pub producer: usize,
    /// The producer's name.
    pub name: String,
    /// Its op kind.
    pub op: String,
    /// Output channels.
    pub channels: usize,
    /// Every node that reads the channels with a weight (at least one).
    pub consumers: Vec<ChannelConsumer>,
    /// Constants sliced with the channels: the producer's weight and bias, then those of the ops
    /// in between (BatchNorm, per-channel element-wise constants).
    pub params: Vec<ChannelParam>,
    /// Names of the ops in between, in visiting order.
    pub via: Vec<String>,
    /// Depthwise convs in between (indices in [`Graph::nodes`]): each keeps channel `c` in place
    /// (its weight rows and bias are in [`PrunableLayer::params`]), and its `group` attribute
    /// follows the channel count.
    pub depthwise: Vec<usize>,
    /// Flattens written as `Reshape(x, (-1, K))` in between (indices in [`Graph::nodes`]): `K`,
    /// the elements of one image, follows the channel count.
    pub flatten_reshapes: Vec<usize>,
}

/// A producer whose channels are tied to other channels; left whole.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CoupledLayer {
    /// Index of the producer in [`Graph::nodes`].
    pub producer: usize,
    /// The producer's name.
    pub name: String,
    /// Output channels.
    pub channels: usize,
    /// Why its channels cannot be pruned alone (the first reason found).
    pub reason: String,
}

/// The channel dependencies of a graph.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ChannelAnalysis {
    /// Producers that can be pruned, in node order.
    pub prunable: Vec<PrunableLayer>,
    /// Producers left whole, in node order.
    pub coupled: Vec<CoupledLayer>,
}

impl ChannelAnalysis {
    /// The prunable layer whose producer is named `name`.
    pub fn prunable(&self, name: &str) -> Option<&PrunableLayer> {
        self.prunable.iter().find(|l| l.name == name)
    }

    /// The coupled layer whose producer is named `name`.
    pub fn coupled(&self, name: &str) -> Option<&CoupledLayer> {
        self.coupled.iter().find(|l| l.name == name)
    }
}

/// Fixed per-image dims of a value (`None` when a non-batch dim is symbolic).
fn image_dims(graph: &Graph, v: ValueId) -> Option<Vec<usize>> {
    let s = &graph.values[v].shape;
    let mut out = Vec::new();
    for d in s.0.iter().skip(1) {
        match d {
            crate::ir::Dim::Fixed(x) => out.push(*x),
            crate::ir::Dim::Batch => return None,
        }
    }
    Some(out)
}

/// A float constant input `i` of `node` of rank `rank` (any rank when `None`).
fn const_input(graph: &Graph, node: &Node, i: usize, rank: Option<usize>) -> Option<ValueId> {
    let v = node.inputs.get(i).copied().flatten()?;
    let c = graph.constant(v)?;
    c.f32()?;
    match rank {
        Some(r) if c.dims.len() != r => None,
        _ => Some(v),
    }
}

/// The producer's own channel params, or why it is not a prunable producer (`Err(None)`: not a
/// producer at all).
fn producer_params(
    graph: &Graph,
    node: &Node,
) -> Result<(usize, Vec<ChannelParam>), Option<String>> {
    let out = node.outputs[0];
    match &node.op {
        Op::Conv(c) => {
            let w = const_input(graph, node, 1, Some(4)).ok_or(None)?;
            let channels = graph.values[w].shape.0[0].at(1);
            if c.group != 1 {
                return Err(Some(format!(
                    "grouped/depthwise conv (group {}): its output channels are tied to its input channels",
                    c.group
                )));
            }
            let mut params = vec![ChannelParam { value: w, axis: 0 }];
            if let Some(b) = node.inputs.get(2).copied().flatten() {
                if graph.constant(b).is_none() {
                    return Err(Some("its bias is not a constant".into()));
                }
                params.push(ChannelParam { value: b, axis: 0 });
            }
            Ok((channels, params))
        }
        Op::Gemm(g) => {
            let w = const_input(graph, node, 1, Some(2)).ok_or(None)?;
            if g.trans_a {
                return Err(Some("Gemm with transA".into()));
            }
            let axis = if g.trans_b { 0 } else { 1 };
            let channels = graph.values[w].shape.0[axis].at(1);
            let mut params = vec![ChannelParam { value: w, axis }];
            if let Some(b) = node.inputs.get(2).copied().flatten() {
                let c = graph
                    .constant(b)
                    .ok_or_else(|| Some("its bias is not a constant".to_string()))?;
                if c.len() == channels && channels > 1 {
                    params.push(ChannelParam {
                        value: b,
                        axis: c.dims.len().saturating_sub(1),
                    });
                } else if c.len() != 1 {
                    return Err(Some(format!("bias of shape {:?}", c.dims)));
                }
            }
            Ok((channels, params))
        }
        Op::MatMul => {
            let w = const_input(graph, node, 1, Some(2)).ok_or(None)?;
            if graph.values[out].shape.rank() != 2 {
                return Err(Some("MatMul with a batched (rank > 2) output".into()));
            }
            let channels = graph.values[w].shape.0[1].at(1);
            Ok((channels, vec![ChannelParam { value: w, axis: 1 }]))
        }
        _ => Err(None),
    }
}

/// The channel axis of a constant broadcast against an activation of rank `rank` with `channels`
/// on axis 1: `Ok(None)` for a scalar-like constant, `Ok(Some(axis))` for a per-channel one.
fn per_channel_axis(dims: &[usize], rank: usize, channels: usize) -> Result<Option<usize>, ()> {
    if dims.iter().all(|&d| d == 1) {
        return Ok(None);
    }
    if dims.len() > rank || dims.len() + 1 < rank {
        return Err(());
    }
    let axis = dims.len() + 1 - rank;
    let ok = dims
        .iter()
        .enumerate()
        .all(|(i, &d)| if i == axis { d == channels } else { d == 1 });
    if ok {
        Ok(Some(axis))
    } else {
        Err(())
    }
}

/// Whether `value` is `source` passed through element-wise unary ops only (activations,
/// Identity/Dropout): channel `c` of `value` is a function of channel `c` of `source` alone.
fn derives_from(
    graph: &Graph,
    producers: &[Option<usize>],
    mut value: ValueId,
    source: ValueId,
) -> bool {
    while value != source {
        let Some(p) = producers[value] else {
            return false;
        };
        let node = &graph.nodes[p];
        if !matches!(node.op, Op::Unary(_) | Op::Identity) {
            return false;
        }
        match node.inputs.first().copied().flatten() {
            Some(input) => value = input,
            None => return false,
        }
    }
    true
}

/// A depthwise conv without a depth multiplier on an input of per-image shape `dims`: `group`
/// equal to the input channels, a constant weight `(C, 1, kh, kw)`, so that output channel `c`
/// reads input channel `c` alone.
fn is_depthwise(graph: &Graph, node: &Node, conv: &crate::ir::Conv, dims: &[usize]) -> bool {
    let Some(&channels) = dims.first() else {
        return false;
    };
    conv.group == channels
        && channels > 1
        && const_input(graph, node, 1, Some(4))
            .and_then(|w| graph.constant(w))
            .is_some_and(|w| w.dims[0] == channels && w.dims[1] == 1)
}

/// Analyses every Conv/Gemm/MatMul with a constant weight.
pub fn analyze(graph: &Graph) -> ChannelAnalysis {
    let consumers = graph.consumers();
    let producers = graph.producers();
    let mut analysis = ChannelAnalysis::default();
    for (p, producer) in graph.nodes.iter().enumerate() {
        let (channels, mut params) = match producer_params(graph, producer) {
            Ok(x) => x,
            Err(None) => continue,
            Err(Some(reason)) => {
                let channels = image_dims(graph, producer.outputs[0])
                    .and_then(|d| d.first().copied())
                    .unwrap_or(0);
                analysis.coupled.push(CoupledLayer {
                    producer: p,
                    name: producer.name.clone(),
                    channels,
                    reason,
                });
                continue;
            }
        };
        match follow(
            graph,
            &consumers,
            &producers,
            producer,
            channels,
            &mut params,
        ) {
            Ok((found, via, depthwise, flatten_reshapes)) => {
                // Every sliced constant must belong to this layer alone.
                let shared = params.iter().find(|cp| consumers[cp.value].len() > 1);
                if let Some(cp) = shared {
                    analysis.coupled.push(CoupledLayer {
                        producer: p,
                        name: producer.name.clone(),
                        channels,
                        reason: format!(
                            "parameter '{}' is shared with other nodes",
                            graph.values[cp.value].name
                        ),
                    });
                } else {
                    analysis.prunable.push(PrunableLayer {
                        producer: p,
                        name: producer.name.clone(),
                        op: producer.op.kind().to_string(),
                        channels,
                        consumers: found,
                        params,
                        via,
                        depthwise,
                        flatten_reshapes,
                    });
                }
            }
            Err(reason) => analysis.coupled.push(CoupledLayer {
                producer: p,
                name: producer.name.clone(),
                channels,
                reason,
            }),
        }
    }
    // A depthwise conv in a prunable layer's path loses channels with that layer.
    for c in analysis.coupled.iter_mut() {
        if let Some(owner) = analysis
            .prunable
            .iter()
            .find(|l| l.depthwise.contains(&c.producer))
        {
            c.reason = format!(
                "depthwise: its channels are pruned with those of '{}'",
                owner.name
            );
        }
    }
    analysis
}

/// What [`follow`] finds: the weighted consumers, the names of the ops in between, and the
/// depthwise convs among them.
type Followed = (Vec<ChannelConsumer>, Vec<String>, Vec<usize>, Vec<usize>);

/// Follows the producer's output to its weighted consumers, collecting the pass-through params.
fn follow(
    graph: &Graph,
    consumers: &[Vec<usize>],
    producers: &[Option<usize>],
    producer: &Node,
    channels: usize,
    params: &mut Vec<ChannelParam>,
) -> Result<Followed, String> {
    let mut found: Vec<ChannelConsumer> = Vec::new();
    let mut via = Vec::new();
    let mut depthwise = Vec::new();
    let mut flatten_reshapes = Vec::new();
    let mut seen = HashSet::new();
    // (value, per-image shape before a Flatten when one was passed)
    let mut stack: Vec<(ValueId, Option<Vec<usize>>)> = vec![(producer.outputs[0], None)];
    while let Some((v, flat)) = stack.pop() {
        if !seen.insert(v) {
            continue;
        }
        if graph.outputs.contains(&v) {
            return Err(format!(
                "its channels reach the graph output '{}'",
                graph.values[v].name
            ));
        }
        let dims = image_dims(graph, v).ok_or_else(|| {
            format!(
                "value '{}' has a symbolic non-batch dimension",
                graph.values[v].name
            )
        })?;
        if consumers[v].is_empty() {
            return Err(format!(
                "value '{}' is not read by any node",
                graph.values[v].name
            ));
        }
        for &c in &consumers[v] {
            let node = &graph.nodes[c];
            let data = node.inputs.first().copied().flatten() == Some(v);
            let named = |what: &str| format!("{what} '{}' ({})", node.name, node.op.kind());
            let weighted = matches!(node.op, Op::Conv(_) | Op::Gemm(_) | Op::MatMul);
            if !data && (weighted || !matches!(node.op, Op::Binary(_))) {
                return Err(named(
                    "its channels are a parameter (not the data input) of",
                ));
            }
            match &node.op {
                Op::Conv(conv) if flat.is_none() && is_depthwise(graph, node, conv, &dims) => {
                    // Channel c in, channel c out: a pass-through with per-channel parameters.
                    for i in 1..node.inputs.len().min(3) {
                        let p = const_input(graph, node, i, None)
                            .ok_or_else(|| named("a non-constant parameter in"))?;
                        params.push(ChannelParam { value: p, axis: 0 });
                    }
                    depthwise.push(c);
                    via.push(node.name.clone());
                    stack.push((node.outputs[0], None));
                }
                Op::Conv(conv) => {
                    if flat.is_some() || dims.len() != 3 {
                        return Err(named("a conv reads a flattened input:"));
                    }
                    if conv.group != 1 {
                        return Err(format!(
                            "its channels feed the grouped/depthwise conv '{}' (group {})",
                            node.name, conv.group
                        ));
                    }
                    if const_input(graph, node, 1, Some(4)).is_none() {
                        return Err(named("the weight is not a constant in"));
                    }
                    match conv.window.padding {
                        Padding::Explicit([t, l, b, r]) if t == b && l == r => {}
                        _ => {
                            return Err(named(
                                "asymmetric or automatic padding is not supported in the consumer",
                            ))
                        }
                    }
                    found.push(ChannelConsumer {
                        node: c,
                        name: node.name.clone(),
                        input: v,
                        kind: ConsumerKind::Conv,
                        image_shape: dims.clone(),
                        columns_per_channel: conv.window.kernel[0] * conv.window.kernel[1],
                    });
                }
                Op::Gemm(_) | Op::MatMul => {
                    if let Op::Gemm(g) = &node.op {
                        if g.trans_a {
                            return Err(named("transA is not supported in the consumer"));
                        }
                    }
                    if const_input(graph, node, 1, Some(2)).is_none() {
                        return Err(named("the weight is not a constant in"));
                    }
                    if dims.len() != 1 {
                        return Err(named("a rank-2 input is expected by"));
                    }
                    let (kind, image_shape, cols) = match &flat {
                        Some(shape) => (
                            ConsumerKind::FlattenLinear,
                            shape.clone(),
                            shape[1..].iter().product(),
                        ),
                        None => (ConsumerKind::Linear, dims.clone(), 1),
                    };
                    found.push(ChannelConsumer {
                        node: c,
                        name: node.name.clone(),
                        input: v,
                        kind,
                        image_shape,
                        columns_per_channel: cols,
                    });
                }
                Op::BatchNorm { .. } => {
                    if flat
                        .as_ref()
                        .is_some_and(|s| s.len() > 1 && s[1..].iter().product::<usize>() > 1)
                    {
                        return Err(named("BatchNorm on flattened channels:"));
                    }
                    for i in 1..5 {
                        let p = const_input(graph, node, i, Some(1))
                            .ok_or_else(|| named("a non-constant parameter in"))?;
                        params.push(ChannelParam { value: p, axis: 0 });
                    }
                    via.push(node.name.clone());
                    stack.push((node.outputs[0], flat.clone()));
                }
                Op::Unary(_) | Op::Identity => {
                    via.push(node.name.clone());
                    stack.push((node.outputs[0], flat.clone()));
                }
                Op::Pool { .. } | Op::GlobalAveragePool if flat.is_none() => {
                    via.push(node.name.clone());
                    stack.push((node.outputs[0], None));
                }
                Op::Flatten { axis: 1 } => {
                    via.push(node.name.clone());
                    let next = if flat.is_some() || dims.len() == 1 {
                        flat.clone()
                    } else {
                        Some(dims.clone())
                    };
                    stack.push((node.outputs[0], next));
                }
                // A flatten written as a Reshape: `(0, -1)`, or `(-1, K)` with K the elements of
                // one image (the batch inferred; K follows the channels when they are pruned, so
                // its shape constant must be this node's alone).
                Op::Reshape { shape, .. }
                    if shape.len() == 2
                        && ((shape[1] == -1 && shape[0] >= 0)
                            || (shape[0] == -1
                                && usize::try_from(shape[1])
                                    .is_ok_and(|k| k == dims.iter().product::<usize>())
                                && node
                                    .inputs
                                    .get(1)
                                    .copied()
                                    .flatten()
                                    .is_some_and(|s| consumers[s].len() == 1))) =>
                {
                    if shape[0] == -1 {
                        flatten_reshapes.push(c);
                    }
                    via.push(node.name.clone());
                    let next = if flat.is_some() || dims.len() == 1 {
                        flat.clone()
                    } else {
                        Some(dims.clone())
                    };
                    stack.push((node.outputs[0], next));
                }
                Op::Binary(b) => {
                    let others: Vec<ValueId> = node
                        .inputs
                        .iter()
                        .flatten()
                        .copied()
                        .filter(|&o| o != v)
                        .collect();
                    let mut per_channel = None;
                    for &o in &others {
                        // x · sigmoid(x) (SiLU), x · hardsigmoid(x) (hard-swish): the other
                        // operand is an element-wise function of the same activation, so channel
                        // c meets only channel c.
                        if derives_from(graph, producers, o, v)
                            || derives_from(graph, producers, v, o)
                        {
                            continue;
                        }
                        let Some(c) = graph.constant(o) else {
                            return Err(format!(
                                "its channels are coupled with another activation by the {:?} '{}'",
                                b, node.name
                            ));
                        };
                        let rank = dims.len() + 1;
                        if flat.is_some() && c.len() != 1 {
                            return Err(named("a per-element constant after a Flatten in"));
                        }
                        match per_channel_axis(&c.dims, rank, channels) {
                            Ok(Some(axis)) => per_channel = Some(ChannelParam { value: o, axis }),
                            Ok(None) => {}
                            Err(()) => {
                                return Err(named(
                                    "a constant that is neither scalar nor per-channel in",
                                ))
                            }
                        }
                    }
                    if node.inputs.iter().flatten().filter(|&&o| o == v).count() > 1 {
                        return Err(named("the same activation twice in"));
                    }
                    params.extend(per_channel);
                    via.push(node.name.clone());
                    stack.push((node.outputs[0], flat.clone()));
                }
                _ => {
                    return Err(format!(
                        "its channels reach the {} '{}', which does not keep channels apart",
                        node.op.kind(),
                        node.name
                    ))
                }
            }
        }
    }
    // One entry per consumer node (reached once each, but be safe).
    found.sort_by_key(|c| c.node);
    found.dedup_by_key(|c| c.node);
    Ok((found, via, depthwise, flatten_reshapes))
}
