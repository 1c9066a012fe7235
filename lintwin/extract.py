"""Images -> backbone features -> feature store, chunk by chunk, resumable.

Rows are image-major (all views of image 0, then image 1, ...). Each store chunk is
computed in the same sub-batches whether a run starts fresh or resumes, and views are
augmented with a generator seeded by (seed, image, view), so a run that is killed and
started again ends with the same bytes as one that never stopped.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ._xp import row_spans
from .errors import LintwinError, ShapeError
from .images import ImageSet
from .moments import check_finite
from .networks import Backbone, NetworkSpec
from .store import FeatureStore

__all__ = ["ExtractSummary", "extract_features"]


@dataclass
class ExtractSummary:
    name: str
    split: str
    rows: int
    dim: int
    resumed_from: int
    skipped: list[str] = field(default_factory=list)


def _fingerprint(model_sha: str, images: ImageSet, views: int, augment: bool, seed: int) -> str:
    ids = hashlib.sha256("\n".join(images.ids).encode()).hexdigest()[:16]
    return json.dumps({"model_sha256": model_sha[:16], "images": images.description, "n": len(images),
                       "ids": ids, "views": views, "augment": augment, "seed": seed}, sort_keys=True)


def extract_features(backbone_path: str | Path, images: ImageSet, store_path: str | Path, *, split: str,
                     name: str | None = None, views: int = 1, augment: bool = False, seed: int = 0,
                     batch: int = 64, sidecar: str | Path | None = None, chunk_rows: int | None = None,
                     workers: int = 2, progress: bool = True) -> ExtractSummary:
    """Run the ONNX backbone over ``images`` (``views`` per image) into ``store_path``.

    Without ``augment`` every view would be identical, so ``views`` must then be 1.
    Labels and ids are stored with the split; a second network extracted into the same
    split must see the same images in the same order, which the store enforces.
    """
    if len(images) == 0:
        raise ShapeError(f"no usable images in {images.description}")
    if views < 1 or (views > 1 and not augment):
        raise LintwinError("views > 1 needs augment (unaugmented views would be identical)")
    spec = NetworkSpec.for_model(backbone_path, sidecar)
    name = name or spec.name
    net = Backbone(backbone_path)
    rows = len(images) * views
    store = FeatureStore.create(store_path)
    arr = store.open_features_for_write(split, name, rows=rows, dim=spec.feature_dim, chunk_rows=chunk_rows,
                                        model_sha256=net.sha256,
                                        source=_fingerprint(net.sha256, images, views, augment, seed))
    store.set_labels(split, np.repeat(images.labels, views))
    store.set_ids(split, [f"{i}#v{v}" if views > 1 else i for i in images.ids for v in range(views)])
    start = FeatureStore.rows_written(arr)
    chunk = int(arr.chunks[0])

    def pixels(row: int) -> np.ndarray:
        img, view = divmod(row, views)
        rng = np.random.default_rng([seed, img, view]) if augment else None
        return spec.preprocess(images.load(img), rng)

    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=rows, initial=start, desc=f"extract {name} {split}", unit="img", disable=not progress) as bar:
        for lo, hi in row_spans(rows, chunk, start):
            feats = np.empty((hi - lo, spec.feature_dim), np.float32)
            for b_lo, b_hi in row_spans(hi, batch, lo):
                x = np.stack(list(pool.map(pixels, range(b_lo, b_hi))))
                out = net(x)
                if out.shape[1] != spec.feature_dim:
                    raise ShapeError(f"{Path(backbone_path).name} gives {out.shape[1]}-dim features, "
                                     f"its sidecar says {spec.feature_dim}")
                feats[b_lo - lo : b_hi - lo] = out
                bar.update(b_hi - b_lo)
            check_finite(feats, name, lo)
            FeatureStore.write_rows(arr, lo, feats)
    return ExtractSummary(name, split, rows, spec.feature_dim, start, list(images.skipped))
