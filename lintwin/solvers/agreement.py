"""Ridge CV scored by the target network's head: held-out top-1 agreement along the ridge path.

The counts stay where the blocks are (a GPU, any array namespace) and are read once per fold's
pass; the head is any object whose ``predict`` takes features of that namespace (the experiments'
device predictors run affine heads on the device, onnxruntime heads through IO binding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.driver import BlockSource, run_pass
from ..core.moments import Moments
from ..core.placement import Placement, placement
from ..core.xp import device, namespace, to_numpy
from .ridge_cv import fold_weights

__all__ = ["AgreementSink", "agreement_path"]


class AgreementSink:
    """Counts, per λ, held-out rows of one fold where the head agrees on mapped and true target features."""

    def __init__(self, path: Sequence[tuple[np.ndarray, np.ndarray]], head: Any, fold_of_row: np.ndarray,
                 fold: int, reverse: bool):
        self.path, self.head, self.fold_of_row, self.fold = path, head, fold_of_row, fold
        self.x, self.y = (1, 0) if reverse else (0, 1)
        self.counts: Any = None  # per λ, on the blocks' device until :meth:`hits` reads them
        self.total = 0
        self._placed: list[tuple[Any, Any]] | None = None

    def update(self, lo: int, blocks: Sequence[Any]) -> None:
        x, y = blocks[self.x], blocks[self.y]
        rows = np.nonzero(self.fold_of_row[lo : lo + int(x.shape[0])] == self.fold)[0]
        if not len(rows):
            return
        xp = namespace(x)
        idx = xp.asarray(rows, device=device(x))
        xr, own = xp.take(x, idx, axis=0), self.head.predict(xp.take(y, idx, axis=0))
        if self._placed is None:  # the path's weights, placed once
            self._placed = [(xp.asarray(wt, device=device(x)), xp.asarray(b, device=device(x))) for wt, b in self.path]
        counts = xp.stack([xp.sum(xp.astype(self.head.predict(xp.astype(xr, xp.float32) @ wt + b) == own, xp.int64))
                           for wt, b in self._placed])
        self.counts = counts if self.counts is None else self.counts + counts
        self.total += len(rows)

    def hits(self) -> np.ndarray:
        """Agreeing rows per λ (one read of the device)."""
        return np.zeros(len(self.path), np.int64) if self.counts is None else to_numpy(self.counts).astype(np.int64)

    def is_finite(self) -> bool:
        return True  # the moments of the same rows refused NaN/Inf already

    def check_finite(self) -> None:
        pass


def agreement_path(source: BlockSource, fold_of_row: np.ndarray, folds: list[Moments], lambdas: Sequence[float],
                   head: Any, *, reverse: bool = False, progress: bool = False,
                   place: Placement | None = None) -> np.ndarray:
    """Held-out top-1 agreement of each λ along the ridge path, scored with the target's head.

    ``source`` yields the pair's blocks in the order of the fold moments' names. For every fold,
    the maps W_j(λ) of its training moments predict the fold's own rows, and ``head`` classifies
    both the mapped and the true target features; the fraction that agree, pooled over folds, is
    returned per λ. One pass over the rows per fold, on ``place`` (default: the CPU).
    """
    hits = np.zeros(len(lambdas))
    total = 0
    for j in range(len(folds)):
        path = [(to_numpy(w).astype(np.float32), to_numpy(b).astype(np.float32))
                for _, w, b in fold_weights(Moments.merged(folds, exclude=j), np.asarray(lambdas), reverse)]
        sink = AgreementSink(path, head, fold_of_row, j, reverse)
        run_pass(source, [sink], placement=place or placement("cpu"), progress=progress,
                 desc=f"agreement, fold {j + 1}")
        hits += sink.hits()
        total += sink.total
    return hits / max(total, 1)
