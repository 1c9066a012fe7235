"""Images -> backbone features (or any layers of a model) -> feature store, chunk by chunk, resumable, never spliced.

:func:`extract_features` stores a backbone's output; :func:`extract_layers` stores any tensors of
a model, one array per layer, pooled as :mod:`lintwin.networks.pooling` says, from one forward
pass per batch (every requested tensor an extra output of the model).

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
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
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
from .layers import Layer, read_model
from .onnx_models import Backbone, Head, ModelSpec, NetworkSpec, file_sha256
from .pooling import check_pooling, pool_rows, position_ids, recorded_pooling, row_width, rows_per_sample
from .preprocess import Augment, Preprocess
from .taps import Taps

__all__ = ["ExtractSummary", "LayerArray", "LayersSummary", "default_workers", "extract_features", "extract_layers",
           "layer_array_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


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
    aug = _check_run(split, name, images, views, augment, batch)
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

        def forward(x: np.ndarray) -> list[np.ndarray]:
            out = net(x)
            if out.shape != (x.shape[0], spec.feature_dim):
                raise ShapeError(f"{net.path.name} gave features of shape {out.shape} for "
                                 f"{x.shape[0]} images; its sidecar says {spec.feature_dim} per image")
            return [out]

        _stream([arr], [name], 1, forward, spec.preprocess, images, f"extract {name} {split}", views, aug, seed,
                batch, workers, progress)
    finally:
        store.close()
    return ExtractSummary(name, split, rows, spec.feature_dim, start, list(images.skipped))


@dataclass
class LayerArray:
    """One stored layer array: its name in the store and what it holds."""

    array: str
    layer: Layer
    pooling: str
    dim: int


@dataclass
class LayersSummary:
    network: str
    split: str
    images: int
    rows: int
    arrays: list[LayerArray]
    resumed_from: int
    skipped: list[str] = field(default_factory=list)


def layer_array_name(network: str, tensor: str) -> str:
    """The store name of ``network``'s layer ``tensor``: ``NETWORK+TENSOR`` with the tensor name made storable.

    A leading ``/`` and a trailing ``_output_0`` (the names PyTorch's exporter gives) are dropped and
    every run of other characters than letters, digits, ``.``, ``_`` and ``-`` becomes one ``.``,
    e.g. ``/body/body.4/relu/Relu_output_0`` → ``NETWORK+body.body.4.relu.Relu``.
    """
    slug = _UNSAFE.sub(".", tensor.lstrip("/").removesuffix("_output_0")).strip(".") or "tensor"
    return check_name(f"{network}+{slug}", "layer array")


def _layer_attrs(name: str, layer: Layer, pooling: str, per_sample: int) -> dict[str, Any]:
    """What the array records of its layer (listed by ``lintwin info``; used to compare and stitch layers)."""
    return {"network": name, "tensor": layer.name, "op": layer.op, "node": layer.node, "shape": ["N", *layer.shape],
            "kind": layer.kind, "channels": layer.channels, "grid": None if layer.grid is None else list(layer.grid),
            "pooling": pooling, "rows_per_image": per_sample}


def _rows_kind(info: dict[str, Any]) -> str:
    layer = info.get("layer") if isinstance(info.get("layer"), dict) else {}
    if layer.get("pooling") == "positions":
        return f"one row per image and position of a {' x '.join(map(str, layer.get('grid') or []))} grid"
    return "one row per image"


def _check_rows_kind(store_path: Path, split: str, arrays: list[str], pool: str, layer: Layer) -> None:
    """Refuse rows of another kind than the split holds (per image, or per position of another grid), naming both."""
    if not (store_path / "zarr.json").is_file():
        return
    store = FeatureStore.open(store_path)
    if split not in store.splits():
        return
    others = [n for n in store.networks(split) if n not in arrays]
    if not others:
        return
    ours = _rows_kind({"layer": {"pooling": pool, "grid": list(layer.grid or ())}})
    theirs = {n: _rows_kind(store.info(split, n)) for n in others}
    differ = [n for n, kind in theirs.items() if kind != ours]
    if differ:
        raise ShapeError(f"split {split!r} holds {theirs[differ[0]]} ({', '.join(differ[:3])}); {layer.name} with "
                         f"--pool {pool} gives {ours}: rows of a split are paired, so extract it into another split")


def extract_layers(model_path: str | Path, images: ImageSet, store_path: str | Path, *, split: str,
                   layers: Sequence[str], pool: str = "avg", name: str | None = None, views: int = 1,
                   augment: bool | Augment = False, seed: int = 0, batch: int = 64,
                   sidecar: str | Path | None = None, chunk_rows: int | None = None, workers: int | None = None,
                   overwrite: bool = False, progress: bool = True) -> LayersSummary:
    """Store the tensors ``layers`` of the ONNX model at ``model_path`` for ``images``, one array per layer.

    One forward pass per batch gives every requested tensor (each an extra output of the model).
    ``pool`` is ``avg``, ``positions``, ``cls`` or ``flatten`` (:mod:`lintwin.networks.pooling`);
    with ``positions`` every layer must have the same grid, since rows of one split are paired.
    Arrays are named by :func:`layer_array_name` and record the layer (tensor, op, shape, kind,
    channels, grid, pooling) and what produced them; like :func:`extract_features` the run is
    checked before the store is touched, resumable, and never spliced.
    """
    store_path = Path(store_path)
    model_path = Path(model_path)
    aug = _check_run(split, name, images, views, augment, batch)
    spec = ModelSpec.for_model(model_path, sidecar)
    name = check_name(name or spec.name)
    if not layers:
        raise LintwinError("no layers asked for: give tensor names (`lintwin layers MODEL` lists them)")
    if len(set(layers)) != len(layers):
        twice = sorted({t for t in layers if list(layers).count(t) > 1})
        raise LintwinError(f"a layer is asked for twice: {', '.join(twice)}")
    graph = read_model(model_path, spec.preprocess)
    chosen = [graph.layer(t) for t in layers]
    for la in chosen:
        check_pooling(la, pool)
    if pool == "positions":
        grids = {la.grid for la in chosen}
        if len(grids) > 1:
            detail = ", ".join(f"{la.name}: {' x '.join(map(str, la.grid or ()))}" for la in chosen)
            raise ShapeError(f"per-position rows of layers with different grids cannot share a split ({detail}): "
                             "rows are paired position by position, so extract each grid into its own split")
    arrays = [layer_array_name(name, la.name) for la in chosen]
    clash = sorted({a for a in arrays if arrays.count(a) > 1})
    if clash:
        raise LintwinError(f"layers {', '.join(la.name for la, a in zip(chosen, arrays) if a in clash)} would be "
                           f"stored under the same name {clash[0]}; extract them in separate runs with other --name")
    per_sample = rows_per_sample(chosen[0], pool)
    _check_rows_kind(store_path, split, arrays, pool, chosen[0])
    taps = Taps(graph.model, [la.name for la in chosen], model_path.name)
    first = taps(spec.preprocess(images.load(0))[None])
    for la, out in zip(chosen, first, strict=True):  # the size on a real image, against the inferred/probed one
        pool_rows(out, la, pool)

    rows = len(images) * views * per_sample
    samples = [f"{i}#v{v}" if views > 1 else i for i in images.ids for v in range(views)]
    ids = position_ids(samples, per_sample) if pool == "positions" else samples
    labels = np.repeat(images.labels, views * per_sample)
    model_sha = file_sha256(model_path)
    base = {"model_sha256": model_sha, "preprocess": spec.preprocess.as_dict(), "views": views,
            "augment": None if aug is None else {**aug.as_dict(), "seed": seed},
            "images_sha256": images.sha256(), "images": len(images)}
    provs = [{**base, "layer": la.name, "pooling": pool} for la in chosen]
    decisions = [_prepare_split(store_path, split, a, rows, prov, ids, labels, overwrite)
                 for a, prov in zip(arrays, provs, strict=True)]
    dims = [row_width(la, pool) for la in chosen]
    chunk = chunk_rows or default_chunk_rows(max(dims))
    unit = views * per_sample
    chunk = -(-chunk // unit) * unit  # whole images per chunk: each photo decoded once, resumes between images

    if store_path.is_dir() and not any(store_path.iterdir()):
        store_path.rmdir()  # an empty folder: left by a run killed as it created the store (holds nothing)
    store = FeatureStore.create(store_path)
    try:
        store.check_writable(split, arrays, index=True)  # so nothing is removed before a refusal
        replace_index = any(index for _, index in decisions)
        for a, (replace, _) in zip(arrays, decisions, strict=True):
            _clear(store, split, a if replace else None, False)
        if replace_index:
            _clear(store, split, None, True)
        opened = []
        for a, la, prov, dim, (replace, _) in zip(arrays, chosen, provs, dims, decisions, strict=True):
            opened.append(store.open_features_for_write(
                split, a, rows=rows, dim=dim, chunk_rows=chunk, model_sha256=model_sha,
                source=json.dumps(prov, sort_keys=True), overwrite=replace, ids=ids,
                extra_attrs={"provenance": prov, "layer": _layer_attrs(name, la, recorded_pooling(la, pool),
                                                                         per_sample)}))
        if np.all(labels >= 0):  # an unlabelled pool (-1) stores no labels
            store.set_labels(split, labels)
        start = min(FeatureStore.rows_written(a) for a in opened)

        def forward(x: np.ndarray) -> list[np.ndarray]:
            return [pool_rows(out, la, pool) for out, la in zip(taps(x), chosen, strict=True)]

        _stream(opened, arrays, per_sample, forward, spec.preprocess, images, f"extract {name} {split}", views, aug,
                seed, batch, workers, progress)
    finally:
        store.close()
    return LayersSummary(name, split, len(images), rows,
                         [LayerArray(a, la, recorded_pooling(la, pool), d) for a, la, d in zip(arrays, chosen, dims)],
                         start, list(images.skipped))


def _check_run(split: str, name: str | None, images: ImageSet, views: int, augment: bool | Augment,
               batch: int) -> Augment | None:
    """The settings every extraction shares, checked before the store is touched; returns the augmentation
    (None: plain views)."""
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
    return aug


def _stream(arrays: list[Any], names: list[str], per_sample: int, forward: Callable[[np.ndarray], list[np.ndarray]],
            preprocess: Preprocess, images: ImageSet, label: str, views: int, aug: Augment | None, seed: int,
            batch: int, workers: int | None, progress: bool) -> None:
    """Compute and write the rows of ``arrays`` chunk by chunk, from the first row one of them lacks.

    A sample is one view of one image; it gives ``per_sample`` rows of each array (its positions),
    and ``forward`` turns a batch of samples into one block of rows per array. Every array has the
    same rows and chunking, so their chunks end together; an array a kill left one chunk ahead
    skips the rows it holds (the bytes are the same).
    """
    rows = int(arrays[0].shape[0])
    chunk = int(arrays[0].chunks[0]) // per_sample  # samples per chunk (whole images: a multiple of views)
    start = min(FeatureStore.rows_written(a) for a in arrays) // per_sample
    samples = rows // per_sample
    batch = -(-batch // views) * views  # whole images per forward pass: each photo decoded once for its views
    spans = [(lo, hi, b_lo, b_hi) for lo, hi in row_spans(samples, chunk, start)
             for b_lo, b_hi in row_spans(hi, batch, lo)]

    def batches() -> Iterator[_Batch]:
        for _, _, b_lo, b_hi in spans:
            items = []
            for img in range(b_lo // views, (b_hi - 1) // views + 1):
                v0, v1 = max(b_lo, img * views) - img * views, min(b_hi, (img + 1) * views) - img * views
                items.append((img, images.source(img), v0, v1))
            yield _Batch(items, preprocess, aug, seed)

    workers = default_workers() if workers is None else workers
    # one worker: a thread of this process (Pillow and onnxruntime release the GIL), no copies between processes
    pool: Executor = (ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) if workers > 1
                      else ThreadPoolExecutor(max_workers=1))
    try:
        with tqdm(total=samples, initial=start, desc=label, unit="img", disable=not progress) as bar:
            pixels = _ordered(pool, batches(), ahead=2 * workers + 2)
            blocks: list[np.ndarray] = []
            for (lo, hi, b_lo, b_hi), x in zip(spans, pixels, strict=True):
                if b_lo == lo:
                    blocks = [np.empty(((hi - lo) * per_sample, int(a.shape[1])), np.float32) for a in arrays]
                outs = forward(preprocess.normalize(x))
                for block, out in zip(blocks, outs, strict=True):
                    block[(b_lo - lo) * per_sample : (b_hi - lo) * per_sample] = out
                bar.update(b_hi - b_lo)
                if b_hi == hi:
                    for arr, name, block in zip(arrays, names, blocks, strict=True):
                        check_finite(block, name, lo * per_sample, xp=np)
                    for arr, block in zip(arrays, blocks, strict=True):
                        if FeatureStore.rows_written(arr) == lo * per_sample:
                            FeatureStore.write_rows(arr, lo * per_sample, block)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _clear(store: FeatureStore, split: str, name: str | None, index: bool) -> None:
    """Remove what is being replaced: ``name``'s array (empty, or ``--overwrite``) and an index no features use.

    ``_prepare_split`` decided both; an empty array or index was left by a killed run and holds
    nothing, and a written array is removed only when the user asked to overwrite it.
    """
    store.remove(split, network=name, index=index)
