"""subprune: prune the channels of a CNN (ONNX) from a few hundred calibration images.

For each prunable layer, subprune picks the channels to keep by a weakly submodular greedy (the
method of El Halabi, Srinivas and Lacoste-Julien, NeurIPS 2022) and gives the next layer new
weights by least squares, so that its input changes as little as possible. The work runs in Rust,
on the CPU or on any GPU (wgpu), with the GIL released.

    >>> import numpy as np, subprune
    >>> calib = np.load("mnist_calib_512.npy")                 # (N, 1, 28, 28) float32
    >>> pruned = subprune.prune("mnist_cnn.onnx", calib, keep_fraction=0.5)
    >>> pruned.save("mnist_cnn_pruned.onnx")
    >>> pruned.report["parameters_after"]
    >>> subprune.evaluate(pruned, test_u8, labels, mean=0.1307, std=0.3081)["top1"]

Functions: :func:`prune`, :func:`evaluate`, :func:`info`, :func:`select`, :func:`devices`.
Bad input raises :class:`ValueError` with the command line's message, a device failure
:class:`GpuError`; Ctrl-C stops the work at the next batch with :class:`KeyboardInterrupt`.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _subprune
from ._subprune import GpuError, __version__

__all__ = [
    "GpuError",
    "PrunedModel",
    "__version__",
    "devices",
    "evaluate",
    "info",
    "prune",
    "read_folder",
    "select",
]

Progress = Union[None, bool, str, Callable[[str, int, int], Any]]


class PrunedModel:
    """A pruned ONNX model held in memory, with the report of the run.

    ``save(path)`` writes it (atomically), ``to_bytes()`` gives the ONNX bytes (for
    ``onnxruntime.InferenceSession`` or ``onnx.load_from_string``), ``report`` is the dict the
    command line's ``prune --report`` writes (without the test-set accuracies: measure them with
    :func:`evaluate`). It can be passed to :func:`evaluate` and :func:`info` as a model.
    """

    __slots__ = ("_inner", "_report")

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._report: Optional[Dict[str, Any]] = None

    @property
    def report(self) -> Dict[str, Any]:
        """Per layer (``layers``: name, channels before and after, ``kept`` channels, greedy
        ``order`` and ``error_curve``, relative error, time), parameters and FLOPs before and
        after, phases, backend; ``model`` names the input, ``budget`` the whole-model plan."""
        if self._report is None:
            self._report = json.loads(self._inner.report_json)
        return self._report

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes the model to ``path`` (a temporary file, then a rename: a failure leaves any
        previous file whole). A model read with external data is written with external data
        (``PATH.data`` beside it). Never writes over the file the model was read from."""
        self._inner.save(os.fspath(path))

    def to_bytes(self) -> bytes:
        """The model as ONNX bytes, every tensor inside."""
        return self._inner.to_bytes()

    def to_onnx(self) -> Any:
        """The model as an ``onnx.ModelProto`` (needs the ``onnx`` package)."""
        import onnx

        return onnx.load_from_string(self.to_bytes())

    def __repr__(self) -> str:
        r = self.report
        return (
            f"PrunedModel({r['model']!r}: parameters {r['parameters_before']} -> "
            f"{r['parameters_after']}, FLOPs {r['flops_before']} -> {r['flops_after']})"
        )


def _model(model: Any) -> Any:
    """A model as the extension takes it: a PrunedModel's core, ``bytes``, or a path."""
    if isinstance(model, PrunedModel):
        return model._inner
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        return os.fsdecode(path) if isinstance(path, bytes) else path
    if hasattr(model, "SerializeToString"):  # onnx.ModelProto
        return model.SerializeToString()
    raise TypeError(
        f"model: expected a path, ONNX bytes, an onnx.ModelProto or a PrunedModel, "
        f"not {type(model).__name__}"
    )


