//! The CPU executor: prepares each node's parameters once (BatchNorm folded to a per-channel
//! affine, window geometry resolved), then runs batches through [`super::kernels`].

use std::collections::HashSet;

use super::kernels::{self, Geometry};
use super::kernels_nchw as nchw;
use super::{Activation, Executor, Plan, TapSink};
use crate::error::{Error, Result};
use crate::ir::{shape, Node, Op, ReduceKind, Shape, ValueId};
use crate::tensor::{Tensor, TensorView};

/// What a node needs beyond its op, computed once.
#[derive(Clone, Debug)]
enum Prepared {
    None,
    /// BatchNorm as `x · scale + shift` per channel.
    Affine {
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
}

/// Runs a plan on the CPU (rayon threads; `RAYON_NUM_THREADS` limits them).
#[derive(Clone, Debug)]
pub struct CpuExecutor {
    plan: Plan,
    prepared: Vec<Prepared>,
}

impl CpuExecutor {
    /// Plans `graph` and prepares every node; an unsupported configuration is an error naming
    /// the node.
    pub fn new(graph: &crate::ir::Graph) -> Result<Self> {
        let plan = Plan::new(graph)?;
        let g = &plan.graph;
        let mut prepared = vec![Prepared::None; g.nodes.len()];
        for step in &plan.steps {
            let node = &g.nodes[step.node];
            // Parameters that must be constants for the kernels here.
            let float_const = |i: usize, what: &str| float_param(g, node, i, what);
            match &node.op {
                Op::Conv(_) | Op::ConvTranspose(_) => {
                    float_const(1, "the weight")?;
                    if node.inputs.get(2).copied().flatten().is_some() {
                        float_const(2, "the bias")?;
                    }
                }
                Op::BatchNorm { epsilon } => {
                    let (scale, shift) = batch_norm_affine(g, node, *epsilon)?;
                    prepared[step.node] = Prepared::Affine { scale, shift };
                }
                Op::MatMul => {
                    let b = &g.values[node.input(1)?].shape;
                    if b.rank() != 2 || b.as_fixed().is_none() {
                        return Err(node.error(format!(
                            "only a fixed 2-D right operand is supported, got {b}"
                        )));
                    }
                }
                Op::Gemm(gm) => {
                    if gm.trans_a {
                        return Err(node.error("transA = 1 is not supported"));
                    }
                    let b = &g.values[node.input(1)?].shape;
                    if b.as_fixed().is_none() {
                        return Err(node.error(format!("B {b} must have a fixed shape")));
                    }
                }
                Op::Binary(_) | Op::Concat { .. } | Op::Nary(_) => {
                    for id in node.inputs.iter().flatten() {
                        if let Some(c) = g.constant(*id) {
                            if c.f32().is_none() {
                                return Err(node.error(format!(
                                    "input '{}' is an integer constant; float data is needed",
                                    g.values[*id].name
                                )));
                            }
                        }
                    }
                }
                _ => {}
            }
            for id in node.inputs.iter().take(1).flatten() {
                if matches!(g.constant(*id).map(|c| c.f32().is_none()), Some(true)) {
                    return Err(node.error("its data input is an integer constant"));
                }
            }
        }
        Ok(Self { plan, prepared })
    }
}

/// Activation storage of one batch.
struct Values<'p> {
    plan: &'p Plan,
    n: usize,
    live: Vec<Option<Tensor>>,
}

impl<'p> Values<'p> {
    fn get(&self, node: &Node, id: ValueId) -> Result<TensorView<'_>> {
        let v = &self.plan.graph.values[id];
        if let Some(c) = &v.constant {
            let data = c
                .f32()
                .ok_or_else(|| node.error(format!("input '{}' is not float data", v.name)))?;
            return TensorView::new(&c.dims, data);
        }
        self.live[id]
            .as_ref()
            .map(|t| t.view())
            .ok_or_else(|| node.error(format!("input '{}' was not computed", v.name)))
    }

    fn input(&self, node: &Node, i: usize) -> Result<TensorView<'_>> {
        self.get(node, node.input(i)?)
    }

    fn optional(&self, node: &Node, i: usize) -> Result<Option<TensorView<'_>>> {
        match node.inputs.get(i).copied().flatten() {
            None => Ok(None),
            Some(id) => self.get(node, id).map(Some),
        }
    }
}

fn geometry(
    node: &Node,
    window: &crate::ir::Window,
    x: &[usize],
) -> Result<(Geometry, [usize; 2])> {
    let (pads, output) = window
        .resolve(x[2], x[3])
        .map_err(|reason| node.error(reason))?;
    Ok((
        Geometry {
            input: [x[2], x[3]],
            output,
            kernel: window.kernel,
            strides: window.strides,
            dilations: window.dilations,
            pad_begin: [pads[0], pads[1]],
        },
        [pads[2], pads[3]],
    ))
}

