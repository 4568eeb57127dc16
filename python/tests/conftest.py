"""Shared support of the Python tests: the fixtures, the command line binary (the reference the
bindings must agree with), and onnxruntime (the independent reference for accuracies)."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
MODEL = FIXTURES / "mnist_cnn.onnx"
MEAN, STD = 0.1307, 0.3081


def cli_binary() -> Path:
    """The `subprune` binary: $SUBPRUNE_BIN, else the one `cargo test` builds (tests/run_all.sh
    runs it first). Missing is a failure, never a skip."""
    path = Path(os.environ.get("SUBPRUNE_BIN", ROOT / "target" / "debug" / "subprune"))
    if not path.is_file():
        pytest.fail(f"no subprune binary at {path}: run `cargo build` or set SUBPRUNE_BIN")
    return path


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Runs the command line on the CPU backend (as the Rust tests do)."""
    out = subprocess.run(
        [str(cli_binary()), "--backend", "cpu", *map(str, args)],
        capture_output=True,
        text=True,
    )
    if check and out.returncode != 0:
        pytest.fail(f"subprune {' '.join(map(str, args))} failed:\n{out.stderr}")
    return out


def cli_json(*args: str) -> dict:
    return json.loads(cli(*args).stdout)


def onnxruntime_top1(model_bytes: bytes, images: np.ndarray, labels: np.ndarray) -> int:
    """Correct top-1 count of a model run by onnxruntime (float32 images)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    correct = 0
    for i in range(0, len(images), 500):
        logits = sess.run(None, {name: images[i : i + 500]})[0]
        correct += int((logits.argmax(axis=1) == labels[i : i + 500]).sum())
    return correct


def normalise(u8: np.ndarray) -> np.ndarray:
    """uint8 pixels as the library normalises them, in float32 and in the same order."""
    return (u8.astype(np.float32) / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD)


@pytest.fixture(scope="session")
def calib() -> np.ndarray:
    return np.load(FIXTURES / "mnist_calib_512.npy")


@pytest.fixture(scope="session")
def test_set():
    """The first 2000 MNIST test images (uint8) and their labels."""
    x = np.load(FIXTURES / "mnist_test_u8.npy")[:2000]
    y = np.load(FIXTURES / "mnist_test_labels.npy")[:2000]
    return x, y
