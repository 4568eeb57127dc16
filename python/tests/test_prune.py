"""subprune.prune against the command line (same kept channels, same accuracy) and onnxruntime."""

import json
import os
import signal
import threading
import time

import numpy as np
import onnx
import pytest

import subprune
from conftest import FIXTURES, MEAN, MODEL, STD, cli, normalise, onnxruntime_top1

CALIB_IMAGES = 128


@pytest.fixture(scope="module")
def pruned(calib):
    return subprune.prune(
        MODEL, calib, keep_fraction=0.5, calib_images=CALIB_IMAGES, backend="cpu"
    )


def kept(report):
    return {layer["name"]: layer["kept"] for layer in report["layers"]}


def test_prune_equals_the_command_line(pruned, tmp_path, test_set):
    out, report = tmp_path / "cli.onnx", tmp_path / "report.json"
    cli("prune", MODEL, "--calib", FIXTURES / "mnist_calib_512.npy", "--calib-images",
        CALIB_IMAGES, "--keep-fraction", "0.5", "--out", out, "--report", report)
    cli_report = json.loads(report.read_text())
    assert kept(pruned.report) == kept(cli_report)
    assert all(len(k) > 0 for k in kept(pruned.report).values())
    for key in ["parameters_before", "parameters_after", "flops_before", "flops_after"]:
        assert pruned.report[key] == cli_report[key], key
    # Same accuracy, measured by onnxruntime on both written models.
    x, y = test_set
    images = normalise(x)
    ours = onnxruntime_top1(pruned.to_bytes(), images, y)
    theirs = onnxruntime_top1(out.read_bytes(), images, y)
    assert ours == theirs
    assert ours > 0.9 * len(y)
    # And subprune.evaluate counts what onnxruntime counts.
    r = subprune.evaluate(pruned, x, y, mean=MEAN, std=STD, backend="cpu")
    assert r["correct_top1"] == ours and r["images"] == len(y)


def test_saved_model_is_written_atomically_and_loads(pruned, tmp_path):
    path = tmp_path / "pruned.onnx"
    path.write_bytes(b"previous")
    pruned.save(path)
    assert sorted(os.listdir(tmp_path)) == ["pruned.onnx"]  # no temporary left behind
    assert path.read_bytes() == pruned.to_bytes()
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    with pytest.raises(ValueError, match="refusing to write over"):
        subprune.prune(MODEL, np.load(FIXTURES / "mnist_calib_512.npy")[:16],
                       backend="cpu").save(MODEL)


def test_bytes_and_modelproto_inputs_give_the_same_model(pruned, calib):
    from_bytes = subprune.prune(MODEL.read_bytes(), calib, calib_images=CALIB_IMAGES,
                                backend="cpu")
    from_proto = subprune.prune(onnx.load(str(MODEL)), calib, calib_images=CALIB_IMAGES,
                                backend="cpu")
    assert from_bytes.to_bytes() == pruned.to_bytes()
    assert from_proto.to_bytes() == pruned.to_bytes()
    assert from_bytes.report["model"] == "<bytes>"


def test_uint8_with_mean_std_equals_float(test_set):
    x, _ = test_set
    u8 = x[:64]
    a = subprune.prune(MODEL, u8, mean=MEAN, std=STD, backend="cpu")
    b = subprune.prune(MODEL, normalise(u8), backend="cpu")
    assert kept(a.report) == kept(b.report)
    assert a.to_bytes() == b.to_bytes()


def test_calib_is_read_in_place_and_not_modified(calib):
    before = calib.copy()
    view = calib[:32]
    assert view.flags["C_CONTIGUOUS"]
    subprune.prune(MODEL, view, backend="cpu")
    assert np.array_equal(calib, before)
    # A non-contiguous array is copied, and gives the same result as its copy.
    strided = np.asfortranarray(calib[:32])
    a = subprune.prune(MODEL, strided, backend="cpu")
    b = subprune.prune(MODEL, np.ascontiguousarray(strided), backend="cpu")
    assert a.to_bytes() == b.to_bytes()


