//! ONNX → IR: decode the protobuf, read external data, type every op (attributes parsed and
//! defaulted per opset, constant parameter inputs resolved), order the nodes and infer shapes from
//! the input shape with a symbolic batch.

use std::collections::HashMap;
use std::path::Path;

use prost::Message;

mod compute;

use super::proto::{self, attribute_proto::AttributeType};
use super::{decode_tensor, load_external, NodeOrigin, OnnxModel, SUPPORTED_OPSETS};
use crate::error::{Error, Result};
use crate::ir::shape;
use crate::ir::{
    Binary, ConstData, Constant, Conv, Dim, Gemm, Graph, Node, Op, PadMode, Padding, PoolKind,
    Shape, Unary, Value, ValueId, Window,
};

/// Reads an ONNX model (and its external data files, resolved against the model's folder).
pub fn load(path: impl AsRef<Path>) -> Result<OnnxModel> {
    let path = path.as_ref();
    let bytes = crate::validate::read_input(path)?;
    let mut model = load_bytes(path, &bytes)?;
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    model.sources.insert(0, canonical);
    Ok(model)
}

/// Reads an ONNX model from memory; `path` names it in errors and locates external data.
pub fn load_bytes(path: &Path, bytes: &[u8]) -> Result<OnnxModel> {
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
            "opset {opset} is not supported (opsets {}–{} are)",
            SUPPORTED_OPSETS.start(),
            SUPPORTED_OPSETS.end()
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
    let (graph, node_origin, initializer_origin) =
        build_graph(graph_proto, opset).map_err(|e| match e {
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

fn build_graph(g: &proto::GraphProto, opset: i64) -> Result<Origins> {
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
    let mut inputs = Vec::new();
    for vi in &g.input {
        let name = vi.name.clone().unwrap_or_default();
        if initializer_origin.contains_key(&name) {
            continue; // IR < 4 style: initializers listed as inputs too.
        }
        let shape = input_shape(vi)?;
        let id = add_value(&mut values, &name)?;
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
    let ids = graph
        .names()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect::<HashMap<_, _>>();
    // Proto nodes in topological order.
    let order = proto_order(g, &node_names)?;
    let mut node_origin = HashMap::new();
    for i in order {
        let n = &g.node[i];
        let name = node_names[i].clone();
        let op_type = n.op_type.clone().unwrap_or_default();
        let node_err = |reason: String| Error::Node {
            node: name.clone(),
            op: op_type.clone(),
            reason,
        };
        if !matches!(n.domain.as_deref(), None | Some("") | Some("ai.onnx")) {
            return Err(node_err(format!(
                "op '{op_type}' of domain '{}' is not supported",
                n.domain.as_deref().unwrap_or("")
            )));
        }
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
        let ctx = Ctx {
            node: n,
            graph: &graph,
            inputs: &node_inputs,
            opset,
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
            let shapes: Vec<Option<Shape>> = node
                .inputs
                .iter()
                .map(|i| i.map(|v| graph.values[v].shape.clone()))
                .collect();
            let outs = shape::infer_all(&node.op, &shapes).map_err(|reason| node.error(reason))?;
            node.set_output_shapes(&mut graph.values, outs)?;
        }
        node_origin.insert(
            name.clone(),
            NodeOrigin {
                index: i,
                op: node.op.clone(),
                inputs: n
                    .input
                    .iter()
                    .map(|s| (!s.is_empty()).then(|| s.clone()))
                    .collect(),
                outputs: n.output.iter().filter(|o| !o.is_empty()).cloned().collect(),
            },
        );
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

/// The shape of a graph input: its first dimension is the batch, whatever the file says (the
/// executor runs batches); the others must be fixed.
fn input_shape(vi: &proto::ValueInfoProto) -> Result<Shape> {
    use proto::tensor_shape_proto::dimension::Value as D;
    use proto::type_proto::Value as T;
    let name = vi.name.as_deref().unwrap_or("");
    let tensor = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(T::TensorType(t)) => t,
        _ => {
            return Err(Error::Shape(format!(
                "graph input '{name}' is not a tensor"
            )))
        }
    };
    if tensor.elem_type != Some(proto::tensor_proto::DataType::Float as i32) {
        return Err(Error::Shape(format!(
            "graph input '{name}' has element type {:?}; only FLOAT inputs are supported",
            tensor.elem_type
        )));
    }
    let dims = tensor
        .shape
        .as_ref()
        .ok_or_else(|| Error::Shape(format!("graph input '{name}' has no shape")))?;
    let mut out = Vec::new();
    for (i, d) in dims.dim.iter().enumerate() {
        out.push(match (&d.value, i) {
            (_, 0) => Dim::Batch,
            (Some(D::DimValue(v)), _) if *v > 0 => Dim::Fixed(*v as usize),
            _ => {
                return Err(Error::Shape(format!(
                    "graph input '{name}': dimension {i} must be a fixed size (only the first, the batch, may be symbolic)"
                )))
            }
        });
    }
    let shape = Shape(out);
    shape
        .checked_per_batch_item()
        .map_err(|e| Error::Shape(format!("graph input '{name}': {e}")))?;
    Ok(shape)
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

struct Ctx<'a> {
    node: &'a proto::NodeProto,
    graph: &'a Graph,
    inputs: &'a [Option<ValueId>],
    opset: i64,
    err: &'a dyn Fn(String) -> Error,
}

impl Ctx<'_> {
    fn attr(&self, name: &str) -> Option<&proto::AttributeProto> {
        self.node
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
    }

    fn attr_type(&self, a: &proto::AttributeProto, want: AttributeType) -> Result<()> {
        match a.r#type {
            Some(t) if t != want as i32 => Err((self.err)(format!(
                "attribute '{}' has type {:?}, expected {}",
                a.name.as_deref().unwrap_or(""),
                AttributeType::try_from(t)
                    .map(|t| t.as_str_name())
                    .unwrap_or("?"),
                want.as_str_name()
            ))),
            _ => Ok(()),
        }
    }

    fn int(&self, name: &str, default: i64) -> Result<i64> {
        match self.attr(name) {
            None => Ok(default),
            Some(a) => {
                self.attr_type(a, AttributeType::Int)?;
                Ok(a.i.unwrap_or(default))
            }
        }
    }

    fn float(&self, name: &str, default: f32) -> Result<f32> {
        match self.attr(name) {
            None => Ok(default),
            Some(a) => {
                self.attr_type(a, AttributeType::Float)?;
                Ok(a.f.unwrap_or(default))
            }
        }
    }

    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => {
                self.attr_type(a, AttributeType::Ints)?;
                Ok(Some(a.ints.clone()))
            }
        }
    }

    fn string(&self, name: &str) -> Result<Option<String>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => {
                self.attr_type(a, AttributeType::String)?;
                Ok(Some(
                    String::from_utf8_lossy(a.s.as_deref().unwrap_or(&[])).into_owned(),
                ))
            }
        }
    }

    fn input_shape(&self, i: usize) -> Result<&Shape> {
        self.inputs
            .get(i)
            .copied()
            .flatten()
            .map(|v| &self.graph.values[v].shape)
            .ok_or_else(|| (self.err)(format!("input {i} is missing")))
    }

    fn rank(&self) -> Result<usize> {
        Ok(self.input_shape(0)?.rank())
    }

    /// A constant input (initializer or `Constant` output), or `None` when omitted.
    fn const_input(&self, i: usize, what: &str) -> Result<Option<&Constant>> {
        match self.inputs.get(i).copied().flatten() {
            None => Ok(None),
            Some(v) => self.graph.values[v].constant.as_ref().map(Some).ok_or_else(|| {
                (self.err)(format!(
                    "{what} (input {i}, '{}') must be a constant (an initializer or a Constant node)",
                    self.graph.values[v].name
                ))
            }),
        }
    }

    fn const_ints(&self, i: usize, what: &str) -> Result<Option<Vec<i64>>> {
        match self.const_input(i, what)? {
            None => Ok(None),
            Some(c) => c
                .i64()
                .map(|v| Some(v.to_vec()))
                .ok_or_else(|| (self.err)(format!("{what} must be integers"))),
        }
    }

    fn const_scalar(&self, i: usize, what: &str) -> Result<Option<f32>> {
        match self.const_input(i, what)? {
            None => Ok(None),
            Some(c) => match (c.f32(), c.len()) {
                (Some(v), 1) => Ok(Some(v[0])),
                _ => Err((self.err)(format!(
                    "{what} must be one float, got shape {:?}",
                    c.dims
                ))),
            },
        }
    }

    fn axis(&self, axis: i64, rank: usize) -> Result<usize> {
        let a = if axis < 0 { axis + rank as i64 } else { axis };
        if a < 0 || a as usize >= rank {
            return Err((self.err)(format!(
                "axis {axis} is out of range for rank {rank}"
            )));
        }
        Ok(a as usize)
    }

    fn pair(&self, name: &str, default: usize) -> Result<[usize; 2]> {
        match self.ints(name)? {
            None => Ok([default; 2]),
            Some(v) if v.len() == 2 && v.iter().all(|&x| x >= 0) => {
                Ok([v[0] as usize, v[1] as usize])
            }
            Some(v) => Err((self.err)(format!(
                "{name} {v:?}: only 2-D windows with non-negative values are supported"
            ))),
        }
    }

    fn window(&self, kernel: [usize; 2], pooling: bool) -> Result<Window> {
        let auto_pad = self.string("auto_pad")?.unwrap_or_else(|| "NOTSET".into());
        let padding = match auto_pad.as_str() {
            "NOTSET" => match self.ints("pads")? {
                None => Padding::Explicit([0; 4]),
                Some(p) if p.len() == 4 && p.iter().all(|&x| x >= 0) => {
                    Padding::Explicit([p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize])
                }
                Some(p) => {
                    return Err((self.err)(format!(
                        "pads {p:?}: expected 4 non-negative values (2-D)"
                    )))
                }
            },
            "VALID" => Padding::Explicit([0; 4]),
            "SAME_UPPER" => Padding::SameUpper,
            "SAME_LOWER" => Padding::SameLower,
            other => return Err((self.err)(format!("auto_pad '{other}' is not valid"))),
        };
        Ok(Window {
            kernel,
            strides: self.pair("strides", 1)?,
            dilations: self.pair("dilations", 1)?,
            padding,
            ceil_mode: pooling && self.int("ceil_mode", 0)? != 0,
        })
    }
}

