//! The execution plan of a graph, shared by every backend: nodes in topological order, the one
//! graph input, and after which node each activation is dead (so that a run holds only the live
//! activations of one batch).

use crate::error::{Error, Result};
use crate::ir::{Graph, Op, Shape, ValueId};

/// One node of the plan.
#[derive(Clone, Debug)]
pub struct Step {
    /// Index in [`Graph::nodes`].
    pub node: usize,
    /// Activations whose last reader is this node (freed after it runs).
    pub free_after: Vec<ValueId>,
}

/// The order of a run and the lifetime of its activations.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The graph, as planned.
    pub graph: Graph,
    /// The graph input fed with images.
    pub input: ValueId,
    /// Nodes to run, in order (`Constant` nodes are skipped: their values are known).
    pub steps: Vec<Step>,
}

impl Plan {
    /// Plans `graph`: checks that it has one input and is in topological order.
    pub fn new(graph: &Graph) -> Result<Self> {
        let graph = graph.clone();
        let input = match graph.inputs.as_slice() {
            [one] => *one,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "the model has {} graph inputs; exactly one (the images) is supported",
                    other.len()
                )))
            }
        };
        let producers = graph.producers();
        let mut computed = vec![false; graph.values.len()];
        computed[input] = true;
        for (v, value) in graph.values.iter().enumerate() {
            if value.constant.is_some() {
                computed[v] = true;
            }
        }
        let mut last_use = vec![None; graph.values.len()];
        for (i, node) in graph.nodes.iter().enumerate() {
            for &v in node.inputs.iter().flatten() {
                if !computed[v] {
                    return Err(node.error(format!(
                        "input '{}' is not computed before it (nodes out of order)",
                        graph.values[v].name
                    )));
                }
                last_use[v] = Some(i);
            }
            for &o in &node.outputs {
                computed[o] = true;
            }
        }
        for &o in &graph.outputs {
            if !computed[o] {
                return Err(Error::InvalidArgument(format!(
                    "graph output '{}' is never computed",
                    graph.values[o].name
                )));
            }
        }
        let mut steps: Vec<Step> = graph
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.op != Op::Constant)
            .map(|(i, _)| Step {
                node: i,
                free_after: Vec::new(),
            })
            .collect();
        let step_of: std::collections::HashMap<usize, usize> = steps
            .iter()
            .enumerate()
            .map(|(s, st)| (st.node, s))
            .collect();
        for (v, last) in last_use.iter().enumerate() {
            let is_activation =
                graph.values[v].constant.is_none() && (producers[v].is_some() || v == input);
            if let (Some(node), true) = (last, is_activation) {
                if graph.outputs.contains(&v) {
                    continue;
                }
                if let Some(&s) = step_of.get(node) {
                    steps[s].free_after.push(v);
                }
            }
        }
        Ok(Self {
            graph,
            input,
            steps,
        })
    }

    /// The symbolic shape of the graph input.
    pub fn input_shape(&self) -> &Shape {
        &self.graph.values[self.input].shape
    }

    /// Checks that `input` is a batch of the graph input's shape (any number of images).
    pub fn check_batch(&self, input: &crate::tensor::TensorView<'_>) -> Result<()> {
        let expected = self.input_shape();
        let n = input.shape.first().copied().unwrap_or(0);
        if input.shape != expected.at(n).as_slice() {
            return Err(crate::error::Error::Shape(format!(
                "model input '{}' is {expected} (N images), got a batch of shape {:?}",
                self.graph.values[self.input].name, input.shape
            )));
        }
        Ok(())
    }

    /// The value id of input `index` of the node named `node` (what a tap on that node's input
    /// asks for), or an error naming what is missing.
    pub fn node_input(&self, node: &str, index: usize) -> Result<ValueId> {
        let n = self.graph.node(node).ok_or_else(|| {
            Error::InvalidArgument(format!("the model has no node named '{node}'"))
        })?;
        n.input(index)
    }
}
