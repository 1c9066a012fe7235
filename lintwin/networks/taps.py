"""One forward pass, many tensors: onnxruntime over a model with chosen tensors as its outputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import ShapeError
from .onnx_models import open_session

__all__ = ["Taps", "dim_value", "typed_shapes"]


def dim_value(d: Any) -> int | str | None:
    """An ONNX dimension: its size, its symbol, or None when unknown."""
    if d.HasField("dim_value"):
        return int(d.dim_value)
    return d.dim_param or None


def typed_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, list | None]]:
    """Element type and shape (as inferred, if it was) of every tensor of ``model`` that has a type."""
    g = model.graph
    out = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and t.elem_type:
            out[vi.name] = (t.elem_type, [dim_value(d) for d in t.shape.dim] if t.HasField("shape") else None)
    return out


class Taps:
    """``model`` with exactly ``tensors`` as its outputs; calling it runs one forward pass for all of them."""

    def __init__(self, model: onnx.ModelProto, tensors: list[str], label: str):
        typed = typed_shapes(model)
        m = onnx.ModelProto()
        m.CopyFrom(model)
        del m.graph.output[:]
        m.graph.output.extend(helper.make_tensor_value_info(t, typed.get(t, (TensorProto.FLOAT, None))[0], None)
                              for t in tensors)
        self.tensors, self.label = list(tensors), label
        self.session = open_session(m.SerializeToString(), label)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        try:
            out = self.session.run(self.tensors, {self.input_name: np.ascontiguousarray(x, np.float32)})
        except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own types for bad inputs)
            raise ShapeError(f"{self.label} cannot run on input of shape {tuple(x.shape)} "
                             f"({type(exc).__name__}: {str(exc)[:200]})") from None
        return [np.asarray(v) for v in out]
