//! Keep sets → edits of the IR: every producer's output rows and bias, the per-channel constants
//! in between (BatchNorm entries, per-channel scales, depthwise weights), the attributes that
//! follow the channel count (depthwise `group`, flatten sizes, channel Pad and Slice ranges), and
//! the consumers' weights replaced by `W~`. Everything else is left as it is; shapes are
//! re-inferred afterwards.

use std::collections::HashMap;

use super::options::PruneOptions;
use super::select::{consumer_rows, Selection};
use crate::analysis::channels::{ChannelConsumer, ChannelEdit, ChannelGroup, ConsumerMap};
use crate::error::{Error, Result};
use crate::ir::{ConstData, Constant, Graph, Op, Shape, ValueId};
use crate::layer::{ConvOptions, LayerProblem, LayerStats};
use crate::tensor::Tensor;

/// How a consumer's ONNX weight maps to the `(M, C, …)` layout of a [`LayerProblem`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum WeightForm {
    /// Conv `(M, C, kh, kw)`, or Gemm with `transB` `(M, K)`: as it is, times `scale`.
    AsIs { scale: f32 },
    /// Gemm without `transB` or MatMul: `(K, M)`, transposed, times `scale`.
    Transposed { scale: f32 },
}

/// The f32 values of constant `v`, or an error naming it.
pub(crate) fn const_f32(graph: &Graph, v: ValueId) -> Result<(&[usize], &[f32])> {
    let c = graph.constant(v).ok_or_else(|| {
        Error::InvalidArgument(format!("'{}' is not a constant", graph.values[v].name))
    })?;
    let data = c.f32().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "'{}' is not a float constant",
            graph.values[v].name
        ))
    })?;
    Ok((&c.dims, data))
}

fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// The layer problem of one consumer in the current graph, and how its weight was read.
pub(crate) fn consumer_problem(
    graph: &Graph,
    consumer: &ChannelConsumer,
) -> Result<(LayerProblem, WeightForm)> {
    let node = &graph.nodes[consumer.node];
    let w = node.input(1)?;
    let (dims, data) = const_f32(graph, w)?;
    let mut input_shape = vec![1];
    input_shape.extend_from_slice(&consumer.image_shape);
    let (weight, form, conv) = match &node.op {
        Op::Conv(c) => {
            let pads = match c.window.padding {
                crate::ir::Padding::Explicit(p) => p,
                _ => return Err(node.error("automatic padding in a pruned layer's consumer")),
            };
            let opts = ConvOptions {
                stride: c.window.strides,
                padding: [pads[0], pads[1]],
                dilation: c.window.dilations,
            };
            let weight = if c.group > 1 {
                block_diagonal_weight(dims, data, c.group)
                    .map_err(|e| node.error(format!("as a grouped consumer: {e}")))?
            } else {
                Tensor::new(dims.to_vec(), data.to_vec())?
            };
            (weight, WeightForm::AsIs { scale: 1.0 }, Some(opts))
        }
        Op::Gemm(g) => {
            let scaled: Vec<f32> = data.iter().map(|x| x * g.alpha).collect();
            if g.trans_b {
                (
                    Tensor::new(dims.to_vec(), scaled)?,
                    WeightForm::AsIs { scale: g.alpha },
                    None,
                )
            } else {
                (
                    Tensor::new(vec![dims[1], dims[0]], transpose(&scaled, dims[0], dims[1]))?,
                    WeightForm::Transposed { scale: g.alpha },
                    None,
                )
            }
        }
        Op::MatMul => (
            Tensor::new(vec![dims[1], dims[0]], transpose(data, dims[0], dims[1]))?,
            WeightForm::Transposed { scale: 1.0 },
            None,
        ),
        _ => return Err(node.error("not a weighted consumer")),
    };
    let mut problem = LayerProblem::new(&input_shape, weight.view(), conv)
        .map_err(|e| node.error(format!("as the consumer of a pruned layer: {e}")))?;
    if let Op::Conv(c) = &node.op {
        problem.groups = c.group;
    }
    Ok((problem, form))
}

