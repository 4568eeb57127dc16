"""The nine CNN topologies of onnx's backend tests (onnx/backend/test/data/light/light_*.onnx:
AlexNet, DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512)
made runnable: their weights, zeroed or made by ConstantOfShape nodes in the package, replaced by
seeded random initializers of the same shapes (He-scaled so that activations stay finite), the
batch made symbolic, and onnxruntime's outputs on random images saved as the reference.

Usage: backend_topologies.py OUT_DIR [NAME ...] [--opset 11] [--images N] [--calib N]
Writes per model NAME.onnx, NAME.in.npy (N images), NAME.out.npy (onnxruntime's output),
NAME.calib.npy (calibration images for `subprune prune`). Nothing is downloaded: the models come
with the installed `onnx` package. `--opset 11` converts the opset-9 files with
onnx.version_converter (needed until the importer reads opsets 7-10); Unsqueeze and Reshape nodes
on constants (DenseNet, Inception v1/v2) are folded here (until the importer folds constant
subgraphs), and so are the ConstantOfShape weight generators; a Reshape to [1, …] (the exported
batch) becomes [0, …] so that batches of any size run.
"""
import argparse
import glob
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper, version_converter

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


def prepare(name, out_dir, opset, images, calib, seed):
    m = onnx.load(os.path.join(light_dir(), f"light_{name}.onnx"))
    g = m.graph
    rng = np.random.default_rng(seed)
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    uses = {}
    for n in g.node:
        for i, x in enumerate(n.input):
            uses.setdefault(x, []).append((n.op_type, i, n))
    # Weight generators: ConstantOfShape of a constant shape becomes an initializer.
    kept = []
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in consts:
            shape = tuple(int(d) for d in consts[n.input[0]])
            consts[n.output[0]] = np.zeros(shape, np.float32)
        else:
            kept.append(n)
    # Every float weight: seeded random values of its shape.
    for k, v in list(consts.items()):
        if v.dtype == np.float32 and v.ndim > 0:
            consts[k] = random_value(v.shape, uses.get(k, []), rng).astype(np.float32)
    # Unsqueeze (opset 9: axes attribute) and Reshape of a constant folded.
    nodes = []
    for n in kept:
        if n.op_type == "Unsqueeze" and n.input[0] in consts and len(n.input) == 1:
            axes = [a.ints for a in n.attribute if a.name == "axes"][0]
            v = consts[n.input[0]]
            for a in sorted(axes):
                v = np.expand_dims(v, a)
            consts[n.output[0]] = v
        elif n.op_type == "Reshape" and all(x in consts for x in n.input):
            v, shape = consts[n.input[0]], consts[n.input[1]].tolist()
            shape = [v.shape[i] if d == 0 else d for i, d in enumerate(shape)]
            consts[n.output[0]] = v.reshape(shape)
        else:
            nodes.append(n)
    # A Reshape to [1, …] (the exported batch of 1) keeps the batch instead: [0, …].
    for n in nodes:
        if n.op_type == "Reshape" and consts.get(n.input[1], np.zeros(0))[:1].tolist() == [1]:
            consts[n.input[1]] = np.concatenate([[0], consts[n.input[1]][1:]]).astype(np.int64)
    used = {x for n in nodes for x in n.input}
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items() if k in used)
    keep_inputs = [i for i in g.input if i.name not in consts and i.name in used]
    del g.input[:]
    g.input.extend(keep_inputs)
    g.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    for o in g.output:
        o.type.tensor_type.shape.dim[0].dim_param = "N"
    del g.value_info[:]
    # IR ≥ 4: initializers need not be listed as graph inputs (they were removed above).
    m.ir_version = max(m.ir_version, 4)
    if opset and opset != m.opset_import[0].version:
        m = version_converter.convert_version(m, opset)
    onnx.checker.check_model(m)
    path = os.path.join(out_dir, f"{name}.onnx")
    onnx.save(m, path)
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim[1:]]
    x = rng.standard_normal([images] + shape).astype(np.float32)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    y = sess.run(None, {m.graph.input[0].name: x})[0]
    assert np.isfinite(y).all(), name
    np.save(os.path.join(out_dir, f"{name}.in.npy"), x)
    np.save(os.path.join(out_dir, f"{name}.out.npy"), y.astype(np.float32))
    c = rng.standard_normal([calib] + shape).astype(np.float32)
    np.save(os.path.join(out_dir, f"{name}.calib.npy"), c)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("names", nargs="*", default=NAMES)
    ap.add_argument("--opset", type=int, default=0, help="convert to this opset (0: keep 9)")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--calib", type=int, default=8)
    ap.add_argument("--seed", type=int, default=23)
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    assert glob.glob(os.path.join(light_dir(), "light_*.onnx")), "no light models in onnx"
    for name in a.names:
        prepare(name, a.out_dir, a.opset, a.images, a.calib, a.seed)


if __name__ == "__main__":
    main()
