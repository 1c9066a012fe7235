"""Representational similarity of two networks from their joint moments: exact at any row count.

Every measure here depends on the features only through the row count, the means and the centred
co-moment blocks ``Saa, Sab, Sbb`` that :class:`~lintwin.moments.Moments` accumulates in one
streaming pass (debiased CKA also needs the row-norm sums of :class:`~lintwin.kernel_sums.KernelSums`),
so each is computed exactly -- to rounding -- however many rows there are, on NumPy or CuPy.

Measures and their invariances (X, Y centred features of A and B, n rows):

``cka``
    Linear CKA (Kornblith et al. 2019): ``‖Sab‖²_F / (‖Saa‖_F ‖Sbb‖_F)``. Invariant to orthogonal
    transforms, isotropic scaling and translation of either side; not to general linear maps.
``cka_debiased``
    Linear CKA from the unbiased HSIC estimator (Song et al. 2012), as in Kornblith et al.'s code:
    the same invariances, without the O(1/n) upward bias of ``cka``; it can be slightly negative.
``cca_rho1``, ``cca_mean_rho``, ``cca_mean_rho2``
    The largest, mean and mean squared canonical correlation; the whole spectrum is in ``cca``.
    Invariant to any invertible affine transform of either side (on the directions kept).
``svcca``
    Mean canonical correlation after reducing each side to its top principal directions that
    explain ``svcca_keep`` (default 0.99) of its variance (Raghu et al. 2017). Invariant to
    orthogonal transforms, isotropic scaling and translation.
``pwcca``
    Projection-weighted mean canonical correlation (Morcos et al. 2018): ``Σ α̃_i ρ_i`` with
    ``α_i = Σ_j |cov(u_i, x_j)|``, the summed absolute covariance of canonical variate ``u_i`` with
    the original units ``x_j`` of the side of smaller rank (A on ties). For centred data,
    ``<h_i, x_j>`` of the paper's unit-norm canonical vector h_i is ``(n-1)·cov(u_i, x_j)/‖u_i‖``
    with ``u_i`` of unit variance, so this is the paper's weighting as a second moment
    (``cov(u, x) = Sxx w / (n-1)``). Invariant to orthogonal transforms, isotropic scaling, translation.
``shape_angle[α]``
    Generalized shape metric of Williams et al. (2021), angular form:
    ``arccos(‖φ(X)ᵀφ(Y)‖_* / (‖φ(X)‖_F ‖φ(Y)‖_F))`` with partial whitening
    ``φ(X) = X (α I + (1-α) (XᵀX)^{-1/2})``, XᵀX the centred co-moment (as in netrep). ``α = 1``
    is orthogonal Procrustes (invariant to rotations, isotropic scaling, translation), ``α = 0`` the
    CCA end (invariant to invertible linear maps; equals ``arccos(Σρ / sqrt(rank_a rank_b))``);
    in between, invariant to rotations and translation. Unequal widths: the narrower side is
    zero-padded (as netrep does), which leaves the nuclear and Frobenius norms above unchanged, so the
    d_a x d_b cross matrix is used as is. Because XᵀX grows with n, the balance of an
    intermediate α depends on n and on the units' scale (the ends do not).
``procrustes``
    Normalised orthogonal Procrustes distance (Ding et al. 2021): ``2 - 2 ‖XᵀY‖_*`` for X, Y scaled
    to unit Frobenius norm; ``arccos`` of the same cosine is ``shape_angle[1]``.
``r2_ab``, ``r2_ba`` (and ``r2`` per target unit)
    Linear predictivity: R² = 1 − SSE/SST of the least-squares affine map A→B (B→A), fitted and
    scored on the same moments (SSE from ``Syy − 2 W Sxy + W Sxx Wᵀ``). Invariant to invertible
    affine transforms of the source; for the target, to rotations, isotropic scaling and translation
    (per-unit R² to per-unit scaling and translation). ``r2cv_ab``, ``r2cv_ba``: held-out R² pooled over
    K image folds, of the ridge map with λ chosen by the same folds (:func:`lintwin.solvers.ridge_cv`).

Constant units and near-singular covariances follow the solver's rules
(:mod:`lintwin.solvers.conditioning`): constant units are dropped, and CCA, SVCCA, PWCCA and the
whitening of the shape metrics keep only the directions whose eigenvalue in the scaled
(correlation) space exceeds ``rcond`` (default ``10·eps`` of the moments' precision) times the
largest; the result's ``info`` lists the units dropped and the ranks kept.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..core.moments import Moments
from ..core.params import check_alpha, check_svcca_keep
from ..core.xp import device, namespace, to_numpy
from ..errors import LintwinError
from ..results import NamedResult, short_number
from ..solvers import ScaledSystem, default_rcond, factor, maps_from_moments, ridge_cv
from ..solvers.ridge_cv import FoldPath

__all__ = ["DEFAULT_ALPHAS", "SideFactors", "Similarity", "linear_cka", "similarity"]

DEFAULT_ALPHAS = (0.0, 0.5, 1.0)


@dataclass(repr=False)
class Similarity(NamedResult):
    """Named similarity values of networks ``names[0]`` (A) and ``names[1]`` (B), with their spectra.

    ``sim["cka"]`` or ``sim.cka`` is one value (``sim.keys()`` lists them), ``sim.to_frame()`` a
    pandas DataFrame of all of them, ``sim.to_dict()`` everything, JSON-ready.
    """

    names: tuple[str, str]
    n: int
    values: dict[str, float | None]
    cca: np.ndarray
    svcca_spectrum: np.ndarray
    r2: dict[str, np.ndarray]
    r2_cv: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def _named(self) -> dict[str, float | None]:
        return self.values

    def _summary(self) -> str:
        shown = ", ".join(f"{k}={short_number(self.values[k])}" for k in ("cka", "svcca", "pwcca", "r2_ab", "r2_ba")
                          if k in self.values)
        return f"{self.names[0]} vs {self.names[1]}, n={self.n}, {shown}, ... ({len(self.values)} values)"

    def to_frame(self) -> pd.DataFrame:
        """One row per measure (index ``measure``), column ``value``; ``attrs`` name the networks and rows."""
        frame = pd.DataFrame({"value": [np.nan if v is None else float(v) for v in self.values.values()]},
                             index=pd.Index(list(self.values), name="measure"))
        frame.attrs.update(networks=list(self.names), rows=self.n)
        return frame

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: per-unit R² of constant target units are ``None``."""
        def vec(x: np.ndarray) -> list[float | None]:
            return [None if not math.isfinite(v) else float(v) for v in np.asarray(x, dtype=float)]

        return {"networks": list(self.names), "rows": self.n, "values": dict(self.values),
                "cca_spectrum": vec(self.cca), "svcca_spectrum": vec(self.svcca_spectrum),
                "r2_per_unit": {k: vec(v) for k, v in self.r2.items()},
                "r2cv_per_unit": {k: vec(v) for k, v in self.r2_cv.items()}, "info": self.info}


