"""The tensors of an ONNX model that can serve as layers: names, ops, shapes, cuts, the classifier's input.

A *layer* is a float tensor that a node produces from the image and whose first axis is the
batch. Its shape is read as ONNX lays tensors out: ``N x C`` a vector per image, ``N x C x H x W``
a spatial map (NCHW), ``N x T x C`` tokens (the transformer layout); any other rank can only be
flattened. Shapes come from onnx's shape inference (with data propagation) at the model's input
size; where inference cannot tell, one probe run of onnxruntime on a blank input gives them.

A layer is a *cut* when every path from the input to the outputs passes through it (a skip
connection or a parallel branch around it means it is not). The *classifier input* is the
vector that feeds the final linear classifier (Gemm, or MatMul [+ Add], with constant weights,
optionally followed by Softmax): where a backbone ends and a head begins.
"""

from __future__ import annotations

import difflib
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, shape_inference

from ..errors import ModelError
from .preprocess import Preprocess
from .taps import Taps, dim_value, typed_shapes

__all__ = ["Layer", "ModelGraph", "load_onnx", "model_graph", "read_model"]

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
PROBE_BATCH = 2  # the probe's batch: a first axis of this size where inference left it open is the batch
_PASS_THROUGH = {"Identity", "Softmax", "LogSoftmax", "Dropout"}  # after the classifier's linear layer


