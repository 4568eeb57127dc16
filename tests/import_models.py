"""Models the way exporters write them, for tests/import_shapes.rs and tests/import_opsets.rs,
with onnxruntime's outputs as the reference.

    python import_models.py write OUTDIR    # the models, their inputs and onnxruntime's outputs
    python import_models.py dynamic MODEL   # MODEL keeps dynamic height/width; onnxruntime runs
                                            # it at two sizes (prints the output shapes)
    python import_models.py tidy MODEL      # MODEL holds no unused node, initializer or value
                                            # info, and onnxruntime warns about none
    python import_models.py outputs MODEL X.npy OUT.npy   # onnxruntime's output (prints the
                                            # batch the file declares)

Models (weights seeded; every .npy float32):
- dynamic.onnx: input [batch, 3, height, width] (all symbolic), Conv-Relu-Conv-Relu-GAP, a flatten
  written as Shape -> Gather -> Unsqueeze -> Concat -> Reshape, a Gemm whose weight is a Transpose
  of an initializer. Inputs dynamic_a.npy (2x3x12x12), dynamic_b.npy (3x3x17x9).
- folding.onnx: input fixed at batch 1 (1x3x8x8). A paddle2onnx bias Add(conv, Reshape(Constant)),
  a view [N, C, H*W] computed from Shape (Gather, Mul, Concat), a Reshape to [1, -1], a Gemm
  weight Transpose(initializer) and a bias computed by Range, Cast (integer and boolean to
  float), Where, Greater, Less, GreaterOrEqual, LessOrEqual, Equal, Not, Neg, Sub, Div, Sqrt,
  ConstantOfShape, Expand, Slice, Squeeze/Unsqueeze of constants; Unsqueeze, Squeeze and Cast on
  data. Input folding_x.npy (4 images, run one by one by onnxruntime: the file fixes batch 1).
- opset7.onnx, opset9.onnx, opset10.onnx, opset13.onnx: one network (Pad, Conv,
  BatchNormalization, Clip, Upsample/Resize, Slice, Split, Concat, Dropout, Unsqueeze/Squeeze on
  data, MaxPool, GAP, Flatten, Gemm) in each opset's forms.
  Input opset_x.npy.
- data_ops.onnx: Gather with constant indices (a list with a negative index, evenly spaced, one
  index) and Expand (to a constant shape, and to a shape from Shape) on data. Input data_ops_x.npy.
- batch_one.onnx: a batch-1 export (1x3x8x8, opset 11) whose head views the last conv as
  Reshape [1, 4, -1], as YOLOX's exporter writes it; prunable before the head. Input
  batch_one_x.npy (3 images, run one by one).
Each NAME.onnx has NAME_out*.npy: onnxruntime's output for each input, in the order above.
"""

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(7)