impl CpuExecutor {
    /// The concrete output shape of a node for this batch, by the IR's inference rules.
    fn output_shape(&self, node: &Node, vals: &Values<'_>) -> Result<Vec<usize>> {
        let g = &self.plan.graph;
        let in_shapes: Vec<Option<Shape>> = node
            .inputs
            .iter()
            .map(|i| -> Result<Option<Shape>> {
                match i {
                    None => Ok(None),
                    Some(id) => Ok(Some(match g.constant(*id) {
                        Some(c) => Shape::fixed(&c.dims),
                        None => Shape::fixed(vals.get(node, *id)?.shape),
                    })),
                }
            })
            .collect::<Result<_>>()?;
        Ok(shape::infer(&node.op, &in_shapes)
            .map_err(|r| node.error(r))?
            .at(vals.n))
    }

    /// Whether a node can overwrite its data input (an element-wise op or a reshape whose input
    /// dies here): saves an allocation and a pass over memory.
    fn in_place(&self, step: &super::plan::Step, vals: &Values<'_>) -> Option<ValueId> {
        let node = &self.plan.graph.nodes[step.node];
        let first = node.inputs.first().copied().flatten()?;
        let elementwise = matches!(
            node.op,
            Op::Unary(_)
                | Op::BatchNorm { .. }
                | Op::Identity
                | Op::Flatten { .. }
                | Op::Reshape { .. }
        );
        (elementwise && step.free_after.contains(&first) && vals.live[first].is_some())
            .then_some(first)
    }

    /// Runs an [`Self::in_place`] node on its input tensor `t`, reshaped to `out_shape`.
    fn run_in_place(
        &self,
        node_index: usize,
        mut t: Tensor,
        out_shape: Vec<usize>,
    ) -> Result<Tensor> {
        let node = &self.plan.graph.nodes[node_index];
        match &node.op {
            Op::Unary(u) => kernels::unary_in_place(&mut t.data, *u),
            Op::BatchNorm { .. } => {
                let Prepared::Affine { scale, shift } = &self.prepared[node_index] else {
                    return Err(node.error("not prepared"));
                };
                let inner: usize = t.shape[2..].iter().product();
                kernels::channel_affine_in_place(&mut t.data, t.shape[1], inner, scale, shift);
            }
            _ => {}
        }
        Tensor::new(out_shape, t.data)
    }