@dataclass(frozen=True)
class Layer:
    """One tensor that can be read out per image. ``shape`` excludes the batch axis."""

    name: str
    op: str
    node: str
    shape: tuple[int, ...]
    shape_from: str  # "inference" or "probe"
    separates: bool
    classifier_input: bool = False

    @property
    def kind(self) -> str:
        """``vector`` (N x C), ``spatial`` (N x C x H x W), ``tokens`` (N x T x C) or ``other``."""
        return {1: "vector", 2: "tokens", 3: "spatial"}.get(len(self.shape), "other")

    @property
    def values(self) -> int:
        """Values per image (C·H·W for a spatial map)."""
        return math.prod(self.shape)

    @property
    def channels(self) -> int | None:
        """Values per position: C (the one axis that is not the grid); None for other ranks."""
        return {"vector": self.shape[0], "spatial": self.shape[0], "tokens": self.shape[-1]}.get(self.kind)

    @property
    def grid(self) -> tuple[int, ...] | None:
        """Positions: (H, W) of a spatial map, (T,) of tokens, () of a vector; None for other ranks."""
        return {"vector": (), "spatial": self.shape[1:], "tokens": self.shape[:1]}.get(self.kind)

    def dims(self) -> str:
        return " x ".join(["N", *map(str, self.shape)])

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "node": self.node, "shape": ["N", *self.shape],
                "values": self.values, "kind": self.kind, "channels": self.channels,
                "grid": None if self.grid is None else list(self.grid), "shape_from": self.shape_from,
                "separates": self.separates, "classifier_input": self.classifier_input}


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """An ONNX model from a file, or one ``Error:`` line saying why not."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no ONNX model at {path}")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001  onnx raises DecodeError and friends for files that are not ONNX
        raise ModelError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None


@dataclass
class ModelGraph:
    """An ONNX model read for its layers: input, outputs, producers and consumers, every layer."""

    path: Path
    model: onnx.ModelProto  # with the input fixed to N x C x H x W and shapes inferred
    input_name: str
    input_shape: tuple[int, int, int]
    outputs: list[str]
    layers: dict[str, Layer]
    producer: dict[str, Any] = field(repr=False)
    live: set[str] = field(repr=False)  # tensors computed from the image (not constants)

    @property
    def classifier_input(self) -> Layer | None:
        return next((la for la in self.layers.values() if la.classifier_input), None)

    def layer(self, name: str) -> Layer:
        """The layer called ``name``; a name that is not one is refused with the nearest names."""
        if name in self.layers:
            return self.layers[name]
        if name in self.producer:
            raise ModelError(f"tensor {name!r} of {self.path.name} is not a layer: it is not a float tensor with the "
                             "batch as its first axis (`lintwin layers` lists the layers)")
        near = difflib.get_close_matches(name, list(self.layers), n=5, cutoff=0.5) or \
            [n for n in self.layers if name.lower() in n.lower()][:5]
        hint = f"; nearest: {', '.join(near)}" if near else ""
        raise ModelError(f"{self.path.name} has no tensor {name!r}{hint} (`lintwin layers {self.path.name}` lists "
                         "them all)")

    def crossings(self, name: str) -> list[tuple[str, str]]:
        """``(node, tensor)`` pairs that make ``name`` no cut: a node after the cut that reads a tensor from before it.

        Empty when every path from the input to the outputs passes through ``name``.
        """
        before = self._ancestors(name)
        before_ids = {id(n) for n in before}
        before_tensors = ({o for n in before for o in n.output} & self.live) | {self.input_name}
        out = []
        for node in self._needed_for_outputs(stop=name):
            if id(node) in before_ids:
                continue
            for t in node.input:
                if t and t != name and t in before_tensors:
                    out.append((node.name or node.op_type, t))
        return out

    def _ancestors(self, tensor: str) -> list[Any]:
        seen: dict[int, Any] = {}
        todo = deque([tensor])
        while todo:
            node = self.producer.get(todo.popleft())
            if node is None or id(node) in seen:
                continue
            seen[id(node)] = node
            todo.extend(t for t in node.input if t)
        return list(seen.values())

    def _needed_for_outputs(self, stop: str) -> list[Any]:
        seen: dict[int, Any] = {}
        todo = deque(self.outputs)
        while todo:
            t = todo.popleft()
            node = None if t == stop else self.producer.get(t)
            if node is None or id(node) in seen:
                continue
            seen[id(node)] = node
            todo.extend(x for x in node.input if x)
        return list(seen.values())


def _input(model: onnx.ModelProto, path: Path, preprocess: Preprocess | None) -> tuple[str, tuple[int, int, int]]:
    consts = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise ModelError(f"{path.name} has {len(inputs)} inputs; lintwin reads models with one image input")
    inp = inputs[0]
    dims = [dim_value(d) for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise ModelError(f"{path.name} takes a {len(dims)}-D input; lintwin reads models of images N x C x H x W")
    if isinstance(dims[0], int):
        raise ModelError(f"{path.name} has a fixed batch size of {dims[0]}; export it with a dynamic batch axis")
    want = None if preprocess is None else (preprocess.channels, *preprocess.size)
    shape = []
    for axis, got in enumerate(dims[1:]):
        if isinstance(got, int):
            if want is not None and want[axis] != got:
                raise ModelError(f"{path.name} takes images of {' x '.join(map(str, dims[1:]))}, the sidecar's "
                                 f"preprocessing gives {' x '.join(map(str, want))} "
                                 f"({('channels', 'height', 'width')[axis]} differ)")
            shape.append(got)
        elif want is not None:
            shape.append(want[axis])
        else:
            raise ModelError(f"{path.name} does not fix its input's {('channels', 'height', 'width')[axis]}: give "
                             "its sidecar (the preprocessing says the size)")
    return inp.name, (shape[0], shape[1], shape[2])


def _fixed_input(model: onnx.ModelProto, name: str, chw: tuple[int, int, int]) -> tuple[onnx.ModelProto, str]:
    """A copy of ``model`` whose input is N x C x H x W, shapes inferred, and the batch's symbol.

    The batch keeps the model's own symbol (its outputs are declared with it), else ``N``.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inp = next(i for i in m.graph.input if i.name == name)
    dims = inp.type.tensor_type.shape.dim
    batch = dims[0].dim_param or "N"
    dims[0].Clear()
    dims[0].dim_param = batch
    for d, v in zip(list(dims)[1:], chw):
        d.Clear()
        d.dim_value = v
    try:
        return shape_inference.infer_shapes(m, data_prop=True), batch
    except Exception:  # noqa: BLE001  inference gives up on some models; the probe then tells every shape
        return m, batch


