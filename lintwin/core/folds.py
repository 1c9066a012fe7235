"""Cross-validation folds over images, accumulated in the same single pass as the moments.

Rows of one image (its augmented views, ids ``name#vK``, and its positions, ``name#pK`` or
``name#vK#pJ``) always share a fold, so no view or position of a held-out image is ever fitted
on. One :class:`Moments` per fold is accumulated; a fold's training moments are the merge of
the others, so K-fold CV needs no further pass.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import LintwinError
from ..storage.store import FeatureStore
from .gpu import resolve_device, to_device
from .moments import Moments, locate_nonfinite
from .xp import from_numpy, namespace, row_spans

__all__ = ["accumulate_folds", "accumulate_folds_arrays", "image_folds"]

_VIEW = re.compile(r"(#[vp]\d+)+$")  # view and position suffixes


def image_folds(ids: np.ndarray | None, rows: int, k: int, seed: int = 0) -> np.ndarray:
    """Fold index of each row: images (ids without their ``#vN`` / ``#pN`` suffixes) spread over ``k`` folds."""
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
                     progress: bool = True, kernel: bool = False, block_rows: int | None = None) -> list[Moments]:
    """One streaming pass: the moments of each of ``k`` image folds of ``split`` (``kernel``: with kernel sums)."""
    device = resolve_device(device)
    n = store.rows(split)
    folds = image_folds(store.ids(split), n, k, seed)
    dims = (int(store.info(split, src)["dim"]), int(store.info(split, dst)["dim"]))
    out = [Moments(dims[0], dims[1], (src, dst), precision, kernel=kernel)  # type: ignore[arg-type]
           for _ in range(k)]
    with tqdm(total=n, desc=f"fold moments {split}", unit="rows", unit_scale=True, disable=not progress) as bar:
        for lo, (a, b) in store.iter_blocks(split, [src, dst], block_rows=block_rows):
            _update_folds(out, a, b, folds[lo : lo + len(a)], device)
            bar.update(len(a))
    if not all(m.is_finite() for m in out):
        locate_nonfinite(store.iter_blocks(split, [src, dst]), (src, dst))
        for m in out:
            m.check_finite()
    return out


def accumulate_folds_arrays(a: Any, b: Any, ids: np.ndarray | None, *, k: int = 5,
                            names: tuple[str, str] = ("A", "B"), precision: str = "float32",
                            seed: int = 0) -> list[Moments]:
    """:func:`accumulate_folds` for paired features in memory, any namespace (``ids`` give the images)."""
    n = int(a.shape[0])
    folds = image_folds(ids, n, k, seed)
    xp = namespace(a, b)
    out = [Moments(int(a.shape[1]), int(b.shape[1]), names, precision) for _ in range(k)]  # type: ignore[arg-type]
    for j, m in enumerate(out):
        rows = from_numpy(np.nonzero(folds == j)[0], a)
        m.update(xp.take(a, rows, axis=0), xp.take(b, rows, axis=0))
    if not all(m.is_finite() for m in out):
        locate_nonfinite(((lo, (a[lo:hi, ...], b[lo:hi, ...])) for lo, hi in row_spans(n, 8192)), names)
        for m in out:
            m.check_finite()
    return out


def _update_folds(out: list[Moments], a: np.ndarray, b: np.ndarray, fold: np.ndarray, device: str) -> None:
    for j, m in enumerate(out):
        rows = np.nonzero(fold == j)[0]
        if len(rows):
            m.update(to_device(a[rows], device), to_device(b[rows], device))
