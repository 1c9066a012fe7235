"""Bring features computed elsewhere (``.npy`` / ``.npz``) into a feature store."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._xp import row_spans
from .errors import LintwinError, ShapeError, StoreError
from .moments import check_finite
from .store import FeatureStore, default_chunk_rows

__all__ = ["import_features", "load_array"]


def load_array(path: str | Path, key: str | None = None) -> np.ndarray:
    """Load one array from ``.npy`` (memory-mapped) or ``.npz`` (by ``key``), never unpickling."""
    path = Path(path)
    if not path.is_file():
        raise LintwinError(f"no such file: {path}")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if key is None:
                    if len(z.files) != 1:
                        raise LintwinError(f"{path} holds arrays {z.files}; choose one with --key")
                    key = z.files[0]
                if key not in z.files:
                    raise LintwinError(f"{path} has no array {key!r} (it has {', '.join(z.files)})")
                return z[key]
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "object" in str(exc).lower() or "pickle" in str(exc).lower():
            raise LintwinError(f"cannot read {path}: it holds Python objects, and lintwin never unpickles data") from None
        raise LintwinError(f"cannot read {path}: {exc}") from None
    except OSError as exc:
        raise LintwinError(f"{path} is not a .npy/.npz file ({exc})") from None


def import_features(store_path: str | Path, file: str | Path, *, name: str, split: str = "train",
                    key: str | None = None, labels: str | Path | None = None, labels_key: str | None = None,
                    chunk_rows: int | None = None, overwrite: bool = False) -> FeatureStore:
    """Copy a (rows x dim) feature array into ``store_path`` as network ``name`` of ``split``.

    ``labels`` is a file with integer labels, or, for an ``.npz`` features file, may be
    omitted and found under ``labels_key`` in the same file. Rows are checked for NaN/Inf
    while they are written; on any error the partly written array is removed again.
    """
    feats = load_array(file, key)
    if feats.ndim != 2:
        raise ShapeError(f"features in {file} must be 2-D (rows x dim), got shape {feats.shape}")
    if feats.shape[0] == 0:
        raise ShapeError(f"{file} holds zero rows")
    if not np.issubdtype(feats.dtype, np.number):
        raise ShapeError(f"features in {file} must be numeric, got dtype {feats.dtype}")
    lab = None
    if labels is not None or labels_key is not None:
        lab = load_array(labels if labels is not None else file, labels_key)
        if lab.ndim != 1 or lab.shape[0] != feats.shape[0]:
            raise ShapeError(f"labels must be 1-D with {feats.shape[0]} entries, got shape {lab.shape}")
    store = FeatureStore.create(store_path)
    if store.has(split, name) and not overwrite:
        raise StoreError(f"split {split!r} of {store.path} already holds features of {name!r}; "
                         "pass --overwrite to replace them")
    rows, dim = feats.shape
    arr = store.open_features_for_write(split, name, rows=rows, dim=dim, chunk_rows=chunk_rows,
                                        source=str(Path(file).resolve()), overwrite=True)
    step = chunk_rows or default_chunk_rows(dim)
    try:
        for lo, hi in row_spans(rows, step):
            block = np.ascontiguousarray(feats[lo:hi], dtype=np.float32)
            check_finite(block, name, lo)
            FeatureStore.write_rows(arr, lo, block)
        if lab is not None:
            store.set_labels(split, lab)
    except LintwinError:
        del store.group[split]["features"][name]
        raise
    return store