def test_compression_target_and_budget(calib):
    p = subprune.prune(MODEL, calib[:64], compression=4, budget="error", backend="cpu")
    r = p.report
    assert r["parameters_after"] * 4 <= r["parameters_before"] * 1.0001
    assert r["budget"] is not None and r["budget"]["allocation"] == "error"


def test_progress_callback_sees_every_stage(calib):
    seen = []
    subprune.prune(MODEL, calib[:64], backend="cpu",
                   progress=lambda stage, done, total: seen.append((stage, done, total)))
    stages = {s for s, _, _ in seen}
    assert "layers" in stages
    assert any(s.endswith("forward + statistics") for s in stages)
    assert any(s.endswith("greedy") for s in stages)
    assert ("layers", 3, 3) in seen
    assert all(0 <= d <= t for _, d, t in seen)


def test_an_exception_in_the_callback_stops_the_work(calib):
    class Stop(Exception):
        pass

    calls = []

    def callback(stage, done, total):
        calls.append(stage)
        if stage.endswith("forward + statistics") and done > 0:
            raise Stop("enough")

    with pytest.raises(Stop, match="enough"):
        subprune.prune(MODEL, calib, backend="cpu", batch=16, progress=callback)
    # Stopped at the next batch: no greedy ran.
    assert not any(s.endswith("greedy") for s in calls)


def test_ctrl_c_interrupts_with_keyboard_interrupt(calib):
    # 8192 images: well over a second of work on any machine, and the signal comes at 0.3 s.
    big = np.concatenate([calib] * 16)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    start = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            subprune.prune(MODEL, big, variant="seq", backend="cpu", batch=32)
    finally:
        timer.cancel()
    # Stopped at the next batch, not at the end of the work.
    assert time.monotonic() - start < 30


def cli_error(*args):
    out = cli(*args, check=False)
    assert out.returncode == 1, out.stderr
    return out.stderr


def test_bad_input_is_a_value_error_with_the_cli_message(tmp_path, calib):
    wrong = np.zeros((4, 3, 28, 28), np.float32)
    np.save(tmp_path / "wrong.npy", wrong)
    with pytest.raises(ValueError) as e:
        subprune.prune(MODEL, wrong, backend="cpu")
    message = str(e.value)
    assert "the calibration images are [3, 28, 28] each" in message
    assert message in cli_error("prune", MODEL, "--calib", tmp_path / "wrong.npy",
                                "--out", tmp_path / "o.onnx")
    with pytest.raises(ValueError) as e:
        subprune.prune(MODEL, calib[:8], variant="bogus")
    assert str(e.value) == "invalid argument: variant 'bogus': expected layer, seq or asym"
    assert str(e.value) in cli_error("prune", MODEL, "--calib", FIXTURES / "mnist_calib_512.npy",
                                     "--variant", "bogus", "--out", tmp_path / "o.onnx")
    with pytest.raises(ValueError, match=r"--compression 0.5: must be a ratio > 1"):
        subprune.prune(MODEL, calib[:8], compression=0.5)
    with pytest.raises(ValueError, match="float32 or uint8 expected"):
        subprune.prune(MODEL, calib[:8].astype(np.float64))
    with pytest.raises(ValueError, match="calib: non-finite value NaN at flat index 2497"):
        bad = calib[:8].copy()
        bad[3, 0, 5, 5] = np.nan
        subprune.prune(MODEL, bad, backend="cpu")
    with pytest.raises(ValueError, match="not an ONNX model"):
        subprune.prune(b"not a model", calib[:8], backend="cpu")
    with pytest.raises(FileNotFoundError):
        subprune.prune(tmp_path / "missing.onnx", calib[:8], backend="cpu")
    with pytest.raises(ValueError, match="expected cpu, gpu or auto"):
        subprune.prune(MODEL, calib[:8], backend="cuda")
    with pytest.raises(ValueError, match="give one of keep_fraction, compression"):
        subprune.prune(MODEL, calib[:8], keep_fraction=0.5, compression=2)
    with pytest.raises(ValueError, match="calib_images=9999"):
        subprune.prune(MODEL, calib[:8], calib_images=9999)
    with pytest.raises(TypeError):
        subprune.prune(3.5, calib[:8])


