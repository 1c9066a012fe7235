"""Cross-validation folds over images, accumulated in the same single pass as the moments.

Rows of one image (its augmented views, ids ``name#vK``) always share a fold, so no view of
a held-out image is ever fitted on. One :class:`Moments` per fold is accumulated; a fold's
training moments are the merge of the others, so K-fold CV needs no further pass.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ._gpu import resolve_device, to_device
from ._xp import row_spans, to_numpy
from .errors import LintwinError
from .moments import Moments
from .store import FeatureStore

__all__ = ["accumulate_folds", "accumulate_folds_arrays", "agreement_path", "image_folds", "training_moments"]

_VIEW = re.compile(r"#v\d+$")


def image_folds(ids: np.ndarray | None, rows: int, k: int, seed: int = 0) -> np.ndarray:
    """Fold index of each row: images (ids without their ``#vN`` view suffix) spread over ``k`` folds."""
    if k < 2:
        raise LintwinError(f"cross-validation needs at least 2 folds, got {k}")
    if ids is None:  # no ids: every row is its own image
        keys = np.arange(rows)
    else:
        _, keys = np.unique([_VIEW.sub("", str(i)) for i in ids], return_inverse=True)
    n_images = int(keys.max()) + 1 if rows else 0
    if n_images < k:
        raise LintwinError(f"{n_images} distinct images cannot fill {k} folds")
    order = np.random.default_rng(zlib.crc32(b"lintwin-folds") + seed).permutation(n_images)
    fold_of_image = np.empty(n_images, dtype=np.int64)
    fold_of_image[order] = np.arange(n_images) % k
    return fold_of_image[keys]


def accumulate_folds(store: FeatureStore, src: str, dst: str, *, k: int = 5, split: str = "train",
                     precision: str = "float32", device: str = "auto", seed: int = 0,
                     progress: bool = True) -> list[Moments]:
    """One streaming pass: the moments of each of ``k`` image folds of ``split``."""
    device = resolve_device(device)
    n = store.rows(split)
    folds = image_folds(store.ids(split), n, k, seed)
    dims = (int(store.info(split, src)["dim"]), int(store.info(split, dst)["dim"]))
    out = [Moments(dims[0], dims[1], (src, dst), precision) for _ in range(k)]  # type: ignore[arg-type]
    with tqdm(total=n, desc=f"fold moments {split}", unit="rows", unit_scale=True, disable=not progress) as bar:
        for lo, (a, b) in store.iter_blocks(split, [src, dst]):
            _update_folds(out, a, b, folds[lo : lo + len(a)], lo, device)
            bar.update(len(a))
    return out


def accumulate_folds_arrays(a: np.ndarray, b: np.ndarray, ids: np.ndarray | None, *, k: int = 5,
                            names: tuple[str, str] = ("A", "B"), precision: str = "float32",
                            seed: int = 0) -> list[Moments]:
    """:func:`accumulate_folds` for paired NumPy features in memory (``ids`` give the images)."""
    folds = image_folds(ids, len(a), k, seed)
    out = [Moments(a.shape[1], b.shape[1], names, precision) for _ in range(k)]  # type: ignore[arg-type]
    for lo, hi in row_spans(len(a), 8192):
        _update_folds(out, a[lo:hi], b[lo:hi], folds[lo:hi], lo, "cpu")
    return out


def _update_folds(out: list[Moments], a: np.ndarray, b: np.ndarray, fold: np.ndarray, lo: int, device: str) -> None:
    for j, m in enumerate(out):
        rows = np.nonzero(fold == j)[0]
        if len(rows):
            m.update(to_device(a[rows], device), to_device(b[rows], device), row_offset=lo)


def training_moments(folds: list[Moments], held_out: int | None) -> Moments:
    """Moments of every fold but ``held_out`` (all of them for None), merged, not recomputed."""
    first = folds[0]
    m = Moments(first.dim_a, first.dim_b, first.names, first.precision)
    for j, f in enumerate(folds):
        if j != held_out:
            m.merge(f)
    return m


def agreement_path(store: FeatureStore, src: str, dst: str, folds: list[Moments], lambdas: Sequence[float],
                   head: Any, *, split: str = "train", reverse: bool = False, seed: int = 0) -> np.ndarray:
    """Held-out top-1 agreement of each λ along the ridge path, scored with the target's head.

    For every fold, the maps W_j(λ) of its training moments predict the fold's own rows, and
    ``head`` classifies both the mapped and the true target features; the fraction that
    agree, pooled over folds, is returned per λ. One pass over the split per fold.
    """
    from .solvers.ridge_cv import fold_weights

    x_name, y_name = (dst, src) if reverse else (src, dst)
    fold_of_row = image_folds(store.ids(split), store.rows(split), len(folds), seed)
    hits = np.zeros(len(lambdas))
    total = 0
    for j in range(len(folds)):
        path = [(to_numpy(w).astype(np.float32), to_numpy(b).astype(np.float32))
                for _, w, b in fold_weights(training_moments(folds, j), np.asarray(lambdas), reverse)]
        for lo, (x, y) in store.iter_blocks(split, [x_name, y_name]):
            rows = np.nonzero(fold_of_row[lo : lo + len(x)] == j)[0]
            if not len(rows):
                continue
            xr, own = x[rows], head.predict(y[rows])
            for i, (wt, b) in enumerate(path):
                hits[i] += int(np.sum(head.predict(xr @ wt + b) == own))
            total += len(rows)
    return hits / max(total, 1)