# -- the pieces --------------------------------------------------------------------------------------
@dataclass
class _Side:
    """One side's non-constant units and its eigen-decision in the scaled space."""

    keep: Any          # indices of the non-constant units
    scale: Any         # sqrt of their co-moment diagonal
    evals: Any         # eigenvalues of their correlation matrix that are kept (descending)
    vecs: Any          # the matching eigenvectors (k x rank)
    constant: list[int]
    rank: int
    raw_evals: Any     # eigenvalues of the kept units' raw co-moment (descending, clipped at 0)
    raw_vecs: Any      # and its eigenvectors (PCA directions of SVCCA, partial whitening of the shape metrics)
    system: ScaledSystem  # the factored side, which the least-squares maps from this side solve with

    def whitener(self, xp: Any) -> Any:
        """``W`` (k x rank) with ``Wᵀ S W = I`` on the kept units."""
        return xp.reshape(1.0 / self.scale, (-1, 1)) * self.vecs / xp.reshape(xp.sqrt(self.evals), (1, -1))


def _take2(S: Any, rows: Any, cols: Any, xp: Any) -> Any:
    return xp.take(xp.take(S, rows, axis=0), cols, axis=1)


def _side(S: Any, mean: Any, n: int, precision: str, rcond: float, name: str, xp: Any) -> _Side:
    """One side factored as the solver factors a system: its constant units, scaled and raw spectra."""
    sys = factor(S, mean, n, precision, rcond=rcond)
    if sys.effective == 0:
        raise LintwinError(f"every unit of {name} is constant over the rows: no similarity to measure")
    evals, vecs = sys.eigen()
    rank = sys.kept_rank()
    lam, V = sys.raw_eigen()
    constant = np.flatnonzero(to_numpy(sys.constant).astype(bool)).tolist()
    return _Side(sys.keep, xp.take(sys.scale, sys.keep), evals[:rank], vecs[:, :rank], constant, rank, lam, V, sys)


