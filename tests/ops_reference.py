"""Models of the compute ops exported CNNs use, with onnxruntime's outputs as the reference.

Usage: ops_reference.py OUT_DIR. Writes, per case, NAME.onnx, NAME.in.npy (a batch of random
inputs of awkward sizes, seeded) and NAME.out<k>.npy (onnxruntime's output k), and cases.txt
listing the names. tests/exec_ops_reference.rs runs each model on both executors against them.
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(23)
OUT = sys.argv[1]
CASES = []


def model(name, nodes, shape, outputs, inits=(), opset=13):
    """Saves the graph `nodes` (input 'x' of `shape`, outputs named in `outputs`), runs it."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"] + list(shape[1:]))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    # No checker: the outputs carry no shapes (onnxruntime validates the model when it loads).
    path = os.path.join(OUT, name + ".onnx")
    onnx.save(m, path)
    x = RNG.standard_normal(shape).astype(np.float32)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for k, y in enumerate(sess.run(None, {"x": x})):
        np.save(os.path.join(OUT, f"{name}.out{k}.npy"), y.astype(np.float32))
    np.save(os.path.join(OUT, name + ".in.npy"), x)
    CASES.append(name)


def f32(*shape, scale=0.3):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def i64(*v):
    return np.array(v, dtype=np.int64)


N = helper.make_node
S = (2, 5, 7, 9)

# Split: channels (sizes as input), width (three parts), opset 18's num_outputs.
model("split_channels", [N("Split", ["x", "s"], ["a", "b"], axis=1)], S, ["a", "b"],
      [("s", i64(2, 3))])
model("split_width", [N("Split", ["x", "s"], ["a", "b", "c"], axis=-1)], S, ["a", "b", "c"],
      [("s", i64(4, 1, 4))])
model("split_num_outputs", [N("Split", ["x"], ["a", "b", "c"], axis=2, num_outputs=3)], S,
      ["a", "b", "c"], opset=18)
# Split → per-part conv → Concat (a detector's C2f block).
model("split_conv_concat", [
    N("Split", ["x", "s"], ["a", "b"], axis=1),
    N("Conv", ["b", "w"], ["bc"], pads=[1, 1, 1, 1]),
    N("Concat", ["a", "bc", "b"], ["y"], axis=1),
], S, ["y"], [("s", i64(2, 3)), ("w", f32(3, 3, 3, 3))])

