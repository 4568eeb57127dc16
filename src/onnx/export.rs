//! IR → ONNX: the original model with its graph rebuilt from the IR. Nodes and initializers that
//! did not change are written back as they were read (attributes, doc strings and metadata
//! included; initializer bytes identical; old-opset forms and nodes folded at load as in the
//! file); changed or new ones are encoded from the IR. Graph inputs and outputs keep the file's
//! declared shapes where they agree with the IR, so dynamic dimensions stay dynamic. Files are
//! written atomically, never over a file the model was read from.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use prost::Message;

use super::proto::{self, attribute_proto::AttributeType, tensor_proto::DataLocation};
use super::{decode_tensor, encode_tensor, OnnxModel};
use crate::error::{Error, Result};
use crate::ir::{Dim, Graph, Node, Op, Padding, PoolKind, Shape, Unary, Window};
use crate::npy::write_all_atomic;

/// Where tensor data goes on [`save`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ExternalData {
    /// Every tensor inside the model file (limit: 2 GiB in all).
    #[default]
    Embedded,
    /// Initializers of at least `threshold` bytes in one data file `location`, a file name
    /// relative to the model's folder.
    File {
        /// The data file's name, beside the model.
        location: String,
        /// Smallest tensor (bytes) moved to the data file.
        threshold: usize,
    },
}

/// Options of [`save`].
#[derive(Clone, Debug, Default)]
pub struct SaveOptions {
    /// Where tensor data goes.
    pub external_data: ExternalData,
}

/// Writes `model` (its IR as edited) to `path` atomically, with its external data file if the
/// options ask for one. Fails, writing nothing, if `path` or the data file is a file the model was
/// read from, or if the model cannot be encoded.
pub fn save(model: &OnnxModel, path: impl AsRef<Path>, options: &SaveOptions) -> Result<()> {
    let path = path.as_ref();
    let mut out = to_proto(model)?;
    let data_file = match &options.external_data {
        ExternalData::Embedded => None,
        ExternalData::File {
            location,
            threshold,
        } => {
            let file = super::checked_location(path, location)?;
            if same_file(&file, path) {
                return Err(Error::Onnx {
                    path: path.to_path_buf(),
                    reason: format!("external data file '{location}' would overwrite the model"),
                });
            }
            let bytes = move_to_external(&mut out, location, *threshold);
            Some((file, bytes))
        }
    };
    for target in std::iter::once(path).chain(data_file.as_ref().map(|(f, _)| f.as_path())) {
        if let Some(src) = model.sources.iter().find(|s| same_file(s, target)) {
            return Err(Error::Onnx {
                path: target.to_path_buf(),
                reason: format!(
                    "refusing to write over {}, which the model was read from; choose another output path",
                    src.display()
                ),
            });
        }
    }
    // Every file checked, then all written, then all renamed: a refused or failed write leaves
    // the previous model and data file together, never a new data file beside an old model.
    let encoded = encode(&out, path)?;
    let mut files: Vec<(&Path, &[u8])> = vec![(path, &encoded)];
    if let Some((file, bytes)) = &data_file {
        files.push((file, bytes));
    }
    write_all_atomic(&files)
}

/// The model as ONNX bytes (its IR as edited), every tensor inside: what [`save`] writes with
/// [`ExternalData::Embedded`], in memory. `name` names the model in errors.
pub fn to_bytes(model: &OnnxModel, name: &Path) -> Result<Vec<u8>> {
    encode(&to_proto(model)?, name)
}

/// Encodes `out`, refusing what protobuf cannot hold (2 GiB).
fn encode(out: &proto::ModelProto, path: &Path) -> Result<Vec<u8>> {
    let encoded_len = out.encoded_len();
    if encoded_len > i32::MAX as usize {
        return Err(Error::Onnx {
            path: path.to_path_buf(),
            reason: format!(
                "the model would be {encoded_len} bytes, over protobuf's 2 GiB limit; save with external data"
            ),
        });
    }
    Ok(out.encode_to_vec())
}

