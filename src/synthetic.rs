//! Synthetic networks of a real architecture's shape, with seeded random weights: what the
//! benchmarks prune when the size of the network matters and its accuracy does not (no trained
//! ResNet-50 ships with subprune, and none is downloaded).
//!
//! [`resnet50`] builds torchvision's ResNet-50 (v1.5: the stride on the 3×3 conv of each
//! bottleneck) as an ONNX model in memory: 7×7/2 stem, 3×3/2 max-pool, bottleneck stages of
//! 3, 4, 6, 3 blocks (widths 64, 128, 256, 512, expansion 4, 1×1 projection shortcuts on the
//! first block of each stage), global average pool and a fully connected classifier. Every conv
//! is followed by BatchNormalization. Weights are He-normal, BatchNorm statistics are those of a
//! unit-variance input, and the last BatchNorm of each residual branch is scaled by 0.2 (as
//! trained ResNets' are small there), so activations stay of order one through all 16 blocks.
//! Prunable layers are the first two convs of every bottleneck (32 producers, each feeding one
//! conv), as in the pruning literature; block outputs are coupled through the residual adds.

use std::path::Path;

use crate::error::Result;
use crate::onnx::proto::{
    self, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto,
};
use crate::onnx::OnnxModel;
use crate::rng::Rng;

/// Builds a ResNet-50-shaped model for `size × size` RGB images and `classes` outputs, with
/// weights drawn from `seed`. The batch dimension is symbolic.
pub fn resnet50(seed: u64, size: usize, classes: usize) -> Result<OnnxModel> {
    let mut b = Builder::new(seed);
    let mut x = "x".to_string();
    x = b.conv_bn(&x, 3, 64, 7, 2, 1.0, true);
    x = b.node(
        "MaxPool",
        &[&x],
        vec![
            ints("kernel_shape", &[3, 3]),
            ints("strides", &[2, 2]),
            ints("pads", &[1, 1, 1, 1]),
        ],
    );
    let mut channels = 64;
    for (stage, (&blocks, &width)) in [3, 4, 6, 3].iter().zip(&[64, 128, 256, 512]).enumerate() {
        for block in 0..blocks {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let out = 4 * width;
            let shortcut = if block == 0 {
                b.conv_bn(&x, channels, out, 1, stride, 1.0, false)
            } else {
                x.clone()
            };
            let h = b.conv_bn(&x, channels, width, 1, 1, 1.0, true);
            let h = b.conv_bn(&h, width, width, 3, stride, 1.0, true);
            let h = b.conv_bn(&h, width, out, 1, 1, 0.2, false);
            let sum = b.node("Add", &[&h, &shortcut], vec![]);
            x = b.node("Relu", &[&sum], vec![]);
            channels = out;
        }
    }
    let pooled = b.node("GlobalAveragePool", &[&x], vec![]);
    let flat = b.node("Flatten", &[&pooled], vec![int("axis", 1)]);
    let w = b.weight(&[classes, channels], (1.0 / channels as f64).sqrt());
    let bias = b.floats(&[classes], &vec![0.0; classes]);
    let logits = b.node("Gemm", &[&flat, &w, &bias], vec![int("transB", 1)]);
    let bytes = b.model("resnet50", &[3, size, size], &logits, 17);
    crate::onnx::load_bytes(Path::new("synthetic-resnet50.onnx"), &bytes)
}

/// An attribute `name` of type `kind`, its value set by `set`.
fn attribute(
    name: &str,
    kind: AttributeType,
    set: impl FnOnce(&mut AttributeProto),
) -> AttributeProto {
    let mut a = AttributeProto {
        name: Some(name.into()),
        r#type: Some(kind as i32),
        ..Default::default()
    };
    set(&mut a);
    a
}

/// An `int` attribute.
pub fn int(name: &str, v: i64) -> AttributeProto {
    attribute(name, AttributeType::Int, |a| a.i = Some(v))
}

/// An `ints` attribute.
pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
    attribute(name, AttributeType::Ints, |a| a.ints = v.to_vec())
}

/// A `float` attribute.
pub fn float(name: &str, v: f32) -> AttributeProto {
    attribute(name, AttributeType::Float, |a| a.f = Some(v))
}

/// A `string` attribute.
pub fn string(name: &str, v: &str) -> AttributeProto {
    attribute(name, AttributeType::String, |a| {
        a.s = Some(v.as_bytes().to_vec())
    })
}

/// Builds an ONNX model node by node, with seeded random weights: the synthetic networks here,
/// and the small models of every op the tests run. The graph input is `"x"` (float32, symbolic
/// batch dimension); each node's one output is named after the node.
pub struct Builder {
    nodes: Vec<proto::NodeProto>,
    initializers: Vec<proto::TensorProto>,
    rng: Rng,
}