/// A grouped conv's weight `(M, C/g, kh, kw)` as the dense `(M, C, kh, kw)` weight it acts as:
/// output block `b` (`M/g` outputs) reads input block `b` (`C/g` channels), zeros elsewhere.
fn block_diagonal_weight(dims: &[usize], data: &[f32], groups: usize) -> Result<Tensor> {
    let (m, cg, k) = (dims[0], dims[1], dims[2] * dims[3]);
    if m % groups != 0 {
        return Err(Error::Shape(format!(
            "weight {dims:?}: {m} outputs do not split into {groups} groups"
        )));
    }
    let c = cg * groups;
    let mut dense = vec![0.0f32; m * c * k];
    for o in 0..m {
        let b = o / (m / groups);
        let row = &data[o * cg * k..(o + 1) * cg * k];
        dense[(o * c + b * cg) * k..(o * c + (b + 1) * cg) * k].copy_from_slice(row);
    }
    Tensor::new(vec![m, c, dims[2], dims[3]], dense)
}

/// The diagonal blocks of a dense reweighted conv weight `(M, C', kh, kw)` as a grouped weight
/// `(M, C'/g, kh, kw)`: `positions` are the consumer's kept input positions (sorted, of
/// `channels`), which must keep as many in each of the `groups` blocks.
fn grouped_weight(
    dense: Tensor,
    positions: &[usize],
    channels: usize,
    groups: usize,
) -> std::result::Result<Tensor, String> {
    let s = channels / groups;
    let mut counts = vec![0usize; groups];
    for &p in positions {
        counts[p / s] += 1;
    }
    let per = positions.len() / groups;
    if counts.iter().any(|&n| n != per) {
        return Err(format!(
            "the kept input channels per group are {counts:?}; a grouped conv needs equal counts"
        ));
    }
    let (m, cols, k) = (
        dense.shape[0],
        dense.shape[1],
        dense.shape[2] * dense.shape[3],
    );
    let mut data = Vec::with_capacity(m * per * k);
    for o in 0..m {
        let b = o / (m / groups);
        let start = (o * cols + b * per) * k;
        data.extend_from_slice(&dense.data[start..start + per * k]);
    }
    Ok(Tensor {
        shape: vec![m, per, dense.shape[2], dense.shape[3]],
        data,
    })
}

/// Sets constant `v` to `tensor` (value and shape).
fn set_const(graph: &mut Graph, v: ValueId, dims: Vec<usize>, data: Vec<f32>) {
    graph.values[v].shape = Shape::fixed(&dims);
    graph.values[v].constant = Some(Constant {
        dims,
        data: ConstData::F32(data),
    });
}

/// Keeps only entries `kept` (sorted) along `axis` of constant `v`.
fn slice_axis(graph: &mut Graph, v: ValueId, axis: usize, kept: &[usize]) -> Result<()> {
    let (dims, data) = const_f32(graph, v)?;
    let dims = dims.to_vec();
    if axis >= dims.len() {
        return Err(Error::InvalidArgument(format!(
            "'{}' of shape {dims:?} has no axis {axis}",
            graph.values[v].name
        )));
    }
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let n = dims[axis];
    let mut out = Vec::with_capacity(outer * kept.len() * inner);
    for o in 0..outer {
        for &k in kept {
            let start = (o * n + k) * inner;
            out.extend_from_slice(&data[start..start + inner]);
        }
    }
    let mut new_dims = dims;
    new_dims[axis] = kept.len();
    set_const(graph, v, new_dims, out);
    Ok(())
}

/// Writes a consumer's new weight (problem layout `(M, C', …)`) back in the node's own layout.
pub(crate) fn set_consumer_weight(
    graph: &mut Graph,
    consumer: &ChannelConsumer,
    form: WeightForm,
    weight: Tensor,
) -> Result<()> {
    let w = graph.nodes[consumer.node].input(1)?;
    let (dims, data) = match form {
        WeightForm::AsIs { scale } => {
            let data = if scale == 1.0 {
                weight.data
            } else {
                weight.data.iter().map(|x| x / scale).collect()
            };
            (weight.shape, data)
        }
        WeightForm::Transposed { scale } => {
            let (m, k) = (weight.shape[0], weight.shape[1..].iter().product::<usize>());
            let t = transpose(&weight.data, m, k);
            let data = if scale == 1.0 {
                t
            } else {
                t.iter().map(|x| x / scale).collect()
            };
            (vec![k, m], data)
        }
    };
    set_const(graph, w, dims, data);
    Ok(())
}

