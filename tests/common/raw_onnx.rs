//! Raw protobuf models for what the library's builder (`subprune::synthetic::Builder`) cannot
//! express: node order in the file (a chain written backwards), nested graph attributes. Included
//! with `#[path = "common/raw_onnx.rs"]` by the tests of large graphs, option values and fuzzing.

#![allow(dead_code)]

use prost::Message;
use subprune::onnx::proto::{
    self, tensor_proto::DataType, tensor_shape_proto, type_proto, AttributeProto,
};

/// A float initializer.
fn floats(name: &str, dims: &[i64], data: Vec<f32>) -> proto::TensorProto {
    proto::TensorProto {
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        name: Some(name.into()),
        float_data: data,
        ..Default::default()
    }
}

fn node(op: &str, name: String, inputs: &[&str], output: &str) -> proto::NodeProto {
    proto::NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: Some(name),
        op_type: Some(op.into()),
        ..Default::default()
    }
}

fn int_attr(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Int as i32),
        i: Some(value),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: Option<&[i64]>) -> proto::ValueInfoProto {
    use tensor_shape_proto::dimension::Value as D;
    // The first dimension is the symbolic batch.
    let dim = |(i, &v): (usize, &i64)| tensor_shape_proto::Dimension {
        value: Some(if i == 0 {
            D::DimParam("N".into())
        } else {
            D::DimValue(v)
        }),
        ..Default::default()
    };
    let shape = dims.map(|d| proto::TensorShapeProto {
        dim: d.iter().enumerate().map(dim).collect(),
    });
    let tensor = type_proto::Tensor {
        elem_type: Some(DataType::Float as i32),
        shape,
    };
    proto::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(proto::TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A graph whose one node holds a graph attribute, `levels` deep (past prost's recursion limit
/// of 100 the model cannot be decoded).
pub fn nested_graph(levels: usize) -> Option<proto::GraphProto> {
    let mut nested: Option<proto::GraphProto> = None;
    for _ in 0..levels {
        nested = Some(proto::GraphProto {
            node: vec![proto::NodeProto {
                op_type: Some("Loop".into()),
                attribute: vec![AttributeProto {
                    name: Some("body".into()),
                    r#type: Some(proto::attribute_proto::AttributeType::Graph as i32),
                    g: nested.take(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    nested
}

/// `x [N,3,4,4] → Conv(3→4, 1×1) → n × (Relu | Add c | Mul c) → GlobalAveragePool → Flatten →
/// Gemm(4→2)`, the chain's nodes listed in reverse when `reversed` (the file need not be sorted).
pub fn chain_model(n: usize, reversed: bool) -> Vec<u8> {
    let mut nodes = vec![node("Conv", "conv".into(), &["x", "cw", "cb"], "c0")];
    let mut chain = Vec::with_capacity(n);
    for i in 0..n {
        let (input, output) = (format!("c{i}"), format!("c{}", i + 1));
        chain.push(match i % 3 {
            0 => node("Relu", format!("relu{i}"), &[&input], &output),
            1 => node("Add", format!("add{i}"), &[&input, "one"], &output),
            _ => node("Mul", format!("mul{i}"), &[&input, "half"], &output),
        });
    }
    if reversed {
        chain.reverse();
    }
    nodes.extend(chain);
    let last = format!("c{n}");
    nodes.push(node("GlobalAveragePool", "gap".into(), &[&last], "g"));
    let mut flatten = node("Flatten", "flat".into(), &["g"], "f");
    flatten.attribute.push(int_attr("axis", 1));
    nodes.push(flatten);
    let mut gemm = node("Gemm", "fc".into(), &["f", "fw", "fb"], "y");
    gemm.attribute.push(int_attr("transB", 1));
    nodes.push(gemm);
    let weights = |k: usize| (0..k).map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.4).collect();
    proto::ModelProto {
        ir_version: Some(8),
        opset_import: vec![proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(proto::GraphProto {
            node: nodes,
            name: Some("chain".into()),
            initializer: vec![
                floats("cw", &[4, 3, 1, 1], weights(12)),
                floats("cb", &[4], weights(4)),
                floats("one", &[], vec![1.0]),
                floats("half", &[], vec![0.5]),
                floats("fw", &[2, 4], weights(8)),
                floats("fb", &[2], weights(2)),
            ],
            input: vec![value_info("x", Some(&[1, 3, 4, 4]))],
            output: vec![value_info("y", None)],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}
