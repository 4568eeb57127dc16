//! The model IR: a graph of typed ops over named values, in topological order, with shapes
//! inferred from the input shape (symbolic batch). It knows neither the file format it came from
//! ([`crate::onnx`]) nor the backend that runs it ([`crate::exec`]).

pub mod op;
pub mod shape;
mod shape_ops;

use std::collections::HashMap;

pub use op::{
    Binary, Conv, ConvTranspose, CoordMode, Gemm, Lrn, Nary, NearestRounding, Op, PadMode, Padding,
    PoolKind, ReduceKind, Resize, ResizeMode, Unary, Window,
};
pub use shape::{Dim, Shape};

use crate::error::{Error, Result};

/// Index of a value in [`Graph::values`].
pub type ValueId = usize;

/// Element types of constants.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstData {
    /// 32-bit floats (weights, biases, bounds).
    F32(Vec<f32>),
    /// 64-bit integers (shapes, slice ranges, pads).
    I64(Vec<i64>),
}

/// A constant tensor: an initializer or the value of a `Constant` node.
#[derive(Clone, Debug, PartialEq)]
pub struct Constant {
    /// Dimensions (empty for a scalar).
    pub dims: Vec<usize>,
    /// Row-major values.
    pub data: ConstData,
}

impl Constant {
    /// The f32 values, or `None` for an integer constant.
    pub fn f32(&self) -> Option<&[f32]> {
        match &self.data {
            ConstData::F32(v) => Some(v),
            ConstData::I64(_) => None,
        }
    }

    /// The values as i64, or `None` for a float constant.
    pub fn i64(&self) -> Option<&[i64]> {
        match &self.data {
            ConstData::I64(v) => Some(v),
            ConstData::F32(_) => None,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            ConstData::F32(v) => v.len(),
            ConstData::I64(v) => v.len(),
        }
    }

    /// Whether it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A named value: a graph input, an initializer, or a node output.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    /// Its name in the model.
    pub name: String,
    /// Its shape, with a symbolic batch.
    pub shape: Shape,
    /// Its value when known before a run (initializers, `Constant` outputs).
    pub constant: Option<Constant>,
    /// Whether it is an initializer (stored in the model's weights rather than made by a node).
    pub initializer: bool,
}

/// One operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Its name (or `#index` when the model gives none), used in every error about it.
    pub name: String,
    /// What it computes.
    pub op: Op,
    /// Input values in order; `None` for an omitted optional input.
    pub inputs: Vec<Option<ValueId>>,
    /// Output values (one computed per Split part, else only the first; others must be unused).
    pub outputs: Vec<ValueId>,
}

impl Node {
    /// An error about this node.
    pub fn error(&self, reason: impl Into<String>) -> Error {
        Error::Node {
            node: self.name.clone(),
            op: self.op.kind().to_string(),
            reason: reason.into(),
        }
    }

    /// `error` with this node named in front, unless it already names it (an [`Error::Node`]
    /// about this node): for failures met while running or shaping the node.
    pub fn context(&self, error: Error) -> Error {
        match &error {
            Error::Node { node, .. } if *node == self.name => error,
            _ => error.context(format!("node '{}' ({})", self.name, self.op.kind())),
        }
    }

    /// How many outputs the op computes (several for a Split; the extra outputs of other ops,
    /// MaxPool indices, Dropout masks, are not computed).
    pub fn computed_outputs(&self) -> usize {
        match &self.op {
            Op::Split { sizes, .. } => sizes.len(),
            _ => 1,
        }
    }

    /// Stores `shapes` (from [`shape::infer_all`]) on this node's outputs, or names a Split
    /// whose parts do not match its outputs.
    pub fn set_output_shapes(&self, values: &mut [Value], shapes: Vec<Shape>) -> Result<()> {
        if shapes.len() != self.computed_outputs() || self.outputs.len() < shapes.len() {
            return Err(self.error(format!(
                "it computes {} outputs, the model gives it {}",
                shapes.len(),
                self.outputs.len()
            )));
        }
        for (&o, s) in self.outputs.iter().zip(shapes) {
            values[o].shape = s;
        }
        Ok(())
    }

    /// The value id of input `i`, or an error naming the node.
    pub fn input(&self, i: usize) -> Result<ValueId> {
        self.inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| self.error(format!("input {i} is missing")))
    }
}

/// A model: values, nodes in topological order, graph inputs and outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    /// All values.
    pub values: Vec<Value>,
    /// Nodes, each after the producers of its inputs.
    pub nodes: Vec<Node>,
    /// The graph inputs fed at run time (not initializers).
    pub inputs: Vec<ValueId>,
    /// The graph outputs.
    pub outputs: Vec<ValueId>,
}

