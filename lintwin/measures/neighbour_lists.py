"""Neighbour lists of a stored array: computed in one process or over Dask workers, saved beside the store and reused.

Saved lists live in ``STORE/.lintwin-neighbours/<split>/<network>.<metric>.npz`` (outside the zarr
hierarchy, like the write locks) with the fingerprint of the features they came from (shape,
sample ids and every chunk's checksum). A saved file is reused only when that fingerprint, the
metric and the rows match and it holds at least k neighbours (the first k of an exact list are
the exact k-list); anything else is computed again. Files are written atomically.

On Dask, each task finds the neighbours of one range of query rows against all rows: a pure
function of (source, k, metric, range), so a lost worker only costs recomputing its range.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..core.files import atomic_write
from ..errors import LintwinError
from ..storage.store import FeatureStore
from .knn_sources import StoreSource
from .topk import Neighbours, exact_knn

__all__ = ["LISTS_DIR", "fingerprint", "knn_dask", "load_lists", "save_lists", "store_lists"]

LISTS_DIR = ".lintwin-neighbours"


def fingerprint(store: FeatureStore, split: str, name: str) -> str:
    """sha256 of what identifies a stored array's values: shape, row identity, chunk checksums."""
    arr = store.features(split, name)
    ident = {"shape": list(arr.shape), "ids": arr.attrs.get("ids_sha256"), "crc": list(arr.attrs["chunk_crc32c"]),
             "chunk": int(arr.chunks[0])}
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()


def _path(store: FeatureStore, split: str, name: str, metric: str) -> Path:
    return store.path / LISTS_DIR / split / f"{name}.{metric}.npz"


def load_lists(store: FeatureStore, split: str, name: str, metric: str, k: int) -> Neighbours | None:
    """Saved exact lists of at least k neighbours for these very features, or None."""
    path = _path(store, split, name, metric)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if (meta.get("fingerprint") != fingerprint(store, split, name) or meta.get("metric") != metric
                    or int(meta.get("k", 0)) < k):
                return None
            nb = Neighbours(z["index"], z["key"], z["kernel"], np.arange(z["index"].shape[0]), metric, 0,
                            int(meta.get("rechecked", 0)))
    except (OSError, ValueError, KeyError):
        return None  # unreadable or foreign: computed again (and replaced when saving)
    return nb.head(k)


def save_lists(store: FeatureStore, split: str, name: str, nb: Neighbours, features: str) -> Path:
    """Write ``nb`` (lists over every row of the split, computed from the features whose fingerprint is
    ``features``) beside the store, atomically; refused when the array has changed since."""
    if fingerprint(store, split, name) != features:
        raise LintwinError(f"features of {name!r} in split {split!r} changed while their neighbours were computed; "
                           "run again")
    path = _path(store, split, name, nb.metric)
    meta = {"fingerprint": features, "metric": nb.metric, "k": nb.k, "rows": len(nb.rows),
            "rechecked": nb.rechecked, "format": "lintwin.neighbours/1"}
    buf = io.BytesIO()
    np.savez(buf, index=nb.index, key=nb.key, kernel=nb.kernel, meta=np.asarray(json.dumps(meta)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, lambda fh: fh.write(buf.getvalue()))
    except OSError as exc:
        raise LintwinError(f"cannot save neighbour lists to {path.parent}: {exc.strerror or exc}") from None


def _range_lists(source: StoreSource, k: int, metric: str, lo: int, hi: int, block_rows: int) -> Neighbours:
    """Runs on a worker: the exact lists of query rows ``lo..hi``."""
    return exact_knn(source, k, metric=metric, query=(lo, hi), block_rows=block_rows)


def knn_dask(client: Any, source: StoreSource, k: int, *, metric: str, block_rows: int = 4096,
             parts: int | None = None) -> Neighbours:
    """:func:`exact_knn` with query rows split into ranges, one task each, over the Dask workers."""
    n = source.size()
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    parts = max(1, min(n, parts or 2 * workers))
    edges = np.linspace(0, n, parts + 1).astype(int)
    # pure=False: a fresh key per call, so a store rewritten between calls is never answered from cache.
    futures = [client.submit(_range_lists, source, k, metric, int(lo), int(hi), block_rows, pure=False)
               for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]
    return Neighbours.concat(client.gather(futures))


def store_lists(store: FeatureStore, split: str, name: str, k: int, *, metric: str, subset: np.ndarray | None = None,
                block_rows: int = 4096, client: Any = None, reuse: bool = True, save: bool = False,
                progress: bool = False) -> tuple[Neighbours, str]:
    """Exact lists of ``name`` in ``split`` (all rows, or the sorted store rows ``subset``) and how they were had."""
    whole = subset is None
    if whole and reuse:
        saved = load_lists(store, split, name, metric, k)
        if saved is not None:
            return saved, "reused"
    before = fingerprint(store, split, name) if whole and save else ""
    source = StoreSource(str(store.path), split, name, None if whole else tuple(int(r) for r in subset))
    if client is not None:
        nb = knn_dask(client, source, k, metric=metric, block_rows=block_rows)
        how = "dask"
    else:
        nb = exact_knn(source, k, metric=metric, block_rows=block_rows, progress=progress)
        how = "computed"
    if whole and save:
        save_lists(store, split, name, nb, before)
    return nb, how
