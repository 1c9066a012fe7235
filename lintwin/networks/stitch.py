"""Stitched models: A's backbone, an affine map and B's head as one ONNX model (image → B's logits).

Built with onnx's own composition tools: the map is a one-node Gemm graph made with
``onnx.helper``, joined to the backbone and the head by ``onnx.compose.merge_models``. Next to
the full model ``A_to_B.onnx`` go ``A_to_B.backbone.onnx`` (image → mapped features),
``A_to_B.head.onnx`` (B's head) and the sidecar ``A_to_B.json``, so lintwin can extract,
score and compare the stitched network like any other.

The four files are checked before any work (:func:`stitch_outputs`): none may be a folder or
replace one of the inputs (the backbone, the head, their sidecars and the models those name,
the map file), compared by resolved path and by inode. They are written as a set: all four
are written to temporary files first and renamed into place only once every one is complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..affine import AffineMap
from ..core.files import atomic_write_all
from ..core.outputs import check_output_file
from ..core.xp import to_numpy
from ..errors import LintwinError, MapFileError, ModelError, ShapeError, UnsafePathError
from .images import ImageSet
from .layers import load_onnx
from .onnx_models import Backbone, Head, NetworkSpec

__all__ = ["StitchCheck", "Stitched", "check_stitched", "merge", "opset_of", "same_opset", "stitch", "stitch_outputs"]


def _io(model: Any, path: Path) -> tuple[str, str]:
    consts = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in consts]
    if len(inputs) != 1 or len(model.graph.output) < 1:
        raise ModelError(f"{path} must have one input and at least one output")
    return inputs[0], model.graph.output[0].name


def opset_of(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _map_model(amap: AffineMap, opset: int, ir_version: int) -> Any:
    """features (batch x src_dim) → mapped (batch x dst_dim) as one Gemm, float32 weights."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ascontiguousarray(to_numpy(amap.weight), np.float32), "map_weight")
    b = numpy_helper.from_array(np.ascontiguousarray(to_numpy(amap.bias), np.float32), "map_bias")
    node = helper.make_node("Gemm", ["features", "map_weight", "map_bias"], ["mapped"], transB=1)
    graph = helper.make_graph(
        [node], f"map {amap.src} to {amap.dst}",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", amap.src_dim])],
        [helper.make_tensor_value_info("mapped", TensorProto.FLOAT, ["batch", amap.dst_dim])],
        initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="lintwin")
    model.ir_version = ir_version
    return model


def same_opset(model: Any, opset: int, path: Path) -> Any:
    from onnx import version_converter

    if opset_of(model) == opset:
        return model
    try:
        return version_converter.convert_version(model, opset)
    except Exception as exc:  # noqa: BLE001  the converter raises plain RuntimeErrors for unsupported ops
        raise ModelError(f"{path} uses opset {opset_of(model)} and cannot be converted to the backbone's opset "
                         f"{opset} ({type(exc).__name__})") from None


def merge(first: Any, second: Any, io_map: list[tuple[str, str]], prefix: str) -> Any:
    from onnx import compose

    ir = max(first.ir_version, second.ir_version)
    first.ir_version = second.ir_version = ir
    return compose.merge_models(first, second, io_map=io_map, prefix2=prefix)


def _spec(path: Path) -> NetworkSpec | None:
    try:
        return NetworkSpec.for_model(path)
    except LintwinError:
        return None


@dataclass
class Stitched:
    model: Path
    backbone: Path
    head: Path
    sidecar: Path
    name: str

    @property
    def files(self) -> list[Path]:
        return [self.model, self.backbone, self.head, self.sidecar]


