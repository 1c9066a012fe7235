"""Closed-form affine least-squares maps from joint moments.

For source features x and target features y the map minimising
``sum ||W x_i + b - y_i||^2 + ridge * ||W||_F^2`` is ``W^T = (Sxx + ridge I)^{-1} Sxy`` with
``b = mean_y - W mean_x``, where Sxx, Sxy are centred co-moments. This is the paper's
augmented form ``M [x; 1]`` with the bias eliminated through the means (the bias is not
penalised, as in scikit-learn's Ridge).

The system is scaled to correlations (:mod:`.conditioning`); constant units get zero weight;
the rest is solved by Cholesky, with the condition number estimated from the factor. When that
is not safe -- fewer rows than features, a Cholesky failure, or an estimated condition number
past ``1/rcond`` -- the solver warns (:class:`RankWarning`) and returns the truncated
eigen-solution in the scaled space, dropping directions whose eigenvalue is below ``rcond``
times the largest.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from ..core.xp import device, namespace, solve_triangular
from ..errors import LintwinError
from .conditioning import default_rcond, estimate_condition, expected_error, inverse_frobenius, scale_system

__all__ = ["PrecisionWarning", "RankWarning", "check_ridge", "reduce_rank", "solve_affine"]

ERROR_WARN = 1e-4  # expected relative error of W above which lintwin warns


class RankWarning(UserWarning):
    """The normal equations were rank-deficient or near-singular; a truncated solution was used."""


class PrecisionWarning(UserWarning):
    """The expected relative error of the map exceeds :data:`ERROR_WARN` at the chosen precision."""


def check_ridge(ridge: float) -> float:
    """A ridge λ as a float, refusing NaN, infinities and negative values."""
    try:
        lam = float(ridge)
    except (TypeError, ValueError):
        raise LintwinError(f"ridge must be a number >= 0, got {ridge!r}") from None
    if not math.isfinite(lam) or lam < 0:
        raise LintwinError(f"ridge must be a finite number >= 0, got {ridge!r}")
    return lam


def solve_affine(
    sxx: Any,
    sxy: Any,
    mean_x: Any,
    mean_y: Any,
    n: int,
    *,
    ridge: float = 0.0,
    precision: str = "float64",
    rcond: float | None = None,
    label: str = "map",
) -> tuple[Any, Any, dict]:
    """Solve one direction. Returns ``(weight (d_y x d_x), bias (d_y,), info)``.

    ``precision`` is that of the moments (it sets the rounding floor and the expected error).
    ``info`` records the solver used (``"cholesky"`` or ``"eigh"``), the numerical rank, the
    constant units, the condition estimate of the scaled system, the expected relative error
    of W and, after a fallback, why.
    """
    xp = namespace(sxx, sxy)
    if n <= 0:
        raise LintwinError("no rows were accumulated: the training split is empty")
    ridge = check_ridge(ridge)
    d = int(sxx.shape[0])
    rcond = rcond if rcond is not None else default_rcond(precision)
    sc = scale_system(sxx, mean_x, n, precision, xp=xp)
    R = sc.R
    if ridge:
        keep = xp.astype(~sc.constant, R.dtype)
        R = R + xp.eye(d, dtype=R.dtype, device=device(R)) * xp.reshape(keep * ridge / sc.scale**2, (1, -1))
    keep_rows = xp.reshape(xp.astype(~sc.constant, sxy.dtype), (-1, 1))
    rhs = sxy / xp.reshape(sc.scale, (-1, 1)) * keep_rows

    info: dict[str, Any] = {"ridge": ridge, "rows": int(n), "dim": d, "reason": None, "rcond": rcond,
                            "precision": precision, "constant_units": sc.n_constant}
    effective = d - sc.n_constant
    if ridge == 0 and n - 1 < effective:
        info["reason"] = f"fewer rows ({n}) than non-constant features + 1 ({effective + 1})"
    else:
        wt = _cholesky_solve(R, rhs, rcond, info, xp)
        if wt is not None:
            return _finish(wt * keep_rows, sc.scale, mean_x, mean_y, info, label)
    wt = _eigh_solve(R, rhs, sc.constant, rcond, info, xp)
    if info["rank"] < effective:
        warnings.warn(f"{label}: {info['reason']}; used the truncated solution of rank {info['rank']} of "
                      f"{effective} (directions below rcond of the largest, in the scaled space, dropped)",
                      RankWarning, stacklevel=2)
    return _finish(wt * keep_rows, sc.scale, mean_x, mean_y, info, label)


def _cholesky_solve(R: Any, rhs: Any, rcond: float, info: dict, xp: Any) -> Any | None:
    try:
        L = xp.linalg.cholesky(R)
    except (np.linalg.LinAlgError, ValueError):
        info["reason"] = "the normal equations are not positive definite (Cholesky failed)"
        return None
    diag = xp.linalg.diagonal(L)
    # CuPy does not raise on a failed factorisation: it leaves NaN in the factor.
    if not bool(xp.all(xp.isfinite(diag)) & (xp.min(diag) > 0)):
        info["reason"] = "the normal equations are not positive definite (Cholesky failed)"
        return None
    cond = estimate_condition(R, L, xp=xp)
    info["condition"] = cond
    info["inverse_frobenius"] = inverse_frobenius(L, xp=xp)
    if cond * rcond > 1.0:
        info["reason"] = f"the normal equations are near-singular (condition ≈ {cond:.2e} in the scaled space)"
        return None
    z = solve_triangular(L, rhs, lower=True, xp=xp)
    wt = solve_triangular(L, z, lower=True, trans=True, xp=xp)
    info.update(solver="cholesky", rank=int(R.shape[0]) - info["constant_units"])
    return wt


def _eigh_solve(R: Any, rhs: Any, constant: Any, rcond: float, info: dict, xp: Any) -> Any:
    evals, V = xp.linalg.eigh(R)
    top = float(xp.max(evals)) if evals.shape[0] else 0.0
    keep = evals > rcond * top
    inv = xp.where(keep, 1.0 / xp.where(keep, evals, xp.ones_like(evals)), xp.zeros_like(evals))
    wt = V @ (xp.reshape(inv, (-1, 1)) * (xp.matrix_transpose(V) @ rhs))
    # Constant units sit on unit eigenvalues of their own; they are not part of the rank.
    kept = int(xp.sum(xp.astype(keep, xp.int32))) - info["constant_units"]
    smallest = float(xp.min(xp.where(keep, evals, xp.full_like(evals, top)))) if kept > 0 else 0.0
    info.update(solver="eigh", rank=kept, condition=(top / smallest) if smallest > 0 else float("inf"),
                inverse_frobenius=math.sqrt(float(xp.sum(inv * inv))))
    return wt


def _finish(wt: Any, scale: Any, mean_x: Any, mean_y: Any, info: dict, label: str) -> tuple[Any, Any, dict]:
    xp = namespace(wt)
    weight = xp.matrix_transpose(wt / xp.reshape(scale, (-1, 1)))
    bias = mean_y - weight @ mean_x
    cond = info.get("condition", float("inf"))
    # After a truncation this is the error of the truncated solution (set by the kept spectrum).
    info["expected_error"] = expected_error(info["inverse_frobenius"], info["precision"])
    if info["expected_error"] > ERROR_WARN:
        hint = "use --precision float64" if info["precision"] == "float32" else "add a ridge (--ridge λ or auto)"
        warnings.warn(f"{label}: the scaled system's condition number is ≈ {cond:.2e}, so W is expected to be "
                      f"within a relative {info['expected_error']:.1e} only at {info['precision']} precision; "
                      f"{hint}", PrecisionWarning, stacklevel=3)
    return weight, bias, info


def reduce_rank(weight: Any, sxx: Any, rank: int, ridge: float = 0.0) -> Any:
    """The best rank-``rank`` map given the full-rank least-squares or ridge ``weight``.

    Reduced-rank regression: the ridge objective is least squares on the data augmented with
    ``sqrt(λ) I``, whose source co-moment is ``Sxx + λI``. With the fitted values' co-moment
    ``G = W (Sxx + λI) W^T = U Σ U^T``, the optimal rank-k weight is ``U_k U_k^T W``.
    """
    xp = namespace(weight, sxx)
    d_out = int(weight.shape[0])
    if not 1 <= rank <= min(d_out, int(weight.shape[1])):
        raise LintwinError(f"rank must be between 1 and {min(d_out, int(weight.shape[1]))}, got {rank}")
    s = sxx + xp.eye(int(sxx.shape[0]), dtype=sxx.dtype, device=device(sxx)) * ridge if ridge else sxx
    g = weight @ s @ xp.matrix_transpose(weight)
    _, U = xp.linalg.eigh((g + xp.matrix_transpose(g)) / 2)
    top = U[:, d_out - rank :]
    return top @ (xp.matrix_transpose(top) @ weight)
