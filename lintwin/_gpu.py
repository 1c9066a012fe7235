"""CuPy-only code, kept here: device choice and moving host blocks onto the GPU."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from .errors import LintwinError

Device = Literal["auto", "cpu", "gpu"]

__all__ = ["Device", "gpu_available", "resolve_device", "to_device"]


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, CUDARuntimeError, missing driver libraries ...
        return False


def resolve_device(device: str) -> str:
    """Turn ``"auto"`` into ``"gpu"`` or ``"cpu"``; refuse ``"gpu"`` when there is none."""
    if device == "auto":
        return "gpu" if gpu_available() else "cpu"
    if device == "gpu" and not gpu_available():
        raise LintwinError("--device gpu needs CuPy and a CUDA GPU; install lintwin[gpu] or use --device cpu")
    if device not in ("cpu", "gpu"):
        raise LintwinError(f"device must be auto, cpu or gpu, got {device!r}")
    return device


def to_device(a: np.ndarray, device: str) -> Any:
    """Return ``a`` on the resolved ``device`` (a CuPy array for ``"gpu"``)."""
    if device == "gpu":
        import cupy

        return cupy.asarray(a)
    return a