    fn run_node(&self, node_index: usize, vals: &Values<'_>) -> Result<Tensor> {
        let g = &self.plan.graph;
        let node = &g.nodes[node_index];
        let out_shape = self.output_shape(node, vals)?;
        let count: usize = out_shape.iter().product();
        let mut out = vec![0.0f32; count];
        let x = vals.input(node, 0)?;
        match &node.op {
            Op::Conv(conv) => {
                let w = vals.input(node, 1)?;
                let bias = vals.optional(node, 2)?;
                let (geo, _) = geometry(node, &conv.window, x.shape)?;
                kernels::conv2d(
                    x.data,
                    x.shape[0],
                    x.shape[1],
                    w.data,
                    bias.map(|b| b.data),
                    w.shape[0],
                    conv.group,
                    &geo,
                    &mut out,
                )?;
            }
            Op::Pool { kind, window } => {
                let (geo, pad_end) = geometry(node, window, x.shape)?;
                kernels::pool(x.data, *kind, &geo, pad_end, &mut out);
            }
            Op::GlobalAveragePool => {
                let len: usize = x.shape[2..].iter().product();
                kernels::global_average(x.data, len, &mut out);
            }
            Op::BatchNorm { .. } => {
                let Prepared::Affine { scale, shift } = &self.prepared[node_index] else {
                    return Err(node.error("not prepared"));
                };
                let inner: usize = x.shape[2..].iter().product();
                kernels::channel_affine(x.data, x.shape[1], inner, scale, shift, &mut out);
            }
            Op::Gemm(gm) => {
                use crate::linalg::gemm::{gemm, MatMut, MatRef, Par};
                let b = vals.input(node, 1)?;
                let (rows, k) = (x.shape[0], x.shape[1]);
                let cols = out_shape[1];
                let lhs = MatRef::row_major(x.data, rows, k)?;
                let rhs = if gm.trans_b {
                    MatRef::row_major(b.data, cols, k)?.t()
                } else {
                    MatRef::row_major(b.data, k, cols)?
                };
                let mut accumulate = false;
                if let Some(c) = vals.optional(node, 2)? {
                    if gm.beta != 0.0 {
                        kernels::binary(
                            crate::ir::Binary::Add,
                            &vec![0.0; count],
                            &out_shape,
                            c.data,
                            c.shape,
                            &out_shape,
                            &mut out,
                        );
                        if gm.beta != 1.0 {
                            out.iter_mut().for_each(|v| *v *= gm.beta);
                        }
                        accumulate = true;
                    }
                }
                gemm(
                    MatMut::row_major(&mut out, rows, cols)?,
                    accumulate,
                    lhs,
                    rhs,
                    gm.alpha,
                    Par::all(),
                )?;
            }
            Op::MatMul => {
                use crate::linalg::gemm::{gemm, MatMut, MatRef, Par};
                let b = vals.input(node, 1)?;
                let k = *x.shape.last().expect("rank ≥ 2");
                let rows = x.data.len() / k.max(1);
                let cols = b.shape[1];
                gemm(
                    MatMut::row_major(&mut out, rows, cols)?,
                    false,
                    MatRef::row_major(x.data, rows, k)?,
                    MatRef::row_major(b.data, k, cols)?,
                    1.0,
                    Par::all(),
                )?;
            }
            Op::Unary(u) => kernels::unary(x.data, *u, &mut out),
            Op::Binary(b) => {
                let y = vals.input(node, 1)?;
                kernels::binary(*b, x.data, x.shape, y.data, y.shape, &out_shape, &mut out);
            }
            Op::Flatten { .. } | Op::Reshape { .. } | Op::Identity => {
                out.copy_from_slice(x.data);
            }
            Op::Concat { axis } => {
                let outer: usize = out_shape[..*axis].iter().product();
                let mut offset = 0;
                let out_row: usize = out_shape[*axis..].iter().product();
                for i in 0..node.inputs.len() {
                    let part = vals.input(node, i)?;
                    let row: usize = part.shape[*axis..].iter().product();
                    for o in 0..outer {
                        out[o * out_row + offset..o * out_row + offset + row]
                            .copy_from_slice(&part.data[o * row..(o + 1) * row]);
                    }
                    offset += row;
                }
            }
            Op::Slice {
                starts,
                ends,
                axes,
                steps,
            } => {
                let st = kernels::strides(x.shape);
                let mut step: Vec<isize> = st.iter().map(|&s| s as isize).collect();
                let mut offset = 0isize;
                for (i, &a) in axes.iter().enumerate() {
                    let (first, _) = shape::slice_range(x.shape[a], starts[i], ends[i], steps[i]);
                    offset += first as isize * st[a] as isize;
                    step[a] = steps[i] as isize * st[a] as isize;
                }
                if count > 0 {
                    kernels::strided_gather(x.data, offset, &step, &out_shape, &mut out);
                }
            }
            Op::Pad { mode, pads, value } => {
                kernels::pad(x.data, x.shape, pads, *mode, *value, &out_shape, &mut out);
            }
            Op::Softmax { axis, coerce_2d } => {
                let outer: usize = x.shape[..*axis].iter().product();
                let (len, inner) = if *coerce_2d {
                    (x.shape[*axis..].iter().product(), 1)
                } else {
                    (x.shape[*axis], x.shape[*axis + 1..].iter().product())
                };
                kernels::softmax(x.data, outer, len, inner, &mut out);
            }
            Op::Gather { axis, indices, .. } => {
                let inner: usize = x.shape[axis + 1..].iter().product();
                let (len, n) = (x.shape[*axis], indices.len());
                for (row, o) in out
                    .chunks_mut(inner.max(1))
                    .enumerate()
                    .take(count / inner.max(1))
                {
                    let (outer, k) = (row / n, row % n);
                    let at = (outer * len + indices[k]) * inner;
                    o.copy_from_slice(&x.data[at..at + inner]);
                }
            }
            Op::Expand { .. } => {
                let st = kernels::strides(x.shape);
                let lead = out_shape.len() - x.shape.len();
                let step: Vec<isize> = (0..out_shape.len())
                    .map(|a| match a.checked_sub(lead) {
                        Some(i) if x.shape[i] != 1 => st[i] as isize,
                        _ => 0,
                    })
                    .collect();
                if count > 0 {
                    kernels::strided_gather(x.data, 0, &step, &out_shape, &mut out);
                }
            }
            Op::Transpose { perm } => {
                let st = kernels::strides(x.shape);
                let step: Vec<isize> = perm.iter().map(|&p| st[p] as isize).collect();
                if count > 0 {
                    kernels::strided_gather(x.data, 0, &step, &out_shape, &mut out);
                }
            }
            Op::Resize(r) => {
                let planes = x.shape[0] * x.shape[1];
                nchw::resize(x.data, planes, [x.shape[2], x.shape[3]], r, &mut out);
            }
            Op::ConvTranspose(ct) => {
                let (w, bias) = (vals.input(node, 1)?, vals.optional(node, 2)?);
                nchw::conv_transpose(
                    x.data,
                    x.shape[1],
                    [x.shape[2], x.shape[3]],
                    w.data,
                    bias.map(|b| b.data),
                    out_shape[1],
                    ct,
                    [out_shape[2], out_shape[3]],
                    &mut out,
                );
            }
            Op::Lrn(lrn) => {
                let inner: usize = x.shape[2..].iter().product();
                nchw::lrn(x.data, x.shape[1], inner, lrn, &mut out);
            }
            Op::Reduce { kind, axes, .. } => {
                let (first, last) = (axes[0], axes[axes.len() - 1]);
                let len: usize = x.shape[first..=last].iter().product();
                let inner: usize = x.shape[last + 1..].iter().product();
                nchw::reduce(x.data, *kind, len, inner, &mut out);
            }
            Op::GlobalMaxPool => {
                let len: usize = x.shape[2..].iter().product();
                nchw::reduce(x.data, ReduceKind::Max, len, 1, &mut out);
            }
            Op::Split { .. } | Op::Nary(_) => {
                return Err(node.error("not lowered by the plan (a Split or an n-ary op)"))
            }
            Op::Constant => return Err(node.error("a Constant is not run")),
        }
        Tensor::new(out_shape, out)
    }
}

