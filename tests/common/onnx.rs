//! Shared by the ONNX tests: the fixtures (models, calibration images), tract-onnx as the
//! reference runtime, and a builder of small synthetic ONNX models.
//!
//! Included with `#[path = "common/onnx.rs"] mod onnx_common;` (so that the tests of other
//! files do not compile tract).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use prost::Message;
use subprune::npy;
use subprune::onnx::proto::{
    self, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
};
use subprune::rng::Rng;
use subprune::tensor::Tensor;
use tract_onnx::prelude::{
    tvec, DatumType, Framework, InferenceFact, InferenceModelExt, IntoRunnable, IntoTValue,
    Tensor as TractTensor,
};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The models with their calibration data (already preprocessed float32).
pub const MODELS: [(&str, &str); 4] = [
    ("mnist_cnn.onnx", "mnist_calib_512.npy"),
    ("resnet56_cifar10.onnx", "cifar10_calib_512.npy"),
    ("vgg11_bn_fashion.onnx", "fashion_calib_512.npy"),
    ("mobilenetv2_fashion.onnx", "fashion_calib_512.npy"),
];

/// The first `n` images of a calibration file.
pub fn first_images(file: &str, n: usize) -> Tensor {
    let t = npy::read_f32(fixture(file)).unwrap();
    let per: usize = t.shape[1..].iter().product();
    let mut shape = t.shape.clone();
    shape[0] = n;
    Tensor::new(shape, t.data[..n * per].to_vec()).unwrap()
}

/// tract's logits for `images` on the model at `path`.
pub fn tract_logits(path: &Path, images: &Tensor) -> Vec<f32> {
    let model = tract_onnx::onnx()
        .model_for_path(path)
        .unwrap()
        .with_input_fact(
            0,
            InferenceFact::dt_shape(DatumType::F32, images.shape.clone()),
        )
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input = TractTensor::from_shape(&images.shape, &images.data).unwrap();
    let out = model.run(tvec!(input.into_tvalue())).unwrap();
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// Largest |a − b| relative to the largest |b|.
pub fn relative_gap(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    let gap = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    gap / scale
}

/// Builds a model graph step by step.
pub struct Builder {
    pub nodes: Vec<proto::NodeProto>,
    pub inits: Vec<proto::TensorProto>,
    pub rng: Rng,
    pub count: usize,
}

pub enum A {
    I(i64),
    F(f32),
    Is(Vec<i64>),
    S(&'static str),
}

impl Builder {
    pub fn new(seed: u64) -> Self {
        Self {
            nodes: vec![],
            inits: vec![],
            rng: Rng::new(seed),
            count: 0,
        }
    }

    pub fn weight(&mut self, dims: &[usize]) -> String {
        let n: usize = dims.iter().product();
        let data: Vec<f32> = (0..n).map(|_| self.rng.normal() as f32 * 0.3).collect();
        self.floats(dims, &data)
    }

    pub fn floats(&mut self, dims: &[usize], data: &[f32]) -> String {
        let name = format!("w{}", self.inits.len());
        self.inits.push(proto::TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(DataType::Float as i32),
            name: Some(name.clone()),
            float_data: data.to_vec(),
            ..Default::default()
        });
        name
    }

    pub fn ints(&mut self, data: &[i64]) -> String {
        let name = format!("w{}", self.inits.len());
        self.inits.push(proto::TensorProto {
            dims: vec![data.len() as i64],
            data_type: Some(DataType::Int64 as i32),
            name: Some(name.clone()),
            raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        });
        name
    }

    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, A)>) -> String {
        self.count += 1;
        let out = format!("v{}", self.count);
        let attribute = attrs
            .into_iter()
            .map(|(name, a)| {
                let mut p = proto::AttributeProto {
                    name: Some(name.into()),
                    ..Default::default()
                };
                match a {
                    A::I(v) => {
                        p.r#type = Some(AttributeType::Int as i32);
                        p.i = Some(v);
                    }
                    A::F(v) => {
                        p.r#type = Some(AttributeType::Float as i32);
                        p.f = Some(v);
                    }
                    A::Is(v) => {
                        p.r#type = Some(AttributeType::Ints as i32);
                        p.ints = v;
                    }
                    A::S(v) => {
                        p.r#type = Some(AttributeType::String as i32);
                        p.s = Some(v.as_bytes().to_vec());
                    }
                }
                p
            })
            .collect();
        self.nodes.push(proto::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: Some(format!("n{}_{op}", self.count)),
            op_type: Some(op.into()),
            attribute,
            ..Default::default()
        });
        out
    }

    pub fn model(self, input: &[usize], output: &str, opset: i64) -> Vec<u8> {
        let vi = |name: &str, dims: Option<&[usize]>| proto::ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(proto::TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(DataType::Float as i32),
                    shape: dims.map(|d| proto::TensorShapeProto {
                        dim: d
                            .iter()
                            .enumerate()
                            .map(|(i, &v)| tensor_shape_proto::Dimension {
                                value: Some(if i == 0 {
                                    tensor_shape_proto::dimension::Value::DimParam("N".into())
                                } else {
                                    tensor_shape_proto::dimension::Value::DimValue(v as i64)
                                }),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        proto::ModelProto {
            ir_version: Some(8),
            opset_import: vec![proto::OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(opset),
            }],
            graph: Some(proto::GraphProto {
                node: self.nodes,
                name: Some("g".into()),
                initializer: self.inits,
                input: vec![vi("x", Some(input))],
                output: vec![vi(output, None)],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }
}
