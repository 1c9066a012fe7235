"""Bilinear resampling of a layer's grid: the rows lintwin compares and the node the stitched model runs.

Two layers whose grids differ (a 14 x 14 map against a 7 x 7 one) are compared, and stitched, on
one grid. The resampling is ONNX's ``Resize`` with ``mode="linear"`` and
``coordinate_transformation_mode="half_pixel"`` (PyTorch's ``interpolate(..., mode="bilinear",
align_corners=False)``, without antialiasing): output position ``i`` of an axis of length ``m``
reads the input axis of length ``n`` at ``x = (i + 0.5)·n/m − 0.5``, clamped to ``[0, n − 1]``, and
mixes its two neighbours linearly. Halving an axis is therefore the mean of each pair of
positions; quartering it averages the middle two of each four. The same weights act on stored
per-position rows here (:func:`resample_rows`) and inside the stitched ONNX model
(:func:`resize_model`), so a map is fitted on exactly the rows the stitched model computes.

Only spatial grids (H x W) are resampled; token grids must match (they carry no geometry to
interpolate), and a grid of one row per image has nothing to resample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..core.xp import device, namespace
from ..errors import ShapeError

__all__ = ["RESAMPLING", "Grid", "axis_weights", "common_grid", "grid_text", "resample_rows", "resize_model"]

Grid = tuple[int, ...]
RESAMPLING = ("bilinear interpolation, half-pixel centres, no antialiasing (ONNX Resize mode=linear, "
              "coordinate_transformation_mode=half_pixel)")


def grid_text(grid: Sequence[int]) -> str:
    """``14 x 14``, ``50 tokens`` or ``one row per image``."""
    if len(grid) == 0:
        return "one row per image"
    if len(grid) == 1:
        return f"{grid[0]} tokens"
    return " x ".join(map(str, grid))


def common_grid(a: Grid, b: Grid, what: str) -> Grid:
    """The grid two layers are compared on: the coarser size on each axis of two spatial grids.

    Equal grids are their own; grids of different kinds (a map and tokens, positions and one row
    per image) or token counts that differ cannot be aligned and are refused, naming ``what``.
    """
    if a == b:
        return a
    if len(a) == 2 and len(b) == 2:
        return (min(a[0], b[0]), min(a[1], b[1]))
    raise ShapeError(f"the grids of {what} cannot be aligned ({grid_text(a)} against {grid_text(b)}): only spatial "
                     "maps (H x W) are resampled; tokens must be as many on both sides, and per-position rows "
                     "cannot be paired with one row per image (extract both with the same --pool)")


def axis_weights(n_in: int, n_out: int) -> np.ndarray:
    """``n_out x n_in`` float64 weights of half-pixel linear interpolation along one axis (rows sum to 1)."""
    if n_in < 1 or n_out < 1:
        raise ShapeError(f"cannot resample an axis of {n_in} positions to {n_out}")
    x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    x = np.clip(x, 0.0, n_in - 1)
    lo = np.floor(x).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = x - lo
    w = np.zeros((n_out, n_in), dtype=np.float64)
    np.add.at(w, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(w, (np.arange(n_out), hi), frac)
    return w


def resample_rows(x: Any, src: Grid, dst: Grid) -> Any:
    """Per-position rows of whole samples on grid ``src`` (row-major over H, W) as rows on grid ``dst``.

    ``x`` is (samples·H·W) x C in any array namespace; the result has the namespace, device and
    dtype of ``x``. Separable: the H axis, then the W axis.
    """
    if tuple(src) == tuple(dst):
        return x
    if len(src) != 2 or len(dst) != 2:
        raise ShapeError(f"only spatial grids are resampled, not {grid_text(src)} to {grid_text(dst)}")
    xp = namespace(x)
    (hs, ws), (hd, wd) = src, dst
    c = int(x.shape[1])
    n = int(x.shape[0]) // (hs * ws)
    if n * hs * ws != int(x.shape[0]):
        raise ShapeError(f"{int(x.shape[0])} rows are not whole samples of a {grid_text(src)} grid")
    rh = xp.asarray(axis_weights(hs, hd), dtype=x.dtype, device=device(x))
    rw = xp.asarray(axis_weights(ws, wd), dtype=x.dtype, device=device(x))
    t = rh @ xp.reshape(x, (n, hs, ws * c))          # n x hd x (ws·c)
    t = rw @ xp.reshape(t, (n * hd, ws, c))          # (n·hd) x wd x c
    return xp.reshape(t, (n * hd * wd, c))


def resize_model(src: str, dst: str, channels: int, grid_in: Grid, grid_out: Grid, like: onnx.ModelProto) -> onnx.ModelProto:
    """A small model ``dst = Resize(src)`` (N x C x H x W → N x C x H' x W', batch kept) with ``like``'s opset.

    The output size is given as ``sizes`` (the batch read from the input's shape), so the
    coordinates follow :func:`axis_weights` exactly, whatever the ratio of the grids.
    """
    (hi, wi), (ho, wo) = grid_in, grid_out
    hw = numpy_helper.from_array(np.asarray([ho, wo], np.int64), f"{dst}_hw")
    starts = numpy_helper.from_array(np.asarray([0], np.int64), f"{dst}_starts")
    ends = numpy_helper.from_array(np.asarray([2], np.int64), f"{dst}_ends")
    nodes = [
        helper.make_node("Shape", [src], [f"{dst}_shape"], name=f"{dst}_shape"),
        helper.make_node("Slice", [f"{dst}_shape", starts.name, ends.name], [f"{dst}_nc"], name=f"{dst}_nc"),
        helper.make_node("Concat", [f"{dst}_nc", hw.name], [f"{dst}_sizes"], axis=0, name=f"{dst}_sizes"),
        helper.make_node("Resize", [src, "", "", f"{dst}_sizes"], [dst], mode="linear",
                         coordinate_transformation_mode="half_pixel", name=f"{dst}_resize"),
    ]
    graph = helper.make_graph(
        nodes, "resample",
        [helper.make_tensor_value_info(src, TensorProto.FLOAT, ["N", channels, hi, wi])],
        [helper.make_tensor_value_info(dst, TensorProto.FLOAT, ["N", channels, ho, wo])],
        initializer=[hw, starts, ends])
    opset = next((o.version for o in like.opset_import if o.domain in ("", "ai.onnx")), 17)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="lintwin")
    model.ir_version = like.ir_version
    return model
