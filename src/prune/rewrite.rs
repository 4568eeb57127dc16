//! Keep sets → edits of the IR: the producer's output rows and bias, the per-channel constants in
//! between (BatchNorm entries, per-channel scales), and the consumers' weights replaced by `W~`.
//! Everything else is left as it is; shapes are re-inferred afterwards.

use crate::analysis::channels::{ChannelConsumer, PrunableLayer};
use crate::error::{Error, Result};
use crate::ir::{ConstData, Constant, Graph, Op, Shape, ValueId};
use crate::layer::{ConvOptions, LayerProblem};
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
            (
                Tensor::new(dims.to_vec(), data.to_vec())?,
                WeightForm::AsIs { scale: 1.0 },
                Some(opts),
            )
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
    let problem = LayerProblem::new(&input_shape, weight.view(), conv)
        .map_err(|e| node.error(format!("as the consumer of a pruned layer: {e}")))?;
    Ok((problem, form))
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

/// Removes the pruned output channels of `layer` from its producer and the per-channel constants
/// in between (not the consumers: their weights are set by [`set_consumer_weight`]).
pub(crate) fn slice_producer(
    graph: &mut Graph,
    layer: &PrunableLayer,
    kept: &[usize],
) -> Result<()> {
    for p in &layer.params {
        slice_axis(graph, p.value, p.axis, kept)?;
    }
    for &r in &layer.flatten_reshapes {
        // Reshape(x, (-1, K)): K = channels · H·W, in the op and in its shape constant.
        let node = &graph.nodes[r];
        let (Op::Reshape { shape, .. }, Some(Some(s))) = (&node.op, node.inputs.get(1)) else {
            return Err(node.error("expected the flattening Reshape it was analysed as"));
        };
        let per_channel = shape[1] / layer.channels as i64;
        let new_shape = vec![-1, per_channel * kept.len() as i64];
        let s = *s;
        graph.values[s].shape = Shape::fixed(&[2]);
        graph.values[s].constant = Some(Constant {
            dims: vec![2],
            data: ConstData::I64(new_shape.clone()),
        });
        if let Op::Reshape { shape, .. } = &mut graph.nodes[r].op {
            *shape = new_shape;
        }
    }
    for &d in &layer.depthwise {
        match &mut graph.nodes[d].op {
            Op::Conv(conv) => conv.group = kept.len(),
            _ => return Err(graph.nodes[d].error("expected the depthwise conv it was analysed as")),
        }
    }
    Ok(())
}

/// Re-infers shapes after edits, naming the node that no longer fits.
pub(crate) fn reshape(graph: &mut Graph) -> Result<()> {
    graph.infer_shapes()
}