impl Builder {
    /// An empty graph whose weights will be drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            nodes: Vec::new(),
            initializers: Vec::new(),
            rng: Rng::new(seed),
        }
    }

    /// A float32 initializer of shape `dims` holding `data` (stored as raw bytes); returns its name.
    pub fn floats(&mut self, dims: &[usize], data: &[f32]) -> String {
        let name = format!("w{}", self.initializers.len());
        self.initializers.push(proto::TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(DataType::Float as i32),
            name: Some(name.clone()),
            raw_data: Some(bytemuck::cast_slice(data).to_vec()),
            ..Default::default()
        });
        name
    }

    /// A 1-D int64 initializer (shapes, pads, slice bounds); returns its name.
    pub fn ints(&mut self, data: &[i64]) -> String {
        let name = format!("w{}", self.initializers.len());
        self.initializers.push(proto::TensorProto {
            dims: vec![data.len() as i64],
            data_type: Some(DataType::Int64 as i32),
            name: Some(name.clone()),
            raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        });
        name
    }

    /// A float32 initializer of shape `dims`, normal with standard deviation `std`.
    pub fn weight(&mut self, dims: &[usize], std: f64) -> String {
        let n: usize = dims.iter().product();
        let data: Vec<f32> = (0..n).map(|_| (self.rng.normal() * std) as f32).collect();
        self.floats(dims, &data)
    }

    /// A `Constant` node whose value is the float32 scalar `v`, written in the tensor's
    /// `float_data` field (as older exporters do); returns its output's name.
    pub fn constant(&mut self, v: f32) -> String {
        let tensor = proto::TensorProto {
            data_type: Some(DataType::Float as i32),
            float_data: vec![v],
            ..Default::default()
        };
        let value = AttributeProto {
            name: Some("value".into()),
            r#type: Some(AttributeType::Tensor as i32),
            t: Some(tensor),
            ..Default::default()
        };
        self.node("Constant", &[], vec![value])
    }

    /// Appends a node of type `op` reading `inputs` (an empty name: an absent optional input);
    /// returns its output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        self.node_outputs(op, inputs, attribute, 1).remove(0)
    }

    /// [`Builder::node`] with `outputs` outputs (a Split); returns their names.
    pub fn node_outputs(
        &mut self,
        op: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
        outputs: usize,
    ) -> Vec<String> {
        let name = format!("{op}_{}", self.nodes.len());
        let out: Vec<String> = match outputs {
            1 => vec![format!("{name}_out")],
            n => (0..n).map(|k| format!("{name}_out{k}")).collect(),
        };
        self.nodes.push(proto::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: out.clone(),
            name: Some(name),
            op_type: Some(op.into()),
            attribute,
            ..Default::default()
        });
        out
    }

    /// Writes the nodes at `range` (in the order they were added) in reverse: a file whose nodes
    /// are not in topological order, as ONNX allows.
    pub fn reverse_nodes(&mut self, range: std::ops::Range<usize>) {
        self.nodes[range].reverse();
    }

    /// Conv (no bias, He-normal) → BatchNormalization (scale `gamma`) → optional Relu.
    #[allow(clippy::too_many_arguments)]
    fn conv_bn(
        &mut self,
        x: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        gamma: f32,
        relu: bool,
    ) -> String {
        let w = self.weight(&[cout, cin, k, k], (2.0 / (cin * k * k) as f64).sqrt());
        let pad = (k / 2) as i64;
        let y = self.node(
            "Conv",
            &[x, &w],
            vec![
                ints("kernel_shape", &[k as i64, k as i64]),
                ints("strides", &[stride as i64, stride as i64]),
                ints("pads", &[pad, pad, pad, pad]),
            ],
        );
        // A He-normal conv of a unit-scale ReLU input has mean ≈ 0 and variance ≈ 1 per channel
        // (up to the random draw); BatchNorm then mostly applies gamma.
        let scale = self.floats(&[cout], &vec![gamma; cout]);
        let bias = self.floats(&[cout], &vec![0.0; cout]);
        let mean = self.floats(&[cout], &vec![0.0; cout]);
        let var = self.floats(&[cout], &vec![1.0; cout]);
        let y = self.node(
            "BatchNormalization",
            &[&y, &scale, &bias, &mean, &var],
            vec![],
        );
        if relu {
            self.node("Relu", &[&y], vec![])
        } else {
            y
        }
    }

    /// The encoded model: graph `name`, input `"x"` of shape `(N, input…)`, output `output`,
    /// default-domain opset `opset`.
    pub fn model(self, name: &str, input: &[usize], output: &str, opset: i64) -> Vec<u8> {
        use prost::Message;
        let value_info = |name: &str, dims: Option<&[usize]>| proto::ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(proto::TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(DataType::Float as i32),
                    shape: dims.map(|d| proto::TensorShapeProto {
                        dim: std::iter::once(tensor_shape_proto::dimension::Value::DimParam(
                            "N".into(),
                        ))
                        .chain(
                            d.iter()
                                .map(|&v| tensor_shape_proto::dimension::Value::DimValue(v as i64)),
                        )
                        .map(|value| tensor_shape_proto::Dimension {
                            value: Some(value),
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
            producer_name: Some("subprune synthetic".into()),
            opset_import: vec![proto::OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(opset),
            }],
            graph: Some(proto::GraphProto {
                node: self.nodes,
                name: Some(name.into()),
                initializer: self.initializers,
                input: vec![value_info("x", Some(input))],
                output: vec![value_info(output, None)],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }
}
