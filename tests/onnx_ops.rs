//! Every supported op against tract-onnx on small synthetic models with awkward sizes (odd
//! spatial sizes, strides, dilations, asymmetric pads, groups), random weights and inputs.

use subprune::exec::{CpuExecutor, Executor};
use subprune::onnx::proto::{self, attribute_proto::AttributeType, tensor_proto::DataType};
use subprune::rng::Rng;
use subprune::tensor::TensorView;
use tract_onnx::prelude::{
    tvec, DatumType, Framework, InferenceFact, InferenceModelExt, IntoRunnable, IntoTValue,
    Tensor as TractTensor,
};

#[path = "common/onnx.rs"]
mod onnx_common;

use onnx_common::{Builder, A};

/// Runs `bytes` on both runtimes for `n` random images of `shape[1..]` and compares.
fn check(label: &str, bytes: &[u8], shape: &[usize], n: usize) {
    let dir = std::env::temp_dir().join(format!("subprune-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{label}.onnx"));
    std::fs::write(&path, bytes).unwrap();
    let mut dims = shape.to_vec();
    dims[0] = n;
    let count: usize = dims.iter().product();
    let mut rng = Rng::new(99);
    let x: Vec<f32> = (0..count).map(|_| rng.normal() as f32).collect();
    let model = subprune::onnx::load(&path).unwrap_or_else(|e| panic!("{label}: {e}"));
    let exec = CpuExecutor::new(&model.graph).unwrap_or_else(|e| panic!("{label}: {e}"));
    let ours = exec
        .run_batch(TensorView::new(&dims, &x).unwrap(), &[], &mut |_, _| Ok(()))
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let plan = tract_onnx::onnx()
        .model_for_path(&path)
        .unwrap()
        .with_input_fact(0, InferenceFact::dt_shape(DatumType::F32, dims.clone()))
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let out = plan
        .run(tvec!(TractTensor::from_shape(&dims, &x)
            .unwrap()
            .into_tvalue()))
        .unwrap();
    let want = out[0].to_plain_array_view::<f32>().unwrap();
    assert_eq!(ours[0].shape, want.shape(), "{label}: shape");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (a, b)) in ours[0].data.iter().zip(want.iter()).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * scale,
            "{label}: element {i}: ours {a}, tract {b} (scale {scale})"
        );
    }
}

/// (channels in, out, kernel, strides, dilations, pads, group, input h×w)
type ConvCase = (
    usize,
    usize,
    [usize; 2],
    [i64; 2],
    [i64; 2],
    [i64; 4],
    usize,
    [usize; 2],
);

#[test]
fn convolutions_of_every_kind() {
    let cases: [ConvCase; 6] = [
        (3, 5, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1, [7, 9]),
        (4, 6, [3, 2], [2, 3], [1, 1], [0, 1, 2, 0], 1, [11, 10]),
        (4, 4, [3, 3], [2, 2], [2, 1], [2, 1, 1, 2], 2, [9, 8]),
        (6, 6, [3, 3], [1, 2], [1, 1], [1, 1, 1, 1], 6, [7, 7]), // depthwise
        (3, 6, [3, 3], [1, 1], [1, 1], [1, 0, 0, 1], 3, [5, 6]), // depth multiplier 2
        (8, 7, [1, 1], [1, 1], [1, 1], [0, 0, 0, 0], 1, [5, 5]), // pointwise
    ];
    for (i, (c, m, k, s, d, p, g, hw)) in cases.into_iter().enumerate() {
        let mut b = Builder::new(i as u64);
        let w = b.weight(&[m, c / g, k[0], k[1]]);
        let bias = b.weight(&[m]);
        let y = b.node(
            "Conv",
            &["x", &w, &bias],
            vec![
                ("kernel_shape", A::Is(vec![k[0] as i64, k[1] as i64])),
                ("strides", A::Is(s.to_vec())),
                ("dilations", A::Is(d.to_vec())),
                ("pads", A::Is(p.to_vec())),
                ("group", A::I(g as i64)),
            ],
        );
        let shape = [1, c, hw[0], hw[1]];
        // 3 images: a batch that is not a multiple of anything.
        check(&format!("conv{i}"), &b.model(&shape, &y, 13), &shape, 3);
    }
    // SAME_UPPER padding, and many images sharing one GEMM (small late feature maps).
    let mut b = Builder::new(50);
    let w = b.weight(&[5, 4, 3, 3]);
    let y = b.node(
        "Conv",
        &["x", &w],
        vec![
            ("auto_pad", A::S("SAME_UPPER")),
            ("strides", A::Is(vec![2, 2])),
        ],
    );
    check(
        "conv_same",
        &b.model(&[1, 4, 5, 4], &y, 13),
        &[1, 4, 5, 4],
        37,
    );
}

