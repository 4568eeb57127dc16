"""The nine CNN topologies of onnx's backend tests (onnx/backend/test/data/light/light_*.onnx:
AlexNet, DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512)
made runnable: their weights, made by ConstantOfShape nodes in the package (zeros), replaced by
seeded random initializers of the same shapes (He-scaled so that activations stay finite), and
onnxruntime's outputs on random images saved as the reference. Nothing else changes: the files
keep their opset 9 forms, IR version 3, batch fixed at 1 (with `Reshape [1, …]` targets),
`Unsqueeze`s and `Reshape`s of constants, for the loader to read as they are.

Usage: backend_topologies.py OUT_DIR [NAME ...] [--images N] [--calib N] [--seed S]
Writes per model NAME.onnx, NAME.in.npy (N images), NAME.out.npy (onnxruntime's output, the
images run one by one as the file's batch of 1 requires), NAME.calib.npy (calibration images for
`subprune prune`). Nothing is downloaded: the models come with the installed `onnx` package.
"""
import argparse
import glob
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

NAMES = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
         "shufflenet", "squeezenet", "vgg19", "zfnet512"]


def light_dir():
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def random_value(shape, uses, rng):
    """Seeded values for a weight of `shape` read as `uses` [(op, input index, node)]."""
    op, index, node = uses[0] if uses else ("", 0, None)
    normal = rng.standard_normal(shape)
    if op == "Conv" and index == 1:
        fan_in = int(np.prod(shape[1:]))
        return normal * np.sqrt(2.0 / fan_in)
    if op == "Gemm" and index == 1:
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        fan_in = shape[1] if trans_b else shape[0]
        return normal * np.sqrt(2.0 / fan_in)
    if op == "BatchNormalization":
        return {1: 1.0 + 0.1 * normal, 2: 0.1 * normal, 3: 0.1 * normal,
                4: rng.uniform(0.5, 1.5, shape)}.get(index, normal)
    if op == "Mul":
        return 1.0 + 0.1 * normal
    return 0.05 * normal


def prepare(name, out_dir, images, calib, seed):
    m = onnx.load(os.path.join(light_dir(), f"light_{name}.onnx"))
    g = m.graph
    rng = np.random.default_rng(seed)
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    uses = {}
    for n in g.node:
        for i, x in enumerate(n.input):
            uses.setdefault(x, []).append((n.op_type, i, n))
    # Weight generators: ConstantOfShape of a constant shape becomes an initializer (of the
    # random values below), declared as a graph input as IR 3 wants of every initializer.
    generated = {}
    nodes = []
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in consts:
            shape = tuple(int(d) for d in consts[n.input[0]])
            generated[n.output[0]] = np.zeros(shape, np.float32)
        else:
            nodes.append(n)
    consts.update(generated)
    # Every float weight: seeded random values of its shape.
    for k, v in list(consts.items()):
        if v.dtype == np.float32 and v.ndim > 0:
            consts[k] = random_value(v.shape, uses.get(k, []), rng).astype(np.float32)
    used = {x for n in nodes for x in n.input}
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items() if k in used)
    kept_inputs = [i for i in g.input if i.name in used]
    del g.input[:]
    g.input.extend(kept_inputs)
    g.input.extend(onnx.helper.make_tensor_value_info(k, onnx.TensorProto.FLOAT, v.shape)
                   for k, v in generated.items() if k in used)
    onnx.checker.check_model(m, full_check=True)
    path = os.path.join(out_dir, f"{name}.onnx")
    onnx.save(m, path)
    data = next(i for i in g.input if i.name not in consts)
    shape = [d.dim_value for d in data.type.tensor_type.shape.dim[1:]]
    x = rng.standard_normal([images] + shape).astype(np.float32)
    # The files fix the batch at 1: onnxruntime runs the images one by one.
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    y = np.concatenate([sess.run(None, {data.name: x[i:i + 1]})[0] for i in range(images)])
    assert np.isfinite(y).all(), name
    np.save(os.path.join(out_dir, f"{name}.in.npy"), x)
    np.save(os.path.join(out_dir, f"{name}.out.npy"), y.astype(np.float32))
    c = rng.standard_normal([calib] + shape).astype(np.float32)
    np.save(os.path.join(out_dir, f"{name}.calib.npy"), c)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("names", nargs="*", default=NAMES)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--calib", type=int, default=8)
    ap.add_argument("--seed", type=int, default=23)
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    assert glob.glob(os.path.join(light_dir(), "light_*.onnx")), "no light models in onnx"
    for name in a.names:
        prepare(name, a.out_dir, a.images, a.calib, a.seed)


if __name__ == "__main__":
    main()
