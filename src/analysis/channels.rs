//! Channel groups: the sets of channels that are kept or removed together, and everything that
//! must change with them (`docs/ALGORITHM.md` §6).
//!
//! Starting from each producer (a Conv, Gemm or MatMul with a constant weight), the channels are
//! followed forward to the ops that read them with a weight (the **consumers**: Conv input
//! channels, Gemm/MatMul columns, Flatten → Gemm), and through every op with a channel rule
//! ([`super::rules`]): pass-throughs keep channel `c` in place (BatchNorm, activations, pooling,
//! depthwise convs, per-channel constants), merges tie positions of several values (a residual
//! Add ties every producer writing into the stream and every consumer reading any point of it;
//! `x·σ(x)`; a squeeze-and-excitation `Mul`), maps move them (Concat offsets, channel Slice
//! ranges, the channel Pad of a ResNet option-A shortcut). Tied positions form one **channel**
//! of the group (a union-find over `(value, position)`); the group's channels are numbered from
//! its first producer's outputs.
//!
//! A group is **prunable** when every value it reaches has a known channel use; otherwise it is
//! frozen (left whole) with the reason: a graph input or output, an op without a rule, a grouped
//! conv (neither 1 nor depthwise: its per-group channel counts would have to stay equal, which
//! this version does not do), a parameter shared with another node.

use std::collections::{HashMap, HashSet};

use super::rules::{self, const_input, ChannelView, EditKind, Rule};
use crate::ir::{Graph, Node, Op, Padding, ValueId};

/// How a consumer reads the group's channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ConsumerKind {
    /// A Conv on `(N, C, H, W)`: channel `c` owns `kh·kw` columns of the unfolded input.
    Conv,
    /// A Gemm/MatMul on `(N, C)`: channel `c` is one column.
    Linear,
    /// A Gemm/MatMul after a Flatten of `(N, C, H, W)`: channel `c` owns its `H·W` columns.
    FlattenLinear,
}

/// A node that reads a group's channels with a weight.
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
    /// Columns of the unfolded input per input channel position.
    pub columns_per_channel: usize,
}

/// A constant whose entries along `axis` follow the channel positions of value `of` (a weight's
/// rows, a bias, BatchNorm statistics, a per-channel scale): pruning removes their slices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ChannelParam {
    /// The constant value.
    pub value: ValueId,
    /// The axis indexed by channel.
    pub axis: usize,
    /// The value whose channel positions index it (the output of the op that reads it).
    pub of: ValueId,
}

/// An attribute that follows the kept channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ChannelEdit {
    /// A depthwise conv (node): its `group` is the kept channel count of `input`.
    Depthwise {
        /// The conv.
        node: usize,
        /// Its input.
        input: ValueId,
    },
    /// `Reshape(x, (-1, K))`: `K` = kept channels of `input` × `per_channel`.
    FlattenReshape {
        /// The Reshape.
        node: usize,
        /// Its input (before the flatten).
        input: ValueId,
        /// Elements per channel.
        per_channel: usize,
    },
    /// A constant-zero Pad of the channel axis: its begin and end channel pads are the kept
    /// positions of `output` before and after the input's band.
    ChannelPad {
        /// The Pad.
        node: usize,
        /// Its output.
        output: ValueId,
        /// Zero channels before the input's band (before pruning).
        before: usize,
        /// The input's channels (before pruning).
        band: usize,
    },
    /// A Slice of the channel axis (step 1): positions `start..start + len` of `input`.
    ChannelSlice {
        /// The Slice.
        node: usize,
        /// Its input.
        input: ValueId,
        /// First position read (before pruning).
        start: usize,
        /// Positions read (before pruning).
        len: usize,
    },
}

/// A value that carries a group's channels, with the group channel of each of its positions.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GroupValue {
    /// The value.
    pub value: ValueId,
    /// Group channel of each channel position (for a flattened value: of each pre-flatten
    /// channel).
    pub channels: Vec<usize>,
}

