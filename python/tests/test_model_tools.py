"""subprune.info, evaluate and devices against the command line and onnxruntime."""

import numpy as np
import onnx
import pytest

import subprune
from conftest import FIXTURES, MEAN, MODEL, STD, cli, cli_json, normalise, onnxruntime_top1


def test_info_equals_the_command_line():
    ours = subprune.info(MODEL)
    assert ours == cli_json("info", MODEL, "--json")
    assert ours["parameters"] == 421642
    assert subprune.info(onnx.load(str(MODEL))) == ours
    assert subprune.info(MODEL.read_bytes()) == ours


def test_evaluate_equals_the_command_line_and_onnxruntime(tmp_path, test_set):
    x, y = test_set
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    ours = subprune.evaluate(MODEL, x, y, mean=MEAN, std=STD, backend="cpu")
    theirs = cli_json("eval", MODEL, "--data", tmp_path / "x.npy", "--labels",
                      tmp_path / "y.npy", "--mean", MEAN, "--std", STD, "--json")
    for key in ["images", "correct_top1", "correct_top5", "top1", "top5"]:
        assert ours[key] == theirs[key], key
    assert ours["correct_top1"] == onnxruntime_top1(MODEL.read_bytes(), normalise(x), y)
    # float32 images normalised beforehand score the same; --limit as limit=.
    f = subprune.evaluate(MODEL, normalise(x), y.astype(np.int32), backend="cpu")
    assert f["correct_top1"] == ours["correct_top1"]
    limited = subprune.evaluate(MODEL, x, y, mean=MEAN, std=STD, limit=100, backend="cpu")
    assert limited["images"] == 100


def test_evaluate_refuses_bad_labels_with_the_cli_message(tmp_path, test_set):
    x, y = test_set
    with pytest.raises(ValueError, match="expected integer class indices"):
        subprune.evaluate(MODEL, x, y.astype(np.float32), mean=MEAN, std=STD)
    with pytest.raises(ValueError, match=r"shape \(N,\) or \(N, 1\)"):
        subprune.evaluate(MODEL, x, np.stack([y, y], axis=1), mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="labels for"):
        subprune.evaluate(MODEL, x, y[:10], mean=MEAN, std=STD, backend="cpu")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y.astype(np.float32))
    out = cli("eval", MODEL, "--data", tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
              check=False)
    assert "expected integer class indices" in out.stderr


def test_devices_lists_adapters_as_strings():
    adapters = subprune.devices()
    assert isinstance(adapters, list)
    assert all(isinstance(a, str) and a for a in adapters)
    assert adapters == [line for line in cli("devices").stdout.splitlines() if line] or (
        not adapters and "no GPU adapters" in cli("devices").stdout
    )