REUSE_TOL = 1e-13  # relative (correlation-space) difference up to which two co-moment blocks share a factorisation


class SideFactors:
    """Each network's side factored once (:func:`_side`), reused for the same block in later calls.

    The eigendecompositions of each side are most of the cost of :func:`similarity`. A permutation null
    re-pairs the same rows, so each side's co-moment block is the observed one up to the rounding of a
    different summation order; a study pairs each network with every other, with the very same block.
    A side is reused only for the same row count, precision and ``rcond``, and a block and mean that
    agree entry by entry within :data:`REUSE_TOL` relative to the units' spread (``|ΔS_ij| ≤ tol ·
    sqrt(S_ii S_jj)``); anything else is factored afresh, so reuse changes no result beyond rounding.
    Pass one instance to every :func:`similarity` call of a null or a study.
    """

    def __init__(self) -> None:
        self._sides: dict[str, tuple[Any, Any, int, str, float, _Side]] = {}
        self.reused = 0

    def side(self, S: Any, mean: Any, n: int, precision: str, rcond: float, name: str, xp: Any) -> _Side:
        """``name``'s side of ``S`` (its co-moment block) and ``mean``: the kept one when they agree, else a new one."""
        kept = self._sides.get(name)
        if kept is not None and self._same(kept, S, mean, n, precision, rcond, xp):
            self.reused += 1
            return kept[-1]
        side = _side(S, mean, n, precision, rcond, name, xp)
        self._sides[name] = (S, mean, n, precision, rcond, side)
        return side

    @staticmethod
    def _same(kept: tuple[Any, Any, int, str, float, _Side], S: Any, mean: Any, n: int, precision: str, rcond: float,
              xp: Any) -> bool:
        S0, mean0, n0, precision0, rcond0, _ = kept
        if (n0, precision0, rcond0) != (n, precision, rcond) or tuple(S0.shape) != tuple(S.shape):
            return False
        if S0 is S and mean0 is mean:
            return True
        if namespace(S0) is not xp:
            return False
        spread = xp.sqrt(xp.abs(xp.linalg.diagonal(S0)))
        scale = xp.reshape(spread, (-1, 1)) * xp.reshape(spread, (1, -1))
        sd = spread / math.sqrt(max(n - 1, 1))
        return bool(xp.all(xp.abs(S - S0) <= REUSE_TOL * scale)
                    & xp.all(xp.abs(mean - mean0) <= REUSE_TOL * (xp.abs(mean0) + sd)))


def _cka(blk: dict[str, Any], xp: Any) -> float:
    ab, aa, bb = (float(xp.sum(blk[k] * blk[k])) for k in ("ab", "aa", "bb"))
    return ab / math.sqrt(aa * bb)


def linear_cka(m: Moments) -> float:
    """Linear CKA of a pair's moments alone (``similarity(m)["cka"]`` without the other measures' factorisations)."""
    blk = m.blocks()
    xp = namespace(blk["ab"])
    for name, key in zip(m.names, ("aa", "bb")):
        if not float(xp.sum(blk[key] * blk[key])) > 0:
            raise LintwinError(f"every unit of {name} is constant over the rows: no similarity to measure")
    return _cka(blk, xp)


_CANCELLATION_TOL = 1e-7  # largest rounding error of debiased CKA (estimated) that lintwin reports


