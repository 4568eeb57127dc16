//! ONNX → IR, the stages in order: decode the protobuf, read external data, fix the inputs'
//! shapes ([`super::inputs`]), order the nodes, then node by node: normalise its old-opset form
//! ([`super::opset`]), fold it into a constant where its inputs are known ([`super::fold`]), or
//! type it ([`super::import`]) and infer its output's shape (symbolic batch).

use std::collections::HashMap;
use std::path::Path;

use prost::Message;

use super::fold::{self, Known, Site};
use super::import::{convert, Ctx};
use super::inputs::{self, LoadOptions};
use super::proto;
use super::{decode_tensor, load_external, NodeOrigin, OnnxModel, SUPPORTED_OPSETS};
use crate::error::{Error, Result};
use crate::ir::{Graph, Node, Op, Shape, Value, ValueId};

/// Reads an ONNX model (and its external data files, resolved against the model's folder); its
/// inputs' shapes must be fixed in the file but for the batch ([`load_with`] gives them).
pub fn load(path: impl AsRef<Path>) -> Result<OnnxModel> {
    load_with(path, &LoadOptions::default())
}

/// [`load`] with options: the shapes of inputs whose dimensions the file leaves dynamic.
pub fn load_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<OnnxModel> {
    let path = path.as_ref();
    let bytes = crate::validate::read_input(path)?;
    let mut model = load_bytes_with(path, &bytes, options)?;
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    model.sources.insert(0, canonical);
    Ok(model)
}

/// Reads an ONNX model from memory; `path` names it in errors and locates external data.
pub fn load_bytes(path: &Path, bytes: &[u8]) -> Result<OnnxModel> {
    load_bytes_with(path, bytes, &LoadOptions::default())
}

/// [`load_bytes`] with options ([`load_with`]).
pub fn load_bytes_with(path: &Path, bytes: &[u8], options: &LoadOptions) -> Result<OnnxModel> {
    let bad = |reason: String| Error::Onnx {
        path: path.to_path_buf(),
        reason,
    };
    let mut proto = proto::ModelProto::decode(bytes).map_err(|e| {
        bad(format!(
            "not an ONNX model, or a truncated or corrupt one (protobuf: {})",
            short_decode_error(&e)
        ))
    })?;
    if proto.ir_version.unwrap_or(0) <= 0 || proto.graph.is_none() {
        return Err(bad(
            "not an ONNX model (no IR version or no graph): the file is protobuf-like but holds something else".into(),
        ));
    }
    let opset = proto
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
        .ok_or_else(|| bad("the model imports no default-domain (ai.onnx) opset".into()))?;
    if !SUPPORTED_OPSETS.contains(&opset) {
        return Err(bad(format!(
            "opset {opset} is not supported (opsets {}–{} are){}",
            SUPPORTED_OPSETS.start(),
            SUPPORTED_OPSETS.end(),
            if opset < *SUPPORTED_OPSETS.start() {
                "; convert it first (onnx.version_converter.convert_version(model, 13))"
            } else {
                ""
            }
        )));
    }
    if let Some(reason) =
        super::supported::unsupported_ops(proto.graph.as_ref().expect("checked above"))
    {
        return Err(bad(reason));
    }
    let graph_proto = proto.graph.as_mut().expect("checked above");
    let mut tensors: Vec<&mut proto::TensorProto> = graph_proto.initializer.iter_mut().collect();
    for node in graph_proto.node.iter_mut() {
        for attr in node.attribute.iter_mut() {
            if let Some(t) = attr.t.as_mut() {
                tensors.push(t);
            }
        }
    }
    let external = load_external(path, &mut tensors)?;
    let graph_proto = proto.graph.as_ref().expect("checked above");
    let (graph, node_origin, initializer_origin) = build_graph(graph_proto, opset, options)
        .map_err(|e| match e {
            Error::Shape(reason) | Error::InvalidArgument(reason) => bad(reason),
            other => other,
        })?;
    Ok(OnnxModel {
        graph,
        proto,
        sources: external,
        node_origin,
        initializer_origin,
        opset,
    })
}

/// prost's message, with the field path cut to its first and last steps when it is long: past
/// the recursion limit of a deeply nested graph attribute, the full path is kilobytes long.
fn short_decode_error(e: &prost::DecodeError) -> String {
    let full = e.to_string();
    let parts: Vec<&str> = full.split(": ").collect();
    if full.len() <= 200 || parts.len() <= 5 {
        return full;
    }
    let (head, tail) = (&parts[..2], &parts[parts.len() - 2..]);
    format!(
        "{}: … ({} nested fields) …: {}",
        head.join(": "),
        parts.len() - 4,
        tail.join(": ")
    )
}

type Origins = (Graph, HashMap<String, NodeOrigin>, HashMap<String, usize>);