/// The typed op of a proto node (and, for `Constant`, its value).
fn convert(ctx: &Ctx<'_>) -> Result<(Op, Option<Constant>)> {
    let op_type = ctx.node.op_type.as_deref().unwrap_or("");
    let err = ctx.err;
    let op = match op_type {
        "Conv" => {
            let w = ctx.input_shape(1)?;
            let kernel = match ctx.ints("kernel_shape")? {
                Some(k) if k.len() == 2 && k.iter().all(|&x| x > 0) => {
                    [k[0] as usize, k[1] as usize]
                }
                Some(k) => {
                    return Err(err(format!(
                        "kernel_shape {k:?}: only 2-D convolutions are supported"
                    )))
                }
                None => match w.as_fixed() {
                    Some(d) if d.len() == 4 => [d[2], d[3]],
                    _ => return Err(err(format!("weight {w} is not a 2-D kernel"))),
                },
            };
            let group = ctx.int("group", 1)?;
            if group < 1 {
                return Err(err(format!("group {group} must be ≥ 1")));
            }
            Op::Conv(Conv {
                window: ctx.window(kernel, false)?,
                group: group as usize,
            })
        }
        "Gemm" => Op::Gemm(Gemm {
            alpha: ctx.float("alpha", 1.0)?,
            beta: ctx.float("beta", 1.0)?,
            trans_a: ctx.int("transA", 0)? != 0,
            trans_b: ctx.int("transB", 0)? != 0,
        }),
        "MatMul" => Op::MatMul,
        "BatchNormalization" => {
            if ctx.int("training_mode", 0)? != 0 {
                return Err(err("training_mode = 1 is not supported".into()));
            }
            Op::BatchNorm {
                epsilon: ctx.float("epsilon", 1e-5)?,
            }
        }
        "Relu" => Op::Unary(Unary::Relu),
        "LeakyRelu" => Op::Unary(Unary::LeakyRelu {
            alpha: ctx.float("alpha", 0.01)?,
        }),
        "Sigmoid" => Op::Unary(Unary::Sigmoid),
        "HardSigmoid" => Op::Unary(Unary::HardSigmoid {
            alpha: ctx.float("alpha", 0.2)?,
            beta: ctx.float("beta", 0.5)?,
        }),
        "HardSwish" => Op::Unary(Unary::HardSwish),
        "Clip" => {
            // Opset ≥ 11 gives the bounds as optional inputs (initializers or Constants); older
            // files (and some exporters) as attributes. Inputs win where both are present.
            let min = ctx.float("min", f32::NEG_INFINITY)?;
            let max = ctx.float("max", f32::INFINITY)?;
            Op::Unary(Unary::Clip {
                min: ctx.const_scalar(1, "min")?.unwrap_or(min),
                max: ctx.const_scalar(2, "max")?.unwrap_or(max),
            })
        }
        "Add" => Op::Binary(Binary::Add),
        "Sub" => Op::Binary(Binary::Sub),
        "Mul" => Op::Binary(Binary::Mul),
        "Div" => Op::Binary(Binary::Div),
        "MaxPool" | "AveragePool" => {
            let kernel = match ctx.ints("kernel_shape")? {
                Some(k) if k.len() == 2 && k.iter().all(|&x| x > 0) => {
                    [k[0] as usize, k[1] as usize]
                }
                other => {
                    return Err(err(format!(
                        "kernel_shape {other:?}: a 2-D kernel is required"
                    )))
                }
            };
            let kind = if op_type == "MaxPool" {
                PoolKind::Max
            } else {
                PoolKind::Average {
                    count_include_pad: ctx.int("count_include_pad", 0)? != 0,
                }
            };
            Op::Pool {
                kind,
                window: ctx.window(kernel, true)?,
            }
        }
        "GlobalAveragePool" => Op::GlobalAveragePool,
        "Flatten" => {
            let rank = ctx.rank()?;
            let axis = ctx.int("axis", 1)?;
            let a = if axis < 0 { axis + rank as i64 } else { axis };
            if a < 0 || a as usize > rank {
                return Err(err(format!("axis {axis} is out of range for rank {rank}")));
            }
            Op::Flatten { axis: a as usize }
        }
        "Reshape" => Op::Reshape {
            shape: ctx
                .const_ints(1, "shape")?
                .ok_or_else(|| err("the shape input is missing".into()))?,
            allow_zero: ctx.int("allowzero", 0)? != 0,
        },
        "Concat" => {
            let axis = ctx.int("axis", i64::MIN)?;
            if axis == i64::MIN {
                return Err(err("attribute 'axis' is required".into()));
            }
            Op::Concat {
                axis: ctx.axis(axis, ctx.rank()?)?,
            }
        }
        "Slice" => {
            let rank = ctx.rank()?;
            let starts = ctx
                .const_ints(1, "starts")?
                .ok_or_else(|| err("starts is missing".into()))?;
            let ends = ctx
                .const_ints(2, "ends")?
                .ok_or_else(|| err("ends is missing".into()))?;
            let axes = match ctx.const_ints(3, "axes")? {
                Some(a) => a
                    .iter()
                    .map(|&x| ctx.axis(x, rank))
                    .collect::<Result<Vec<_>>>()?,
                None => (0..starts.len()).collect(),
            };
            let steps = ctx
                .const_ints(4, "steps")?
                .unwrap_or_else(|| vec![1; starts.len()]);
            if ends.len() != starts.len()
                || axes.len() != starts.len()
                || steps.len() != starts.len()
            {
                return Err(err(format!(
                    "starts {starts:?}, ends {ends:?}, axes {axes:?}, steps {steps:?} must have equal lengths"
                )));
            }
            if steps.contains(&0) {
                return Err(err("a step is 0".into()));
            }
            let mut sorted = axes.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != axes.len() {
                return Err(err(format!("axes {axes:?} repeat an axis")));
            }
            Op::Slice {
                starts,
                ends,
                axes,
                steps,
            }
        }
        "Pad" => {
            let rank = ctx.rank()?;
            let mode = match ctx.string("mode")?.as_deref().unwrap_or("constant") {
                "constant" => PadMode::Constant,
                "reflect" => PadMode::Reflect,
                "edge" => PadMode::Edge,
                other => return Err(err(format!("pad mode '{other}' is not supported"))),
            };
            let given = ctx
                .const_ints(1, "pads")?
                .ok_or_else(|| err("pads is missing".into()))?;
            let value = ctx.const_scalar(2, "constant_value")?.unwrap_or(0.0);
            let pads = match ctx.const_ints(3, "axes")? {
                None => given,
                Some(axes) => {
                    if given.len() != 2 * axes.len() {
                        return Err(err(format!(
                            "pads {given:?} needs two values per axis of {axes:?}"
                        )));
                    }
                    let mut full = vec![0i64; 2 * rank];
                    for (k, &a) in axes.iter().enumerate() {
                        let a = ctx.axis(a, rank)?;
                        full[a] = given[k];
                        full[a + rank] = given[k + axes.len()];
                    }
                    full
                }
            };
            Op::Pad { mode, pads, value }
        }
        "Dropout" | "Identity" => Op::Identity,
        "Softmax" => {
            let rank = ctx.rank()?;
            let coerce_2d = ctx.opset < 13;
            let axis = ctx.int("axis", if coerce_2d { 1 } else { -1 })?;
            Op::Softmax {
                axis: ctx.axis(axis, rank)?,
                coerce_2d,
            }
        }
        "Constant" => {
            let c = constant_value(ctx)?;
            return Ok((Op::Constant, Some(c)));
        }
        other => compute::convert(ctx, other)?.ok_or_else(|| {
            err(format!(
                "op '{other}' is not supported\nsupported ops: {} (docs/OPS.md)",
                super::supported::SUPPORTED_OPS.join(", ")
            ))
        })?,
    };
    Ok((op, None))
}

fn constant_value(ctx: &Ctx<'_>) -> Result<Constant> {
    let err = ctx.err;
    let a = ctx
        .node
        .attribute
        .first()
        .ok_or_else(|| err("a Constant needs a value attribute".into()))?;
    let name = a.name.as_deref().unwrap_or("");
    Ok(match name {
        "value" => decode_tensor(
            a.t.as_ref()
                .ok_or_else(|| err("attribute 'value' holds no tensor".into()))?,
        )
        .map_err(err)?,
        "value_float" => Constant {
            dims: vec![],
            data: ConstData::F32(vec![a.f.unwrap_or(0.0)]),
        },
        "value_floats" => Constant {
            dims: vec![a.floats.len()],
            data: ConstData::F32(a.floats.clone()),
        },
        "value_int" => Constant {
            dims: vec![],
            data: ConstData::I64(vec![a.i.unwrap_or(0)]),
        },
        "value_ints" => Constant {
            dims: vec![a.ints.len()],
            data: ConstData::I64(a.ints.clone()),
        },
        other => {
            return Err(err(format!(
                "Constant attribute '{other}' is not supported (value, value_float(s), value_int(s) are)"
            )))
        }
    })
}
