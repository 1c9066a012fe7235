"""CuPy-only code, kept here: whether a GPU can be used (and why not), and CuPy arrays on a chosen GPU."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["gpu_available", "gpu_count", "gpu_status", "put_on_gpu"]


def gpu_status() -> tuple[bool, str]:
    """``(usable, why)``: whether CuPy imports and sees a CUDA device, and the reason when it does not."""
    try:
        import cupy
    except ImportError as exc:
        return False, (f"CuPy is not installed ({exc.name or exc}): pip install 'lintwin[gpu]' "
                       "(docs/guide/scaling-out.md)")
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


def gpu_count() -> int:
    """Number of CUDA devices CuPy sees (0 when it cannot be used)."""
    if not gpu_available():
        return 0
    import cupy

    return int(cupy.cuda.runtime.getDeviceCount())


def cupy_device(index: int) -> Any:
    """The ``cupy.cuda.Device`` of GPU ``index``."""
    import cupy

    return cupy.cuda.Device(index)


def put_on_gpu(a: np.ndarray, index: int) -> Any:
    """Copy a host array onto GPU ``index``."""
    import cupy

    with cupy.cuda.Device(index):
        return cupy.asarray(a)
