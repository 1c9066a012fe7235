"""Array-namespace helpers: one code path for NumPy, CuPy and any array-API library.

Numeric code calls :func:`namespace` once at its boundary and passes ``xp`` down.
The only places that look at *which* library it is are the small dispatchers here
(triangular solve, conversion to NumPy), each with a generic fallback.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import (
    array_namespace,
    is_cupy_namespace,
    is_numpy_namespace,
)
from array_api_compat import (
    device as _device,
)

__all__ = ["namespace", "device", "to_numpy", "from_numpy", "solve_triangular", "row_spans"]


def namespace(*arrays: Any) -> Any:
    """Return the array-API namespace shared by ``arrays`` (NumPy arrays give the compat NumPy)."""
    return array_namespace(*arrays)


def device(x: Any) -> Any:
    """Device of ``x`` (``"cpu"`` for NumPy)."""
    return _device(x)


def row_spans(stop: int, block: int, start: int = 0) -> list[tuple[int, int]]:
    """``(lo, hi)`` bounds of consecutive row blocks; ``hi`` never passes ``stop`` (strict slicing)."""
    return [(lo, min(lo + block, stop)) for lo in range(start, stop, block)]


def to_numpy(x: Any) -> np.ndarray:
    """Copy any supported array to a NumPy array (CuPy via ``.get()``)."""
    if isinstance(x, np.ndarray):
        return x
    xp = array_namespace(x)
    if is_cupy_namespace(xp):
        return x.get()
    if is_numpy_namespace(xp):
        return np.asarray(x)
    info = getattr(xp, "__array_namespace_info__", None)
    if info is not None:  # e.g. array_api_strict's non-default devices: copy to the default (host) one first
        home = info().default_device()
        if _device(x) != home:
            x = x.to_device(home)
    return np.from_dlpack(x)  # any other array-API library speaks DLPack


def from_numpy(a: np.ndarray, like: Any) -> Any:
    """Move a NumPy array into the namespace and onto the device of ``like``."""
    xp = array_namespace(like)
    if is_numpy_namespace(xp):
        return np.asarray(a)
    return xp.asarray(a, device=_device(like))


def solve_triangular(L: Any, B: Any, *, lower: bool, trans: bool = False, xp: Any) -> Any:
    """Solve ``L x = B`` (or ``L^T x = B`` with ``trans``) for triangular ``L``.

    NumPy uses SciPy's LAPACK triangular solve, CuPy its cuSOLVER twin; other
    namespaces fall back to the standard's general ``linalg.solve``.
    """
    if is_numpy_namespace(xp):
        from scipy.linalg import solve_triangular as _st

        return _st(np.asarray(L), np.asarray(B), lower=lower, trans=1 if trans else 0, check_finite=False)
    if is_cupy_namespace(xp):
        from cupyx.scipy.linalg import solve_triangular as _st  # CuPy-only branch

        return _st(L, B, lower=lower, trans=1 if trans else 0)
    A = xp.matrix_transpose(L) if trans else L
    return xp.linalg.solve(A, B)
