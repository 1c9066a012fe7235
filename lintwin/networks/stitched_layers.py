"""Stitching at intermediate layers: A's front, a resampling, a 1x1 convolution and B's back as one ONNX model.

A's *front* is A from the image to tensor TA; B's *back* is B from tensor TB to its logits (TB
must be a cut of B: nothing after it reads a tensor from before it). Between them goes the
affine map (W, b) applied at every position: a 1 x 1 convolution for maps N x C x H x W, a
MatMul + Add over the channels of tokens N x T x C, a Gemm for vectors N x C. Where A's grid
differs from B's, A's map is first resampled to B's grid with
:func:`lintwin.networks.resample.resize_model`, the bilinear resampling the map was fitted on.
The pieces are cut out and joined with onnx's own tools (``onnx.utils.Extractor``,
``onnx.compose.merge_models``); B's names are prefixed ``b_`` so that a network stitched into
itself (the within-network control) keeps its two halves apart.

Like :func:`lintwin.networks.stitch.stitch`, the model is written with a backbone + head split
(at B's classifier input) and a sidecar, so every lintwin command can score it, and it is
checked against the three steps run separately (:func:`three_step_logits`) before it is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.utils import Extractor

from ..affine import AffineMap
from ..core.files import atomic_write_all
from ..core.xp import to_numpy
from ..errors import ModelError, ShapeError
from .cut import ROUND_TRIP_TOLERANCE, check_cut, cut_parts, with_layer_shape
from .images import ImageSet
from .layers import Layer, ModelGraph, model_graph, read_model
from .onnx_models import ModelSpec, file_sha256, open_session
from .pooling import pool_rows
from .resample import RESAMPLING, Grid, grid_text, resample_rows, resize_model
from .stitch import Stitched, merge, opset_of, same_opset, stitch_outputs
from .taps import Taps

__all__ = ["PROBE_IMAGES", "ImageCheck", "LayerSide", "StitchedLayers", "check_against_three_steps", "check_on_images",
           "layer_side", "stitch_grid", "stitched_layers_model",
           "three_step_logits", "write_stitched_layers"]

PROBE_IMAGES = 4
_IN, _OUT = "in", "out"  # the map's tensors, prefixed ``stitch_`` in the stitched model


@dataclass
class LayerSide:
    """One side of a stitch: the model, its sidecar, its layers and the chosen layer."""

    path: Path
    spec: ModelSpec
    graph: ModelGraph
    layer: Layer

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def grid(self) -> Grid:
        return tuple(self.layer.grid or ())


def layer_side(path: str | Path, tensor: str, *, back: bool, sidecar: str | Path | None = None) -> LayerSide:
    """Open ``path`` and its layer ``tensor``; B's side (``back``) must be cut there and must be a classifier."""
    path = Path(path)
    spec = ModelSpec.for_model(path, sidecar)
    graph = read_model(path, spec.preprocess)
    layer = graph.layer(tensor)
    if layer.kind == "other":
        raise ShapeError(f"layer {tensor} of {path.name} ({layer.dims()}) is neither N x C, N x C x H x W nor "
                         "N x T x C: a map per position needs one of those")
    if back:
        check_cut(graph, layer)
        if len(graph.outputs) != 1 or getattr(graph.layers.get(graph.outputs[0]), "kind", None) != "vector":
            raise ModelError(f"{path.name} is not a classifier with one output N x classes; B's back must give logits")
    return LayerSide(path, spec, graph, layer)


def stitch_grid(a: Layer, b: Layer, what_a: str, what_b: str) -> Grid | None:
    """The grid A's layer is resampled to (B's), None when the grids agree; refuses layers that cannot be aligned."""
    if a.kind != b.kind:
        raise ShapeError(f"{what_a} ({a.dims()}) and {what_b} ({b.dims()}) cannot be aligned: a map per position "
                         "joins two spatial maps, two token layers or two vectors")
    if a.grid == b.grid:
        return None
    if a.kind == "tokens":
        raise ShapeError(f"{what_a} has {a.grid[0]} tokens, {what_b} {b.grid[0]}: token layers cannot be aligned unless "
                         "their counts agree (tokens carry no geometry to resample)")
    return tuple(b.grid)  # type: ignore[arg-type]