/// Channels that are pruned together: every producer, pass-through and consumer of them.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ChannelGroup {
    /// Index of the first producer in [`Graph::nodes`] (the group is named after it).
    pub producer: usize,
    /// The first producer's name: the group's name.
    pub name: String,
    /// Its op kind.
    pub op: String,
    /// Channels of the group (tied positions count once).
    pub channels: usize,
    /// Every producer (indices in [`Graph::nodes`], node order).
    pub producers: Vec<usize>,
    /// Every node that reads the channels with a weight (at least one).
    pub consumers: Vec<ChannelConsumer>,
    /// Constants sliced with the channels: producers' weights and biases, then those of the ops
    /// in between (BatchNorm, per-channel element-wise constants, depthwise weights).
    pub params: Vec<ChannelParam>,
    /// Names of the ops in between, in visiting order.
    pub via: Vec<String>,
    /// Every value that carries the channels.
    pub values: Vec<GroupValue>,
    /// Attributes that follow the kept channels.
    pub edits: Vec<ChannelEdit>,
    /// More than one producer, or a channel map (Concat, channel Slice or Pad): a residual
    /// stream or a block joined by Concat/Split, not a block-internal group.
    pub stream: bool,
    /// Parameters each group channel holds: its entries in every sliced constant and every
    /// consumer weight. Equal for every channel of a block-internal group; not for a stream
    /// whose channels live in values of different widths (ResNet-56: stage 1's channels are in
    /// every stage, stage 3's own only in stage 3).
    pub channel_weights: Vec<f64>,
}

impl ChannelGroup {
    /// The group channel of each position of `value`, when the value carries the group.
    pub fn positions(&self, value: ValueId) -> Option<&[usize]> {
        self.values
            .iter()
            .find(|v| v.value == value)
            .map(|v| v.channels.as_slice())
    }

    /// The positions of `value` whose group channel is in `kept` (sorted group channels).
    pub fn kept_positions(&self, value: ValueId, kept: &[usize]) -> Vec<usize> {
        self.positions(value)
            .unwrap_or(&[])
            .iter()
            .enumerate()
            .filter(|(_, c)| kept.binary_search(c).is_ok())
            .map(|(p, _)| p)
            .collect()
    }

    /// Whether the channels hold unequal parameter counts ([`ChannelGroup::channel_weights`]).
    pub fn unequal_channels(&self) -> bool {
        let w = &self.channel_weights;
        let (lo, hi) = w.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
        !w.is_empty() && hi > lo * (1.0 + 1e-9)
    }

    /// The parameters held by the group channels `kept`.
    pub fn weight_of(&self, kept: &[usize]) -> f64 {
        kept.iter().map(|&a| self.channel_weights[a]).sum()
    }

    /// Depthwise convs among the pass-throughs (indices in [`Graph::nodes`]).
    pub fn depthwise(&self) -> Vec<usize> {
        self.edits
            .iter()
            .filter_map(|e| match e {
                ChannelEdit::Depthwise { node, .. } => Some(*node),
                _ => None,
            })
            .collect()
    }

    /// How consumer `i` reads the group's channels when that is not one column block per group
    /// channel in order (`None`: it is, and its statistics are used as they are).
    pub fn consumer_map(&self, i: usize) -> Option<ConsumerMap> {
        let c = &self.consumers[i];
        let positions = self.positions(c.input)?;
        if positions.len() == self.channels && positions.iter().enumerate().all(|(p, &a)| p == a) {
            return None;
        }
        Some(ConsumerMap::new(
            positions,
            self.channels,
            c.columns_per_channel,
        ))
    }
}

/// A consumer's columns regrouped by group channel: group channel `a` owns the `slots`
/// positions that map to it (padded with zero columns where it has fewer, or none), each with
/// its `columns_per_channel` columns. The greedy and the reweighting then see one column block
/// per group channel, as for a consumer that reads the channels in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerMap {
    /// Group channel of each input position.
    pub positions: Vec<usize>,
    /// Group channels.
    pub channels: usize,
    /// Position slots per group channel (the most positions any group channel has here).
    pub slots: usize,
    /// Columns per position.
    pub columns_per_channel: usize,
    /// For each regrouped column (`channels · slots · columns_per_channel`), the consumer's own
    /// column, or `None` for a zero column.
    pub columns: Vec<Option<usize>>,
}

impl ConsumerMap {
    fn new(positions: &[usize], channels: usize, ks: usize) -> Self {
        let mut of: Vec<Vec<usize>> = vec![Vec::new(); channels];
        for (p, &a) in positions.iter().enumerate() {
            of[a].push(p);
        }
        let slots = of.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut columns = Vec::with_capacity(channels * slots * ks);
        for ps in &of {
            for s in 0..slots {
                for k in 0..ks {
                    columns.push(ps.get(s).map(|p| p * ks + k));
                }
            }
        }
        Self {
            positions: positions.to_vec(),
            channels,
            slots,
            columns_per_channel: ks,
            columns,
        }
    }

    /// Columns per group channel after regrouping.
    pub fn block(&self) -> usize {
        self.slots * self.columns_per_channel
    }

