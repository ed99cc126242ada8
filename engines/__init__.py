"""Generator engines behind one interface, picked by file suffix.

    with open_engine("gen.onnx") as engine:
        restored, occlusion = engine.infer(batch)   # batch: float32 [N, 3, S, S], RGB in [-1, 1]

Backends register the suffixes they load; heavy imports (onnxruntime, torch, tensorrt) happen
inside each backend's loader, so choosing one never imports the others. The arrays ``infer``
returns may be buffers the engine reuses on the next call: whoever keeps a result copies it.
"""
from __future__ import annotations

import importlib
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class EngineError(RuntimeError):
    """A model file that cannot be loaded or does not meet the generator contract."""


@dataclass(frozen=True)
class EngineSpec:
    backend: str
    path: str
    crop_size: int
    max_batch: int
    precision: str
    device: str
    metadata: dict = field(default_factory=dict)


class Engine:
    """Base class: subclasses set ``spec`` and implement ``_infer`` and ``_release``."""

    spec: EngineSpec

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        size = self.spec.crop_size
        if not isinstance(batch, np.ndarray) or batch.dtype != np.float32:
            raise ValueError(f"engine input must be a float32 numpy array, got {getattr(batch, 'dtype', type(batch))}")
        if batch.ndim != 4 or batch.shape[1:] != (3, size, size):
            raise ValueError(f"engine input must be [N, 3, {size}, {size}], got {list(batch.shape)}")
        if not 1 <= batch.shape[0] <= self.spec.max_batch:
            raise ValueError(f"batch of {batch.shape[0]} faces; this engine takes 1 to {self.spec.max_batch}")
        if batch.size and (batch.min() < -1.001 or batch.max() > 1.001):
            raise ValueError("engine input values must lie in [-1, 1]")
        return self._infer(np.ascontiguousarray(batch))

    def close(self) -> None:
        if not getattr(self, "_closed", False):
            self._closed = True
            self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _infer(self, batch: np.ndarray):
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError


# suffix -> "module:function" returning an Engine; one file per backend.
_REGISTRY: dict[str, str] = {}


def register(suffixes, loader: str) -> None:
    for suffix in suffixes:
        _REGISTRY[suffix.lower()] = loader


register([".onnx"], "engines.onnx_backend:load")
register([".plan", ".engine"], "engines.tensorrt_backend:load")
register([".pt", ".ckpt"], "engines.torch_backend:load")


def has_cuda_provider() -> bool:
    """Whether ONNX Runtime here has its CUDA provider (the app then prefers the fp32 file)."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def vnni_flag(cpuinfo: str) -> bool | None:
    """Whether a Linux ``/proc/cpuinfo`` text shows VNNI (``avx512_vnni`` or ``avx_vnni``) on its
    first processor's flags; None if it lists no flags."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            return "avx512_vnni" in flags or "avx_vnni" in flags
    return None


def cpu_int8_is_fast() -> bool:
    """Whether ONNX Runtime's int8 kernels are the faster ones on this CPU. On x86 only with VNNI
    (Intel since Ice Lake and Alder Lake, AMD since Zen 4): without it they add the uint8 x int8
    products in 16 bits, so the int8 file keeps its weights in 7 bits and runs a crop and its
    mirror slower than the fp32 file (an AMD EPYC Zen 3: 45-47 against 41-42 ms on one thread).
    Other CPUs (ARM's dot-product kernels), and an x86 CPU that cannot be read, keep int8."""
    if platform.machine().lower() not in X86:
        return True
    try:
        found = vnni_flag(Path("/proc/cpuinfo").read_text())
    except OSError:
        found = None
    if found is None:  # not Linux: NumPy's view of the CPU knows AVX512-VNNI, not AVX-VNNI
        try:
            from numpy._core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return True
        return bool(features.get("AVX512VNNI", True))
    return found


def suffixes() -> list[str]:
    return sorted(_REGISTRY)


def open_engine(path: str | Path, **options) -> Engine:
    """Load a generator file with the backend its suffix names."""
    path = Path(path)
    loader = _REGISTRY.get(path.suffix.lower())
    if loader is None:
        raise EngineError(f"{path}: unknown engine type '{path.suffix}' (expected one of {', '.join(suffixes())})")
    if not path.is_file():
        raise EngineError(f"engine file not found: {path}")
    if path.stat().st_size == 0:
        raise EngineError(f"engine file is empty: {path}")
    module_name, function = loader.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, function)(path, **options)