impl Graph {
    /// The value named `name`.
    pub fn value_id(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name)
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The constant value of `id`, if it has one.
    pub fn constant(&self, id: ValueId) -> Option<&Constant> {
        self.values[id].constant.as_ref()
    }

    /// For each value, the nodes that read it (in node order).
    pub fn consumers(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.values.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            for id in node.inputs.iter().flatten() {
                if out[*id].last() != Some(&i) {
                    out[*id].push(i);
                }
            }
        }
        out
    }

    /// For each value, the node that produces it (`None` for inputs and initializers).
    pub fn producers(&self) -> Vec<Option<usize>> {
        let mut out = vec![None; self.values.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            for &id in &node.outputs {
                out[id] = Some(i);
            }
        }
        out
    }

    /// Reorders `nodes` topologically (stable: keeps the given order where it is already valid),
    /// or names a node that takes part in a cycle or reads a value nobody produces.
    pub fn sort_topologically(&mut self) -> Result<()> {
        let producers = self.producers();
        let order = topological_order(self.nodes.len(), |i| {
            self.nodes[i]
                .inputs
                .iter()
                .flatten()
                .map(|&v| producers[v])
                .collect()
        })
        .map_err(|stuck| {
            self.nodes[stuck].error(
                "its inputs are never computed (a cycle in the graph, or an undefined input)",
            )
        })?;
        let mut old: Vec<Option<Node>> = std::mem::take(&mut self.nodes)
            .into_iter()
            .map(Some)
            .collect();
        self.nodes = order
            .into_iter()
            .map(|i| old[i].take().expect("each node once"))
            .collect();
        Ok(())
    }

    /// Infers every node output's shape from the graph inputs' shapes (in topological order),
    /// checking that the graph is valid; errors name the node.
    pub fn infer_shapes(&mut self) -> Result<()> {
        for n in 0..self.nodes.len() {
            let node = &self.nodes[n];
            if node.op == Op::Constant {
                continue;
            }
            let shapes: Vec<Option<Shape>> = node
                .inputs
                .iter()
                .map(|i| i.map(|v| self.values[v].shape.clone()))
                .collect();
            let outs = shape::infer_all(&node.op, &shapes).map_err(|reason| node.error(reason))?;
            node.set_output_shapes(&mut self.values, outs)?;
        }
        Ok(())
    }

    /// The shape of `node`'s output, inferred from its inputs' shapes in this graph; errors name
    /// the node.
    pub fn output_shape(&self, node: &Node) -> Result<Shape> {
        let shapes: Vec<Option<Shape>> = node
            .inputs
            .iter()
            .map(|i| i.map(|v| self.values[v].shape.clone()))
            .collect();
        shape::infer(&node.op, &shapes).map_err(|reason| node.error(reason))
    }

    /// Checks that every node's extra outputs (MaxPool indices, Dropout mask, BatchNorm running
    /// statistics) are unused, since only the first output is computed.
    pub fn check_single_outputs(&self) -> Result<()> {
        let consumers = self.consumers();
        for node in &self.nodes {
            for &extra in node.outputs.iter().skip(node.computed_outputs()) {
                if !consumers[extra].is_empty() || self.outputs.contains(&extra) {
                    return Err(node.error(format!(
                        "output '{}' is used, but only the first output of this op is supported",
                        self.values[extra].name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Number of parameters: the elements of the float initializers and float `Constant`s that a
    /// node reads or the graph outputs (a constant read only by nodes folded at load, such as
    /// the initializer of a folded `Transpose`, counts once, as the folded value).
    pub fn parameter_count(&self) -> usize {
        let consumers = self.consumers();
        self.values
            .iter()
            .enumerate()
            .filter(|(id, _)| !consumers[*id].is_empty() || self.outputs.contains(id))
            .filter_map(|(_, v)| v.constant.as_ref())
            .filter_map(|c| c.f32())
            .map(|d| d.len())
            .sum()
    }

    /// Multiply-accumulates per image of each node (conv, gemm, matmul); other ops count 0.
    /// Saturates rather than wraps; a loaded graph's counts fit ([`Graph::flops_per_image`]).
    pub fn macs_per_image(&self, node: &Node) -> u64 {
        self.checked_macs_per_image(node).unwrap_or(u64::MAX)
    }

    /// [`Graph::macs_per_image`], or an error naming the node when the count overflows `u64`.
    pub fn checked_macs_per_image(&self, node: &Node) -> Result<u64> {
        let out = &self.values[node.outputs[0]].shape;
        let shape = |i: usize| {
            node.inputs
                .get(i)
                .copied()
                .flatten()
                .map(|v| &self.values[v].shape)
        };
        let per_output: u64 = match &node.op {
            Op::Conv(_) => shape(1)
                .map(|w| {
                    w.0.iter()
                        .skip(1)
                        .try_fold(1u64, |a, d| a.checked_mul(d.at(1) as u64))
                })
                .unwrap_or(Some(0))
                .ok_or_else(|| node.error("the weight's size overflows"))?,
            Op::Gemm(g) => shape(0)
                .and_then(|a| a.0.get(if g.trans_a { 0 } else { 1 }))
                .map_or(0, |d| d.at(1) as u64),
            Op::MatMul => shape(0)
                .and_then(|a| a.0.last())
                .map_or(0, |d| d.at(1) as u64),
            _ => return Ok(0),
        };
        (out.per_batch_item() as u64)
            .checked_mul(per_output)
            .ok_or_else(|| {
                node.error(format!(
                    "its multiply-accumulates per image overflow: output {out} × {per_output} per value"
                ))
            })
    }

    /// FLOPs per image (2 × the multiply-accumulates of every node), or an error naming the node
    /// where the count overflows `u64`: checked once at load, so that every count after fits.
    pub fn flops_per_image(&self) -> Result<u64> {
        let mut total = 0u64;
        for node in &self.nodes {
            total = self
                .checked_macs_per_image(node)?
                .checked_mul(2)
                .and_then(|f| total.checked_add(f))
                .ok_or_else(|| {
                    node.error("the model's FLOPs per image overflow a 64-bit count here")
                })?;
        }
        Ok(total)
    }

    /// A map from value name to id.
    pub fn names(&self) -> HashMap<&str, ValueId> {
        self.values
            .iter()
            .enumerate()
            .map(|(i, v)| (v.name.as_str(), i))
            .collect()
    }
}

/// A topological order of `count` nodes, where `producers(i)` lists, per input of node `i`, the
/// node that produces it (`None` for a graph input or constant). Stable: the smallest ready index
/// goes first, so an order that is already valid is kept. Time `O(E log n)` for `E` inputs (Kahn's
/// algorithm with a min-heap), so graphs of 100k nodes sort in milliseconds whatever the file's
/// order. `Err(i)`: node `i` (the first in the given order) can never run, because it depends on
/// its own output through a cycle.
pub fn topological_order(
    count: usize,
    producers: impl Fn(usize) -> Vec<Option<usize>>,
) -> std::result::Result<Vec<usize>, usize> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut waiting = vec![0usize; count];
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (i, wait) in waiting.iter_mut().enumerate() {
        for p in producers(i).into_iter().flatten() {
            *wait += 1;
            readers[p].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..count)
        .filter(|&i| waiting[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(count);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &r in &readers[i] {
            waiting[r] -= 1;
            if waiting[r] == 0 {
                ready.push(Reverse(r));
            }
        }
    }
    if order.len() < count {
        return Err(waiting
            .iter()
            .position(|&w| w > 0)
            .expect("an unplaced node"));
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topological_order_is_stable_and_finds_cycles() {
        // 0 ← 2, 1 ← 0: the valid order 2, 0, 1; a sorted input keeps its order.
        let deps = [vec![Some(2)], vec![Some(0), None], vec![]];
        assert_eq!(topological_order(3, |i| deps[i].clone()), Ok(vec![2, 0, 1]));
        let sorted = [vec![], vec![Some(0)], vec![Some(0), Some(1)]];
        assert_eq!(
            topological_order(3, |i| sorted[i].clone()),
            Ok(vec![0, 1, 2])
        );
        // 1 and 2 wait on each other; 3 waits on them; 0 is free.
        let cycle = [vec![], vec![Some(2)], vec![Some(1)], vec![Some(2)]];
        assert_eq!(topological_order(4, |i| cycle[i].clone()), Err(1));
        // A node reading its own output.
        assert_eq!(topological_order(1, |_| vec![Some(0)]), Err(0));
    }

    #[test]
    fn node_context_names_the_node_once() {
        let node = Node {
            name: "conv2".into(),
            op: Op::Unary(op::Unary::Relu),
            inputs: vec![],
            outputs: vec![],
        };
        let named = node.context(Error::Shape("bad".into()));
        assert_eq!(
            named.to_string(),
            "node 'conv2' (Relu): shape mismatch: bad"
        );
        // An error about this node already names it: not named twice.
        let own = node.context(node.error("input 0 is missing"));
        assert_eq!(own.to_string(), "node 'conv2' (Relu): input 0 is missing");
    }
}
