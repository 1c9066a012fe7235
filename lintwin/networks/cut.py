"""Cut a whole ONNX classifier at a tensor into lintwin's backbone + head + sidecar, checked.

The two parts are cut out with onnx's own ``onnx.utils.Extractor``: the backbone is everything
from the image to the cut tensor, the head everything from the cut tensor to the logits. The cut
is refused unless it separates the graph (no node after it reads a tensor from before it: a skip
connection or a parallel branch across the cut would leave the head needing the image), and
unless head(backbone(x)) equals the model's output on a probe to 1e-5 relative. A cut tensor
that is not a vector per image (N x C x H x W, N x T x C) leaves the backbone flattened and the
head reshaping it back, both joined by ``onnx.compose``, so every lintwin command reads the parts
like any backbone and head (features N x C·H·W).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper
from onnx.utils import Extractor

from ..errors import ModelError
from ..storage.store import check_name
from .layers import Layer, ModelGraph, read_model
from .onnx_models import ModelSpec, file_sha256, open_session

__all__ = ["ROUND_TRIP_TOLERANCE", "SplitResult", "check_cut", "cut_parts", "split_model", "with_layer_shape"]

ROUND_TRIP_TOLERANCE = 1e-5  # max |head(backbone(x)) - model(x)| relative to max |model(x)|
PROBE_IMAGES = 4
_DESCRIPTIVE = ("class_names", "trained_on", "test_accuracy")


@dataclass
class SplitResult:
    """The written parts, the cut, and the round-trip check on the probe."""

    backbone: Path
    head: Path
    sidecar: Path
    cut: Layer
    feature_dim: int
    classes: int
    max_abs_diff: float
    max_abs_output: float

    @property
    def relative_diff(self) -> float:
        return self.max_abs_diff / max(self.max_abs_output, np.finfo(np.float32).tiny)


def _choose_cut(graph: ModelGraph, at: str | None) -> Layer:
    name = graph.path.name
    if at is None:
        cut = graph.classifier_input
        if cut is None:
            raise ModelError(f"{name} has no final linear classifier (Gemm, or MatMul + Add with constant weights, "
                             "on a vector per image) to cut before: give the cut with --at "
                             f"(`lintwin layers {name}` lists the tensors and marks the cuts)")
        return cut
    return check_cut(graph, graph.layer(at))


def check_cut(graph: ModelGraph, cut: Layer) -> Layer:
    """``cut`` if everything after it needs nothing but it (not the output, no skip connection across it)."""
    name = graph.path.name
    if cut.name in graph.outputs:
        raise ModelError(f"{cut.name} is {name}'s output: a head after it would be empty; cut at an earlier tensor")
    crossing = graph.crossings(cut.name)
    if crossing or not cut.separates:
        shown = "; ".join(f"node {n} reads {t}" for n, t in crossing[:3])
        more = f" (and {len(crossing) - 3} more)" if len(crossing) > 3 else ""
        raise ModelError(f"the cut at {cut.name} does not separate {name}: {shown}{more} from before the cut "
                         "(a skip connection or parallel branch across it); cut at a tensor every path from the image "
                         f"passes through (`lintwin layers {name}` marks them)")
    return cut


def with_layer_shape(model: onnx.ModelProto, cut: Layer) -> onnx.ModelProto:
    """A copy of ``model`` whose value_info gives the cut's full shape (batch symbolic), for the Extractor."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    elem = next((vi.type.tensor_type.elem_type for vi in m.graph.value_info if vi.name == cut.name),
                TensorProto.FLOAT)
    keep = [vi for vi in m.graph.value_info if vi.name != cut.name]
    del m.graph.value_info[:]
    m.graph.value_info.extend([*keep, helper.make_tensor_value_info(cut.name, elem, ["N", *cut.shape])])
    return m


def _fresh(name: str, model: onnx.ModelProto) -> str:
    used = {t for n in model.graph.node for t in (*n.input, *n.output)} | {i.name for i in model.graph.input}
    while name in used:
        name = f"lintwin_{name}"
    return name


def _reshaper(src: str, src_shape: list[int], dst: str, shape: list[int], like: onnx.ModelProto,
              what: str) -> onnx.ModelProto:
    """A one-node model ``dst = reshape(src)`` (batch kept) with ``like``'s opset and IR version."""
    target = numpy_helper.from_array(np.asarray([-1, *shape], np.int64), f"{dst}_shape")
    node = helper.make_node("Reshape", [src, target.name], [dst], name=what)
    graph = helper.make_graph([node], what, [helper.make_tensor_value_info(src, TensorProto.FLOAT, ["N", *src_shape])],
                              [helper.make_tensor_value_info(dst, TensorProto.FLOAT, ["N", *shape])],
                              initializer=[target])
    model = helper.make_model(graph, opset_imports=list(like.opset_import), producer_name="lintwin")
    model.ir_version = like.ir_version
    return model