def _images(
    x: Any, what: str, mean: Any, std: Any, note_unused: bool = True
) -> np.ndarray:
    """Images as a C-contiguous float32 or uint8 array (no copy when they already are)."""
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.uint8):
        raise ValueError(
            f"{what}: dtype {a.dtype} is not image data (float32 or uint8 expected; "
            f"convert with a.astype(np.float32))"
        )
    if a.dtype == np.uint8 and mean is None and std is None:
        warnings.warn(
            f"{what} is uint8 and no mean/std were given: its pixels are only scaled to [0, 1] "
            f"(x / 255); give the dataset's mean and std if the model was trained on normalised "
            f"images",
            stacklevel=3,
        )
    if a.dtype == np.float32 and note_unused and (mean is not None or std is not None):
        warnings.warn(
            f"mean/std apply to uint8 data; the float32 {what} is used as it is", stacklevel=3
        )
    return np.ascontiguousarray(a)


def _floats(v: Any) -> Optional[list]:
    if v is None:
        return None
    return [float(x) for x in np.atleast_1d(np.asarray(v, dtype=np.float64))]


def _labels(labels: Any) -> bytes:
    """Labels as the bytes of a ``.npy`` file: the extension reads them with the command line's
    rules (integer class indices, shape ``(N,)`` or ``(N, 1)``) and messages."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(labels), allow_pickle=False)
    return buf.getvalue()


def _runtime_dir(backend: str = "gpu") -> None:
    """Mesa's Vulkan drivers complain on stderr when XDG_RUNTIME_DIR is unset (containers, CI):
    give the process a private one (mode 0700, removed at exit) before wgpu looks for adapters,
    as the command line does."""
    if backend == "cpu" or os.environ.get("XDG_RUNTIME_DIR"):
        return
    import atexit
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="subprune-runtime-")
    os.environ["XDG_RUNTIME_DIR"] = path
    atexit.register(shutil.rmtree, path, True)


def _bytes_arg(v: Any) -> Optional[str]:
    return None if v is None else str(v)


class _TqdmProgress:
    """Progress as tqdm bars: one for the stage ``layers``, one for the current step."""

    def __init__(self) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("progress=True shows tqdm bars: pip install tqdm") from e
        self._tqdm = tqdm
        self._bars: Dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        slot = "layers" if stage == "layers" else "step"
        bar = self._bars.get(slot)
        if bar is None or bar.desc != stage:
            if bar is not None:
                bar.close()
            bar = self._tqdm(total=total, desc=stage, leave=False, position=len(self._bars))
            self._bars[slot] = bar
        bar.total = total
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


def _progress(progress: Progress) -> Tuple[Optional[Callable[[str, int, int], Any]], Any]:
    if progress is None or progress is False:
        return None, None
    if progress is True or progress == "tqdm":
        bars = _TqdmProgress()
        return bars, bars
    if callable(progress):
        return progress, None
    raise TypeError("progress: expected a callable (stage, done, total), True or 'tqdm'")


def _run(job: Callable[[Any], Any], progress: Progress) -> Any:
    callback, bars = _progress(progress)
    try:
        return job(callback)
    finally:
        if bars is not None:
            bars.close()


def prune(
    model: Any,
    calib: Any,
    *,
    keep_fraction: Optional[float] = None,
    compression: Optional[float] = None,
    target_flops: Optional[float] = None,
    variant: str = "asym",
    method: str = "greedy",
    budget: str = "uniform",
    backend: str = "auto",
    keep: Optional[Mapping[str, int]] = None,
    skip: Sequence[str] = (),
    groups: str = "all",
    reweight: bool = True,
    ridge: float = 0.01,
    seed: int = 0,
    calib_images: Optional[int] = None,
    resize: Optional[int] = None,
    mean: Union[None, float, Sequence[float]] = None,
    std: Union[None, float, Sequence[float]] = None,
    batch: Optional[int] = None,
    memory_budget: Union[str, int] = "2G",
    memory_limit: Union[None, str, int] = None,
    val_images: Any = None,
    val_labels: Any = None,
    adapter: Optional[str] = None,
    progress: Progress = None,
) -> PrunedModel:
    """Prunes every prunable layer of an ONNX CNN, as ``subprune prune`` does.

    Args:
        model: a path, ONNX bytes, an ``onnx.ModelProto``, or a :class:`PrunedModel`.
        calib: calibration images ``(N, C, H, W)``: float32 (preprocessed, used as they are) or
            uint8 raw pixels normalised as ``(x / 255 - mean[c]) / std[c]``. A C-contiguous
            array is read in place (no copy). Or a folder of JPEG/PNG images (see
            :func:`read_folder`; ``resize``, ``mean``, ``std`` apply).
        keep_fraction: fraction of channels kept per layer (default 0.5); or
        compression: parameters divided by this ratio (> 1), split over layers by ``budget``; or
        target_flops: FLOPs per image the pruned model may take, split by ``budget``.
        variant: ``"asym"`` (default), ``"seq"`` or ``"layer"``: which activations each layer's
            statistics use.
        method: ``"greedy"`` (default), ``"greedy-tail"``, ``"random"``, ``"weight-norm"``,
            ``"act-norm"``, ``"layer-sampling"``.
        budget: ``"uniform"`` (default), ``"error"`` or ``"accuracy"`` (needs ``val_images`` and
            ``val_labels``): how ``compression``/``target_flops`` is split over layers.
        backend: ``"auto"`` (a hardware GPU if there is one, else the CPU), ``"cpu"``, ``"gpu"``.
        keep: channels kept per group, by the group's first producer node name, as ``info``
            lists it (overrides ``keep_fraction``).
        skip: groups left whole, by first producer name.
        groups: ``"all"`` (default: block-internal groups, residual streams, Concat/Split
            blocks) or ``"internal"`` (block-internal groups only).
        reweight: replace the next layers' weights by the least-squares ones (default True).
        ridge: relative ridge of the reweighting.
        seed: seed of the random methods.
        calib_images: use only the first N calibration images.
        resize: for a folder: the shorter side of each image, before the centre crop.
        mean, std: per-channel normalisation of uint8 images (one value or one per channel).
        batch: images per forward batch (default 128).
        memory_budget: memory for cached activations of the sequential variants (``"2G"``).
        memory_limit: refuse to start when the statistics need more (default: available memory).
        val_images, val_labels: labelled validation images for ``budget="accuracy"``.
        adapter: part of the GPU adapter's name (default: ``SUBPRUNE_ADAPTER``, else wgpu's).
        progress: a callable ``(stage, done, total)``, or True for tqdm bars.

    Returns:
        a :class:`PrunedModel`.

    Raises:
        ValueError: bad input (shapes, values, names, options), with the CLI's message.
        GpuError: the GPU failed (under ``backend="auto"`` the work is rerun on the CPU first).
        KeyboardInterrupt: Ctrl-C (the work stops at the next batch).
    """
    targets = [n for n, v in [("keep_fraction", keep_fraction), ("compression", compression),
                              ("target_flops", target_flops)] if v is not None]
    if len(targets) > 1:
        raise ValueError(f"give one of keep_fraction, compression, target_flops, not {targets}")
    if keep and (compression is not None or target_flops is not None):
        raise ValueError("keep= sets layer sizes itself; it cannot be combined with a "
                         "compression or target_flops target")
    if budget != "uniform" and compression is None and target_flops is None:
        raise ValueError(f"budget={budget!r} splits a compression or target_flops target; "
                         f"give one of them")
    if budget == "accuracy" and (val_images is None or val_labels is None):
        raise ValueError("budget='accuracy' measures each layer's accuracy on labelled "
                         "validation images: give val_images and val_labels (a held-out "
                         "split, not the test set)")
    if budget != "accuracy" and (val_images is not None or val_labels is not None):
        raise ValueError("val_images/val_labels are only used by budget='accuracy'")
    options: Dict[str, Any] = {
        "keep_fraction": keep_fraction,
        "compression": compression,
        "target_flops": target_flops,
        "variant": variant,
        "method": method,
        "budget": budget,
        "backend": backend,
        "adapter": adapter,
        "keep": sorted((str(k), int(v)) for k, v in (keep or {}).items()),
        "skip": [str(s) for s in skip],
        "groups": str(groups),
        "reweight": bool(reweight),
        "ridge": float(ridge),
        "seed": int(seed),
        "calib_images": calib_images,
        "mean": _floats(mean),
        "std": _floats(std),
        "batch": batch,
        "memory_budget": _bytes_arg(memory_budget),
        "memory_limit": _bytes_arg(memory_limit),
    }
    if val_images is not None:
        options["val_images"] = _images(val_images, "val_images", mean, std, False)
        options["val_labels"] = _labels(val_labels)
    m = _model(model)
    if isinstance(calib, (str, os.PathLike)) and os.path.isdir(calib):
        # A folder of images, read as `subprune prune --calib DIR` reads it (normalised here).
        images, _ = read_folder(calib, model, resize=resize, mean=mean, std=std)
        options["mean"], options["std"] = None, None
    else:
        images = _images(calib, "calib", mean, std)
    _runtime_dir(backend)
    return _run(lambda cb: PrunedModel(_subprune.prune(m, images, options, cb)), progress)


def read_folder(
    path: Union[str, os.PathLike],
    model: Any,
    *,
    resize: Optional[int] = None,
    mean: Union[None, float, Sequence[float]] = None,
    std: Union[None, float, Sequence[float]] = None,
) -> Tuple[np.ndarray, Optional[list]]:
    """Reads a folder of JPEG/PNG images as ``--calib DIR``/``--data DIR`` do.

    Every ``.png``/``.jpg``/``.jpeg`` under ``path`` in sorted order, the shorter side resized
    to ``resize`` (if given), centre-cropped to the model's input size, converted to its channel
    count, and normalised as ``(x / 255 - mean[c]) / std[c]``.

    Returns:
        ``(images, labels)``: float32 ``(N, C, H, W)``, and the class index of each image from
        its top-level subfolder (sorted names), or ``None`` for a flat folder.

    Raises:
        ValueError: an unreadable image (named), no images, an image smaller than the input.
    """
    shape = info(model)["inputs"][0]["shape"].strip("[]").split(",")
    dims = [int(d) for d in shape[1:]]
    if len(dims) != 3:
        raise ValueError(f"read_folder: the model's input is {shape}, not (N, C, H, W)")
    images, labels = _subprune.read_folder(
        os.fspath(path), dims[0], dims[1], dims[2], resize, _floats(mean), _floats(std)
    )
    return images, (list(labels) if labels is not None else None)


def evaluate(
    model: Any,
    images: Any,
    labels: Any,
    *,
    mean: Union[None, float, Sequence[float]] = None,
    std: Union[None, float, Sequence[float]] = None,
    batch: int = 64,
    limit: Optional[int] = None,
    backend: str = "auto",
    adapter: Optional[str] = None,
    progress: Progress = None,
) -> Dict[str, Any]:
    """Top-1 and top-5 accuracy of a classifier, as ``subprune eval --json``.

    ``images`` are float32 (used as they are) or uint8 (normalised with ``mean``/``std``),
    ``labels`` integer class indices of shape ``(N,)`` or ``(N, 1)``; ``limit`` scores only the
    first N images. Returns ``{"images", "top1", "top5", "correct_top1", "correct_top5",
    "images_per_second", "backend"}`` (``top1``/``top5`` are fractions, ``correct_*`` counts).
    """
    m = _model(model)
    x = _images(images, "images", mean, std)
    options = {
        "mean": _floats(mean),
        "std": _floats(std),
        "batch": int(batch),
        "limit": limit,
        "backend": backend,
        "adapter": adapter,
    }
    y = _labels(labels)
    _runtime_dir(backend)
    return json.loads(_run(lambda cb: _subprune.evaluate(m, x, y, options, cb), progress))


def info(model: Any) -> Dict[str, Any]:
    """What ``subprune info --json`` prints: inputs and outputs, op counts, parameters, FLOPs
    per image, producer -> consumer channel pairs, prunable and coupled layers."""
    return json.loads(_subprune.info(_model(model)))


def _pair(v: Union[int, Sequence[int]], what: str) -> list:
    a = np.atleast_1d(np.asarray(v))
    if a.ndim != 1 or len(a) not in (1, 2) or a.dtype.kind not in "iu":
        raise ValueError(f"{what}: expected one whole number or two (h, w), not {v!r}")
    return [int(a[0]), int(a[-1])]


def _f32(x: Any, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype != np.float32:
        raise ValueError(f"{what}: dtype {a.dtype}; float32 expected "
                         f"(convert with a.astype(np.float32))")
    return np.ascontiguousarray(a)


def select(
    inputs: Any,
    weight: Any,
    *,
    target: Any = None,
    keep: Optional[int] = None,
    keep_fraction: Optional[float] = None,
    stride: Union[int, Sequence[int]] = 1,
    padding: Union[int, Sequence[int]] = 0,
    dilation: Union[int, Sequence[int]] = 1,
    reweight: bool = True,
    ridge: float = 0.0,
    dependence_tol: Optional[float] = None,
    batch_images: Optional[int] = None,
    backend: str = "auto",
    adapter: Optional[str] = None,
    memory_limit: Union[None, str, int] = None,
    progress: Progress = None,
) -> Dict[str, Any]:
    """The layer engine on arrays, as ``subprune select --json``.

    ``inputs`` is the consumer's input ``B``: ``(N, C)`` for a linear consumer, ``(N, C, H, W)``
    for a conv (or conv -> flatten -> linear); ``weight`` its weight ``(M, C)``,
    ``(M, C, kh, kw)`` or ``(M, C*H*W)``; ``target`` the asymmetric variant's ``A`` (shape of
    ``inputs``). Keeps ``keep`` channels, or ``round(keep_fraction * C)`` (default half).

    Returns ``{"order", "kept", "error_curve", "relative_error", "greedy_form", "weight"}``:
    the greedy order of every channel, the kept channels (sorted), the relative error
    ``||AW - B_S W~||^2 / ||AW||^2`` after 1, 2, ... channels, the error at the budget, and the
    new consumer weight (only the kept input channels, in ``weight``'s layout).
    """
    if keep is not None and keep_fraction is not None:
        raise ValueError("give keep or keep_fraction, not both")
    if keep is not None and int(keep) < 1:
        raise ValueError(f"keep={keep}: at least 1 channel must be kept")
    options = {
        "keep": None if keep is None else int(keep),
        "keep_fraction": keep_fraction,
        "stride": _pair(stride, "stride"),
        "padding": _pair(padding, "padding"),
        "dilation": _pair(dilation, "dilation"),
        "reweight": bool(reweight),
        "ridge": float(ridge),
        "dependence_tol": dependence_tol,
        "batch_images": batch_images,
        "backend": backend,
        "adapter": adapter,
        "memory_limit": _bytes_arg(memory_limit),
    }
    b = _f32(inputs, "inputs")
    w = _f32(weight, "weight")
    a = None if target is None else _f32(target, "target")
    _runtime_dir(backend)
    text, values, shape = _run(
        lambda cb: _subprune.select(b, w, a, options, cb), progress
    )
    out = json.loads(text)
    out["weight"] = values.reshape(shape)
    return out


def devices() -> list:
    """The GPU adapters wgpu sees, one line each (name, backend, type, driver)."""
    _runtime_dir()
    return list(_subprune.devices())