def weight(*shape):
    return (RNG.standard_normal(shape) * 0.3).astype(np.float32)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def run(path, x):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def batch_one_graph(out, name, nodes, inits, x_shape, y_shape, opset, ir_version, images):
    """Writes a model whose file fixes the batch at 1, its `images` random inputs (run one by one
    by onnxruntime) and the outputs."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)
    g = helper.make_graph(nodes, name, [x], [y], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    xs = RNG.standard_normal([images] + x_shape[1:]).astype(np.float32)
    np.save(os.path.join(out, f"{name}_x.npy"), xs)
    save(model, out, name, [xs], one_by_one=True)


def save(model, out, name, inputs, one_by_one=False):
    onnx.checker.check_model(model, full_check=True)
    path = os.path.join(out, name + ".onnx")
    onnx.save(model, path)
    for k, x in enumerate(inputs):
        if one_by_one:
            y = np.concatenate([run(path, x[i : i + 1]) for i in range(len(x))])
        else:
            y = run(path, x)
        np.save(os.path.join(out, f"{name}_out{k}.npy"), y.astype(np.float32))


def dynamic(out):
    n = helper.make_node
    nodes = [
        n("Conv", ["images", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["r1"]),
        n("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        n("Relu", ["c2"], ["r2"]),
        n("GlobalAveragePool", ["r2"], ["gap"]),
        n("Shape", ["gap"], ["s"]),
        n("Gather", ["s", "zero"], ["batch"], axis=0),
        n("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        n("Concat", ["batch1", "minus1"], ["target"], axis=0),
        n("Reshape", ["gap", "target"], ["flat"]),
        n("Transpose", ["fc_w"], ["fc_wt"], perm=[1, 0]),
        n("Gemm", ["flat", "fc_wt", "fc_b"], ["logits"]),
    ]
    inits = [
        init("w1", weight(6, 3, 3, 3)),
        init("b1", weight(6)),
        init("w2", weight(8, 6, 3, 3)),
        init("b2", weight(8)),
        init("zero", np.array(0, dtype=np.int64)),
        init("axes0", np.array([0], dtype=np.int64)),
        init("minus1", np.array([-1], dtype=np.int64)),
        init("fc_w", weight(5, 8)),
        init("fc_b", weight(5)),
    ]
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])
    g = helper.make_graph(nodes, "dynamic", [x], [y], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    a = RNG.standard_normal((2, 3, 12, 12)).astype(np.float32)
    b = RNG.standard_normal((3, 3, 17, 9)).astype(np.float32)
    np.save(os.path.join(out, "dynamic_a.npy"), a)
    np.save(os.path.join(out, "dynamic_b.npy"), b)
    save(model, out, "dynamic", [a, b])


def const(name, array):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(array)))


def folding(out):
    n = helper.make_node
    i64 = lambda v: np.array(v, dtype=np.int64)
    nodes = [
        n("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        const("bias_c", weight(4)),
        const("bias_shape", i64([1, 4, 1, 1])),
        n("Reshape", ["bias_c", "bias_shape"], ["bias"]),
        n("Add", ["c1", "bias"], ["c1b"]),
        n("Relu", ["c1b"], ["r1"]),
        # view [N, C, H*W] from the shape
        n("Shape", ["r1"], ["s"]),
        n("Gather", ["s", "i0"], ["n"], axis=0),
        n("Gather", ["s", "i1"], ["c"], axis=0),
        n("Gather", ["s", "i2"], ["h"], axis=0),
        n("Gather", ["s", "i3"], ["w"], axis=0),
        n("Mul", ["h", "w"], ["hw"]),
        n("Concat", ["n", "c", "hw"], ["view"], axis=0),
        n("Reshape", ["r1", "view"], ["v"]),
        n("Reshape", ["v", "flat_shape"], ["flat"]),
        # Gemm weight written as a Transpose of an initializer
        n("Transpose", ["fc_w"], ["fc_wt"]),
        # a bias computed from constants
        n("Range", ["r_start", "r_limit", "r_delta"], ["r"]),
        n("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
        n("Greater", ["r", "four"], ["big"]),
        n("Equal", ["r", "three"], ["is3"]),
        n("Not", ["is3"], ["not3"]),
        n("Where", ["big", "half", "one"], ["scale"]),
        n("Where", ["not3", "scale", "two"], ["scale2"]),
        n("Mul", ["rf", "scale2"], ["ramp"]),
        n("ConstantOfShape", ["ten"], ["quarter"], value=numpy_helper.from_array(np.array([0.25], dtype=np.float32))),
        n("Expand", ["tenth", "ten"], ["tenths"]),
        n("Neg", ["ramp"], ["nramp"]),
        n("Less", ["r", "two_i"], ["lt2"]),
        n("Where", ["lt2", "nramp", "ramp"], ["ramp2"]),
        n("LessOrEqual", ["r", "seven"], ["le7"]),
        n("Where", ["le7", "ramp2", "half"], ["ramp3"]),
        n("GreaterOrEqual", ["r", "five"], ["ge5"]),
        n("Cast", ["ge5"], ["ge5f"], to=TensorProto.FLOAT),
        n("Sub", ["ramp3", "ge5f"], ["ramp4"]),
        n("Sqrt", ["quarter"], ["root"]),
        n("Div", ["ramp4", "root"], ["ramp5"]),
        n("Add", ["ramp5", "quarter"], ["b0"]),
        n("Add", ["b0", "tenths"], ["b1"]),
        n("Unsqueeze", ["b1", "i0"], ["b2"]),
        n("Slice", ["b2", "sl_start", "sl_end", "sl_axes"], ["b3"]),
        n("Squeeze", ["b3", "i0"], ["fc_b"]),
        n("Gemm", ["flat", "fc_wt", "fc_b"], ["g"]),
        # Unsqueeze, Squeeze and Cast on data
        n("Unsqueeze", ["g", "axes23"], ["g4"]),
        n("Relu", ["g4"], ["g4r"]),
        n("Squeeze", ["g4r", "axes23"], ["g2"]),
        n("Cast", ["g2"], ["y"], to=TensorProto.FLOAT),
    ]
    inits = [
        init("w1", weight(4, 3, 3, 3)),
        init("i0", i64([0])),
        init("i1", i64([1])),
        init("i2", i64([2])),
        init("i3", i64([3])),
        init("flat_shape", i64([1, -1])),
        init("fc_w", weight(10, 256)),
        init("r_start", i64(0)),
        init("r_limit", i64(10)),
        init("r_delta", i64(1)),
        init("four", i64(4)),
        init("two_i", i64(2)),
        init("five", i64(5)),
        init("seven", i64(7)),
        init("three", i64(3)),
        init("half", np.array(0.5, dtype=np.float32)),
        init("one", np.array(1.0, dtype=np.float32)),
        init("two", np.array(-2.0, dtype=np.float32)),
        init("ten", i64([10])),
        init("tenth", np.array([0.1], dtype=np.float32)),
        init("sl_start", i64([0])),
        init("sl_end", i64([10])),
        init("sl_axes", i64([1])),
        init("axes23", i64([2, 3])),
    ]
    batch_one_graph(out, "folding", nodes, inits, [1, 3, 8, 8], [1, 10], 13, 8, images=4)


def opsets(out):
    i64 = lambda v: np.array(v, dtype=np.int64)
    f32 = lambda v: np.array(v, dtype=np.float32)
    params = {
        "w": weight(4, 3, 3, 3),
        "b": weight(4),
        "gamma": (1 + 0.1 * RNG.standard_normal(4)).astype(np.float32),
        "beta": weight(4),
        "mean": weight(4),
        "var": (1 + RNG.random(4)).astype(np.float32),
        "fc_w": weight(3, 4),
        "fc_b": weight(3),
    }
    xs = RNG.standard_normal((3, 3, 10, 10)).astype(np.float32)
    np.save(os.path.join(out, "opset_x.npy"), xs)
    for opset in [7, 9, 10, 13]:
        n = helper.make_node
        old = opset < 10
        inits = [init(k, v) for k, v in params.items()]
        nodes = []
        if opset < 11:
            nodes.append(n("Pad", ["x"], ["p"], pads=[0, 0, 1, 1, 0, 0, 1, 1], value=0.5))
        else:
            inits += [init("pads", i64([0, 0, 1, 1, 0, 0, 1, 1])), init("pad_value", f32(0.5))]
            nodes.append(n("Pad", ["x", "pads", "pad_value"], ["p"]))
        nodes.append(n("Conv", ["p", "w", "b"], ["c"]))
        bn = {"spatial": 1} if opset < 9 else {}
        nodes.append(n("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["bn"], epsilon=1e-3, **bn))
        if opset < 11:
            nodes.append(n("Clip", ["bn"], ["clip"], min=0.0, max=6.0))
        else:
            inits += [init("lo", f32(0.0)), init("hi", f32(6.0))]
            nodes.append(n("Clip", ["bn", "lo", "hi"], ["clip"]))
        # Nearest ×2: Upsample (scales an attribute at 7, an input at 9), Resize-10 (x, scales),
        # Resize-13 (x, roi, scales) in the coordinates Upsample means.
        up = [1.0, 1.0, 2.0, 2.0]
        if opset == 7:
            nodes.append(n("Upsample", ["clip"], ["up"], scales=up))
        else:
            inits.append(init("up_scales", f32(up)))
        if opset == 9:
            nodes.append(n("Upsample", ["clip", "up_scales"], ["up"]))
        elif opset == 10:
            nodes.append(n("Resize", ["clip", "up_scales"], ["up"]))
        elif opset == 13:
            nodes.append(n("Resize", ["clip", "", "up_scales"], ["up"],
                           coordinate_transformation_mode="asymmetric", nearest_mode="floor"))
        if old:
            nodes.append(n("Slice", ["up"], ["sl"], starts=[3, 5], ends=[11, 13], axes=[2, 3]))
        else:
            inits += [init("st", i64([3, 5])), init("en", i64([11, 13])), init("ax", i64([2, 3]))]
            nodes.append(n("Slice", ["up", "st", "en", "ax"], ["sl"]))
        # Channels split [1, 3] (the sizes an attribute before 13) and joined swapped.
        if opset < 13:
            nodes.append(n("Split", ["sl"], ["s1", "s3"], axis=1, split=[1, 3]))
        else:
            inits.append(init("parts", i64([1, 3])))
            nodes.append(n("Split", ["sl", "parts"], ["s1", "s3"], axis=1))
        nodes.append(n("Concat", ["s3", "s1"], ["sw"], axis=1))
        nodes.append(n("Dropout", ["sw"], ["d"], **({"ratio": 0.3} if opset < 12 else {})))
        if opset < 13:
            nodes.append(n("Unsqueeze", ["d"], ["u"], axes=[4]))
            nodes.append(n("Squeeze", ["u"], ["sq"], axes=[4]))
        else:
            inits.append(init("ax4", i64([4])))
            nodes.append(n("Unsqueeze", ["d", "ax4"], ["u"]))
            nodes.append(n("Squeeze", ["u", "ax4"], ["sq"]))
        nodes += [
            n("MaxPool", ["sq"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
            n("GlobalAveragePool", ["mp"], ["gap"]),
            n("Flatten", ["gap"], ["flat"]),
            n("Gemm", ["flat", "fc_w", "fc_b"], ["y"], transB=1),
        ]
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 10, 10])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
        g = helper.make_graph(nodes, f"opset{opset}", [x], [y], inits)
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 7 if opset >= 13 else 4
        save(model, out, f"opset{opset}", [xs])


def data_ops(out):
    """Gather (constant indices: a list, evenly spaced, one index), Expand (to a constant shape
    and to a shape from Shape) on data."""
    n = helper.make_node
    i64 = lambda v: np.array(v, dtype=np.int64)
    nodes = [
        n("Gather", ["x", "picks"], ["g1"], axis=1),  # [N, 3, 6, 5], indices 2, 0, 3
        n("Gather", ["g1", "last"], ["g2"], axis=-1),  # [N, 3, 6], one index
        n("Gather", ["g1", "even"], ["g3"], axis=2),  # [N, 3, 3, 5], indices 0, 2, 4
        n("Relu", ["g3"], ["g3r"]),
        n("Gather", ["g3r", "one"], ["g4"], axis=3),  # [N, 3, 3, 1]
        n("Expand", ["g4", "wide"], ["e1"]),  # [N, 3, 3, 4]
        n("Shape", ["e1"], ["s"]),
        n("Expand", ["row", "s"], ["e2"]),  # [1, 1, 1, 4] to [N, 3, 3, 4]
        n("Add", ["e1", "e2"], ["sum"]),
        n("Flatten", ["sum"], ["f1"]),
        n("Flatten", ["g2"], ["f2"]),
        n("Concat", ["f1", "f2"], ["y"], axis=1),
    ]
    inits = [
        init("picks", i64([2, 0, -1])),
        init("last", i64(4)),
        init("even", i64([0, 2, 4])),
        init("one", i64([1])),
        init("wide", i64([1, 1, 1, 4])),
        init("row", weight(1, 1, 1, 4)),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 54])
    g = helper.make_graph(nodes, "data_ops", [x], [y], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    xs = RNG.standard_normal((3, 4, 6, 5)).astype(np.float32)
    np.save(os.path.join(out, "data_ops_x.npy"), xs)
    save(model, out, "data_ops", [xs])


def batch_one(out):
    """A YOLOX-style head of a batch-1 export: the last conv's channels viewed as [1, 4, -1]."""
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        n("Sigmoid", ["c1"], ["s1"]),
        n("Mul", ["c1", "s1"], ["a1"]),
        n("Conv", ["a1", "w2", "b2"], ["c2"]),
        n("Reshape", ["c2", "view"], ["y"]),
    ]
    inits = [
        init("w1", weight(6, 3, 3, 3)),
        init("b1", weight(6)),
        init("w2", weight(4, 6, 1, 1)),
        init("b2", weight(4)),
        init("view", np.array([1, 4, -1], dtype=np.int64)),
    ]
    batch_one_graph(out, "batch_one", nodes, inits, [1, 3, 8, 8], [1, 4, 64], 11, 6, images=3)


