"""Ridge CV scored by the target network's head: held-out top-1 agreement along the ridge path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.folds import image_folds
from ..core.moments import Moments
from ..core.xp import to_numpy
from ..storage.store import FeatureStore
from .ridge_cv import fold_weights

__all__ = ["agreement_path"]


def agreement_path(store: FeatureStore, src: str, dst: str, folds: list[Moments], lambdas: Sequence[float],
                   head: Any, *, split: str = "train", reverse: bool = False, seed: int = 0) -> np.ndarray:
    """Held-out top-1 agreement of each λ along the ridge path, scored with the target's head.

    For every fold, the maps W_j(λ) of its training moments predict the fold's own rows, and
    ``head`` classifies both the mapped and the true target features; the fraction that
    agree, pooled over folds, is returned per λ. One pass over the split per fold.
    """
    x_name, y_name = (dst, src) if reverse else (src, dst)
    fold_of_row = image_folds(store.ids(split), store.rows(split), len(folds), seed)
    hits = np.zeros(len(lambdas))
    total = 0
    for j in range(len(folds)):
        path = [(to_numpy(w).astype(np.float32), to_numpy(b).astype(np.float32))
                for _, w, b in fold_weights(Moments.merged(folds, exclude=j), np.asarray(lambdas), reverse)]
        for lo, (x, y) in store.iter_blocks(split, [x_name, y_name]):
            rows = np.nonzero(fold_of_row[lo : lo + len(x)] == j)[0]
            if not len(rows):
                continue
            xr, own = x[rows], head.predict(y[rows])
            for i, (wt, b) in enumerate(path):
                hits[i] += int(np.sum(head.predict(xr @ wt + b) == own))
            total += len(rows)
    return hits / max(total, 1)
