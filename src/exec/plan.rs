//! The execution plan of a graph, shared by every backend: nodes in topological order, the one
//! graph input, and after which node each activation is dead (so that a run holds only the live
//! activations of one batch).

use crate::error::{Error, Result};
use crate::ir::{shape, Graph, Node, Op, Shape, Value, ValueId};

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
    /// Plans `graph`: checks that it has one input and is in topological order, and lowers the
    /// ops the executors run as others ([`lower`]).
    pub fn new(graph: &Graph) -> Result<Self> {
        let graph = lower(graph)?;
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
        self.check_batch_shape(input.shape)
    }

    /// Checks the shape of a batch (on the host or a device) against the graph input.
    pub fn check_batch_shape(&self, shape: &[usize]) -> Result<()> {
        let expected = self.input_shape();
        let n = shape.first().copied().unwrap_or(0);
        if shape != expected.at(n).as_slice() {
            return Err(crate::error::Error::Shape(format!(
                "model input '{}' is {expected} (N images), got a batch of shape {shape:?}",
                self.graph.values[self.input].name
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

/// `graph` with the ops that executors run as simpler ones rewritten: a Split becomes one Slice
/// per part (so that every node computes one output), an n-ary Sum/Max/Min a chain of binary
/// ops (intermediate values appended after the graph's, so value ids stay valid for taps).
/// Lowered nodes keep the original node's name, for errors.
pub fn lower(graph: &Graph) -> Result<Graph> {
    let mut out = graph.clone();
    out.nodes = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        match &node.op {
            Op::Split { axis, sizes } => {
                let mut start = 0;
                for (&o, &len) in node.outputs.iter().zip(sizes) {
                    out.nodes.push(Node {
                        name: node.name.clone(),
                        op: Op::Slice {
                            starts: vec![start as i64],
                            ends: vec![(start + len) as i64],
                            axes: vec![*axis],
                            steps: vec![1],
                        },
                        inputs: vec![Some(node.input(0)?)],
                        outputs: vec![o],
                    });
                    start += len;
                }
            }
            Op::Nary(nary) => {
                let inputs: Vec<ValueId> = node.inputs.iter().flatten().copied().collect();
                let Some((&first, rest)) = inputs.split_first() else {
                    return Err(node.error("it has no input"));
                };
                let mut acc = first;
                if rest.is_empty() {
                    out.nodes.push(Node {
                        name: node.name.clone(),
                        op: Op::Identity,
                        inputs: vec![Some(acc)],
                        outputs: vec![node.outputs[0]],
                    });
                }
                for (k, &next) in rest.iter().enumerate() {
                    let result = if k + 1 == rest.len() {
                        node.outputs[0]
                    } else {
                        let shape =
                            shape::broadcast(&out.values[acc].shape, &out.values[next].shape)
                                .map_err(|r| node.error(r))?;
                        out.values.push(Value {
                            name: format!("{}#fold{k}", graph.values[node.outputs[0]].name),
                            shape,
                            constant: None,
                            initializer: false,
                        });
                        out.values.len() - 1
                    };
                    out.nodes.push(Node {
                        name: node.name.clone(),
                        op: Op::Binary(nary.step()),
                        inputs: vec![Some(acc), Some(next)],
                        outputs: vec![result],
                    });
                    acc = result;
                }
            }
            _ => out.nodes.push(node.clone()),
        }
    }
    Ok(out)
}
