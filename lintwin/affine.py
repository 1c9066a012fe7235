"""The affine map object: weight, bias and where they came from; apply, save, load."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .core.files import atomic_write, jsonable
from .core.xp import device, from_numpy, namespace, to_numpy
from .errors import MapFileError, ShapeError

__all__ = ["AffineMap"]

_FORMAT = "lintwin.map/1"
_ZIP = b"PK\x03\x04"  # how every .npz archive starts


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
    _placed: dict = field(default_factory=dict, repr=False, compare=False)  # weights per (namespace, device, dtype)

    def __repr__(self) -> str:
        return (f"AffineMap({self.src}→{self.dst}, {self.src_dim}→{self.dst_dim}, method={self.method}, "
                f"n_train={self.n_train})")

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
        if not xp.isdtype(x.dtype, "real floating"):
            x = xp.astype(x, xp.float64)
        wt, b = self._placed_like(x)
        return x @ wt + b

    def _placed_like(self, x: Any) -> tuple[Any, Any]:
        """``(W^T, b)`` in the namespace, on the device and in the dtype of ``x``, made once and kept."""
        xp = namespace(x)
        key = (id(xp), str(device(x)), str(x.dtype))
        if key not in self._placed:
            if namespace(self.weight) is xp and str(device(self.weight)) == str(device(x)):
                w, b = self.weight, self.bias
            else:
                w, b = from_numpy(to_numpy(self.weight), x), from_numpy(to_numpy(self.bias), x)
            self._placed[key] = (xp.matrix_transpose(xp.astype(w, x.dtype)), xp.astype(b, x.dtype))
        return self._placed[key]

    def check_pair(self, src: str, dst: str) -> None:
        """Refuse a map fitted for another pair of networks."""
        if (self.src, self.dst) != (src, dst):
            raise MapFileError(f"this map was fitted for {self.name}, not {src}→{dst}")

    # -- persistence ----------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the map to exactly ``path`` (an ``.npz`` archive whatever its suffix; float64 arrays + a JSON
        header; no pickle), atomically: a kill leaves the previous file or the complete new one."""
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
        header = np.array(json.dumps(meta, default=jsonable))
        return atomic_write(path, lambda fh: np.savez(fh, meta=header, **arrays))

    @classmethod
    def load(cls, path: str | Path) -> "AffineMap":
        """Read a map written by :meth:`save`, exactly (refuses other files)."""
        path = Path(path)
        if not path.is_file():
            raise MapFileError(f"no map file at {path}")
        try:
            with path.open("rb") as fh:
                signature = fh.read(4)
        except OSError as exc:
            raise MapFileError(f"cannot read {path}: {exc.strerror or exc}") from None
        if signature != _ZIP:
            raise MapFileError(f"{path} is not a lintwin map file (not an .npz archive)")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                weight, bias = z["weight"], z["bias"]
                curve = z["loss_curve"] if "loss_curve" in z.files else None
        except (OSError, ValueError, KeyError, EOFError, json.JSONDecodeError, zipfile.BadZipFile) as exc:
            raise MapFileError(f"{path} is not a lintwin map file (unreadable: {type(exc).__name__}: {exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise MapFileError(f"{path} is not a lintwin map file")
        missing = [k for k in ("src", "dst", "src_dim", "dst_dim", "method", "options", "n_train", "stats")
                   if k not in meta]
        if missing:
            raise MapFileError(f"{path}: the map's header lacks {', '.join(missing)}")
        if weight.ndim != 2 or weight.shape != (meta["dst_dim"], meta["src_dim"]) or bias.shape != (meta["dst_dim"],):
            raise MapFileError(f"{path}: weight {weight.shape} / bias {bias.shape} disagree with its header")
        if not (np.issubdtype(weight.dtype, np.floating) and np.issubdtype(bias.dtype, np.floating)):
            raise MapFileError(f"{path}: weights must be floating point, got {weight.dtype} / {bias.dtype}")
        if not (np.all(np.isfinite(weight)) and np.all(np.isfinite(bias))):
            raise MapFileError(f"{path}: the map's weights are not all finite (NaN or Inf)")
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