impl SaveOptions {
    /// How a model read from files is written to `out` as it was read: with external data (one
    /// file `OUT_NAME.data` beside it, tensors of 1 KiB and more) when it was read with external
    /// data, else everything embedded.
    pub fn like_input(model: &OnnxModel, out: &Path) -> SaveOptions {
        if model.sources().len() <= 1 {
            return SaveOptions::default();
        }
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "model.onnx".into());
        SaveOptions {
            external_data: ExternalData::File {
                location: format!("{name}.data"),
                threshold: 1024,
            },
        }
    }
}

/// Whether two paths name the same file (by canonical path; a missing file is compared by its
/// canonical folder and name).
fn same_file(a: &Path, b: &Path) -> bool {
    fn canon(p: &Path) -> Option<PathBuf> {
        if let Ok(c) = std::fs::canonicalize(p) {
            return Some(c);
        }
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        Some(std::fs::canonicalize(parent).ok()?.join(p.file_name()?))
    }
    match (canon(a), canon(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Moves initializers of at least `threshold` bytes into one data blob, each at an offset aligned
/// to 64 bytes; returns the blob.
fn move_to_external(model: &mut proto::ModelProto, location: &str, threshold: usize) -> Vec<u8> {
    let mut blob = Vec::new();
    let graph = model.graph.as_mut().expect("a graph");
    for t in graph.initializer.iter_mut() {
        let bytes = match raw_bytes(t) {
            Some(b) if b.len() >= threshold.max(1) => b,
            _ => continue,
        };
        blob.resize(blob.len().next_multiple_of(64), 0);
        let offset = blob.len();
        blob.extend_from_slice(&bytes);
        let entry = |k: &str, v: String| proto::StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        t.external_data = vec![
            entry("location", location.to_string()),
            entry("offset", offset.to_string()),
            entry("length", bytes.len().to_string()),
        ];
        t.data_location = Some(DataLocation::External as i32);
        t.raw_data = None;
        t.float_data.clear();
        t.int64_data.clear();
        t.int32_data.clear();
    }
    blob
}

/// A tensor's payload as little-endian bytes (raw_data as stored, or the typed field encoded).
fn raw_bytes(t: &proto::TensorProto) -> Option<Vec<u8>> {
    if let Some(r) = &t.raw_data {
        return Some(r.clone());
    }
    let c = decode_tensor(t).ok()?;
    encode_tensor("", &c).raw_data
}

/// The model as protobuf: the original with its graph rebuilt from the IR.
pub fn to_proto(model: &OnnxModel) -> Result<proto::ModelProto> {
    let g = &model.graph;
    let mut out = model.proto.clone();
    let original = model.proto.graph.as_ref().expect("a graph");
    let graph = out.graph.as_mut().expect("a graph");
    let name = |id: usize| g.values[id].name.clone();

    graph.node = g
        .nodes
        .iter()
        .map(|node| {
            let unchanged = model.node_origin.get(&node.name).filter(|o| {
                if let Some(folded) = &o.folded {
                    // Folded at load: the file's nodes (a shape computation, a Reshape of a
                    // constant) are kept while the value is, so a dynamic input stays dynamic.
                    return node.op == Op::Constant
                        && g.values[node.outputs[0]].constant.as_ref() == Some(folded);
                }
                o.op == node.op
                    && o.inputs == node.inputs.iter().map(|i| i.map(name)).collect::<Vec<_>>()
                    && o.outputs == node.outputs.iter().map(|&i| name(i)).collect::<Vec<_>>()
                    && (node.op != Op::Constant
                        || original.node[o.index]
                            .attribute
                            .first()
                            .and_then(|a| a.t.as_ref())
                            .and_then(|t| decode_tensor(t).ok())
                            .as_ref()
                            == g.values[node.outputs[0]].constant.as_ref())
            });
            match unchanged {
                Some(o) => Ok(original.node[o.index].clone()),
                None => new_node(g, node, model.opset),
            }
        })
        .collect::<Result<_>>()?;

    graph.initializer = g
        .values
        .iter()
        .filter(|v| v.initializer)
        .map(|v| {
            let c = v.constant.as_ref().ok_or_else(|| Error::Onnx {
                path: PathBuf::new(),
                reason: format!("initializer '{}' has no value", v.name),
            })?;
            let kept = model
                .initializer_origin
                .get(&v.name)
                .map(|&i| &original.initializer[i])
                .filter(|t| decode_tensor(t).ok().as_ref() == Some(c));
            Ok(match kept {
                Some(t) => t.clone(),
                None => encode_tensor(&v.name, c),
            })
        })
        .collect::<Result<_>>()?;

    let by_name = |list: &[proto::ValueInfoProto]| -> HashMap<String, proto::ValueInfoProto> {
        list.iter()
            .filter_map(|v| Some((v.name.clone()?, v.clone())))
            .collect()
    };
    let (inputs, outputs) = (by_name(&original.input), by_name(&original.output));
    let info = |id: usize, table: &HashMap<String, proto::ValueInfoProto>| {
        let v = &g.values[id];
        match table.get(&v.name) {
            Some(vi) if consistent(vi, &v.shape) => vi.clone(),
            _ => value_info(&v.name, &v.shape),
        }
    };
    let initializer_names: HashSet<&str> = g
        .values
        .iter()
        .filter(|v| v.initializer)
        .map(|v| v.name.as_str())
        .collect();
    let mut new_inputs: Vec<proto::ValueInfoProto> =
        g.inputs.iter().map(|&i| info(i, &inputs)).collect();
    // Initializers that the original also listed as inputs (IR < 4, older PyTorch exports) stay
    // listed, their declared shapes updated to the initializers' (pruning resizes them).
    let names = g.names();
    new_inputs.extend(
        original
            .input
            .iter()
            .filter(|vi| initializer_names.contains(vi.name.as_deref().unwrap_or("")))
            .map(|vi| {
                let id = names[vi.name.as_deref().unwrap_or("")];
                with_dims(vi, &g.values[id].shape)
            }),
    );
    graph.input = new_inputs;
    graph.output = g.outputs.iter().map(|&i| info(i, &outputs)).collect();
    graph.value_info = original
        .value_info
        .iter()
        .filter(|vi| {
            vi.name
                .as_deref()
                .and_then(|n| names.get(n))
                .is_some_and(|&id| consistent(vi, &g.values[id].shape))
        })
        .cloned()
        .collect();
    drop_unused(graph);
    Ok(out)
}

/// Removes what no graph output depends on any more: nodes none of whose outputs is read (their
/// inputs then counted again, so a dead chain goes whole), initializers no node reads (with their
/// graph-input listings), and value infos of names nothing produces. Pruning leaves such things
/// behind (a folded size the IR rewrote as a `Constant`, the shape computation that fed it), and
/// onnxruntime warns about each unused initializer.
fn drop_unused(graph: &mut proto::GraphProto) {
    let mut read: HashMap<&str, usize> = HashMap::new();
    let outputs = graph.output.iter().filter_map(|o| o.name.as_deref());
    for name in outputs.chain(graph.node.iter().flat_map(node_reads)) {
        *read.entry(name).or_default() += 1;
    }
    let mut live = vec![true; graph.node.len()];
    // Nodes come in topological order: one pass from the end retires whole dead chains.
    for (i, node) in graph.node.iter().enumerate().rev() {
        if node
            .output
            .iter()
            .all(|o| read.get(o.as_str()).is_none_or(|&n| n == 0))
        {
            live[i] = false;
            for name in node_reads(node) {
                if let Some(n) = read.get_mut(name) {
                    *n -= 1;
                }
            }
        }
    }
    let read: HashSet<String> = read
        .into_iter()
        .filter(|&(_, n)| n > 0)
        .map(|(k, _)| k.to_string())
        .collect();
    let mut index = 0;
    graph.node.retain(|_| {
        index += 1;
        live[index - 1]
    });
    let is_read = |name: &Option<String>| read.contains(name.as_deref().unwrap_or(""));
    let dropped: HashSet<String> = graph
        .initializer
        .iter()
        .filter(|t| !is_read(&t.name))
        .filter_map(|t| t.name.clone())
        .collect();
    graph.initializer.retain(|t| is_read(&t.name));
    graph
        .input
        .retain(|vi| !dropped.contains(vi.name.as_deref().unwrap_or("")));
    let produced: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .chain(graph.input.iter().filter_map(|vi| vi.name.as_deref()))
        .chain(graph.initializer.iter().filter_map(|t| t.name.as_deref()))
        .collect();
    graph
        .value_info
        .retain(|vi| produced.contains(vi.name.as_deref().unwrap_or("")));
}

/// The names a node reads: its inputs, and the outer names its subgraphs (If, Loop, Scan) use.
fn node_reads(node: &proto::NodeProto) -> Vec<&str> {
    fn graph_reads<'a>(g: &'a proto::GraphProto, out: &mut Vec<&'a str>) {
        for n in &g.node {
            out.extend(node_reads(n));
        }
        out.extend(g.output.iter().filter_map(|o| o.name.as_deref()));
    }
    let mut out: Vec<&str> = node.input.iter().map(String::as_str).collect();
    for a in &node.attribute {
        for g in a.g.iter().chain(&a.graphs) {
            graph_reads(g, &mut out);
        }
    }
    out
}

/// Whether a value info's declared shape (if any) agrees with the IR's. A fixed size where the IR
/// has the batch agrees: the loader reads a graph input's first dimension as the batch whatever
/// the file fixes it to, so a batch-1 export is written back as one (its `Reshape [1, …]` targets
/// hold only that batch in other runtimes).
fn consistent(vi: &proto::ValueInfoProto, shape: &Shape) -> bool {
    use proto::tensor_shape_proto::dimension::Value as D;
    use proto::type_proto::Value as T;
    let Some(T::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return true;
    };
    let Some(s) = &t.shape else { return true };
    s.dim.len() == shape.rank()
        && s.dim
            .iter()
            .zip(&shape.0)
            .all(|(d, ir)| match (&d.value, ir) {
                (Some(D::DimValue(v)), Dim::Fixed(f)) => *v as usize == *f,
                // Symbolic or unset in the file, or a fixed size where the IR has the batch.
                _ => true,
            })
}

/// `vi` with its declared dims replaced by `shape`'s when they disagree (element type, names and
/// documentation kept).
fn with_dims(vi: &proto::ValueInfoProto, shape: &Shape) -> proto::ValueInfoProto {
    use proto::type_proto::Value as T;
    if consistent(vi, shape) {
        return vi.clone();
    }
    let mut out = vi.clone();
    let fresh = value_info("", shape);
    if let (Some(T::TensorType(t)), Some(T::TensorType(f))) = (
        out.r#type.as_mut().and_then(|t| t.value.as_mut()),
        fresh.r#type.and_then(|t| t.value),
    ) {
        t.shape = f.shape;
    }
    out
}

fn value_info(name: &str, shape: &Shape) -> proto::ValueInfoProto {
    use proto::tensor_shape_proto::{dimension::Value as D, Dimension};
    let dim = shape
        .0
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Batch => D::DimParam("N".into()),
                Dim::Fixed(v) => D::DimValue(*v as i64),
            }),
            ..Default::default()
        })
        .collect();
    proto::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(proto::TypeProto {
            value: Some(proto::type_proto::Value::TensorType(
                proto::type_proto::Tensor {
                    elem_type: Some(proto::tensor_proto::DataType::Float as i32),
                    shape: Some(proto::TensorShapeProto { dim }),
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn attr_int(name: &str, v: i64) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn attr_float(name: &str, v: f32) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[usize]) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

/// A string attribute.
pub(super) fn attr_string(name: &str, v: &str) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

fn window_attrs(w: &Window, out: &mut Vec<proto::AttributeProto>) {
    out.push(attr_ints("kernel_shape", &w.kernel));
    out.push(attr_ints("strides", &w.strides));
    if w.dilations != [1, 1] {
        out.push(attr_ints("dilations", &w.dilations));
    }
    match w.padding {
        Padding::Explicit(p) => out.push(attr_ints("pads", &p)),
        Padding::SameUpper => out.push(attr_string("auto_pad", "SAME_UPPER")),
        Padding::SameLower => out.push(attr_string("auto_pad", "SAME_LOWER")),
    }
}

/// A node encoded from the IR (a node that is new or changed).
fn new_node(g: &Graph, node: &Node, opset: i64) -> Result<proto::NodeProto> {
    let mut attribute = Vec::new();
    let mut inputs = node.inputs.clone();
    match &node.op {
        Op::Conv(c) => {
            window_attrs(&c.window, &mut attribute);
            attribute.push(attr_int("group", c.group as i64));
        }
        Op::Gemm(gm) => {
            attribute.push(attr_float("alpha", gm.alpha));
            attribute.push(attr_float("beta", gm.beta));
            attribute.push(attr_int("transA", gm.trans_a as i64));
            attribute.push(attr_int("transB", gm.trans_b as i64));
        }
        Op::BatchNorm { epsilon } => attribute.push(attr_float("epsilon", *epsilon)),
        Op::Unary(Unary::LeakyRelu { alpha }) => attribute.push(attr_float("alpha", *alpha)),
        Op::Unary(Unary::HardSigmoid { alpha, beta }) => {
            attribute.push(attr_float("alpha", *alpha));
            attribute.push(attr_float("beta", *beta));
        }
        Op::Pool { kind, window } => {
            window_attrs(window, &mut attribute);
            if window.ceil_mode {
                attribute.push(attr_int("ceil_mode", 1));
            }
            if let PoolKind::Average { count_include_pad } = kind {
                attribute.push(attr_int("count_include_pad", *count_include_pad as i64));
            }
        }
        Op::Flatten { axis } => attribute.push(attr_int("axis", *axis as i64)),
        Op::Reshape { allow_zero, .. } => {
            if *allow_zero {
                attribute.push(attr_int("allowzero", 1));
            }
        }
        Op::Concat { axis } | Op::Gather { axis, .. } => {
            attribute.push(attr_int("axis", *axis as i64))
        }
        Op::Softmax { axis, .. } => attribute.push(attr_int("axis", *axis as i64)),
        Op::Pad { mode, .. } => attribute.push(attr_string(
            "mode",
            match mode {
                crate::ir::PadMode::Constant => "constant",
                crate::ir::PadMode::Reflect => "reflect",
                crate::ir::PadMode::Edge => "edge",
            },
        )),
        Op::Constant => {
            let out = &g.values[node.outputs[0]];
            let c = out
                .constant
                .as_ref()
                .ok_or_else(|| node.error("the Constant's output has no value"))?;
            attribute.push(proto::AttributeProto {
                name: Some("value".into()),
                r#type: Some(AttributeType::Tensor as i32),
                t: Some(encode_tensor(&out.name, c)),
                ..Default::default()
            });
        }
        Op::Transpose { perm } => attribute.push(attr_ints("perm", perm)),
        Op::Lrn(lrn) => {
            attribute.push(attr_int("size", lrn.size as i64));
            attribute.push(attr_float("alpha", lrn.alpha));
            attribute.push(attr_float("beta", lrn.beta));
            attribute.push(attr_float("bias", lrn.bias));
        }
        // Their parameters live in opset-dependent inputs; pruning never changes them (the
        // analysis keeps their channels), so only an edit by hand gets here.
        // A channel Split whose part sizes follow the pruned channels (`analysis::rules`): the
        // sizes travel as an input from opset 13, as the `split` attribute before.
        Op::Split { axis, sizes } => {
            attribute.push(attr_int("axis", *axis as i64));
            if opset < 13 {
                attribute.push(attr_ints("split", sizes));
                inputs.truncate(1);
            }
        }
        Op::Resize(_) | Op::ConvTranspose(_) | Op::Reduce { .. } => {
            return Err(node.error("a changed node of this op cannot be written back"))
        }
        // Parameters of these travel as inputs (Clip bounds, Slice ranges) or there are none.
        Op::Nary(_)
        | Op::GlobalMaxPool
        | Op::MatMul
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::GlobalAveragePool
        | Op::Slice { .. }
        | Op::Expand { .. }
        | Op::Identity => {}
    }
    Ok(proto::NodeProto {
        input: inputs
            .iter()
            .map(|i| i.map(|v| g.values[v].name.clone()).unwrap_or_default())
            .collect(),
        output: node
            .outputs
            .iter()
            .map(|&o| g.values[o].name.clone())
            .collect(),
        name: Some(node.name.clone()),
        op_type: Some(node.op.kind().to_string()),
        attribute,
        ..Default::default()
    })
}
