//! Models written by `prune` are read by the tools users will load them with: the ONNX checker's
//! full check (shape inference compared with every declaration) and an onnxruntime session that
//! runs them, on every fixture and variant, with external data, and on a model that declares its
//! initializers as graph inputs (older PyTorch exports).
//!
//! Python with `onnx`, `onnxruntime` and `numpy` is found through `SUBPRUNE_PYTHON` (set by
//! `.ci/run`, which makes a virtual environment), else a `python3` that imports them; without
//! one these tests say so and pass, except under `CI=true`, where they fail.

mod common;

use std::path::Path;
use std::process::Command;

use common::files::{command, scratch, succeeded};
use common::fixture;
use common::python::python;
use prost::Message;
use subprune::onnx::proto;

/// Runs `tests/check_onnx.py` on `model`: the checker's full check, then onnxruntime.
fn check_with_onnx(py: &Path, model: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check_onnx.py");
    let out = Command::new(py).arg(script).arg(model).output().unwrap();
    assert!(
        out.status.success(),
        "{} fails the ONNX checker or onnxruntime:\n{}",
        model.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Prunes `model` (a path) with `variant` on the CPU, 64 calibration images (or `images`).
fn prune(model: &Path, calib: &str, variant: &str, images: usize, out: &Path) {
    let output = command()
        .arg("prune")
        .arg(model)
        .args(["--calib", fixture(calib).to_str().unwrap()])
        .args(["--calib-images", &images.to_string(), "--variant", variant])
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    succeeded(&output);
}

#[test]
fn pruned_fixtures_pass_the_onnx_checker_and_load_in_onnxruntime() {
    let Some(py) = python() else { return };
    let dir = scratch("checker-fixtures");
    // Every variant on mnist and mobilenetv2, every fixture at least once; vgg11 (the slowest)
    // with fewer images.
    let cases = [
        ("mnist_cnn", "mnist", "layer", 64),
        ("mnist_cnn", "mnist", "seq", 64),
        ("mnist_cnn", "mnist", "asym", 64),
        ("mobilenetv2_fashion", "fashion", "layer", 64),
        ("mobilenetv2_fashion", "fashion", "seq", 64),
        ("mobilenetv2_fashion", "fashion", "asym", 64),
        ("resnet56_cifar10", "cifar10", "asym", 64),
        ("vgg11_bn_fashion", "fashion", "layer", 16),
    ];
    for (model, data, variant, images) in cases {
        let out = dir.join(format!("{model}_{variant}.onnx"));
        let calib = format!("{data}_calib_512.npy");
        prune(
            &fixture(&format!("{model}.onnx")),
            &calib,
            variant,
            images,
            &out,
        );
        check_with_onnx(&py, &out);
    }
    // A model with external data is written with external data.
    let model = subprune::onnx::load(fixture("mnist_cnn.onnx")).unwrap();
    let external = subprune::onnx::SaveOptions {
        external_data: subprune::onnx::ExternalData::File {
            location: "ext.onnx.data".into(),
            threshold: 1024,
        },
    };
    subprune::onnx::save(&model, dir.join("ext.onnx"), &external).unwrap();
    let out = dir.join("ext_pruned.onnx");
    prune(
        &dir.join("ext.onnx"),
        "mnist_calib_512.npy",
        "seq",
        64,
        &out,
    );
    assert!(dir.join("ext_pruned.onnx.data").exists());
    check_with_onnx(&py, &out);
}

/// mnist_cnn with every initializer also declared as a graph input, as PyTorch exported models
/// before ONNX IR 4 (`keep_initializers_as_inputs`).
fn initializers_as_inputs(path: &Path) {
    let bytes = std::fs::read(fixture("mnist_cnn.onnx")).unwrap();
    let mut model = proto::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let declared: Vec<proto::ValueInfoProto> = graph
        .initializer
        .iter()
        .map(|t| proto::ValueInfoProto {
            name: t.name.clone(),
            r#type: Some(proto::TypeProto {
                value: Some(proto::type_proto::Value::TensorType(
                    proto::type_proto::Tensor {
                        elem_type: t.data_type,
                        shape: Some(proto::TensorShapeProto {
                            dim: t.dims.iter().map(|&d| dim(d)).collect(),
                        }),
                    },
                )),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    graph.input.extend(declared);
    std::fs::write(path, model.encode_to_vec()).unwrap();
}

fn dim(d: i64) -> proto::tensor_shape_proto::Dimension {
    proto::tensor_shape_proto::Dimension {
        value: Some(proto::tensor_shape_proto::dimension::Value::DimValue(d)),
        ..Default::default()
    }
}

/// The declared dims of a graph input (fixed dims only).
fn declared_dims(vi: &proto::ValueInfoProto) -> Vec<i64> {
    use proto::tensor_shape_proto::dimension::Value as D;
    let Some(proto::type_proto::Value::TensorType(t)) =
        vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        panic!("input {:?} has no tensor type", vi.name)
    };
    t.shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| match d.value {
            Some(D::DimValue(v)) => v,
            _ => -1,
        })
        .collect()
}

#[test]
fn initializers_declared_as_inputs_get_their_pruned_shapes() {
    let dir = scratch("initializer-inputs");
    let model = dir.join("old_export.onnx");
    initializers_as_inputs(&model);
    let out = dir.join("pruned.onnx");
    prune(&model, "mnist_calib_512.npy", "seq", 64, &out);
    let written = proto::ModelProto::decode(std::fs::read(&out).unwrap().as_slice()).unwrap();
    let graph = written.graph.unwrap();
    let original = proto::ModelProto::decode(std::fs::read(&model).unwrap().as_slice())
        .unwrap()
        .graph
        .unwrap();
    let mut resized = 0;
    for t in &graph.initializer {
        let declared: Vec<_> = graph.input.iter().filter(|i| i.name == t.name).collect();
        assert_eq!(
            declared.len(),
            1,
            "{:?} declared {} times",
            t.name,
            declared.len()
        );
        assert_eq!(declared_dims(declared[0]), t.dims, "{:?}", t.name);
        resized += original
            .initializer
            .iter()
            .any(|o| o.name == t.name && o.dims != t.dims) as usize;
    }
    assert!(resized > 0, "nothing was pruned");
    if let Some(py) = python() {
        check_with_onnx(&py, &model);
        check_with_onnx(&py, &out);
    }
}