impl Executor for CpuExecutor {
    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn plan(&self) -> &Plan {
        &self.plan
    }

    fn run_batch(
        &self,
        input: TensorView<'_>,
        taps: &[ValueId],
        on_tap: &mut TapSink<'_>,
    ) -> Result<Vec<Tensor>> {
        let g = &self.plan.graph;
        self.plan.check_batch(&input)?;
        let n = input.shape.first().copied().unwrap_or(0);
        let taps: HashSet<ValueId> = taps.iter().copied().collect();
        let mut vals = Values {
            plan: &self.plan,
            n,
            live: vec![None; g.values.len()],
        };
        vals.live[self.plan.input] = Some(Tensor::new(input.shape.to_vec(), input.data.to_vec())?);
        if taps.contains(&self.plan.input) {
            on_tap(self.plan.input, Activation::Host(input))?;
        }
        for step in &self.plan.steps {
            let node = &g.nodes[step.node];
            let out = match self.in_place(step, &vals) {
                Some(input) => {
                    let out_shape = self
                        .output_shape(node, &vals)
                        .map_err(|e| node.context(e))?;
                    let t = vals.live[input].take().expect("checked live");
                    self.run_in_place(step.node, t, out_shape)
                }
                None => self.run_node(step.node, &vals),
            }
            .map_err(|e| node.context(e))?;
            let id = g.nodes[step.node].outputs[0];
            if taps.contains(&id) {
                on_tap(id, Activation::Host(out.view()))?;
            }
            vals.live[id] = Some(out);
            for &dead in &step.free_after {
                vals.live[dead] = None;
            }
        }
        // Outputs are moved out (an output listed twice is copied for all but its last use).
        g.outputs
            .iter()
            .enumerate()
            .map(|(i, &o)| match (&mut vals.live[o], g.constant(o)) {
                (Some(t), _) if g.outputs[i + 1..].contains(&o) => Ok(t.clone()),
                (t @ Some(_), _) => Ok(t.take().expect("matched Some")),
                (None, Some(c)) => Tensor::new(c.dims.clone(), c.f32().unwrap_or(&[]).to_vec()),
                (None, None) => Err(Error::InvalidArgument(format!(
                    "graph output '{}' was not computed",
                    g.values[o].name
                ))),
            })
            .collect()
    }
}

/// BatchNorm as `x · scale + shift` per channel, in f64 rounded once (the affine map onnxruntime
/// applies; both executors prepare it here).
pub(super) fn batch_norm_affine(
    g: &crate::ir::Graph,
    node: &Node,
    epsilon: f32,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let float_const = |i: usize, what: &str| float_param(g, node, i, what);
    let (gamma, beta) = (float_const(1, "scale")?, float_const(2, "B")?);
    let (mean, var) = (float_const(3, "mean")?, float_const(4, "var")?);
    // In f64, rounded once: the same affine map onnxruntime applies.
    let scale: Vec<f32> = gamma
        .iter()
        .zip(&var)
        .map(|(&g, &v)| (g as f64 / (v as f64 + epsilon as f64).sqrt()) as f32)
        .collect();
    let shift = beta
        .iter()
        .zip(&mean)
        .zip(&scale)
        .map(|((&b, &m), &s)| b - m * s)
        .collect();
    Ok((scale, shift))
}

/// Input `i` of `node`, a float constant (`what` names it in the error).
fn float_param(g: &crate::ir::Graph, node: &Node, i: usize, what: &str) -> Result<Vec<f32>> {
    let id = node.input(i)?;
    g.constant(id)
        .and_then(|c| c.f32())
        .map(|d| d.to_vec())
        .ok_or_else(|| node.error(format!("{what} must be a float constant")))
}
