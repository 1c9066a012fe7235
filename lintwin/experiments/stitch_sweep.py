"""The stitching penalty of many layer pairs: B's held-out accuracy minus the stitched model's, with intervals.

For each requested pair (A's layer TA, B's layer TB) the per-position map is fitted on the stored
rows exactly as ``lintwin stitch`` fits it (:func:`lintwin.experiments.layer_stitch.fit_layer_map`),
the stitched ONNX model is built (and checked against the three steps on a probe), and every
stitched model, B itself and A itself classify the same held-out images in one pass over them.
The penalty of a pair is B's accuracy minus the stitched model's; its 95% interval is a paired
bootstrap over the held-out images (one draw of images scores every configuration, as in Table 1).

Reading a penalty needs its controls (see the guide): the same sweep from A into A's own later
layers (the within-network control), and from a network with random weights (the random-feature
control), say how much of a penalty any linear stitch pays.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..core.placement import DEFAULT_DEVICE, Placement
from ..errors import LintwinError
from ..measures.bootstrap import bootstrap_table
from ..networks.images import ImageSet
from ..networks.onnx_models import open_session
from ..networks.resample import grid_text
from ..networks.stitched_layers import (
    LayerSide,
    check_against_three_steps,
    layer_side,
    stitch_grid,
    stitched_layers_model,
)
from ..storage.store import FeatureStore
from .layer_stitch import fit_layer_map, fitted_on, stored_rows

__all__ = ["PAIRINGS", "StitchSweep", "stitch_sweep"]

PAIRINGS = ("all", "zip")
_SUFFIX = re.compile(r"(#[vp]\d+)+$")


@dataclass
class StitchSweep:
    """One row per layer pair (accuracy and penalty with intervals), B's and A's own accuracy, and the settings."""

    model_a: str
    model_b: str
    layers_a: list[str]
    layers_b: list[str]
    pairing: str
    images: int
    own: dict[str, dict[str, float]]
    rows: list[dict[str, Any]]
    settings: dict[str, Any]
    seconds: dict[str, float]
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _pairs(layers_a: Sequence[str], layers_b: Sequence[str], pairing: str) -> list[tuple[int, int]]:
    if pairing not in PAIRINGS:
        raise LintwinError(f"pairing must be 'all' or 'zip', got {pairing!r}")
    if pairing == "zip":
        if len(layers_a) != len(layers_b):
            raise LintwinError(f"--pairing zip pairs the i-th layer of A with the i-th of B: {len(layers_a)} layers of "
                               f"A, {len(layers_b)} of B")
        return [(i, i) for i in range(len(layers_a))]
    return [(i, j) for i in range(len(layers_a)) for j in range(len(layers_b))]


def _check_held_out(store: FeatureStore, rows_b: Sequence[Any], images: ImageSet, in_sample: bool) -> None:
    """Refuse held-out images that the maps were fitted on (by id, folder prefixes of pooled folders ignored)."""
    if in_sample:
        return
    held = set(images.ids)
    for lb in rows_b:
        ids = store.ids(lb.split, lb.rows_per_sample)
        if ids is None:
            continue
        fitted = set()
        for i in ids:  # an id and its tails: images pooled from several folders carry the folder as a prefix
            parts = _SUFFIX.sub("", str(i)).split("/")
            fitted.update("/".join(parts[k:]) for k in range(len(parts)))
        same = held & fitted
        if same:
            raise LintwinError(f"{len(same)} of the held-out images (e.g. {min(same)}) are among the images the "
                               f"maps are fitted on (split {lb.split!r}): the penalty would be an in-sample figure; "
                               "give other images, or pass --in-sample")


def stitch_sweep(model_a: str, model_b: str, layers_a: Sequence[str], layers_b: Sequence[str], store: FeatureStore,
                 images: ImageSet, *, splits: Sequence[str] = ("train",), pairing: str = "all",
                 ridge: float | str = 0.0, rank: int | None = None, folds: int = 5, precision: str = "float32",
                 device: str | Placement = DEFAULT_DEVICE, bootstrap: int = 2000, seed: int = 0, batch: int = 64,
                 in_sample: bool = False, block_samples: int | None = None, progress: bool = True,
                 echo: Callable[[str], None] = print) -> StitchSweep:
    """The stitching penalty of every pair of ``layers_a`` × ``layers_b`` (``pairing="zip"``: i-th with i-th)."""
    pairs = _pairs(layers_a, layers_b, pairing)
    if bootstrap < 2:
        raise LintwinError(f"the penalty's interval needs --bootstrap of at least 2, got {bootstrap}")
    sides_a = [layer_side(model_a, t, back=False) for t in layers_a]
    sides_b = [layer_side(model_b, t, back=True) for t in layers_b]
    for i, j in pairs:
        stitch_grid(sides_a[i].layer, sides_b[j].layer, f"{layers_a[i]} of {sides_a[i].name}",
                    f"{layers_b[j]} of {sides_b[j].name}")
    if len(images) == 0:
        raise LintwinError(f"no held-out images in {images.description}")
    labels = np.asarray(images.labels)
    if np.any(labels < 0):
        raise LintwinError(f"the held-out images ({images.description}) need a label each to score the stitched models")
    rows_a = [stored_rows(store, splits, s) for s in sides_a]
    rows_b = [stored_rows(store, splits, s) for s in sides_b]
    _check_held_out(store, rows_b, images, in_sample)
    t0 = time.perf_counter()
    models, rows = [], []
    for n, (i, j) in enumerate(pairs, 1):
        a, b = sides_a[i], sides_b[j]
        amap = fit_layer_map(store, rows_a[i], rows_b[j], ridge=ridge, rank=rank, folds=folds, precision=precision,
                             device=device, block_samples=block_samples, progress=progress)
        full = stitched_layers_model(a, b, amap)
        check_against_three_steps(full, a, b, amap)
        models.append(open_session(full.SerializeToString(), f"stitched {layers_a[i]} → {layers_b[j]}"))
        resampled = a.grid != b.grid and a.layer.kind == "spatial"
        rows.append({"layer_a": layers_a[i], "layer_b": layers_b[j], "grid_a": list(a.grid), "grid_b": list(b.grid),
                     "resampled": resampled, "fitted_on": fitted_on(amap, rows_b[j]), "n_train": amap.n_train,
                     "ridge": amap.options.get("chosen_ridge", amap.options.get("ridge")),
                     "train_r2": amap.stats.get("train_metrics", {}).get("r2"),
                     "channels": [a.layer.channels, b.layer.channels]})
        echo(f"[{n}/{len(pairs)}] {layers_a[i]} ({a.layer.dims()}) → {layers_b[j]} ({b.layer.dims()})"
             f"{', resampled ' + grid_text(a.grid) + ' → ' + grid_text(b.grid) if resampled else ''}: "
             f"{fitted_on(amap, rows_b[j])}, train R² {rows[-1]['train_r2']:.4f}")
    fit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    preds = _predict(sides_a[0], sides_b[0], models, images, batch, progress)
    hits = {"B": preds["B"] == labels, "A": preds["A"] == labels}
    hits |= {f"pair{k}": p == labels for k, p in enumerate(preds["pairs"])}
    table = bootstrap_table(hits, losses={f"pair{k}": ("B", f"pair{k}") for k in range(len(pairs))}, n_boot=bootstrap,
                            seed=seed)
    for k, row in enumerate(rows):
        row["accuracy"] = table["accuracy"][f"pair{k}"]
        row["penalty"] = table["loss"][f"pair{k}"]
        row["correct"] = int(hits[f"pair{k}"].sum())
        row["agreement_with_b"] = 100.0 * float((preds["pairs"][k] == preds["B"]).mean())
    own = {"A": table["accuracy"]["A"] | {"correct": int(hits["A"].sum())},
           "B": table["accuracy"]["B"] | {"correct": int(hits["B"].sum())}}
    settings = {"splits": list(splits), "ridge": ridge, "rank": rank, "folds": folds, "precision": precision,
                "bootstrap": bootstrap, "seed": seed, "level": table["level"], "images": images.description,
                "penalty": "B's accuracy minus the stitched model's, in percentage points (negative: a gain)"}
    return StitchSweep(str(model_a), str(model_b), list(layers_a), list(layers_b), pairing, len(images), own, rows,
                       settings, {"fit_seconds": fit_seconds, "score_seconds": time.perf_counter() - t0})


def _predict(a: LayerSide, b: LayerSide, models: list[Any], images: ImageSet, batch: int,
             progress: bool) -> dict[str, Any]:
    """Top-1 of A, B and every stitched model on ``images``: each image decoded once, preprocessed for A and for B."""
    own_a, own_b = open_session(a.path, a.name), open_session(b.path, b.name)
    out: dict[str, Any] = {"A": [], "B": [], "pairs": [[] for _ in models]}
    with tqdm(total=len(images), desc="score held-out images", unit="img", disable=not progress) as bar:
        for lo in range(0, len(images), batch):
            pixels = [images.load(i) for i in range(lo, min(len(images), lo + batch))]
            xa = np.stack([a.spec.preprocess(p) for p in pixels]).astype(np.float32)
            xb = np.stack([b.spec.preprocess(p) for p in pixels]).astype(np.float32)
            out["A"].append(own_a.run(None, {own_a.get_inputs()[0].name: xa})[0].argmax(1))
            out["B"].append(own_b.run(None, {own_b.get_inputs()[0].name: xb})[0].argmax(1))
            for k, sess in enumerate(models):
                out["pairs"][k].append(sess.run(None, {sess.get_inputs()[0].name: xa})[0].argmax(1))
            bar.update(len(pixels))
    return {"A": np.concatenate(out["A"]), "B": np.concatenate(out["B"]),
            "pairs": [np.concatenate(p) for p in out["pairs"]]}
