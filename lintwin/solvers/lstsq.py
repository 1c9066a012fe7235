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

from ..core.params import check_ridge
from ..core.xp import device, namespace
from ..errors import LintwinError
from .conditioning import default_rcond, expected_error
from .factor import ScaledSystem, factor, solve_scaled, symmetric_eigen

__all__ = ["PrecisionWarning", "RankWarning", "check_ridge", "reduce_rank", "solve_affine"]

PREDICTION_WARN = 1e-4  # estimated relative error of the mapped features above which a printed figure could change


class RankWarning(UserWarning):
    """The normal equations were rank-deficient or near-singular; a truncated solution was used."""


class PrecisionWarning(UserWarning):
    """The mapped features' estimated relative error exceeds :data:`PREDICTION_WARN` at the chosen precision."""


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
    system: ScaledSystem | None = None,
) -> tuple[Any, Any, dict]:
    """Solve one direction. Returns ``(weight (d_y x d_x), bias (d_y,), info)``.

    ``precision`` is that of the moments (it sets the rounding floor and the expected error);
    ``system`` is the factored source side when the caller has it already (:func:`factor`).
    ``info`` records the solver used (``"cholesky"`` or ``"eigh"``), the constant units, the
    condition of the whole scaled system (``condition``, with ``condition_kind``), the rank and
    condition of the system actually solved (``rank``, ``retained_condition``: the same unless
    directions were dropped), the expected relative error of W and, after a fallback, why.
    """
    if n <= 0:
        raise LintwinError("no rows were accumulated: the training split is empty")
    ridge = check_ridge(ridge)
    sys = system if system is not None else factor(sxx, mean_x, n, precision, rcond=rcond)
    rhs = sys.scaled_rhs(sxy)
    info: dict[str, Any] = {"ridge": ridge, "rows": int(n), "dim": sys.dim, "reason": None, "rcond": sys.rcond,
                            "precision": sys.precision, "constant_units": sys.n_constant}
    effective = sys.effective
    if ridge == 0 and n - 1 < effective:
        info["reason"] = f"fewer rows ({n}) than non-constant features + 1 ({effective + 1})"
    else:
        ch = sys.cholesky(ridge)
        info["reason"] = ch.reason
        if ch.condition is not None:
            info.update(condition=ch.condition, condition_kind="1-norm, estimated from the Cholesky factor")
        if ch.reason is None:
            wt = solve_scaled(ch.L, rhs, sys.xp)
            info.update(solver="cholesky", rank=effective, retained_condition=ch.condition,
                        inverse_frobenius=ch.inverse_frobenius, inverse_trace=ch.inverse_trace)
            return _finish(sys.unscale(wt), mean_x, mean_y, info, label)
    wt = _truncated_solve(sys, rhs, ridge, info)
    if info["rank"] < effective:
        warnings.warn(f"{label}: {info['reason']}; used the truncated solution of rank {info['rank']} of "
                      f"{effective} (directions below rcond of the largest, in the scaled space, dropped); "
                      f"condition of the whole scaled system {'≥' if info.get('condition_is_lower_bound') else '≈'} "
                      f"{info['condition']:.2e}, of the retained "
                      f"rank-{info['rank']} system ≈ {info['retained_condition']:.2e}", RankWarning, stacklevel=2)
    return _finish(sys.unscale(wt), mean_x, mean_y, info, label)


def _truncated_solve(sys: ScaledSystem, rhs: Any, ridge: float, info: dict) -> Any:
    """The minimum-norm solution of the (ridge-)scaled system keeping directions above ``rcond`` of the largest."""
    xp = sys.xp
    evals, V = sys.eigen() if not ridge else symmetric_eigen(_kept(sys.regularised(ridge), sys), xp)
    top = float(evals[0]) if evals.shape[0] else 0.0
    keep = evals > sys.rcond * top
    inv = xp.where(keep, 1.0 / xp.where(keep, evals, xp.ones_like(evals)), xp.zeros_like(evals))
    Vf = sys.embed(V)
    wt = Vf @ (xp.reshape(inv, (-1, 1)) * (xp.matrix_transpose(Vf) @ rhs))
    rank = int(xp.sum(xp.astype(keep, xp.int32)))
    smallest = float(xp.min(xp.where(keep, evals, xp.full_like(evals, top)))) if rank > 0 else 0.0
    lowest = float(evals[-1]) if evals.shape[0] else 0.0
    # Below the rounding floor of the moments (default rcond of the largest) an eigenvalue is noise: the whole
    # system's condition is then only known to be at least that floor's inverse.
    resolvable = default_rcond(sys.precision, sys.n)
    floor = lowest <= resolvable * top
    info.update(solver="eigh", rank=rank, condition=top / lowest if not floor else (1.0 / resolvable if top > 0 else math.inf),
                condition_is_lower_bound=floor,
                condition_kind="2-norm, from the eigenvalues" + (" (a lower bound: the smallest eigenvalues are "
                                                                   "below the rounding floor)" if floor else ""),
                retained_condition=(top / smallest) if smallest > 0 else math.inf,
                inverse_frobenius=math.sqrt(float(xp.sum(inv * inv))), inverse_trace=float(xp.sum(inv)))
    return wt


def _kept(R: Any, sys: ScaledSystem) -> Any:
    xp = sys.xp
    return xp.take(xp.take(R, sys.keep, axis=0), sys.keep, axis=1)


def _finish(wt: Any, mean_x: Any, mean_y: Any, info: dict, label: str) -> tuple[Any, Any, dict]:
    xp = namespace(wt)
    weight = xp.matrix_transpose(wt)
    bias = mean_y - weight @ mean_x
    cond = info.get("condition", float("inf"))
    # First-order estimates from the rounding of the moments (not bounds; see conditioning.py). After a
    # truncation they are those of the truncated solution (set by the kept spectrum).
    info["expected_error"] = expected_error(info["inverse_frobenius"], info["precision"], info["rows"])
    info["prediction_error"] = expected_error(math.sqrt(info["inverse_trace"]), info["precision"], info["rows"])
    info["error_kind"] = ("first-order estimates from the rounding of the moments: W's in the scaled space "
                          "(each source unit's weights times its spread), and the mapped features'")
    if info["prediction_error"] > PREDICTION_WARN:
        hint = ("use --precision float64" if info["precision"] in ("float32", "tf32")
                else "add a ridge (--ridge λ or auto)")
        warnings.warn(f"{label}: the scaled system's condition number is ≈ {cond:.2e}, so the mapped features are "
                      f"estimated to be within a relative {info['prediction_error']:.1e} only (W within "
                      f"{info['expected_error']:.1e}) at {info['precision']} precision; figures printed to 4 decimals "
                      f"could change: {hint}", PrecisionWarning, stacklevel=3)
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
    _, U = symmetric_eigen((g + xp.matrix_transpose(g)) / 2, xp)
    top = U[:, :rank]
    return top @ (xp.matrix_transpose(top) @ weight)
