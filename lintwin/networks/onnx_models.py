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
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from ..errors import LintwinError, ModelError, ShapeError
from .preprocess import Preprocess, json_int

__all__ = ["Backbone", "Head", "ModelSpec", "NetworkSpec", "file_sha256", "open_session", "sidecar_path"]

_SIDECAR_KEYS = {"name", "backbone", "head", "feature_dim", "classes", "preprocess", "class_names", "trained_on",
                 "test_accuracy", "notes"}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _model_file(value: Any, key: str) -> str:
    """A sidecar's ``backbone``/``head``: a relative path inside the sidecar's folder (no absolute path, no ``..``).

    A network is the folder its sidecar is in: a sidecar naming files elsewhere would quietly
    pair its preprocessing with another network's model.
    """
    if not isinstance(value, str) or not value.strip():
        raise LintwinError(f"{key} must name a file, got {value!r}")
    for pure in (PurePosixPath(value), PureWindowsPath(value)):
        if pure.is_absolute() or pure.drive or ".." in pure.parts:
            raise LintwinError(f"{key} {value!r} must be a file in the sidecar's folder (a relative path without "
                               "'..'); copy or link the model there")
    return value


def sidecar_path(onnx_path: str | Path, sidecar: str | Path | None = None) -> Path:
    """``sidecar``, or ``NAME.json`` beside ``NAME.onnx`` / ``NAME.backbone.onnx`` / ``NAME.head.onnx``."""
    onnx_path = Path(onnx_path)
    if sidecar is not None:
        return Path(sidecar)
    if onnx_path.suffix == ".json":
        return onnx_path
    stem = onnx_path.name
    for suffix in (".backbone.onnx", ".head.onnx", ".onnx"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return onnx_path.with_name(stem + ".json")


def _reason(exc: Exception) -> str:
    return f"missing key {exc}" if type(exc) is KeyError else str(exc).strip("'\"")


def _read_sidecar(path: Path) -> dict[str, Any]:
    """The sidecar's JSON object; unknown keys are refused (a typo would go unseen)."""
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not a valid network sidecar ({exc})") from None
    if not isinstance(d, dict):
        raise ModelError(f"{path} is not a valid network sidecar (the sidecar must be a JSON object)")
    unknown = sorted(set(d) - _SIDECAR_KEYS)
    if unknown:
        raise ModelError(f"{path} is not a valid network sidecar (unknown key(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(_SIDECAR_KEYS))}))")
    return d


def _session(path: Path) -> Any:
    if not path.is_file():
        raise ModelError(f"no ONNX model at {path}")
    return open_session(path, str(path))


def open_session(model: Path | bytes, label: str) -> Any:
    """An onnxruntime session of a model file or serialized model, on CUDA when offered, else the CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=opts,
                                    providers=providers)
    except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own exception types for bad files)
        raise ModelError(f"{label} is not a loadable ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None


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
    sidecar: Path | None = None

    @classmethod
    def for_model(cls, onnx_path: str | Path, sidecar: str | Path | None = None) -> NetworkSpec:
        """Read the sidecar of ``NAME.backbone.onnx`` / ``NAME.head.onnx`` (``NAME.json``), or ``sidecar``.

        ``onnx_path`` may also be the sidecar itself.
        """
        path = sidecar_path(onnx_path, sidecar)
        if not path.is_file():
            raise ModelError(f"no sidecar {path} describing {Path(onnx_path).name} (name, feature_dim, preprocess)")
        d = _read_sidecar(path)
        try:
            spec = cls(name=str(d["name"]), root=path.parent, backbone_file=_model_file(d["backbone"], "backbone"),
                       head_file=_model_file(d["head"], "head"), feature_dim=json_int(d["feature_dim"], "feature_dim"),
                       classes=json_int(d["classes"], "classes"), preprocess=Preprocess.from_dict(d["preprocess"]),
                       raw=d, sidecar=path)
        except (KeyError, TypeError, ValueError, LintwinError) as exc:
            raise ModelError(f"{path} is not a valid network sidecar ({_reason(exc)})") from None
        if spec.feature_dim < 1 or spec.classes < 1:
            raise ModelError(f"{path}: feature_dim and classes must be positive")
        return spec

    @property
    def sha256(self) -> str:
        """Hash of the sidecar as parsed (what the features depend on: its preprocessing)."""
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True).encode()).hexdigest()

    @property
    def backbone_path(self) -> Path:
        return self.root / self.backbone_file

    @property
    def head_path(self) -> Path:
        return self.root / self.head_file


@dataclass
class ModelSpec:
    """What reading a whole model's layers needs from its sidecar: a name and the preprocessing.

    The sidecar is the one of a backbone + head pair (``NAME.json`` beside ``NAME.onnx``) or
    any sidecar with at least ``preprocess``; ``name`` defaults to the model's file name.
    """

    name: str
    path: Path
    preprocess: Preprocess
    raw: dict

    @classmethod
    def for_model(cls, onnx_path: str | Path, sidecar: str | Path | None = None) -> ModelSpec:
        path = sidecar_path(onnx_path, sidecar)
        if not path.is_file():
            raise ModelError(f"no sidecar {path} giving the preprocessing of {Path(onnx_path).name} "
                             "(a JSON object with at least 'preprocess'; see the sidecar keys)")
        d = _read_sidecar(path)
        try:
            pre = Preprocess.from_dict(d["preprocess"])
        except (KeyError, LintwinError) as exc:
            raise ModelError(f"{path} is not a valid network sidecar ({_reason(exc)})") from None
        name = str(d.get("name") or Path(onnx_path).name.removesuffix(".onnx"))
        return cls(name=name, path=path, preprocess=pre, raw=d)


class _Runner:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.session = _session(self.path)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ModelError(f"{self.path} must have one input and at least one output")
        self.input_name = inputs[0].name
        self.input_shape = list(inputs[0].shape)
        self.output_shape = list(outputs[0].shape)

    @cached_property
    def sha256(self) -> str:
        return file_sha256(self.path)

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            out = self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]
        except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own types for bad inputs)
            raise ModelError(f"{self.path.name} cannot run on input of shape {tuple(x.shape)} "
                             f"({type(exc).__name__}: {str(exc)[:200]})") from None
        return np.asarray(out)


def _dims(shape: list) -> str:
    return " x ".join(str(d) if isinstance(d, int) else "N" if i == 0 else "?" for i, d in enumerate(shape))


class Backbone(_Runner):
    """Images (N x C x H x W float32, preprocessed) -> pooled features (N x dim)."""

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = self._run(images)
        return out.reshape(out.shape[0], -1)

    def check(self, spec: NetworkSpec, sample: np.ndarray) -> None:
        """Refuse a model that does not take the sidecar's images or give its feature dimension.

        ``sample`` is one preprocessed image (C x H x W); the backbone runs on it once, so a
        head given as a backbone, or a sidecar with the wrong channels, size or feature_dim,
        is refused before any work.
        """
        name = self.path.name
        if len(self.input_shape) != 4:
            hint = " (it looks like a head: it takes feature vectors)" if len(self.input_shape) == 2 else ""
            raise ModelError(f"{name} takes {_dims(self.input_shape)} input, not images N x C x H x W{hint}")
        want = (spec.preprocess.channels, *spec.preprocess.size)
        for axis, (got, need) in enumerate(zip(self.input_shape[1:], want, strict=True)):
            if isinstance(got, int) and got != need:
                raise ModelError(f"{name} takes images of {_dims(self.input_shape)}, the sidecar's preprocessing "
                                 f"gives {' x '.join(map(str, want))} ({('channels', 'height', 'width')[axis]} differ)")
        out = self(sample[None])
        if out.shape != (1, spec.feature_dim):
            raise ModelError(f"{name} gives {out.shape[1]}-dim features per image, its sidecar says "
                             f"{spec.feature_dim}")


class Head(_Runner):
    """Features (N x dim) -> logits (N x classes); refuses features of the wrong dimension."""

    @property
    def feature_dim(self) -> int | None:
        d = self.input_shape[-1] if self.input_shape else None
        return d if isinstance(d, int) else None

    @property
    def classes(self) -> int | None:
        d = self.output_shape[-1] if len(self.output_shape) == 2 else None
        return d if isinstance(d, int) else None

    def check(self, spec: NetworkSpec) -> None:
        """Refuse a head that does not take the sidecar's features or give its classes."""
        if len(self.input_shape) != 2:
            raise ModelError(f"{self.path.name} takes {_dims(self.input_shape)} input; a head takes features N x dim")
        self.check_dim(spec.feature_dim, f"{spec.name}'s sidecar says")
        if self.classes is not None and self.classes != spec.classes:
            raise ModelError(f"head {self.path.name} gives {self.classes} classes, {spec.name}'s sidecar says "
                             f"{spec.classes}")

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