def _centred_row_sums(m: Moments, blk: dict[str, Any], xp: Any) -> tuple[dict[str, float], dict[str, float]]:
    """Σr, Σq, Σr², Σq², Σrq of the *centred* squared row norms from the uncentred kernel sums, and error bounds.

    With r_i = ‖a_i − μ_a‖² = R_i − 2 a_i·μ_a + |μ_a|² (R_i uncentred) and the co-moments S:
    Σ r q = Σ R Q − 2 μ_b·Σ R b − 2 μ_a·Σ Q a + |μ_b|² Σ R + |μ_a|² Σ Q + 4 μ_aᵀ Sab μ_b + n |μ_a|²|μ_b|²
    (Σr², Σq² the same with b = a, a = b; Σr = tr Saa). The terms cancel when the features sit far from
    zero; the bound is a rounding error of the largest term's size (sums of n rows in float64).
    """
    k, n = m.kernel.sums, m.n  # type: ignore[union-attr]
    ma, mb = blk["mean_a"], blk["mean_b"]
    ca, cb = float(xp.sum(ma * ma)), float(xp.sum(mb * mb))
    R, Q = float(k["r"]), float(k["q"])
    unit = 4.0 * float(np.finfo(np.float64).eps) * (math.log2(n + 1) + 8.0)

    def cross(rq: str, rb: str, qa: str, mu_a: Any, mu_b: Any, c_a: float, c_b: float, RR: float, QQ: float,
              S: Any) -> tuple[float, float]:
        terms = [float(k[rq]), -2 * float(xp.sum(k[rb] * mu_b)), -2 * float(xp.sum(k[qa] * mu_a)), c_b * RR,
                 c_a * QQ, 4 * float(xp.sum(mu_a * (S @ mu_b))), n * c_a * c_b]
        return math.fsum(terms), unit * max(abs(t) for t in terms)

    out = {"r": (float(xp.sum(xp.linalg.diagonal(blk["aa"]))), 0.0),
           "q": (float(xp.sum(xp.linalg.diagonal(blk["bb"]))), 0.0),
           "rq": cross("rq", "rb", "qa", ma, mb, ca, cb, R, Q, blk["ab"]),
           "rr": cross("rr", "ra", "ra", ma, ma, ca, ca, R, R, blk["aa"]),
           "qq": cross("qq", "qb", "qb", mb, mb, cb, cb, Q, Q, blk["bb"])}
    return {key: v for key, (v, _) in out.items()}, {key: e for key, (_, e) in out.items()}


def _cka_debiased(m: Moments, blk: dict[str, Any], xp: Any, notes: list[str]) -> float | None:
    """Linear CKA from the unbiased HSIC estimator; ``None`` (with a note) when undefined or lost to rounding."""
    n = m.n
    if m.kernel is None or n <= 3:
        return None
    s, err = _centred_row_sums(m, blk, xp)

    def hsic(frob2: float, sxy: float, sx: float, sy: float) -> float:
        # n(n-3)·HSIC_u for centred features: ‖XᵀY‖² − n/(n−2) Σ r q + Σr Σq / ((n−1)(n−2))
        return frob2 - n / (n - 2) * sxy + sx * sy / ((n - 1) * (n - 2))

    frob = {key: float(xp.sum(blk[key] ** 2)) for key in ("ab", "aa", "bb")}
    ab = hsic(frob["ab"], s["rq"], s["r"], s["q"])
    aa = hsic(frob["aa"], s["rr"], s["r"], s["r"])
    bb = hsic(frob["bb"], s["qq"], s["q"], s["q"])
    aa_, bb_ = max(aa, 1e-12 * frob["aa"]), max(bb, 1e-12 * frob["bb"])  # the bound's scale when HSIC is lost
    value = ab / math.sqrt(aa_ * bb_)
    bound = n / (n - 2) * (err["rq"] / math.sqrt(aa_ * bb_) + 0.5 * abs(value) * (err["rr"] / aa_ + err["qq"] / bb_))
    if bound > _CANCELLATION_TOL:
        notes.append(f"cka_debiased omitted: the features' means are so far from zero, relative to their spread, "
                     f"that centring the row-norm sums in float64 could be off by up to {bound:.1e}")
        return None
    if aa <= 0 or bb <= 0:
        notes.append("cka_debiased is undefined here (a zero unbiased HSIC of a side with itself)")
        return None
    return value


def _cca(blk: dict[str, Any], sa: _Side, sb: _Side, xp: Any) -> tuple[Any, Any, Any]:
    """Canonical correlations (descending) and the SVD factors of the whitened cross-covariance."""
    wa, wb = sa.whitener(xp), sb.whitener(xp)
    T = xp.matrix_transpose(wa) @ _take2(blk["ab"], sa.keep, sb.keep, xp) @ wb
    U, rho, Vt = xp.linalg.svd(T, full_matrices=False)
    return xp.clip(rho, 0.0, 1.0), U, Vt


