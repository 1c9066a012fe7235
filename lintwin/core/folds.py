"""Cross-validation folds over images: which fold each row belongs to.

Rows of one image (its augmented views, ids ``name#vK``, and its positions, ``name#pK`` or
``name#vK#pJ``) always share a fold, so no view or position of a held-out image is ever fitted
on. The driver accumulates one set of moments per fold (:func:`lintwin.core.driver.accumulate_folds`)
in the same single pass; a fold's training moments are the merge of the others, so K-fold CV needs
no further pass.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

from ..errors import LintwinError

__all__ = ["image_folds"]

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
