"""CuPy-only code, kept here: whether a GPU can be used (and why not), and moving host blocks onto it."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ..errors import LintwinError

Device = Literal["auto", "cpu", "gpu"]

__all__ = ["Device", "device_note", "gpu_available", "gpu_status", "resolve_device", "to_device"]


def gpu_status() -> tuple[bool, str]:
    """``(usable, why)``: whether CuPy imports and sees a CUDA device, and the reason when it does not."""
    try:
        import cupy
    except ImportError as exc:
        return False, f"CuPy is not installed ({exc.name or exc}); see README, 'GPU'"
    except Exception as exc:  # a broken CUDA installation can fail at import with many types
        return False, f"CuPy does not import ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError, missing driver libraries, ...
        return False, f"CuPy cannot reach a CUDA device ({type(exc).__name__}: {exc})"
    if count == 0:
        return False, "CuPy sees no CUDA device"
    return True, f"{count} CUDA device(s)"


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    return gpu_status()[0]


def resolve_device(device: str) -> str:
    """Turn ``"auto"`` into ``"gpu"`` or ``"cpu"``; refuse ``"gpu"`` when there is none, saying why."""
    if device not in ("auto", "cpu", "gpu"):
        raise LintwinError(f"device must be auto, cpu or gpu, got {device!r}")
    if device == "cpu":
        return device
    usable, why = gpu_status()
    if device == "gpu" and not usable:
        raise LintwinError(f"--device gpu cannot be used: {why}; install lintwin[gpu] or use --device cpu")
    return "gpu" if usable else "cpu"


def device_note(requested: str) -> str:
    """One phrase for reports: the device used and, under ``auto`` without a GPU, why the CPU."""
    used = resolve_device(requested)
    if requested == "auto" and used == "cpu":
        return f"cpu (auto: {gpu_status()[1]})"
    return used


def to_device(a: np.ndarray, device: str) -> Any:
    """Return ``a`` on the resolved ``device`` (a CuPy array for ``"gpu"``)."""
    if device == "gpu":
        import cupy

        return cupy.asarray(a)
    return a