/// Slicings already applied to constants by earlier groups, by constant: `(axis, size before,
/// kept)`. A consumer weight written later from statistics of the unpruned network (the layer
/// variant) still has its full rows; they are sliced again here so that a weight that is both a
/// consumer's (columns) and a producer's (rows) ends with both edits.
#[derive(Default)]
pub(crate) struct Applied {
    sliced: HashMap<ValueId, Vec<(usize, usize, Vec<usize>)>>,
}

/// Reweights every consumer of `group` for `selection` (statistics `stats`, regrouped by
/// `maps`), writes their new weights, and removes the pruned channels from every member of the
/// group. Returns `(residual, total)` summed over the consumers.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply_group(
    graph: &mut Graph,
    group: &ChannelGroup,
    problems: &[(LayerProblem, WeightForm)],
    stats: &[LayerStats],
    maps: &[Option<ConsumerMap>],
    selection: &Selection,
    options: &PruneOptions,
    applied: &mut Applied,
) -> Result<(f64, f64)> {
    let kept = &selection.kept;
    let (mut residual, mut total) = (0.0, 0.0);
    for (i, ((problem, form), st)) in problems.iter().zip(stats).enumerate() {
        let r = consumer_rows(
            st,
            selection,
            options.reweight,
            options.ridge,
            options.dependence_tol,
        )?;
        residual += r.residual;
        total += st.total;
        let (positions, weight) = match maps.get(i).and_then(Option::as_ref) {
            None => (kept.clone(), problem.weight_tensor(kept, &r.weight)),
            Some(map) => {
                // Back from one block per group channel to the consumer's own positions.
                let m = st.outputs;
                let ks = map.columns_per_channel;
                let mut positions = Vec::new();
                let mut rows = Vec::new();
                for (p, first_row) in map.kept_positions(kept) {
                    positions.push(p);
                    rows.extend_from_slice(&r.weight[first_row * m..(first_row + ks) * m]);
                }
                let weight = problem.weight_tensor(&positions, &rows);
                (positions, weight)
            }
        };
        let c = &group.consumers[i];
        let weight = if problem.groups > 1 {
            let channels = problem.layout().channels;
            grouped_weight(weight, &positions, channels, problem.groups)
                .map_err(|e| graph.nodes[c.node].error(e))?
        } else {
            weight
        };
        set_consumer_weight(graph, c, *form, weight)?;
        let w = graph.nodes[c.node].input(1)?;
        if let Some(done) = applied.sliced.get(&w).cloned() {
            for (axis, before, rows) in done {
                if graph.values[w].shape.0.get(axis).map(|d| d.at(1)) == Some(before) {
                    slice_axis(graph, w, axis, &rows)?;
                }
            }
        }
    }
    slice_group(graph, group, kept, applied)?;
    Ok((residual, total))
}

/// A constant input of `node` that only `node` reads (a copy when it is shared), to edit.
fn own_input(graph: &mut Graph, node: usize, slot: usize) -> Result<Option<ValueId>> {
    let Some(v) = graph.nodes[node].inputs.get(slot).copied().flatten() else {
        return Ok(None);
    };
    let readers = graph
        .nodes
        .iter()
        .filter(|n| n.inputs.contains(&Some(v)))
        .count();
    if readers <= 1 {
        return Ok(Some(v));
    }
    let mut copy = graph.values[v].clone();
    copy.name = format!("{}.{}", copy.name, graph.nodes[node].name);
    graph.values.push(copy);
    let id = graph.values.len() - 1;
    graph.nodes[node].inputs[slot] = Some(id);
    Ok(Some(id))
}

/// Sets entries of the int64 constant `v` (an edited copy of its list).
fn set_ints(graph: &mut Graph, v: ValueId, edit: &dyn Fn(&mut Vec<i64>)) -> Result<()> {
    let value = &mut graph.values[v];
    match value.constant.as_mut().map(|c| &mut c.data) {
        Some(ConstData::I64(x)) => {
            edit(x);
            Ok(())
        }
        _ => Err(Error::InvalidArgument(format!(
            "'{}' is not an int64 constant",
            value.name
        ))),
    }
}