def test_a_missing_gpu_adapter_is_a_gpu_error(calib):
    with pytest.raises(subprune.GpuError, match="no-such-adapter"):
        subprune.prune(MODEL, calib[:8], backend="gpu", adapter="no-such-adapter-xyz")
    assert issubclass(subprune.GpuError, RuntimeError)


def test_progress_true_drives_tqdm_bars(calib, monkeypatch):
    """progress=True: tqdm bars (a stand-in tqdm module records what they are told)."""
    import sys
    import types

    bars = []

    class FakeTqdm:
        def __init__(self, total, desc, leave, position):
            self.total, self.desc, self.n, self.closed = total, desc, 0, False
            bars.append(self)

        def refresh(self):
            assert 0 <= self.n <= self.total

        def close(self):
            self.closed = True

    fake = types.ModuleType("tqdm.auto")
    fake.tqdm = FakeTqdm
    monkeypatch.setitem(sys.modules, "tqdm", types.ModuleType("tqdm"))
    monkeypatch.setitem(sys.modules, "tqdm.auto", fake)
    subprune.prune(MODEL, calib[:32], backend="cpu", progress=True)
    assert any(b.desc == "layers" and b.n == b.total == 3 for b in bars)
    assert any(b.desc.endswith("greedy") for b in bars)
    assert bars and all(b.closed for b in bars)


def test_the_gil_is_released_while_pruning(calib):
    """Python code keeps running in another thread during a prune (it would stall for the
    whole prune if the GIL were held)."""
    finished = threading.Event()
    result = {}

    def work():
        result["pruned"] = subprune.prune(MODEL, calib[:256], backend="cpu")
        finished.set()

    worker = threading.Thread(target=work)
    start = time.monotonic()
    worker.start()
    ticks = 0
    while not finished.is_set():
        ticks += 1
        sum(range(1000))  # Python bytecode: needs the GIL
        time.sleep(0.001)
    worker.join()
    elapsed = time.monotonic() - start
    assert "pruned" in result
    # At least one tick per 20 ms of pruning.
    assert ticks >= elapsed / 0.02, (ticks, elapsed)


def write_png(path, pixels):
    """An 8-bit greyscale PNG of `pixels` (H, W), with the standard library only."""
    import struct
    import zlib

    h, w = pixels.shape
    raw = b"".join(b"\x00" + pixels[r].tobytes() for r in range(h))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_prune_from_an_image_folder_equals_the_array_and_the_command_line(
    pruned, calib, tmp_path, test_set
):
    # The first calibration images as 8-bit PNGs: (p / 255 - mean) / std gives the .npy's floats
    # back, so the folder, the array and the CLI on the folder keep the same channels.
    folder = tmp_path / "calib"
    folder.mkdir()
    pixels = np.rint((calib[:CALIB_IMAGES, 0] * STD + MEAN) * 255).astype(np.uint8)
    for i, p in enumerate(pixels):
        write_png(folder / f"{i:04d}.png", p)
    images, labels = subprune.read_folder(folder, MODEL, mean=MEAN, std=STD)
    assert labels is None and images.shape == (CALIB_IMAGES, 1, 28, 28)
    assert np.array_equal(images, calib[:CALIB_IMAGES])
    from_folder = subprune.prune(MODEL, folder, keep_fraction=0.5, mean=MEAN, std=STD,
                                 backend="cpu")
    assert kept(from_folder.report) == kept(pruned.report)
    out, report = tmp_path / "cli.onnx", tmp_path / "report.json"
    cli("prune", MODEL, "--calib", folder, "--mean", MEAN, "--std", STD, "--keep-fraction",
        "0.5", "--out", out, "--report", report)
    assert kept(json.loads(report.read_text())) == kept(from_folder.report)
    x, y = test_set
    images = normalise(x)
    ours = onnxruntime_top1(from_folder.to_bytes(), images, y)
    assert ours == onnxruntime_top1(out.read_bytes(), images, y)
    assert ours == onnxruntime_top1(pruned.to_bytes(), images, y)
