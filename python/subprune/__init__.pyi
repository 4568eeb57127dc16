"""Type stubs of the subprune package (see __init__.py for the documentation)."""

import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

class GpuError(RuntimeError):
    """A GPU backend failure: no adapter, a lost device, a refused allocation, a shader error."""

ModelLike = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, Any, "PrunedModel"]
ArrayLike = npt.ArrayLike
Floats = Union[None, float, Sequence[float]]
Progress = Union[None, bool, str, Callable[[str, int, int], Any]]

class PrunedModel:
    @property
    def report(self) -> Dict[str, Any]: ...
    def save(self, path: Union[str, "os.PathLike[str]"]) -> None: ...
    def to_bytes(self) -> bytes: ...
    def to_onnx(self) -> Any: ...

def prune(
    model: ModelLike,
    calib: ArrayLike,
    *,
    keep_fraction: Optional[float] = ...,
    compression: Optional[float] = ...,
    target_flops: Optional[float] = ...,
    variant: str = ...,
    method: str = ...,
    budget: str = ...,
    backend: str = ...,
    keep: Optional[Mapping[str, int]] = ...,
    skip: Sequence[str] = ...,
    groups: str = ...,
    reweight: bool = ...,
    ridge: float = ...,
    seed: int = ...,
    calib_images: Optional[int] = ...,
    resize: Optional[int] = ...,
    mean: Floats = ...,
    std: Floats = ...,
    batch: Optional[int] = ...,
    memory_budget: Union[str, int] = ...,
    memory_limit: Union[None, str, int] = ...,
    val_images: Optional[ArrayLike] = ...,
    val_labels: Optional[ArrayLike] = ...,
    adapter: Optional[str] = ...,
    progress: Progress = ...,
) -> PrunedModel: ...
def evaluate(
    model: ModelLike,
    images: ArrayLike,
    labels: ArrayLike,
    *,
    mean: Floats = ...,
    std: Floats = ...,
    batch: int = ...,
    limit: Optional[int] = ...,
    backend: str = ...,
    adapter: Optional[str] = ...,
    progress: Progress = ...,
) -> Dict[str, Any]: ...
def info(model: ModelLike) -> Dict[str, Any]: ...
def select(
    inputs: ArrayLike,
    weight: ArrayLike,
    *,
    target: Optional[ArrayLike] = ...,
    keep: Optional[int] = ...,
    keep_fraction: Optional[float] = ...,
    stride: Union[int, Sequence[int]] = ...,
    padding: Union[int, Sequence[int]] = ...,
    dilation: Union[int, Sequence[int]] = ...,
    reweight: bool = ...,
    ridge: float = ...,
    dependence_tol: Optional[float] = ...,
    batch_images: Optional[int] = ...,
    backend: str = ...,
    adapter: Optional[str] = ...,
    memory_limit: Union[None, str, int] = ...,
    progress: Progress = ...,
) -> Dict[str, Any]: ...
def devices() -> List[str]: ...

def read_folder(
    path: Union[str, os.PathLike],
    model: ModelLike,
    *,
    resize: Optional[int] = ...,
    mean: Floats = ...,
    std: Floats = ...,
) -> Tuple[np.ndarray, Optional[List[int]]]: ...
