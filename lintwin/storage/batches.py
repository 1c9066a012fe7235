"""Random training batches for Adam, from arrays in memory or from a store chunk window."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.placement import Placement, placement
from ..core.xp import from_numpy, namespace
from .store import FeatureStore

__all__ = ["ArrayBatches", "StoreBatches"]


class ArrayBatches:
    """Batches of paired rows drawn without replacement, epoch by epoch, from arrays."""

    def __init__(self, x: Any, y: Any, batch: int, seed: int = 0):
        self.x, self.y = x, y
        self.xp = namespace(x, y)
        self.n = int(x.shape[0])
        self.batch = min(batch, self.n)
        self.rng = np.random.default_rng(seed)
        self._order = np.empty(0, dtype=np.int64)

    def __call__(self) -> tuple[Any, Any]:
        if self._order.size < self.batch:
            self._order = np.concatenate([self._order, self.rng.permutation(self.n)])
        idx, self._order = self._order[: self.batch], self._order[self.batch :]
        idx = from_numpy(idx, self.x)
        return self.xp.take(self.x, idx, axis=0), self.xp.take(self.y, idx, axis=0)


class StoreBatches:
    """Batches from a store that need not fit in memory.

    When the split has at most ``window_rows`` rows it is loaded once. Otherwise a
    window of randomly chosen chunks (about ``window_rows`` rows) is loaded, one epoch of
    batches is drawn from it, and the next random window replaces it.
    """

    def __init__(self, store: FeatureStore, split: str, src: str, dst: str, *, batch: int,
                 place: Placement | None = None, seed: int = 0, window_rows: int = 1 << 20):
        self.xs, self.ys = store.features(split, src), store.features(split, dst)
        self.n = store.rows(split)
        self.batch, self.window_rows = batch, window_rows
        self.placement = place or placement("cpu")
        self.rng = np.random.default_rng(seed)
        self.chunk = int(self.xs.chunks[0])
        self._inner: ArrayBatches | None = None
        self._left = 0
        if self.n <= window_rows:
            self._inner = self._load(np.arange(0, self.n, self.chunk))
            self._left = -1  # never refresh

    def _load(self, starts: np.ndarray) -> ArrayBatches:
        spans = [(int(s), min(int(s) + self.chunk, self.n)) for s in np.sort(starts)]
        x = np.concatenate([np.asarray(self.xs[a:b]) for a, b in spans])
        y = np.concatenate([np.asarray(self.ys[a:b]) for a, b in spans])
        seed = int(self.rng.integers(2**31))
        return ArrayBatches(self.placement.put(x), self.placement.put(y), self.batch, seed)

    def __call__(self) -> tuple[Any, Any]:
        if self._left == 0:
            n_chunks = -(-self.n // self.chunk)
            take = max(1, min(n_chunks, self.window_rows // self.chunk))
            starts = self.rng.choice(n_chunks, size=take, replace=False) * self.chunk
            self._inner = self._load(starts)
            self._left = max(1, self._inner.n // self._inner.batch)
        if self._left > 0:
            self._left -= 1
        assert self._inner is not None
        return self._inner()
