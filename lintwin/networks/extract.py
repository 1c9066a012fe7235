"""Images -> backbone features -> feature store, chunk by chunk, resumable, never spliced.

Rows are image-major (all views of image 0, then image 1, ...). Each store chunk is
computed in the same backbone batches whether a run starts fresh or resumes, and views are
augmented with a generator seeded by (seed, image, view), so a run that is killed and
started again ends with the same bytes as one that never stopped. Worker processes decode
each photo once for all its views and preprocess it while the backbone runs.

Everything is checked before the store is touched: the images, the sidecar, and the
backbone and head against the sidecar (the backbone runs once on the first image). What
produced an array (model hashes, preprocessing, augmentation and seed, a hash of the image
list) is recorded with it, and a resume with anything different is refused.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..core.moments import check_finite
from ..core.xp import row_spans
from ..errors import LintwinError, ShapeError, StoreError
from ..storage.layout import check_name, default_chunk_rows
from ..storage.store import FeatureStore
from .images import ImageSet, decode_image
from .onnx_models import Backbone, Head, NetworkSpec
from .preprocess import Augment, Preprocess

__all__ = ["ExtractSummary", "default_workers", "extract_features"]


@dataclass
class ExtractSummary:
    name: str
    split: str
    rows: int
    dim: int
    resumed_from: int
    skipped: list[str] = field(default_factory=list)


def default_workers() -> int:
    """Decoding processes by default: one per core but one (the backbone's), at least 1, at most 8.

    Measured on 2 cores (bench/bench_extract.py): a second decoding process only takes CPU from
    the backbone, so there the default is one decoding thread.
    """
    return max(1, min((os.cpu_count() or 1) - 1, 8))


# -- work done in the decoding processes (top-level functions, so spawn can import them) --
@dataclass(frozen=True)
class _Batch:
    """One backbone batch: for each image its source and the views ``[v0, v1)`` it contributes."""

    items: list[tuple[int, Any, int, int]]
    preprocess: Preprocess
    augment: Augment | None
    seed: int


def _prepare(batch: _Batch) -> np.ndarray:
    """Decode each image once and make its views (uint8 N x h x w x C), in row order."""
    out = []
    for img, src, v0, v1 in batch.items:
        pixels = decode_image(src) if isinstance(src, Path) else src
        for view in range(v0, v1):
            plain = batch.augment is None or (batch.augment.centre_view and view == 0)
            rng = None if plain else np.random.default_rng([batch.seed, img, view])
            out.append(batch.preprocess.pixels(pixels, rng, batch.augment))
    return np.stack(out)


def _ordered(pool: Executor, batches: Iterator[_Batch], ahead: int) -> Iterator[np.ndarray]:
    """``_prepare`` over ``batches`` in order, keeping ``ahead`` batches in flight in ``pool``."""
    pending: deque = deque()
    for b in batches:
        pending.append(pool.submit(_prepare, b))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# -- provenance ------------------------------------------------------------------------
def _provenance(spec: NetworkSpec, backbone_sha: str, head_sha: str, images: ImageSet, views: int,
                augment: Augment | None, seed: int) -> dict[str, Any]:
    return {"backbone_sha256": backbone_sha, "head_sha256": head_sha, "preprocess": spec.preprocess.as_dict(),
            "views": views, "augment": None if augment is None else {**augment.as_dict(), "seed": seed},
            "images_sha256": images.sha256(), "images": len(images)}


def _differences(old: Any, new: dict[str, Any]) -> list[str]:
    if not isinstance(old, dict):
        return ["it was written by an older lintwin or another tool"]
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{key}.{d}" for d in _differences(a, b)]
        elif a != b:
            diffs.append(f"{key} {_short(a)} → {_short(b)}")
    return diffs


def _short(v: Any) -> str:
    return f"{v[:12]}…" if isinstance(v, str) and len(v) == 64 else json.dumps(v)


def _check_model(spec: NetworkSpec, backbone: Backbone, images: ImageSet) -> str:
    """Backbone and head against the sidecar, before anything is written; returns the head's sha256."""
    backbone.check(spec, spec.preprocess(images.load(0)))
    if not spec.head_path.is_file():
        raise LintwinError(f"the sidecar names head {spec.head_file}, which is not at {spec.head_path}")
    head = Head(spec.head_path)
    head.check(spec)
    if head.sha256 == backbone.sha256:
        raise LintwinError(f"{backbone.path.name} is the head's file, not a backbone")
    return head.sha256


def _prepare_split(store_path: Path, split: str, name: str, rows: int, provenance: dict[str, Any],
                   ids: list[str], labels: np.ndarray, overwrite: bool) -> tuple[bool, bool]:
    """Decide, before writing, whether to replace the array and the split's labels and ids.

    Returns ``(replace_array, replace_index)``. An array or index that holds no written rows
    (left by a run killed while creating them) is replaced freely; anything else needs
    matching provenance, or ``overwrite`` for this network's own array.
    """
    if not store_path.exists() or (store_path.is_dir() and not any(store_path.iterdir())):
        return False, False
    store = FeatureStore.open(store_path)
    if split not in store.splits():
        return False, False
    nets = store.networks(split)
    info = {n: store.info(split, n) for n in nets}
    written = {n: int(info[n].get("rows_written") or 0) for n in nets}
    replace_array = False
    if name in nets:
        old = info[name]
        same = old.get("provenance") == provenance and old.get("rows") == rows
        if not same and written[name] > 0 and not overwrite:
            why = "; ".join(_differences(old.get("provenance"), provenance)) or "its shape differs"
            raise StoreError(f"split {split!r} already holds {written[name]} rows of {name!r} made differently "
                             f"({why}); pass --overwrite to replace them")
        replace_array = not same
    busy = [n for n in nets if n != name and written[n] > 0]
    readable, old_ids, old_labels = _index(store, split, busy)
    same_index = readable and ((old_ids is None or old_ids.tolist() == ids)
                               and (old_labels is None or np.any(labels < 0) or np.array_equal(old_labels, labels)))
    if not same_index and busy:
        first = next((i for i, (a, b) in enumerate(zip(old_ids.tolist(), ids)) if a != b), None) \
            if old_ids is not None else None
        where = f" (row {first}: {str(old_ids[first])!r} there, {ids[first]!r} here)" if first is not None else ""
        raise StoreError(f"split {split!r} holds features of {', '.join(busy)} for other images or labels{where}; "
                         "features are paired row by row: extract into another split or store")
    stale = [n for n in nets if n != name and written[n] == 0 and info[n].get("rows") != rows]
    if stale:
        raise StoreError(f"split {split!r} holds empty arrays of {', '.join(stale)} for another image count; "
                         f"rerun their extraction with --overwrite or use another split")
    return replace_array, not same_index


def _index(store: FeatureStore, split: str, busy: list[str]) -> tuple[bool, np.ndarray | None, np.ndarray | None]:
    """``(readable, ids, labels)`` of the split; an unreadable index no written features use is rewritten."""
    try:
        return True, store.ids(split), store.labels(split)
    except StoreError:
        if busy:
            raise
        return False, None, None


def extract_features(backbone_path: str | Path, images: ImageSet, store_path: str | Path, *, split: str,
                     name: str | None = None, views: int = 1, augment: bool | Augment = False, seed: int = 0,
                     batch: int = 64, sidecar: str | Path | None = None, chunk_rows: int | None = None,
                     workers: int | None = None, overwrite: bool = False, progress: bool = True) -> ExtractSummary:
    """Run the ONNX backbone over ``images`` (``views`` per image) into ``store_path``.

    Without ``augment`` every view would be identical, so ``views`` must then be 1.
    Labels and ids are stored with the split; a second network extracted into the same
    split must see the same images in the same order. ``workers`` processes decode and
    preprocess (default :func:`default_workers`; 1 = a thread of this process); the bytes written
    do not depend on it. ``overwrite`` replaces this network's array in the split.
    """
    store_path = Path(store_path)
    check_name(split, "split")
    if name is not None:
        check_name(name)
    if len(images) == 0:
        raise ShapeError(f"no usable images in {images.description}")
    aug = Augment() if augment is True else (augment or None)
    if views < 1 or (views > 1 and aug is None):
        raise LintwinError("views > 1 needs augment (unaugmented views would be identical)")
    if batch < 1:
        raise LintwinError(f"batch must be at least 1, got {batch}")
    spec = NetworkSpec.for_model(backbone_path, sidecar)
    name = check_name(name or spec.name)
    net = Backbone(backbone_path)
    head_sha = _check_model(spec, net, images)
    rows = len(images) * views
    ids = [f"{i}#v{v}" if views > 1 else i for i in images.ids for v in range(views)]
    labels = np.repeat(images.labels, views)
    prov = _provenance(spec, net.sha256, head_sha, images, views, aug, seed)
    replace_array, replace_index = _prepare_split(store_path, split, name, rows, prov, ids, labels, overwrite)
    chunk = chunk_rows or default_chunk_rows(spec.feature_dim)
    chunk = -(-chunk // views) * views  # whole images per chunk: each photo decoded once, resumes between images

    if store_path.is_dir() and not any(store_path.iterdir()):
        store_path.rmdir()  # an empty folder: left by a run killed as it created the store (holds nothing)
    store = FeatureStore.create(store_path)
    try:
        store.check_writable(split, [name], index=True)  # so nothing is removed before a refusal
        _clear(store, split, name if replace_array else None, replace_index)
        arr = store.open_features_for_write(
            split, name, rows=rows, dim=spec.feature_dim, chunk_rows=chunk, model_sha256=net.sha256,
            source=json.dumps(prov, sort_keys=True), overwrite=replace_array, ids=ids,
            extra_attrs={"provenance": prov, "backbone_sha256": net.sha256, "head_sha256": head_sha})
        if np.all(labels >= 0):  # an unlabelled pool (-1) stores no labels
            store.set_labels(split, labels)
        start = FeatureStore.rows_written(arr)
        _run(arr, spec, net, images, name, split, views, aug, seed, batch, workers, progress)
    finally:
        store.close()
    return ExtractSummary(name, split, rows, spec.feature_dim, start, list(images.skipped))


def _run(arr: Any, spec: NetworkSpec, net: Backbone, images: ImageSet, name: str, split: str, views: int,
         aug: Augment | None, seed: int, batch: int, workers: int | None, progress: bool) -> None:
    """Compute and write the rows from ``rows_written`` on, chunk by chunk."""
    rows = int(arr.shape[0])
    start = FeatureStore.rows_written(arr)
    chunk = int(arr.chunks[0])
    batch = -(-batch // views) * views  # whole images per backbone call: each photo decoded once for its views
    spans = [(lo, hi, b_lo, b_hi) for lo, hi in row_spans(rows, chunk, start) for b_lo, b_hi in row_spans(hi, batch, lo)]

    def batches() -> Iterator[_Batch]:
        for _, _, b_lo, b_hi in spans:
            items = []
            for img in range(b_lo // views, (b_hi - 1) // views + 1):
                v0, v1 = max(b_lo, img * views) - img * views, min(b_hi, (img + 1) * views) - img * views
                items.append((img, images.source(img), v0, v1))
            yield _Batch(items, spec.preprocess, aug, seed)

    workers = default_workers() if workers is None else workers
    # one worker: a thread of this process (Pillow and onnxruntime release the GIL), no copies between processes
    pool: Executor = (ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) if workers > 1
                      else ThreadPoolExecutor(max_workers=1))
    try:
        with tqdm(total=rows, initial=start, desc=f"extract {name} {split}", unit="img",
                  disable=not progress) as bar:
            pixels = _ordered(pool, batches(), ahead=2 * workers + 2)
            feats: np.ndarray | None = None
            for (lo, hi, b_lo, b_hi), x in zip(spans, pixels, strict=True):
                if b_lo == lo:
                    feats = np.empty((hi - lo, spec.feature_dim), np.float32)
                assert feats is not None
                out = net(spec.preprocess.normalize(x))
                if out.shape != (b_hi - b_lo, spec.feature_dim):
                    raise ShapeError(f"{net.path.name} gave features of shape {out.shape} for "
                                     f"{b_hi - b_lo} images; its sidecar says {spec.feature_dim} per image")
                feats[b_lo - lo : b_hi - lo] = out
                bar.update(b_hi - b_lo)
                if b_hi == hi:
                    check_finite(feats, name, lo, xp=np)
                    FeatureStore.write_rows(arr, lo, feats)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _clear(store: FeatureStore, split: str, name: str | None, index: bool) -> None:
    """Remove what is being replaced: ``name``'s array (empty, or ``--overwrite``) and an index no features use.

    ``_prepare_split`` decided both; an empty array or index was left by a killed run and holds
    nothing, and a written array is removed only when the user asked to overwrite it.
    """
    store.remove(split, network=name, index=index)