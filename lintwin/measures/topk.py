"""Exact k nearest neighbours of every row: FAISS float32 candidates, certified and rescored in float64.

Neighbours of row i are the k other rows j with the smallest key, ties broken by the smaller
position (= store row): key = −cos(x_i, x_j) under ``cosine``, ‖x_i − x_j‖² under ``l2``, both
evaluated in float64 from the stored float32 features (cosine as ⟨x_i, x_j⟩ / (‖x_i‖ ‖x_j‖)).
Row i itself is never its own neighbour; a duplicate of row i is (at key −1 or 0).

How it stays exact at float32 speed:

1. **Candidates.** FAISS's exact flat search (``faiss.knn``: blocked float32 GEMM, top-k per
   query) keeps, per query row, the ``pool`` best candidates against each key segment; segments
   are merged keeping the best ``pool``. ``floor`` records the smallest float32 key of anything
   left out.
2. **Certificate.** A float32 key c differs from its float64 value by at most ε: under cosine
   (rows normalised in float64, rounded to float32, unit norm) ε = γ_d + 2u, under l2
   ε_i = γ_{d+3} (‖x_i‖ + max_j ‖x_j‖)², with u = 2⁻²⁴ and γ_n = nu/(1 − nu) (Higham, *Accuracy
   and Stability of Numerical Algorithms*, §3.1, any summation order), times 1.01 for the float64
   rounding. Every true neighbour then has c ≤ c_k + 2ε (c_k: the pool's k-th float32 key). If
   ``floor`` > c_k + 2ε the pool holds every possible neighbour: its members are rescored in
   float64 and sorted by (key, position).
3. **Rows without a certificate** (more near-ties than the pool holds, e.g. many duplicate rows)
   are searched again: every key with c ≤ c_k + 2ε (NumPy float32 GEMM, the same bound) is
   rescored in float64 and merged, block by block, into the exact top k.

Keys live in memory one segment at a time (``segment_rows``, default about 2 GiB of float32);
queries stream in blocks of ``block_rows``. The answer does not depend on either, nor on how
query ranges are spread over Dask workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from ..core.xp import row_spans
from ..errors import LintwinError
from .knn_sources import RowSource

__all__ = ["Metric", "Neighbours", "exact_knn", "faiss_module", "knn_bound"]

Metric = Literal["cosine", "l2"]
METRICS = ("cosine", "l2")
_U32 = 2.0**-24
_KEY_BYTES = 2 * 2**30  # float32 keys held in memory at once
_RESCORE_BYTES = 1 << 27  # float64 rows gathered at once to rescore pairs
_MAX_L2_NORM = 1e18  # beyond this, squared distances overflow float32 (3.4e38)
_NONE = np.iinfo(np.int64).max  # "no candidate" (sorts after every row)


@dataclass(frozen=True)
class Neighbours:
    """The k nearest neighbours of rows ``first .. first+len(index)`` of a source, nearest first.

    ``index``: positions (0-based, into ``rows``); ``key``: −cosine or squared distance (float64);
    ``kernel``: the kernel value of the pair, cosine (cosine metric) or ⟨x_i, x_j⟩ (l2), float64;
    ``rows``: the store rows of all positions of the source.
    """

    index: np.ndarray
    key: np.ndarray
    kernel: np.ndarray
    rows: np.ndarray
    metric: str
    first: int = 0
    rechecked: int = 0  # rows whose float32 window did not fit the pool and were searched again

    @property
    def k(self) -> int:
        return int(self.index.shape[1])

    def head(self, k: int) -> Neighbours:
        """The k nearest of these (exact too: a prefix of an exact sorted list)."""
        return Neighbours(self.index[:, :k], self.key[:, :k], self.kernel[:, :k], self.rows, self.metric, self.first,
                          self.rechecked)

    @staticmethod
    def concat(parts: list[Neighbours]) -> Neighbours:
        """Join query ranges given in order."""
        parts = sorted(parts, key=lambda p: p.first)
        return Neighbours(np.concatenate([p.index for p in parts]), np.concatenate([p.key for p in parts]),
                          np.concatenate([p.kernel for p in parts]), parts[0].rows, parts[0].metric, parts[0].first,
                          sum(p.rechecked for p in parts))


def faiss_module() -> Any:
    """FAISS, or one line naming the extra that installs it."""
    try:
        import faiss
    except ImportError:
        raise LintwinError("neighbour search needs FAISS: pip install 'lintwin[neighbours]' (faiss-cpu)") from None
    return faiss


def _gamma(n: int) -> float:
    return n * _U32 / (1.0 - n * _U32)


def knn_bound(metric: str, dim: int, query_norms: np.ndarray, max_key_norm: float) -> np.ndarray:
    """ε per query row: the largest difference between a float32 key and its float64 value."""
    if metric == "cosine":
        return np.full(query_norms.shape, 1.01 * (_gamma(dim) + 2 * _U32) + 1e-12)
    return 1.01 * _gamma(dim + 3) * (query_norms + max_key_norm) ** 2 + 1e-300


_ROWS_AT_ONCE = 16384  # rows converted to float64 at once (bounds the temporaries)


def _norms(x: np.ndarray) -> np.ndarray:
    """float64 Euclidean norm of each float32 row (products exact in float64, summed in float64)."""
    out = np.empty(x.shape[0])
    for lo, hi in row_spans(x.shape[0], _ROWS_AT_ONCE):
        out[lo:hi] = np.sqrt(np.einsum("ij,ij->i", x[lo:hi], x[lo:hi], dtype=np.float64))
    return out


def _prepared(x: np.ndarray, norms: np.ndarray, metric: str) -> np.ndarray:
    """What FAISS searches: rows normalised in float64 then rounded (cosine), or the rows (l2)."""
    if metric != "cosine":
        return np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(x.shape, dtype=np.float32)
    for lo, hi in row_spans(x.shape[0], _ROWS_AT_ONCE):
        out[lo:hi] = x[lo:hi].astype(np.float64) / norms[lo:hi, None]
    return out


def exact_pairs(q: np.ndarray, qn: np.ndarray, keys: np.ndarray, kn: np.ndarray, qi: np.ndarray, kj: np.ndarray,
                metric: str) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``(key, kernel)`` of pairs (query row ``qi`` of ``q``, key row ``kj`` of ``keys``): one routine for all."""
    key = np.empty(qi.shape[0])
    kern = np.empty(qi.shape[0])
    for lo, hi in row_spans(qi.shape[0], max(256, _RESCORE_BYTES // (16 * q.shape[1]))):
        a, b = q[qi[lo:hi]], keys[kj[lo:hi]]
        dot = np.einsum("ij,ij->i", a, b, dtype=np.float64)  # float32 products are exact in float64
        if metric == "cosine":
            kern[lo:hi] = dot / (qn[qi[lo:hi]] * kn[kj[lo:hi]])
            key[lo:hi] = -kern[lo:hi]
        else:
            diff = a.astype(np.float64) - b  # exact: a difference of two float32 fits float64
            kern[lo:hi] = dot
            key[lo:hi] = np.einsum("ij,ij->i", diff, diff)
    return key, kern


def _best_k(keys: np.ndarray, pos: np.ndarray, k: int, *extra: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per row, the k entries smallest by (key, position); invalid entries carry key +inf, position max."""
    order = np.lexsort((pos, keys), axis=-1)[:, :k]
    return tuple(np.take_along_axis(a, order, axis=1) for a in (keys, pos, *extra))


class _Segments:
    """Key segments of a source, loaded once each (kept when there is only one)."""

    def __init__(self, source: RowSource, metric: str, block_rows: int, segment_rows: int):
        self.source, self.metric, self.block_rows = source, metric, block_rows
        self.spans = row_spans(source.size(), segment_rows)
        self._kept: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """``(first position, raw float32 rows, float64 norms, prepared float32 rows)`` per segment."""
        for lo, hi in self.spans:
            if self._kept is not None and self._kept[0] == lo:
                yield self._kept
                continue
            raw = self.source.read(lo, hi, self.metric, self.block_rows)
            norms = _norms(raw)
            seg = (lo, raw, norms, _prepared(raw, norms, self.metric))
            if len(self.spans) == 1:
                self._kept = seg
            yield seg

    def kept(self) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """The segment held in memory, if any."""
        return [self._kept] if self._kept is not None else []


def _queries(segments: _Segments, seg: tuple[int, np.ndarray, np.ndarray, np.ndarray], lo: int, hi: int,
             block_rows: int) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Query blocks ``(position, raw rows, norms, prepared rows)`` of ``lo..hi``: from ``seg`` when it holds them."""
    s0, raw, norms, prep = seg
    if s0 <= lo and hi <= s0 + raw.shape[0]:
        for a, b in row_spans(hi, block_rows, lo):
            yield a, raw[a - s0:b - s0], norms[a - s0:b - s0], prep[a - s0:b - s0]
        return
    for a, x in segments.source.blocks(lo, hi, block_rows, segments.metric):
        xn = _norms(x)
        yield a, x, xn, _prepared(x, xn, segments.metric)


def exact_knn(source: RowSource, k: int, *, metric: str = "cosine", query: tuple[int, int] | None = None,
              block_rows: int = 4096, segment_rows: int | None = None, pool: int | None = None,
              progress: bool = False) -> Neighbours:
    """The exact k nearest neighbours (self excluded) of the rows ``query`` (default all) of ``source``."""
    if metric not in METRICS:
        raise LintwinError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    m, d = source.size(), source.dim()
    if k < 1 or k > m - 1:
        raise LintwinError(f"k = {k} nearest neighbours (self excluded) need more than k rows: {source.label()} "
                           f"has {m} rows, so k must be in 1..{m - 1}" if m >= 2 else
                           f"{source.label()} has {m} row(s): neighbours need at least 2")
    if block_rows < 1:
        raise LintwinError(f"block_rows must be >= 1, got {block_rows}")
    faiss = faiss_module()
    q_lo, q_hi = query if query is not None else (0, m)
    if not 0 <= q_lo < q_hi <= m:
        raise LintwinError(f"query rows {q_lo}..{q_hi} are not within the {m} rows of {source.label()}")
    segment_rows = segment_rows or max(1, _KEY_BYTES // (4 * d))
    pool = min(m - 1, pool or max(2 * k, k + 16))
    segments = _Segments(source, metric, block_rows, segment_rows)
    nq = q_hi - q_lo
    cand_c = np.full((nq, pool), np.inf)
    cand_j = np.full((nq, pool), _NONE, dtype=np.int64)
    floor = np.full(nq, np.inf)
    qnorm = np.zeros(nq)
    max_key_norm = 0.0
    fmetric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    with tqdm(total=len(segments.spans) * nq, desc="neighbours", unit="row", disable=not progress) as bar:
        for seg in segments:
            s0, raw, norms, prep = seg
            max_key_norm = max(max_key_norm, float(norms.max()))
            if metric == "l2" and max_key_norm > _MAX_L2_NORM:
                big = source.store_rows()[s0 + np.flatnonzero(norms > _MAX_L2_NORM)]
                raise LintwinError(f"{source.label()} has rows of norm above {_MAX_L2_NORM:.0e} (rows "
                                   f"{', '.join(str(r) for r in big[:5])}): their squared distances overflow float32; "
                                   "rescale the features or use --metric cosine")
            width = min(pool + 1, prep.shape[0])
            for a, x, xn, xp in _queries(segments, seg, q_lo, q_hi, block_rows):
                r = slice(a - q_lo, a - q_lo + x.shape[0])
                qnorm[r] = xn
                dist, idx = faiss.knn(xp, prep, width, metric=fmetric)
                idx = idx.astype(np.int64) + s0
                c = -dist.astype(np.float64) if metric == "cosine" else dist.astype(np.float64)
                if width < prep.shape[0]:  # rows FAISS did not return are no better than its worst
                    floor[r] = np.minimum(floor[r], c.max(axis=1))
                own = idx == np.arange(a, a + x.shape[0])[:, None]
                c[own], idx[own] = np.inf, _NONE
                both_c = np.concatenate([cand_c[r], c], axis=1)
                both_j = np.concatenate([cand_j[r], idx], axis=1)
                order = np.argsort(both_c, axis=1, kind="stable")
                both_c, both_j = np.take_along_axis(both_c, order, 1), np.take_along_axis(both_j, order, 1)
                if both_c.shape[1] > pool:
                    floor[r] = np.minimum(floor[r], both_c[:, pool])
                cand_c[r], cand_j[r] = both_c[:, :pool], both_j[:, :pool]
                bar.update(x.shape[0])
    eps = knn_bound(metric, d, qnorm, max_key_norm)
    window = cand_c[:, k - 1] + 2 * eps
    certified = floor > window
    need = certified[:, None] & (cand_c <= window[:, None])
    index, key, kern = _rescore_pool(segments, cand_j, need, (q_lo, q_hi), k, block_rows)
    loose = np.flatnonzero(~certified)
    if loose.size:
        _window_search(segments, loose, window, q_lo, k, index, key, kern)
    if (index == _NONE).any() or not np.isfinite(key).all():  # never expected: refuse rather than return it
        bad = np.flatnonzero((index == _NONE).any(axis=1) | ~np.isfinite(key).all(axis=1)) + q_lo
        raise LintwinError(f"the neighbour search of {source.label()} found no finite neighbours for rows "
                           f"{', '.join(str(r) for r in source.store_rows()[bad[:5]])}; please report this")
    return Neighbours(index, key, kern, source.store_rows(), metric, q_lo, int(loose.size))


def _rescore_pool(segments: _Segments, cand_j: np.ndarray, need: np.ndarray, query: tuple[int, int], k: int,
                  block_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 keys of the pool entries ``need`` marks (certified rows, inside the window), then the k best."""
    q_lo, q_hi = query
    nq, pool = cand_j.shape
    keys = np.full((nq, pool), np.inf)
    kern = np.zeros((nq, pool))
    for seg in segments:
        s0, raw, norms, _ = seg
        s1 = s0 + raw.shape[0]
        for a, x, xn, _ in _queries(segments, seg, q_lo, q_hi, block_rows):
            r = slice(a - q_lo, a - q_lo + x.shape[0])
            ri, si = np.nonzero(need[r] & (cand_j[r] >= s0) & (cand_j[r] < s1))
            ri += a - q_lo
            if ri.size:
                kk, kv = exact_pairs(x, xn, raw, norms, ri - (a - q_lo), cand_j[ri, si] - s0, segments.metric)
                keys[ri, si], kern[ri, si] = kk, kv
    best_key, best_idx, best_kern = _best_k(keys, cand_j, k, kern)
    return best_idx, best_key, best_kern


def _window_search(segments: _Segments, loose: np.ndarray, window: np.ndarray, q_lo: int, k: int,
                   index: np.ndarray, key: np.ndarray, kern: np.ndarray) -> None:
    """Rows without a certificate: rescore every key within their window in float64, keep the k best (in place)."""
    metric = segments.metric
    xs = _rows_at(segments, loose + q_lo)
    best_key = np.full((loose.size, k), np.inf)
    best_idx = np.full((loose.size, k), _NONE, dtype=np.int64)
    best_kern = np.zeros((loose.size, k))
    group = 64
    for seg in segments:
        s0, raw, norms, prep = seg
        kn2 = (prep * prep).sum(axis=1, dtype=np.float32) if metric == "l2" else None
        for g_lo, g_hi in row_spans(loose.size, group):
            rows = loose[g_lo:g_hi] + q_lo
            x = xs[g_lo:g_hi]
            xn = _norms(x)
            qp = _prepared(x, xn, metric)
            ip = qp @ prep.T
            if metric == "cosine":
                c = -ip
            else:
                c = (qp * qp).sum(axis=1, dtype=np.float32)[:, None] + kn2[None, :] - 2 * ip
            hit = c.astype(np.float64) <= window[rows - q_lo][:, None]
            mine = (rows >= s0) & (rows < s0 + prep.shape[0])
            hit[np.flatnonzero(mine), rows[mine] - s0] = False
            gi, kj = np.nonzero(hit)
            if not gi.size:
                continue
            kk, kv = exact_pairs(x, xn, raw, norms, gi, kj, metric)
            width = np.bincount(gi, minlength=rows.size).max()
            new_key = np.full((rows.size, width), np.inf)
            new_idx = np.full((rows.size, width), _NONE, dtype=np.int64)
            new_kern = np.zeros((rows.size, width))
            slot = np.arange(gi.size) - np.searchsorted(gi, gi)
            new_key[gi, slot], new_idx[gi, slot], new_kern[gi, slot] = kk, kj + s0, kv
            g = slice(g_lo, g_hi)
            out = _best_k(np.concatenate([best_key[g], new_key], 1), np.concatenate([best_idx[g], new_idx], 1), k,
                          np.concatenate([best_kern[g], new_kern], 1))
            best_key[g], best_idx[g], best_kern[g] = out
    index[loose], key[loose], kern[loose] = best_idx, best_key, best_kern


def _rows_at(segments: _Segments, rows: np.ndarray) -> np.ndarray:
    """Raw float32 rows at the sorted positions ``rows``: from the kept segment, else in one pass over the source."""
    for s0, raw, _, _ in segments.kept():
        if rows[0] >= s0 and rows[-1] < s0 + raw.shape[0]:
            return raw[rows - s0]
    out = np.empty((rows.size, segments.source.dim()), dtype=np.float32)
    for lo, x in segments.source.blocks(int(rows[0]), int(rows[-1]) + 1, 65536, segments.metric):
        a, b = np.searchsorted(rows, [lo, lo + x.shape[0]])
        out[a:b] = x[rows[a:b] - lo]
    return out