def outputs(path, x_path, out_path):
    """onnxruntime's output of the model at `path` on the images of `x_path`, one image at a time
    where the file fixes the batch."""
    x = np.load(x_path)
    dim = onnx.load(path).graph.input[0].type.tensor_type.shape.dim[0]
    step = 1 if dim.HasField("dim_value") else len(x)
    y = np.concatenate([run(path, x[i : i + step]) for i in range(0, len(x), step)])
    np.save(out_path, y.astype(np.float32))
    print("batch", dim.dim_value if dim.HasField("dim_value") else dim.dim_param)


def check_dynamic(path):
    model = onnx.load(path)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert all(d.HasField("dim_param") for d in dims[2:]), f"input dims fixed: {dims}"
    onnx.checker.check_model(model, full_check=True)
    for shape in [(2, 3, 12, 12), (1, 3, 17, 9)]:
        y = run(path, RNG.standard_normal(shape).astype(np.float32))
        print(shape, "->", y.shape)


def check_tidy(path):
    """A written model holds nothing unused: every node's output is read by a node or is a graph
    output, every initializer is read, every value info names a value, and onnxruntime (whose
    warnings go to the process's stderr, captured here through the file descriptor) prints no
    "unused initializer" warning."""
    import tempfile

    g = onnx.load(path).graph
    read = {x for n in g.node for x in n.input} | {o.name for o in g.output}
    dead = [n.name for n in g.node if not any(o in read for o in n.output)]
    assert not dead, f"nodes nothing reads: {dead}"
    unused = [t.name for t in g.initializer if t.name not in read]
    assert not unused, f"initializers nothing reads: {unused}"
    known = {o for n in g.node for o in n.output} | {t.name for t in g.initializer}
    stale = [v.name for v in g.value_info if v.name not in known]
    assert not stale, f"value infos of unknown values: {stale}"
    with tempfile.TemporaryFile() as err:
        saved = os.dup(2)
        os.dup2(err.fileno(), 2)
        try:
            ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        text = err.read().decode(errors="replace")
    assert "not used by any node" not in text, text
    print("tidy:", len(g.node), "nodes,", len(g.initializer), "initializers")


if __name__ == "__main__":
    if sys.argv[1] == "write":
        dynamic(sys.argv[2])
        folding(sys.argv[2])
        opsets(sys.argv[2])
        data_ops(sys.argv[2])
        batch_one(sys.argv[2])
    elif sys.argv[1] == "dynamic":
        check_dynamic(sys.argv[2])
    elif sys.argv[1] == "tidy":
        check_tidy(sys.argv[2])
    elif sys.argv[1] == "outputs":
        outputs(*sys.argv[2:5])
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