# Transpose, and ShuffleNet's channel shuffle.
model("transpose_nhwc", [N("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1])], S, ["y"])
model("channel_shuffle", [
    N("Reshape", ["x", "s1"], ["r"]),
    N("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
    N("Reshape", ["t", "s2"], ["y"]),
], (2, 6, 5, 7), ["y"], [("s1", i64(0, 2, 3, 5, 7)), ("s2", i64(0, 6, 5, 7))])

# Resize: every coordinate mode with every nearest mode, up and down, by scales and by sizes;
# bilinear with every coordinate mode.
roi = np.zeros(0, np.float32)
for coord in ["asymmetric", "half_pixel", "align_corners", "pytorch_half_pixel"]:
    for near in ["floor", "round_prefer_floor", "round_prefer_ceil", "ceil"]:
        model(f"resize_nearest_{coord}_{near}", [
            N("Resize", ["x", "roi", "", "sz"], ["y"], mode="nearest",
              coordinate_transformation_mode=coord, nearest_mode=near)],
            S, ["y"], [("roi", roi), ("sz", i64(2, 5, 11, 20))])
    for scales, tag in [([1, 1, 2.0, 1.5], "up"), ([1, 1, 0.6, 0.5], "down")]:
        model(f"resize_linear_{coord}_{tag}", [
            N("Resize", ["x", "roi", "sc"], ["y"], mode="linear",
              coordinate_transformation_mode=coord)],
            S, ["y"], [("roi", roi), ("sc", np.array(scales, np.float32))])
model("resize_nearest_scale2", [N("Resize", ["x", "roi", "sc"], ["y"], mode="nearest")], S,
      ["y"], [("roi", roi), ("sc", np.array([1, 1, 2, 2], np.float32))])

# Sum, Max, Min: n-ary with broadcasting (per-channel constants, activations).
model("sum3", [N("Relu", ["x"], ["r"]), N("Sum", ["x", "c", "r"], ["y"])], S, ["y"],
      [("c", f32(5, 1, 1))])
model("max2", [N("Sigmoid", ["x"], ["s"]), N("Max", ["x", "s"], ["y"])], S, ["y"])
model("min4", [N("Sigmoid", ["x"], ["s"]), N("Min", ["x", "c", "s", "d"], ["y"])], S, ["y"],
      [("c", f32(1, 9)), ("d", f32(5, 1, 1))])
model("sum1", [N("Sum", ["x"], ["y"])], S, ["y"])

# ConvTranspose: stride 2 with output_padding and bias; groups, dilations, asymmetric pads.
model("conv_transpose_up", [
    N("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1],
      output_padding=[1, 1], kernel_shape=[3, 3])],
    S, ["y"], [("w", f32(5, 6, 3, 3)), ("b", f32(6))])
model("conv_transpose_groups", [
    N("ConvTranspose", ["x", "w"], ["y"], strides=[2, 1], dilations=[1, 2], pads=[0, 1, 1, 0],
      group=2)],
    (2, 4, 6, 5), ["y"], [("w", f32(4, 3, 2, 3))])

# Reductions over spatial axes and channels, GlobalMaxPool.
model("reduce_mean_hw", [N("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=1)], S, ["y"])
model("reduce_max_c", [N("ReduceMax", ["x"], ["y"], axes=[1], keepdims=0)], S, ["y"])
model("reduce_sum_hw", [N("ReduceSum", ["x", "a"], ["y"], keepdims=1)], S, ["y"],
      [("a", i64(-2, -1))])
model("global_max_pool", [N("GlobalMaxPool", ["x"], ["y"])], S, ["y"])

# LRN: AlexNet's parameters, and an even size with a strong effect.
model("lrn_alexnet", [N("LRN", ["x"], ["y"], size=5, alpha=1e-4, beta=0.75, bias=1.0)], S, ["y"])
model("lrn_strong", [N("LRN", ["x"], ["y"], size=3, alpha=0.9, beta=0.6, bias=1.5)], S, ["y"])

# Element-wise functions, GELU as exporters write it, Pow with constant exponents.
for op in ["Tanh", "Exp", "Softplus", "Erf"]:
    model(op.lower(), [N(op, ["x"], ["y"])], S, ["y"])
model("sqrt", [N("Relu", ["x"], ["r"]), N("Sqrt", ["r"], ["y"])], S, ["y"])
model("gelu", [
    N("Div", ["x", "r2"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one"], ["p"]),
    N("Mul", ["x", "p"], ["m"]), N("Mul", ["m", "half"], ["y"])],
    S, ["y"], [("r2", np.float32(np.sqrt(2))), ("one", np.float32(1)), ("half", np.float32(0.5))])
for tag, e in [("2", 2.0), ("3", 3.0), ("half", 0.5), ("1_7", 1.7)]:
    pre = [N("Sigmoid", ["x"], ["s"])] if e not in (2.0, 3.0) else []
    model(f"pow_{tag}", pre + [N("Pow", ["s" if pre else "x", "e"], ["y"])], S, ["y"],
          [("e", np.float32(e))])

# Pools with ceil_mode (the last window starting inside the input).
model("maxpool_ceil", [N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                         ceil_mode=1)], S, ["y"])
model("avgpool_ceil", [N("AveragePool", ["x"], ["y"], kernel_shape=[2, 3], strides=[2, 2],
                         pads=[1, 0, 0, 1], ceil_mode=1)], (2, 3, 8, 10), ["y"])

with open(os.path.join(OUT, "cases.txt"), "w") as f:
    f.write("\n".join(CASES) + "\n")
