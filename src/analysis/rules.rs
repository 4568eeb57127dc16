//! Channel rules, one entry per op: how an op that is not a weighted producer or consumer relates
//! the channel positions of its data inputs to those of its output ([`Rule`]), which of its
//! constants follow the channels, and which attribute must follow the kept count ([`EditKind`]).
//! An op without a rule (or a rule that refuses its attributes) freezes the channels it meets.
//!
//! | op | rule |
//! |---|---|
//! | Relu, Sigmoid, Clip, …, Identity, MaxPool/AveragePool, GlobalAveragePool | position `c` in, `c` out |
//! | BatchNormalization | `c` → `c`; its four vectors follow the channels |
//! | Add/Sub/Mul/Div | every non-constant operand's `c` → `c` (a residual Add, `x·σ(x)`, a squeeze-and-excitation `Mul`); a per-channel constant follows the channels, a scalar one is left |
//! | Conv, depthwise (`group` = channels, weight `(m·C, 1, kh, kw)`) | `c` → `c·m + j` for `j < m`; weight rows and bias follow; `group` = kept count |
//! | Concat (channel axis) | input `k`'s `c` → `offset_k + c` |
//! | Slice (channel axis, step 1) | `start + c` → `c`; the range follows the kept positions |
//! | Split (channel axis) | `offset_k + c` → output `k`'s `c`; the part sizes follow |
//! | Sum/Max/Min (n-ary) | as Add |
//! | Resize by scales, GlobalMaxPool, ReduceMean/Max/Sum over spatial axes | `c` → `c` |
//! | Pad (constant 0 on the channel axis) | `c` → `before + c`; the pads count the kept zero channels |
//! | Flatten (axis 1), Reshape to `(N, -1)` / `(-1, K)` / `(0, K)` | `c` → the `H·W` features of `c` (tracked as channel `c`); `K` follows |
//! | Reshape splitting the channel axis into sub-axes (or merging them), batch and spatial axes alone | flattened position `c` → `c`; a split output ties equal offsets of the last sub-axis across the leading ones (the kept set stays a product); the shape's channel entries follow |
//! | Transpose permuting only channel sub-axes (a channel shuffle) | the permutation of flattened positions |

use crate::ir::{Graph, Node, Op, PadMode, ValueId};

/// How an op's output positions come from its data inputs' positions: position `from + i` of
/// input `input` is position `to + i·stride` of the output, for `i < len` (`stride` > 1 for a
/// depth multiplier, with one link per multiplier copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    /// The input slot (index in `node.inputs`).
    pub input: usize,
    /// The output slot (index in `node.outputs`; 0 but for a Split).
    pub output: usize,
    /// First input position.
    pub from: usize,
    /// First output position.
    pub to: usize,
    /// Positions linked.
    pub len: usize,
    /// Output step per input position.
    pub stride: usize,
}

/// An attribute of the op that follows the kept channel count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EditKind {
    /// A depthwise conv's `group`.
    Depthwise,
    /// `Reshape(x, (-1, K))`: `K` = channels × `per_channel`.
    FlattenReshape {
        /// Elements per channel (`H·W` of the input).
        per_channel: usize,
    },
    /// Channel pads of a constant-zero Pad: `before` zero channels, then the input's.
    ChannelPad {
        /// Zero channels before the input's.
        before: usize,
    },
    /// A Slice of the channel axis: positions `start..start + len` of the input.
    ChannelSlice {
        /// First input position read.
        start: usize,
    },
    /// A Split of the channel axis: its part sizes.
    ChannelSplit,
    /// A Reshape that splits the channel axis into sub-axes or merges them: the shape's
    /// channel entries follow the kept positions.
    ChannelReshape,
}

/// What an op does to channels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Rule {
    /// Input positions → output positions.
    pub links: Vec<Link>,
    /// Constant inputs `(slot, axis)` indexed by the output's channel positions.
    pub params: Vec<(usize, usize)>,
    /// The output's per-channel layout: `Some(shape)` once the channels are flattened
    /// (the per-image shape before the Flatten), `None` while they are a tensor axis.
    pub flat: Option<Vec<usize>>,
    /// Output channel positions (including new constant-zero ones).
    pub out_channels: usize,
    /// A Split's other outputs' channel positions (outputs 1, 2, …).
    pub more_outputs: Vec<usize>,
    /// An attribute that follows the kept count.
    pub edit: Option<EditKind>,
    /// The output's channel sub-axes when the channels span several axes (after a Reshape that
    /// splits them); `None`: one channel axis.
    pub sub: Option<Vec<usize>>,
}