def _same_file(a: Path, b: Path) -> bool:
    """Whether writing ``a`` would replace ``b``: the same resolved path, or the same inode (a hard link)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def stitch_outputs(out: str | Path, backbone: str | Path, head: str | Path, *,
                   also: Sequence[str | Path] = ()) -> Stitched:
    """The four files a stitch to ``out`` writes, checked before any work.

    Each must be writable and not a folder, and none may replace an input: ``backbone``,
    ``head``, ``also`` (e.g. the map file), the sidecars beside them and the models those name.
    """
    out = Path(out)
    if out.suffix != ".onnx" or out.name == ".onnx":
        raise LintwinError(f"the stitched model's file must end in .onnx, got {out.name}")
    name = out.name[: -len(".onnx")]
    paths = Stitched(out, out.with_name(f"{name}.backbone.onnx"), out.with_name(f"{name}.head.onnx"),
                     out.with_name(f"{name}.json"), name)
    for path in paths.files:
        check_output_file(path, "-o" if path == out else "the stitched model's part")
    inputs = [Path(backbone), Path(head), *(Path(p) for p in also)]
    for spec in (_spec(Path(backbone)), _spec(Path(head))):
        if spec is not None:
            inputs += [p for p in (spec.sidecar, spec.backbone_path, spec.head_path) if p is not None]
    for path in paths.files:
        for source in inputs:
            if source.exists() and _same_file(path, source):
                raise UnsafePathError(f"-o {out} would replace {source}, an input of this stitch "
                                      f"(it writes {', '.join(p.name for p in paths.files)}): choose another name "
                                      "or folder")
    return paths


def stitch(backbone: str | Path, amap: AffineMap, head: str | Path, out: str | Path, *,
           also: Sequence[str | Path] = ()) -> Stitched:
    """Write ``out`` (image → B's logits) and its lintwin parts and sidecar; refuse mismatched inputs.

    ``also`` lists further inputs (the map's file) that the outputs must not replace.
    """
    import onnx

    backbone, head, out = Path(backbone), Path(head), Path(out)
    paths = stitch_outputs(out, backbone, head, also=also)
    spec_a, spec_b = _spec(backbone), _spec(head)
    if spec_a is None:
        raise ModelError(f"no sidecar next to {backbone} (its preprocessing goes into the stitched model's sidecar)")
    for spec, role, name in ((spec_a, "source", amap.src), (spec_b, "target", amap.dst)):
        if spec is not None and spec.name != name:
            raise MapFileError(f"map {amap.name} has {role} {name!r}, but {spec.root / spec.raw.get('name', '')} "
                               f"describes {spec.name!r}")
    bb, hd = load_onnx(backbone), load_onnx(head)
    bb_in, bb_out = _io(bb, backbone)
    hd_in, _ = _io(hd, head)
    if spec_a.feature_dim != amap.src_dim:
        raise ShapeError(f"map {amap.name} expects {amap.src_dim}-dim features, {backbone.name} gives "
                         f"{spec_a.feature_dim}")
    head_dim = Head(head).feature_dim
    if head_dim is not None and head_dim != amap.dst_dim:
        raise ShapeError(f"map {amap.name} gives {amap.dst_dim}-dim features, {head.name} expects {head_dim}")
    opset = opset_of(bb)
    hd = same_opset(hd, opset, head)
    front = merge(bb, _map_model(amap, opset, bb.ir_version), [(bb_out, "features")], "map_")
    full = merge(onnx.load_from_string(front.SerializeToString()), hd, [("map_mapped", hd_in)], "head_")
    try:
        onnx.checker.check_model(full)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"the stitched model does not pass onnx's checker: {str(exc)[:300]}") from None
    name = paths.name
    classes = spec_b.classes if spec_b is not None else int(full.graph.output[0].type.tensor_type.shape.dim[-1].dim_value)
    sidecar = {
        "name": name,
        "backbone": paths.backbone.name,
        "head": paths.head.name,
        "feature_dim": amap.dst_dim,
        "classes": classes,
        "preprocess": spec_a.preprocess.as_dict(),
        "notes": (f"stitched by lintwin: backbone {backbone} → map {amap.name} ({amap.method}) → head {head}; "
                  f"the whole network is {paths.model.name} (input {bb_in!r}, output {full.graph.output[0].name!r}); "
                  f"its backbone gives {amap.dst}-space features"),
    }
    if spec_b is not None and "class_names" in spec_b.raw:
        sidecar["class_names"] = spec_b.raw["class_names"]
    model_bytes, front_bytes, head_bytes = full.SerializeToString(), front.SerializeToString(), head.read_bytes()
    sidecar_bytes = (json.dumps(sidecar, indent=2) + "\n").encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_all([(paths.model, lambda fh: fh.write(model_bytes)),
                      (paths.backbone, lambda fh: fh.write(front_bytes)),
                      (paths.head, lambda fh: fh.write(head_bytes)),
                      (paths.sidecar, lambda fh: fh.write(sidecar_bytes))])
    return paths


@dataclass
class StitchCheck:
    images: int
    max_logit_diff: float
    max_logit: float
    top1_agreement: float


def check_stitched(stitched: Stitched, backbone: str | Path, amap: AffineMap, head: str | Path, images: ImageSet,
                   *, count: int = 256, batch: int = 64) -> StitchCheck:
    """Compare the stitched model with backbone → map → head run as three steps, on ``count`` images."""
    import onnxruntime as ort

    spec = NetworkSpec.for_model(backbone)
    n = min(count, len(images))
    if n == 0:
        raise LintwinError("no images to check the stitched model on")
    bb, hd = Backbone(backbone), Head(head)
    sess = ort.InferenceSession(str(stitched.model), providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    diff, top, agree = 0.0, 0.0, 0
    for lo in range(0, n, batch):
        x = np.stack([spec.preprocess(images.load(i)) for i in range(lo, min(n, lo + batch))]).astype(np.float32)
        want = hd(np.asarray(to_numpy(amap.apply(bb(x))), np.float32))
        got = sess.run(None, {in_name: x})[0]
        diff = max(diff, float(np.abs(got - want).max()))
        top = max(top, float(np.abs(want).max()))
        agree += int((got.argmax(1) == want.argmax(1)).sum())
    return StitchCheck(n, diff, top, agree / n)
