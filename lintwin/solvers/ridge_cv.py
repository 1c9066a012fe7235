"""Ridge chosen by K-fold cross-validation, computed entirely from fold moments.

Each fold's training moments are factored like any other system (:func:`~lintwin.solvers.factor.factor`):
constant units by the solver's rule get zero weight at every λ, exactly as in the final solve, and
the whole ridge path comes from one eigendecomposition of the non-constant units,
Cxx = V Λ Vᵀ: W(λ)ᵀ = V diag(1/(Λ+λ)) Vᵀ Cxy. The held-out fold's own moments give its
squared error exactly, without touching its rows:

    SSE = tr(Hyy) − 2 tr(W Hxy) + tr(W Hxx W^T) + n_h ‖ν_y − W ν_x − b‖²,

with H the held-out co-moments around its mean ν. The chosen λ minimises the summed SSE
relative to the summed held-out variance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..core.moments import Moments
from ..core.xp import namespace, to_numpy
from .factor import factor

__all__ = ["FoldPath", "RidgeCV", "default_lambdas", "fold_weights", "ridge_cv"]


@dataclass
class RidgeCV:
    """Result of one direction's search: the grid, the CV error per λ and the choice."""

    direction: str
    lambdas: list[float]
    cv_error: list[float]
    chosen: float
    folds: int
    agreement: list[float] | None = None  # held-out top-1 agreement per λ, when a head scored it
    scored_by: str = "feature error"

    def choose_by_agreement(self, agreement: np.ndarray) -> None:
        """Re-choose λ by held-out top-1 agreement (ties: the smaller feature error)."""
        self.agreement = [float(x) for x in agreement]
        best = np.flatnonzero(agreement == agreement.max())
        self.chosen = self.lambdas[int(best[np.argmin(np.asarray(self.cv_error)[best])])]
        self.scored_by = "top-1 agreement"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_lambdas(cxx: Any, n: int = 25) -> np.ndarray:
    """λ grid relative to the mean eigenvalue of the training co-moment (1e-6 … 10 of it)."""
    xp = namespace(cxx)
    mean_eig = float(xp.sum(xp.linalg.diagonal(cxx))) / int(cxx.shape[0])
    return mean_eig * np.logspace(-6, 1, n)


@dataclass
class FoldPath:
    """One fold's training system factored once: ``Wᵀ(λ) = V diag(1/(Λ+λ)) P`` for every λ.

    ``(Λ, V, P = Vᵀ Sxy)`` on the training moments' non-constant units and their means: read by the
    CV error of every λ and by the maps of the chosen one, so a caller that keeps the paths
    decomposes each fold's training co-moment once however many λ and scores use it.
    """

    evals: Any
    V: Any
    P: Any
    mean_x: Any
    mean_y: Any

    @classmethod
    def of(cls, train: Moments, reverse: bool, basis: Any | None = None) -> FoldPath:
        """Factor one fold's training moments for the map src→dst (``reverse``: dst→src).

        ``basis`` (source units × r) spans the source features of all the rows, when they are fewer than
        the units: the fold's system is then decomposed on that span (r × r; see
        :meth:`~lintwin.solvers.factor.ScaledSystem.raw_eigen_within`).
        """
        cxx, cxy, _, mx, my = train.oriented(reverse)
        evals, V, P = factor(cxx, mx, train.n, train.precision).ridge_path(cxy, basis)
        return cls(evals, V, P, mx, my)

    def weights(self, lam: float) -> tuple[Any, Any]:
        """``(Wᵀ, bias)`` of the ridge map with ``λ``."""
        xp = namespace(self.V)
        wt = self.V @ (xp.reshape(_inverse(self.evals, float(lam), xp), (-1, 1)) * self.P)
        return wt, self.mean_y - xp.sum(wt * xp.reshape(self.mean_x, (-1, 1)), axis=0)


def _inverse(evals: Any, lam: float, xp: Any) -> Any:
    """``1/(Λ+λ)``, with 0 where ``Λ+λ`` is 0 (λ = 0 on an exactly singular direction: the minimum-norm choice)."""
    total = evals + lam
    positive = total > 0
    return xp.where(positive, 1.0 / xp.where(positive, total, xp.ones_like(total)), xp.zeros_like(total))


def fold_weights(train: Moments, lambdas: np.ndarray, reverse: bool) -> Any:
    """Yield (λ, W^T, bias) along the ridge path of one fold's training moments (one eigh)."""
    path = FoldPath.of(train, reverse)
    for lam in lambdas:
        yield (float(lam), *path.weights(float(lam)))


def _fold_errors(path: FoldPath, held: Moments, lambdas: np.ndarray, reverse: bool) -> tuple[np.ndarray, float]:
    """Held-out SSE for every λ, in the eigenbasis of the training co-moment.

    With W^T = V D P (D = diag 1/(Λ+λ), P = V^T Cxy), every term reduces to products
    computed once per fold -- Q = V^T Hxy, G = V^T Hxx V, M = P P^T -- so each λ costs
    O(d²) instead of a d³ matrix product.
    """
    evals, V, P, mx, my = path.evals, path.V, path.P, path.mean_x, path.mean_y
    hxx, hxy, hyy, nx, ny = held.oriented(reverse)
    xp = namespace(V)
    Vt = xp.matrix_transpose(V)
    r = xp.sum(P * (Vt @ hxy), axis=1)            # tr(W Hxy) = Σ_k r_k d_k
    GM = (Vt @ hxx @ V) * (P @ xp.matrix_transpose(P))  # tr(W Hxx W^T) = d^T (G∘M) d
    dm = Vt @ xp.reshape(nx - mx, (-1, 1))         # mean shift between held-out and training rows
    dy = ny - my
    tr_hyy = float(xp.sum(xp.linalg.diagonal(hyy)))
    errors = np.empty(len(lambdas))
    for i, lam in enumerate(lambdas):
        d = _inverse(evals, float(lam), xp)
        shift = xp.matrix_transpose(P) @ (xp.reshape(d, (-1, 1)) * dm)  # W (ν_x − μ_x)
        c = dy - xp.reshape(shift, (-1,))
        errors[i] = (tr_hyy - 2.0 * float(xp.sum(r * d)) + float(xp.sum(xp.reshape(d, (-1, 1)) * GM * d))
                     + held.n * float(xp.sum(c * c)))
    return errors, tr_hyy


def ridge_cv(folds: list[Moments], *, reverse: bool = False, lambdas: np.ndarray | None = None,
             paths: Sequence[FoldPath] | None = None) -> RidgeCV:
    """Choose λ for src→dst (``reverse``: dst→src) by K-fold CV over the given fold moments.

    ``paths`` (:meth:`FoldPath.of` each fold's training moments, same direction) spares factoring the folds again.
    """
    k = len(folds)
    total = Moments.merged(folds)
    if lambdas is None:
        lambdas = default_lambdas(total.oriented(reverse)[0])
    sse = np.zeros(len(lambdas))
    var = 0.0
    for j in range(k):  # without paths, each fold is factored in turn and dropped (one at a time in memory)
        path = paths[j] if paths is not None else FoldPath.of(Moments.merged(folds, exclude=j), reverse)
        e, v = _fold_errors(path, folds[j], lambdas, reverse)
        sse += e
        var += v
    rel = sse / var
    src, dst = folds[0].names[::-1] if reverse else folds[0].names
    return RidgeCV(f"{src}→{dst}", [float(x) for x in lambdas], [float(x) for x in to_numpy(rel)],
                   float(lambdas[int(np.argmin(rel))]), k)
