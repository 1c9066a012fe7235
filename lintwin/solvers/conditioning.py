"""The one conditioning core of every closed-form solve: scaling, constant units, condition, precision.

Every decision about rank and conditioning is taken in the *scaled* space, where the
co-moment matrix becomes a correlation matrix R (unit diagonal):

- a unit (feature) is **constant** when its spread over the rows is at the rounding level of its
  own values; constant units get zero weight and leave the rest of the system untouched;
- the **condition number** of R (plus the scaled ridge) is estimated from its Cholesky factor by
  Hager's 1-norm estimator (what LAPACK's ``pocon`` does), in O(d²) and on any array namespace;
- the **estimated relative errors**: to first order a perturbation δR of the moments moves the
  scaled solution by R^-1 δR W^T; for rounding errors of size eps per entry, the expected size of that
  move is eps·||R^-1||_F relative to W *in the scaled space* (each source unit's weights times its
  spread: the part of W the data determine; weights of units of tiny spread can be off by far more in
  raw units without changing any prediction), and that of the mapped features is eps·sqrt(tr R^-1).
  Both are estimates, not bounds: measured against float64 references on hostile features
  (tests/test_error_estimates.py) the measured errors lie between 0.1 and 1.6 times the estimates.
  ||R^-1||_F and tr R^-1 are estimated with random probes through the Cholesky factor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.xp import device, solve_triangular

__all__ = ["Scaled", "constant_units", "default_rcond", "estimate_condition", "expected_error", "inverse_norms", "moment_eps",
           "scale_system"]


TF32_UNIT = 2.0**-11  # unit roundoff of TF32 (10 mantissa bits): tensor cores round each factor of a product


def moment_eps(precision: str, n: int = 0) -> float:
    """Relative rounding of moments accumulated at ``precision`` over ``n`` rows (machine epsilon of the products).

    TF32 rounds each factor of each product (relative u = 2⁻¹¹), independently from row to row,
    so summed over n rows the co-moments carry about u·√(2/n) of relative rounding (measured in
    tests/test_block_pipeline.py); never less than float32's own.
    """
    if precision == "tf32":
        return max(TF32_UNIT * math.sqrt(2.0 / max(n, 1)), float(np.finfo(np.float32).eps))
    return float(np.finfo(precision).eps)


def default_rcond(precision: str, n: int = 0) -> float:
    """Relative eigenvalue below which a direction of the scaled system is rounding noise.

    Rounding in the moments leaves eigenvalues of the correlation matrix at about eps(precision)
    relative to the largest (measured: ~5e-8 for float32 products, ~2e-16 for float64); ten eps
    sits safely above that and well below the spectra of real features.
    """
    return 10.0 * moment_eps(precision, n)


def expected_error(inverse_frobenius: float, precision: str, n: int = 0) -> float:
    """Expected relative error of W from rounding in moments of ``precision`` over ``n`` rows: ``eps · ||R^-1||_F``."""
    return float(inverse_frobenius) * moment_eps(precision, n)


def inverse_norms(L: Any, *, xp: Any, probes: int = 8, seed: int = 0) -> tuple[float, float]:
    """Estimate ``(||R^-1||_F, tr R^-1)`` from the Cholesky factor of R with the same random sign probes.

    Hutchinson: for probes z with independent ±1 entries, ``E||R^-1 z||² = tr(R^-2) = ||R^-1||_F²`` and
    ``E[zᵀ R^-1 z] = tr(R^-1)``.
    """
    d = int(L.shape[0])
    if d == 0:
        return 0.0, 0.0
    signs = np.random.default_rng(seed).integers(0, 2, size=(d, probes)) * 2.0 - 1.0
    z = xp.asarray(signs, dtype=L.dtype, device=device(L))
    w = solve_triangular(L, z, lower=True, xp=xp)
    y = solve_triangular(L, w, lower=True, trans=True, xp=xp)
    return math.sqrt(float(xp.sum(y * y)) / probes), max(float(xp.sum(z * y)) / probes, 0.0)


def constant_units(diag: Any, mean: Any, n: int, precision: str, *, xp: Any) -> Any:
    """Boolean mask of units that are constant over the rows.

    A unit is constant when its standard deviation is at most ten rounding units of its own
    magnitude (``10·eps·|mean|``), or below 1e-12 of the largest unit's: exactly constant
    units (dead ReLUs) have a co-moment of exactly zero; units whose spread is set only by the
    rounding of their values carry no information either. Low-variance but real units are kept.
    """
    std = xp.sqrt(xp.maximum(diag, xp.zeros_like(diag)) / max(int(n), 1))
    top = xp.max(std) if int(std.shape[0]) else xp.asarray(0.0, dtype=std.dtype, device=device(std))
    floor = xp.maximum(10.0 * moment_eps(precision, n) * xp.abs(mean), 1e-12 * top)
    return std <= floor


@dataclass
class Scaled:
    """A co-moment matrix in the scaled space: ``R = D^-1 S D^-1`` with ``D = diag(scale)``.

    Rows and columns of constant units are replaced by those of the identity, so R stays
    positive definite when the other units are; solutions must zero the constant units' rows.
    """

    R: Any
    scale: Any
    constant: Any
    n_constant: int


def scale_system(sxx: Any, mean: Any, n: int, precision: str, *, xp: Any) -> Scaled:
    """Scale ``sxx`` to correlations, with constant units (see :func:`constant_units`) split off."""
    d = int(sxx.shape[0])
    diag = xp.linalg.diagonal(sxx)
    constant = constant_units(diag, mean, n, precision, xp=xp)
    scale = xp.where(constant, xp.ones_like(diag), xp.sqrt(xp.maximum(diag, xp.zeros_like(diag))))
    keep = xp.astype(~constant, sxx.dtype)
    R = sxx / (xp.reshape(scale, (-1, 1)) * xp.reshape(scale, (1, -1)))
    R = R * (xp.reshape(keep, (-1, 1)) * xp.reshape(keep, (1, -1)))
    R = R + xp.eye(d, dtype=sxx.dtype, device=device(sxx)) * xp.reshape(1.0 - keep, (1, -1))
    n_constant = int(xp.sum(xp.astype(constant, xp.int32)))
    return Scaled(R, scale, constant, n_constant)


def estimate_condition(R: Any, L: Any, *, xp: Any, iterations: int = 5) -> float:
    """1-norm condition number of symmetric positive definite ``R`` from its Cholesky factor ``L``.

    Hager's estimator (Higham, *Accuracy and Stability*, Alg. 15.4; LAPACK ``xLACON``) for
    ||R^-1||_1 from a few solves with ``L``; it is exact or a close lower bound in practice.
    """
    d = int(R.shape[0])
    if d == 0:
        return 1.0

    def solve(v: Any) -> Any:  # R^-1 v = L^-T L^-1 v (R is symmetric, so R^-T = R^-1)
        w = solve_triangular(L, xp.reshape(v, (-1, 1)), lower=True, xp=xp)
        return xp.reshape(solve_triangular(L, w, lower=True, trans=True, xp=xp), (-1,))

    norm_r = float(xp.max(xp.sum(xp.abs(R), axis=0)))
    x = xp.full((d,), 1.0 / d, dtype=R.dtype, device=device(R))
    estimate = 0.0
    last_j = -1
    for _ in range(iterations):
        y = solve(x)
        estimate = max(estimate, float(xp.sum(xp.abs(y))))
        xi = xp.where(y >= 0, xp.ones_like(y), -xp.ones_like(y))
        z = solve(xi)
        j = int(xp.argmax(xp.abs(z)))
        if float(xp.abs(z[j])) <= float(xp.sum(z * x)) or j == last_j:
            break
        x = xp.zeros_like(x)
        x[j] = 1.0
        last_j = j
    # Higham's extra test vector with alternating signs guards against unlucky starts.
    alt = xp.asarray([(-1.0) ** i * (1.0 + i / max(d - 1, 1)) for i in range(d)], dtype=R.dtype, device=device(R))
    estimate = max(estimate, 2.0 * float(xp.sum(xp.abs(solve(alt)))) / (3.0 * d))
    return norm_r * estimate