fn build_graph(g: &proto::GraphProto, opset: i64, options: &LoadOptions) -> Result<Origins> {
    let mut values: Vec<Value> = Vec::new();
    let mut ids: HashMap<String, ValueId> = HashMap::new();
    let mut initializer_origin = HashMap::new();
    let mut add_value = |values: &mut Vec<Value>, name: &str| -> Result<ValueId> {
        if ids.contains_key(name) {
            return Err(Error::Shape(format!("value '{name}' is defined twice")));
        }
        values.push(Value {
            name: name.to_string(),
            shape: Shape::default(),
            constant: None,
            initializer: false,
        });
        ids.insert(name.to_string(), values.len() - 1);
        Ok(values.len() - 1)
    };
    for (i, t) in g.initializer.iter().enumerate() {
        let name = t.name.clone().unwrap_or_default();
        let c = decode_tensor(t).map_err(Error::Shape)?;
        let id = add_value(&mut values, &name)?;
        values[id].shape = Shape::fixed(&c.dims);
        values[id].constant = Some(c);
        values[id].initializer = true;
        initializer_origin.insert(name, i);
    }
    // IR < 4 style: initializers listed as inputs too.
    let fed: Vec<&proto::ValueInfoProto> = g
        .input
        .iter()
        .filter(|vi| !initializer_origin.contains_key(vi.name.as_deref().unwrap_or("")))
        .collect();
    let fed_names: Vec<&str> = fed
        .iter()
        .map(|vi| vi.name.as_deref().unwrap_or(""))
        .collect();
    inputs::check_names(options, &fed_names)?;
    let mut inputs = Vec::new();
    let mut exported_batch = None;
    for vi in &fed {
        let (shape, batch) = inputs::resolve(vi, options, fed.len() == 1)?;
        exported_batch = exported_batch.or(batch);
        let id = add_value(&mut values, vi.name.as_deref().unwrap_or(""))?;
        values[id].shape = shape;
        inputs.push(id);
    }
    // Names for unnamed nodes, and output values for every node before any input is resolved
    // (the file need not list nodes in topological order).
    let mut node_names: Vec<String> = Vec::with_capacity(g.node.len());
    let mut seen = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        let mut name = n
            .name
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or(format!("#{i}"));
        if seen.contains_key(&name) {
            name = format!("{name}#{i}");
        }
        seen.insert(name.clone(), i);
        for o in &n.output {
            if o.is_empty() {
                continue;
            }
            add_value(&mut values, o).map_err(|_| Error::Node {
                node: name.clone(),
                op: n.op_type.clone().unwrap_or_default(),
                reason: format!("output '{o}' is already defined elsewhere"),
            })?;
        }
        node_names.push(name);
    }
    let mut graph = Graph {
        values,
        nodes: Vec::new(),
        inputs,
        outputs: Vec::new(),
    };
    let mut ids = graph
        .names()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect::<HashMap<_, _>>();
    // Values folded at load that an IR constant cannot say exactly (the batch, booleans).
    let mut known: HashMap<ValueId, Known> = HashMap::new();
    // Proto nodes in topological order.
    let order = proto_order(g, &node_names)?;
    let mut node_origin = HashMap::new();
    for i in order {
        let name = node_names[i].clone();
        let op_type = g.node[i].op_type.clone().unwrap_or_default();
        let node_err = |reason: String| Error::Node {
            node: name.clone(),
            op: op_type.clone(),
            reason,
        };
        if !matches!(
            g.node[i].domain.as_deref(),
            None | Some("") | Some("ai.onnx")
        ) {
            return Err(node_err(format!(
                "op '{op_type}' of domain '{}' is not supported",
                g.node[i].domain.as_deref().unwrap_or("")
            )));
        }
        let normalised = super::opset::normalise(&g.node[i], opset).map_err(&node_err)?;
        for (cname, c) in normalised.constants {
            graph.values.push(Value {
                name: cname.clone(),
                shape: Shape::fixed(&c.dims),
                constant: Some(c),
                initializer: false,
            });
            if ids.insert(cname.clone(), graph.values.len() - 1).is_some() {
                return Err(node_err(format!("value '{cname}' is defined twice")));
            }
        }
        let n: &proto::NodeProto = &normalised.node;
        let node_inputs: Vec<Option<ValueId>> = n
            .input
            .iter()
            .map(|s| {
                if s.is_empty() {
                    Ok(None)
                } else {
                    ids.get(s)
                        .copied()
                        .map(Some)
                        .ok_or_else(|| node_err(format!("input '{s}' is not defined")))
                }
            })
            .collect::<Result<_>>()?;
        let outputs: Vec<ValueId> = n
            .output
            .iter()
            .filter(|o| !o.is_empty())
            .map(|o| ids[o])
            .collect();
        if outputs.is_empty() {
            return Err(node_err("it has no output".into()));
        }
        let origin_inputs: Vec<Option<String>> = n
            .input
            .iter()
            .map(|s| (!s.is_empty()).then(|| s.clone()))
            .collect();
        let folded = fold_node(&graph, &known, n, &node_inputs).map_err(&node_err)?;
        let node = if let Some(k) = folded {
            let c = k.to_constant();
            let out = outputs[0];
            graph.values[out].shape = Shape::fixed(&c.dims);
            graph.values[out].constant = Some(c.clone());
            known.insert(out, k);
            node_origin.insert(
                name.clone(),
                NodeOrigin {
                    index: i,
                    op: Op::Constant,
                    inputs: origin_inputs,
                    outputs: n.output.iter().filter(|o| !o.is_empty()).cloned().collect(),
                    folded: Some(c),
                },
            );
            Node {
                name: name.clone(),
                op: Op::Constant,
                inputs: vec![],
                outputs,
            }
        } else {
            let ctx = Ctx {
                node: n,
                graph: &graph,
                inputs: &node_inputs,
                opset,
                known: &known,
                exported_batch,
                err: &node_err,
            };
            let (op, constant) = convert(&ctx)?;
            let node = Node {
                name: name.clone(),
                op,
                inputs: node_inputs,
                outputs,
            };
            if let Some(c) = constant {
                let out = node.outputs[0];
                graph.values[out].shape = Shape::fixed(&c.dims);
                graph.values[out].constant = Some(c);
            } else {
                let shapes: Vec<Option<crate::ir::Shape>> = node
                    .inputs
                    .iter()
                    .map(|i| i.map(|v| graph.values[v].shape.clone()))
                    .collect();
                let outs = crate::ir::shape::infer_all(&node.op, &shapes)
                    .map_err(|reason| node.error(reason))?;
                node.set_output_shapes(&mut graph.values, outs)?;
            }
            node_origin.insert(
                name.clone(),
                NodeOrigin {
                    index: i,
                    op: node.op.clone(),
                    inputs: node
                        .inputs
                        .iter()
                        .map(|v| v.map(|v| graph.values[v].name.clone()))
                        .collect(),
                    outputs: n.output.iter().filter(|o| !o.is_empty()).cloned().collect(),
                    folded: None,
                },
            );
            node
        };
        graph.nodes.push(node);
    }
    for vi in &g.output {
        let name = vi.name.clone().unwrap_or_default();
        let id = *ids.get(&name).ok_or_else(|| {
            Error::Shape(format!("graph output '{name}' is not produced by any node"))
        })?;
        graph.outputs.push(id);
    }
    graph.check_single_outputs()?;
    graph.flops_per_image()?;
    Ok((graph, node_origin, initializer_origin))
}