def _pwcca(blk: dict[str, Any], sa: _Side, sb: _Side, rho: Any, U: Any, Vt: Any, xp: Any) -> tuple[float, Any, str]:
    """Projection-weighted mean ρ: weights Σ_j |cov(u_i, x_j)| over the smaller-rank side's units."""
    if sa.rank <= sb.rank:
        side, coef, which = sa, U, "A"
    else:
        side, coef, which = sb, xp.matrix_transpose(Vt), "B"
    # S w_i restricted to kept units: D V Λ^{1/2} v_i (S W = D R D D⁻¹ V Λ^{-1/2} = D V Λ^{1/2})
    cov = xp.reshape(side.scale, (-1, 1)) * (side.vecs * xp.reshape(xp.sqrt(side.evals), (1, -1))) @ coef
    alpha = xp.sum(xp.abs(cov), axis=0)
    alpha = alpha / xp.sum(alpha)
    return float(xp.sum(alpha * rho)), alpha, which


def _svcca(blk: dict[str, Any], sa: _Side, sb: _Side, keep: float, xp: Any) -> tuple[Any, tuple[int, int]]:
    """CCA between the top principal components (raw co-moment) that explain ``keep`` of each side's variance."""
    parts = []
    for side in (sa, sb):
        frac = to_numpy(xp.cumulative_sum(side.raw_evals) / xp.sum(side.raw_evals))
        k = min(int(np.searchsorted(frac, keep - 1e-12)) + 1, side.rank)
        parts.append((side.raw_evals[:k], side.raw_vecs[:, :k]))
    (la, va), (lb, vb) = parts
    cross = xp.matrix_transpose(va) @ _take2(blk["ab"], sa.keep, sb.keep, xp) @ vb
    T = cross / (xp.reshape(xp.sqrt(la), (-1, 1)) * xp.reshape(xp.sqrt(lb), (1, -1)))
    return xp.clip(xp.linalg.svdvals(T), 0.0, 1.0), (int(la.shape[0]), int(lb.shape[0]))


NUCLEAR_TOL = 1e-12  # relative bound on the part of a nuclear norm left out with the rounding-level directions


def _nuclear_norm(cross: Any, ra: int, rb: int, xp: Any) -> float:
    """Sum of the singular values of ``cross``, from its leading ``ra × rb`` block when the rest is rounding.

    Rows ``ra:`` and columns ``rb:`` belong to directions below the rank decision (eigenvalues at the
    rounding level: with fewer rows than units, most of them). Leaving them out can only lower the
    nuclear norm, and by at most ``sqrt(rank of the rest) · ‖rest‖_F``; when that bound is within
    :data:`NUCLEAR_TOL` of the block's own nuclear norm, the block's SVD (``ra × rb`` instead of
    ``d_a × d_b``) gives the value; otherwise the whole matrix's does.
    """
    da, db = (int(x) for x in cross.shape)
    if (ra, rb) == (da, db):
        return float(xp.sum(xp.linalg.svdvals(cross)))
    block, below, right = cross[:ra, :rb], cross[ra:, :], cross[:ra, rb:]
    rest = float(xp.sum(below * below)) + float(xp.sum(right * right))  # summed directly: no cancellation
    bound = math.sqrt((da - ra) + (db - rb)) * math.sqrt(rest)
    nuclear = float(xp.sum(xp.linalg.svdvals(block))) if ra and rb else 0.0
    if bound <= NUCLEAR_TOL * nuclear:
        return nuclear
    return float(xp.sum(xp.linalg.svdvals(cross)))


def _shape_angles(blk: dict[str, Any], sa: _Side, sb: _Side, alphas: Sequence[float], rho_sum: float,
                  xp: Any) -> dict[float, float]:
    """Angular shape distance for each α (netrep's partial whitening, from the co-moments).

    At α = 0 with every non-constant direction kept, full whitening makes the cross matrix's singular
    values the canonical correlations, so the CCA spectrum's sum is reused instead of another SVD.
    The nuclear norm comes from the kept directions' block when the rest is rounding (:func:`_nuclear_norm`).
    """
    full_rank = sa.rank == int(sa.keep.shape[0]) and sb.rank == int(sb.keep.shape[0])
    eig = []
    for side in (sa, sb):
        lam = side.raw_evals
        kept = xp.arange(int(lam.shape[0]), device=device(lam)) < side.rank  # the rank decided in the scaled space
        eig.append((lam, side.raw_vecs, kept))
    (la, Va, ka), (lb, Vb, kb) = eig
    P = xp.matrix_transpose(Va) @ _take2(blk["ab"], sa.keep, sb.keep, xp) @ Vb
    out = {}
    for alpha in alphas:
        check_alpha(alpha)
        if alpha == 0.0 and full_rank:
            out[0.0] = math.acos(min(1.0, max(-1.0, rho_sum / math.sqrt(sa.rank * sb.rank))))
            continue
        d = []
        for lam, kept in ((la, ka), (lb, kb)):
            safe = xp.where(kept, lam, xp.ones_like(lam))
            d.append(xp.where(kept, alpha + (1.0 - alpha) / xp.sqrt(safe), xp.full_like(lam, alpha)))
        cross = xp.reshape(d[0], (-1, 1)) * P * xp.reshape(d[1], (1, -1))
        norm = math.sqrt(float(xp.sum(d[0] ** 2 * la)) * float(xp.sum(d[1] ** 2 * lb)))
        cos = _nuclear_norm(cross, sa.rank, sb.rank, xp) / norm
        out[float(alpha)] = math.acos(min(1.0, max(-1.0, cos)))
    return out


