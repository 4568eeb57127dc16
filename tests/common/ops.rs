//! The op table: small synthetic ONNX models (built with the library's
//! `subprune::synthetic::Builder`) that together use every supported op on awkward shapes (odd
//! channel counts, sizes that are not multiples of the GEMM tiles, strides, dilations, asymmetric
//! pads, groups, broadcasting both ways). The CPU executor runs them against tract, the GPU
//! executor against the CPU executor (`tests/exec_ops.rs`).

use subprune::synthetic::{float, int, ints, string, Builder};

/// Standard deviation of the random weights.
const STD: f64 = 0.3;

/// One model to run: its input shape is `shape` with `images` in place of the leading 1.
pub struct OpCase {
    pub label: String,
    pub model: Vec<u8>,
    pub shape: Vec<usize>,
    pub images: usize,
}

impl OpCase {
    fn new(label: &str, b: Builder, shape: &[usize], output: &str, opset: i64, n: usize) -> Self {
        Self {
            label: label.into(),
            model: b.model("g", &shape[1..], output, opset),
            shape: shape.to_vec(),
            images: n,
        }
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

/// Convolutions of every kind (with and without bias), then SAME_UPPER padding.
pub fn convolutions() -> Vec<OpCase> {
    let cases: [ConvCase; 13] = [
        (3, 5, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1, [7, 9]),
        (4, 6, [3, 2], [2, 3], [1, 1], [0, 1, 2, 0], 1, [11, 10]), // asymmetric pads, stride
        (4, 4, [3, 3], [2, 2], [2, 1], [2, 1, 1, 2], 2, [9, 8]),   // groups 2, dilation 2
        (6, 6, [3, 3], [1, 2], [1, 1], [1, 1, 1, 1], 6, [7, 7]),   // depthwise
        (5, 5, [3, 3], [2, 2], [2, 2], [0, 2, 1, 0], 5, [9, 11]),  // depthwise, dilated, odd
        (3, 6, [3, 3], [1, 1], [1, 1], [1, 0, 0, 1], 3, [5, 6]),   // depth multiplier 2
        (8, 7, [1, 1], [1, 1], [1, 1], [0, 0, 0, 0], 1, [5, 5]),   // pointwise
        // More output channels than one 128-row tile, K not a multiple of 16.
        (7, 133, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1, [6, 5]),
        // 65 channels (a 128 tile with one row used in the second 64), stride 2, 2 groups.
        (6, 130, [1, 3], [2, 1], [1, 2], [0, 2, 0, 1], 2, [13, 12]),
        // More GEMM columns than one tile per image.
        (2, 3, [5, 5], [1, 1], [1, 1], [2, 2, 2, 2], 1, [17, 19]),
        // The 64-channel tile, and the 64-column tile (3 images × 3×3 positions).
        (9, 37, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], 1, [5, 5]),
        // The 32-channel tile with two input columns staged per thread, 3 groups.
        (9, 96, [3, 1], [1, 1], [1, 1], [1, 0, 1, 0], 3, [12, 13]),
        // A long K (576) on few tiles: split-K with a reduction.
        (64, 40, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1, [4, 5]),
    ];
    let mut out = Vec::new();
    for (i, (c, m, k, s, d, p, g, hw)) in cases.into_iter().enumerate() {
        let mut b = Builder::new(i as u64);
        let w = b.weight(&[m, c / g, k[0], k[1]], STD);
        let bias = b.weight(&[m], STD);
        let inputs: Vec<&str> = if i % 2 == 0 {
            vec!["x", &w, &bias]
        } else {
            vec!["x", &w]
        };
        let y = b.node(
            "Conv",
            &inputs,
            vec![
                ints("kernel_shape", &[k[0] as i64, k[1] as i64]),
                ints("strides", &s),
                ints("dilations", &d),
                ints("pads", &p),
                int("group", g as i64),
            ],
        );
        // 3 images: a batch that is not a multiple of anything.
        out.push(OpCase::new(
            &format!("conv{i}"),
            b,
            &[1, c, hw[0], hw[1]],
            &y,
            13,
            3,
        ));
    }
    // SAME_UPPER padding, and many images in one GEMM (columns across images; small late
    // feature maps).
    let mut b = Builder::new(50);
    let w = b.weight(&[5, 4, 3, 3], STD);
    let y = b.node(
        "Conv",
        &["x", &w],
        vec![string("auto_pad", "SAME_UPPER"), ints("strides", &[2, 2])],
    );
    out.push(OpCase::new("conv_same", b, &[1, 4, 5, 4], &y, 13, 37));
    out
}

/// Conv → BN → Relu (folded into the GEMM epilogue on the GPU), Conv → BN → Clip, and a conv
/// read twice (by the BN and by the Add), which must not be folded.
pub struct Chains {
    pub case: OpCase,
    /// The first conv's raw output (folded away on the GPU).
    pub conv1: String,
    /// Its BatchNormalization (folded too).
    pub bn1: String,
    /// The second conv's output, read twice.
    pub conv2: String,
    /// The Relu after the first BatchNormalization.
    pub relu: String,
}

/// The conv, BatchNormalization and activation chains.
pub fn chains() -> Chains {
    let shape = [1, 3, 9, 7];
    let mut b = Builder::new(11);
    let w = b.weight(&[10, 3, 3, 3], STD);
    let c1 = b.node(
        "Conv",
        &["x", &w],
        vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
    );
    let (sc, bi, me) = (
        b.weight(&[10], STD),
        b.weight(&[10], STD),
        b.weight(&[10], STD),
    );
    let var: Vec<f32> = (0..10).map(|i| 0.3 + 0.1 * i as f32).collect();
    let var = b.floats(&[10], &var);
    let bn = b.node(
        "BatchNormalization",
        &[&c1, &sc, &bi, &me, &var],
        vec![float("epsilon", 1e-5)],
    );
    let r = b.node("Relu", &[&bn], vec![]);
    let w2 = b.weight(&[10, 10, 1, 1], STD);
    let bias2 = b.weight(&[10], STD);
    let c2 = b.node(
        "Conv",
        &[&r, &w2, &bias2],
        vec![ints("kernel_shape", &[1, 1])],
    );
    let bn2 = b.node(
        "BatchNormalization",
        &[&c2, &sc, &bi, &me, &var],
        vec![float("epsilon", 1e-3)],
    );
    let lo = b.floats(&[], &[0.0]);
    let hi = b.floats(&[], &[0.5]);
    let clip = b.node("Clip", &[&bn2, &lo, &hi], vec![]);
    let sum = b.node("Add", &[&clip, &c2], vec![]);
    let hs = b.node("HardSwish", &[&sum], vec![]);
    Chains {
        case: OpCase::new("chains", b, &shape, &hs, 13, 4),
        conv1: c1,
        bn1: bn,
        conv2: c2,
        relu: r,
    }
}

/// BatchNormalization, activations, broadcasting elementwise ops, pools (ceil mode, padding
/// counted or not, dilated), Pad, Concat, global pooling, Flatten, Softmax.
pub fn pools_activations_and_elementwise() -> OpCase {
    let shape = [1, 5, 9, 11];
    let mut b = Builder::new(1);
    let scale = b.weight(&[5], STD);
    let bias = b.weight(&[5], STD);
    let mean = b.weight(&[5], STD);
    let var: Vec<f32> = vec![0.5, 1.0, 2.0, 0.1, 0.7];
    let var = b.floats(&[5], &var);
    let v = b.node(
        "BatchNormalization",
        &["x", &scale, &bias, &mean, &var],
        vec![float("epsilon", 1e-3)],
    );
    let v = b.node("LeakyRelu", &[&v], vec![float("alpha", 0.1)]);
    let per_channel = b.weight(&[5, 1, 1], STD);
    let v = b.node("Mul", &[&v, &per_channel], vec![]);
    let scalar = b.floats(&[], &[0.25]);
    let v = b.node("Sub", &[&v, &scalar], vec![]);
    let row = b.weight(&[11], STD);
    // A row broadcast over the activation, on either side.
    let v = b.node("Add", &[&row, &v], vec![]);
    let v = b.node("Add", &[&v, &row], vec![]);
    let v2 = b.node("Sigmoid", &[&v], vec![]);
    let v3 = b.node(
        "HardSigmoid",
        &[&v],
        vec![float("alpha", 0.3), float("beta", 0.4)],
    );
    let v = b.node("Div", &[&v2, &v3], vec![]);
    let v = b.node("HardSwish", &[&v], vec![]);
    let lo = b.floats(&[], &[-0.5]);
    let hi = b.floats(&[], &[1.5]);
    let v = b.node("Clip", &[&v, &lo, &hi], vec![]);
    let window = |ceil: i64| {
        vec![
            ints("kernel_shape", &[3, 2]),
            ints("strides", &[2, 2]),
            ints("pads", &[1, 0, 1, 0]),
            int("ceil_mode", ceil),
        ]
    };
    let a = b.node("MaxPool", &[&v], window(1));
    let c = b.node("AveragePool", &[&v], window(1));
    let mut attrs = window(0);
    attrs.push(int("count_include_pad", 1));
    let d = b.node("AveragePool", &[&v], attrs);
    let pads = b.ints(&[0, 0, 0, 0, 0, 0, 0, 1]);
    let d = b.node("Pad", &[&d, &pads], vec![]);
    let dil = b.node(
        "MaxPool",
        &[&v],
        vec![
            ints("kernel_shape", &[2, 2]),
            ints("dilations", &[2, 2]),
            ints("strides", &[2, 2]),
            ints("pads", &[0, 1, 1, 0]),
            int("ceil_mode", 1),
        ],
    );
    let v = b.node("Concat", &[&a, &c, &d, &dil], vec![int("axis", 1)]);
    let g = b.node("GlobalAveragePool", &[&v], vec![]);
    // Both operands activations, one broadcast over the plane.
    let v = b.node("Mul", &[&v, &g], vec![]);
    let v = b.node("Add", &[&v, &g], vec![]);
    let f = b.node("Flatten", &[&v], vec![int("axis", 1)]);
    let sm = b.node("Softmax", &[&f], vec![int("axis", -1)]);
    OpCase::new("elementwise", b, &shape, &sm, 13, 3)
}

/// Slice (negative steps, open ends), Pad (reflect, edge; with `crop`, constant with negative
/// pads, which tract does not support), Concat, Reshape, MatMul, Flatten, Gemm (transposed,
/// scaled, with a scalar or no C), Dropout, Identity, Softmax.
pub fn shape_ops_and_matrix_products(crop: bool) -> OpCase {
    let shape = [1, 3, 6, 5];
    let mut b = Builder::new(2);
    let starts = b.ints(&[1, -1, 0]);
    let ends = b.ints(&[i64::MAX, i64::MIN, 5]);
    let axes = b.ints(&[1, 2, 3]);
    let steps = b.ints(&[1, -2, 2]);
    let v = b.node("Slice", &["x", &starts, &ends, &axes, &steps], vec![]);
    // v: [N, 2, 3, 3]
    let pads = b.ints(&[0, 1, 2, 0, 0, 0, 1, 2]);
    let r = b.node("Pad", &[&v, &pads], vec![string("mode", "reflect")]);
    let e = b.node("Pad", &[&v, &pads], vec![string("mode", "edge")]);
    let mut parts = vec![r.clone(), e];
    if crop {
        let crop = b.ints(&[0, 0, -1, 0, 0, 0, 1, 1]);
        let k = b.floats(&[], &[0.5]);
        let c = b.node("Pad", &[&r, &crop, &k], vec![]);
        let (s0, s1, s2) = (b.ints(&[0]), b.ints(&[5]), b.ints(&[3]));
        parts.push(b.node("Slice", &[&c, &s0, &s1, &s2], vec![]));
    }
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let v = b.node("Concat", &parts, vec![int("axis", -3)]);
    // [N, 9, 6, 5] with the crop, [N, 6, 6, 5] without.
    let target = b.ints(&[0, -1, 5]);
    let v = b.node("Reshape", &[&v, &target], vec![]);
    let w = b.weight(&[5, 70], STD);
    let v = b.node("MatMul", &[&v, &w], vec![]);
    // [N, 54, 70] (or [N, 36, 70]): 54·N rows, 70 columns (neither a multiple of a tile).
    let flat = b.node("Flatten", &[&v], vec![]);
    let rows = if crop { 54 } else { 36 };
    let gw = b.weight(&[9, rows * 70], STD);
    let gb = b.weight(&[9], STD);
    let v = b.node(
        "Gemm",
        &[&flat, &gw, &gb],
        vec![int("transB", 1), float("alpha", 0.5), float("beta", 2.0)],
    );
    let v = b.node("Dropout", &[&v], vec![]);
    let v = b.node("Identity", &[&v], vec![]);
    let gw2 = b.weight(&[9, 131], STD);
    let scalar_c = b.floats(&[1], &[0.3]);
    let v = b.node("Gemm", &[&v, &gw2, &scalar_c], vec![]);
    let v = b.node("Relu", &[&v], vec![]);
    let gw3 = b.weight(&[131, 4], STD);
    let v = b.node("Gemm", &[&v, &gw3], vec![]);
    let sm = b.node("Softmax", &[&v], vec![int("axis", 1)]);
    OpCase::new("shapes", b, &shape, &sm, 13, 5)
}

/// Opset 11: Clip with a lower bound only (from a `Constant` node's tensor value, and from an
/// initializer), then Softmax over axis 1, which flattens the rest.
pub fn opset_11_softmax_and_constant_clip_bounds() -> Vec<OpCase> {
    let shape = [1, 2, 3, 4];
    let mut out = Vec::new();
    for from_node in [true, false] {
        let mut b = Builder::new(3);
        let lo = if from_node {
            b.constant(-0.3)
        } else {
            b.floats(&[], &[-0.3])
        };
        let v = b.node("Clip", &["x", &lo, ""], vec![]);
        let v = b.node("Softmax", &[&v], vec![int("axis", 1)]);
        let label = if from_node { "opset11" } else { "opset11_init" };
        out.push(OpCase::new(label, b, &shape, &v, 11, 2));
    }
    out
}

/// Clip bounds given as attributes (the pre-opset-11 form some exporters still write): checked
/// against the clamp to [-0.5, 0.25] computed by hand (tract follows the opset and ignores them).
pub fn clip_bounds_as_attributes() -> OpCase {
    let shape = [1, 2, 3, 4];
    let mut b = Builder::new(4);
    let v = b.node("Clip", &["x"], vec![float("min", -0.5), float("max", 0.25)]);
    OpCase::new("clip", b, &shape, &v, 13, 2)
}
