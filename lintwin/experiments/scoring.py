"""Scoring with frozen heads in one pass: each configuration's top-1 predictions, and the maps' feature metrics.

A configuration is a head applied to a network's features, either as they are (the network itself)
or mapped by an affine map into the head's network's space. Every configuration of a pass is scored
from the same placed block. On the host the heads run in onnxruntime. On a device the predictions
stay there until the pass ends (one read for all blocks): a head that is one affine layer (every
bundled head) runs in the blocks' own namespace, any other head on a GPU through onnxruntime's
CUDA provider with its input and output bound to device memory (:func:`lintwin.core.gpu.ort_predict`);
only a non-affine head on another device brings each block to the host.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..affine import AffineMap
from ..core.driver import run_pass
from ..core.fit_metrics import FitMetrics
from ..core.placement import Placement
from ..core import gpu
from ..core.xp import namespace, to_numpy
from ..errors import ModelError
from ..networks.head_maps import read_affine_head
from ..networks.onnx_models import Head
from ..storage.source import StoreSource
from ..storage.store import FeatureStore

__all__ = ["Config", "DevicePredictor", "ScoreSink", "score_pass"]


@dataclass
class Config:
    """``head`` on the features of block ``src`` (mapped by ``amap`` if given; metrics against block ``dst``)."""

    key: Hashable
    src: int
    head: Head
    amap: AffineMap | None = None
    dst: int | None = None
    predictions: list[np.ndarray] = field(default_factory=list)
    metrics: FitMetrics = field(default_factory=FitMetrics)

    def result(self) -> np.ndarray:
        """All predictions of the pass, on the host (one device read for all blocks)."""
        if not self.predictions:
            return np.empty(0, np.int64)
        if all(isinstance(p, np.ndarray) for p in self.predictions):
            return np.concatenate(self.predictions)
        return np.asarray(to_numpy(namespace(*self.predictions).concat(self.predictions)), np.int64)


class DevicePredictor:
    """Top-1 predictions of one head where the features are (see the module): host, device, or GPU."""

    on_device = True  # ``predict`` takes features of any namespace and answers in it

    def __init__(self, head: Head):
        self.head = head
        try:
            affine = read_affine_head(head.path)
            self.affine: tuple[np.ndarray, np.ndarray] | None = (affine.weight.T.astype(np.float32),
                                                                   affine.bias.astype(np.float32))
        except ModelError:
            self.affine = None
        self._placed: dict[str, tuple[Any, Any]] = {}

    def __call__(self, x: Any) -> Any:
        if isinstance(x, np.ndarray):
            return self.head.predict(np.asarray(x, np.float32))
        xp = namespace(x)
        if self.affine is not None:
            key = str(x.device)
            if key not in self._placed:  # the head's weights, placed once per device
                self._placed[key] = tuple(xp.asarray(v, device=x.device) for v in self.affine)
            wt, b = self._placed[key]
            self.head.check_dim(int(x.shape[1]), "got")
            return xp.argmax(xp.astype(x, xp.float32) @ wt + b, axis=1)
        if gpu.is_cupy(x):
            self.head.check_dim(int(x.shape[1]), "got")
            return gpu.ort_predict(self.head.session, self.head.input_name, x)
        return self.head.predict(np.asarray(to_numpy(x), np.float32))  # a non-affine head off the GPU: via the host

    predict = __call__


class ScoreSink:
    """Feeds each placed block to every configuration."""

    def __init__(self, configs: Sequence[Config]):
        self.configs = list(configs)
        self.predictors: dict[int, DevicePredictor] = {}
        for c in self.configs:
            if id(c.head) not in self.predictors:
                self.predictors[id(c.head)] = DevicePredictor(c.head)

    def update(self, lo: int, blocks: Sequence[Any]) -> None:
        for c in self.configs:
            x = blocks[c.src]
            if c.amap is not None:
                x = c.amap.apply(x)
                if c.dst is not None:
                    c.metrics.update(x, blocks[c.dst])
            c.predictions.append(self.predictors[id(c.head)](x))

    def is_finite(self) -> bool:
        return all(c.metrics.is_finite() for c in self.configs)

    def check_finite(self) -> None:
        pass  # the rows were named by the driver's second read


def score_pass(store: FeatureStore, split: str, names: Sequence[str], configs: Sequence[Config], *,
               placement: Placement, progress: bool = False, desc: str | None = None,
               block_rows: int | None = None) -> dict[Hashable, Config]:
    """One pass over ``names`` of ``split`` scoring every configuration; returns them by key."""
    run_pass(StoreSource(store, split, names, block_rows=block_rows), [ScoreSink(configs)], placement=placement,
             progress=progress,
             desc=desc or f"score {split} ({len(configs)} configurations)")
    return {c.key: c for c in configs}