/// The folded value of node `n`, or `None` when it is not foldable. Cheap for the usual node
/// (an op without an evaluator, or an input computed from data): values are gathered only
/// once every input is known.
fn fold_node(
    graph: &Graph,
    known: &HashMap<ValueId, Known>,
    n: &proto::NodeProto,
    inputs: &[Option<ValueId>],
) -> std::result::Result<Option<Known>, String> {
    let op = n.op_type.as_deref().unwrap_or("");
    if !fold::EVALUATORS.iter().any(|(name, _)| *name == op) {
        return Ok(None);
    }
    let all_constant = inputs
        .iter()
        .flatten()
        .all(|&v| graph.values[v].constant.is_some());
    if !all_constant && op != "Shape" {
        return Ok(None);
    }
    let owned: Vec<Option<Known>> = inputs
        .iter()
        .map(|v| {
            v.filter(|v| !known.contains_key(v))
                .and_then(|v| graph.values[v].constant.as_ref())
                .map(Known::from_constant)
        })
        .collect();
    let site = Site {
        node: n,
        known: inputs
            .iter()
            .zip(&owned)
            .map(|(v, o)| o.as_ref().or_else(|| v.and_then(|v| known.get(&v))))
            .collect(),
        shapes: inputs
            .iter()
            .map(|v| v.map(|v| &graph.values[v].shape))
            .collect(),
    };
    fold::fold(&site)
}

fn proto_order(g: &proto::GraphProto, names: &[String]) -> Result<Vec<usize>> {
    let mut produced_by: HashMap<&str, usize> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for o in &n.output {
            produced_by.insert(o.as_str(), i);
        }
    }
    // Inputs nobody produces are graph inputs, initializers, or undefined (named later).
    crate::ir::topological_order(g.node.len(), |i| {
        g.node[i]
            .input
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| produced_by.get(s.as_str()).copied())
            .collect()
    })
    .map_err(|i| Error::Node {
        node: names[i].clone(),
        op: g.node[i].op_type.clone().unwrap_or_default(),
        reason: "its inputs depend on its own output (a cycle in the graph)".into(),
    })
}
