"""Closed-form maps from moments: one validated dispatch over the plain, ridge, ridge-CV and rank solvers.

Both map directions come from one accumulator: the source side of each direction is factored once
(:func:`~lintwin.solvers.factor.factor`) and solved with its ridge, then reduced to a rank if asked.
Every map records what the solve reported (solver, rank, constant units, conditions, expected error)
and its exact training R² from the moments (:func:`moment_metrics`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..affine import AffineMap
from ..core.moments import Moments
from ..core.params import check_ridge, check_ridge_criterion
from ..core.xp import namespace, to_numpy
from ..errors import LintwinError
from .conditioning import constant_units
from .factor import ScaledSystem
from .lstsq import reduce_rank, solve_affine
from .ridge_cv import RidgeCV, ridge_cv

__all__ = ["fit_ridge_cv", "maps_from_moments", "moment_metrics"]


def maps_from_moments(m: Moments, *, ridge: float | Sequence[float] = 0.0, both: bool = False,
                      rcond: float | None = None, rank: int | None = None,
                      systems: Sequence[ScaledSystem] | None = None) -> list[AffineMap]:
    """Closed-form map src→dst (and dst→src with ``both``) from one accumulator of a pair.

    ``ridge`` is one λ or one per direction; ``rank`` makes each map the best map of that rank.
    ``systems`` are the source sides already factored (:func:`~lintwin.solvers.factor.factor` of A's
    block, then B's, with the same ``rcond``), one per direction.
    """
    src, dst = m.names
    specs = [(src, dst, *m.oriented(False))]
    if both:
        specs.append((dst, src, *m.oriented(True)))
    ridges = [check_ridge(ridge)] * 2 if isinstance(ridge, (int, float)) else [check_ridge(r) for r in ridge]
    maps = []
    for i, ((s, d, sxx, sxy, syy, mx, my), lam) in enumerate(zip(specs, ridges)):
        t0 = time.perf_counter()
        w, b, info = solve_affine(sxx, sxy, mx, my, m.n, ridge=lam, label=f"{s}→{d}", precision=m.precision,
                                  rcond=rcond, system=systems[i] if systems is not None else None)
        if rank is not None:
            w = reduce_rank(w, sxx, rank, ridge=lam)
            b = my - w @ mx
            info["map_rank"] = rank
        info["solve_seconds"] = time.perf_counter() - t0
        info["train_metrics"] = moment_metrics(w, sxx, sxy, syy, my, m.n, m.precision)
        options = {"ridge": lam, "precision": m.precision} | ({"rank": rank} if rank is not None else {})
        maps.append(AffineMap(w, b, src=s, dst=d, method="lstsq", n_train=m.n, stats=info, options=options))
    return maps


def moment_metrics(weight: Any, sxx: Any, sxy: Any, syy: Any, mean_y: Any, n: int,
                   precision: str) -> dict[str, Any]:
    """Exact training R² of an affine map whose bias fits the means, from the co-moments alone.

    SSE = tr(Syy) − 2 tr(W Sxy) + tr(W Sxx Wᵀ); R² = 1 − SSE / tr(Syy), overall
    (variance-weighted) and per target dimension (NaN for target units that are constant by the
    solver's rule). No pass over the rows is needed.
    """
    xp = namespace(weight, sxx)
    wsxy = xp.sum(weight * xp.matrix_transpose(sxy), axis=1)                  # diag(W Sxy)
    wsw = xp.sum((weight @ sxx) * weight, axis=1)                              # diag(W Sxx Wᵀ)
    tot = xp.linalg.diagonal(syy)
    sse = xp.maximum(tot - 2.0 * wsxy + wsw, xp.zeros_like(tot))
    sse_all, tot_all = float(xp.sum(sse)), float(xp.sum(tot))
    const = constant_units(tot, mean_y, n, precision, xp=xp)
    per_dim = to_numpy(xp.where(const, xp.full_like(tot, float("nan")),
                                1.0 - sse / xp.where(const, xp.ones_like(tot), tot)))
    return {"rows": int(n), "r2": 1.0 - sse_all / tot_all if tot_all > 0 else float("nan"),
            "r2_per_dim": [float(v) for v in per_dim], "from": "moments"}


def fit_ridge_cv(fold_moments: list[Moments], *, both: bool = False, rank: int | None = None,
                 agreement: Callable[[RidgeCV, bool], np.ndarray] | None = None,
                 criterion: str = "feature-error") -> list[AffineMap]:
    """Closed-form maps with λ chosen per direction by K-fold CV over images, from fold moments.

    ``criterion="feature-error"`` minimises the held-out squared feature error (from the fold
    moments alone); ``"agreement"`` maximises held-out top-1 agreement with the target network's
    head, computed by ``agreement(cv, reverse)`` (one more pass per fold).
    """
    check_ridge_criterion(criterion)
    cvs = [ridge_cv(fold_moments, reverse=r) for r in ([False, True] if both else [False])]
    if criterion == "agreement":
        if agreement is None:
            raise LintwinError("the 'agreement' ridge criterion needs the target network's head")
        for cv, reverse in zip(cvs, (False, True)):
            cv.choose_by_agreement(agreement(cv, reverse))
    maps = maps_from_moments(Moments.merged(fold_moments), ridge=[cv.chosen for cv in cvs], both=both, rank=rank)
    for mp, cv in zip(maps, cvs):
        mp.stats["ridge_cv"] = cv.as_dict()
        mp.options.update(ridge="auto", chosen_ridge=cv.chosen, folds=cv.folds, ridge_criterion=criterion)
    return maps
