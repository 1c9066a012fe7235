"""Shared fixtures: array namespaces, realistic data, paths to optional real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lintwin.core.gpu import gpu_status
from lintwin.storage.synthetic import SyntheticPair

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _namespaces() -> list:
    import array_api_strict

    params = [pytest.param(np, id="numpy"), pytest.param(array_api_strict, id="array_api_strict")]
    usable, why = gpu_status()
    if usable:
        import cupy

        params.append(pytest.param(cupy, id="cupy"))
    else:  # shown as skipped, with the reason, rather than silently missing
        params.append(pytest.param(None, id="cupy", marks=pytest.mark.skip(reason=f"no GPU for CuPy: {why}")))
    return params


@pytest.fixture(params=_namespaces())
def xp(request):
    """Each array library the numeric core must serve: NumPy and array_api_strict always, CuPy on a GPU."""
    return request.param


def to_xp(xp, a: np.ndarray):
    return a if xp is np else xp.asarray(a)


@pytest.fixture(scope="session")
def realistic() -> dict[str, np.ndarray]:
    """Realistic paired CNN-like features: train rows and held-out rows (512 → 384)."""
    gen = SyntheticPair(512, 384, latent=128, noise=0.3, seed=7)
    a, b = gen.arrays(30000)
    a_val, b_val = gen.arrays(5000, start=30000)
    return {"a": a, "b": b, "a_val": a_val, "b_val": b_val}


def lstsq_reference(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 affine least squares by scipy.linalg.lstsq (gelsd) on [a, 1]: (W, bias)."""
    import scipy.linalg

    x = np.hstack([a.astype(np.float64), np.ones((a.shape[0], 1))])
    coef = scipy.linalg.lstsq(x, b.astype(np.float64), lapack_driver="gelsd")[0]
    return coef[:-1].T, coef[-1]


def rel(x, ref) -> float:
    from lintwin.core.xp import to_numpy

    x = to_numpy(x)
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))
