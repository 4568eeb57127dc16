"""subprune.select (the layer engine) against NumPy least squares and the command line."""

import json

import numpy as np
import pytest

import subprune
from conftest import cli


def lstsq_error(b, w, cols):
    """Relative error of the best reweighting of the channels `cols` (f64 least squares)."""
    y = b @ w.T
    x, *_ = np.linalg.lstsq(b[:, cols], y, rcond=None)
    return float(np.sum((y - b[:, cols] @ x) ** 2) / np.sum(y**2)), x


def correlated(rng, n, c):
    mix = rng.standard_normal((c, c)) * 0.5 + np.eye(c)
    return np.maximum(rng.standard_normal((n, c)) @ mix, 0).astype(np.float32)


def test_select_on_a_linear_layer_matches_numpy_least_squares():
    rng = np.random.default_rng(7)
    b = correlated(rng, 300, 13)  # 13 channels: not a multiple of any tile
    w = rng.standard_normal((5, 13)).astype(np.float32)
    out = subprune.select(b, w, keep=6, backend="cpu")
    b64, w64 = b.astype(np.float64), w.astype(np.float64)
    assert sorted(out["order"]) == list(range(13))
    assert out["kept"] == sorted(out["order"][:6])
    # The error curve is the least-squares error of each greedy prefix.
    for k in [1, 3, 6, 13]:
        err, _ = lstsq_error(b64, w64, out["order"][:k])
        assert out["error_curve"][k - 1] == pytest.approx(err, rel=1e-4, abs=1e-7)
    # The first pick is the best single channel (brute force).
    singles = [lstsq_error(b64, w64, [c])[0] for c in range(13)]
    assert out["order"][0] == int(np.argmin(singles))
    # The new weight is the least-squares one on the kept channels.
    err, x = lstsq_error(b64, w64, out["kept"])
    assert out["relative_error"] == pytest.approx(err, rel=1e-4, abs=1e-7)
    assert out["weight"].shape == (5, 6) and out["weight"].dtype == np.float32
    np.testing.assert_allclose(out["weight"], x.T, rtol=1e-3, atol=1e-4)


def test_select_on_a_conv_layer_equals_the_command_line(tmp_path):
    rng = np.random.default_rng(3)
    b = np.maximum(rng.standard_normal((20, 7, 9, 9)), 0).astype(np.float32)
    w = rng.standard_normal((4, 7, 3, 3)).astype(np.float32)
    out = subprune.select(b, w, keep_fraction=0.4, padding=1, stride=(2, 1), backend="cpu")
    np.save(tmp_path / "b.npy", b)
    np.save(tmp_path / "w.npy", w)
    theirs = json.loads(cli("select", "--inputs", tmp_path / "b.npy", "--weight",
                            tmp_path / "w.npy", "--keep-fraction", "0.4", "--padding", "1",
                            "--stride", "2,1", "--out-weight", tmp_path / "w2.npy",
                            "--json").stdout)
    assert out["order"] == theirs["order"]
    assert out["kept"] == theirs["kept"]
    assert out["greedy_form"] == theirs["greedy_form"]
    np.testing.assert_allclose(out["error_curve"], theirs["error_curve"], rtol=1e-12)
    assert np.array_equal(out["weight"], np.load(tmp_path / "w2.npy"))
    assert out["weight"].shape == (4, len(out["kept"]), 3, 3)


def test_select_refuses_bad_input():
    rng = np.random.default_rng(1)
    b = rng.standard_normal((10, 6)).astype(np.float32)
    w = rng.standard_normal((3, 5)).astype(np.float32)
    with pytest.raises(ValueError, match="shape mismatch"):
        subprune.select(b, w, backend="cpu")
    with pytest.raises(ValueError, match="float32 expected"):
        subprune.select(b.astype(np.float64), w)
    with pytest.raises(ValueError, match="at least 1 channel"):
        subprune.select(b, w, keep=0)
    w6 = rng.standard_normal((3, 6)).astype(np.float32)
    with pytest.raises(ValueError, match="keep"):
        subprune.select(b, w6, keep=7, backend="cpu")
    out = subprune.select(b, w6, keep=3, reweight=False, backend="cpu")
    np.testing.assert_array_equal(out["weight"], w6[:, out["kept"]])