def _predictivity(m: Moments, rcond: float, info: dict,
                  systems: Sequence[ScaledSystem]) -> tuple[dict[str, float], dict[str, Any]]:
    """R² of the least-squares maps both ways, overall and per target unit, exactly from the moments.

    ``systems`` are A's and B's sides as the measures factored them (the same factorisation a map solves with).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        maps = maps_from_moments(m, both=True, rcond=rcond, systems=systems)
    info["predictivity_notes"] = [str(w.message) for w in caught]
    values, per = {}, {}
    for mp, key in ((maps[0], "r2_ab"), (maps[1], "r2_ba")):
        values[key] = mp.stats["train_metrics"]["r2"]
        per[mp.name] = np.asarray(mp.stats["train_metrics"]["r2_per_dim"])
        info.setdefault("predictivity_solver", {})[mp.name] = {
            k: mp.stats.get(k) for k in ("solver", "rank", "constant_units", "reason", "condition", "ridge")}
    return values, per


def _row_span(side: _Side, n: int) -> Any | None:
    """An orthonormal basis (all units × (n−1)) of the span of a side's centred rows, when they are fewer than
    its units: the leading eigenvectors of its co-moment. ``None`` when the rows span every unit."""
    if n - 1 >= int(side.keep.shape[0]):
        return None
    return side.system.embed(side.raw_vecs[:, : n - 1])


def _predictivity_cv(folds: Sequence[Moments], info: dict, spans: tuple[Any, Any] = (None, None),
                     step: Any = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Held-out R² of the ridge map with λ chosen by K-fold CV, pooled over the folds, per target unit.

    Each fold's training system is factored once per direction (:class:`~lintwin.solvers.ridge_cv.FoldPath`)
    and serves both the choice of λ and the held-out errors of the chosen one; the paths of one direction
    take at most the memory of the fold moments. ``spans`` (A's, B's: :func:`_row_span`) let a fold be
    factored on the span of the rows when there are fewer rows than units. ``step()`` is called after each
    fold is factored (progress).
    """
    values, per = {}, {}
    for reverse, key in ((False, "r2cv_ab"), (True, "r2cv_ba")):
        paths = []
        for j in range(len(folds)):
            paths.append(FoldPath.of(Moments.merged(folds, exclude=j), reverse, spans[1] if reverse else spans[0]))
            if step is not None:
                step()
        cv = ridge_cv(list(folds), reverse=reverse, paths=paths)
        sse = sst = None
        for j, held in enumerate(folds):
            wt, bias = paths[j].weights(cv.chosen)
            hxx, hxy, hyy, nx, ny = held.oriented(reverse)
            xp = namespace(hxx)
            c = ny - (xp.matrix_transpose(wt) @ nx + bias)
            e = (xp.linalg.diagonal(hyy) - 2.0 * xp.sum(wt * hxy, axis=0) + xp.sum(wt * (hxx @ wt), axis=0)
                 + held.n * c * c)
            sse = e if sse is None else sse + e
            sst = xp.linalg.diagonal(hyy) if sst is None else sst + xp.linalg.diagonal(hyy)
        xp = namespace(sse)
        values[key] = 1.0 - float(xp.sum(sse)) / float(xp.sum(sst))
        zero = sst <= 0
        per[cv.direction] = xp.where(zero, xp.full_like(sst, float("nan")),
                                     1.0 - sse / xp.where(zero, xp.ones_like(sst), sst))
        info.setdefault("ridge_cv", {})[cv.direction] = {"chosen_ridge": cv.chosen, "folds": cv.folds}
    return values, per


