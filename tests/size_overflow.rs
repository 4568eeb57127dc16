//! Sizes that do not fit (issue 24, item 5): every shape, FLOP and byte product of the IR is
//! checked; an impossible size is an error naming the value and the node whose attribute or
//! input makes it, never a wrapped product or an overflow panic.

use std::path::{Path, PathBuf};

use prost::Message;
use subprune::onnx::proto::{self, attribute_proto::AttributeType, tensor_shape_proto};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn mnist() -> proto::ModelProto {
    let bytes = std::fs::read(fixture("mnist_cnn.onnx")).unwrap();
    proto::ModelProto::decode(bytes.as_slice()).unwrap()
}

/// The error of loading `model` (which must fail).
fn load_error(model: &proto::ModelProto) -> String {
    let bytes = model.encode_to_vec();
    match subprune::onnx::load_bytes(Path::new("m.onnx"), &bytes) {
        Ok(m) => panic!("loaded, input {}", m.graph.values[m.graph.inputs[0]].shape),
        Err(e) => e.to_string(),
    }
}

fn set_input_height(model: &mut proto::ModelProto, height: i64) {
    let input = &mut model.graph.as_mut().unwrap().input[0];
    let Some(proto::type_proto::Value::TensorType(t)) =
        input.r#type.as_mut().unwrap().value.as_mut()
    else {
        panic!("a tensor input")
    };
    t.shape.as_mut().unwrap().dim[2].value =
        Some(tensor_shape_proto::dimension::Value::DimValue(height));
}

/// Sets (or adds) the ints attribute `name` of the first node of type `op`; returns its name.
fn set_ints(model: &mut proto::ModelProto, op: &str, name: &str, ints: Vec<i64>) -> String {
    let node = model
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type.as_deref() == Some(op))
        .unwrap();
    node.attribute.retain(|a| a.name.as_deref() != Some(name));
    node.attribute.push(proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints,
        ..Default::default()
    });
    node.name.clone().unwrap()
}

#[test]
fn an_input_dimension_whose_image_size_wraps_is_refused_naming_it() {
    let mut model = mnist();
    let huge = 28 + (1i64 << 60);
    set_input_height(&mut model, huge);
    let e = load_error(&model);
    assert!(
        e.contains(&huge.to_string()) && e.contains("'input'"),
        "{e}"
    );
}

#[test]
fn flops_that_overflow_name_the_node() {
    // The input fits (2^55 × 28 values per image); conv1's 32 × 2^55 × 26 outputs × 9 MACs do not.
    let mut model = mnist();
    set_input_height(&mut model, 1 << 55);
    let e = load_error(&model);
    assert!(e.contains("conv1"), "{e}");
}

#[test]
fn huge_conv_pads_name_the_conv() {
    for pads in [vec![1 << 62, 0, 1 << 62, 0], vec![0, i64::MAX, 0, i64::MAX]] {
        let mut model = mnist();
        let conv = set_ints(&mut model, "Conv", "pads", pads.clone());
        let e = load_error(&model);
        assert!(e.contains(&format!("'{conv}'")), "pads {pads:?}: {e}");
        assert!(e.contains("overflow") || e.contains("too large"), "{e}");
    }
}

#[test]
fn huge_pool_pads_kernels_and_dilations_name_the_pool() {
    for (attr, ints) in [
        ("pads", vec![1 << 62, 1 << 62, 1 << 62, 1 << 62]),
        ("dilations", vec![i64::MAX, 1]),
        ("kernel_shape", vec![1 << 62, 2]),
    ] {
        let mut model = mnist();
        let pool = set_ints(&mut model, "MaxPool", attr, ints.clone());
        let msg = load_error(&model);
        assert!(msg.contains(&format!("'{pool}'")), "{attr} {ints:?}: {msg}");
    }
}