#[test]
fn pools_activations_and_elementwise() {
    let shape = [1, 4, 9, 9];
    let mut b = Builder::new(1);
    let scale = b.weight(&[4]);
    let bias = b.weight(&[4]);
    let mean = b.weight(&[4]);
    let var: Vec<f32> = vec![0.5, 1.0, 2.0, 0.1];
    let var = b.floats(&[4], &var);
    let v = b.node(
        "BatchNormalization",
        &["x", &scale, &bias, &mean, &var],
        vec![("epsilon", A::F(1e-3))],
    );
    let v = b.node("LeakyRelu", &[&v], vec![("alpha", A::F(0.1))]);
    let per_channel = b.weight(&[4, 1, 1]);
    let v = b.node("Mul", &[&v, &per_channel], vec![]);
    let scalar = b.floats(&[], &[0.25]);
    let v = b.node("Sub", &[&v, &scalar], vec![]);
    let row = b.weight(&[9]);
    let v = b.node("Add", &[&v, &row], vec![]);
    let v2 = b.node("Sigmoid", &[&v], vec![]);
    let v3 = b.node(
        "HardSigmoid",
        &[&v],
        vec![("alpha", A::F(0.3)), ("beta", A::F(0.4))],
    );
    let v = b.node("Div", &[&v2, &v3], vec![]);
    let v = b.node("HardSwish", &[&v], vec![]);
    let lo = b.floats(&[], &[-0.5]);
    let hi = b.floats(&[], &[1.5]);
    let v = b.node("Clip", &[&v, &lo, &hi], vec![]);
    let a = b.node(
        "MaxPool",
        &[&v],
        vec![
            ("kernel_shape", A::Is(vec![3, 2])),
            ("strides", A::Is(vec![2, 2])),
            ("pads", A::Is(vec![1, 0, 1, 0])),
            ("ceil_mode", A::I(1)),
        ],
    );
    let c = b.node(
        "AveragePool",
        &[&v],
        vec![
            ("kernel_shape", A::Is(vec![3, 2])),
            ("strides", A::Is(vec![2, 2])),
            ("pads", A::Is(vec![1, 0, 1, 0])),
            ("ceil_mode", A::I(1)),
        ],
    );
    let d = b.node(
        "AveragePool",
        &[&v],
        vec![
            ("kernel_shape", A::Is(vec![3, 2])),
            ("strides", A::Is(vec![2, 2])),
            ("pads", A::Is(vec![1, 0, 1, 0])),
            ("count_include_pad", A::I(1)),
        ],
    );
    let pads = b.ints(&[0, 0, 0, 0, 0, 0, 0, 1]);
    let d = b.node("Pad", &[&d, &pads], vec![]);
    let v = b.node("Concat", &[&a, &c, &d], vec![("axis", A::I(1))]);
    let g = b.node("GlobalAveragePool", &[&v], vec![]);
    let v = b.node("Add", &[&v, &g], vec![]);
    let f = b.node("Flatten", &[&v], vec![("axis", A::I(1))]);
    let sm = b.node("Softmax", &[&f], vec![("axis", A::I(-1))]);
    check("elementwise", &b.model(&shape, &sm, 13), &shape, 3);
}

