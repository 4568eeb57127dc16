"""Models exported by other projects, tried end to end (README "Models exported by other projects"):
for each MODEL given, `subprune info` (channel groups, share of the conv weights they cover), both
executors against onnxruntime on held-out images (largest gap relative to the largest |value|),
`subprune prune --keep-fraction 0.5` with calibration images, then the written model: the ONNX
checker's full check, every initializer used, onnxruntime runs it, and the output's relative
change ||y_pruned - y|| / ||y|| on the held-out images, with the parameters before and after.

Usage: exported_models.py MODEL.onnx [MODEL.onnx ...] [--raw-pixels] [--mean M --std S]
       [--calib N] [--held-out N] [--release] [--out DIR] [--input-shape NAME=1,3,H,W]

Nothing is downloaded: the README says where each model comes from. Images: the CIFAR-10 test
images of tests/fixtures (cifar10_test_u8.npy), resized bilinearly to the model's input size; the
first --calib are the calibration images, the next --held-out the held-out ones (disjoint). Pixels
are scaled to [0, 1] (Ultralytics, YOLOv5/v8) or, with --raw-pixels, kept in
0..255 (YOLOX as ddddocr feeds it); then (x - mean) / std (Paddle's OCR models: 0.5, 0.5). The images are far from the models' data (documents, text):
the relative change measures how much pruning moves the outputs, not a detection accuracy.

Prints one JSON object per model and a summary line; exits non-zero if a check fails.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-4  # largest executor gap, relative to onnxruntime's largest |value|


def resize_bilinear(images, height, width):
    """(N, C, h, w) -> (N, C, height, width), half-pixel centres (upscaling: no antialiasing)."""
    n, c, h, w = images.shape

    def axis(size, out):
        pos = np.clip((np.arange(out) + 0.5) * size / out - 0.5, 0, size - 1)
        lo = np.floor(pos).astype(int)
        return lo, np.minimum(lo + 1, size - 1), (pos - lo).astype(np.float32)

    y0, y1, fy = axis(h, height)
    x0, x1, fx = axis(w, width)
    rows = images[:, :, y0, :] * (1 - fy)[:, None] + images[:, :, y1, :] * fy[:, None]
    return rows[:, :, :, x0] * (1 - fx) + rows[:, :, :, x1] * fx


def input_of(model, shapes):
    """The graph input's name, its size (batch excluded) and whether the file fixes the batch."""
    inp = model.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    if inp.name in shapes:
        dims = [dims[0]] + shapes[inp.name][1:]
    if any(d is None for d in dims[1:]):
        sys.exit(f"{inp.name}: dynamic size {dims}; pass --input-shape {inp.name}=1,C,H,W")
    return inp.name, dims[1:], dims[0] is not None


def onnxruntime_outputs(path, name, images, fixed_batch):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    step = 1 if fixed_batch else len(images)
    outs = [sess.run(None, {name: images[i:i + step]})[0] for i in range(0, len(images), step)]
    return np.concatenate(outs).astype(np.float64)


def unused_initializers(model):
    g = model.graph
    used = {x for n in g.node for x in n.input} | {o.name for o in g.output}
    return [t.name for t in g.initializer if t.name not in used]


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    return out.stdout