def cut_parts(graph: ModelGraph, cut: Layer) -> tuple[onnx.ModelProto, onnx.ModelProto, str]:
    """Backbone (image → features N x D) and head (features → outputs), and the features' name."""
    extractor = Extractor(with_layer_shape(graph.model, cut))
    backbone = extractor.extract_model([graph.input_name], [cut.name])
    head = extractor.extract_model([cut.name], graph.outputs)
    if cut.kind == "vector":
        return backbone, head, cut.name
    features = _fresh("features", graph.model)
    flat = _reshaper(cut.name, list(cut.shape), features, [cut.values], backbone, "lintwin_flatten_cut")
    unflat = _reshaper(features, [cut.values], cut.name, list(cut.shape), head, "lintwin_unflatten_cut")
    backbone = compose.merge_models(backbone, flat, io_map=[(cut.name, cut.name)])
    head = compose.merge_models(unflat, head, io_map=[(cut.name, cut.name)])
    return backbone, head, features


def _round_trip(path: Path, backbone: onnx.ModelProto, head: onnx.ModelProto,
                chw: tuple[int, int, int]) -> tuple[float, float]:
    """max |head(backbone(x)) - model(x)| and max |model(x)| on a seeded probe of standard normal inputs."""
    x = np.random.default_rng(0).standard_normal((PROBE_IMAGES, *chw)).astype(np.float32)
    full, bb, hd = (open_session(m, label) for m, label in
                    ((path, path.name), (backbone.SerializeToString(), "the backbone"),
                     (head.SerializeToString(), "the head")))
    want = full.run(None, {full.get_inputs()[0].name: x})[0]
    feats = bb.run(None, {bb.get_inputs()[0].name: x})[0]
    got = hd.run(None, {hd.get_inputs()[0].name: feats})[0]
    return float(np.abs(got.astype(np.float64) - want).max()), float(np.abs(want).max())


def split_model(model_path: str | Path, out_dir: str | Path, name: str, *, at: str | None = None,
                preprocess: str | Path | None = None) -> SplitResult:
    """Write ``NAME.backbone.onnx``, ``NAME.head.onnx`` and ``NAME.json`` into ``out_dir``, cut at ``at``.

    Without ``at`` the cut is the classifier's input. ``preprocess`` is the sidecar giving the
    model's preprocessing (default: ``MODEL.json`` beside the model); its descriptive keys
    (class names, training data, accuracy) are copied into the new sidecar.
    """
    model_path, out_dir = Path(model_path), Path(out_dir)
    check_name(name, "network")
    spec = ModelSpec.for_model(model_path, preprocess)
    graph = read_model(model_path, spec.preprocess)
    if len(graph.outputs) != 1:
        raise ModelError(f"{model_path.name} has {len(graph.outputs)} outputs; a classifier to split has one "
                         "(N x classes)")
    out_shape = graph.layers.get(graph.outputs[0])
    if out_shape is None or out_shape.kind != "vector":
        raise ModelError(f"{model_path.name}'s output is not N x classes; lintwin splits classifiers")
    cut = _choose_cut(graph, at)
    backbone, head, features = cut_parts(graph, cut)
    for part, what in ((backbone, "backbone"), (head, "head")):
        try:
            onnx.checker.check_model(part)
        except onnx.checker.ValidationError as exc:
            raise ModelError(f"the {what} cut at {cut.name} does not pass onnx's checker: {str(exc)[:300]}") from None
    diff, top = _round_trip(model_path, backbone, head, graph.input_shape)
    rel = diff / max(top, np.finfo(np.float32).tiny)
    if not rel <= ROUND_TRIP_TOLERANCE:
        raise ModelError(f"head(backbone(x)) differs from {model_path.name}'s output by up to {diff:.3g} "
                         f"({rel:.3g} relative, more than {ROUND_TRIP_TOLERANCE:g}) on a probe; not written")
    classes = out_shape.values
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = (out_dir / f"{name}.backbone.onnx", out_dir / f"{name}.head.onnx", out_dir / f"{name}.json")
    onnx.save(backbone, str(paths[0]))
    onnx.save(head, str(paths[1]))
    sidecar = {"name": name, "backbone": paths[0].name, "head": paths[1].name, "feature_dim": cut.values,
               "classes": classes, "preprocess": spec.preprocess.as_dict(),
               **{k: spec.raw[k] for k in _DESCRIPTIVE if k in spec.raw},
               "notes": (f"split by lintwin from {model_path.name} (sha256 {file_sha256(model_path)[:16]}…) at "
                         f"tensor {cut.name} ({cut.op}, {cut.dims()})"
                         + ("" if cut.kind == "vector" else f", flattened to {features} (N x {cut.values})"))}
    paths[2].write_text(json.dumps(sidecar, indent=2) + "\n")
    return SplitResult(*paths, cut=cut, feature_dim=cut.values, classes=classes, max_abs_diff=diff,
                       max_abs_output=top)