def _map_model(amap: AffineMap, a: Layer, b: Layer, like: onnx.ModelProto) -> onnx.ModelProto:
    """``out`` (N x B's layer) = the map applied at every position of ``in`` (N x A's layer), resampled first."""
    w = np.ascontiguousarray(to_numpy(amap.weight), np.float32)
    bias = numpy_helper.from_array(np.ascontiguousarray(to_numpy(amap.bias), np.float32), "map_bias")
    nodes, inits, x = [], [bias], _IN
    if a.kind == "spatial":
        if a.grid != b.grid:
            resize = resize_model(_IN, "resampled", a.shape[0], a.grid, b.grid, like)  # type: ignore[arg-type]
            nodes += list(resize.graph.node)
            inits += list(resize.graph.initializer)
            x = "resampled"
        inits.append(numpy_helper.from_array(w[:, :, None, None], "map_weight"))
        nodes.append(helper.make_node("Conv", [x, "map_weight", "map_bias"], [_OUT], kernel_shape=[1, 1], name="map"))
    elif a.kind == "tokens":
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w.T), "map_weight_t"))
        nodes += [helper.make_node("MatMul", [x, "map_weight_t"], ["mapped"], name="map"),
                  helper.make_node("Add", ["mapped", "map_bias"], [_OUT], name="map_bias_add")]
    else:
        inits.append(numpy_helper.from_array(w, "map_weight"))
        nodes.append(helper.make_node("Gemm", [x, "map_weight", "map_bias"], [_OUT], transB=1, name="map"))
    graph = helper.make_graph(nodes, f"map {amap.src} to {amap.dst}",
                              [helper.make_tensor_value_info(_IN, TensorProto.FLOAT, ["N", *a.shape])],
                              [helper.make_tensor_value_info(_OUT, TensorProto.FLOAT, ["N", *b.shape])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset_of(like))], producer_name="lintwin")
    model.ir_version = like.ir_version
    return model


def _front(side: LayerSide) -> onnx.ModelProto:
    return Extractor(with_layer_shape(side.graph.model, side.layer)).extract_model([side.graph.input_name],
                                                                                    [side.layer.name])


def _back(side: LayerSide) -> onnx.ModelProto:
    return Extractor(with_layer_shape(side.graph.model, side.layer)).extract_model([side.layer.name],
                                                                                    side.graph.outputs)


def _check_map(amap: AffineMap, a: LayerSide, b: LayerSide) -> None:
    if (amap.src_dim, amap.dst_dim) != (a.layer.channels, b.layer.channels):
        raise ShapeError(f"map {amap.name} takes {amap.src_dim} to {amap.dst_dim} values per position; {a.layer.name} "
                         f"of {a.name} has {a.layer.channels} channels and {b.layer.name} of {b.name} "
                         f"{b.layer.channels}")


def stitched_layers_model(a: LayerSide, b: LayerSide, amap: AffineMap) -> onnx.ModelProto:
    """One model: image → A's front → (resample) → map → B's back → B's logits, checked by onnx's checker."""
    stitch_grid(a.layer, b.layer, f"{a.layer.name} of {a.name}", f"{b.layer.name} of {b.name}")
    _check_map(amap, a, b)
    front = _front(a)
    opset = opset_of(front)
    back = same_opset(_back(b), opset, b.path)
    joined = merge(front, _map_model(amap, a.layer, b.layer, front), [(a.layer.name, _IN)], "stitch_")
    full = merge(onnx.load_from_string(joined.SerializeToString()), back, [(f"stitch_{_OUT}", b.layer.name)], "b_")
    full.graph.name = f"{a.path.stem} at {a.layer.name} to {b.path.stem} at {b.layer.name}"
    try:
        onnx.checker.check_model(full)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"the stitched model does not pass onnx's checker: {str(exc)[:300]}") from None
    return full


def three_step_logits(a: LayerSide, b: LayerSide, amap: AffineMap, x: np.ndarray) -> np.ndarray:
    """B's logits from A's front, the map and B's back run as three separate steps on images ``x`` (float32)."""
    act = Taps(a.graph.model, [a.layer.name], f"{a.name} (front)")(x)[0]
    n = act.shape[0]
    rows = pool_rows(act, a.layer, "positions" if a.layer.kind != "vector" else "avg")
    if a.layer.kind == "spatial" and a.grid != b.grid:
        rows = resample_rows(rows, a.grid, b.grid)
    mapped = np.asarray(to_numpy(amap.apply(rows)), np.float32)
    if b.layer.kind == "spatial":
        c, h, w = b.layer.shape
        feed = np.ascontiguousarray(mapped.reshape(n, h, w, c).transpose(0, 3, 1, 2))
    else:
        feed = mapped.reshape(n, *b.layer.shape)
    back = open_session(_back(b).SerializeToString(), f"{b.name} (back)")
    return np.asarray(back.run(None, {back.get_inputs()[0].name: feed})[0])


@dataclass
class StitchedLayers:
    """The written files, the grids, and the check against the three steps on a probe."""

    files: Stitched
    resampled: Grid | None
    max_abs_diff: float
    max_abs_logit: float

    @property
    def relative_diff(self) -> float:
        return self.max_abs_diff / max(self.max_abs_logit, float(np.finfo(np.float32).tiny))