    /// The consumer's kept input positions for the kept group channels `kept` (sorted), and for
    /// each its row block in the regrouped reweighting's output (blocks of `block()` rows in
    /// `kept` order, `columns_per_channel` rows per slot).
    pub fn kept_positions(&self, kept: &[usize]) -> Vec<(usize, usize)> {
        let mut seen = vec![0usize; self.channels];
        let mut out = Vec::new();
        for (p, &a) in self.positions.iter().enumerate() {
            let slot = seen[a];
            seen[a] += 1;
            if let Ok(i) = kept.binary_search(&a) {
                out.push((p, (i * self.slots + slot) * self.columns_per_channel));
            }
        }
        out
    }
}

/// A producer whose channels are left whole.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CoupledLayer {
    /// Index of the producer in [`Graph::nodes`].
    pub producer: usize,
    /// The producer's name.
    pub name: String,
    /// Output channels.
    pub channels: usize,
    /// Why its channels cannot be pruned (the first reason found).
    pub reason: String,
}

/// Which groups a run may prune.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupScope {
    /// Every prunable group: block-internal ones, residual streams, Concat/Split blocks.
    #[default]
    All,
    /// Block-internal groups only (one producer, no channel map): streams are left whole.
    Internal,
}

impl std::str::FromStr for GroupScope {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s {
            "all" => Ok(GroupScope::All),
            "internal" => Ok(GroupScope::Internal),
            _ => Err(crate::error::Error::InvalidArgument(format!(
                "groups '{s}': expected 'all' or 'internal'"
            ))),
        }
    }
}

/// The channel groups of a graph.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ChannelAnalysis {
    /// Prunable groups, by first producer in node order.
    pub prunable: Vec<ChannelGroup>,
    /// Producers left whole, in node order.
    pub coupled: Vec<CoupledLayer>,
}

impl ChannelAnalysis {
    /// The prunable group named `name` (its first producer's name).
    pub fn prunable(&self, name: &str) -> Option<&ChannelGroup> {
        self.prunable.iter().find(|l| l.name == name)
    }

    /// The producer left whole named `name`.
    pub fn coupled(&self, name: &str) -> Option<&CoupledLayer> {
        self.coupled.iter().find(|l| l.name == name)
    }

    /// The prunable group that node `name` produces channels of (as any of its producers).
    pub fn group_of(&self, graph: &Graph, name: &str) -> Option<&ChannelGroup> {
        self.prunable
            .iter()
            .find(|g| g.producers.iter().any(|&p| graph.nodes[p].name == name))
    }

