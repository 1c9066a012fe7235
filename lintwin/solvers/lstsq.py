"""Closed-form affine least-squares maps from joint moments.

For source features x and target features y the map minimising
``sum ||W x_i + b - y_i||^2 + ridge * ||W||_F^2`` is ``W^T = (Sxx + ridge I)^{-1} Sxy`` with
``b = mean_y - W mean_x``, where Sxx, Sxy are centred co-moments. This is the paper's
augmented form ``M [x; 1]`` with the bias eliminated through the means (the bias is not
penalised, as in scikit-learn's Ridge).

The system is Jacobi-scaled (to correlations) and solved by Cholesky. When that is not
safe -- fewer rows than features, constant or duplicated features, a Cholesky failure or
an estimated condition number past ``1/rcond`` -- the solver reports it with a
:class:`RankWarning` and returns the minimum-norm solution from an eigendecomposition,
dropping directions whose eigenvalue is below ``rcond`` times the largest (the rounding
noise of the moments: see :func:`default_rcond`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .._xp import namespace, solve_triangular
from ..errors import LintwinError

__all__ = ["RankWarning", "default_rcond", "reduce_rank", "solve_affine"]


class RankWarning(UserWarning):
    """The normal equations were rank-deficient or near-singular; a minimum-norm map was used."""


def solve_affine(
    sxx: Any,
    sxy: Any,
    mean_x: Any,
    mean_y: Any,
    n: int,
    *,
    ridge: float = 0.0,
    rcond: float | None = None,
    label: str = "map",
) -> tuple[Any, Any, dict]:
    """Solve one direction. Returns ``(weight (d_y x d_x), bias (d_y,), info)``.

    ``info`` records the solver actually used (``"cholesky"`` or ``"eigh"``), the numerical
    rank and condition estimate of the scaled system, and why a fallback happened.
    """
    xp = namespace(sxx, sxy)
    if n <= 0:
        raise LintwinError("no rows were accumulated: the training split is empty")
    if ridge < 0:
        raise LintwinError(f"ridge must be >= 0, got {ridge}")
    d = int(sxx.shape[0])
    rcond = rcond if rcond is not None else default_rcond("float64")

    diag = xp.linalg.diagonal(sxx)
    scale = xp.sqrt(diag)
    tiny = float(xp.max(scale)) * 1e-12 if d else 0.0
    constant = scale <= tiny
    scale = xp.where(constant, xp.ones_like(scale), scale)
    R = sxx / (xp.reshape(scale, (-1, 1)) * xp.reshape(scale, (1, -1)))
    if ridge:
        R = R + xp.eye(d, dtype=R.dtype) * xp.reshape(ridge / scale**2, (1, -1))
    rhs = sxy / xp.reshape(scale, (-1, 1))

    info: dict[str, Any] = {"ridge": float(ridge), "rows": int(n), "dim": d, "reason": None, "rcond": rcond}
    n_constant = int(xp.sum(xp.astype(constant, xp.int32)))
    if ridge == 0 and n - 1 < d:
        info["reason"] = f"fewer rows ({n}) than features + 1 ({d + 1})"
    elif ridge == 0 and n_constant:
        info["reason"] = f"{n_constant} feature(s) are constant over the training rows"
    else:
        wt = _cholesky_solve(R, rhs, rcond, info, xp)
        if wt is not None:
            return _finish(wt, scale, mean_x, mean_y, info, xp)
    # The minimum-norm solution is defined in the original feature space, so undo the scaling.
    unscaled = sxx + xp.eye(d, dtype=sxx.dtype) * ridge if ridge else sxx
    wt = _eigh_solve(unscaled, sxy, rcond, info, xp)
    scale = xp.ones_like(scale)
    warnings.warn(
        f"{label}: {info['reason']}; used the minimum-norm solution of rank {info['rank']} of {d}",
        RankWarning,
        stacklevel=2,
    )
    return _finish(wt, scale, mean_x, mean_y, info, xp)


def default_rcond(precision: str) -> float:
    """Relative eigenvalue below which a direction is noise, for moments of ``precision``.

    Rounding in the moments leaves eigenvalues of the scaled system at about eps(precision)
    relative to the largest (measured: ~5e-8 for float32 products, ~2e-16 for float64);
    ten eps sits safely above that and well below the spectra of real features.
    """
    return 10.0 * float(np.finfo(precision).eps)


def _cholesky_solve(R: Any, rhs: Any, rcond: float, info: dict, xp: Any) -> Any | None:
    try:
        L = xp.linalg.cholesky(R)
    except (np.linalg.LinAlgError, ValueError):
        info["reason"] = "the normal equations are not positive definite (Cholesky failed)"
        return None
    diag = xp.linalg.diagonal(L)
    if not bool(xp.all(xp.isfinite(diag))) or float(xp.min(diag)) <= 0:
        info["reason"] = "the normal equations are not positive definite (Cholesky failed)"
        return None
    cond = (float(xp.max(diag)) / float(xp.min(diag))) ** 2
    info["condition"] = cond
    if cond * rcond > 1.0:
        info["reason"] = f"the normal equations are near-singular (condition >= {cond:.2e})"
        return None
    z = solve_triangular(L, rhs, lower=True, xp=xp)
    wt = solve_triangular(L, z, lower=True, trans=True, xp=xp)
    info.update(solver="cholesky", rank=int(R.shape[0]))
    return wt


def _eigh_solve(R: Any, rhs: Any, rcond: float, info: dict, xp: Any) -> Any:
    evals, V = xp.linalg.eigh(R)
    top = float(xp.max(evals)) if evals.shape[0] else 0.0
    keep = evals > rcond * top
    inv = xp.where(keep, 1.0 / xp.where(keep, evals, xp.ones_like(evals)), xp.zeros_like(evals))
    wt = V @ (xp.reshape(inv, (-1, 1)) * (xp.matrix_transpose(V) @ rhs))
    kept = int(xp.sum(xp.astype(keep, xp.int32)))
    smallest = float(xp.min(xp.where(keep, evals, xp.full_like(evals, top)))) if kept else 0.0
    info.update(solver="eigh", rank=kept, condition=(top / smallest) if smallest > 0 else float("inf"))
    return wt


def _finish(wt: Any, scale: Any, mean_x: Any, mean_y: Any, info: dict, xp: Any) -> tuple[Any, Any, dict]:
    weight = xp.matrix_transpose(wt / xp.reshape(scale, (-1, 1)))
    bias = mean_y - weight @ mean_x
    return weight, bias, info


def reduce_rank(weight: Any, sxx: Any, rank: int) -> Any:
    """The best rank-``rank`` map given the full-rank least-squares (or ridge) ``weight``.

    Reduced-rank regression: with the fitted values' co-moment G = W Sxx W^T = U Σ U^T,
    the optimal rank-k weight is U_k U_k^T W (project the predictions onto their top-k
    principal directions). The bias follows from the means as before.
    """
    xp = namespace(weight, sxx)
    d_out = int(weight.shape[0])
    if not 1 <= rank <= min(d_out, int(weight.shape[1])):
        raise LintwinError(f"rank must be between 1 and {min(d_out, int(weight.shape[1]))}, got {rank}")
    g = weight @ sxx @ xp.matrix_transpose(weight)
    _, U = xp.linalg.eigh((g + xp.matrix_transpose(g)) / 2)
    top = U[:, d_out - rank :]
    return top @ (xp.matrix_transpose(top) @ weight)