/// What a rule needs to know of a value carrying channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChannelView {
    /// Channel positions.
    pub channels: usize,
    /// Per-image shape before a Flatten, once flattened.
    pub flat: Option<Vec<usize>>,
    /// Per-image dims.
    pub dims: Vec<usize>,
    /// The channel sub-axes (`dims[..k]`, flattened row-major into the positions) when the
    /// channels span several axes; `None`: the channels are `dims[0]` alone.
    pub sub: Option<Vec<usize>>,
}

impl ChannelView {
    /// How many leading per-image axes hold the channels.
    pub fn channel_axes(&self) -> usize {
        self.sub.as_ref().map_or(1, Vec::len)
    }
}

/// A float constant input `i` of `node` of rank `rank` (any rank when `None`).
pub(crate) fn const_input(
    graph: &Graph,
    node: &Node,
    i: usize,
    rank: Option<usize>,
) -> Option<ValueId> {
    let v = node.inputs.get(i).copied().flatten()?;
    let c = graph.constant(v)?;
    c.f32()?;
    match rank {
        Some(r) if c.dims.len() != r => None,
        _ => Some(v),
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

/// The depth multiplier of a depthwise conv on `input` (`group` = input channels > 1, constant
/// weight `(m·C, 1, kh, kw)`), or `None` for any other conv.
pub(crate) fn depth_multiplier(
    graph: &Graph,
    node: &Node,
    conv: &crate::ir::Conv,
    input: &ChannelView,
) -> Option<usize> {
    let c = input.channels;
    if input.flat.is_some() || conv.group != c || c < 2 {
        return None;
    }
    let w = graph.constant(const_input(graph, node, 1, Some(4))?)?;
    (w.dims[1] == 1 && w.dims[0] % c == 0 && w.dims[0] > 0).then(|| w.dims[0] / c)
}

fn identity(input: usize, view: &ChannelView) -> Rule {
    Rule {
        links: vec![Link {
            input,
            output: 0,
            from: 0,
            to: 0,
            len: view.channels,
            stride: 1,
        }],
        flat: view.flat.clone(),
        out_channels: view.channels,
        sub: view.sub.clone(),
        ..Rule::default()
    }
}

/// The rule of `node` for the channels of its inputs (`views[slot]` for the inputs that carry
/// channels, `None` for the others), or why it has none. `out_dims`: the output's per-image dims.
pub(crate) fn rule(
    graph: &Graph,
    node: &Node,
    views: &[Option<ChannelView>],
    out_dims: &[usize],
) -> Result<Rule, String> {
    let named = |what: &str| format!("{what} '{}' ({})", node.name, node.op.kind());
    let first = || {
        views
            .first()
            .cloned()
            .flatten()
            .ok_or_else(|| named("its channels are a parameter (not the data input) of"))
    };
    if views.iter().skip(1).any(Option::is_some)
        && !matches!(node.op, Op::Binary(_) | Op::Nary(_) | Op::Concat { .. })
    {
        return Err(named(
            "its channels are a parameter (not the data input) of",
        ));
    }
    if views.iter().flatten().any(|v| v.sub.is_some())
        && !matches!(
            node.op,
            Op::Unary(_) | Op::Identity | Op::Reshape { .. } | Op::Transpose { .. }
        )
    {
        return Err(named(
            "its channels, split over several axes by a channel shuffle, reach",
        ));
    }
    let flat_spatial = |v: &ChannelView| {
        v.flat
            .as_ref()
            .is_some_and(|s| s.len() > 1 && s[1..].iter().product::<usize>() > 1)
    };
    match &node.op {
        Op::Unary(_) | Op::Identity => Ok(identity(0, &first()?)),
        Op::Pool { .. } | Op::GlobalAveragePool | Op::GlobalMaxPool => {
            let v = first()?;
            if v.flat.is_some() {
                return Err(named("pooling of flattened channels in"));
            }
            Ok(identity(0, &v))
        }
        Op::BatchNorm { .. } => {
            let v = first()?;
            if flat_spatial(&v) {
                return Err(named("BatchNorm on flattened channels:"));
            }
            let mut r = identity(0, &v);
            for i in 1..5 {
                if const_input(graph, node, i, Some(1)).is_none() {
                    return Err(named("a non-constant parameter in"));
                }
                r.params.push((i, 0));
            }
            Ok(r)
        }
        Op::Conv(conv) => {
            let v = first()?;
            let m = depth_multiplier(graph, node, conv, &v)
                .ok_or_else(|| named("not a depthwise conv:"))?;
            let mut r = Rule {
                out_channels: v.channels * m,
                edit: Some(EditKind::Depthwise),
                ..Rule::default()
            };
            for j in 0..m {
                r.links.push(Link {
                    input: 0,
                    output: 0,
                    from: 0,
                    to: j,
                    len: v.channels,
                    stride: m,
                });
            }
            for i in 1..node.inputs.len().min(3) {
                if const_input(graph, node, i, None).is_none() {
                    return Err(named("a non-constant parameter in"));
                }
                r.params.push((i, 0));
            }
            Ok(r)
        }
        Op::Flatten { axis: 1 } => Ok(flatten(&first()?)),
        // A flatten written as a Reshape: `(0, -1)`, or `(-1, K)` / `(0, K)` with K the elements
        // of one image (the batch inferred or copied; K follows the channels, so its shape
        // constant must be this node's alone: checked with the other parameters; it is
        // rewritten as `(-1, K')`).
        Op::Reshape { shape, .. } if shape.len() == 2 && first()?.sub.is_none() => {
            let v = first()?;
            let elements: usize = v.dims.iter().product();
            if shape[1] == -1 && shape[0] >= 0 {
                Ok(flatten(&v))
            } else if (shape[0] == -1 || shape[0] == 0)
                && usize::try_from(shape[1]).is_ok_and(|k| k == elements)
            {
                let mut r = flatten(&v);
                r.edit = Some(EditKind::FlattenReshape {
                    per_channel: elements / v.channels.max(1),
                });
                Ok(r)
            } else {
                Err(named("a Reshape that mixes channels:"))
            }
        }
        Op::Reshape { .. } => super::shuffle::reshape(node, &first()?, out_dims),
        Op::Transpose { perm } => super::shuffle::transpose(node, &first()?, perm),
        Op::Binary(b) => binary(graph, node, &format!("{b:?}"), views, out_dims),
        Op::Nary(k) => binary(graph, node, &format!("{k:?}"), views, out_dims),
        // Resized by scales: the channels stay. By sizes, the file's sizes name the channel
        // count too, which would have to follow: left whole.
        Op::Resize(r) if r.sizes.is_none() => {
            let v = first()?;
            if v.flat.is_some() || out_dims.first() != Some(&v.channels) {
                return Err(named("a Resize that changes the channels:"));
            }
            Ok(identity(0, &v))
        }
        Op::Reduce { axes, .. } if !axes.contains(&0) && !axes.contains(&1) => {
            let v = first()?;
            if v.flat.is_some() {
                return Err(named("a reduction of flattened channels in"));
            }
            Ok(identity(0, &v))
        }
        Op::Split { axis, sizes } => {
            let v = first()?;
            if v.flat.is_some() {
                return Err(named("a Split of flattened channels:"));
            }
            let mut r = Rule {
                out_channels: if *axis == 1 { sizes[0] } else { v.channels },
                ..Rule::default()
            };
            let mut offset = 0;
            for (k, &size) in sizes.iter().enumerate() {
                let (from, len) = if *axis == 1 {
                    (offset, size)
                } else {
                    (0, v.channels)
                };
                r.links.push(Link {
                    input: 0,
                    output: k,
                    from,
                    to: 0,
                    len,
                    stride: 1,
                });
                if k > 0 {
                    r.more_outputs.push(len);
                }
                offset += size;
            }
            if *axis == 1 {
                r.edit = Some(EditKind::ChannelSplit);
            } else if *axis == 0 {
                return Err(named("a Split of the batch in"));
            }
            Ok(r)
        }
        Op::Concat { axis: 1 } => {
            let mut r = Rule::default();
            let mut offset = 0;
            for (slot, v) in node.inputs.iter().enumerate() {
                let Some(id) = *v else { continue };
                let channels = match &views[slot] {
                    Some(view) if view.flat.is_some() => {
                        return Err(named("a Concat of flattened channels:"))
                    }
                    Some(view) => {
                        r.links.push(Link {
                            input: slot,
                            output: 0,
                            from: 0,
                            to: offset,
                            len: view.channels,
                            stride: 1,
                        });
                        view.channels
                    }
                    None => match graph.values[id].shape.0.get(1) {
                        Some(crate::ir::Dim::Fixed(c)) if graph.constant(id).is_none() => *c,
                        _ => return Err(named("a constant or unsized input to")),
                    },
                };
                offset += channels;
            }
            r.out_channels = offset;
            Ok(r)
        }
        Op::Slice {
            starts,
            ends,
            axes,
            steps,
        } => {
            let v = first()?;
            if v.flat.is_some() {
                return Err(named("a Slice of flattened channels:"));
            }
            match axes.iter().position(|&a| a == 1) {
                None if !axes.contains(&0) => Ok(identity(0, &v)),
                None => Err(named("a Slice of the batch axis in")),
                Some(k) => {
                    if steps[k] != 1 {
                        return Err(named("a strided Slice of the channel axis:"));
                    }
                    // ONNX's clamping, as the shape inference does it.
                    let (start, len) =
                        crate::ir::shape::slice_range(v.channels, starts[k], ends[k], 1);
                    let start = start as usize;
                    Ok(Rule {
                        links: vec![Link {
                            input: 0,
                            output: 0,
                            from: start,
                            to: 0,
                            len,
                            stride: 1,
                        }],
                        out_channels: len,
                        edit: Some(EditKind::ChannelSlice { start }),
                        ..Rule::default()
                    })
                }
            }
        }
        Op::Pad { mode, pads, value } => {
            let v = first()?;
            let rank = pads.len() / 2;
            if v.flat.is_some() || rank < 2 {
                return Err(named("a Pad of flattened channels:"));
            }
            if pads.iter().any(|&p| p < 0) || pads[0] != 0 || pads[rank] != 0 {
                return Err(named("a Pad that crops or pads the batch:"));
            }
            let (before, after) = (pads[1] as usize, pads[rank + 1] as usize);
            if before + after > 0 && (*mode != PadMode::Constant || *value != 0.0) {
                return Err(named("a Pad of the channel axis with non-zero fill:"));
            }
            let mut r = identity(0, &v);
            r.links[0].to = before;
            r.out_channels = before + v.channels + after;
            if before + after > 0 {
                r.edit = Some(EditKind::ChannelPad { before });
            }
            Ok(r)
        }
        _ => Err(format!(
            "its channels reach the {} '{}', which has no channel rule",
            node.op.kind(),
            node.name
        )),
    }
}

fn flatten(v: &ChannelView) -> Rule {
    let mut r = identity(0, v);
    if r.flat.is_none() && v.dims.len() > 1 {
        r.flat = Some(v.dims.clone());
    }
    r
}

/// Element-wise ops: every non-constant operand with the output's channels keeps `c` in place;
/// per-channel constants follow the channels.
fn binary(
    graph: &Graph,
    node: &Node,
    b: &str,
    views: &[Option<ChannelView>],
    out_dims: &[usize],
) -> Result<Rule, String> {
    let named = |what: &str| format!("{what} '{}' ({})", node.name, node.op.kind());
    let reference = views
        .iter()
        .flatten()
        .next()
        .cloned()
        .ok_or_else(|| named("no channels reach"))?;
    let channels = reference.channels;
    if out_dims.first() != reference.dims.first() && reference.flat.is_none() {
        return Err(format!(
            "its channels are broadcast against more channels by the {b} '{}'",
            node.name
        ));
    }
    let mut r = Rule {
        flat: reference.flat.clone(),
        out_channels: channels,
        ..Rule::default()
    };
    for (slot, input) in node.inputs.iter().enumerate() {
        let Some(id) = *input else { continue };
        if let Some(v) = &views[slot] {
            if v.channels != channels || v.flat != reference.flat {
                return Err(named("operands with different channel layouts in"));
            }
            r.links.push(Link {
                input: slot,
                output: 0,
                from: 0,
                to: 0,
                len: channels,
                stride: 1,
            });
            continue;
        }
        match graph.constant(id) {
            Some(c) => {
                if reference.flat.is_some() && c.len() != 1 {
                    return Err(named("a per-element constant after a Flatten in"));
                }
                match per_channel_axis(&c.dims, reference.dims.len() + 1, channels) {
                    Ok(Some(axis)) if c.f32().is_some() => r.params.push((slot, axis)),
                    Ok(None) => {}
                    _ => {
                        return Err(named(
                            "a constant that is neither scalar nor per-channel in",
                        ))
                    }
                }
            }
            // Another activation broadcast over the channels (one channel, e.g. a spatial
            // mask): channel c of the output still reads channel c alone.
            None if graph.values[id].shape.0.get(1).map(|d| d.at(0)) == Some(1) && channels > 1 => {
            }
            None => {
                return Err(format!(
                "its channels meet an activation whose channels are not followed, in the {b} '{}'",
                node.name
            ))
            }
        }
    }
    Ok(r)
}
