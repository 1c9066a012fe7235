"""Neighbourhood alignment of two representations from their exact k-NN lists: mutual k-NN, CKNNA, null, bootstrap.

Definitions (Huh, Cheung, Wang & Isola 2024, "The platonic representation hypothesis", ICML,
§2 and appendix A; reference code ``metrics.py`` of github.com/minyoungg/platonic-rep, functions
``mutual_knn``, ``cknna``, ``hsic_unbiased``), on n paired rows with neighbour sets N_A(i), N_B(i)
of size k (self excluded):

* mutual k-NN = (1/n) Σ_i |N_A(i) ∩ N_B(i)| / k.
* CKNNA = HSIC(K̃, L̃) / √(HSIC(K̃_A, K̃_A) · HSIC(L̃_B, L̃_B)), with K_ij, L_ij the kernels of the
  two representations, M_ij = 1 when j ∈ N_A(i) ∩ N_B(i), K̃ = M∘K, L̃ = M∘L, K̃_A = M_A∘K,
  L̃_B = M_B∘L, and HSIC the unbiased estimator of Song et al. (2012, eq. 5) on n×n matrices with
  zero diagonal: HSIC(K, L) = [Σ_ij K_ij L_ji + (Σ K)(Σ L)/((n−1)(n−2)) − 2·1ᵀKL1/(n−2)] / (n(n−3)).
  The masks are not symmetric, so the transpose matters. platonic-rep adds 1e-6 to the
  denominator; lintwin does not, because at large n the HSIC values themselves fall to ~1e-6.

Both need only the lists and the kernel values of listed pairs, so they are exact at any n.

The permutation null pairs row i of A with row π(i) of B for a random permutation π: B's lists
are relabelled (N_B'(i) = π⁻¹(N_B(π(i)))), nothing is searched again, so K permutations cost K
set intersections. Under independence the mean mutual k-NN is k/(n−1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..core.xp import row_spans
from ..errors import LintwinError, ShapeError
from .topk import Neighbours

__all__ = ["NullSummary", "bootstrap_mutual_knn", "cknna", "mutual_knn", "mutual_knn_rows", "permutation_null",
           "permuted", "self_terms"]

_ROWS = 1 << 18  # rows compared at once (k x k booleans each)


def _check_pair(a: Neighbours, b: Neighbours) -> None:
    if a.index.shape != b.index.shape:
        raise ShapeError(f"neighbour lists of different shapes {a.index.shape} and {b.index.shape}: "
                         "both sides need the same rows and the same k")
    if not np.array_equal(a.rows, b.rows):
        raise ShapeError("neighbour lists of different rows cannot be compared")


def _matches(a: Neighbours, b: Neighbours, lo: int, hi: int) -> np.ndarray:
    """(rows, k, k) booleans: A's s-th neighbour of row i is B's t-th."""
    return a.index[lo:hi, :, None] == b.index[lo:hi, None, :]


def mutual_knn_rows(a: Neighbours, b: Neighbours) -> np.ndarray:
    """Per row, |N_A(i) ∩ N_B(i)| (an integer 0..k)."""
    _check_pair(a, b)
    out = np.empty(a.index.shape[0], dtype=np.int64)
    for lo, hi in row_spans(a.index.shape[0], _ROWS):
        out[lo:hi] = _matches(a, b, lo, hi).any(axis=2).sum(axis=1)
    return out


def mutual_knn(a: Neighbours, b: Neighbours) -> float:
    """Mean over rows of |N_A(i) ∩ N_B(i)| / k."""
    return float(mutual_knn_rows(a, b).sum() / (a.index.size))


def _hsic(K: sp.csr_matrix, L: sp.csr_matrix, n: int) -> float:
    """Unbiased HSIC (Song et al. 2012, eq. 5) of two sparse n×n matrices with zero diagonal."""
    t1 = float(K.multiply(L.T).sum())
    t2 = float(K.sum()) * float(L.sum()) / ((n - 1) * (n - 2))
    t3 = 2.0 * float(np.asarray(K.sum(axis=0)).ravel() @ np.asarray(L.sum(axis=1)).ravel()) / (n - 2)
    return (t1 + t2 - t3) / (n * (n - 3))


def _own_kernel(x: Neighbours) -> sp.csr_matrix:
    n, k = x.index.shape
    return sp.csr_matrix((x.kernel.ravel(), (np.repeat(np.arange(n), k), x.index.ravel())), shape=(n, n))


def _shared_kernels(a: Neighbours, b: Neighbours) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """M∘K and M∘L for M = the pairs listed on both sides."""
    n = a.index.shape[0]
    rows, cols, kv, lv = [], [], [], []
    for lo, hi in row_spans(n, _ROWS):
        i, s, t = np.nonzero(_matches(a, b, lo, hi))
        rows.append(i + lo)
        cols.append(a.index[i + lo, s])
        kv.append(a.kernel[i + lo, s])
        lv.append(b.kernel[i + lo, t])
    r, c = np.concatenate(rows), np.concatenate(cols)
    return (sp.csr_matrix((np.concatenate(kv), (r, c)), shape=(n, n)),
            sp.csr_matrix((np.concatenate(lv), (r, c)), shape=(n, n)))


@dataclass
class _SelfTerms:
    """HSIC(K̃_A, K̃_A) and HSIC(L̃_B, L̃_B): unchanged by relabelling B's rows, so computed once."""

    kk: float
    ll: float


