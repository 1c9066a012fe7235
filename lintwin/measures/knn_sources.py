"""Where the rows of a neighbour search come from: a stored array (all rows or a subset) or an in-memory one.

A source yields float32 blocks of its rows by *position* (0 .. size-1); ``rows`` maps positions to
the store's row numbers (sorted), so neighbours found in a subset are named by store rows. Every
block is checked: NaN/Inf rows, and under the cosine metric zero-norm rows (their cosine is
undefined), are refused naming the first rows. Sources are small frozen dataclasses of paths and
numbers, so they travel to Dask workers as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..core.xp import row_spans
from ..errors import LintwinError, NonFiniteError, ShapeError
from ..storage.store import FeatureStore

__all__ = ["ArraySource", "RowSource", "StoreSource", "check_block"]


def _rows_text(rows: np.ndarray) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:5])
    return shown + (f" and {rows.size - 5} more" if rows.size > 5 else "")


def check_block(block: np.ndarray, rows: np.ndarray, what: str, metric: str) -> None:
    """Refuse non-finite rows, and zero-norm rows under cosine, naming the store rows."""
    bad = ~np.isfinite(block).all(axis=1)
    if bad.any():
        raise NonFiniteError(f"{what} has NaN or Inf in row(s) {_rows_text(rows[bad])}; "
                             "neighbours are undefined there")
    if metric == "cosine":
        zero = ~(block != 0).any(axis=1)
        if zero.any():
            raise LintwinError(f"{what} has all-zero row(s) {_rows_text(rows[zero])}: their cosine to any row is "
                               "undefined; use --metric l2, or drop those rows")


@dataclass(frozen=True)
class RowSource:
    """Base: ``size`` rows of ``dim`` features, read by position in blocks."""

    def size(self) -> int:
        raise NotImplementedError

    def dim(self) -> int:
        raise NotImplementedError

    def store_rows(self) -> np.ndarray:
        raise NotImplementedError

    def label(self) -> str:
        raise NotImplementedError

    def blocks(self, lo: int, hi: int, block_rows: int, metric: str) -> Iterator[tuple[int, np.ndarray]]:
        """``(position, float32 block)`` covering positions ``lo..hi``, each block checked."""
        raise NotImplementedError

    def read(self, lo: int, hi: int, metric: str, block_rows: int = 65536) -> np.ndarray:
        """Positions ``lo..hi`` as one float32 array (filled block by block, no second copy)."""
        out = np.empty((hi - lo, self.dim()), dtype=np.float32)
        for a, x in self.blocks(lo, hi, block_rows, metric):
            out[a - lo:a - lo + x.shape[0]] = x
        return out


@dataclass(frozen=True)
class StoreSource(RowSource):
    """One network's features in one split of a store; ``subset`` (sorted store rows) or every row."""

    path: str
    split: str
    name: str
    subset: tuple[int, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.subset is not None:
            rows = np.asarray(self.subset, dtype=np.int64)
            if rows.size < 1 or (rows.size > 1 and not (np.diff(rows) > 0).all()) or rows[0] < 0:
                raise ShapeError("a subset of rows must be a non-empty, strictly increasing list of row numbers")

    def _store(self) -> FeatureStore:
        return FeatureStore.open(self.path)

    def size(self) -> int:
        return len(self.subset) if self.subset is not None else self._store().rows(self.split)

    def dim(self) -> int:
        return int(self._store().info(self.split, self.name)["dim"])

    def store_rows(self) -> np.ndarray:
        if self.subset is not None:
            return np.asarray(self.subset, dtype=np.int64)
        return np.arange(self.size(), dtype=np.int64)

    def label(self) -> str:
        return f"features of {self.name!r} in split {self.split!r}"

    def blocks(self, lo: int, hi: int, block_rows: int, metric: str) -> Iterator[tuple[int, np.ndarray]]:
        store = self._store()
        if lo >= hi:
            return
        if self.subset is None:
            for start, (x,) in store.iter_blocks(self.split, [self.name], block_rows=block_rows, start=lo, stop=hi):
                check_block(x, np.arange(start, start + x.shape[0]), self.label(), metric)
                yield start, x
            return
        rows = np.asarray(self.subset[lo:hi], dtype=np.int64)
        if rows[-1] >= store.rows(self.split):
            raise ShapeError(f"row {rows[-1]} is beyond the {store.rows(self.split)} rows of split {self.split!r}")
        # Read the store in contiguous blocks over the span of these rows, keep the subset's rows.
        pending: list[np.ndarray] = []
        have, pos = 0, lo
        for start, (x,) in store.iter_blocks(self.split, [self.name], block_rows=max(block_rows, 4096),
                                             start=int(rows[0]), stop=int(rows[-1]) + 1):
            a, b = np.searchsorted(rows, [start, start + x.shape[0]])
            if b > a:
                pick = x[rows[a:b] - start]
                check_block(pick, rows[a:b], self.label(), metric)
                pending.append(pick)
                have += pick.shape[0]
            while have >= block_rows:
                buf = np.concatenate(pending)
                yield pos, buf[:block_rows]
                pos += block_rows
                pending, have = [buf[block_rows:]], have - block_rows
        if have:
            yield pos, np.concatenate(pending)


@dataclass(frozen=True)
class ArraySource(RowSource):
    """Rows of an in-memory array (``rows``: their store row numbers, default 0..n-1)."""

    array: np.ndarray = field(repr=False)
    rows: np.ndarray | None = field(default=None, repr=False)
    what: str = "features"

    def __post_init__(self) -> None:
        if self.array.ndim != 2 or self.array.shape[1] < 1:
            raise ShapeError(f"{self.what} must be a 2-D array of rows, got shape {self.array.shape}")

    def size(self) -> int:
        return int(self.array.shape[0])

    def dim(self) -> int:
        return int(self.array.shape[1])

    def store_rows(self) -> np.ndarray:
        return np.arange(self.size(), dtype=np.int64) if self.rows is None else np.asarray(self.rows, np.int64)

    def label(self) -> str:
        return self.what

    def blocks(self, lo: int, hi: int, block_rows: int, metric: str) -> Iterator[tuple[int, np.ndarray]]:
        rows = self.store_rows()
        for a, b in row_spans(hi, block_rows, lo):
            x = np.ascontiguousarray(self.array[a:b], dtype=np.float32)
            check_block(x, rows[a:b], self.label(), metric)
            yield a, x