# -- the API -----------------------------------------------------------------------------------------
def similarity(m: Moments, *, svcca_keep: float = 0.99, alphas: Sequence[float] = DEFAULT_ALPHAS,
               rcond: float | None = None, folds: Sequence[Moments] | None = None,
               predictivity: bool = True, factors: SideFactors | None = None,
               progress: bool = False) -> Similarity:
    """Every similarity measure of the module docstring, from one accumulator (see there for definitions).

    ``folds`` (image-fold moments whose merge is ``m``) adds the cross-validated ridge R²;
    ``m.kernel`` (``Moments(..., kernel=True)``) adds debiased CKA. ``rcond`` overrides the
    solver's relative eigenvalue floor in the scaled space. ``factors`` keeps each side's
    factorisation for later calls on the same rows (a permutation null, a study's pairs: see
    :class:`SideFactors`). ``progress`` shows a bar over the steps (each side, the measures, the
    R², each CV fold).
    """
    check_svcca_keep(svcca_keep)
    for alpha in alphas:
        check_alpha(alpha)
    blk = m.blocks()
    xp = namespace(blk["ab"])
    n = m.n
    if n < 2:
        raise LintwinError(f"similarity needs at least 2 rows, got {n}")
    rcond = default_rcond(m.precision, m.n) if rcond is None else float(rcond)
    factors = factors if factors is not None else SideFactors()
    steps = 3 + (1 + 2 * len(folds) if predictivity and folds else int(predictivity))
    with tqdm(total=steps, desc="similarity measures", unit="step", disable=not progress) as bar:
        a, b = m.names
        sa = factors.side(blk["aa"], blk["mean_a"], n, m.precision, rcond, a, xp)
        bar.update()
        sb = factors.side(blk["bb"], blk["mean_b"], n, m.precision, rcond, b, xp)
        bar.update()
        info: dict[str, Any] = {
            "rows": n, "dims": [m.dim_a, m.dim_b], "precision": m.precision, "rcond": rcond,
            "constant_units": {a: sa.constant, b: sb.constant}, "rank": {a: sa.rank, b: sb.rank},
            "notes": [],
        }
        values: dict[str, float | None] = {"cka": _cka(blk, xp),
                                           "cka_debiased": _cka_debiased(m, blk, xp, info["notes"])}
        if m.kernel is None:
            info["notes"].append("cka_debiased needs kernel sums (Moments(..., kernel=True)); omitted")
        rho, U, Vt = _cca(blk, sa, sb, xp)
        rho_np = to_numpy(rho)
        values.update(cca_rho1=float(rho_np[0]), cca_mean_rho=float(rho_np.mean()),
                      cca_mean_rho2=float((rho_np**2).mean()))
        if min(sa.rank, sb.rank) >= n - 1:
            info["notes"].append(f"rank ({min(sa.rank, sb.rank)}) >= rows - 1 ({n - 1}): canonical correlations "
                                 "are 1 by construction; CCA, SVCCA, PWCCA and shape_angle[0] carry no information")
        sv, sv_dims = _svcca(blk, sa, sb, svcca_keep, xp)
        sv_np = to_numpy(sv)
        values["svcca"] = float(sv_np.mean())
        info["svcca"] = {"keep": svcca_keep, "dims": {a: sv_dims[0], b: sv_dims[1]}}
        values["pwcca"], _, which = _pwcca(blk, sa, sb, rho, U, Vt, xp)
        info["pwcca_weights_from"] = a if which == "A" else b
        angles = _shape_angles(blk, sa, sb, sorted({*map(float, alphas), 1.0}), float(rho_np.sum()), xp)
        cos1 = math.cos(angles[1.0])
        values["procrustes"] = 2.0 - 2.0 * cos1
        for alpha in alphas:
            values[f"shape_angle[{float(alpha):g}]"] = angles[float(alpha)]
        bar.update()
        r2: dict[str, Any] = {}
        r2cv: dict[str, Any] = {}
        if predictivity:
            v, r2 = _predictivity(m, rcond, info, (sa.system, sb.system))
            values.update(v)
            bar.update()
            if folds:
                v, r2cv = _predictivity_cv(folds, info, (_row_span(sa, n), _row_span(sb, n)), bar.update)
                values.update(v)
    return Similarity((a, b), n, values, rho_np, sv_np, {k: to_numpy(x) for k, x in r2.items()},
                      {k: to_numpy(x) for k, x in r2cv.items()}, info)