/// Removes the pruned channels (`kept`: the group channels kept, sorted) from every member of
/// `group`: the producers' rows and biases and the per-channel constants in between (each by
/// the kept positions of the value it follows), and the attributes that follow the kept count
/// (depthwise `group`, flatten sizes, channel Pad and Slice ranges). The consumers' weights are
/// set by [`set_consumer_weight`].
pub(crate) fn slice_group(
    graph: &mut Graph,
    group: &ChannelGroup,
    kept: &[usize],
    applied: &mut Applied,
) -> Result<()> {
    for p in &group.params {
        let rows = group.kept_positions(p.of, kept);
        let before = graph.values[p.value]
            .shape
            .0
            .get(p.axis)
            .map_or(0, |d| d.at(1));
        slice_axis(graph, p.value, p.axis, &rows)?;
        applied
            .sliced
            .entry(p.value)
            .or_default()
            .push((p.axis, before, rows));
    }
    let count = |value: ValueId, range: std::ops::Range<usize>| {
        group
            .kept_positions(value, kept)
            .iter()
            .filter(|p| range.contains(p))
            .count()
    };
    for edit in &group.edits {
        match *edit {
            ChannelEdit::ChannelSplit {
                node,
                input,
                ref sizes,
            } => {
                // Part k keeps the kept positions of its range.
                let mut start = 0;
                let mut kept_sizes = Vec::with_capacity(sizes.len());
                for &size in sizes {
                    kept_sizes.push(count(input, start..start + size));
                    start += size;
                }
                match &mut graph.nodes[node].op {
                    Op::Split { sizes, .. } => sizes.clone_from(&kept_sizes),
                    _ => return Err(graph.nodes[node].error("expected a channel Split")),
                }
                if let Some(c) = own_input(graph, node, 1)? {
                    let ints: Vec<i64> = kept_sizes.iter().map(|&k| k as i64).collect();
                    set_ints(graph, c, &|x: &mut Vec<i64>| x.clone_from(&ints))?;
                }
            }
            ChannelEdit::Depthwise { node, input } => {
                let n = group.kept_positions(input, kept).len();
                match &mut graph.nodes[node].op {
                    Op::Conv(conv) => conv.group = n,
                    _ => return Err(graph.nodes[node].error("expected a depthwise conv")),
                }
            }
            ChannelEdit::FlattenReshape {
                node,
                input,
                per_channel,
            } => {
                // Reshape(x, (-1, K)): K = channels · H·W, in the op and in its shape constant.
                let k = (group.kept_positions(input, kept).len() * per_channel) as i64;
                let new_shape = vec![-1, k];
                if let Some(s) = own_input(graph, node, 1)? {
                    graph.values[s].shape = Shape::fixed(&[2]);
                    graph.values[s].constant = Some(Constant {
                        dims: vec![2],
                        data: ConstData::I64(new_shape.clone()),
                    });
                }
                match &mut graph.nodes[node].op {
                    Op::Reshape { shape, .. } => *shape = new_shape,
                    _ => return Err(graph.nodes[node].error("expected a flattening Reshape")),
                }
            }
            ChannelEdit::ChannelPad {
                node,
                output,
                before,
                band,
            } => {
                let total = group.positions(output).map_or(0, <[usize]>::len);
                let b = count(output, 0..before) as i64;
                let a = count(output, before + band..total) as i64;
                let rank = match &mut graph.nodes[node].op {
                    Op::Pad { pads, .. } => {
                        let rank = pads.len() / 2;
                        pads[1] = b;
                        pads[rank + 1] = a;
                        rank
                    }
                    _ => return Err(graph.nodes[node].error("expected a channel Pad")),
                };
                if graph.nodes[node].inputs.get(3).copied().flatten().is_some() {
                    return Err(graph.nodes[node].error("a channel Pad with an axes input"));
                }
                if let Some(s) = own_input(graph, node, 1)? {
                    set_ints(graph, s, &|x: &mut Vec<i64>| {
                        x[1] = b;
                        x[rank + 1] = a;
                    })?;
                }
            }
            ChannelEdit::ChannelReshape {
                node,
                input,
                ref input_axes,
                output,
                ref output_axes,
            } => {
                let named = |v: ValueId| graph.values[v].name.clone();
                let reshape = graph.nodes[node].name.clone();
                product_sizes(
                    &group.kept_positions(input, kept),
                    input_axes,
                    &named(input),
                    &reshape,
                )?;
                let sizes = product_sizes(
                    &group.kept_positions(output, kept),
                    output_axes,
                    &named(output),
                    &reshape,
                )?;
                let set = |shape: &mut Vec<i64>| {
                    for (i, &n) in sizes.iter().enumerate() {
                        if let Some(x) = shape.get_mut(1 + i) {
                            *x = n as i64;
                        }
                    }
                };
                match &mut graph.nodes[node].op {
                    Op::Reshape { shape, .. } if shape.len() > sizes.len() => set(shape),
                    _ => return Err(graph.nodes[node].error("expected a channel Reshape")),
                }
                if let Some(c) = own_input(graph, node, 1)? {
                    set_ints(graph, c, &set)?;
                }
            }
            ChannelEdit::ChannelSlice {
                node,
                input,
                start,
                len,
            } => {
                let s = count(input, 0..start) as i64;
                let e = s + count(input, start..start + len) as i64;
                let k = match &mut graph.nodes[node].op {
                    Op::Slice {
                        starts, ends, axes, ..
                    } => {
                        let k = axes.iter().position(|&a| a == 1).ok_or_else(|| {
                            Error::InvalidArgument("expected a channel Slice".into())
                        })?;
                        starts[k] = s;
                        ends[k] = e;
                        k
                    }
                    _ => return Err(graph.nodes[node].error("expected a channel Slice")),
                };
                for (slot, value) in [(1, s), (2, e)] {
                    if let Some(c) = own_input(graph, node, slot)? {
                        set_ints(graph, c, &|x: &mut Vec<i64>| x[k] = value)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The kept count along each channel sub-axis `axes` of a value whose kept positions (row-major
/// over `axes`) are `kept`, or an error when they are not a product set (a kept index set per
/// sub-axis), which the Reshape `node` could not express.
fn product_sizes(kept: &[usize], axes: &[usize], value: &str, node: &str) -> Result<Vec<usize>> {
    let mut seen: Vec<Vec<bool>> = axes.iter().map(|&n| vec![false; n]).collect();
    for &p in kept {
        let mut rest = p;
        for (a, &n) in axes.iter().enumerate().rev() {
            seen[a][rest % n.max(1)] = true;
            rest /= n.max(1);
        }
    }
    let sizes: Vec<usize> = seen
        .iter()
        .map(|s| s.iter().filter(|&&x| x).count())
        .collect();
    if sizes.iter().product::<usize>() != kept.len() {
        return Err(Error::InvalidArgument(format!(
            "Reshape '{node}': the kept channels of '{value}' are not a product set over its              channel axes {axes:?} (kept along each axis: {sizes:?}, {} kept in all), so the              Reshape's shape cannot name them",
            kept.len()
        )));
    }
    Ok(sizes)
}

/// Re-infers shapes after edits, naming the node that no longer fits.
pub(crate) fn reshape(graph: &mut Graph) -> Result<()> {
    graph.infer_shapes()
}

#[cfg(test)]
mod tests {
    use super::product_sizes;

    #[test]
    fn a_kept_product_set_gives_its_sizes_and_another_set_is_refused_by_name() {
        // (4, 6) sub-axes: all 4 blocks × offsets {1, 4}.
        let kept: Vec<usize> = (0..4).flat_map(|b| [b * 6 + 1, b * 6 + 4]).collect();
        assert_eq!(product_sizes(&kept, &[4, 6], "v", "R").unwrap(), [4, 2]);
        assert_eq!(product_sizes(&kept, &[24], "v", "R").unwrap(), [8]);
        // Block 0 keeps offset 1, the others offset 4: not a product.
        let kept = [1, 10, 16, 22];
        let e = product_sizes(&kept, &[4, 6], "v", "R")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Reshape 'R'") && e.contains("'v'"), "{e}");
    }
}
