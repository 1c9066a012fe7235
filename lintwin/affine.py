"""The affine map object: weight, bias and where they came from; apply, save, load."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._xp import from_numpy, namespace, to_numpy
from .errors import MapFileError, ShapeError

__all__ = ["AffineMap"]

_FORMAT = "lintwin.map/1"


@dataclass
class AffineMap:
    """``y ≈ weight @ x + bias`` from features of network ``src`` to those of ``dst``.

    ``weight`` is (dst_dim x src_dim). Arrays may be NumPy or CuPy; :meth:`apply` moves
    them to the namespace of its input. ``options`` holds the fitting method's settings,
    ``stats`` what the fit reported (solver used, rank, timings, ...), and ``loss_curve``
    the per-iteration loss of an Adam fit.
    """

    weight: Any
    bias: Any
    src: str = "A"
    dst: str = "B"
    method: str = "lstsq"
    options: dict = field(default_factory=dict)
    n_train: int = 0
    stats: dict = field(default_factory=dict)
    loss_curve: np.ndarray | None = None
    src_model_sha256: str | None = None
    dst_model_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.weight.ndim != 2 or self.bias.ndim != 1 or self.bias.shape[0] != self.weight.shape[0]:
            raise ShapeError(
                f"weight must be (dst_dim x src_dim) and bias (dst_dim,), got {tuple(self.weight.shape)} "
                f"and {tuple(self.bias.shape)}"
            )

    @property
    def src_dim(self) -> int:
        return int(self.weight.shape[1])

    @property
    def dst_dim(self) -> int:
        return int(self.weight.shape[0])

    @property
    def name(self) -> str:
        return f"{self.src}→{self.dst}"

    def apply(self, x: Any) -> Any:
        """Map rows of source features ``x`` (n x src_dim) to target features (n x dst_dim)."""
        if x.ndim != 2 or x.shape[1] != self.src_dim:
            raise ShapeError(
                f"map {self.name} expects {self.src_dim}-dim features of {self.src}, "
                f"got an array of shape {tuple(x.shape)}"
            )
        xp = namespace(x)
        w, b = self._as(x)
        dtype = x.dtype if xp.isdtype(x.dtype, "real floating") else xp.float64
        return xp.astype(x, dtype) @ xp.matrix_transpose(xp.astype(w, dtype)) + xp.astype(b, dtype)

    def _as(self, like: Any) -> tuple[Any, Any]:
        if namespace(self.weight) is namespace(like):
            return self.weight, self.bias
        return from_numpy(to_numpy(self.weight), like), from_numpy(to_numpy(self.bias), like)

    def check_pair(self, src: str, dst: str) -> None:
        """Refuse a map fitted for another pair of networks."""
        if (self.src, self.dst) != (src, dst):
            raise MapFileError(f"this map was fitted for {self.name}, not {src}→{dst}")

    # -- persistence ----------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` file (float64 arrays + a JSON header); no pickle involved."""
        path = Path(path)
        meta = {
            "format": _FORMAT,
            "src": self.src,
            "dst": self.dst,
            "src_dim": self.src_dim,
            "dst_dim": self.dst_dim,
            "method": self.method,
            "options": self.options,
            "n_train": int(self.n_train),
            "stats": self.stats,
            "src_model_sha256": self.src_model_sha256,
            "dst_model_sha256": self.dst_model_sha256,
        }
        arrays = {"weight": to_numpy(self.weight), "bias": to_numpy(self.bias)}
        if self.loss_curve is not None:
            arrays["loss_curve"] = np.asarray(self.loss_curve)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps(meta, default=_jsonable)), **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "AffineMap":
        """Read a map written by :meth:`save`, exactly (refuses other files)."""
        path = Path(path)
        if not path.is_file():
            raise MapFileError(f"no map file at {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                weight, bias = z["weight"], z["bias"]
                curve = z["loss_curve"] if "loss_curve" in z.files else None
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise MapFileError(f"{path} is not a lintwin map file ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise MapFileError(f"{path} is not a lintwin map file")
        if weight.shape != (meta["dst_dim"], meta["src_dim"]):
            raise MapFileError(f"{path}: weight shape {weight.shape} disagrees with its header")
        return cls(
            weight=weight,
            bias=bias,
            src=meta["src"],
            dst=meta["dst"],
            method=meta["method"],
            options=meta["options"],
            n_train=meta["n_train"],
            stats=meta["stats"],
            loss_curve=curve,
            src_model_sha256=meta.get("src_model_sha256"),
            dst_model_sha256=meta.get("dst_model_sha256"),
        )


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