def self_terms(a: Neighbours, b: Neighbours) -> _SelfTerms:
    n = a.index.shape[0]
    return _SelfTerms(_hsic(_own_kernel(a), _own_kernel(a), n), _hsic(_own_kernel(b), _own_kernel(b), n))


def cknna(a: Neighbours, b: Neighbours, terms: _SelfTerms | None = None) -> float | None:
    """CKNNA (Huh et al. 2024); None when a self term is not positive (the ratio is then undefined)."""
    _check_pair(a, b)
    n = a.index.shape[0]
    if n < 4:
        raise LintwinError(f"CKNNA's unbiased HSIC needs at least 4 rows, got {n}")
    terms = terms or self_terms(a, b)
    if not (terms.kk > 0 and terms.ll > 0):
        return None
    K, L = _shared_kernels(a, b)
    return _hsic(K, L, n) / float(np.sqrt(terms.kk * terms.ll))


def permuted(b: Neighbours, perm: np.ndarray) -> Neighbours:
    """B with row i paired to B's row perm[i]: lists relabelled, nothing searched again."""
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size)
    return Neighbours(inv[b.index[perm]], b.key[perm], b.kernel[perm], b.rows, b.metric, b.first, b.rechecked)


@dataclass
class NullSummary:
    """K permutation-null samples of one measure, and the observed value against them."""

    observed: float | None
    samples: list[float | None] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        v = np.asarray([s for s in self.samples if s is not None], dtype=float)
        mean = float(v.mean()) if v.size else None
        sd = float(v.std(ddof=1)) if v.size > 1 else None
        obs = self.observed
        z = None if obs is None or mean is None or not sd else (obs - mean) / sd
        # One-sided permutation p-value, counting the observed pairing (Phipson & Smyth 2010).
        p = None if obs is None or not v.size else float((1 + np.sum(v >= obs)) / (v.size + 1))
        return {"mean": mean, "sd": sd, "z": z, "p_value": p, "repeats": int(v.size), "samples": self.samples}


def permutation_null(a: Neighbours, b: Neighbours, *, repeats: int, seed: int, with_cknna: bool = True,
                     observed: tuple[float, float | None] | None = None) -> dict[str, NullSummary]:
    """``repeats`` random pairings of A's rows with B's: mutual k-NN (and CKNNA) for each."""
    if repeats < 2:
        raise LintwinError(f"a permutation null needs at least 2 repetitions (for its sd), got {repeats}")
    _check_pair(a, b)
    terms = self_terms(a, b) if with_cknna else None
    obs = observed or (mutual_knn(a, b), cknna(a, b, terms) if with_cknna else None)
    out = {"mutual_knn": NullSummary(obs[0])}
    if with_cknna:
        out["cknna"] = NullSummary(obs[1])
    rng = np.random.default_rng(seed)
    for _ in range(repeats):
        bp = permuted(b, rng.permutation(a.index.shape[0]))
        out["mutual_knn"].samples.append(mutual_knn(a, bp))
        if with_cknna:
            out["cknna"].samples.append(cknna(a, bp, terms))
    return out


def bootstrap_mutual_knn(a: Neighbours, b: Neighbours, *, n_boot: int = 1000, level: float = 0.95,
                         seed: int = 0) -> dict[str, Any]:
    """Percentile interval of mutual k-NN over rows resampled with replacement (lists held fixed).

    Each row's overlap takes one of k+1 values, so a resample's mean is drawn exactly from the
    multinomial of those k+1 counts: the same distribution as resampling rows, at no cost in n.
    """
    if n_boot < 2:
        raise LintwinError(f"the bootstrap needs at least 2 resamples, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise LintwinError(f"level must be in (0, 1), got {level}")
    overlap = mutual_knn_rows(a, b)
    n, k = a.index.shape
    share = np.bincount(overlap, minlength=k + 1) / n
    counts = np.random.default_rng(seed).multinomial(n, share, size=n_boot)
    reps = counts @ (np.arange(k + 1) / k) / n
    low, high = np.percentile(reps, [50.0 * (1 - level), 50.0 * (1 + level)])
    return {"estimate": float(overlap.sum() / (n * k)), "low": float(low), "high": float(high), "level": level,
            "n_boot": n_boot, "seed": seed, "scheme": "rows resampled with replacement, neighbour lists held fixed"}