    /// Keeps the groups `scope` allows; the others' producers are listed as left whole.
    pub fn restrict(mut self, graph: &Graph, scope: GroupScope) -> Self {
        if scope == GroupScope::All {
            return self;
        }
        let (keep, streams): (Vec<_>, Vec<_>) = self.prunable.into_iter().partition(|g| !g.stream);
        self.prunable = keep;
        for g in streams {
            for &p in &g.producers {
                self.coupled.push(CoupledLayer {
                    producer: p,
                    name: graph.nodes[p].name.clone(),
                    channels: g.channels,
                    reason: format!("in the stream group '{}' (--groups internal)", g.name),
                });
            }
        }
        self.coupled.sort_by_key(|c| c.producer);
        self
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

/// The producer's own channel params (indexed by its output), or why it is not a prunable
/// producer (`Err(None)`: not a producer at all).
fn producer_params(
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
            let channels = graph.values[w].shape.0[0].at(1);
            if c.group != 1 {
                return Err(Some(format!(
                    "grouped/depthwise conv (group {}): its output channels are tied to its input channels",
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

/// Analyses every Conv/Gemm/MatMul with a constant weight: the groups their channels form.
pub fn analyze(graph: &Graph) -> ChannelAnalysis {
    let ctx = Ctx {
        graph,
        consumers: graph.consumers(),
        producers: graph.producers(),
    };
    let mut grouped: HashSet<usize> = HashSet::new();
    let mut analysis = ChannelAnalysis::default();
    for (p, producer) in graph.nodes.iter().enumerate() {
        if grouped.contains(&p) {
            continue;
        }
        match producer_params(graph, producer) {
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
            Ok(_) => {}
        }
        let built = ctx.build(p);
        grouped.extend(built.producers.iter().copied());
        match built.finish(graph) {
            Ok(group) => analysis.prunable.push(group),
            Err((producers, reason)) => {
                for q in producers {
                    let channels = image_dims(graph, graph.nodes[q].outputs[0])
                        .and_then(|d| d.first().copied())
                        .unwrap_or(0);
                    analysis.coupled.push(CoupledLayer {
                        producer: q,
                        name: graph.nodes[q].name.clone(),
                        channels,
                        reason: reason.clone(),
                    });
                }
            }
        }
    }
    // A depthwise conv in a prunable group loses channels with it.
    for g in &analysis.prunable {
        for d in g.depthwise() {
            analysis.coupled.retain(|c| c.producer != d);
            analysis.coupled.push(CoupledLayer {
                producer: d,
                name: graph.nodes[d].name.clone(),
                channels: image_dims(graph, graph.nodes[d].outputs[0])
                    .and_then(|x| x.first().copied())
                    .unwrap_or(0),
                reason: format!(
                    "depthwise: its channels are pruned with those of '{}'",
                    g.name
                ),
            });
        }
    }
    analysis.coupled.sort_by_key(|c| c.producer);
    analysis
}

struct Ctx<'g> {
    graph: &'g Graph,
    consumers: Vec<Vec<usize>>,
    producers: Vec<Option<usize>>,
}

/// A group while it is being followed.
#[derive(Default)]
struct Building {
    /// Values in visiting order, each with its view and its first position's index in `parent`.
    values: Vec<(ValueId, ChannelView, usize)>,
    index: HashMap<ValueId, usize>,
    /// Union-find over every value's positions.
    parent: Vec<usize>,
    producers: Vec<usize>,
    consumers: Vec<ChannelConsumer>,
    params: Vec<ChannelParam>,
    via: Vec<String>,
    edits: Vec<ChannelEdit>,
    visited: HashSet<(usize, bool)>,
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
            if self.values[i].1.channels != view.channels || self.values[i].1.flat != view.flat {
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
    fn finish(mut self, graph: &Graph) -> Result<ChannelGroup, (Vec<usize>, String)> {
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
        let consumers = graph.consumers();
        if let Some(cp) = self.params.iter().find(|cp| consumers[cp.value].len() > 1) {
            return Err((
                self.producers,
                format!(
                    "parameter '{}' is shared with other nodes",
                    graph.values[cp.value].name
                ),
            ));
        }
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
    fn build(&self, p: usize) -> Building {
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
                let dims = image_dims(self.graph, out).unwrap_or_default();
                b.add(
                    self.graph,
                    out,
                    ChannelView {
                        channels,
                        flat: None,
                        dims,
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
            (Op::Conv(conv), None) if from_output => {
                let input = node.inputs.first().copied().flatten();
                let view = input.and_then(|i| {
                    Some(ChannelView {
                        channels: image_dims(graph, i)?.first().copied()?,
                        flat: None,
                        dims: image_dims(graph, i)?,
                    })
                });
                view.is_some_and(|view| rules::depth_multiplier(graph, node, conv, &view).is_some())
            }
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
            let merges = matches!(node.op, Op::Binary(_) | Op::Concat { .. });
            let broadcast = graph.values[id].shape.0.get(1).map(|d| d.at(0)) == Some(1)
                && node
                    .outputs
                    .first()
                    .and_then(|&o| graph.values[o].shape.0.get(1))
                    .is_some_and(|d| d.at(0) > 1);
            let carries = b.view(id).is_some()
                || (graph.constant(id).is_none()
                    && (slot == 0 || merges)
                    && !(matches!(node.op, Op::Binary(_)) && broadcast));
            if !carries {
                continue;
            }
            let view = match b.view(id) {
                Some(view) => view.clone(),
                None => match image_dims(graph, id) {
                    Some(dims) if !dims.is_empty() => ChannelView {
                        channels: dims[0],
                        flat: None,
                        dims,
                    },
                    _ => {
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
        // A second output (Dropout's mask) is fine while nothing reads it.
        if node.outputs[1..]
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
            },
        ) else {
            return;
        };
        let out_base = b.values[o].2;
        for link in &rule.links {
            let base = bases[&link.input];
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
                if view.flat.is_some() || view.dims.len() != 3 {
                    Some(named("a conv reads a flattened input:"))
                } else if conv.group != 1 {
                    Some(format!(
                        "its channels feed the grouped conv '{}' (group {})",
                        node.name, conv.group
                    ))
                } else if const_input(graph, node, 1, Some(4)).is_none() {
                    Some(named("the weight is not a constant in"))
                } else if !matches!(conv.window.padding,
                    Padding::Explicit([t, l, bo, r]) if t == bo && l == r)
                {
                    Some(named(
                        "asymmetric or automatic padding is not supported in the consumer",
                    ))
                } else {
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
