"""A network of the same architecture with random weights: the random-feature control of a stitching penalty.

A stitch can succeed from representations that share nothing with B's but the image they were
computed from (Hernandez et al. 2023; Smith et al. 2025). Stitching from the same architecture
with random weights says how much of a penalty any rich enough representation pays. The weight of
every ``Conv``, ``Gemm`` and ``MatMul`` node is redrawn from He's normal initialisation
(standard deviation sqrt(2 / fan-in), seeded), the biases of ``Conv`` and ``Gemm`` are set to zero,
and everything else (normalisation parameters, a ViT's class token and position embeddings,
shape constants) is kept.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..core.files import atomic_write_all
from ..core.outputs import check_output_file
from ..errors import ModelError, UnsafePathError
from .layers import load_onnx
from .onnx_models import ModelSpec, file_sha256

__all__ = ["Randomized", "randomize_model"]


@dataclass
class Randomized:
    model: Path
    sidecar: Path
    weights: int   # weight tensors redrawn
    biases: int    # bias tensors zeroed


def _fan_in(node: onnx.NodeProto, shape: tuple[int, ...]) -> int:
    if node.op_type == "Conv":
        return int(np.prod(shape[1:]))
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return int(shape[1] if trans_b else shape[0])
    return int(shape[-2]) if len(shape) >= 2 else int(shape[0])  # MatMul: x @ W, W is (.., in, out)


def randomize_model(path: str | Path, out: str | Path, *, seed: int = 0) -> Randomized:
    """Write ``out`` (``NAME.onnx``) and its sidecar ``NAME.json``: ``path`` with random weights (module docstring)."""
    path, out = Path(path), Path(out)
    if out.suffix != ".onnx":
        raise ModelError(f"the randomized model's file must end in .onnx, got {out.name}")
    spec = ModelSpec.for_model(path)
    side = out.with_suffix(".json")
    for target in (out, side):
        check_output_file(target, "-o" if target == out else "the randomized model's sidecar")
        for source in (path, spec.path):
            if target.exists() and target.resolve() == source.resolve():
                raise UnsafePathError(f"-o {out} would replace {source}, an input: choose another name or folder")
    model = load_onnx(path)
    inits = {t.name: t for t in model.graph.initializer}
    rng = np.random.default_rng(seed)
    weights = biases = 0
    done: set[str] = set()
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        w = node.input[1] if len(node.input) > 1 else ""
        if w in inits and w not in done:
            old = numpy_helper.to_array(inits[w])
            std = math.sqrt(2.0 / max(_fan_in(node, old.shape), 1))
            new = rng.standard_normal(old.shape).astype(old.dtype) * old.dtype.type(std)
            inits[w].CopyFrom(numpy_helper.from_array(new, w))
            done.add(w)
            weights += 1
        b = node.input[2] if len(node.input) > 2 and node.op_type != "MatMul" else ""
        if b in inits and b not in done:
            old = numpy_helper.to_array(inits[b])
            inits[b].CopyFrom(numpy_helper.from_array(np.zeros_like(old), b))
            done.add(b)
            biases += 1
    if not weights:
        raise ModelError(f"{path.name} has no Conv, Gemm or MatMul weights among its initializers to redraw")
    # the sidecar's own entry: as_dict() records every setting, which a preset's entry may not spell out
    sidecar = {"name": out.stem, "preprocess": spec.raw["preprocess"],
               **({"class_names": spec.raw["class_names"]} if "class_names" in spec.raw else {}),
               "notes": (f"{path.name} (sha256 {file_sha256(path)[:16]}…) with random weights (seed {seed}): {weights} "
                         f"Conv/Gemm/MatMul weights redrawn He-normal, {biases} biases zeroed; a random-feature "
                         "control, not a trained network")}
    blobs = [model.SerializeToString(), (json.dumps(sidecar, indent=2) + "\n").encode()]
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_all([(p, lambda fh, data=data: fh.write(data)) for p, data in zip((out, side), blobs)])
    return Randomized(out, side, weights, biases)