def _from_input(model: onnx.ModelProto, input_name: str) -> set[str]:
    """Tensors computed from the image (not constants)."""
    reached = {input_name}
    for node in model.graph.node:  # nodes are stored in topological order (ONNX requires it)
        if any(t in reached for t in node.input):
            reached.update(o for o in node.output if o)
    return reached


def _separates(model: onnx.ModelProto, input_name: str, outputs: set[str], cut: str) -> bool:
    """Whether every path from the input to the outputs passes through ``cut``."""
    if cut in outputs:
        return False
    reached = {input_name}
    for node in model.graph.node:
        if any(t in reached and t != cut for t in node.input):
            reached.update(o for o in node.output if o)
    return not (reached & outputs)


def _constants(model: onnx.ModelProto) -> set[str]:
    g = model.graph
    return {t.name for t in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}


def _classifier_input(model: onnx.ModelProto, producer: dict[str, Any], outputs: list[str]) -> str | None:
    """The tensor feeding the final Gemm / MatMul [+ Add] of a one-output model, or None."""
    if len(outputs) != 1:
        return None
    consts = _constants(model)
    node = producer.get(outputs[0])
    while node is not None and node.op_type in _PASS_THROUGH:
        node = producer.get(node.input[0])
    if node is None:
        return None
    if node.op_type == "Add":
        operands = [producer.get(t) for t in node.input if t not in consts]
        if len(operands) != 1 or len(node.input) != 2 or operands[0] is None:
            return None
        node = operands[0]
    if node.op_type == "Gemm" and len(node.input) >= 2 and node.input[1] in consts and node.input[0] not in consts:
        return node.input[0]
    if node.op_type == "MatMul" and node.input[1] in consts and node.input[0] not in consts:
        return node.input[0]
    return None


def read_model(path: str | Path, preprocess: Preprocess | None = None) -> ModelGraph:
    """Read ``path``'s layers. ``preprocess`` gives the input size where the model leaves it open."""
    path = Path(path)
    return model_graph(load_onnx(path), path, preprocess)


def model_graph(model: onnx.ModelProto, path: Path, preprocess: Preprocess | None = None) -> ModelGraph:
    """The layers of a model already in memory (``path`` names it in messages)."""
    input_name, chw = _input(model, path, preprocess)
    inferred, batch = _fixed_input(model, input_name, chw)
    g = inferred.graph
    producer = {o: n for n in g.node for o in n.output if o}
    outputs = [o.name for o in g.output]
    typed = typed_shapes(inferred)
    live = _from_input(inferred, input_name)
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    unknown = []
    for node in g.node:
        for t in node.output:
            if not t or t not in live or t not in typed or typed[t][0] not in FLOAT_TYPES:
                continue
            dims = typed[t][1]
            if dims is not None and len(dims) >= 2 and dims[0] == batch and all(isinstance(d, int) for d in dims[1:]):
                shapes[t] = (tuple(dims[1:]), "inference")
            elif dims is None or (len(dims) >= 2 and not isinstance(dims[0], int)):
                unknown.append(t)
    if unknown:
        shapes.update(_probe(inferred, chw, unknown, path))
    classifier = _classifier_input(inferred, producer, outputs)
    out_set = set(outputs)
    layers = {}
    for node in g.node:
        for t in node.output:
            if t in shapes:
                shape, source = shapes[t]
                layers[t] = Layer(t, node.op_type, node.name, shape, source,
                                  _separates(inferred, input_name, out_set, t),
                                  classifier_input=(t == classifier and len(shape) == 1))
    return ModelGraph(path, inferred, input_name, chw, outputs, layers, producer, live)


def _probe(model: onnx.ModelProto, chw: tuple[int, int, int], tensors: list[str],
           path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shapes inference left open, from one run on a blank input of ``PROBE_BATCH`` images."""
    outs = Taps(model, tensors, f"{path.name} (probe)")(np.zeros((PROBE_BATCH, *chw), np.float32))
    found = {}
    for t, value in zip(tensors, outs, strict=True):
        if value.ndim >= 2 and value.shape[0] == PROBE_BATCH:
            found[t] = (tuple(int(d) for d in value.shape[1:]), "probe")
    return found
