"""A layer's stored rows: averaged over its positions, one row per position, the class token, or flattened.

- ``avg``: one row of C values per image, the mean over the H x W positions of a spatial map
  (or the T tokens), computed in float64;
- ``positions``: one row of C values per image and position (row-major over H, W; or per token),
  so a layer's moments are C x C whatever its grid; sample ids ``IMAGE#pK`` (K = h·W + w or the
  token index) keep rows paired and every position of an image in one cross-validation fold;
- ``cls``: the first token of a token layer (N x T x C), the class token of a ViT;
- ``flatten``: all values of an image in one row (C·H·W, NCHW order), refused past
  :data:`MAX_FLATTEN` values, since the moments of a d-wide layer take 8·d² bytes.

A vector layer (N x C) is stored as it is under ``avg`` and ``flatten`` (pooling ``none``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ShapeError
from .layers import Layer

__all__ = ["MAX_FLATTEN", "POOLINGS", "check_pooling", "pool_rows", "position_ids", "recorded_pooling",
           "rows_per_sample", "row_width"]

POOLINGS = ("avg", "positions", "cls", "flatten")
MAX_FLATTEN = 16384  # values per row: the float64 moments of one such layer take 2 GiB


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError


def check_pooling(layer: Layer, pool: str) -> None:
    """Refuse a pooling the layer cannot have, with the reason and what to use instead."""
    if pool not in POOLINGS:
        raise ShapeError(f"unknown pooling {pool!r} (one of {', '.join(POOLINGS)})")
    kind, where = layer.kind, f"layer {layer.name} ({layer.dims()})"
    if pool == "flatten":
        if layer.values > MAX_FLATTEN:
            alt = ("--pool avg (C values per image) or --pool positions (one row of C values per position)"
                   if kind in ("spatial", "tokens") else "a narrower layer")
            raise ShapeError(f"flattening {where} gives {layer.values:,} values per image, more than lintwin stores "
                             f"in a row ({MAX_FLATTEN:,}): the float64 moments of that layer alone would take "
                             f"{_bytes(8.0 * layer.values**2)}; use {alt}")
        return
    if kind == "other":
        raise ShapeError(f"{where} is neither N x C, N x C x H x W nor N x T x C: it can only be flattened "
                         "(--pool flatten)")
    if pool == "positions" and kind == "vector":
        raise ShapeError(f"{where} is one vector per image and has no positions; extract it with --pool avg, "
                         "into another split than per-position rows")
    if pool == "cls" and kind != "tokens":
        raise ShapeError(f"{where} is not a token layer (N x T x C); --pool cls takes the first token of one")


def recorded_pooling(layer: Layer, pool: str) -> str:
    """The pooling as stored: ``none`` for a vector layer read as it is."""
    return "none" if layer.kind == "vector" else pool


def rows_per_sample(layer: Layer, pool: str) -> int:
    """Rows each image (view) contributes: its positions under ``positions``, else 1."""
    return int(np.prod(layer.grid)) if pool == "positions" else 1


def row_width(layer: Layer, pool: str) -> int:
    """Values per stored row."""
    if pool == "flatten" or layer.kind == "vector":
        return layer.values
    return int(layer.channels)  # type: ignore[arg-type]


def pool_rows(x: np.ndarray, layer: Layer, pool: str) -> np.ndarray:
    """``x`` (n x layer.shape, one forward pass) as the stored float32 rows of its ``n`` samples."""
    n = x.shape[0]
    if tuple(x.shape[1:]) != layer.shape:
        got = " x ".join(["N", *map(str, x.shape[1:])])
        raise ShapeError(f"layer {layer.name} gave {got} on a batch of {n} image(s), {layer.dims()} before: "
                         "dynamic sizes that differ between images are not stored")
    if pool == "flatten" or layer.kind == "vector":
        return np.ascontiguousarray(x.reshape(n, -1), np.float32)
    if layer.kind == "spatial":  # N x C x H x W
        if pool == "avg":
            return x.astype(np.float64).mean(axis=(2, 3)).astype(np.float32)
        return np.ascontiguousarray(np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]), np.float32)
    if pool == "avg":  # tokens, N x T x C
        return x.astype(np.float64).mean(axis=1).astype(np.float32)
    if pool == "cls":
        return np.ascontiguousarray(x[:, 0, :], np.float32)
    return np.ascontiguousarray(x.reshape(-1, x.shape[-1]), np.float32)


def position_ids(sample_ids: Sequence[str], positions: int) -> list[str]:
    """``IMAGE#pK`` for each sample and position, sample-major (the rows' order)."""
    return [f"{s}#p{k}" for s in sample_ids for k in range(positions)]