def try_model(path, a, bins, pixels):
    subprune, runner = bins
    base = os.path.join(a.out, os.path.splitext(os.path.basename(path))[0])
    model = onnx.load(path)
    name, size, fixed_batch = input_of(model, a.input_shape)
    src = np.load(os.path.join(ROOT, "tests", "fixtures", "cifar10_test_u8.npy"))
    assert len(src) >= a.calib + a.held_out, "not enough fixture images"
    if size[0] == 1:  # one-channel model: grey (PIL's L weights)
        src = np.tensordot(src.astype(np.float32), [0.299, 0.587, 0.114], ([1], [0]))[:, None]
    scale = 1.0 if pixels == "raw" else 1.0 / 255.0
    images = {}
    for part, sel in (("calib", slice(0, a.calib)),
                      ("held", slice(a.calib, a.calib + a.held_out))):
        x = resize_bilinear(src[sel].astype(np.float32), size[1], size[2]) * scale
        images[part] = ((x - a.mean) / a.std).astype(np.float32)
        np.save(f"{base}.{part}.npy", images[part])

    shape_flag = ["--input-shape", f"{name}:" + ",".join(map(str, [1] + size))]
    info = json.loads(run([subprune, "info", path, "--json", *shape_flag]))
    want = onnxruntime_outputs(path, name, images["held"], fixed_batch)
    peak = np.abs(want).max()
    gaps = {}
    for backend in ("cpu", "gpu"):
        run([runner, path, f"{base}.held.npy", f"{base}.{backend}.npy", backend])
        ours = np.load(f"{base}.{backend}.npy").astype(np.float64)
        assert ours.shape == want.shape, (backend, ours.shape, want.shape)
        gaps[backend] = float(np.abs(ours - want).max() / peak)

    pruned = f"{base}.pruned.onnx"
    run([subprune, "prune", path, "--calib", f"{base}.calib.npy", "--keep-fraction", "0.5",
         "--backend", a.backend, "--batch", "8", "--out", pruned, "--report", f"{base}.report.json"])
    onnx.checker.check_model(pruned, full_check=True)
    written = onnx.load(pruned)
    after = onnxruntime_outputs(pruned, name, images["held"], fixed_batch)
    change = float(np.linalg.norm(after - want) / np.linalg.norm(want))
    info_after = json.loads(run([subprune, "info", pruned, "--json", *shape_flag]))
    result = {
        "model": os.path.basename(path),
        "input": [name] + size,
        "groups": len(info["groups"]),
        "conv_weight_share": round(info["prunable_conv_share"], 4),
        "largest_gap": {k: float(f"{v:.3g}") for k, v in gaps.items()},
        "parameters": [info["parameters"], info_after["parameters"]],
        "flops_per_image": [info["flops_per_image"], info_after["flops_per_image"]],
        "calib_images": a.calib,
        "held_out_images": a.held_out,
        "relative_change": round(change, 4),
        **({"relative_change_parts": [
            round(float(np.linalg.norm(after[:, part] - want[:, part])
                        / np.linalg.norm(want[:, part])), 4)
            for part in (slice(0, a.split_at), slice(a.split_at, None))]} if a.split_at else {}),
        "unused_initializers": len(unused_initializers(written)),
    }
    ok = all(g <= TOLERANCE for g in gaps.values()) and not result["unused_initializers"]
    return result, ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--raw-pixels", action="store_true", help="the models take pixels in 0..255 (else [0, 1])")
    ap.add_argument("--mean", type=float, default=0.0, help="subtracted after scaling (Paddle: 0.5)")
    ap.add_argument("--std", type=float, default=1.0, help="then divided by (Paddle: 0.5)")
    ap.add_argument("--split-at", type=int, default=0, metavar="K",
                    help="also the change of the output's rows [:K] and [K:] along axis 1 "
                         "(YOLOv8: 4, boxes in pixels apart from class scores)")
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--held-out", type=int, default=16)
    ap.add_argument("--backend", default="cpu", help="backend of `subprune prune`")
    ap.add_argument("--release", action="store_true", help="build and use the release binaries")
    ap.add_argument("--out", default="/tmp/subprune-exported-models")
    ap.add_argument("--input-shape", action="append", default=[], metavar="NAME=1,C,H,W")
    a = ap.parse_args()
    a.input_shape = dict((k, [int(d) for d in v.split(",")])
                         for k, v in (s.split("=", 1) for s in a.input_shape))
    os.makedirs(a.out, exist_ok=True)
    profile = ["--release"] if a.release else []
    run(["cargo", "build", "-q", *profile, "--manifest-path", os.path.join(ROOT, "Cargo.toml"),
         "--bin", "subprune", "--example", "run_model"])
    target = os.path.join(ROOT, "target", "release" if a.release else "debug")
    bins = (os.path.join(target, "subprune"), os.path.join(target, "examples", "run_model"))
    failed = []
    for path in a.models:
        result, ok = try_model(path, a, bins, "raw" if a.raw_pixels else "01")
        print(json.dumps(result), flush=True)
        if not ok:
            failed.append(path)
    print(f"{len(a.models) - len(failed)} of {len(a.models)} models passed every check")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
