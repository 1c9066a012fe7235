"""Ridge CV scored by the target network's head: held-out top-1 agreement along the ridge path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.driver import BlockSource, run_pass
from ..core.moments import Moments
from ..core.placement import placement
from ..core.xp import to_numpy
from .ridge_cv import fold_weights

__all__ = ["AgreementSink", "agreement_path"]


class AgreementSink:
    """Counts, per λ, held-out rows of one fold where the head agrees on mapped and true target features."""

    def __init__(self, path: Sequence[tuple[np.ndarray, np.ndarray]], head: Any, fold_of_row: np.ndarray,
                 fold: int, reverse: bool):
        self.path, self.head, self.fold_of_row, self.fold = path, head, fold_of_row, fold
        self.x, self.y = (1, 0) if reverse else (0, 1)
        self.hits = np.zeros(len(path), dtype=np.int64)
        self.total = 0

    def update(self, lo: int, blocks: Sequence[Any]) -> None:
        x, y = to_numpy(blocks[self.x]), to_numpy(blocks[self.y])  # the head runs on the host (onnxruntime)
        rows = np.nonzero(self.fold_of_row[lo : lo + len(x)] == self.fold)[0]
        if not len(rows):
            return
        xr, own = x[rows], self.head.predict(y[rows])
        for i, (wt, b) in enumerate(self.path):
            self.hits[i] += int(np.sum(self.head.predict(xr @ wt + b) == own))
        self.total += len(rows)

    def is_finite(self) -> bool:
        return True  # the moments of the same rows refused NaN/Inf already

    def check_finite(self) -> None:
        pass


def agreement_path(source: BlockSource, fold_of_row: np.ndarray, folds: list[Moments], lambdas: Sequence[float],
                   head: Any, *, reverse: bool = False, progress: bool = False) -> np.ndarray:
    """Held-out top-1 agreement of each λ along the ridge path, scored with the target's head.

    ``source`` yields the pair's blocks in the order of the fold moments' names. For every fold,
    the maps W_j(λ) of its training moments predict the fold's own rows, and ``head`` classifies
    both the mapped and the true target features; the fraction that agree, pooled over folds, is
    returned per λ. One pass over the rows per fold.
    """
    hits = np.zeros(len(lambdas))
    total = 0
    for j in range(len(folds)):
        path = [(to_numpy(w).astype(np.float32), to_numpy(b).astype(np.float32))
                for _, w, b in fold_weights(Moments.merged(folds, exclude=j), np.asarray(lambdas), reverse)]
        sink = AgreementSink(path, head, fold_of_row, j, reverse)
        run_pass(source, [sink], placement=placement("cpu"), progress=progress, desc=f"agreement, fold {j + 1}")
        hits += sink.hits
        total += sink.total
    return hits / max(total, 1)
