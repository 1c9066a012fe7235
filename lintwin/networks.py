"""ONNX networks: a backbone (image -> features) and a head (features -> logits) per network.

A network is described by a JSON sidecar next to its ONNX files (``NAME.json`` beside
``NAME.backbone.onnx`` and ``NAME.head.onnx``): its name, feature dimension, class count
and preprocessing. Sessions use the CUDA provider when onnxruntime offers it, else the CPU.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError, ShapeError
from .images import Preprocess

__all__ = ["Backbone", "Head", "NetworkSpec", "file_sha256"]


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _session(path: Path) -> Any:
    import onnxruntime as ort

    if not path.is_file():
        raise ModelError(f"no ONNX model at {path}")
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise ModelError(f"{path} is not a loadable ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None


@dataclass
class NetworkSpec:
    """The sidecar of one network: name, files, feature dimension, classes, preprocessing."""

    name: str
    root: Path
    backbone_file: str
    head_file: str
    feature_dim: int
    classes: int
    preprocess: Preprocess
    raw: dict

    @classmethod
    def for_model(cls, onnx_path: str | Path, sidecar: str | Path | None = None) -> "NetworkSpec":
        """Read the sidecar of ``NAME.backbone.onnx`` / ``NAME.head.onnx`` (``NAME.json``), or ``sidecar``.

        ``onnx_path`` may also be the sidecar itself.
        """
        onnx_path = Path(onnx_path)
        if sidecar is None and onnx_path.suffix == ".json":
            sidecar = onnx_path
        if sidecar is None:
            stem = onnx_path.name
            for suffix in (".backbone.onnx", ".head.onnx", ".onnx"):
                if stem.endswith(suffix):
                    stem = stem[: -len(suffix)]
                    break
            sidecar = onnx_path.with_name(stem + ".json")
        sidecar = Path(sidecar)
        if not sidecar.is_file():
            raise ModelError(f"no sidecar {sidecar} describing {onnx_path.name} (name, feature_dim, preprocess)")
        try:
            d = json.loads(sidecar.read_text())
            return cls(name=d["name"], root=sidecar.parent, backbone_file=d["backbone"], head_file=d["head"],
                       feature_dim=int(d["feature_dim"]), classes=int(d["classes"]),
                       preprocess=Preprocess.from_dict(d["preprocess"]), raw=d)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{sidecar} is not a valid network sidecar ({type(exc).__name__}: {exc})") from None

    @property
    def backbone_path(self) -> Path:
        return self.root / self.backbone_file

    @property
    def head_path(self) -> Path:
        return self.root / self.head_file


class _Runner:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.session = _session(self.path)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ModelError(f"{self.path} must have one input and at least one output")
        self.input_name = inputs[0].name
        self.input_shape = inputs[0].shape

    @cached_property
    def sha256(self) -> str:
        return file_sha256(self.path)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0])


class Backbone(_Runner):
    """Images (N x C x H x W float32, preprocessed) -> pooled features (N x dim)."""

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = self._run(images)
        return out.reshape(out.shape[0], -1)


class Head(_Runner):
    """Features (N x dim) -> logits (N x classes); refuses features of the wrong dimension."""

    @property
    def feature_dim(self) -> int | None:
        d = self.input_shape[-1] if self.input_shape else None
        return d if isinstance(d, int) else None

    def check_dim(self, dim: int, what: str) -> None:
        if self.feature_dim is not None and dim != self.feature_dim:
            raise ShapeError(f"head {self.path.name} expects {self.feature_dim}-dim features, {what} {dim}")

    def __call__(self, features: np.ndarray) -> np.ndarray:
        self.check_dim(int(features.shape[1]), "got")
        return self._run(features)

    def predict(self, features: np.ndarray, batch: int = 8192) -> np.ndarray:
        """Top-1 class of each row."""
        return np.concatenate([self(features[i : i + batch]).argmax(axis=1) for i in range(0, len(features), batch)]
                              or [np.empty(0, np.int64)])
