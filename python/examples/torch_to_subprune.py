"""PyTorch model -> torch.onnx.export -> subprune.prune -> onnxruntime accuracy.

Trains a small CNN on MNIST images shipped with the repository (tests/fixtures: 10,000 test
images, of which 8,000 train it here and 2,000 score it), exports it to ONNX, prunes half of its
channels with subprune from 512 unlabelled calibration images, and compares the accuracy before
and after with onnxruntime. Needs torch, onnx and onnxruntime (pip install torch onnx
onnxruntime) and the subprune wheel; runs in about a minute on a laptop CPU.

    python python/examples/torch_to_subprune.py [--keep-fraction 0.5] [--out pruned.onnx]
"""

import argparse
import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

import subprune

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"
MEAN, STD = 0.1307, 0.3081


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def normalise(u8: np.ndarray) -> np.ndarray:
    return ((u8.astype(np.float32) / 255.0 - MEAN) / STD).astype(np.float32)


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 2) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xs, ys = torch.from_numpy(normalise(x)), torch.from_numpy(y.astype(np.int64))
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(xs))
        for i in range(0, len(xs), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xs[idx]), ys[idx])
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}")
    model.eval()


def to_onnx(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.onnx.export(
        model, torch.zeros(1, 1, 28, 28), buf, input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False,
    )
    return buf.getvalue()


def onnxruntime_top1(model_bytes: bytes, x: np.ndarray, y: np.ndarray) -> float:
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    logits = sess.run(None, {sess.get_inputs()[0].name: normalise(x)})[0]
    return float((logits.argmax(axis=1) == y).mean())


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--keep-fraction", type=float, default=0.5)
    args.add_argument("--out", default="torch_cnn_pruned.onnx")
    opts = args.parse_args()

    torch.manual_seed(0)
    x = np.load(FIXTURES / "mnist_test_u8.npy")
    y = np.load(FIXTURES / "mnist_test_labels.npy")
    (x_train, y_train), (x_test, y_test) = (x[:8000], y[:8000]), (x[8000:], y[8000:])
    model = small_cnn()
    train(model, x_train, y_train)
    onnx_bytes = to_onnx(model)

    calib = np.load(FIXTURES / "mnist_calib_512.npy")  # float32, already normalised
    def progress(stage: str, done: int, total: int) -> None:
        if stage == "layers" and done < total:
            print(f"pruning layer {done + 1} of {total}")

    # progress=True shows tqdm bars instead (pip install tqdm).
    pruned = subprune.prune(onnx_bytes, calib, keep_fraction=opts.keep_fraction,
                            progress=progress)
    pruned.save(opts.out)

    r = pruned.report
    for layer in r["layers"]:
        print(f"{layer['name']:>30}: {layer['channels_before']} -> {layer['channels_after']} "
              f"channels, relative error {layer['relative_error']:.4f}")
    print(f"parameters {r['parameters_before']} -> {r['parameters_after']}, "
          f"FLOPs {r['flops_before']} -> {r['flops_after']}")
    before = onnxruntime_top1(onnx_bytes, x_test, y_test)
    after = onnxruntime_top1(pruned.to_bytes(), x_test, y_test)
    print(f"onnxruntime top-1 on {len(y_test)} held-out images: {before:.4f} -> {after:.4f}")
    # subprune's own executor agrees with onnxruntime:
    ours = subprune.evaluate(pruned, x_test, y_test, mean=MEAN, std=STD)
    print(f"subprune.evaluate: {ours['top1']:.4f} ({ours['backend']}); written to {opts.out}")


if __name__ == "__main__":
    main()
