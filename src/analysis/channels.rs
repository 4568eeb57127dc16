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
//! frozen (left whole) with the reason: a graph input or output, an op without a rule, a
//! parameter shared with another node.
//!
//! A **grouped conv** (`1 < group`, not depthwise) is a producer and a consumer like any other,
//! but ONNX wants each of its `group` blocks of input (and output) channels to keep equal
//! counts. Once every other rule has tied what it ties, classes are merged until each holds as
//! many positions of every block (`follow/balance.rs`): stronger than equal counts (a
//! union-find can only tie) but much weaker than tying equal offsets (`b·s + j` across `b`),
//! which after a channel shuffle whose runs straddle the blocks (ShuffleNet's 136 = 4 × 34
//! channels) would merge every channel into one; ShuffleNet keeps 9 there, 16 in its stream. A
//! group channel may then hold several positions of one value; a consumer's statistics are
//! regrouped per group channel ([`ConsumerMap`]), and a grouped consumer's weight is treated
//! as a block-diagonal dense weight (`docs/ALGORITHM.md` §6.2).

use std::collections::HashSet;

use super::follow::{image_dims, producer_params, Ctx};
use crate::ir::{Graph, ValueId};

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
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
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
    /// A Split of the channel axis: part `k` is positions `sizes[..k].sum()..` (`sizes[k]` of
    /// them) of `input`; the sizes become the kept positions in each part.
    ChannelSplit {
        /// The Split.
        node: usize,
        /// Its input.
        input: ValueId,
        /// Part sizes (before pruning).
        sizes: Vec<usize>,
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
    /// A Reshape that splits the channel axis into sub-axes or merges them back (a channel
    /// shuffle): the shape's channel entries become the kept count along each sub-axis of
    /// `output`, whose kept positions (and those of `input`) must form a product set.
    ChannelReshape {
        /// The Reshape.
        node: usize,
        /// Its input.
        input: ValueId,
        /// The channel sub-axis sizes of `input` (before pruning; `[C]` for one channel axis).
        input_axes: Vec<usize>,
        /// Its output.
        output: ValueId,
        /// The channel sub-axis sizes of `output` (before pruning).
        output_axes: Vec<usize>,
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
        match built.finish(graph, &ctx.consumers) {
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
