"""Stitching A into B at any pair of layers, in closed form: the per-position map from stored rows, as one ONNX model.

A's layer TA and B's layer TB are read from the store (``extract --layers ... --pool positions``;
a vector layer as it is), A's rows resampled to B's grid where the grids differ, and their joint
moments accumulated in one pass; the affine map (W, b) acting on every position is solved from
them exactly as a pooled map is (ridge λ, λ by K-fold CV over images with all positions and views
of an image in one fold, or the best map of a rank). :func:`stitch_layers` writes it as one ONNX
model (A's front → resample → 1 x 1 convolution → B's back) with its parts and sidecar. Stitched
at the classifier inputs, with rows of the same images, the map is the one ``compare`` fits from
the backbones' features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..affine import AffineMap
from ..core.driver import FoldSink, run_pass
from ..core.folds import image_folds
from ..core.moments import Moments
from ..core.params import FitSettings, check_rank
from ..core.placement import DEFAULT_DEVICE, Placement, placement
from ..errors import LintwinError, ShapeError
from ..networks.layer_source import GridSink, LayerSource, StoredLayer, find_layer
from ..networks.onnx_models import file_sha256
from ..networks.resample import grid_text
from ..networks.stitch import stitch_outputs
from ..networks.stitched_layers import LayerSide, StitchedLayers, layer_side, stitch_grid, write_stitched_layers
from ..solvers import fit_ridge_cv, maps_from_moments
from ..storage.store import FeatureStore

__all__ = ["LayerStitch", "fit_layer_map", "fitted_on", "stitch_layers", "stored_rows"]


def stored_rows(store: FeatureStore, splits: Sequence[str], side: LayerSide) -> StoredLayer:
    """The stored rows of ``side``'s layer, extracted with this very model, one row per position (or per image)."""
    la = find_layer(store, splits, side.layer.name, model_sha256=file_sha256(side.path), model=side.name,
                    pooling="none" if side.layer.kind == "vector" else "positions")
    if [int(d) for d in la.shape[1:]] != list(side.layer.shape):
        raise ShapeError(f"{la.describe()} was stored with shape {la.shape}, but {side.name} gives "
                         f"{side.layer.dims()} at the model's input size")
    return la


def fit_layer_map(store: FeatureStore, la: StoredLayer, lb: StoredLayer, *, ridge: float | str = 0.0,
                  rank: int | None = None, folds: int = 5, precision: str = "float32",
                  device: str | Placement = DEFAULT_DEVICE, block_samples: int | None = None,
                  progress: bool = False) -> AffineMap:
    """The affine map from layer ``la``'s rows (resampled to ``lb``'s grid) to ``lb``'s rows, from one pass."""
    cfg = FitSettings(ridge=ridge, rank=rank, folds=folds, precision=precision,
                      device=device if isinstance(device, str) else device.label).validated()
    if isinstance(cfg.ridge, tuple):
        raise LintwinError("a stitch fits one direction: give one λ (or 'auto'), not one per direction")
    check_rank(rank, (la.dim, lb.dim))
    source = LayerSource(store, [la, lb], block_samples=block_samples)
    names = [la.array, lb.array] if la.array != lb.array else [la.key, f"{lb.key} (target)"]
    desc = f"moments {la.array} → {lb.array}"
    place = placement(device)
    if cfg.ridge == "auto":
        ids = store.ids(lb.split, lb.rows_per_sample)
        per_sample = np.repeat(image_folds(ids, source.samples, folds), int(np.prod(lb.grid)) if lb.grid else 1)
        parts = [Moments(la.dim, lb.dim, names=names, precision=precision) for _ in range(folds)]  # type: ignore[arg-type]
        sink = GridSink(source.layers, [0, 1], lb.grid, precision=precision, sink=FoldSink(parts, per_sample))
        run_pass(source, [sink], placement=place, progress=progress, desc=f"fold {desc}")
        (amap,) = fit_ridge_cv(parts, rank=rank)
    else:
        sink = GridSink(source.layers, [0, 1], lb.grid, precision=precision, names=names)
        run_pass(source, [sink], placement=place, progress=progress, desc=desc)
        assert sink.moments is not None
        (amap,) = maps_from_moments(sink.moments, ridge=float(cfg.ridge), rank=rank)  # type: ignore[arg-type]
    amap.src_model_sha256, amap.dst_model_sha256 = la.model_sha256, lb.model_sha256
    return amap


def fitted_on(amap: AffineMap, lb: StoredLayer) -> str:
    """What a map was fitted on, in words."""
    how = f"per position of a {grid_text(lb.grid)} grid" if lb.grid else "one row per image"
    return f"fitted on {amap.n_train:,} rows ({lb.samples:,} images x views, {how})"


@dataclass
class LayerStitch:
    """A written stitch: the files and their check, the map, and the stored rows it was fitted on."""

    written: StitchedLayers
    amap: AffineMap
    rows_a: StoredLayer
    rows_b: StoredLayer
    side_a: LayerSide
    side_b: LayerSide


def stitch_layers(model_a: str | Path, tensor_a: str, model_b: str | Path, tensor_b: str, store: FeatureStore,
                  out: str | Path, *, splits: Sequence[str] = ("train",), ridge: float | str = 0.0,
                  rank: int | None = None, folds: int = 5, precision: str = "float32",
                  device: str | Placement = DEFAULT_DEVICE, block_samples: int | None = None,
                  progress: bool = False) -> LayerStitch:
    """Fit the map from A's ``tensor_a`` to B's ``tensor_b`` on the stored rows and write the stitched model ``out``."""
    a = layer_side(model_a, tensor_a, back=False)
    b = layer_side(model_b, tensor_b, back=True)
    stitch_outputs(out, a.path, b.path)  # refuse bad outputs before any work
    stitch_grid(a.layer, b.layer, f"{a.layer.name} of {a.name}", f"{b.layer.name} of {b.name}")
    la, lb = stored_rows(store, splits, a), stored_rows(store, splits, b)
    amap = fit_layer_map(store, la, lb, ridge=ridge, rank=rank, folds=folds, precision=precision, device=device,
                         block_samples=block_samples, progress=progress)
    written = write_stitched_layers(a, b, amap, out, fitted_on=fitted_on(amap, lb))
    return LayerStitch(written, amap, la, lb, a, b)
