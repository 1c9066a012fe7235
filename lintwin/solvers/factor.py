"""Factor the scaled system once; every closed-form solve, ridge path and measure reads from it.

:func:`factor` takes a co-moment matrix ``S`` (the source side of a map, or one side of a
similarity) and decides, once and in the scaled (correlation) space of
:mod:`~lintwin.solvers.conditioning`:

- which units are constant (zero weight everywhere: in plain, ridge, reduced-rank and every CV fold
  and λ, and dropped from the similarity measures);
- the Cholesky factor of the scaled system (plus a scaled ridge), its condition estimate and the
  expected relative error of a solution, with ``rcond`` deciding when the system is too close to
  singular for Cholesky;
- the eigendecomposition of the scaled system (for the truncated solution and CCA-type measures)
  and of the raw system on the non-constant units, which is the simultaneous diagonalisation that
  gives the whole ridge path ``(S + λI)⁻¹`` for every λ in raw units from one decomposition.

Each piece is computed when first asked for and kept (scikit-learn's ``_RidgeGCV`` factors once and
solves for every α the same way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.xp import device, namespace, solve_triangular, to_numpy
from .conditioning import default_rcond, estimate_condition, inverse_norms, scale_system

__all__ = ["Cholesky", "ScaledSystem", "factor", "symmetric_eigen"]


def symmetric_eigen(S: Any, xp: Any) -> tuple[Any, Any]:
    """Eigenvalues (descending) and eigenvectors of symmetric ``S``."""
    evals, vecs = xp.linalg.eigh(S)
    order = xp.flip(xp.argsort(evals))
    return xp.take(evals, order), xp.take(vecs, order, axis=1)


@dataclass
class Cholesky:
    """The Cholesky factor of the scaled system (with its scaled ridge), or why there is none."""

    L: Any | None
    condition: float | None = None     # Hager's 1-norm estimate of the scaled system's condition
    inverse_frobenius: float | None = None
    inverse_trace: float | None = None
    reason: str | None = None          # why the factor is unusable (not positive definite, near-singular)


@dataclass
class ScaledSystem:
    """A co-moment matrix ``S`` of ``n`` rows (mean ``mean``) in the scaled space, factored on demand.

    ``R = D⁻¹ S D⁻¹`` with ``D = diag(scale)``; rows and columns of constant units are those of the
    identity (solutions must zero them). ``keep`` are the indices of the non-constant units.
    """

    S: Any
    n: int
    precision: str
    rcond: float
    R: Any
    scale: Any
    constant: Any
    n_constant: int
    keep: Any
    xp: Any
    _cholesky: dict[float, Cholesky] = field(default_factory=dict, repr=False)
    _eigen: tuple[Any, Any] | None = field(default=None, repr=False)
    _raw_eigen: tuple[Any, Any] | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        return int(self.S.shape[0])

    @property
    def effective(self) -> int:
        """Non-constant units: the size of the system that is actually solved."""
        return self.dim - self.n_constant

    def keep_mask(self, dtype: Any) -> Any:
        """1 for non-constant units, 0 for constant ones (a column vector of ``dtype``)."""
        return self.xp.reshape(self.xp.astype(~self.constant, dtype), (-1, 1))

    def scaled_rhs(self, sxy: Any) -> Any:
        """``D⁻¹ Sxy`` with the constant units' rows zeroed: the right-hand side in the scaled space."""
        return sxy / self.xp.reshape(self.scale, (-1, 1)) * self.keep_mask(sxy.dtype)

    def unscale(self, wt_scaled: Any) -> Any:
        """``Wᵀ`` in raw units from its scaled-space solution (constant units' rows zeroed)."""
        return wt_scaled * self.keep_mask(wt_scaled.dtype) / self.xp.reshape(self.scale, (-1, 1))

    def regularised(self, ridge: float) -> Any:
        """The scaled system of ``S + ridge·I`` (the ridge scaled per unit; constant units untouched)."""
        if not ridge:
            return self.R
        xp, keep = self.xp, self.xp.astype(~self.constant, self.R.dtype)
        return self.R + xp.eye(self.dim, dtype=self.R.dtype, device=device(self.R)) * xp.reshape(
            keep * ridge / self.scale**2, (1, -1))

    def cholesky(self, ridge: float = 0.0) -> Cholesky:
        """The factor of the (ridge-)scaled system, with its condition estimate; refused near singularity."""
        if ridge in self._cholesky:
            return self._cholesky[ridge]
        xp, R = self.xp, self.regularised(ridge)
        try:
            L = xp.linalg.cholesky(R)
        except (np.linalg.LinAlgError, ValueError):
            L = None
        diag = xp.linalg.diagonal(L) if L is not None else None
        # CuPy does not raise on a failed factorisation: it leaves NaN in the factor.
        if L is None or not bool(xp.all(xp.isfinite(diag)) & (xp.min(diag) > 0)):
            out = Cholesky(None, reason="the normal equations are not positive definite (Cholesky failed)")
        else:
            cond = estimate_condition(R, L, xp=xp)
            out = Cholesky(L, cond, *inverse_norms(L, xp=xp))
            if cond * self.rcond > 1.0:
                out.reason = f"the normal equations are near-singular (condition ≈ {cond:.2e} in the scaled space)"
        self._cholesky[ridge] = out
        return out

    def eigen(self) -> tuple[Any, Any]:
        """Eigenvalues (descending) and eigenvectors of the scaled system on the non-constant units."""
        if self._eigen is None:
            xp = self.xp
            Rk = xp.take(xp.take(self.R, self.keep, axis=0), self.keep, axis=1)
            self._eigen = symmetric_eigen(Rk, xp)
        return self._eigen

    def kept_rank(self, evals: Any | None = None) -> int:
        """Directions of the scaled system above ``rcond`` times the largest (the numerical rank)."""
        evals = self.eigen()[0] if evals is None else evals
        if int(evals.shape[0]) == 0:
            return 0
        return int(self.xp.sum(self.xp.astype(evals > self.rcond * float(evals[0]), self.xp.int32)))

    def raw_eigen(self) -> tuple[Any, Any]:
        """Eigenvalues (descending, clipped at 0) and eigenvectors of ``S`` on the non-constant units.

        Computed from the scaled system (``D R D``), so the constant-unit decision is the same one.
        """
        if self._raw_eigen is None:
            xp = self.xp
            Rk = xp.take(xp.take(self.R, self.keep, axis=0), self.keep, axis=1)
            d = xp.take(self.scale, self.keep)
            lam, V = symmetric_eigen(xp.reshape(d, (-1, 1)) * Rk * xp.reshape(d, (1, -1)), xp)
            self._raw_eigen = (xp.maximum(lam, xp.zeros_like(lam)), V)
        return self._raw_eigen

    def embed(self, V: Any) -> Any:
        """Rows of the kept units placed among all ``dim`` units (zero rows for constant units)."""
        if self.n_constant == 0:
            return V
        xp, k = self.xp, int(V.shape[0])
        where = np.full(self.dim, k)  # constant units read the appended zero row
        where[to_numpy(self.keep)] = np.arange(k)
        padded = xp.concat([V, xp.zeros((1, int(V.shape[1])), dtype=V.dtype, device=device(V))], axis=0)
        return xp.take(padded, xp.asarray(where, device=device(V)), axis=0)

    def full_condition(self) -> float:
        """2-norm condition of the scaled system on the non-constant units (from its eigenvalues)."""
        evals = self.eigen()[0]
        if int(evals.shape[0]) == 0:
            return 1.0
        low = float(evals[-1])
        return float(evals[0]) / low if low > 0 else math.inf

    def raw_eigen_within(self, basis: Any) -> tuple[Any, Any]:
        """:meth:`raw_eigen` for an ``S`` whose range lies in the span of ``basis`` (all units × r): one r × r eigh.

        With fewer rows than units, a co-moment of some of the rows (a CV fold's training rows) has its
        range inside the span of all rows' centred features, which ``basis`` holds (the leading
        eigenvectors of all rows' co-moment). On that span ``S = Q (Qᵀ S Q) Qᵀ`` with ``Q`` an
        orthonormal basis of the kept units' rows of ``basis`` (those rows themselves when every unit left
        out has a zero row in ``basis``, else their QR factor); every other direction has eigenvalue 0
        (rounding noise in a full decomposition) and adds nothing to a ridge solution. Returns the
        ``r`` eigenpairs (descending, clipped at 0) on the non-constant units.
        """
        xp = self.xp
        Q = xp.take(basis, self.keep, axis=0)
        outside = xp.reshape(xp.astype(self.constant, basis.dtype), (-1, 1))
        if float(xp.sum(xp.abs(basis) * outside)) != 0.0:  # units constant here but not in all rows: re-orthonormalise
            Q, _ = xp.linalg.qr(Q)
        Sk = xp.take(xp.take(self.S, self.keep, axis=0), self.keep, axis=1)
        M = xp.matrix_transpose(Q) @ Sk @ Q
        lam, U = symmetric_eigen((M + xp.matrix_transpose(M)) / 2, xp)
        return xp.maximum(lam, xp.zeros_like(lam)), Q @ U

    def ridge_path(self, sxy: Any, basis: Any | None = None) -> tuple[Any, Any, Any]:
        """What the ridge path needs: ``(Λ, V, P = Vᵀ Sxy)`` from :meth:`raw_eigen`, ``V`` in all units.

        ``Wᵀ(λ) = V diag(1/(Λ+λ)) P`` for every λ, with the constant units' rows zero (the simultaneous
        diagonalisation of the scaled system and the per-unit ridge). ``basis``: see :meth:`raw_eigen_within`.
        """
        lam, V = self.raw_eigen() if basis is None else self.raw_eigen_within(basis)
        V = self.embed(V)
        return lam, V, self.xp.matrix_transpose(V) @ sxy


def factor(S: Any, mean: Any, n: int, precision: str, *, rcond: float | None = None) -> ScaledSystem:
    """Scale ``S`` to correlations with constant units split off; factors are made when first asked for."""
    xp = namespace(S)
    sc = scale_system(S, mean, n, precision, xp=xp)
    keep = xp.asarray(np.flatnonzero(~to_numpy(sc.constant).astype(bool)), device=device(S))
    return ScaledSystem(S, int(n), precision, default_rcond(precision, int(n)) if rcond is None else float(rcond), sc.R,
                        sc.scale, sc.constant, sc.n_constant, keep, xp)


def solve_scaled(L: Any, rhs: Any, xp: Any) -> Any:
    """``R⁻¹ rhs`` from the Cholesky factor of ``R``."""
    return solve_triangular(L, solve_triangular(L, rhs, lower=True, xp=xp), lower=True, trans=True, xp=xp)
