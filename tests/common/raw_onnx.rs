//! Models for the tests of large graphs, option values and the ONNX reader's fuzzing: a long
//! element-wise chain (built with the library's `subprune::synthetic::Builder`), and a graph
//! attribute nested many levels deep (raw protobuf: the builder writes no graph attributes).
//! Included with `#[path = "common/raw_onnx.rs"]` by the files that use it.

#![allow(dead_code)]

use subprune::onnx::proto::{self, AttributeProto};
use subprune::synthetic::{int, ints, Builder};

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
    let mut b = Builder::new(11);
    let (w, bias) = (b.weight(&[4, 3, 1, 1], 0.5), b.weight(&[4], 0.3));
    let mut x = b.node(
        "Conv",
        &["x", &w, &bias],
        vec![ints("kernel_shape", &[1, 1])],
    );
    let (one, half) = (b.floats(&[], &[1.0]), b.floats(&[], &[0.5]));
    for i in 0..n {
        x = match i % 3 {
            0 => b.node("Relu", &[&x], vec![]),
            1 => b.node("Add", &[&x, &one], vec![]),
            _ => b.node("Mul", &[&x, &half], vec![]),
        };
    }
    if reversed {
        b.reverse_nodes(1..n + 1);
    }
    let x = b.node("GlobalAveragePool", &[&x], vec![]);
    let x = b.node("Flatten", &[&x], vec![int("axis", 1)]);
    let (w, bias) = (b.weight(&[2, 4], 0.5), b.weight(&[2], 0.1));
    let y = b.node("Gemm", &[&x, &w, &bias], vec![int("transB", 1)]);
    b.model("chain", &[3, 4, 4], &y, 13)
}