def check_against_three_steps(full: onnx.ModelProto, a: LayerSide, b: LayerSide,
                              amap: AffineMap) -> tuple[float, float]:
    """max |Δ| between the stitched model's logits and the three steps' on a probe, and max |logit|; refuses above 1e-5 relative.

    The probe is :data:`PROBE_IMAGES` seeded standard normal inputs (as ``split`` checks its cut).
    """
    x = np.random.default_rng(0).standard_normal((PROBE_IMAGES, *a.graph.input_shape)).astype(np.float32)
    sess = open_session(full.SerializeToString(), "the stitched model")
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    want = three_step_logits(a, b, amap, x)
    diff, top = float(np.abs(got.astype(np.float64) - want).max()), float(np.abs(want).max())
    if not diff <= ROUND_TRIP_TOLERANCE * max(top, float(np.finfo(np.float32).tiny)):
        raise ModelError(f"the stitched model {a.layer.name} → {b.layer.name} differs from A's front → map → B's back "
                         f"run separately by up to {diff:.3g} (largest logit {top:.3g}) on a probe; not used")
    return diff, top


def write_stitched_layers(a: LayerSide, b: LayerSide, amap: AffineMap, out: str | Path, *, fitted_on: str,
                          also: tuple[Path, ...] = ()) -> StitchedLayers:
    """Build, check (against the three steps on a probe, 1e-5 relative) and write the stitched model and its parts.

    Writes ``OUT.onnx`` (image → B's logits), ``OUT.backbone.onnx`` + ``OUT.head.onnx`` (cut at
    B's classifier input, or at the map's output when B has none) and the sidecar ``OUT.json``,
    as a set; nothing is written when a check fails. ``fitted_on`` describes the map's rows.
    """
    paths = stitch_outputs(out, a.path, b.path, also=also)
    full = stitched_layers_model(a, b, amap)
    diff, top = check_against_three_steps(full, a, b, amap)
    graph = model_graph(full, paths.model, a.spec.preprocess)
    cut = graph.classifier_input or graph.layers[f"stitch_{_OUT}"]
    backbone, head, _ = cut_parts(graph, check_cut(graph, cut))
    resampled = stitch_grid(a.layer, b.layer, a.layer.name, b.layer.name)
    classes = graph.layers[graph.outputs[0]].values
    how = (f"bilinear resampling {grid_text(a.grid)} → {grid_text(b.grid)} ({RESAMPLING}), then " if resampled else "")
    op = {"spatial": "a 1x1 convolution", "tokens": "MatMul + Add per token", "vector": "Gemm"}[a.layer.kind]
    sidecar = {
        "name": paths.name, "backbone": paths.backbone.name, "head": paths.head.name, "feature_dim": cut.values,
        "classes": classes, "preprocess": a.spec.preprocess.as_dict(),
        **({"class_names": b.spec.raw["class_names"]} if "class_names" in b.spec.raw else {}),
        "notes": (f"stitched by lintwin: {a.name} (sha256 {file_sha256(a.path)[:16]}…) from the image to "
                  f"{a.layer.name} ({a.layer.dims()}), {how}{op} {a.layer.channels} → {b.layer.channels} "
                  f"({amap.method}, {fitted_on}), then {b.name} (sha256 {file_sha256(b.path)[:16]}…) from "
                  f"{b.layer.name} ({b.layer.dims()}) to its logits; the whole network is {paths.model.name}, its "
                  f"backbone ends at {cut.name}"),
    }
    blobs = [full.SerializeToString(), backbone.SerializeToString(), head.SerializeToString(),
             (json.dumps(sidecar, indent=2) + "\n").encode()]
    paths.model.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_all([(p, lambda fh, data=data: fh.write(data)) for p, data in zip(paths.files, blobs)])
    return StitchedLayers(paths, resampled, diff, top)


@dataclass
class ImageCheck:
    """The stitched model against the three steps on real images."""

    images: int
    max_abs_diff: float
    max_abs_logit: float
    top1_agreement: float


def check_on_images(model: str | Path, a: LayerSide, b: LayerSide, amap: AffineMap, images: ImageSet, *,
                    count: int = 256, batch: int = 64) -> ImageCheck:
    """Run the written stitched model and the three steps on the first ``count`` of ``images`` (A's preprocessing)."""
    n = min(count, len(images))
    if n == 0:
        raise ModelError("no images to check the stitched model on")
    sess = open_session(Path(model), str(model))
    diff = top = 0.0
    agree = 0
    for lo in range(0, n, batch):
        x = np.stack([a.spec.preprocess(images.load(i)) for i in range(lo, min(n, lo + batch))]).astype(np.float32)
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        want = three_step_logits(a, b, amap, x)
        diff, top = max(diff, float(np.abs(got.astype(np.float64) - want).max())), max(top, float(np.abs(want).max()))
        agree += int((got.argmax(1) == want.argmax(1)).sum())
    return ImageCheck(n, diff, top, agree / n)

