//! Following one producer's channels through the graph (`analyze` in [`super::channels`] calls
//! it per producer): a union-find over every reached value's channel positions, the op rules of
//! [`super::rules`] tying them, and the producers, consumers, sliced constants and edits met.

use std::collections::{HashMap, HashSet};

mod balance;

use super::channels::{
    ChannelConsumer, ChannelEdit, ChannelGroup, ChannelParam, ConsumerKind, GroupValue,
};
use super::rules::{self, const_input, ChannelView, EditKind, Rule};
use crate::ir::{Graph, Node, Op, Padding, ValueId};

/// Fixed per-image dims of a value (`None` when a non-batch dim is symbolic).
pub(super) fn image_dims(graph: &Graph, v: ValueId) -> Option<Vec<usize>> {
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

/// The producer's own channel params (indexed by its output), or why it is not a prunable
/// The view of a value not reached yet, from its shape: channels on axis 1, not flattened.
fn shape_view(graph: &Graph, v: ValueId) -> Option<ChannelView> {
    let dims = image_dims(graph, v)?;
    Some(ChannelView {
        channels: *dims.first()?,
        flat: None,
        dims,
        sub: None,
    })
}

/// producer (`Err(None)`: not a producer at all).
pub(super) fn producer_params(
    graph: &Graph,
    node: &Node,
) -> Result<(usize, Vec<ChannelParam>), Option<String>> {
    let out = node.outputs[0];
    let param = |value, axis| ChannelParam {
        value,
        axis,
        of: out,
    };
    match &node.op {
        Op::Conv(c) => {
            let w = const_input(graph, node, 1, Some(4)).ok_or(None)?;
            let dims = &graph.values[w].shape.0;
            let channels = dims[0].at(1);
            if c.group != 1 && dims[1].at(0) == 1 {
                return Err(Some(format!(
                    "depthwise conv (group {}): its output channels are tied to its input channels",
                    c.group
                )));
            }
            if !channels.is_multiple_of(c.group.max(1)) {
                return Err(Some(format!(
                    "grouped conv (group {}) with {channels} output channels",
                    c.group
                )));
            }
            let mut params = vec![param(w, 0)];
            if let Some(b) = node.inputs.get(2).copied().flatten() {
                if graph.constant(b).is_none() {
                    return Err(Some("its bias is not a constant".into()));
                }
                params.push(param(b, 0));
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
            let mut params = vec![param(w, axis)];
            if let Some(b) = node.inputs.get(2).copied().flatten() {
                let c = graph
                    .constant(b)
                    .ok_or_else(|| Some("its bias is not a constant".to_string()))?;
                if c.len() == channels && channels > 1 {
                    params.push(param(b, c.dims.len().saturating_sub(1)));
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
            Ok((channels, vec![param(w, 1)]))
        }
        _ => Err(None),
    }
}

pub(super) struct Ctx<'g> {
    pub graph: &'g Graph,
    pub consumers: Vec<Vec<usize>>,
    pub producers: Vec<Option<usize>>,
}

/// A group while it is being followed.
#[derive(Default)]
pub(super) struct Building {
    /// Values in visiting order, each with its view and its first position's index in `parent`.
    values: Vec<(ValueId, ChannelView, usize)>,
    index: HashMap<ValueId, usize>,
    /// Union-find over every value's positions.
    parent: Vec<usize>,
    pub producers: Vec<usize>,
    consumers: Vec<ChannelConsumer>,
    params: Vec<ChannelParam>,
    via: Vec<String>,
    edits: Vec<ChannelEdit>,
    visited: HashSet<(usize, bool)>,
    /// Values whose positions fall in equal blocks that must keep equal counts (a grouped
    /// conv's input or output, and its group count), balanced once everything else is tied
    /// ([`balance`]).
    blocks: Vec<(ValueId, usize)>,
    queue: Vec<ValueId>,
    maps: bool,
    frozen: Option<String>,
}

impl Building {
    fn freeze(&mut self, reason: String) {
        if self.frozen.is_none() {
            self.frozen = Some(reason);
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            // The older root stays: channels are numbered from the first producer.
            let (lo, hi) = (ra.min(rb), ra.max(rb));
            self.parent[hi] = lo;
        }
    }

    /// Adds `v` with `view`, or checks it against the view it has.
    fn add(&mut self, graph: &Graph, v: ValueId, view: ChannelView) -> Option<usize> {
        if let Some(&i) = self.index.get(&v) {
            let known = &self.values[i].1;
            if known.channels != view.channels || known.flat != view.flat || known.sub != view.sub {
                self.freeze(format!(
                    "value '{}' is reached with two channel layouts",
                    graph.values[v].name
                ));
                return None;
            }
            return Some(i);
        }
        let base = self.parent.len();
        self.parent.extend(base..base + view.channels);
        self.index.insert(v, self.values.len());
        self.values.push((v, view, base));
        self.queue.push(v);
        Some(self.values.len() - 1)
    }

    fn view(&self, v: ValueId) -> Option<&ChannelView> {
        self.index.get(&v).map(|&i| &self.values[i].1)
    }

    /// Producers and reason of a frozen group, or the group.
    pub fn finish(
        mut self,
        graph: &Graph,
        consumers: &[Vec<usize>],
    ) -> Result<ChannelGroup, (Vec<usize>, String)> {
        self.producers.sort_unstable();
        if let Some(reason) = self.frozen.take() {
            return Err((self.producers, reason));
        }
        if self.consumers.is_empty() {
            return Err((
                self.producers,
                "no node reads its channels with a weight".into(),
            ));
        }
        // Every sliced constant must belong to its node alone.
        if let Some(cp) = self.params.iter().find(|cp| consumers[cp.value].len() > 1) {
            return Err((
                self.producers,
                format!(
                    "parameter '{}' is shared with other nodes",
                    graph.values[cp.value].name
                ),
            ));
        }
        self.balance_blocks();
        let mut number: HashMap<usize, usize> = HashMap::new();
        let mut values = Vec::new();
        for k in 0..self.values.len() {
            let (v, ref view, base) = self.values[k];
            let n = view.channels;
            let mut channels = Vec::with_capacity(n);
            for p in 0..n {
                let root = self.find(base + p);
                let next = number.len();
                channels.push(*number.entry(root).or_insert(next));
            }
            values.push(GroupValue { value: v, channels });
        }
        let first = self.producers[0];
        self.consumers.sort_by_key(|c| c.node);
        self.consumers.dedup_by_key(|c| c.node);
        // Each constant's entries spread evenly over the positions of the value it follows.
        let mut channel_weights = vec![0.0; number.len()];
        let mut spread = |value: ValueId, entries: usize| {
            if let Some(v) = values.iter().find(|v| v.value == value) {
                let per = entries as f64 / v.channels.len().max(1) as f64;
                for &a in &v.channels {
                    channel_weights[a] += per;
                }
            }
        };
        for p in &self.params {
            spread(p.of, graph.constant(p.value).map_or(0, |c| c.len()));
        }
        for c in &self.consumers {
            let w = graph.nodes[c.node].inputs.get(1).copied().flatten();
            spread(
                c.input,
                w.and_then(|w| graph.constant(w)).map_or(0, |c| c.len()),
            );
        }
        Ok(ChannelGroup {
            producer: first,
            name: graph.nodes[first].name.clone(),
            op: graph.nodes[first].op.kind().to_string(),
            channels: number.len(),
            stream: self.maps || self.producers.len() > 1,
            producers: self.producers,
            consumers: self.consumers,
            params: self.params,
            via: self.via,
            values,
            edits: self.edits,
            channel_weights,
        })
    }
}

impl Ctx<'_> {
    /// Follows the channels of producer `p` to every value, producer and consumer they meet.
    pub fn build(&self, p: usize) -> Building {
        let graph = self.graph;
        let mut b = Building::default();
        self.visit_producer(&mut b, p);
        while let Some(v) = b.queue.pop() {
            if graph.outputs.contains(&v) {
                b.freeze(format!(
                    "its channels reach the graph output '{}'",
                    graph.values[v].name
                ));
            }
            match self.producers[v] {
                Some(n) => self.visit(&mut b, n, v),
                None => b.freeze(format!(
                    "its channels meet the graph input '{}'",
                    graph.values[v].name
                )),
            }
            if self.consumers[v].is_empty() && !graph.outputs.contains(&v) {
                b.freeze(format!(
                    "value '{}' is not read by any node",
                    graph.values[v].name
                ));
            }
            for &n in &self.consumers[v] {
                self.visit(&mut b, n, v);
            }
        }
        b
    }

    fn visit_producer(&self, b: &mut Building, p: usize) {
        if !b.visited.insert((p, true)) {
            return;
        }
        let node = &self.graph.nodes[p];
        b.producers.push(p);
        let out = node.outputs[0];
        match producer_params(self.graph, node) {
            Ok((channels, params)) => {
                b.params.extend(params);
                if let Op::Conv(c) = &node.op {
                    if c.group > 1 {
                        b.blocks.push((out, c.group));
                    }
                }
                let dims = image_dims(self.graph, out).unwrap_or_default();
                b.add(
                    self.graph,
                    out,
                    ChannelView {
                        channels,
                        flat: None,
                        dims,
                        sub: None,
                    },
                );
            }
            Err(reason) => b.freeze(reason.unwrap_or_else(|| {
                format!(
                    "its channels meet '{}' ({}), whose weight is not a constant",
                    node.name,
                    node.op.kind()
                )
            })),
        }
    }

    /// Visits node `n`, reached through value `v` (an input or its output).
    fn visit(&self, b: &mut Building, n: usize, v: ValueId) {
        let graph = self.graph;
        let node = &graph.nodes[n];
        let from_output = node.outputs.contains(&v);
        let weighted = matches!(node.op, Op::Conv(_) | Op::Gemm(_) | Op::MatMul);
        let in_view = node
            .inputs
            .first()
            .copied()
            .flatten()
            .and_then(|i| b.view(i).cloned());
        let depthwise = match (&node.op, &in_view) {
            (Op::Conv(conv), Some(view)) => {
                rules::depth_multiplier(graph, node, conv, view).is_some()
            }
            (Op::Conv(conv), None) if from_output => node
                .inputs
                .first()
                .copied()
                .flatten()
                .and_then(|i| shape_view(graph, i))
                .is_some_and(|view| rules::depth_multiplier(graph, node, conv, &view).is_some()),
            _ => false,
        };
        if weighted && !depthwise {
            if from_output {
                self.visit_producer(b, n);
            } else if node.inputs.first().copied().flatten() == Some(v) {
                if b.visited.insert((n, false)) {
                    self.consumer(b, n, v);
                }
            } else {
                b.freeze(format!(
                    "its channels are a parameter (not the data input) of '{}' ({})",
                    node.name,
                    node.op.kind()
                ));
            }
            return;
        }
        if !b.visited.insert((n, false)) {
            return;
        }
        // The inputs that carry channels, with their views (a value met for the first time
        // gets the view its shape gives).
        let mut views = vec![None; node.inputs.len()];
        let mut members = Vec::new();
        for (slot, input) in node.inputs.iter().enumerate() {
            let Some(id) = *input else { continue };
            let merges = matches!(node.op, Op::Binary(_) | Op::Nary(_) | Op::Concat { .. });
            let broadcast = graph.values[id].shape.0.get(1).map(|d| d.at(0)) == Some(1)
                && node
                    .outputs
                    .first()
                    .and_then(|&o| graph.values[o].shape.0.get(1))
                    .is_some_and(|d| d.at(0) > 1);
            let carries = b.view(id).is_some()
                || (graph.constant(id).is_none()
                    && (slot == 0 || merges)
                    && !(matches!(node.op, Op::Binary(_) | Op::Nary(_)) && broadcast));
            if !carries {
                continue;
            }
            let view = match b.view(id) {
                Some(view) => view.clone(),
                None => match shape_view(graph, id) {
                    Some(view) => view,
                    None => {
                        b.freeze(format!(
                            "value '{}' has a symbolic or missing channel dimension",
                            graph.values[id].name
                        ));
                        return;
                    }
                },
            };
            views[slot] = Some(view);
            members.push(slot);
        }
        let out = node.outputs[0];
        let Some(out_dims) = image_dims(graph, out) else {
            b.freeze(format!(
                "value '{}' has a symbolic non-batch dimension",
                graph.values[out].name
            ));
            return;
        };
        let rule = match rules::rule(graph, node, &views, &out_dims) {
            Ok(r) => r,
            Err(reason) => {
                b.freeze(reason);
                return;
            }
        };
        // A second output (Dropout's mask) is fine while nothing reads it; a Split's are parts.
        if rule.more_outputs.is_empty()
            && node.outputs[1..]
                .iter()
                .any(|&o| !self.consumers[o].is_empty() || graph.outputs.contains(&o))
        {
            b.freeze(format!(
                "'{}' ({}) has several outputs in use",
                node.name,
                node.op.kind()
            ));
            return;
        }
        self.apply(b, n, &views, &members, rule, out, out_dims);
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        b: &mut Building,
        n: usize,
        views: &[Option<ChannelView>],
        members: &[usize],
        rule: Rule,
        out: ValueId,
        out_dims: Vec<usize>,
    ) {
        let graph = self.graph;
        let node = &graph.nodes[n];
        let mut bases = HashMap::new();
        for &slot in members {
            let id = node.inputs[slot].expect("a member input");
            let view = views[slot].clone().expect("a member's view");
            let Some(i) = b.add(graph, id, view) else {
                return;
            };
            bases.insert(slot, b.values[i].2);
        }
        let Some(o) = b.add(
            graph,
            out,
            ChannelView {
                channels: rule.out_channels,
                flat: rule.flat.clone(),
                dims: out_dims,
                sub: rule.sub.clone(),
            },
        ) else {
            return;
        };
        let mut out_bases = vec![b.values[o].2];
        for (k, &channels) in rule.more_outputs.iter().enumerate() {
            let value = node.outputs[k + 1];
            let dims = image_dims(graph, value).unwrap_or_default();
            let view = ChannelView {
                channels,
                flat: None,
                dims,
                sub: None,
            };
            let Some(i) = b.add(graph, value, view) else {
                return;
            };
            out_bases.push(b.values[i].2);
        }
        for link in &rule.links {
            let (base, out_base) = (bases[&link.input], out_bases[link.output]);
            for i in 0..link.len {
                b.union(base + link.from + i, out_base + link.to + i * link.stride);
            }
        }
        for &(slot, axis) in &rule.params {
            let value = node.inputs[slot].expect("a parameter input");
            b.params.push(ChannelParam {
                value,
                axis,
                of: out,
            });
        }
        let input = node.inputs.first().copied().flatten().unwrap_or(out);
        match rule.edit {
            Some(EditKind::Depthwise) => b.edits.push(ChannelEdit::Depthwise { node: n, input }),
            Some(EditKind::FlattenReshape { per_channel }) => {
                // Its shape constant follows the channels: it must be this node's alone.
                let shape = node.inputs.get(1).copied().flatten();
                if shape.is_some_and(|s| self.consumers[s].len() > 1) {
                    b.freeze(format!(
                        "the shape of the Reshape '{}' is shared with other nodes",
                        node.name
                    ));
                }
                b.edits.push(ChannelEdit::FlattenReshape {
                    node: n,
                    input,
                    per_channel,
                });
            }
            Some(EditKind::ChannelPad { before }) => {
                b.maps = true;
                b.edits.push(ChannelEdit::ChannelPad {
                    node: n,
                    output: out,
                    before,
                    band: views[0].as_ref().map_or(0, |v| v.channels),
                });
            }
            Some(EditKind::ChannelSplit) => {
                b.maps = true;
                let sizes = match &node.op {
                    Op::Split { sizes, .. } => sizes.clone(),
                    _ => Vec::new(),
                };
                b.edits.push(ChannelEdit::ChannelSplit {
                    node: n,
                    input,
                    sizes,
                });
            }
            Some(EditKind::ChannelReshape) => {
                let axes = |v: &ChannelView| v.sub.clone().unwrap_or_else(|| vec![v.channels]);
                b.edits.push(ChannelEdit::ChannelReshape {
                    node: n,
                    input,
                    input_axes: views[0].as_ref().map(axes).unwrap_or_default(),
                    output: out,
                    output_axes: rule.sub.clone().unwrap_or(vec![rule.out_channels]),
                });
            }
            Some(EditKind::ChannelSlice { start }) => {
                b.maps = true;
                b.edits.push(ChannelEdit::ChannelSlice {
                    node: n,
                    input,
                    start,
                    len: rule.out_channels,
                });
            }
            None => {}
        }
        if matches!(node.op, Op::Concat { .. }) {
            b.maps = true;
        }
        b.via.push(node.name.clone());
    }

    /// Records node `n` as a consumer of value `v` (its data input).
    fn consumer(&self, b: &mut Building, n: usize, v: ValueId) {
        let graph = self.graph;
        let node = &graph.nodes[n];
        let named = |what: &str| format!("{what} '{}' ({})", node.name, node.op.kind());
        let Some(view) = b.view(v).cloned() else {
            return;
        };
        let reason = match &node.op {
            Op::Conv(conv) => {
                let w = const_input(graph, node, 1, Some(4)).and_then(|w| graph.constant(w));
                if view.flat.is_some() || view.sub.is_some() || view.dims.len() != 3 {
                    Some(named("a conv reads a flattened input:"))
                } else if w.is_none() {
                    Some(named("the weight is not a constant in"))
                } else if conv.group != 1
                    && w.is_some_and(|w| w.dims[1] * conv.group != view.channels)
                {
                    Some(format!(
                        "its {} channels do not match the weight of the grouped conv '{}' (group {})",
                        view.channels, node.name, conv.group
                    ))
                } else if !matches!(conv.window.padding,
                    Padding::Explicit([t, l, bo, r]) if t == bo && l == r)
                {
                    Some(named(
                        "asymmetric or automatic padding is not supported in the consumer",
                    ))
                } else {
                    if conv.group > 1 {
                        b.blocks.push((v, conv.group));
                    }
                    b.consumers.push(ChannelConsumer {
                        node: n,
                        name: node.name.clone(),
                        input: v,
                        kind: ConsumerKind::Conv,
                        image_shape: view.dims.clone(),
                        columns_per_channel: conv.window.kernel[0] * conv.window.kernel[1],
                    });
                    None
                }
            }
            _ => {
                let trans_a = matches!(&node.op, Op::Gemm(g) if g.trans_a);
                if trans_a {
                    Some(named("transA is not supported in the consumer"))
                } else if const_input(graph, node, 1, Some(2)).is_none() {
                    Some(named("the weight is not a constant in"))
                } else if view.dims.len() != 1 {
                    Some(named("a rank-2 input is expected by"))
                } else {
                    let (kind, image_shape, cols) = match &view.flat {
                        Some(shape) => (
                            ConsumerKind::FlattenLinear,
                            shape.clone(),
                            shape[1..].iter().product(),
                        ),
                        None => (ConsumerKind::Linear, view.dims.clone(), 1),
                    };
                    b.consumers.push(ChannelConsumer {
                        node: n,
                        name: node.name.clone(),
                        input: v,
                        kind,
                        image_shape,
                        columns_per_channel: cols,
                    });
                    None
                }
            }
        };
        if let Some(r) = reason {
            b.freeze(r);
        }
    }
}