#[test]
fn shape_ops_and_matrix_products() {
    let shape = [1, 3, 6, 5];
    let mut b = Builder::new(2);
    let starts = b.ints(&[1, -1, 0]);
    let ends = b.ints(&[i64::MAX, i64::MIN, 5]);
    let axes = b.ints(&[1, 2, 3]);
    let steps = b.ints(&[1, -2, 2]);
    let v = b.node("Slice", &["x", &starts, &ends, &axes, &steps], vec![]);
    // v: [N, 2, 3, 3]
    let pads = b.ints(&[0, 1, 2, 0, 0, 0, 1, 2]);
    let r = b.node("Pad", &[&v, &pads], vec![("mode", A::S("reflect"))]);
    let e = b.node("Pad", &[&v, &pads], vec![("mode", A::S("edge"))]);
    let v = b.node("Concat", &[&r, &e], vec![("axis", A::I(-3))]);
    // [N, 6, 6, 5]
    let target = b.ints(&[0, -1, 5]);
    let v = b.node("Reshape", &[&v, &target], vec![]);
    let w = b.weight(&[5, 5]);
    let v = b.node("MatMul", &[&v, &w], vec![]);
    // [N, 36, 5]
    let flat = b.node("Flatten", &[&v], vec![]);
    let gw = b.weight(&[9, 180]);
    let gb = b.weight(&[9]);
    let v = b.node(
        "Gemm",
        &[&flat, &gw, &gb],
        vec![
            ("transB", A::I(1)),
            ("alpha", A::F(0.5)),
            ("beta", A::F(2.0)),
        ],
    );
    let v = b.node("Dropout", &[&v], vec![]);
    let v = b.node("Identity", &[&v], vec![]);
    let gw2 = b.weight(&[9, 4]);
    let v = b.node("Gemm", &[&v, &gw2], vec![]);
    let v = b.node("Relu", &[&v], vec![]);
    check("shapes", &b.model(&shape, &v, 13), &shape, 5);
}

#[test]
fn opset_11_softmax_and_constant_clip_bounds() {
    let shape = [1, 2, 3, 4];
    // Opset 11: Constant with a tensor value; Softmax over axis 1 flattens the rest.
    let mut b = Builder::new(3);
    let mut lo_node = proto::NodeProto {
        output: vec!["lo".into()],
        name: Some("lo".into()),
        op_type: Some("Constant".into()),
        ..Default::default()
    };
    lo_node.attribute.push(proto::AttributeProto {
        name: Some("value".into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(proto::TensorProto {
            data_type: Some(DataType::Float as i32),
            float_data: vec![-0.3],
            ..Default::default()
        }),
        ..Default::default()
    });
    b.nodes.push(lo_node);
    let v = b.node("Clip", &["x", "lo", ""], vec![]);
    let v = b.node("Softmax", &[&v], vec![("axis", A::I(1))]);
    check("opset11", &b.model(&shape, &v, 11), &shape, 2);
}

/// Clip bounds given as attributes (the pre-opset-11 form some exporters still write) are read;
/// checked against the clamp computed by hand (tract follows the opset and ignores them).
#[test]
fn clip_bounds_as_attributes() {
    let shape = [1, 2, 3, 4];
    let mut b = Builder::new(4);
    let v = b.node(
        "Clip",
        &["x"],
        vec![("min", A::F(-0.5)), ("max", A::F(0.25))],
    );
    let bytes = b.model(&shape, &v, 13);
    let model = subprune::onnx::load_bytes(std::path::Path::new("clip.onnx"), &bytes).unwrap();
    let exec = CpuExecutor::new(&model.graph).unwrap();
    let mut rng = Rng::new(5);
    let x: Vec<f32> = (0..48).map(|_| rng.normal() as f32).collect();
    let dims = [2, 2, 3, 4];
    let out = exec
        .run_batch(TensorView::new(&dims, &x).unwrap(), &[], &mut |_, _| Ok(()))
        .unwrap();
    for (o, v) in out[0].data.iter().zip(&x) {
        assert_eq!(*o, v.clamp(-0.5, 0.25));
    }
}
