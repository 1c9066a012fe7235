"""Maps from the classifier heads alone, with no images (the follow-up paper's head-only maps).

For networks A and B classifying the same classes, with affine heads ``C_A(x) = W_A x + b_A``
and ``C_B(y) = W_B y + b_B``, the map ``M x + c`` from A's features into B's feature space
with ``C_B(M x + c) = C_A(x)`` for every x solves ``W_B M = W_A`` and ``W_B c = b_A - b_B``.
It is exact when ``W_B`` has full row rank (B's head has no more classes than feature
dimensions: the minimum-norm solution), and the least-squares one otherwise. Such a map
reproduces A's logits through B's head; it says nothing about whether B's own features of
an image look like the mapped ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..affine import AffineMap
from ..errors import ModelError, ShapeError

__all__ = ["AffineHead", "head_map", "read_affine_head"]


class AffineHead:
    """The weight (classes x dim) and bias (classes,) of a single-affine-layer ONNX head, in float64."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, path: Path):
        self.weight, self.bias, self.path = weight, bias, path

    @property
    def classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.weight.shape[1])

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight.T + self.bias


def _refuse(path: Path, why: str) -> ModelError:
    return ModelError(f"{path} is not a single affine layer (Gemm, or MatMul + Add) as --method heads needs: {why}")


def read_affine_head(path: str | Path) -> AffineHead:
    """Read W and b of an ONNX head that is one affine layer; refuse anything else with the reason."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no ONNX model at {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001  onnx raises DecodeError and friends for files that are not ONNX
        raise ModelError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t).astype(np.float64)
    nodes = [n for n in graph.node if n.op_type not in ("Constant", "Identity")]
    inputs = [i.name for i in graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise _refuse(path, f"{len(inputs)} non-constant inputs")
    ops = [n.op_type for n in nodes]
    if ops == ["Gemm"]:
        weight, bias = _gemm(nodes[0], consts, inputs[0], path)
    elif ops == ["MatMul", "Add"]:
        weight, bias = _matmul_add(nodes, consts, inputs[0], path)
    else:
        raise _refuse(path, f"its graph is {' → '.join(ops) or 'empty'}")
    if weight.ndim != 2 or bias.shape != (weight.shape[0],):
        raise _refuse(path, f"weight {weight.shape} and bias {bias.shape} do not form an affine layer")
    return AffineHead(weight, bias, path)


def _const(consts: dict[str, np.ndarray], name: str, path: Path, what: str) -> np.ndarray:
    if name not in consts:
        raise _refuse(path, f"its {what} {name!r} is not a constant")
    return consts[name]


def _gemm(node, consts: dict[str, np.ndarray], x: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Y = alpha * A' B' + beta * C with A = features, B the weight: our weight is (alpha B')^T."""
    attrs = {a.name: a for a in node.attribute}
    alpha = attrs["alpha"].f if "alpha" in attrs else 1.0
    beta = attrs["beta"].f if "beta" in attrs else 1.0
    if "transA" in attrs and attrs["transA"].i:
        raise _refuse(path, "Gemm transposes its features input")
    if node.input[0] != x:
        raise _refuse(path, "the Gemm does not read the head's input")
    w = _const(consts, node.input[1], path, "weight")
    w = alpha * (w if ("transB" in attrs and attrs["transB"].i) else w.T)  # (classes x dim)
    if len(node.input) > 2 and node.input[2]:
        c = _const(consts, node.input[2], path, "bias")
        bias = beta * np.broadcast_to(c.reshape(-1), (w.shape[0],)).astype(np.float64)
    else:
        bias = np.zeros(w.shape[0])
    return np.asarray(w), np.array(bias)


def _matmul_add(nodes, consts: dict[str, np.ndarray], x: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    mm, add = nodes
    if mm.input[0] != x:
        raise _refuse(path, "the MatMul does not multiply the head's input from the left")
    w = _const(consts, mm.input[1], path, "weight").T
    others = [i for i in add.input if i != mm.output[0]]
    if len(others) != 1 or len(add.input) != 2:
        raise _refuse(path, "the Add does not add a bias to the MatMul's output")
    bias = np.broadcast_to(_const(consts, others[0], path, "bias").reshape(-1), (w.shape[0],)).astype(np.float64)
    return w, bias


def head_map(head_a: AffineHead, head_b: AffineHead, src: str, dst: str) -> AffineMap:
    """The map src→dst with ``C_B(M x + c)`` reproducing ``C_A(x)`` (exact where ``W_B`` has full row rank)."""
    if head_a.classes != head_b.classes:
        raise ShapeError(f"heads of {src} ({head_a.classes} classes) and {dst} ({head_b.classes} classes) do not "
                         "classify the same classes; a head-only map needs the same classes in the same order")
    wb = head_b.weight
    # min-norm least squares: lstsq gives the minimum-norm solution of W_B [M c] = [W_A, b_A - b_B]
    rhs = np.concatenate([head_a.weight, (head_a.bias - head_b.bias)[:, None]], axis=1)
    sol, _, rank, sv = np.linalg.lstsq(wb, rhs, rcond=None)
    weight, bias = sol[:, :-1], sol[:, -1]
    exact = bool(rank == wb.shape[0])
    resid = wb @ sol - rhs
    scale = max(float(np.abs(rhs).max()), 1e-300)
    stats = {"exact": exact, "target_head_rank": int(rank), "classes": head_b.classes, "target_dim": head_b.feature_dim,
             "max_logit_residual_per_unit_input": float(np.abs(resid).max()), "relative_residual": float(
                 np.abs(resid).max() / scale), "condition": float(sv[0] / sv[-1]) if sv[-1] > 0 else float("inf")}
    return AffineMap(weight, bias, src=src, dst=dst, method="heads", n_train=0, stats=stats,
                     options={"heads": [str(head_a.path), str(head_b.path)]})
